//! A custom publisher: the relay sends events wherever `Publisher::publish` says. This
//! one writes them to standard output as JSON lines and refuses events above a size,
//! to show how failures are reported per event.
//!
//! ```text
//! cargo run --example custom_publisher
//! ```

use std::time::Duration;

use outbox::{
    EventBuilder, Message, Outbox, PublishError, Publisher, Relay, RelayConfig,
    publish_in_key_order,
};
use outbox_examples::{Error, database};
use serde_json::json;

/// Prints each event as a JSON line.
#[derive(Debug)]
struct JsonLines {
    max_payload: usize,
}

impl Publisher for JsonLines {
    async fn publish(&self, batch: &[Message]) -> Vec<Result<(), PublishError>> {
        // Keeps per-key order: after a failure, the later events of its key are held back.
        publish_in_key_order(batch, |message| async move {
            if message.payload.len() > self.max_payload {
                return Err(PublishError::permanent(format!("payload of {} bytes is too large", message.payload.len())));
            }
            let headers: serde_json::Map<String, serde_json::Value> =
                message.headers().into_iter().map(|(k, v)| (k.to_owned(), v.into())).collect();
            // `headers()` and `value()` write the event in the relay's message format.
            println!("{}", json!({ "topic": message.topic, "key": message.key, "headers": headers, "value": message.value() }));
            Ok(())
        })
        .await
    }
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let db = database().await?;
    let outbox = Outbox::on(&db);
    let config = RelayConfig {
        retry_attempts: 0,
        ..RelayConfig::new("stdout")
    };
    let relay = Relay::new(config, db.clone(), JsonLines { max_payload: 100 })?
        .with_outbox(outbox.clone())
        .spawn();

    outbox
        .store(
            &db,
            &EventBuilder::new("note.added", "n-1").data(json!({ "text": "hello" })),
            "notes",
        )
        .await?;
    let big = EventBuilder::new("note.added", "n-2").data(json!({ "text": "x".repeat(200) }));
    outbox.store(&db, &big, "notes").await?;

    while outbox.backlog(&db).await?.pending > 0 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for dead in outbox.dead_letters(&db, 10).await? {
        println!(
            "dead-lettered {}: {}",
            dead.id,
            dead.error_message.unwrap_or_default()
        );
    }
    relay.shutdown().await?;
    Ok(())
}
