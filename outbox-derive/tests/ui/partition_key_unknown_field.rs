use outbox_derive::OutboxEvent;

#[derive(OutboxEvent)]
#[outbox(type = "user.registered", aggregate = "user_id", partition_key = "tenant")]
struct UserRegistered {
    user_id: u64,
}

fn main() {}
