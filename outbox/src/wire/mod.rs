//! The wire format: what a Kafka message of this crate carries and how it is read.
//!
//! | file | holds |
//! |---|---|
//! | `headers.rs` | the header names the relay sets ([`headers`], public) |
//! | `message.rs` | [`Message`]: an event as a publisher sends it (key, payload, headers) |
//! | `received.rs` | [`Received`]: a consumed message, decoded, with its headers |

pub mod headers;
mod message;
#[cfg(feature = "kafka")]
mod received;

pub(crate) use message::ClaimedRow;
pub use message::Message;
#[cfg(feature = "kafka")]
pub use received::Received;
#[cfg(feature = "kafka")]
pub(crate) use received::{trace_id, utf8_headers};
