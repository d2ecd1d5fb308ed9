use outbox_derive::OutboxEvent;
use serde::Serialize;

#[derive(Serialize, OutboxEvent)]
#[outbox(tombstone)]
enum CustomerEvent {
    #[outbox(type = "customer.forgotten", aggregate = "customer_id", tombstone = "yes")]
    Forgotten { customer_id: u64 },
}

fn main() {}
