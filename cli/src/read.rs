//! The commands that only read: `status`, `list`, `show`.

use std::time::Duration;

use chrono::Utc;
use outbox::entity::outbox::Model as Event;
use outbox::{Backlog, Outbox, RelayInfo, ScheduledEvent, TopicBacklog};
use sea_orm::DatabaseConnection;
use serde::Serialize;

use crate::table::Table;
use crate::{Failure, print_json};

pub(crate) fn age(at: Option<chrono::DateTime<Utc>>) -> String {
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
    /// Events waiting for their due time (not pending yet).
    scheduled: u64,
    pending_outside_shards: u64,
    topics: Vec<TopicBacklog>,
    relays: Vec<RelayInfo>,
}

pub(crate) async fn status(
    db: &DatabaseConnection,
    outbox: &Outbox,
    json: bool,
) -> Result<(), Failure> {
    let backlog = outbox.backlog(db).await?;
    let topics = outbox.topic_backlog(db).await?;
    let relays = outbox.relays(db).await?;
    let outside = outbox.pending_outside_shards(db).await?;
    let scheduled = outbox.scheduled_count(db).await?;
    if json {
        return print_json(&Status {
            backlog,
            oldest_pending_age_seconds: backlog
                .oldest_pending_age(Utc::now())
                .map(|age| age.as_secs_f64()),
            scheduled,
            pending_outside_shards: outside,
            topics,
            relays,
        });
    }
    println!(
        "pending {}, dead-lettered {}, oldest pending {}; scheduled {scheduled} (waiting for their due time)",
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

pub(crate) fn list(events: &[Event], json: bool) -> Result<(), Failure> {
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

/// `outbox list --scheduled`.
pub(crate) fn list_scheduled(events: &[ScheduledEvent], json: bool) -> Result<(), Failure> {
    if json {
        return print_json(&events);
    }
    let mut table = Table::new(&["id", "type", "topic", "key", "due", "stored"]);
    for e in events {
        let due = (e.deliver_at - Utc::now()).to_std().map_or_else(
            |_| "now".to_owned(),
            |wait| {
                let secs = Duration::from_secs(wait.as_secs());
                format!("in {}", humantime::format_duration(secs))
            },
        );
        table.row(vec![
            e.id.to_string(),
            e.event_type.clone(),
            e.destination_topic.clone(),
            e.event_key.clone(),
            format!("{} ({due})", e.deliver_at.format("%Y-%m-%d %H:%M:%S UTC")),
            format!("{} ago", age(Some(e.stored_at))),
        ]);
    }
    println!("{}", table.render());
    Ok(())
}

pub(crate) fn show(event: &Event, json: bool) -> Result<(), Failure> {
    show_columns(event, json)
}

/// One row printed as JSON, or as a table of its columns and values.
pub(crate) fn show_columns(row: &impl Serialize, json: bool) -> Result<(), Failure> {
    if json {
        return print_json(row);
    }
    let value = serde_json::to_value(row)?;
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
