use outbox_derive::OutboxEvent;

#[derive(OutboxEvent)]
#[outbox(type = "system.started")]
struct SystemStarted;

fn main() {}
