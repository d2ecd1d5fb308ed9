//! The Go library's first example in Rust: a user registers, and the
//! `user.registered` event is stored in the same transaction, with the user's id as
//! partition key and audit user. Then the outbox is inspected as the Go library's test does.
//!
//! ```text
//! cargo run --example user_registration
//! ```

use outbox::{Outbox, OutboxEvent};
use outbox_examples::{Error, database};
use sea_orm::TransactionTrait;
use serde::Serialize;
use uuid::Uuid;

#[derive(Serialize, OutboxEvent)]
#[outbox(type = "user.registered", aggregate = "user_id")]
struct UserRegisteredEvent {
    user_id: Uuid,
    email: String,
    username: String,
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let db = database().await?;
    let outbox = Outbox::on(&db);

    let event = UserRegisteredEvent {
        user_id: Uuid::now_v7(),
        email: "john@example.com".into(),
        username: "john".into(),
    };
    let txn = db.begin().await?;
    // ... create the user on &txn here ...
    let id = outbox
        .store(&txn, &event, "user-events")
        .partition_key(event.user_id)
        .user_id(event.user_id)
        .await?;
    outbox.commit(txn).await?;

    let pending = outbox.pending(&db, 10).await?;
    println!(
        "stored event {id}; {} event(s) wait for the relay:",
        pending.len()
    );
    for row in pending {
        println!(
            "  {} {} v={} key={:?} data={}",
            row.id, row.event_type, row.event_version, row.partition_key, row.event_data
        );
    }
    Ok(())
}
