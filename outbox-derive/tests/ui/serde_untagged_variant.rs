use outbox_derive::OutboxEvent;

#[derive(serde::Serialize, OutboxEvent)]
enum UserEvent {
    #[outbox(type = "user.registered", aggregate = "user_id")]
    #[serde(untagged)]
    Registered { user_id: u64 },
}

fn main() {}
