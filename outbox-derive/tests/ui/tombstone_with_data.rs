use outbox_derive::OutboxEvent;

#[derive(OutboxEvent)]
#[outbox(type = "customer.forgotten", aggregate = "customer_id", tombstone)]
struct CustomerForgotten {
    customer_id: u64,
    email: String,
}

fn main() {}
