use outbox_derive::OutboxEvent;

#[derive(OutboxEvent)]
#[outbox(type = "", aggregate = "user_id")]
struct UserRegistered {
    user_id: u64,
}

fn main() {}
