use outbox_derive::OutboxEvent;

#[derive(OutboxEvent)]
#[outbox(type = "user.registered")]
struct UserRegistered {
    #[outbox(aggregate = "yes")]
    user_id: u64,
}

fn main() {}
