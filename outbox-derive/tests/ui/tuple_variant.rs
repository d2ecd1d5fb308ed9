use outbox_derive::OutboxEvent;

#[derive(OutboxEvent)]
enum UserEvent {
    #[outbox(type = "user.renamed", aggregate = "0")]
    Renamed(u64, String),
}

fn main() {}
