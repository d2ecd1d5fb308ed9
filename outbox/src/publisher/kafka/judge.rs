//! Judging a batch's deliveries: which failures use up an attempt, which are an
//! outage, and which message of a refused record batch was at fault (see `mod.rs`).

use std::collections::HashMap;

use rdkafka::error::RDKafkaErrorCode;
use rdkafka::producer::Producer;

use super::failure::Cause;
use super::{Delivery, KafkaPublisher, PROBE_TIMEOUT};
use crate::publisher::PublishError;
use crate::wire::Message;

/// Topics the cluster has, each with its error if it has one.
type Topics = HashMap<String, Option<RDKafkaErrorCode>>;

impl KafkaPublisher {
    /// The cluster's topics, read with a short timeout: `Err` when the broker cannot
    /// be reached.
    pub(super) async fn topics(&self) -> std::result::Result<Topics, String> {
        let producer = self.producer();
        let timeout = self.delivery_timeout.min(PROBE_TIMEOUT);
        let fetch = tokio::task::spawn_blocking(move || {
            producer
                .client()
                .fetch_metadata(None, timeout)
                .map(|metadata| {
                    metadata
                        .topics()
                        .iter()
                        .map(|topic| (topic.name().to_owned(), topic.error().map(Into::into)))
                        .collect::<Topics>()
                })
        });
        match fetch.await {
            Ok(Ok(topics)) => Ok(topics),
            Ok(Err(error)) => {
                Err(self.explained(&format!("cannot read the cluster's metadata: {error}")))
            }
            Err(error) => Err(format!("broker check failed: {error}")),
        }
    }

    /// `failure` with librdkafka's latest client error, when there was one lately: a
    /// timeout says nothing of a certificate that could not be verified.
    pub(super) fn explained(&self, failure: &str) -> String {
        match self
            .last_error
            .within(self.delivery_timeout * 2 + PROBE_TIMEOUT)
        {
            Some(cause) => format!("{failure} (librdkafka's latest error: {cause})"),
            None => failure.to_owned(),
        }
    }

    /// Turns deliveries into the relay's outcomes (see the module docs).
    pub(super) async fn judge(
        &self,
        batch: &[Message],
        deliveries: Vec<Delivery>,
    ) -> Vec<std::result::Result<(), PublishError>> {
        let failed = |cause| {
            deliveries
                .iter()
                .any(|d| matches!(d, Delivery::Failed { cause: c, .. } if *c == cause))
        };
        let acked = deliveries.iter().any(|d| matches!(d, Delivery::Acked));
        let topics = if failed(Cause::Undelivered) || (!acked && failed(Cause::Refused)) {
            Some(self.topics().await)
        } else {
            None
        };
        let reachable = acked || matches!(topics, Some(Ok(_)));
        let mut refused_together: HashMap<(&str, i32), usize> = HashMap::new();
        for (message, delivery) in batch.iter().zip(&deliveries) {
            if let Delivery::Failed {
                cause: Cause::Refused,
                partition: Some(partition),
                ..
            } = delivery
            {
                *refused_together
                    .entry((message.topic.as_str(), *partition))
                    .or_default() += 1;
            }
        }

        let mut outcomes = Vec::with_capacity(batch.len());
        let mut suspects = Vec::new();
        for (index, (message, delivery)) in batch.iter().zip(deliveries).enumerate() {
            let outcome = match delivery {
                Delivery::Acked => Ok(()),
                Delivery::Held
                | Delivery::Failed {
                    cause: Cause::Collateral,
                    ..
                } => Err(PublishError::not_sent()),
                Delivery::Failed { error, .. } if !reachable => Err(PublishError::transient(
                    self.explained(&format!("broker unreachable: {error}")),
                )),
                Delivery::Failed {
                    cause: Cause::Undelivered,
                    error,
                    ..
                } => Err(undelivered(message, &error, topics.as_ref())),
                Delivery::Failed {
                    cause: Cause::Refused,
                    error,
                    partition,
                } => {
                    let shared = partition.is_some_and(|partition| {
                        refused_together[&(message.topic.as_str(), partition)] > 1
                    });
                    if shared {
                        suspects.push(index);
                    }
                    Err(PublishError::permanent(error))
                }
            };
            outcomes.push(outcome);
        }
        for index in suspects {
            outcomes[index] = self.alone(batch, &outcomes, index).await;
        }
        outcomes
    }

    /// Sends `batch[index]`, refused together with other messages, again on its own,
    /// unless an earlier message of its key is not through.
    async fn alone(
        &self,
        batch: &[Message],
        outcomes: &[std::result::Result<(), PublishError>],
        index: usize,
    ) -> std::result::Result<(), PublishError> {
        let message = &batch[index];
        let blocked = batch[..index]
            .iter()
            .zip(outcomes)
            .any(|(earlier, outcome)| earlier.key == message.key && outcome.is_err());
        if blocked {
            return Err(PublishError::not_sent());
        }
        match self.deliver(&[message]).await.pop() {
            Some(Delivery::Acked) => Ok(()),
            Some(Delivery::Failed {
                cause: Cause::Refused,
                error,
                ..
            }) => Err(PublishError::permanent(error)),
            Some(Delivery::Failed {
                cause: Cause::Undelivered,
                error,
                ..
            }) => Err(PublishError::transient(error)),
            _ => Err(PublishError::not_sent()),
        }
    }
}

/// An undelivered message counts as an attempt when its topic is missing or broken;
/// otherwise the broker was too slow for it.
fn undelivered(
    message: &Message,
    error: &str,
    topics: Option<&std::result::Result<Topics, String>>,
) -> PublishError {
    match topics {
        Some(Ok(topics)) => match topics.get(&message.topic) {
            None => PublishError::permanent(format!(
                "topic {:?} does not exist on the broker: {error}",
                message.topic
            )),
            Some(Some(code)) => PublishError::permanent(format!(
                "topic {:?} is unavailable ({code}): {error}",
                message.topic
            )),
            Some(None) => PublishError::transient(error),
        },
        _ => PublishError::transient(error),
    }
}
