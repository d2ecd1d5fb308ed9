//! Writing a message's dead letter: with its inbox record, so a redelivery is
//! skipped; retried while the database is away; minimal when the database keeps
//! refusing the whole letter.

use chrono::Utc;
use rdkafka::message::{Message as _, OwnedMessage};
use sea_orm::{ConnectionTrait, TransactionTrait};
use tokio_util::sync::CancellationToken;
use tracing::{error, warn};

use super::context::{WorkerContext, sleep};
use super::failure::GiveUp;
use super::handler::Handler;
use super::letter::Letter;
use super::metrics::Outcome;
use crate::db_error::{Cause, cause_of};
use crate::decode::DecodeEvent;
use crate::sql::{DeadLetterRow, Dialect};

/// How many times writing a whole dead letter may be refused by a reachable database
/// before only a minimal one (no payload, no headers) is written.
const WHOLE_DEAD_LETTER_WRITES: u32 = 3;

/// Writing a message's dead letter.
pub(super) struct DeadLetters<'a, E, H>(pub(super) &'a WorkerContext<E, H>);

impl<E, H> DeadLetters<'_, E, H>
where
    E: DecodeEvent + Send + 'static,
    H: Handler<E>,
{
    /// Writes the message's dead letter (with its inbox record when its event id is
    /// known, so a redelivery is skipped), retrying while the database fails. A
    /// database that keeps refusing the whole letter (a value it cannot store, a
    /// packet over its limit) gets a minimal one, so the partition goes on.
    pub(super) async fn dead_letter(
        &self,
        message: &OwnedMessage,
        give_up: GiveUp,
        cancel: &CancellationToken,
    ) -> Option<Outcome> {
        let (mut refused, mut outages) = (0u32, 0u32);
        let mut refusal: Option<String> = None;
        loop {
            let letter = match &refusal {
                Some(refusal) if refused >= WHOLE_DEAD_LETTER_WRITES => {
                    Letter::minimal(message, &give_up, refusal)
                }
                _ => Letter::whole(message, &give_up),
            };
            let error = match self.write_dead_letter(message, &letter).await {
                Ok(outcome) => return Some(outcome),
                Err(error) => error,
            };
            let wait = if cause_of(&error) == Cause::Unreachable || self.0.db.ping().await.is_err()
            {
                outages = outages.saturating_add(1);
                warn!(%error, topic = message.topic(), partition = message.partition(), offset = message.offset(), "could not write a dead letter while the database is unreachable; trying again");
                self.0.config.retry_backoff.after(outages)
            } else {
                refused = refused.saturating_add(1);
                if refused >= WHOLE_DEAD_LETTER_WRITES {
                    error!(%error, topic = message.topic(), partition = message.partition(), offset = message.offset(), "the database refused the dead letter; a minimal one (topic, partition, offset, key, error) is written instead");
                } else {
                    warn!(%error, topic = message.topic(), partition = message.partition(), offset = message.offset(), "the database refused the dead letter; trying again");
                }
                refusal = Some(error.to_string());
                self.0.config.retry_backoff.after(refused)
            };
            if !sleep(wait, cancel).await {
                return None;
            }
        }
    }

    /// Writes `letter` in a transaction with the event's inbox record: `Duplicate`
    /// when the event is recorded already, or the message has its letter already.
    async fn write_dead_letter(
        &self,
        message: &OwnedMessage,
        letter: &Letter<'_>,
    ) -> crate::error::Result<Outcome> {
        let txn = self.0.db.begin().await?;
        if let Some(event_id) = letter.event_id
            && !self
                .0
                .inbox
                .record(&txn, &self.0.config.name, event_id)
                .await?
        {
            txn.rollback().await?;
            return Ok(Outcome::Duplicate);
        }
        let dialect = Dialect::of(txn.get_database_backend())?;
        let table = self.0.config.tables.inbox_dead();
        let (topic, partition, offset) = (message.topic(), message.partition(), message.offset());
        let row = DeadLetterRow {
            consumer: &self.0.config.name,
            topic,
            partition,
            offset,
            event_id: letter.event_id,
            event_type: letter.event_type.as_deref(),
            key: letter.key,
            payload: letter.payload,
            headers: &letter.headers,
            error: &letter.error,
            attempts: letter.attempts,
            now: Utc::now(),
        };
        // A message delivered again after its dead letter was written (a crash before
        // its offset was committed) has it already; a topic deleted and created again
        // reuses offsets, and its message gets a letter of its own.
        let there = txn
            .query_all_raw(dialect.dead_letters_at(table, &row))
            .await?;
        if there.iter().any(|found| same_message(found, &row)) {
            txn.rollback().await?;
            return Ok(Outcome::Duplicate);
        }
        txn.execute_raw(dialect.record_dead_letter(table, &row))
            .await?;
        txn.commit().await?;
        Ok(Outcome::DeadLettered)
    }
}

/// Whether the letter `found` (its key, payload and headers) keeps the message `row`
/// describes.
fn same_message(found: &sea_orm::QueryResult, row: &DeadLetterRow<'_>) -> bool {
    found
        .try_get_by_index::<Option<Vec<u8>>>(0)
        .ok()
        .flatten()
        .as_deref()
        == row.key
        && found
            .try_get_by_index::<Option<Vec<u8>>>(1)
            .ok()
            .flatten()
            .as_deref()
            == row.payload
        && found.try_get_by_index::<String>(2).ok().as_deref() == Some(row.headers)
}
