//! `outbox inbox`: the consumers' dead letters: list, show, replay, delete.

use clap::{ArgGroup, Args, Subcommand};
use outbox::entity::inbox_dead::Model as Letter;
use outbox::{DeadLetterFilter, Inbox};
use sea_orm::DatabaseConnection;
use serde::Serialize;
use serde_json::json;

use crate::read::{age, show_columns};
use crate::table::Table;
use crate::{Failure, print_json};

#[derive(Debug, Subcommand)]
pub(crate) enum InboxCommand {
    /// List the consumers' dead letters, oldest first.
    List {
        #[command(flatten)]
        filter: Filter,
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: u64,
    },
    /// Show one dead letter with its message (key, payload, headers).
    Show {
        /// The dead letter's id (see `outbox inbox list`).
        id: i64,
    },
    /// Mark dead letters for replay (a dry run without --yes): a running consumer of
    /// their name hands each to its handler again within its replay interval.
    Replay(Target),
    /// Delete dead letters you have dealt with (a dry run without --yes); their events
    /// stay recorded in the inbox, so redeliveries are still skipped.
    Delete(Target),
}

/// Which dead letters.
#[derive(Debug, Args)]
pub(crate) struct Filter {
    /// Only those of this consumer.
    #[arg(long)]
    consumer: Option<String>,
    /// Only those from this topic.
    #[arg(long)]
    topic: Option<String>,
    /// Only those whose error holds this text.
    #[arg(long)]
    error: Option<String>,
}

impl Filter {
    fn picks(&self, id: Option<i64>) -> DeadLetterFilter {
        let mut filter = DeadLetterFilter::all();
        filter.id = id;
        filter.consumer.clone_from(&self.consumer);
        filter.topic.clone_from(&self.topic);
        filter.error_contains.clone_from(&self.error);
        filter
    }
}

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("which").required(true).args(["id", "all"])))]
pub(crate) struct Target {
    /// One dead letter, by id.
    id: Option<i64>,
    /// Every dead letter the filters pick.
    #[arg(long)]
    all: bool,
    #[command(flatten)]
    filter: Filter,
    /// Do it; without this the command only says what it would do.
    #[arg(long)]
    yes: bool,
}

