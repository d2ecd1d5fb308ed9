use outbox_derive::OutboxEvent;

#[derive(OutboxEvent)]
enum UserEvent {
    #[outbox(type = "user.deleted")]
    Deleted { user_id: u64 },
}

fn main() {}
