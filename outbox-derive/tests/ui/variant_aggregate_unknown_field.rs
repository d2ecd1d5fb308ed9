use outbox_derive::OutboxEvent;

#[derive(OutboxEvent)]
enum UserEvent {
    #[outbox(type = "user.deleted", aggregate = "id")]
    Deleted { user_id: u64, reason: String },
}

fn main() {}
