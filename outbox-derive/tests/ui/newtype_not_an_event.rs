use outbox_derive::OutboxEvent;

struct NotAnEvent {
    user_id: u64,
}

#[derive(OutboxEvent)]
enum UserEvent {
    Registered(NotAnEvent),
}

fn main() {}
