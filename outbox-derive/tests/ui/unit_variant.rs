use outbox_derive::OutboxEvent;

#[derive(OutboxEvent)]
enum UserEvent {
    #[outbox(type = "user.registered", aggregate = "user_id")]
    Registered { user_id: u64 },
    Forgotten,
}

fn main() {}
