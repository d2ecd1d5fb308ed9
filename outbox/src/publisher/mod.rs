//! Publishers: where the relay sends events.
//!
//! [`KafkaPublisher`] is the production one. [`NoOpPublisher`] accepts everything,
//! and [`MemoryPublisher`] keeps what it receives for tests to inspect. Implement
//! [`Publisher`] to send events anywhere else.

#[cfg(feature = "kafka")]
mod kafka;
mod memory;

use std::collections::HashSet;
use std::fmt;
use std::future::Future;

#[cfg(feature = "kafka")]
pub use kafka::KafkaPublisher;
pub use memory::{MemoryPublisher, NoOpPublisher};

use crate::wire::Message;

/// Sends batches of events to a broker.
///
/// # Contract
/// - `publish` returns one result per message, in the order given.
/// - Messages with the same key must reach the broker in the order given. When a
///   message fails, later messages with its key in the same batch must not be
///   delivered ahead of it: the publisher reports them as [`PublishError::not_sent`]
///   instead of sending them. A publisher that sends one message at a time gets this
///   from [`publish_in_key_order`] and need not think about it. (The relay enforces
///   its side too: after the first message of a key that did not go through, it marks
///   no later message of that key and records no further failure for it.)
/// - `Ok` means the broker acknowledged the message; the relay then marks it published.
///
/// ```
/// use outbox::{Message, PublishError, Publisher, publish_in_key_order};
///
/// #[derive(Debug)]
/// struct Stdout;
///
/// impl Publisher for Stdout {
///     async fn publish(&self, batch: &[Message]) -> Vec<Result<(), PublishError>> {
///         publish_in_key_order(batch, |m| async move {
///             let value = m.value().unwrap_or("(tombstone)".into());
///             println!("{} {} {value}", m.topic, m.key);
///             Ok(())
///         })
///         .await
///     }
/// }
/// ```
pub trait Publisher: Send + Sync + 'static {
    /// Sends `batch` and reports each message's outcome. A publisher that writes Kafka
    /// messages writes each as [`Message::headers`] and [`Message::value`] say: in the
    /// relay's [message format](crate::MessageFormat).
    fn publish(
        &self,
        batch: &[Message],
    ) -> impl Future<Output = Vec<Result<(), PublishError>>> + Send;

    /// Checks that the broker can be reached, for health checks. The default says yes.
    fn check(&self) -> impl Future<Output = Result<(), PublishError>> + Send {
        async { Ok(()) }
    }
}

/// Sends `batch` one message at a time with `send`, in order, keeping per-key order
/// for the caller: once a message fails, the later messages of its key are not sent
/// and come back as [`PublishError::not_sent`]. One result per message, in order, as
/// [`Publisher::publish`] returns them.
///
/// ```
/// # async fn demo(batch: &[outbox::Message]) {
/// use outbox::{PublishError, publish_in_key_order};
///
/// let outcomes = publish_in_key_order(batch, |message| async move {
///     if message.payload.len() > 1_000_000 {
///         return Err(PublishError::permanent("too large"));
///     }
///     Ok(()) // send it
/// })
/// .await;
/// # }
/// ```
pub async fn publish_in_key_order<'a, F, Sent>(
    batch: &'a [Message],
    mut send: F,
) -> Vec<Result<(), PublishError>>
where
    F: FnMut(&'a Message) -> Sent,
    Sent: Future<Output = Result<(), PublishError>>,
{
    let mut failed_keys: HashSet<&str> = HashSet::new();
    let mut outcomes = Vec::with_capacity(batch.len());
    for message in batch {
        let outcome = if failed_keys.contains(message.key.as_str()) {
            Err(PublishError::not_sent())
        } else {
            send(message).await
        };
        if outcome.is_err() {
            failed_keys.insert(&message.key);
        }
        outcomes.push(outcome);
    }
    outcomes
}

/// Why a message was not published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishError {
    kind: PublishErrorKind,
    message: String,
}

/// How the relay treats a failed message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PublishErrorKind {
    /// The broker is unreachable as a whole, or too slow for a topic that is fine:
    /// the message is retried after the retry delay without using up its attempts, so
    /// an outage dead-letters nothing.
    Transient,
    /// Anything else: the message, its topic or the rights on it were refused (too
    /// large, invalid, a missing topic, no authorization, a policy). The attempt
    /// counts, and after the configured attempts the event is dead-lettered.
    Permanent,
    /// Not attempted, or failed only because another message did (an earlier message
    /// with the same key failed in the same batch; the producer stopped behind a
    /// refused record batch). Nothing is recorded; it is sent again after that message.
    NotSent,
}

impl PublishError {
    /// A failure the broker will likely recover from.
    pub fn transient(message: impl Into<String>) -> Self {
        PublishError {
            kind: PublishErrorKind::Transient,
            message: message.into(),
        }
    }

    /// A failure of the message itself.
    pub fn permanent(message: impl Into<String>) -> Self {
        PublishError {
            kind: PublishErrorKind::Permanent,
            message: message.into(),
        }
    }

    /// A message held back behind a failed message, or failed because of one.
    pub fn not_sent() -> Self {
        PublishError {
            kind: PublishErrorKind::NotSent,
            message: "held back: an earlier message failed".to_owned(),
        }
    }

    /// How the relay treats it.
    pub fn kind(&self) -> PublishErrorKind {
        self.kind
    }

    /// What went wrong.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for PublishError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            PublishErrorKind::Transient => "transient",
            PublishErrorKind::Permanent => "permanent",
            PublishErrorKind::NotSent => "not sent",
        };
        write!(f, "{kind} publish failure: {}", self.message)
    }
}

impl std::error::Error for PublishError {}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use chrono::Utc;
    use uuid::Uuid;

    use super::*;

    fn message(seq: i64, key: &str) -> Message {
        Message {
            seq,
            id: Uuid::now_v7(),
            event_type: "test.happened".to_owned(),
            event_version: "v1".to_owned(),
            aggregate_id: key.to_owned(),
            topic: "test".to_owned(),
            key: key.to_owned(),
            payload: "{}".to_owned(),
            extra_headers: Vec::new(),
            trace_id: None,
            user_id: None,
            created_at: Utc::now(),
            attempts: 0,
            tombstone: false,
            encoding: crate::Encoding::native(),
        }
    }

    #[tokio::test]
    async fn after_a_failure_the_later_messages_of_its_key_are_held_back_unsent() {
        let batch = [
            message(1, "a"),
            message(2, "b"),
            message(3, "a"),
            message(4, "b"),
            message(5, "a"),
        ];
        let sent = RefCell::new(Vec::new());
        let outcomes = publish_in_key_order(&batch, |message| {
            sent.borrow_mut().push(message.seq);
            async move {
                if message.seq == 1 {
                    Err(PublishError::permanent("refused"))
                } else {
                    Ok(())
                }
            }
        })
        .await;
        let kinds: Vec<Option<PublishErrorKind>> = outcomes
            .iter()
            .map(|outcome| outcome.as_ref().err().map(PublishError::kind))
            .collect();
        assert_eq!(
            kinds,
            [
                Some(PublishErrorKind::Permanent),
                None,
                Some(PublishErrorKind::NotSent),
                None,
                Some(PublishErrorKind::NotSent),
            ]
        );
        assert_eq!(
            *sent.borrow(),
            [1, 2, 4],
            "held-back messages are never sent"
        );
    }
}
