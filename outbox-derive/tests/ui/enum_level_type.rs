use outbox_derive::OutboxEvent;

#[derive(OutboxEvent)]
#[outbox(type = "user.changed")]
enum UserChanged {
    #[outbox(type = "user.registered", aggregate = "user_id")]
    Registered { user_id: u64 },
}

fn main() {}
