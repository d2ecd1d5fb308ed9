//! Relays in processes of their own, and an idle relay's queries.

use std::process::{Child, Command};

use outbox::{KafkaPublisher, Outbox, Relay, RelayConfig};
use outbox_migration::Migrator;
use sea_orm::{ConnectOptions, ConnectionTrait, Database, DatabaseConnection, Statement};
use sea_orm_migration::MigratorTrait;
use uuid::Uuid;

use super::fixtures::connect;
use super::report::Report;
use super::{Failure, Size};

/// Relay processes of the benchmark's; killed when dropped, so a scenario that fails
/// leaves none running (they would load the database under every later figure).
#[derive(Default)]
pub(super) struct Relays(Vec<Child>);

impl Drop for Relays {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `count` relay processes (this binary's `relay-process`) on `schema`.
pub(super) fn spawn_relays(
    url: &str,
    brokers: &str,
    schema: &str,
    count: usize,
) -> Result<Relays, Failure> {
    let mut relays = Relays::default();
    for _ in 0..count {
        let child = Command::new(std::env::current_exe()?)
            .args([
                "--database-url",
                url,
                "--brokers",
                brokers,
                "relay-process",
                "--schema",
                schema,
            ])
            .spawn()?;
        relays.0.push(child);
    }
    Ok(relays)
}

/// Stops relay processes gracefully (SIGTERM) and waits for them.
pub(super) fn stop(mut relays: Relays) -> Result<(), Failure> {
    for mut child in std::mem::take(&mut relays.0) {
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        child.wait()?;
    }
    Ok(())
}

/// An idle relay's queries a second: its database's transactions over
/// `size.idle_measure`, after `size.idle_warm`. The relay has a database of its own,
/// so nothing else in the server (other scenarios' leftovers, autovacuum in a busy
/// database) is counted; the counter is read from another database.
pub(super) async fn idle_relay(
    url: &str,
    brokers: &str,
    size: &Size,
    report: &mut Report,
) -> Result<(), Failure> {
    let admin = Database::connect(url).await?;
    let name = format!("bench_idle_{}", Uuid::now_v7().simple());
    admin
        .execute_unprepared(&format!("CREATE DATABASE {name}"))
        .await?;
    let result = idle_relay_in(&admin, &with_database(url, &name)?, &name, brokers, size).await;
    admin
        .execute_unprepared(&format!("DROP DATABASE {name} WITH (FORCE)"))
        .await?;
    let rate = result?;
    report
        .add(
            "idle relay",
            format!(
                "database queries a second over {}s",
                size.idle_measure.as_secs()
            ),
            rate,
            "/s",
        )
        .target("about 1/s (<= 1.2)", rate <= 1.2);
    Ok(())
}

pub(super) async fn idle_relay_in(
    admin: &DatabaseConnection,
    url: &str,
    name: &str,
    brokers: &str,
    size: &Size,
) -> Result<f64, Failure> {
    let mut options = ConnectOptions::new(url);
    options.max_connections(4).sqlx_logging(false);
    let db = Database::connect(options).await?;
    Migrator::up(&db, None).await?;
    let relay = Relay::new(
        RelayConfig::new("idle"),
        db.clone(),
        KafkaPublisher::new(brokers)?,
    )?
    .spawn();
    tokio::time::sleep(size.idle_warm).await;
    let before = transactions(admin, name).await?;
    tokio::time::sleep(size.idle_measure).await;
    let during = transactions(admin, name).await?.saturating_sub(before);
    relay.shutdown().await?;
    db.close().await?;
    #[allow(clippy::cast_precision_loss)] // a few hundred
    Ok(during as f64 / size.idle_measure.as_secs_f64())
}

/// `url` with its database replaced by `database`.
pub(super) fn with_database(url: &str, database: &str) -> Result<String, Failure> {
    let (base, query) = url
        .split_once('?')
        .map_or((url, None), |(b, q)| (b, Some(q)));
    let (server, _) = base
        .rsplit_once('/')
        .filter(|(server, _)| server.contains("//"))
        .ok_or_else(|| format!("no database in the URL {url:?}"))?;
    Ok(match query {
        Some(query) => format!("{server}/{database}?{query}"),
        None => format!("{server}/{database}"),
    })
}

/// The committed and rolled-back transactions of `database` so far, read by `admin`
/// (connected to another database).
pub(super) async fn transactions(
    admin: &DatabaseConnection,
    database: &str,
) -> Result<u64, Failure> {
    // The statistics of this backend's own transactions are flushed when it is idle;
    // ask for a snapshot that includes everyone's.
    admin
        .execute_unprepared("SELECT pg_stat_clear_snapshot()")
        .await?;
    let row = admin
        .query_one_raw(Statement::from_sql_and_values(
            sea_orm::DbBackend::Postgres,
            "SELECT (xact_commit + xact_rollback)::BIGINT AS n FROM pg_stat_database WHERE datname = $1",
            [database.into()],
        ))
        .await?
        .ok_or("no pg_stat_database row")?;
    Ok(u64::try_from(row.try_get::<i64>("", "n")?).unwrap_or(0))
}

/// The relay of the cross-process latency scenario: runs until SIGTERM or Ctrl-C.
pub(crate) async fn relay_process(url: &str, brokers: &str, schema: &str) -> Result<(), Failure> {
    let db = connect(url, schema, 8).await?;
    let outbox = Outbox::from_env(&db)?;
    let relay = Relay::new(latency_config()?, db, KafkaPublisher::new(brokers)?)?
        .with_outbox(outbox)
        .spawn();
    outbox::shutdown_signal().await?;
    relay.shutdown().await?;
    Ok(())
}

/// The latency scenarios' relays: the defaults, with the `OUTBOX_*` variables set
/// (to try settings without rebuilding), service `latency`.
pub(super) fn latency_config() -> Result<RelayConfig, Failure> {
    Ok(RelayConfig {
        service_name: "latency".to_owned(),
        ..RelayConfig::from_env()?
    })
}
