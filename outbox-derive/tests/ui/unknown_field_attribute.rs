use outbox_derive::OutboxEvent;

#[derive(OutboxEvent)]
#[outbox(type = "user.registered")]
struct UserRegistered {
    #[outbox(aggregate_id)]
    user_id: u64,
}

fn main() {}
