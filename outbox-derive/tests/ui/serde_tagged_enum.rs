use outbox_derive::OutboxEvent;

#[derive(serde::Serialize, OutboxEvent)]
#[serde(tag = "kind")]
enum UserEvent {
    #[outbox(type = "user.registered", aggregate = "user_id")]
    Registered { user_id: u64 },
}

fn main() {}
