//! Decoding a message as the consumer's event type, a panic in the user's code
//! caught.

use std::panic::AssertUnwindSafe;

use rdkafka::message::OwnedMessage;

use crate::decode::DecodeEvent;
use crate::error::Error;
use crate::wire::Received;

/// A decoding that failed, or panicked (with the panic's message).
pub(super) enum Decoded {
    Failed(Error),
    Panicked(String),
}

/// Decodes `message` as an `E`, catching a panic in a user's `Deserialize` or `From`
/// impl.
pub(super) fn decode<E: DecodeEvent>(message: &OwnedMessage) -> Result<Received<E>, Decoded> {
    match std::panic::catch_unwind(AssertUnwindSafe(|| Received::<E>::decode(message))) {
        Ok(decoded) => decoded.map_err(Decoded::Failed),
        Err(panic) => Err(Decoded::Panicked(crate::panic::message(&*panic))),
    }
}
