use outbox_derive::OutboxEvent;

#[derive(OutboxEvent)]
#[outbox(type = "bits.flipped")]
union Bits {
    int: u32,
    float: f32,
}

fn main() {}
