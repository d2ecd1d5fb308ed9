use outbox_derive::OutboxEvent;

#[derive(serde::Serialize, OutboxEvent)]
#[serde(into = "Wire")]
#[derive(Clone)]
enum UserEvent {
    #[outbox(type = "user.registered", aggregate = "user_id")]
    Registered { user_id: u64 },
}

#[derive(serde::Serialize)]
struct Wire;

impl From<UserEvent> for Wire {
    fn from(_: UserEvent) -> Self {
        Wire
    }
}

fn main() {}
