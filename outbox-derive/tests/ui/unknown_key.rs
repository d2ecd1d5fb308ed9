use outbox_derive::OutboxEvent;

#[derive(OutboxEvent)]
#[outbox(type = "user.registered", agregate = "user_id")]
struct UserRegistered {
    #[outbox(aggregate)]
    user_id: u64,
}

fn main() {}
