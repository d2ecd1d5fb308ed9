//! What a [`Consumer`](super::Consumer) calls for each event: the [`Handler`] trait,
//! and the error a handler returns.

use std::error::Error as StdError;
use std::fmt;
use std::future::Future;
use std::pin::Pin;

use sea_orm::DatabaseTransaction;

use crate::wire::Received;

/// The future a handler returns: it may borrow the transaction.
pub type HandlerFuture<'a> = Pin<Box<dyn Future<Output = Result<(), HandlerError>> + Send + 'a>>;

/// Applies one event, on the consumer's transaction.
///
/// The consumer opens the transaction, records the event in its inbox, calls the
/// handler, and commits. Change your rows on `txn`, and store follow-up events with an
/// [`Outbox`](crate::Outbox) on it: they commit with the inbox record, or not at all.
/// Do not commit or roll back `txn` yourself; return an error to roll it back.
///
/// A closure of the same shape (SeaORM's own `transaction` takes one like it) is a
/// handler too; see [`Consumer::handle`](super::Consumer::handle).
pub trait Handler<E>: Send + Sync + 'static {
    /// Applies `event` on `txn`.
    ///
    /// # Errors
    /// Any error rolls the transaction back; see [`HandlerError`] for what happens
    /// next.
    fn handle<'a>(&'a self, txn: &'a DatabaseTransaction, event: Received<E>) -> HandlerFuture<'a>;
}

impl<E, F> Handler<E> for F
where
    F: for<'a> Fn(&'a DatabaseTransaction, Received<E>) -> HandlerFuture<'a>
        + Send
        + Sync
        + 'static,
{
    fn handle<'a>(&'a self, txn: &'a DatabaseTransaction, event: Received<E>) -> HandlerFuture<'a> {
        self(txn, event)
    }
}

/// Why a handler failed, and what the consumer should do about it.
///
/// Any error converts into one with `?`; by default it counts as a failed attempt (so
/// do a panic in the handler and an attempt over the handler timeout): the
/// transaction rolls back, the event is tried again after a backoff, and after the last
/// retry it is dead-lettered. The exceptions:
///
/// - a database error that says the database is away (a lost connection, a server
///   shutting down; read from its SQLSTATE), or any failure after which the database
///   cannot be reached (the consumer pings it): the attempt does not count, so an
///   outage dead-letters nothing, and the event is tried again until the database is
///   back (so do failures of the consumer's own statements: begin, the inbox record);
/// - a deadlock or serialization failure (SQLSTATE 40001 or 40P01, SQLite's busy):
///   tried again without using an attempt, up to 10 times in a row;
/// - [`HandlerError::permanent`] dead-letters at once (the event can never succeed:
///   retrying only delays the events behind it).
pub struct HandlerError {
    source: Box<dyn StdError + Send + Sync>,
    permanent: bool,
}

impl HandlerError {
    /// A failure no retry can mend: the event is dead-lettered at once.
    pub fn permanent(error: impl Into<Box<dyn StdError + Send + Sync>>) -> Self {
        HandlerError {
            source: error.into(),
            permanent: true,
        }
    }

    /// Whether the event should be dead-lettered without further attempts.
    pub fn is_permanent(&self) -> bool {
        self.permanent
    }

    /// The error the handler gave.
    pub fn error(&self) -> &(dyn StdError + Send + Sync + 'static) {
        &*self.source
    }
}

impl<T: Into<Box<dyn StdError + Send + Sync>>> From<T> for HandlerError {
    fn from(error: T) -> Self {
        HandlerError {
            source: error.into(),
            permanent: false,
        }
    }
}

impl fmt::Debug for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HandlerError")
            .field("source", &self.source)
            .field("permanent", &self.permanent)
            .finish()
    }
}

impl fmt::Display for HandlerError {
    /// The error and its causes, `: `-separated.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&error_chain(&*self.source))
    }
}

/// An error and its causes, `: `-separated; a cause whose text the error's already
/// says (SeaORM's errors repeat their driver's) is left out.
pub(super) fn error_chain(error: &dyn StdError) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(error) = cause {
        let said = error.to_string();
        if !text.contains(&said) {
            text.push_str(": ");
            text.push_str(&said);
        }
        cause = error.source();
    }
    text
}
