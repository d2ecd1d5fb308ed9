use outbox_derive::OutboxEvent;

#[derive(OutboxEvent)]
#[outbox(type = "user.registered", aggregate = "user_id")]
#[outbox(type = "user.created")]
struct UserRegistered {
    user_id: u64,
}

fn main() {}
