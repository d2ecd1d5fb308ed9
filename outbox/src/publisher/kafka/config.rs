//! [`KafkaConfig`]: the producer's settings.

use std::fmt;
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::error::KafkaError;

/// Requests in flight per broker connection.
const MAX_IN_FLIGHT: &str = "max.in.flight.requests.per.connection";

/// The delivery timeout when `message.timeout.ms` is not set.
const DEFAULT_DELIVERY_TIMEOUT: Duration = Duration::from_secs(10);

/// Settings of the Kafka producer: typed setters for the common ones, and the raw
/// rdkafka [`ClientConfig`] for everything else (TLS, SASL, tuning).
///
/// Always set:
/// - `enable.idempotence=true`, which implies `acks=all`, at most five requests in
///   flight and retries within the delivery timeout: messages keep their order within
///   a partition, and a retry never writes a message twice;
/// - `enable.gapless.guarantee=true`: when the broker refuses a record batch, the
///   producer stops (the publisher replaces it) instead of sending what follows, so a
///   later event of a key never lands ahead of an earlier one.
///
/// Set unless you set it: `max.in.flight.requests.per.connection=1`. With one request
/// in flight, nothing behind a refused record batch has been sent when the refusal
/// arrives, so per-key order holds on any broker. With more in flight (at most five
/// with idempotence), it rests on the broker rejecting the requests behind a refused
/// one by their sequence numbers: Apache Kafka does; librdkafka's mock cluster, for
/// one, does not. The relay's benchmark measures the difference.
///
/// `message.timeout.ms` is the publisher's delivery timeout: a batch not acknowledged
/// within it is purged from the producer, which is then replaced, so nothing it held
/// can reach the broker later out of order. (librdkafka's own timeout is set above
/// it, as a backstop: its timeouts can leave gaps.)
///
/// ```
/// use std::time::Duration;
///
/// let config = outbox::KafkaConfig::new("127.0.0.1:9092")
///     .message_timeout(Duration::from_secs(10))
///     .linger(Duration::from_millis(2))
///     .set("security.protocol", "plaintext");
/// assert_eq!(config.client_config().get("enable.idempotence"), Some("true"));
/// assert_eq!(config.delivery_timeout(), Duration::from_secs(10));
/// ```
///
/// Values of secret properties (any with `password` or `secret` in the name, private
/// keys, SASL and OAUTHBEARER configurations) appear in no error, log line or `Debug`
/// output.
#[derive(Clone)]
pub struct KafkaConfig {
    client: ClientConfig,
}

impl KafkaConfig {
    /// A producer for `brokers` (comma-separated `host:port`), with a 10 s delivery
    /// timeout (below the relay's default 30 s lease) and 1 ms linger: the relay
    /// enqueues a whole batch at once, so waiting to fill requests only adds latency.
    pub fn new(brokers: &str) -> Self {
        let mut client = ClientConfig::new();
        client
            .set("bootstrap.servers", brokers)
            .set("message.timeout.ms", "10000")
            .set("linger.ms", "1");
        Self::from_client_config(client)
    }

    /// Starts from an rdkafka configuration of your own; idempotence and the gapless
    /// guarantee are switched on.
    pub fn from_client_config(mut client: ClientConfig) -> Self {
        client
            .set("enable.idempotence", "true")
            .set("enable.gapless.guarantee", "true");
        if client.get(MAX_IN_FLIGHT).is_none() {
            client.set(MAX_IN_FLIGHT, "1");
        }
        KafkaConfig { client }
    }

    /// How long a batch may wait for its acknowledgements before its unacknowledged
    /// messages fail (and are retried by the relay). Keep it below the relay's lease
    /// time.
    pub fn message_timeout(self, timeout: Duration) -> Self {
        self.set("message.timeout.ms", timeout.as_millis().to_string())
    }

    /// How long the producer waits to fill a request.
    pub fn linger(self, linger: Duration) -> Self {
        self.set("linger.ms", linger.as_millis().to_string())
    }

    /// The client id the broker sees.
    pub fn client_id(self, id: &str) -> Self {
        self.set("client.id", id)
    }

    /// Sets any librdkafka property. `enable.idempotence` and
    /// `enable.gapless.guarantee` stay on whatever is set here.
    pub fn set(mut self, key: &str, value: impl Into<String>) -> Self {
        self.client.set(key, value);
        self
    }

