//! Dead letters an operator asked to replay ([`Inbox::request_replay`]): the consumer
//! of their name takes each, and in one transaction deletes it and its event's inbox
//! record, records the event again and hands the message to its handler.

use std::collections::BTreeMap;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt as _;
use rdkafka::Timestamp;
use rdkafka::message::{Header, OwnedHeaders, OwnedMessage};
use sea_orm::{ConnectionTrait, TransactionTrait};
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::attempt::Attempts;
use super::context::WorkerContext;
use super::decoded::{Decoded, decode};
use super::failure::{Failure, Kind};
use super::handler::{Handler, error_chain};
use super::letter::{MAX_ERROR_LEN, storable};
use super::metrics::Outcome;
use crate::dead_letter_filter::DeadLetterFilter;
use crate::decode::DecodeEvent;
use crate::entity::inbox_dead;
use crate::sql::Dialect;

/// How many marked letters one round takes at most.
const ROUND: u64 = 100;

/// The replays of a consumer's dead letters that an operator marked, as a task of
/// their own.
pub(super) struct Replays<E, H>(pub(super) Arc<WorkerContext<E, H>>);

impl<E, H> Replays<E, H>
where
    E: DecodeEvent + Send + 'static,
    H: Handler<E>,
{
    /// Replays the consumer's marked dead letters every `every`, until cancelled.
    pub(super) async fn replays(self, every: Duration, cancel: CancellationToken) {
        let mut ticks = tokio::time::interval(every);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = cancel.cancelled() => return,
                _ = ticks.tick() => {}
            }
            match AssertUnwindSafe(self.replay_marked(&cancel))
                .catch_unwind()
                .await
            {
                Ok(Ok(())) => {}
                Ok(Err(error)) => {
                    warn!(%error, "could not replay dead letters; trying again at the next interval");
                }
                Err(panic) => {
                    self.0.halt.stop(format!(
                        "replaying dead letters panicked: {}",
                        crate::panic::message(&*panic)
                    ));
                    return;
                }
            }
        }
    }

    /// Replays the marked letters there are now, oldest first.
    async fn replay_marked(&self, cancel: &CancellationToken) -> crate::error::Result<()> {
        let marked = DeadLetterFilter::consumer(self.0.config.name.clone()).marked_for_replay();
        for letter in self
            .0
            .inbox
            .find_dead_letters(&self.0.db, &marked, ROUND)
            .await?
        {
            if cancel.is_cancelled() {
                break;
            }
            self.replay(&letter).await?;
        }
        Ok(())
    }

    /// Replays one letter: applied, or kept with its new error and its mark cleared
    /// (kept marked when the database was away, or the failure was a deadlock).
    async fn replay(&self, letter: &inbox_dead::Model) -> crate::error::Result<()> {
        let message = message_of(letter);
        let received = match decode::<E>(&message) {
            Ok(received) => received,
            Err(Decoded::Failed(error)) => {
                return self.replay_failed(letter, &error_chain(&error)).await;
            }
            Err(Decoded::Panicked(panic)) => {
                let error = format!("decoding the message panicked: {panic}");
                return self.replay_failed(letter, &error).await;
            }
        };
        let txn = self.0.db.begin().await?;
        let dialect = Dialect::of(txn.get_database_backend())?;
        let tables = &self.0.config.tables;
        let taken = txn
            .execute_raw(dialect.take_replay(tables.inbox_dead(), letter.id))
            .await?
            .rows_affected();
        if taken != 1 {
            // Another instance of this consumer took it, or the mark was withdrawn.
            txn.rollback().await?;
            return Ok(());
        }
        txn.execute_raw(dialect.forget_record(
            tables.inbox(),
            &self.0.config.name,
            received.event_id(),
        ))
        .await?;
        match Attempts(&self.0).apply_on(txn, received).await {
            Ok(outcome) => {
                self.0.counters.record(&self.0.config.name, outcome);
                if outcome == Outcome::Processed {
                    self.0.counters.replayed(&self.0.config.name);
                    info!(id = letter.id, topic = %letter.topic, partition = letter.kafka_partition, offset = letter.kafka_offset, "dead letter replayed");
                }
                Ok(())
            }
            Err(Failure {
                error,
                kind: Kind::Message,
            }) => self.replay_failed(letter, &error.to_string()).await,
            Err(Failure { error, .. }) => {
                warn!(id = letter.id, %error, "a replay failed while the database is away, or in a deadlock; it stays marked and is tried again");
                Ok(())
            }
        }
    }

    /// Clears a letter's mark and keeps `error` as its error.
    async fn replay_failed(
        &self,
        letter: &inbox_dead::Model,
        error: &str,
    ) -> crate::error::Result<()> {
        warn!(id = letter.id, %error, "a replayed dead letter failed again; it stays a dead letter");
        let dialect = Dialect::of(self.0.db.get_database_backend())?;
        let error = storable(&format!("replay: {error}"), MAX_ERROR_LEN);
        self.0
            .db
            .execute_raw(dialect.replay_failed(
                self.0.config.tables.inbox_dead(),
                letter.id,
                &error,
            ))
            .await?;
        Ok(())
    }
}

/// The message a dead letter keeps, as it came (its UTF-8 headers only).
fn message_of(letter: &inbox_dead::Model) -> OwnedMessage {
    let headers: BTreeMap<String, String> =
        serde_json::from_str(&letter.headers).unwrap_or_default();
    let mut owned = OwnedHeaders::new_with_capacity(headers.len());
    for (key, value) in &headers {
        owned = owned.insert(Header {
            key,
            value: Some(value.as_bytes()),
        });
    }
    OwnedMessage::new(
        letter.payload.clone(),
        letter.message_key.clone(),
        letter.topic.clone(),
        Timestamp::NotAvailable,
        letter.kafka_partition,
        letter.kafka_offset,
        Some(owned),
    )
}
