//! The Go library's second example in Rust: an event built at run time with
//! `EventBuilder` (type, aggregate, version, user, trace id, JSON data), partitioned by
//! customer, then published by the relay.
//!
//! ```text
//! cargo run --example order_builder
//! ```

use std::collections::HashSet;
use std::time::Duration;

use outbox::{EventBuilder, KafkaPublisher, Outbox, Relay, RelayConfig};
use outbox_examples::{Broker, Error, consumer, database, receive};
use sea_orm::TransactionTrait;
use serde_json::json;

#[tokio::main]
async fn main() -> Result<(), Error> {
    let db = database().await?;
    let broker = Broker::start(&["order-events"]).await?;
    let outbox = Outbox::on(&db);
    let relay = Relay::new(
        RelayConfig::new("orders"),
        db.clone(),
        KafkaPublisher::new(&broker.brokers)?,
    )?
    .with_outbox(outbox.clone())
    .spawn();

    let (order_id, customer_id) = ("order-17", "customer-4");
    let event = EventBuilder::new("order.created", order_id)
        .version("v2")
        .user_id(customer_id)
        .trace_id("4bf92f3577b34da6a3ce929d0e0e4736")
        .data(json!({
            "order_id": order_id,
            "customer_id": customer_id,
            "amount": 4200,
            "currency": "EUR",
            "items": [{ "sku": "A-1", "qty": 2 }],
        }));
    let txn = db.begin().await?;
    // ... create the order on &txn here ...
    let id = outbox
        .store(&txn, &event, "order-events")
        .partition_key(customer_id)
        .await?;
    outbox.commit(txn).await?;

    let consumer = consumer(&broker.brokers, &["order-events"])?;
    let expected = HashSet::from([id.to_string()]);
    for message in receive(&consumer, &expected, Duration::from_secs(30)).await? {
        println!(
            "{} key={} payload={}",
            message.topic, message.key, message.payload
        );
        println!("  {}", message.headers.join(", "));
    }
    relay.shutdown().await?;
    Ok(())
}
