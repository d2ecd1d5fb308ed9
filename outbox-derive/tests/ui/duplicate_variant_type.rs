use outbox_derive::OutboxEvent;

#[derive(OutboxEvent)]
enum UserEvent {
    #[outbox(type = "user.registered", aggregate = "user_id")]
    Registered { user_id: u64 },
    #[outbox(type = "user.registered", version = "v1", aggregate = "user_id")]
    SignedUp { user_id: u64 },
}

fn main() {}
