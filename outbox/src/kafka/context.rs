//! [`KafkaContext`]: what librdkafka says goes to `tracing`, secrets scrubbed, and its
//! latest error is kept to explain failures that would otherwise say only "timed out".

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use rdkafka::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use tracing::{debug, error, info, warn};

use super::KafkaConfig;
use crate::secrets::Secrets;

/// The context of the publisher's producers.
///
/// - librdkafka's log lines reach `tracing` under the target `librdkafka`, at their
///   own level;
/// - its client-level errors (a broker that cannot be reached, a TLS handshake or a
///   SASL authentication that failed) are logged as warnings under the same target:
///   the relay retries them, and its health check reports them;
/// - the latest such error is kept, so that a delivery that timed out, or a health
///   check that could not read the cluster's metadata, says why (a certificate that
///   could not be verified, a wrong password);
///
/// and in all of these, the value of every secret property of the configuration is
/// replaced by `***`.
pub struct KafkaContext {
    secrets: Arc<Secrets>,
    last_error: Arc<LastError>,
}

/// The latest client-level error of the publisher's producers, shared by the
/// producers that replace one another.
#[derive(Debug, Default)]
pub(crate) struct LastError(Mutex<Option<(Instant, String)>>);

impl LastError {
    fn set(&self, error: String) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = Some((Instant::now(), error));
    }

    /// The latest error if it is more recent than `within`.
    pub(crate) fn within(&self, within: Duration) -> Option<String> {
        let last = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        last.as_ref()
            .filter(|(at, _)| at.elapsed() <= within)
            .map(|(_, error)| error.clone())
    }
}

impl KafkaContext {
    /// A context for a client of `config` of its own (the consumer's).
    pub(crate) fn for_config(config: &KafkaConfig) -> Self {
        Self::new(Arc::new(config.secrets()), Arc::new(LastError::default()))
    }

    pub(crate) fn new(secrets: Arc<Secrets>, last_error: Arc<LastError>) -> Self {
        KafkaContext {
            secrets,
            last_error,
        }
    }
}

impl ClientContext for KafkaContext {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        let message = self.secrets.scrub(message);
        // The publisher sets the gapless guarantee on purpose (see `KafkaConfig`);
        // librdkafka's warning that it is experimental would come with every producer.
        let level = if facility == "CONFWARN" && message.contains("enable.gapless.guarantee") {
            RDKafkaLogLevel::Debug
        } else {
            level
        };
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error => error!(target: "librdkafka", %facility, "{message}"),
            RDKafkaLogLevel::Warning => warn!(target: "librdkafka", %facility, "{message}"),
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
                info!(target: "librdkafka", %facility, "{message}");
            }
            RDKafkaLogLevel::Debug => debug!(target: "librdkafka", %facility, "{message}"),
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        // "All broker connections are down" follows the error that brought the last
        // one down (a TLS handshake, an authentication) and says less: keep the cause.
        let summary = error.rdkafka_error_code() == Some(RDKafkaErrorCode::AllBrokersDown);
        let error = self.secrets.scrub(&format!("{error}: {reason}"));
        warn!(target: "librdkafka", "{error}");
        if !summary {
            self.last_error.set(error);
        }
    }
}

impl fmt::Debug for KafkaContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KafkaContext").finish_non_exhaustive()
    }
}