    /// The underlying rdkafka configuration.
    pub fn client_config(&self) -> &ClientConfig {
        &self.client
    }

    /// The underlying rdkafka configuration, to change.
    pub fn client_config_mut(&mut self) -> &mut ClientConfig {
        &mut self.client
    }

    /// The delivery timeout: `message.timeout.ms`, or 10 s when unset or unreadable.
    pub fn delivery_timeout(&self) -> Duration {
        self.client
            .get("message.timeout.ms")
            .and_then(|ms| ms.trim().parse::<u64>().ok())
            .filter(|&ms| ms > 0)
            .map_or(DEFAULT_DELIVERY_TIMEOUT, Duration::from_millis)
    }

    /// The configuration the producer is created from: the user's, with the ordering
    /// settings forced on and librdkafka's own message timeout well above the
    /// publisher's delivery timeout, so the publisher's purge always comes first.
    pub(super) fn producer_config(&self) -> ClientConfig {
        let mut client = self.client.clone();
        let backstop = self.delivery_timeout() * 2 + Duration::from_secs(5);
        client
            .set("enable.idempotence", "true")
            .set("enable.gapless.guarantee", "true")
            .set("message.timeout.ms", backstop.as_millis().to_string());
        client
    }
}

impl KafkaConfig {
    /// The values of the properties that hold secrets.
    fn secrets(&self) -> Vec<String> {
        let mut secrets: Vec<String> = self
            .client
            .config_map()
            .iter()
            .filter(|(key, value)| is_secret(key) && !value.is_empty())
            .map(|(_, value)| value.to_string())
            .collect();
        secrets.sort_by_key(|secret| std::cmp::Reverse(secret.len()));
        secrets
    }

    /// `error` with every secret value of this configuration replaced by `***`:
    /// librdkafka's configuration errors quote the value they refuse.
    pub(super) fn redact(&self, error: KafkaError) -> KafkaError {
        let secrets = self.secrets();
        let scrub = |text: &str| {
            secrets.iter().fold(text.to_owned(), |text, secret| {
                text.replace(secret.as_str(), "***")
            })
        };
        match error {
            KafkaError::ClientConfig(result, description, key, value) => {
                let value = if is_secret(&key) {
                    "***".to_owned()
                } else {
                    scrub(&value)
                };
                KafkaError::ClientConfig(result, scrub(&description), key, value)
            }
            KafkaError::ClientCreation(message) => KafkaError::ClientCreation(scrub(&message)),
            other => other,
        }
    }
}

/// Whether a librdkafka property holds a secret (passwords, client secrets, private
/// keys, SASL and OAUTHBEARER configurations): its value never appears in errors,
/// logs or `Debug` output.
fn is_secret(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    [
        "password",
        "secret",
        "ssl.key.pem",
        "sasl.oauthbearer.config",
        "jaas",
    ]
    .iter()
    .any(|part| key.contains(part))
}

impl fmt::Debug for KafkaConfig {
    /// Shows the keys only: values may hold credentials.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let map = self.client.config_map();
        let mut keys: Vec<&&str> = map.keys().collect();
        keys.sort();
        f.debug_struct("KafkaConfig").field("keys", &keys).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_values_appear_in_no_error_and_no_debug_output() {
        for (key, secret) in [
            ("ssl.key.password", "hunter2-key"),
            ("ssl.key.pem", "-----BEGIN PRIVATE KEY-----abc"),
            ("sasl.oauthbearer.client.secret", "hunter2-oidc"),
        ] {
            let config = KafkaConfig::new("127.0.0.1:1")
                .set("sasl.password", "hunter2-sasl")
                .set(key, secret);
            assert!(!format!("{config:?}").contains("hunter2"));
            // This build has no OpenSSL: librdkafka refuses the property, quoting it.
            let Err(error) = config
                .producer_config()
                .create::<rdkafka::producer::FutureProducer>()
            else {
                panic!("{key} is refused in a build without OpenSSL");
            };
            assert!(
                format!("{error}").contains(secret),
                "the raw error quotes it"
            );
            let redacted = config.redact(error);
            for shown in [format!("{redacted}"), format!("{redacted:?}")] {
                assert!(!shown.contains(secret), "{shown}");
                assert!(
                    shown.contains(key),
                    "the error still names the property: {shown}"
                );
            }
        }
    }
}
