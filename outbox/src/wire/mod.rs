//! The wire format: what a Kafka message of this crate carries and how it is read.
//!
//! | file | holds |
//! |---|---|
//! | `headers.rs` | the header names each format sets ([`headers`], public) |
//! | `format.rs` | [`MessageFormat`] and [`Encoding`]: which format, with what it needs |
//! | `message.rs` | [`Message`]: an event as a publisher sends it (key, value, headers) |
//! | `cloudevents.rs` | the CloudEvents Kafka binding, binary and structured, both ways |
//! | `debezium.rs` | Debezium's outbox event router's output |
//! | `said.rs` | what a received message says of its event, in whichever format |
//! | `received.rs` | [`Received`]: a consumed message, decoded, with its headers |

mod cloudevents;
mod debezium;
mod format;
pub mod headers;
mod message;
#[cfg(feature = "kafka")]
mod received;
#[cfg(feature = "kafka")]
mod said;

pub use debezium::debezium_topic;
pub(crate) use format::Encodings;
pub use format::{Encoding, MessageFormat, UnknownFormat};
pub(crate) use message::ClaimedRow;
pub use message::Message;
#[cfg(feature = "kafka")]
pub use received::Received;
#[cfg(feature = "kafka")]
pub(crate) use received::utf8_headers;
#[cfg(feature = "kafka")]
pub(crate) use said::Said;
