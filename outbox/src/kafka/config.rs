//! [`KafkaConfig`]: the Kafka client's settings, the producer's defaults.

use std::fmt;
use std::path::Path;
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::error::KafkaError;

use crate::error::{Error, Result};
use crate::secrets::Secrets;

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

    /// The defaults of [`new`](Self::new), with every librdkafka property set in the
    /// environment under [`ENV_PREFIX`](Self::ENV_PREFIX) (see
    /// [`with_env`](Self::with_env)). `OUTBOX_KAFKA_BOOTSTRAP_SERVERS` is required.
    ///
    /// # Errors
    /// [`Error::Config`] when no broker is given.
    pub fn from_env() -> Result<Self> {
        Self::new("").with_env().require_brokers()
    }

    /// The prefix of the environment variables that set librdkafka properties: the
    /// rest of the name, lower-cased, with `_` for `.`, is the property:
    /// `OUTBOX_KAFKA_SECURITY_PROTOCOL=SASL_SSL` sets `security.protocol`,
    /// `OUTBOX_KAFKA_SASL_PASSWORD` sets `sasl.password`. `OUTBOX_KAFKA_CONFIG` is not
    /// a property: it names a properties file (see
    /// [`with_properties_file`](Self::with_properties_file)), which the `outbox relay`
    /// command reads.
    pub const ENV_PREFIX: &'static str = "OUTBOX_KAFKA_";

    /// Sets every property given in this process's environment under
    /// [`ENV_PREFIX`](Self::ENV_PREFIX), over what is set already.
    pub fn with_env(self) -> Self {
        self.with_env_vars(std::env::vars_os().filter_map(|(name, value)| {
            Some((name.into_string().ok()?, value.into_string().ok()?))
        }))
    }

    /// As [`with_env`](Self::with_env), from the variables given.
    ///
    /// ```
    /// let config = outbox::KafkaConfig::new("kafka:9092").with_env_vars([
    ///     ("OUTBOX_KAFKA_SECURITY_PROTOCOL", "SASL_SSL"),
    ///     ("OUTBOX_KAFKA_SASL_MECHANISMS", "SCRAM-SHA-512"),
    ///     ("HOME", "/root"),
    /// ]);
    /// assert_eq!(config.client_config().get("security.protocol"), Some("SASL_SSL"));
    /// assert_eq!(config.client_config().get("sasl.mechanisms"), Some("SCRAM-SHA-512"));
    /// assert_eq!(config.client_config().get("home"), None);
    /// ```
    pub fn with_env_vars<K, V>(mut self, vars: impl IntoIterator<Item = (K, V)>) -> Self
    where
        K: AsRef<str>,
        V: Into<String>,
    {
        let mut properties: Vec<(String, String)> = vars
            .into_iter()
            .filter_map(|(name, value)| Some((property_of_variable(name.as_ref())?, value.into())))
            .collect();
        // The environment's order is arbitrary: apply in name order, so the outcome
        // does not depend on it.
        properties.sort();
        for (key, value) in properties {
            self.client.set(key, value);
        }
        self
    }

    /// Sets every property of a properties file, over what is set already. The format
    /// is the one librdkafka's tools read (`kcat -F`, `rdkafka_performance -X
    /// file=`) and Java clients' `client.properties`: one `key=value` a line, blanks
    /// and lines starting with `#` or `!` ignored, spaces around the key and the value
    /// trimmed.
    ///
    /// ```
    /// # let dir = std::env::temp_dir().join(format!("outbox-doc-{}", std::process::id()));
    /// # std::fs::create_dir_all(&dir)?;
    /// # let path = dir.join("client.properties");
    /// std::fs::write(&path, "# production\nsecurity.protocol = SSL\nssl.ca.location=/etc/kafka/ca.pem\n")?;
    /// let config = outbox::KafkaConfig::new("kafka:9093").with_properties_file(&path)?;
    /// assert_eq!(config.client_config().get("ssl.ca.location"), Some("/etc/kafka/ca.pem"));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::KafkaProperties`] naming the file (and the line) when it cannot be read
    /// or a line is not `key=value`; the error never quotes a line, which may hold a
    /// secret.
    pub fn with_properties_file(mut self, path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let failed = |reason: String| Error::KafkaProperties {
            path: path.to_owned(),
            reason,
        };
        let text = std::fs::read_to_string(path).map_err(|error| failed(error.to_string()))?;
        for (index, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') || line.starts_with('!') {
                continue;
            }
            let Some((key, value)) = line.split_once('=') else {
                return Err(failed(format!(
                    "line {}: expected `property=value`",
                    index + 1
                )));
            };
            let key = key.trim();
            if key.is_empty() {
                return Err(failed(format!(
                    "line {}: no property name before `=`",
                    index + 1
                )));
            }
            self.client.set(key, value.trim());
        }
        Ok(self)
    }

    /// `Ok(self)` when `bootstrap.servers` is set.
    ///
    /// # Errors
    /// [`Error::Config`] naming `OUTBOX_KAFKA_BOOTSTRAP_SERVERS` when it is not.
    pub fn require_brokers(self) -> Result<Self> {
        match self.client.get("bootstrap.servers") {
            Some(brokers) if !brokers.trim().is_empty() => Ok(self),
            _ => Err(Error::Config {
                variable: "OUTBOX_KAFKA_BOOTSTRAP_SERVERS",
                value: String::new(),
                reason: "no Kafka broker given (bootstrap.servers)",
            }),
        }
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
    pub(crate) fn producer_config(&self) -> ClientConfig {
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
    pub(crate) fn secrets(&self) -> Secrets {
        Secrets::new(
            self.client
                .config_map()
                .iter()
                .filter(|(key, _)| is_secret(key))
                .map(|(_, value)| value.to_string()),
        )
    }

    /// `error` with every secret value of this configuration, and the value a
    /// configuration error refuses, replaced by `***`: librdkafka's configuration
    /// errors quote the value they refuse.
    pub(crate) fn redact(&self, error: KafkaError) -> KafkaError {
        let secrets = self.secrets();
        match error {
            // The refused value is never shown: a property librdkafka does not know
            // (a schema registry's `basic.auth.user.info`, say) may hold a secret that
            // no list of secret names foresees.
            KafkaError::ClientConfig(result, description, key, value) => {
                let description = secrets.scrub(&description);
                let description = if value.is_empty() {
                    description
                } else {
                    description.replace(&value, "***")
                };
                let description = with_build_hint(description);
                KafkaError::ClientConfig(result, description, key, "***".to_owned())
            }
            KafkaError::ClientCreation(message) => {
                KafkaError::ClientCreation(with_build_hint(secrets.scrub(&message)))
            }
            other => other,
        }
    }
}

/// `message`, a librdkafka error, with what to do when it says a property needs
/// something this build of librdkafka lacks: which feature of this crate brings it,
/// if one does.
fn with_build_hint(message: String) -> String {
    let hint = if message.contains("cyrus-sasl") || message.contains("SASL mechanism GSSAPI") {
        "enable the outbox crate's `gssapi` feature (it needs libsasl2-dev at build time)"
    } else if message.contains("libcurl") {
        "no feature of the outbox crate builds librdkafka with libcurl: give the client an \
         OAUTHBEARER token another way (see docs/configuration.md)"
    } else if message.contains("OpenSSL") || message.contains("No provider for SASL mechanism") {
        "enable the outbox crate's `ssl` feature (the system's OpenSSL; libssl-dev and \
         pkg-config at build time) or `ssl-vendored` (OpenSSL built from source)"
    } else if message.contains("snappy") || message.contains("libzstd") {
        "no feature of the outbox crate builds librdkafka with snappy or zstd: use \
         compression.type gzip or lz4"
    } else {
        return message;
    };
    format!("{message}; {hint}")
}

/// The librdkafka property an environment variable sets, if it is one of
/// [`KafkaConfig::ENV_PREFIX`]'s.
fn property_of_variable(name: &str) -> Option<String> {
    let rest = name.strip_prefix(KafkaConfig::ENV_PREFIX)?;
    if rest.is_empty() || rest == "CONFIG" {
        return None;
    }
    Some(rest.to_ascii_lowercase().replace('_', "."))
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
    fn errors_of_a_build_without_a_feature_name_the_feature() {
        let ssl = with_build_hint(
            "Unsupported value \"ssl\" for configuration property \"security.protocol\": \
             OpenSSL not available at build time"
                .to_owned(),
        );
        assert!(
            ssl.ends_with("or `ssl-vendored` (OpenSSL built from source)"),
            "{ssl}"
        );
        let gssapi = with_build_hint(
            "No provider for SASL mechanism GSSAPI: recompile librdkafka with libsasl2 or openssl support."
                .to_owned(),
        );
        assert!(gssapi.contains("`gssapi` feature"), "{gssapi}");
        let other = "Invalid value for configuration property \"acks\"".to_owned();
        assert_eq!(with_build_hint(other.clone()), other);
    }

    /// Without the `ssl` feature, asking for TLS fails naming the feature.
    #[cfg(not(feature = "ssl"))]
    #[test]
    fn tls_without_the_ssl_feature_names_it() {
        let error = crate::KafkaPublisher::from_config(
            KafkaConfig::new("127.0.0.1:9092").set("security.protocol", "ssl"),
        )
        .expect_err("no TLS in this build")
        .to_string();
        assert!(
            error.contains("enable the outbox crate's `ssl` feature"),
            "{error}"
        );
    }

    #[test]
    fn secret_values_appear_in_no_error_and_no_debug_output() {
        let config = KafkaConfig::new("127.0.0.1:1")
            .set("sasl.password", "hunter2-sasl")
            .set("ssl.key.password", "hunter2-key")
            .set("ssl.key.pem", "-----BEGIN PRIVATE KEY-----abc")
            // Not supported without curl, which no feature enables (and the `ssl.`
            // ones not without `ssl`): librdkafka's error quotes the value.
            .set("sasl.oauthbearer.client.secret", "hunter2-oidc");
        assert!(!format!("{config:?}").contains("hunter2"));
        let Err(error) = config
            .producer_config()
            .create::<rdkafka::producer::FutureProducer>()
        else {
            panic!("sasl.oauthbearer.client.secret is refused in a build without curl");
        };
        let raw = format!("{error:?}");
        let secrets = ["hunter2", "PRIVATE KEY-----abc"];
        assert!(
            secrets.iter().any(|secret| raw.contains(secret)),
            "the raw error quotes it: {raw}"
        );
        let property = [
            "sasl.oauthbearer.client.secret",
            "ssl.key.password",
            "ssl.key.pem",
        ]
        .into_iter()
        .find(|property| raw.contains(property))
        .expect("the raw error names the property");
        let redacted = config.redact(error);
        for shown in [format!("{redacted}"), format!("{redacted:?}")] {
            assert!(
                !secrets.iter().any(|secret| shown.contains(secret)),
                "{shown}"
            );
            assert!(
                shown.contains(property),
                "the error still names the property: {shown}"
            );
        }
        // An error about a secret property hides its value even where it is not
        // among the configuration's (a value librdkafka normalised, say).
        let error = KafkaError::ClientConfig(
            rdkafka::types::RDKafkaConfRes::RD_KAFKA_CONF_INVALID,
            "invalid value".to_owned(),
            "sasl.password".to_owned(),
            "other-secret".to_owned(),
        );
        assert!(!format!("{:?}", config.redact(error)).contains("other-secret"));
    }

    #[test]
    fn a_property_librdkafka_does_not_know_keeps_its_value_out_of_the_error() {
        // Confluent Cloud's schema-registry credentials, copied into a client
        // properties file: not a librdkafka property, and no secret by its name.
        let config = KafkaConfig::new("127.0.0.1:1").set("basic.auth.user.info", "KEY:S3CR3T");
        let Err(error) = config
            .producer_config()
            .create::<rdkafka::producer::FutureProducer>()
        else {
            panic!("librdkafka refuses a property it does not know");
        };
        assert!(
            format!("{error}").contains("S3CR3T"),
            "the raw error quotes it"
        );
        let redacted = config.redact(error);
        for shown in [format!("{redacted}"), format!("{redacted:?}")] {
            assert!(!shown.contains("S3CR3T"), "{shown}");
            assert!(shown.contains("basic.auth.user.info"), "{shown}");
        }
    }

    fn file(text: &str) -> std::path::PathBuf {
        let path = std::env::temp_dir().join(format!("outbox-props-{}", uuid::Uuid::now_v7()));
        std::fs::write(&path, text).expect("write");
        path
    }

    #[test]
    fn a_properties_file_sets_every_property_over_the_defaults() {
        let path = file(
            "# comment\n! also a comment\n\n  security.protocol = SASL_SSL \n\
             sasl.password=a=b=c\nlinger.ms=5\n",
        );
        let config = KafkaConfig::new("kafka:9092")
            .with_properties_file(&path)
            .expect("read");
        let get = |key| config.client_config().get(key);
        assert_eq!(get("security.protocol"), Some("SASL_SSL"));
        assert_eq!(
            get("sasl.password"),
            Some("a=b=c"),
            "split at the first `=`"
        );
        assert_eq!(get("linger.ms"), Some("5"));
        assert_eq!(get("bootstrap.servers"), Some("kafka:9092"));
        std::fs::remove_file(path).expect("remove");
    }

    #[test]
    fn a_bad_properties_file_is_named_with_its_line_and_never_quoted() {
        let path = file("security.protocol=ssl\nsasl.password hunter2\n");
        let error = KafkaConfig::new("k:1")
            .with_properties_file(&path)
            .expect_err("line 2");
        let shown = error.to_string();
        assert!(shown.contains(&path.display().to_string()), "{shown}");
        assert!(shown.contains("line 2"), "{shown}");
        assert!(!shown.contains("hunter2"), "{shown}");
        std::fs::remove_file(&path).expect("remove");
        let missing = KafkaConfig::new("k:1")
            .with_properties_file(&path)
            .expect_err("missing");
        assert!(missing.to_string().contains(&path.display().to_string()));
    }

    #[test]
    fn the_environment_sets_properties_by_prefix() {
        let config = KafkaConfig::new("").with_env_vars([
            ("OUTBOX_KAFKA_BOOTSTRAP_SERVERS", "b1:9092,b2:9092"),
            ("OUTBOX_KAFKA_SSL_CA_LOCATION", "/ca.pem"),
            ("OUTBOX_KAFKA_CONFIG", "/etc/outbox/kafka.properties"),
            ("OUTBOX_BATCH_SIZE", "10"),
            ("KAFKA_BROKERS", "elsewhere:9092"),
        ]);
        let get = |key| config.client_config().get(key);
        assert_eq!(get("bootstrap.servers"), Some("b1:9092,b2:9092"));
        assert_eq!(get("ssl.ca.location"), Some("/ca.pem"));
        assert_eq!(get("config"), None, "OUTBOX_KAFKA_CONFIG names the file");
        assert_eq!(get("batch.size"), None);
        assert!(config.require_brokers().is_ok());
        let error = KafkaConfig::new(" ")
            .require_brokers()
            .expect_err("no brokers");
        assert!(error.to_string().contains("OUTBOX_KAFKA_BOOTSTRAP_SERVERS"));
    }
}
