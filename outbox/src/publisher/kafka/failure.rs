//! Why a message failed, as far as the relay's rules care: refused by the broker,
//! not delivered in time, or failed because of another message.

use rdkafka::error::{KafkaError, RDKafkaErrorCode};

/// What caused a delivery failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Cause {
    /// The broker (or the producer, before sending) refused the message or its record
    /// batch: too large, invalid, not authorized, against a policy, and every code not
    /// listed below. Counts as an attempt; when several messages of one partition were
    /// refused together, each is retried alone first to find which was at fault.
    Refused,
    /// No acknowledgement came: timeouts, lost connections, a missing topic or
    /// partition, no leader. Counts as an attempt only when the broker is reachable
    /// and the message's topic is missing or broken; otherwise it is an outage.
    Undelivered,
    /// The message failed because another one did: the producer stopped after a
    /// refused batch (gapless guarantee) or lost its idempotence state. Not the
    /// message's fault: retried without using an attempt.
    Collateral,
}

impl Cause {
    pub(super) fn of(error: &KafkaError) -> Cause {
        match error.rdkafka_error_code() {
            Some(code) => Self::of_code(code),
            None => Cause::Undelivered,
        }
    }

    fn of_code(code: RDKafkaErrorCode) -> Cause {
        use RDKafkaErrorCode as C;
        match code {
            C::MessageTimedOut
            | C::PurgeQueue
            | C::PurgeInflight
            | C::BrokerTransportFailure
            | C::AllBrokersDown
            | C::Resolve
            | C::OperationTimedOut
            | C::QueueFull
            | C::RequestTimedOut
            | C::NetworkException
            | C::BrokerNotAvailable
            | C::LeaderNotAvailable
            | C::NotLeaderForPartition
            | C::PreferredLeaderNotAvailable
            | C::NotEnoughReplicas
            | C::NotEnoughReplicasAfterAppend
            | C::KafkaStorageError
            | C::UnknownTopicOrPartition
            | C::UnknownTopic
            | C::UnknownPartition => Cause::Undelivered,
            C::Fatal
            | C::GaplessGuarantee
            | C::OutOfOrderSequenceNumber
            | C::InvalidProducerEpoch
            | C::ProducerFenced
            | C::UnknownProducerId
            | C::InvalidProducerIdMapping
            | C::Fenced => Cause::Collateral,
            _ => Cause::Refused,
        }
    }
}

/// Errors after which the producer's idempotence state is unusable: every later
/// message would fail the same way until a new producer starts a new state.
pub(super) fn breaks_the_producer(error: &KafkaError) -> bool {
    Cause::of(error) == Cause::Collateral
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_level_refusals_count_and_outages_do_not_by_themselves() {
        use RDKafkaErrorCode as C;
        for code in [
            C::MessageSizeTooLarge,
            C::TopicAuthorizationFailed,
            C::ClusterAuthorizationFailed,
            C::PolicyViolation,
            C::InvalidTimestamp,
            C::InvalidRecord,
            C::InvalidMessage,
        ] {
            assert_eq!(Cause::of_code(code), Cause::Refused, "{code:?}");
        }
        for code in [C::MessageTimedOut, C::AllBrokersDown, C::UnknownTopic] {
            assert_eq!(Cause::of_code(code), Cause::Undelivered, "{code:?}");
        }
        for code in [C::GaplessGuarantee, C::Fatal, C::OutOfOrderSequenceNumber] {
            assert_eq!(Cause::of_code(code), Cause::Collateral, "{code:?}");
        }
    }
}
