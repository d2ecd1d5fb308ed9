//! The commands that change events, dry runs first: `replay`, `purge`.

use std::time::Duration;

use outbox::Outbox;
use sea_orm::DatabaseConnection;
use serde_json::json;
use uuid::Uuid;

use crate::progress::Batches;
use crate::{Confirm, Failure, print_json};

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

pub(crate) async fn replay_one(
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

pub(crate) async fn replay_all(
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

pub(crate) async fn purge(
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
