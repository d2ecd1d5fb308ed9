//! `outbox`: see and fix what is stuck in the outbox without writing SQL, and run the
//! relay as its own process.
//!
//! ```text
//! outbox status                                  # pending, dead letters, per topic, relays
//! outbox list --dead                             # dead-lettered events
//! outbox show 01a2...                            # one event, every column
//! outbox replay 01a2... --yes                    # put a dead letter back in line
//! outbox replay --all-dead                       # dry run: what would be replayed
//! outbox purge --published-older-than 30d --yes  # delete old published events
//! outbox relay --http-addr 0.0.0.0:9464           # run the relay until Ctrl-C / SIGTERM
//! ```
//!
//! Every command reads `DATABASE_URL` (or `--database-url`); `--json` prints JSON for
//! scripts. Commands that write do a dry run unless given `--yes`; the long ones
//! (`replay --all-dead`, `purge`) work in batches that each commit, show their
//! progress on a terminal, and stop after the batch in progress on Ctrl-C.

mod logs;
mod progress;
mod redact;
mod table;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use chrono::Utc;
use clap::{ArgGroup, Args, Parser, Subcommand};
use outbox::entity::outbox::Model as Event;
use outbox::{
    Backlog, KafkaConfig, KafkaPublisher, Outbox, Relay, RelayConfig, RelayInfo, Tables,
    TopicBacklog,
};
use sea_orm::{ConnectOptions, Database, DatabaseConnection};
use serde::Serialize;
use serde_json::json;
use uuid::Uuid;

use crate::logs::LogFormat;
use crate::progress::Batches;
use crate::redact::Secrets;
use crate::table::Table;

#[derive(Debug, Parser)]
#[command(
    name = "outbox",
    version,
    about = "Inspect and repair the transactional outbox, or run its relay"
)]
struct Cli {
    /// The database, e.g. postgres://user@host:5432/app or sqlite://app.sqlite
    #[arg(
        long,
        short = 'u',
        env = "DATABASE_URL",
        global = true,
        hide_env_values = true
    )]
    database_url: Option<String>,

    /// Base name of the outbox tables (see outbox::Tables::with_base).
    #[arg(long, default_value = "_outbox", global = true)]
    table: String,

    /// How many shards events are spread over: the writers' count (`relay` leases
    /// these; `status` reports pending events outside them).
    #[arg(long, env = "OUTBOX_SHARDS", default_value = "16", global = true)]
    shards: std::num::NonZeroU16,

    /// Print JSON instead of a table.
    #[arg(long, global = true)]
    json: bool,

    /// How long to try to reach the database.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration, global = true)]
    connect_timeout: Duration,

    /// Log lines on stderr as text or as JSON objects.
    #[arg(
        long,
        env = "OUTBOX_LOG_FORMAT",
        value_enum,
        default_value_t,
        global = true
    )]
    log_format: LogFormat,

    /// Which log lines to write: a level, or `target=level` pairs, e.g.
    /// `info,librdkafka=debug`.
    #[arg(long, env = "OUTBOX_LOG", default_value = "info", global = true)]
    log: String,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Pending and dead-lettered events, the oldest pending event's age, per topic, and
    /// the relays with the shards they hold.
    Status,
    /// List pending events (oldest first), or dead letters with --dead.
    List {
        /// List dead-lettered events instead of pending ones.
        #[arg(long)]
        dead: bool,
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: u64,
    },
    /// Show one event with every column.
    Show {
        /// The event id.
        id: Uuid,
    },
    /// Put dead-lettered events back in line (a dry run without --yes).
    Replay(Replay),
    /// Delete published events older than a duration (a dry run without --yes).
    Purge {
        /// e.g. 7d, 12h, 30m
        #[arg(long, value_parser = humantime::parse_duration)]
        published_older_than: Duration,
        #[command(flatten)]
        confirm: Confirm,
    },
    /// Run the relay until Ctrl-C or SIGTERM. Configured by the OUTBOX_* variables;
    /// any librdkafka property by OUTBOX_KAFKA_<PROPERTY> (e.g.
    /// OUTBOX_KAFKA_SECURITY_PROTOCOL=SASL_SSL) or --kafka-config.
    Relay(RelayOptions),
}

