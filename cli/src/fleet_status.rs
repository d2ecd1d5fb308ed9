//! The commands over a databases file: `status` with a row per database and totals,
//! and finding the entry `--database` names.

use std::path::Path;
use std::time::Duration;

use chrono::Utc;
use futures_util::StreamExt as _;
use outbox::fleet::{DatabaseEntry, DatabaseSource, FileSource};
use outbox::{Backlog, Outbox, Secrets};
use sea_orm::{ConnectOptions, Database};
use serde::Serialize;

use crate::read::age;
use crate::table::Table;
use crate::{Failure, print_json};

/// Databases read at once.
const AT_ONCE: usize = 8;

/// The entry of `file` named `name`.
pub(crate) async fn entry(file: &Path, name: &str) -> Result<DatabaseEntry, Failure> {
    let entries = FileSource::new(file).databases().await?;
    entries
        .into_iter()
        .find(|entry| entry.name() == name)
        .ok_or_else(|| format!("{} names no database {name:?}", file.display()).into())
}

/// One database's row.
#[derive(Serialize)]
struct Row {
    database: String,
    #[serde(flatten)]
    backlog: Option<Backlog>,
    oldest_pending_age_seconds: Option<f64>,
    /// Events waiting for their due time.
    scheduled: Option<u64>,
    /// Relays holding shards of it.
    relays: Option<usize>,
    /// Why it could not be read (its password taken out).
    error: Option<String>,
}

/// `outbox status --json` over a file.
#[derive(Serialize)]
struct Status {
    databases: Vec<Row>,
    pending: u64,
    dead_lettered: u64,
    oldest_pending_age_seconds: Option<f64>,
    scheduled: u64,
    unreachable: usize,
}

/// `outbox status --databases FILE`: a row per database (read 8 at a time: its pending
/// and dead-lettered events, the oldest pending one's age, the events waiting for
/// their due time, the relays holding its shards), then the totals. A database that
/// cannot be read has a row saying why; the command fails only when none can be read.
pub(crate) async fn status(
    file: &Path,
    outbox: &Outbox,
    timeout: Duration,
    json: bool,
) -> Result<(), Failure> {
    let entries = FileSource::new(file).databases().await?;
    let rows: Vec<Row> = futures_util::stream::iter(entries)
        .map(|entry| row(entry, outbox, timeout))
        .buffered(AT_ONCE)
        .collect()
        .await;
    let pending = rows
        .iter()
        .filter_map(|r| r.backlog)
        .map(|b| b.pending)
        .sum();
    let dead_lettered = rows
        .iter()
        .filter_map(|r| r.backlog)
        .map(|b| b.dead_lettered)
        .sum();
    let scheduled = rows.iter().filter_map(|r| r.scheduled).sum();
    let oldest = rows
        .iter()
        .filter_map(|r| r.backlog?.oldest_pending_at)
        .min();
    let unreachable = rows.iter().filter(|r| r.error.is_some()).count();
    let status = Status {
        oldest_pending_age_seconds: oldest
            .map(|at| (Utc::now() - at).to_std().unwrap_or_default().as_secs_f64()),
        databases: rows,
        pending,
        dead_lettered,
        scheduled,
        unreachable,
    };
    if json {
        print_json(&status)?;
    } else {
        let mut table = Table::new(&[
            "database",
            "pending",
            "dead-lettered",
            "oldest pending",
            "scheduled",
            "relays",
            "error",
        ]);
        let text = |value: Option<String>| value.unwrap_or_else(|| "-".to_owned());
        for row in &status.databases {
            table.row(vec![
                row.database.clone(),
                text(row.backlog.map(|b| b.pending.to_string())),
                text(row.backlog.map(|b| b.dead_lettered.to_string())),
                row.backlog
                    .map_or_else(|| "-".to_owned(), |b| age(b.oldest_pending_at)),
                text(row.scheduled.map(|n| n.to_string())),
                text(row.relays.map(|n| n.to_string())),
                row.error.clone().unwrap_or_default(),
            ]);
        }
        table.row(vec![
            format!("total ({})", status.databases.len()),
            status.pending.to_string(),
            status.dead_lettered.to_string(),
            age(oldest),
            status.scheduled.to_string(),
            String::new(),
            if status.unreachable > 0 {
                format!("{} unreachable", status.unreachable)
            } else {
                String::new()
            },
        ]);
        println!("{}", table.render());
    }
    if !status.databases.is_empty() && status.unreachable == status.databases.len() {
        return Err("no database of the file could be read".into());
    }
    Ok(())
}

/// The row of `entry`: its backlog, scheduled events and relays, or why they cannot
/// be read.
async fn row(entry: DatabaseEntry, outbox: &Outbox, timeout: Duration) -> Row {
    let url = entry.url().as_str();
    let read = async {
        let mut options = ConnectOptions::new(url);
        options
            .max_connections(1)
            .connect_timeout(timeout)
            .acquire_timeout(timeout)
            .sqlx_logging(false);
        let db = Database::connect(options).await?;
        let outbox = outbox.clone().with_tables(entry.tables().clone());
        let backlog = outbox.backlog(&db).await?;
        let scheduled = outbox.scheduled_count(&db).await?;
        let relays = outbox.relays(&db).await?;
        db.close().await.ok();
        let relays = relays.iter().filter(|r| r.shards > 0).count();
        Ok::<_, Failure>((backlog, scheduled, relays))
    };
    match read.await {
        Ok((backlog, scheduled, relays)) => Row {
            database: entry.name().to_owned(),
            oldest_pending_age_seconds: backlog
                .oldest_pending_age(Utc::now())
                .map(|age| age.as_secs_f64()),
            backlog: Some(backlog),
            scheduled: Some(scheduled),
            relays: Some(relays),
            error: None,
        },
        Err(error) => Row {
            database: entry.name().to_owned(),
            backlog: None,
            oldest_pending_age_seconds: None,
            scheduled: None,
            relays: None,
            error: Some(Secrets::of_url(url).scrub(&error.to_string())),
        },
    }
}
