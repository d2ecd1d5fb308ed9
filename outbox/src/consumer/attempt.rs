//! A message's attempts: each a transaction with the inbox record and the handler's
//! changes, proven to hold the record before it commits; the failures counted by kind
//! and waited out with backoff until the message is applied or given up on.

use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant};

use futures_util::FutureExt as _;
use rdkafka::message::{Message as _, OwnedMessage};
use sea_orm::{ConnectionTrait, DatabaseTransaction, TransactionTrait};
use tokio_util::sync::CancellationToken;
use tracing::{error, warn};
use uuid::Uuid;

use super::ConsumerConfig;
use super::context::{WorkerContext, sleep};
use super::dead_letter::DeadLetters;
use super::decoded::{Decoded, decode};
use super::failure::GiveUp;
use super::failure::{Failure, Kind};
use super::handler::{Handler, HandlerError, error_chain};
use super::metrics::Outcome;
use super::proof::Proof;
use crate::db_error::{Cause, cause};
use crate::decode::DecodeEvent;
use crate::sql::Dialect;
use crate::wire::Received;

/// How many times in a row a deadlock or serialization failure is tried again without
/// using one of the message's attempts.
pub(super) const TRANSIENT_RETRIES: u32 = 10;

/// A message's failed attempts so far, counted by kind.
#[derive(Debug, Default)]
struct Tally {
    /// Failures of the message itself: the attempts it used.
    failures: u32,
    /// Failures in a row while the database was away.
    outages: u32,
    /// Deadlocks and serialization failures in a row.
    transients: u32,
}

impl Tally {
    /// Counts a deadlock or serialization failure in a row: past
    /// [`TRANSIENT_RETRIES`] of them, it is the message's own failure.
    fn in_a_row(&mut self, kind: Kind) -> Kind {
        if kind != Kind::Transient {
            self.transients = 0;
            return kind;
        }
        self.transients = self.transients.saturating_add(1);
        if self.transients > TRANSIENT_RETRIES {
            Kind::Message
        } else {
            Kind::Transient
        }
    }

    /// Counts a failure of `kind`: the wait before the next attempt, or why the
    /// message is given up on.
    fn count(
        &mut self,
        kind: Kind,
        error: &HandlerError,
        config: &ConsumerConfig,
    ) -> Result<Duration, GiveUp> {
        match kind {
            Kind::Outage => {
                self.outages = self.outages.saturating_add(1);
                warn!(%error, "the attempt failed while the database is unreachable, or in the consumer's own statements (begin, inbox record); it does not count");
                Ok(config.retry_backoff.after(self.outages))
            }
            Kind::Transient => {
                warn!(%error, retry = self.transients, "a deadlock or serialization failure; tried again without using an attempt");
                Ok(config.retry_backoff.after(self.transients))
            }
            Kind::Message => {
                self.outages = 0;
                self.failures = self.failures.saturating_add(1);
                if error.is_permanent() || self.failures > config.retry_attempts {
                    error!(%error, attempts = self.failures, "handler failed; the message is dead-lettered");
                    return Err(GiveUp {
                        error: error.to_string(),
                        attempts: as_i32(self.failures),
                    });
                }
                warn!(%error, attempt = self.failures, "handler failed; the message will be tried again");
                Ok(config.retry_backoff.after(self.failures))
            }
        }
    }
}

/// The attempts at one message: the handler in a transaction with the inbox record,
/// retried with backoff, and the proof before each commit.
pub(super) struct Attempts<'a, E, H>(pub(super) &'a WorkerContext<E, H>);