#[derive(Debug, Args)]
struct RelayOptions {
    /// Kafka bootstrap servers (else `bootstrap.servers` from --kafka-config or
    /// OUTBOX_KAFKA_BOOTSTRAP_SERVERS).
    #[arg(long, env = "KAFKA_BROKERS")]
    brokers: Option<String>,
    /// A librdkafka properties file (`key=value` lines, as `kcat -F` reads); the
    /// OUTBOX_KAFKA_* variables and --brokers override what it sets.
    #[arg(long, env = "OUTBOX_KAFKA_CONFIG")]
    kafka_config: Option<PathBuf>,
    /// Serve /metrics (Prometheus), /healthz and /readyz on this address, e.g.
    /// 0.0.0.0:9464.
    #[arg(long, env = "OUTBOX_HTTP_ADDR")]
    http_addr: Option<SocketAddr>,
}

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("target").required(true).args(["id", "all_dead"])))]
struct Replay {
    /// The dead-lettered event to replay.
    id: Option<Uuid>,
    /// Replay every dead-lettered event.
    #[arg(long)]
    all_dead: bool,
    #[command(flatten)]
    confirm: Confirm,
}

#[derive(Debug, Args)]
struct Confirm {
    /// Do it; without this the command only says what it would do.
    #[arg(long)]
    yes: bool,
    /// Rows per statement (each batch commits on its own).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    batch_size: u64,
}

type Failure = Box<dyn std::error::Error>;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(error) = logs::init(cli.log_format, &cli.log) {
        eprintln!("error: {error}");
        return ExitCode::FAILURE;
    }
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<(), Failure> {
    let tables = Tables::with_base(&cli.table)?;
    let outbox = Outbox::new().with_tables(tables).with_shards(cli.shards);
    let db = connect(cli.database_url.as_deref(), cli.connect_timeout).await?;
    let json = cli.json;
    match cli.command {
        Command::Status => status(&db, &outbox, json).await,
        Command::List { dead, limit } => {
            let events = if dead {
                outbox.dead_letters(&db, limit).await?
            } else {
                outbox.pending(&db, limit).await?
            };
            list(&events, json)
        }
        Command::Show { id } => show(&outbox.event(&db, id).await?, json),
        Command::Replay(replay) => match replay.id {
            Some(id) => replay_one(&db, &outbox, id, replay.confirm.yes, json).await,
            None => replay_all(&db, &outbox, &replay.confirm, json).await,
        },
        Command::Purge {
            published_older_than,
            confirm,
        } => purge(&db, &outbox, published_older_than, &confirm, json).await,
        Command::Relay(options) => relay(db, outbox, options).await,
    }
}

async fn connect(url: Option<&str>, timeout: Duration) -> Result<DatabaseConnection, Failure> {
    let url = url.ok_or("no database given: set DATABASE_URL or pass --database-url")?;
    let mut options = ConnectOptions::new(url);
    options
        .connect_timeout(timeout)
        .acquire_timeout(timeout)
        .sqlx_logging(false);
    Database::connect(options).await.map_err(|error| {
        let secrets = Secrets::of_url(url);
        secrets
            .scrub(&format!("cannot connect to the database at {url}: {error}"))
            .into()
    })
}

fn print_json(value: &impl Serialize) -> Result<(), Failure> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

fn age(at: Option<chrono::DateTime<Utc>>) -> String {
    at.map_or_else(
        || "-".to_owned(),
        |at| {
            let secs = (Utc::now() - at).num_seconds().max(0);
            humantime::format_duration(Duration::from_secs(u64::try_from(secs).unwrap_or(0)))
                .to_string()
        },
    )
}

/// `outbox status --json`: the backlog's fields, then the rest.
#[derive(Serialize)]
struct Status {
    #[serde(flatten)]
    backlog: Backlog,
    oldest_pending_age_seconds: Option<f64>,
    pending_outside_shards: u64,
    topics: Vec<TopicBacklog>,
    relays: Vec<RelayInfo>,
}

