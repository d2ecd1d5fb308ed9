//! Decoding a message as the consumer's event type, a panic in the user's code
//! caught.

use std::collections::BTreeMap;
use std::panic::AssertUnwindSafe;

use rdkafka::message::OwnedMessage;

use crate::decode::DecodeEvent;
use crate::error::Error;
use crate::wire::{Received, Said};

/// A decoding that failed, or panicked (with the panic's message).
pub(super) enum Decoded {
    Failed(Error),
    Panicked(String),
}

/// Decodes `message` as an `E`, catching a panic in a user's `Deserialize` or `From`
/// impl.
pub(super) fn decode<E: DecodeEvent>(message: &OwnedMessage) -> Result<Received<E>, Decoded> {
    caught(|| Received::<E>::decode(message))
}

/// [`decode`], from what was read of `message` already: `said` of its UTF-8 headers
/// `headers`.
pub(super) fn decode_said<E: DecodeEvent>(
    message: &OwnedMessage,
    said: &Said<'_>,
    headers: BTreeMap<String, String>,
) -> Result<Received<E>, Decoded> {
    caught(|| Received::<E>::from_said(message, said, headers))
}

fn caught<E>(decode: impl FnOnce() -> crate::Result<Received<E>>) -> Result<Received<E>, Decoded> {
    match std::panic::catch_unwind(AssertUnwindSafe(decode)) {
        Ok(decoded) => decoded.map_err(Decoded::Failed),
        Err(panic) => Err(Decoded::Panicked(crate::panic::message(&*panic))),
    }
}
