use outbox_derive::OutboxEvent;

#[derive(OutboxEvent)]
#[outbox(type = "user.registered", aggregate = "user_id", crate = "not a path")]
struct UserRegistered {
    user_id: u64,
}

fn main() {}
