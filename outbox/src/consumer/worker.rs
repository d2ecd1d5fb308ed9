//! A partition's worker: it applies the partition's messages one at a time, in
//! offset order, each in a transaction of its own with its inbox record, retrying a
//! failing handler with backoff and dead-lettering what cannot be applied.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures_util::FutureExt as _;
use rdkafka::consumer::Consumer as _;
use rdkafka::error::KafkaResult;
use rdkafka::message::{Message as _, OwnedMessage};
use rdkafka::{Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, warn};

use super::attempt::Attempts;
use super::context::WorkerContext;
use super::dead_letter::DeadLetters;
use super::decoded::{Decoded, decode_said};
use super::failure::GiveUp;
use super::handler::{Handler, error_chain};
use super::metrics::Outcome;
use super::poll::{KafkaConsumer, Spawn};
use super::span::consume_span;
use crate::decode::DecodeEvent;
use crate::error::Error;
use crate::wire::{Said, utf8_headers};

/// A partition's worker, over the context every worker of the consumer shares.
pub(super) struct Worker<E, H>(pub(super) Arc<WorkerContext<E, H>>);

impl<E, H> Worker<E, H>
where
    E: DecodeEvent + Send + 'static,
    H: Handler<E>,
{
    /// Runs a partition's worker until its queue closes or it is cancelled. A panic
    /// on a message's path is a failed attempt of that message; one anywhere else (a
    /// bug) stops the consumer, its message not done with, so nothing is skipped.
    pub(super) async fn work(self, consumer: Arc<KafkaConsumer>, spawn: Spawn) {
        let Spawn {
            partition: (topic, partition),
            mut messages,
            buffered,
            cancel,
            done,
        } = spawn;
        loop {
            let message = tokio::select! {
                biased;
                () = cancel.cancelled() => break,
                message = messages.recv() => match message {
                    Some(message) => message,
                    None => break,
                },
            };
            self.0.progress.begin(&topic, partition, message.offset());
            let outcome = AssertUnwindSafe(self.process(&message, &cancel))
                .catch_unwind()
                .await;
            self.0.progress.end(&self.0.config.name, &topic, partition);
            buffered.remove(&message);
            let outcome = match outcome {
                Ok(Some(outcome)) => outcome,
                Ok(None) => break, // cancelled: the offset stays, the message comes again
                Err(panic) => {
                    self.0.halt.stop(format!(
                        "the worker of {topic}/{partition} panicked at offset {}: {}",
                        message.offset(),
                        crate::panic::message(&*panic)
                    ));
                    break;
                }
            };
            self.0.counters.record(&self.0.config.name, outcome);
            if let Err(error) = store_offset(&consumer, &topic, partition, message.offset()) {
                // The partition was revoked meanwhile: its next owner reads the
                // message again and finds it in the inbox.
                warn!(%topic, partition, offset = message.offset(), %error, "could not store an offset");
            }
        }
        // The consumer first: the polling thread, seeing `done` go, drops what it
        // holds of the consumer last, and closes it there.
        drop(consumer);
        drop(done);
    }

    /// Applies one message: `None` when cancelled before it was done with.
    async fn process(&self, message: &OwnedMessage, cancel: &CancellationToken) -> Option<Outcome> {
        // Read once: for the span, and for the first decoding.
        let headers = utf8_headers(message);
        let said = Said::read(&headers, message.payload());
        let span = consume_span(&self.0.config.name, message, &said);
        let first = match decode_said::<E>(message, &said, headers) {
            Ok(received) => Some(received),
            Err(Decoded::Failed(Error::UnknownEvent { event_type, .. }))
                if self.0.config.skip_unknown_events && !E::knows_type(&event_type) =>
            {
                return Some(Outcome::Skipped);
            }
            Err(Decoded::Failed(error)) => {
                let give_up = GiveUp {
                    error: error_chain(&error),
                    attempts: 0,
                };
                return DeadLetters(&self.0)
                    .dead_letter(message, give_up, cancel)
                    .await;
            }
            // A user's `Deserialize` or `From` impl panicked: a failed attempt.
            Err(Decoded::Panicked(_)) => None,
        };
        Attempts(&self.0)
            .attempts(message, first, cancel)
            .instrument(span)
            .await
    }
}

/// Stores the offset after `offset`'s message: where the group resumes the partition.
/// (Not `Consumer::store_offset`: librdkafka's `rd_kafka_offset_store` under it adds one
/// itself.)
fn store_offset(
    consumer: &KafkaConsumer,
    topic: &str,
    partition: i32,
    offset: i64,
) -> KafkaResult<()> {
    let mut next = TopicPartitionList::new();
    next.add_partition_offset(topic, partition, Offset::Offset(offset + 1))?;
    consumer.store_offsets(&next)
}