async fn status(db: &DatabaseConnection, outbox: &Outbox, json: bool) -> Result<(), Failure> {
    let backlog = outbox.backlog(db).await?;
    let topics = outbox.topic_backlog(db).await?;
    let relays = outbox.relays(db).await?;
    let outside = outbox.pending_outside_shards(db).await?;
    if json {
        return print_json(&Status {
            backlog,
            oldest_pending_age_seconds: backlog
                .oldest_pending_age(Utc::now())
                .map(|age| age.as_secs_f64()),
            pending_outside_shards: outside,
            topics,
            relays,
        });
    }
    println!(
        "pending {}, dead-lettered {}, oldest pending {}",
        backlog.pending,
        backlog.dead_lettered,
        age(backlog.oldest_pending_at)
    );
    if outside > 0 {
        println!(
            "warning: {outside} pending events are in shards at or above {} (--shards / OUTBOX_SHARDS): \
             no relay of that count publishes them; give writers and relays the same count",
            outbox.shards()
        );
    }
    let mut by_topic = Table::new(&["topic", "pending", "dead-lettered", "oldest pending"]);
    for t in &topics {
        by_topic.row(vec![
            t.topic.clone(),
            t.pending.to_string(),
            t.dead_lettered.to_string(),
            age(t.oldest_pending_at),
        ]);
    }
    println!("\n{}", by_topic.render());
    let mut by_relay = Table::new(&["service", "relay", "shards", "last heartbeat"]);
    for r in &relays {
        by_relay.row(vec![
            r.service_name.clone(),
            r.relay_id.clone(),
            r.shards.to_string(),
            format!("{} ago", age(Some(r.heartbeat_at))),
        ]);
    }
    println!("\n{}", by_relay.render());
    Ok(())
}

fn list(events: &[Event], json: bool) -> Result<(), Failure> {
    if json {
        return print_json(&events);
    }
    let mut table = Table::new(&["id", "type", "topic", "key", "attempts", "age", "error"]);
    for e in events {
        table.row(vec![
            e.id.to_string(),
            e.event_type.clone(),
            e.destination_topic.clone(),
            e.partition_key
                .clone()
                .unwrap_or_else(|| e.aggregate_id.clone()),
            e.attempts.to_string(),
            age(Some(e.created_at)),
            e.error_message
                .clone()
                .unwrap_or_default()
                .chars()
                .take(60)
                .collect(),
        ]);
    }
    println!("{}", table.render());
    Ok(())
}

fn show(event: &Event, json: bool) -> Result<(), Failure> {
    if json {
        return print_json(event);
    }
    let value = serde_json::to_value(event)?;
    let mut table = Table::new(&["column", "value"]);
    if let serde_json::Value::Object(columns) = value {
        for (column, value) in columns {
            let text = match value {
                serde_json::Value::String(s) => s,
                serde_json::Value::Null => "-".to_owned(),
                other => other.to_string(),
            };
            table.row(vec![column, text]);
        }
    }
    println!("{}", table.render());
    Ok(())
}

async fn replay_one(
    db: &DatabaseConnection,
    outbox: &Outbox,
    id: Uuid,
    yes: bool,
    json: bool,
) -> Result<(), Failure> {
    let event = outbox.event(db, id).await?;
    if event.dead_lettered_at.is_none() || event.published {
        return Err(
            format!("event {id} is not dead-lettered; only dead letters can be replayed").into(),
        );
    }
    if yes {
        outbox.replay(db, id).await?;
    }
    let what = format!("dead-lettered event {id}");
    report(
        json,
        &Outcome {
            action: Action::Replay,
            done: yes,
            count: 1,
            what: &what,
        },
    )
}

async fn replay_all(
    db: &DatabaseConnection,
    outbox: &Outbox,
    confirm: &Confirm,
    json: bool,
) -> Result<(), Failure> {
    let total = outbox.backlog(db).await?.dead_lettered;
    if !confirm.yes {
        let what = format!("{total} dead-lettered events");
        return report(
            json,
            &Outcome {
                action: Action::Replay,
                done: false,
                count: total,
                what: &what,
            },
        );
    }
    let done = Batches::new("replaying dead letters", total, confirm.batch_size, json)
        .run(|limit| outbox.replay_dead_batch(db, limit))
        .await?;
    let what = format!("{done} dead-lettered events");
    report(
        json,
        &Outcome {
            action: Action::Replay,
            done: true,
            count: done,
            what: &what,
        },
    )
}

