use outbox_derive::OutboxEvent;

#[derive(OutboxEvent)]
enum Nothing {}

fn main() {}
