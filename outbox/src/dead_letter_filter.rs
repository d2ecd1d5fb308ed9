//! [`DeadLetterFilter`]: which of the consumers' dead letters a call of the
//! [`Inbox`](crate::Inbox) or the `outbox inbox` command reads or changes, and what
//! makes a consumer name valid.

use crate::envelope::MAX_NAME_LEN;
use crate::error::{Error, Result};

/// Which of the consumers' dead letters an [`Inbox`](crate::Inbox) call reads or changes: every one
/// by default; narrow it by id, consumer, topic, or a text in the error.
///
/// ```
/// # use outbox::DeadLetterFilter;
/// let billing_timeouts = DeadLetterFilter::consumer("billing")
///     .topic("user-events")
///     .error_contains("timed out");
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct DeadLetterFilter {
    /// One dead letter, by its id.
    pub id: Option<i64>,
    /// The consumer's name.
    pub consumer: Option<String>,
    /// The topic the message came from.
    pub topic: Option<String>,
    /// A text the error holds (as the database compares text: case-insensitively on
    /// MySQL).
    pub error_contains: Option<String>,
    /// Only those marked for replay and not yet taken.
    pub marked_for_replay: bool,
}

impl DeadLetterFilter {
    /// Every dead letter.
    pub fn all() -> Self {
        Self::default()
    }

    /// The dead letter with this id.
    pub fn id(id: i64) -> Self {
        DeadLetterFilter {
            id: Some(id),
            ..Self::default()
        }
    }

    /// The dead letters of the consumer `name`.
    pub fn consumer(name: impl Into<String>) -> Self {
        DeadLetterFilter {
            consumer: Some(name.into()),
            ..Self::default()
        }
    }

    /// Only those of `topic`.
    #[must_use]
    pub fn topic(mut self, topic: impl Into<String>) -> Self {
        self.topic = Some(topic.into());
        self
    }

    /// Only those whose error holds `text`.
    #[must_use]
    pub fn error_contains(mut self, text: impl Into<String>) -> Self {
        self.error_contains = Some(text.into());
        self
    }

    /// Only those marked for replay and not yet taken by their consumer.
    #[must_use]
    pub fn marked_for_replay(mut self) -> Self {
        self.marked_for_replay = true;
        self
    }

    pub(crate) fn check(&self) -> Result<()> {
        match &self.consumer {
            Some(name) => check_consumer(name),
            None => Ok(()),
        }
    }
}

/// A consumer name fits its column and can be stored.
pub(crate) fn check_consumer(name: &str) -> Result<()> {
    let invalid = |reason| {
        Err(Error::InvalidConsumer {
            name: name.to_owned(),
            reason,
        })
    };
    if name.trim().is_empty() {
        return invalid("it must not be empty");
    }
    // MySQL and MariaDB compare trailing spaces away (PAD SPACE collations): "billing"
    // and "billing " would be one consumer there and two elsewhere.
    if name.trim() != name {
        return invalid("it must not begin or end with whitespace");
    }
    if name.chars().count() > MAX_NAME_LEN {
        return invalid("it may have at most 255 characters");
    }
    if name.contains('\0') {
        return invalid("it must not contain a NUL character");
    }
    Ok(())
}
