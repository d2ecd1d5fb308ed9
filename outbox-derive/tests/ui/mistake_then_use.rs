// A mistake in the attributes is reported once, not again at every use of the type
// as an event: the derive leaves a fallback impl behind.
use outbox_derive::OutboxEvent;

#[derive(OutboxEvent)]
#[outbox(aggregate = "user_id")]
struct UserRegistered {
    user_id: u64,
}

fn store(_: &impl outbox::OutboxEvent) {}

fn main() {
    store(&UserRegistered { user_id: 1 });
}
