use outbox_derive::OutboxEvent;

#[derive(OutboxEvent)]
#[outbox(type = "user.registered")]
struct UserRegistered(u64, String);

fn main() {}
