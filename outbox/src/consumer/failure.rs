//! A failed attempt: what it says, and whether it uses up one of the message's
//! attempts.

use super::handler::HandlerError;
use crate::db_error::{Cause, cause_of};

/// What a failed attempt says, and whether it uses up one of the message's attempts.
pub(super) struct Failure {
    pub(super) error: HandlerError,
    pub(super) kind: Kind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    /// The message's own failure (the handler's error or panic, its transaction
    /// refused at commit, its decoding panicked): it uses an attempt, unless the
    /// database turns out to be unreachable.
    Message,
    /// A deadlock or serialization failure: tried again without using an attempt, up
    /// to [`TRANSIENT_RETRIES`](super::attempt::TRANSIENT_RETRIES) times in a row.
    Transient,
    /// The database away, or the consumer's own statements (begin, the inbox record)
    /// failing: nothing about the message; no attempt is used.
    Outage,
}

impl Failure {
    /// A failure of the message, or of the database, as `error` tells.
    pub(super) fn classified(error: HandlerError) -> Self {
        let kind = match cause_of(error.error()) {
            Cause::Unreachable => Kind::Outage,
            Cause::Transient => Kind::Transient,
            Cause::Refused => Kind::Message,
        };
        Failure { error, kind }
    }

    /// A failure of the message itself.
    pub(super) fn message(error: impl Into<HandlerError>) -> Self {
        Failure {
            error: error.into(),
            kind: Kind::Message,
        }
    }

    /// A failure of the consumer's own statements: no attempt is used.
    pub(super) fn ours(error: impl Into<HandlerError>) -> Self {
        Failure {
            error: error.into(),
            kind: Kind::Outage,
        }
    }
}

/// Why a message is given up on: the error, and the attempts it used.
pub(super) struct GiveUp {
    pub(super) error: String,
    pub(super) attempts: i32,
}