impl<E, H> Attempts<'_, E, H>
where
    E: DecodeEvent + Send + 'static,
    H: Handler<E>,
{
    /// Calls the handler until it succeeds, the message is dead-lettered, or the
    /// worker is cancelled.
    pub(super) async fn attempts(
        &self,
        message: &OwnedMessage,
        first: Option<Received<E>>,
        cancel: &CancellationToken,
    ) -> Option<Outcome> {
        let mut next = first;
        let mut tally = Tally::default();
        loop {
            let started = Instant::now();
            let attempt = match next.take().map_or_else(|| decode::<E>(message), Ok) {
                Ok(received) => self.apply(received).await,
                // Decoded once already: this fails only when decoding is not
                // deterministic.
                Err(Decoded::Failed(error)) => {
                    let give_up = GiveUp {
                        error: error_chain(&error),
                        attempts: as_i32(tally.failures),
                    };
                    return DeadLetters(self.0)
                        .dead_letter(message, give_up, cancel)
                        .await;
                }
                Err(Decoded::Panicked(panic)) => Err(Failure::message(format!(
                    "decoding the message panicked: {panic}"
                ))),
            };
            let failure = match attempt {
                Ok(outcome) => {
                    if outcome == Outcome::Processed {
                        self.0
                            .counters
                            .handled(&self.0.config.name, started.elapsed());
                    }
                    return Some(outcome);
                }
                Err(failure) => failure,
            };
            let wait = match self.after_failure(message, failure, &mut tally).await {
                Ok(wait) => wait,
                Err(give_up) => {
                    return DeadLetters(self.0)
                        .dead_letter(message, give_up, cancel)
                        .await;
                }
            };
            if !sleep(wait, cancel).await {
                return None;
            }
        }
    }

    /// Reports a failed attempt and counts it in `tally`: the wait before the next
    /// attempt, or why the message is given up on. A failure of the message while the
    /// database cannot be pinged is the database's.
    async fn after_failure(
        &self,
        message: &OwnedMessage,
        failure: Failure,
        tally: &mut Tally,
    ) -> Result<Duration, GiveUp> {
        let Failure { error, kind } = failure;
        self.0.counters.failed(&self.0.config.name);
        self.0.progress.failed(
            &self.0.config.name,
            message.topic(),
            message.partition(),
            &error.to_string(),
        );
        let mut kind = tally.in_a_row(kind);
        if kind == Kind::Message && self.0.db.ping().await.is_err() {
            kind = Kind::Outage;
        }
        tally.count(kind, &error, &self.0.config)
    }

    /// One attempt: a transaction with the inbox record and the handler's changes.
    async fn apply(&self, received: Received<E>) -> Result<Outcome, Failure> {
        let txn = self.0.db.begin().await.map_err(Failure::ours)?;
        self.apply_on(txn, received).await
    }

    /// One attempt on `txn`: the inbox record, the handler's changes, the proof that
    /// `txn` still holds the record, the commit.
    pub(super) async fn apply_on(
        &self,
        txn: DatabaseTransaction,
        received: Received<E>,
    ) -> Result<Outcome, Failure> {
        let event_id = received.event_id();
        let recorded = self
            .0
            .inbox
            .record(&txn, &self.0.config.name, event_id)
            .await
            .map_err(Failure::ours)?;
        if !recorded {
            txn.rollback().await.map_err(Failure::ours)?;
            return Ok(Outcome::Duplicate);
        }
        self.handle(&txn, received).await?;
        self.prove(&txn, event_id).await?;
        // A failure at COMMIT (a deferred constraint, a constraint trigger) is the
        // message's, unless the database is away or it was a deadlock.
        txn.commit()
            .await
            .map_err(|error| Failure::classified(HandlerError::from(error)))?;
        Ok(Outcome::Processed)
    }

    /// Runs the handler on `txn`: its error, its panic (in the call or the future it
    /// returns) and its overrunning `handler_timeout` are failed attempts. The
    /// transaction rolls back when dropped.
    async fn handle(
        &self,
        txn: &DatabaseTransaction,
        received: Received<E>,
    ) -> Result<(), Failure> {
        let panicked = |panic: Box<dyn std::any::Any + Send>| {
            Failure::message(format!(
                "the handler panicked: {}",
                crate::panic::message(&*panic)
            ))
        };
        let future =
            std::panic::catch_unwind(AssertUnwindSafe(|| self.0.handler.handle(txn, received)))
                .map_err(panicked)?;
        let timeout = self.0.config.handler_timeout;
        match tokio::time::timeout(timeout, AssertUnwindSafe(future).catch_unwind()).await {
            Ok(Ok(Ok(()))) => Ok(()),
            Ok(Ok(Err(error))) => Err(Failure::classified(error)),
            Ok(Err(panic)) => Err(panicked(panic)),
            Err(_) => Err(Failure::message(format!(
                "the handler did not finish within the handler timeout ({timeout:?})"
            ))),
        }
    }

    /// Checks, before the commit, that `txn` is still the transaction that holds the
    /// event's inbox record. A handler that swallowed an error can leave it otherwise:
    /// PostgreSQL aborts the transaction (its COMMIT would roll back); MySQL and
    /// MariaDB roll a deadlocked one back and run the handler's later statements
    /// outside any transaction; a DDL statement commits it early. Committing then
    /// would lose the inbox record, or keep half the changes, while the offset moves
    /// on; the attempt fails instead.
    async fn prove(&self, txn: &DatabaseTransaction, event_id: Uuid) -> Result<(), Failure> {
        let proof = *self
            .0
            .proof
            .get_or_try_init(|| Proof::learn(&self.0.db))
            .await
            .map_err(Failure::ours)?;
        let dialect = Dialect::of(txn.get_database_backend()).map_err(Failure::ours)?;
        let statement = proof.statement(
            dialect,
            self.0.config.tables.inbox(),
            &self.0.config.name,
            event_id,
        );
        let lost = |why: String| {
            Failure::message(format!(
                "the transaction no longer holds the event's inbox record ({why}): the handler went on after a database error it did not return (a deadlock, an aborted transaction) or ended the transaction (COMMIT, ROLLBACK, DDL)"
            ))
        };
        match txn.query_one_raw(statement).await {
            Ok(Some(row)) if row.try_get_by_index::<i64>(0).is_ok_and(|held| held == 1) => Ok(()),
            Ok(_) => Err(lost("not found in this transaction".to_owned())),
            Err(error) => match cause(&error) {
                Cause::Unreachable => Err(Failure::ours(error)),
                _ => Err(lost(error.to_string())),
            },
        }
    }
}

fn as_i32(n: u32) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}
