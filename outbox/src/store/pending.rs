//! [`Store`]: one event's store, with its options, written when awaited.

use std::future::{Future, IntoFuture};
use std::pin::Pin;

use sea_orm::ConnectionTrait;
use uuid::Uuid;

use super::Outbox;
use super::insert::Locks;
use crate::envelope::Envelope;
use crate::error::Result;
use crate::sql::Dialect;

/// A pending store of one event: set options, then `.await` it.
///
/// Created by [`Outbox::store`]. Nothing is written until it is awaited, and nothing
/// at all when the event is invalid.
#[must_use = "a Store writes nothing until it is awaited"]
#[derive(Debug)]
pub struct Store<'a, C> {
    pub(super) outbox: &'a Outbox,
    pub(super) conn: &'a C,
    pub(super) envelope: Result<Envelope>,
}

impl<C> Store<'_, C> {
    /// Orders and partitions the event by `key` instead of its aggregate id.
    pub fn partition_key(mut self, key: impl ToString) -> Self {
        self.envelope = self.envelope.map(|e| e.partition_key(key));
        self
    }

    /// Records the user on whose behalf the event happened.
    pub fn user_id(mut self, user_id: impl ToString) -> Self {
        self.envelope = self.envelope.map(|e| e.user_id(user_id));
        self
    }

    /// Records the trace the event belongs to: a trace id, or a whole W3C
    /// `traceparent`. With the `opentelemetry` feature, an event stored without one
    /// takes the current span's context.
    pub fn trace_id(mut self, trace_id: impl Into<String>) -> Self {
        self.envelope = self.envelope.map(|e| e.trace_id(trace_id));
        self
    }

    /// Adds a Kafka header.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.envelope = self.envelope.map(|e| e.header(name, value));
        self
    }

    /// Publishes the event no earlier than `at` (see [`Envelope::deliver_at`]): it
    /// waits, holding back none of its key's events, and can be cancelled until then.
    pub fn deliver_at(mut self, at: chrono::DateTime<chrono::Utc>) -> Self {
        self.envelope = self.envelope.map(|e| e.deliver_at(at));
        self
    }

    /// Publishes the event no earlier than `delay` from now (see
    /// [`Envelope::delay`]).
    pub fn delay(mut self, delay: std::time::Duration) -> Self {
        self.envelope = self.envelope.map(|e| e.delay(delay));
        self
    }
}

impl<'a, C: ConnectionTrait> IntoFuture for Store<'a, C> {
    type Output = Result<Uuid>;
    type IntoFuture = Pin<Box<dyn Future<Output = Result<Uuid>> + Send + 'a>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(async move {
            let envelope = self.envelope?;
            let id = envelope.id;
            envelope.validate()?;
            let dialect = Dialect::of(self.conn.get_database_backend())?;
            if envelope.waits(chrono::Utc::now()) {
                self.outbox.schedule(self.conn, vec![envelope]).await?;
                return Ok(id);
            }
            let shards = self
                .outbox
                .insert(self.conn, dialect, vec![envelope], Locks::Take)
                .await?;
            self.outbox.wake.stored(shards);
            Ok(id)
        })
    }
}
