use outbox_derive::OutboxEvent;

#[derive(OutboxEvent)]
#[outbox(version = 2, agregate = "user_id", aggregate = "usr_id")]
#[outbox(version = "v3")]
struct UserRegistered {
    #[outbox(key)]
    user_id: u64,
}

fn main() {}