pub(crate) async fn run(
    db: &DatabaseConnection,
    inbox: &Inbox,
    command: InboxCommand,
    json: bool,
) -> Result<(), Failure> {
    match command {
        InboxCommand::List { filter, limit } => {
            let letters = inbox
                .find_dead_letters(db, &filter.picks(None), limit)
                .await?;
            list(&letters, json)
        }
        InboxCommand::Show { id } => {
            let letter = inbox
                .dead_letter(db, id)
                .await?
                .ok_or_else(|| format!("no dead letter with id {id}"))?;
            show(&letter, json)
        }
        InboxCommand::Replay(target) => change(db, inbox, &target, Change::Replay, json).await,
        InboxCommand::Delete(target) => change(db, inbox, &target, Change::Delete, json).await,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Change {
    Replay,
    Delete,
}

async fn change(
    db: &DatabaseConnection,
    inbox: &Inbox,
    target: &Target,
    change: Change,
    json: bool,
) -> Result<(), Failure> {
    let filter = target.filter.picks(target.id);
    if change == Change::Replay {
        // Those marked already are not marked again.
        let marked = inbox
            .count_dead_letters(db, &filter.clone().marked_for_replay())
            .await?;
        let all = inbox.count_dead_letters(db, &filter).await?;
        if let Some(id) = target.id
            && all == 0
        {
            return Err(format!("no dead letter with id {id}").into());
        }
        return report(json, change, target.yes, all - marked, || async {
            inbox.request_replay(db, &filter).await
        })
        .await;
    }
    let count = inbox.count_dead_letters(db, &filter).await?;
    if let Some(id) = target.id
        && count == 0
    {
        return Err(format!("no dead letter with id {id}").into());
    }
    report(json, change, target.yes, count, || async {
        inbox.delete_dead_letters(db, &filter).await
    })
    .await
}

/// Does the change when `yes` (`act` returns how many it changed) and says what it
/// did, or what it would do.
async fn report<F, Fut>(
    json: bool,
    change: Change,
    yes: bool,
    would: u64,
    act: F,
) -> Result<(), Failure>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = outbox::Result<u64>>,
{
    let (verb, past) = match change {
        Change::Replay => ("mark for replay", "marked for replay"),
        Change::Delete => ("delete", "deleted"),
    };
    let done = if yes { Some(act().await?) } else { None };
    if json {
        return print_json(&json!({
            "dry_run": !yes,
            past.replace(' ', "_"): done.unwrap_or(0),
            "would_affect": would,
        }));
    }
    match done {
        Some(n) if change == Change::Replay => println!(
            "{past} {n} dead letters; a running consumer of each letter's name takes it within its replay interval (5 s unless set)"
        ),
        Some(n) => println!("{past} {n} dead letters"),
        None => {
            println!("dry run: would {verb} {would} dead letters; run again with --yes to do it")
        }
    }
    Ok(())
}

/// A dead letter as printed: key and payload as text when they are UTF-8, else as
/// hex (`0x...`); headers as the JSON object they are.
#[derive(Serialize)]
struct Shown<'a> {
    id: i64,
    consumer: &'a str,
    topic: &'a str,
    kafka_partition: i32,
    kafka_offset: i64,
    event_id: Option<uuid::Uuid>,
    event_type: Option<&'a str>,
    message_key: Option<String>,
    payload: Option<String>,
    headers: serde_json::Value,
    error: &'a str,
    attempts: i32,
    dead_lettered_at: chrono::DateTime<chrono::Utc>,
    replay_requested_at: Option<chrono::DateTime<chrono::Utc>>,
}

impl<'a> From<&'a Letter> for Shown<'a> {
    fn from(letter: &'a Letter) -> Self {
        Shown {
            id: letter.id,
            consumer: &letter.consumer,
            topic: &letter.topic,
            kafka_partition: letter.kafka_partition,
            kafka_offset: letter.kafka_offset,
            event_id: letter.event_id,
            event_type: letter.event_type.as_deref(),
            message_key: letter.message_key.as_deref().map(text_or_hex),
            payload: letter.payload.as_deref().map(text_or_hex),
            headers: serde_json::from_str(&letter.headers)
                .unwrap_or_else(|_| serde_json::Value::String(letter.headers.clone())),
            error: &letter.error,
            attempts: letter.attempts,
            dead_lettered_at: letter.dead_lettered_at,
            replay_requested_at: letter.replay_requested_at,
        }
    }
}

/// `bytes` as text when they are UTF-8, else as `0x` and hex digits.
fn text_or_hex(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(text) => text.to_owned(),
        Err(_) => {
            let mut hex = String::with_capacity(2 + bytes.len() * 2);
            hex.push_str("0x");
            for byte in bytes {
                hex.push_str(&format!("{byte:02x}"));
            }
            hex
        }
    }
}

fn list(letters: &[Letter], json: bool) -> Result<(), Failure> {
    if json {
        return print_json(&letters.iter().map(Shown::from).collect::<Vec<_>>());
    }
    let mut table = Table::new(&[
        "id",
        "consumer",
        "topic",
        "partition",
        "offset",
        "type",
        "attempts",
        "age",
        "replay",
        "error",
    ]);
    for letter in letters {
        table.row(vec![
            letter.id.to_string(),
            letter.consumer.clone(),
            letter.topic.clone(),
            letter.kafka_partition.to_string(),
            letter.kafka_offset.to_string(),
            letter.event_type.clone().unwrap_or_else(|| "-".to_owned()),
            letter.attempts.to_string(),
            age(Some(letter.dead_lettered_at)),
            if letter.replay_requested_at.is_some() {
                "marked"
            } else {
                "-"
            }
            .to_owned(),
            letter.error.chars().take(60).collect(),
        ]);
    }
    println!("{}", table.render());
    Ok(())
}

fn show(letter: &Letter, json: bool) -> Result<(), Failure> {
    show_columns(&Shown::from(letter), json)
}
