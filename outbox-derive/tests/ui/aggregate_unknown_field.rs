use outbox_derive::OutboxEvent;

#[derive(OutboxEvent)]
#[outbox(type = "user.registered", aggregate = "usr_id")]
struct UserRegistered {
    user_id: u64,
    email: String,
}

fn main() {}
