use outbox_derive::OutboxEvent;

#[derive(OutboxEvent)]
#[outbox(type = "user.registered", version = 2, aggregate = "user_id")]
struct UserRegistered {
    user_id: u64,
}

fn main() {}
