use outbox_derive::OutboxEvent;

#[derive(OutboxEvent)]
#[outbox(type = "user.registered")]
struct UserRegistered {
    #[outbox(aggregate)]
    user_id: u64,
    #[outbox(aggregate)]
    account_id: u64,
}

fn main() {}
