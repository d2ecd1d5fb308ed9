use outbox_derive::OutboxEvent;

#[derive(OutboxEvent)]
#[outbox(type = "user.changed")]
enum UserChanged {
    Registered { user_id: u64 },
    Deleted { user_id: u64 },
}

fn main() {}
