//! A consumer that drops duplicates by the `event_id` header. The relay delivers at
//! least once: a crash between the broker's acknowledgement and the database update
//! sends an event again, so every consumer should do this (with the seen ids kept in
//! its own database, in the same transaction as its effect, in production).
//!
//! ```text
//! KAFKA_BROKERS=127.0.0.1:9092 cargo run --example dedup_consumer -- user-events
//! ```

use std::collections::HashSet;

use outbox_examples::{Error, consumer, delivered};

#[tokio::main]
async fn main() -> Result<(), Error> {
    let brokers = std::env::var("KAFKA_BROKERS").map_err(|_| "set KAFKA_BROKERS")?;
    let topics: Vec<String> = std::env::args().skip(1).collect();
    if topics.is_empty() {
        return Err("usage: dedup_consumer TOPIC...".into());
    }
    let topics: Vec<&str> = topics.iter().map(String::as_str).collect();
    let consumer = consumer(&brokers, &topics)?;
    let mut seen = HashSet::new();
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => return Ok(()),
            message = consumer.recv() => {
                let message = delivered(&message?);
                if !seen.insert(message.event_id.clone()) {
                    println!("duplicate {} dropped", message.event_id);
                    continue;
                }
                println!("{} {} {}", message.topic, message.key, message.payload);
            }
        }
    }
}
