use outbox_derive::OutboxEvent;

#[derive(OutboxEvent)]
#[outbox(type = "user.registered", aggregate = "user_id")]
struct UserRegistered {
    #[outbox(aggregate)]
    user_id: u64,
}

fn main() {}
