use outbox_derive::OutboxEvent;

#[derive(serde::Serialize, OutboxEvent)]
#[outbox(type = "user.registered", aggregate = "user_id")]
struct UserRegistered {
    user_id: u64,
}

#[derive(OutboxEvent)]
enum UserEvent {
    #[outbox(type = "user.signed_up")]
    Registered(UserRegistered),
}

fn main() {}