async fn purge(
    db: &DatabaseConnection,
    outbox: &Outbox,
    older_than: Duration,
    confirm: &Confirm,
    json: bool,
) -> Result<(), Failure> {
    let total = outbox.count_published_older_than(db, older_than).await?;
    let count = if confirm.yes {
        Batches::new("deleting published events", total, confirm.batch_size, json)
            .run(|limit| outbox.cleanup_batch(db, older_than, limit))
            .await?
    } else {
        total
    };
    let what = format!(
        "{count} events published more than {} ago",
        humantime::format_duration(older_than)
    );
    report(
        json,
        &Outcome {
            action: Action::Delete,
            done: confirm.yes,
            count,
            what: &what,
        },
    )
}

/// What a writing command does.
#[derive(Debug, Clone, Copy)]
enum Action {
    Replay,
    Delete,
}

impl Action {
    fn verb(self) -> &'static str {
        match self {
            Action::Replay => "replay",
            Action::Delete => "delete",
        }
    }

    fn past(self) -> &'static str {
        match self {
            Action::Replay => "replayed",
            Action::Delete => "deleted",
        }
    }
}

/// What a writing command did, or in a dry run (`done` false) would do: `count`
/// events, described by `what`.
#[derive(Debug)]
struct Outcome<'a> {
    action: Action,
    done: bool,
    count: u64,
    what: &'a str,
}

/// Says what a writing command did, or in a dry run what it would do.
fn report(json: bool, outcome: &Outcome<'_>) -> Result<(), Failure> {
    let Outcome {
        action,
        done,
        count,
        what,
    } = *outcome;
    if json {
        return print_json(
            &json!({ "dry_run": !done, action.past(): if done { count } else { 0 }, "would_affect": count }),
        );
    }
    if done {
        println!("{} {what}", action.past());
    } else {
        println!(
            "dry run: would {} {what}; run again with --yes to do it",
            action.verb()
        );
    }
    Ok(())
}

async fn relay(
    db: DatabaseConnection,
    outbox: Outbox,
    options: RelayOptions,
) -> Result<(), Failure> {
    let config = RelayConfig::from_env()?;
    let mut kafka = KafkaConfig::new("");
    if let Some(path) = &options.kafka_config {
        kafka = kafka.with_properties_file(path)?;
    }
    kafka = kafka.with_env();
    if let Some(brokers) = &options.brokers {
        kafka = kafka.set("bootstrap.servers", brokers.as_str());
    }
    let kafka = kafka.require_brokers().map_err(|_| {
        "no Kafka broker given: pass --brokers, or set KAFKA_BROKERS, \
         OUTBOX_KAFKA_BOOTSTRAP_SERVERS or bootstrap.servers in --kafka-config"
    })?;
    let publisher = KafkaPublisher::from_config(kafka)?;
    // The recorder first: what the relay records before it exists is lost.
    let http = options
        .http_addr
        .map(|addr| outbox::http::install_prometheus().map(|metrics| (addr, metrics)))
        .transpose()?;
    let relay = Relay::new(config, db, publisher)?
        .with_outbox(outbox)
        .spawn();
    let endpoints = match http {
        Some((addr, metrics)) => {
            let server = outbox::http::Endpoints::new(relay.probe())
                .with_prometheus(metrics)
                .bind(addr)
                .await
                .map_err(|error| format!("cannot serve --http-addr {addr}: {error}"))?;
            tracing::info!(addr = %server.local_addr(), "serving /metrics, /healthz and /readyz");
            Some(server)
        }
        None => None,
    };
    tracing::info!(
        relay_id = relay.relay_id(),
        "relay running; Ctrl-C or SIGTERM stops it"
    );
    outbox::shutdown_signal().await?;
    let stats = relay.stats();
    relay.shutdown().await?;
    if let Some(server) = endpoints {
        server.shutdown().await;
    }
    tracing::info!(published = stats.published, "relay stopped");
    Ok(())
}
