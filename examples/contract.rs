//! A service's contract: what its topics carry, for the teams that consume them.
//!
//! `cargo run --example contract -- DIR` writes `DIR/asyncapi.json` (AsyncAPI 3.0) and
//! a JSON Schema per event type and version in `DIR/schemas/` (`contract/` when no
//! directory is given). The formats are the relay's: set `OUTBOX_MESSAGE_FORMAT` or
//! `OUTBOX_MESSAGE_FORMAT_BY_TOPIC` as the relay runs with, and the contract says
//! what it writes. A service keeps a binary like this one (or a test) beside its
//! events, and runs it in its build to publish the contract.

use std::process::ExitCode;

use chrono::{DateTime, Utc};
use outbox::contract::Contract;
use outbox::{OutboxEvent, RelayConfig};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A line of an order.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
struct Line {
    sku: String,
    quantity: u32,
    cents: i64,
}

/// The events of an order, one variant per event type.
#[derive(Debug, Serialize, Deserialize, JsonSchema, OutboxEvent)]
#[serde(rename_all = "snake_case")]
enum OrderEvent {
    /// A customer placed an order.
    #[outbox(
        type = "order.placed",
        version = "v2",
        aggregate = "order_id",
        partition_key = "customer_id"
    )]
    Placed {
        order_id: Uuid,
        customer_id: String,
        lines: Vec<Line>,
        placed_at: DateTime<Utc>,
        #[serde(skip_serializing_if = "Option::is_none")]
        coupon: Option<String>,
    },
    /// The order was paid.
    Paid(OrderPaid),
    /// The order's data was erased: a tombstone.
    #[outbox(
        type = "order.erased",
        aggregate = "order_id",
        partition_key = "customer_id",
        tombstone
    )]
    Erased { order_id: Uuid, customer_id: String },
}

/// The order was paid.
#[derive(Debug, Serialize, Deserialize, JsonSchema, OutboxEvent)]
#[outbox(type = "order.paid", aggregate = "order_id")]
struct OrderPaid {
    order_id: Uuid,
    cents: i64,
    currency: String,
}

/// A customer registered.
#[derive(Debug, Serialize, Deserialize, JsonSchema, OutboxEvent)]
#[outbox(type = "customer.registered", aggregate = "customer_id")]
struct CustomerRegistered {
    customer_id: String,
    email: String,
}

fn main() -> ExitCode {
    let dir = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "contract".to_owned());
    let relay = match RelayConfig::from_env() {
        Ok(relay) => relay,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::FAILURE;
        }
    };
    let contract = Contract::new("shop", env!("CARGO_PKG_VERSION"))
        .description("The events of the shop's orders and customers.")
        .server("production", "kafka.shop.internal:9092")
        .relay(&relay)
        .topic::<OrderEvent>("orders")
        .topic::<CustomerRegistered>("customers");
    match contract.write(&dir) {
        Ok(files) => {
            for file in files {
                println!("wrote {}", file.display());
            }
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}
