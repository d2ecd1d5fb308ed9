//! [`RelayConfig`]: the relay's settings, by struct or from `OUTBOX_*` variables.

mod env;
mod validate;

use std::collections::BTreeMap;
use std::time::Duration;

pub(crate) use self::env::outbox_settings;
use self::env::{Env, formats_by_topic};
use crate::backoff::Backoff;
use crate::database_url::DatabaseUrl;
use crate::error::{Error, Result};
use crate::retry::Retries;
use crate::wire::{Encodings, MessageFormat};

/// What a service name's characters become in the default CloudEvents `source`: all
/// but RFC 3986's unreserved characters encoded.
const PATH: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// What `OUTBOX_MESSAGE_FORMAT` may be.
const FORMATS: &str = "expected native, cloudevents-binary, cloudevents-structured or debezium";

/// The longest service name: the relay tables' `service_name` columns hold 255
/// characters.
pub(crate) const MAX_SERVICE_NAME_LEN: usize = 255;
const SERVICE_NAME_LENGTH: &str = "expected 1 to 255 characters";
const _: () = assert!(MAX_SERVICE_NAME_LEN == 255, "update SERVICE_NAME_LENGTH");

/// The largest batch: its write-back binds one parameter per event, within every
/// backend's limit.
pub const MAX_BATCH_SIZE: usize = 10_000;
/// The longest lease: a relay that dies holds its shards this long.
const MAX_LEASE_TTL: Duration = Duration::from_secs(24 * 60 * 60);
/// The longest retention, about a hundred years.
const MAX_CLEANUP_AFTER_DAYS: u32 = 36_500;

/// How the relay runs.
///
/// | field | default | variable |
/// |---|---|---|
/// | `service_name` | `"default"` | `OUTBOX_SERVICE_NAME` |
/// | `interval` | 5 s | `OUTBOX_INTERVAL` |
/// | `batch_size` | 100 | `OUTBOX_BATCH_SIZE` |
/// | `enabled` | true | `OUTBOX_ENABLED` |
/// | `retry_attempts` | 3 | `OUTBOX_RETRY_ATTEMPTS` |
/// | `retry_backoff.first` | 10 s | `OUTBOX_RETRY_DELAY` |
/// | `cleanup_enabled` | true | `OUTBOX_CLEANUP_ENABLED` |
/// | `cleanup_interval` | 24 h | `OUTBOX_CLEANUP_INTERVAL` |
/// | `cleanup_after_days` | 7 | `OUTBOX_CLEANUP_AFTER_DAYS` |
/// | `retry_backoff.max` | 5 min | `OUTBOX_MAX_RETRY_DELAY` |
/// | `min_poll_interval` | 10 ms | `OUTBOX_MIN_POLL_INTERVAL` |
/// | `lease_ttl` | 30 s | `OUTBOX_LEASE_TTL` |
/// | `concurrency` | 4 | `OUTBOX_CONCURRENCY` |
/// | `dead_letter_topic` | none | `OUTBOX_DEAD_LETTER_TOPIC` |
/// | `shutdown_timeout` | 30 s | `OUTBOX_SHUTDOWN_TIMEOUT` |
/// | `health_timeout` | 60 s | `OUTBOX_HEALTH_TIMEOUT` |
/// | `stall_timeout` | 20 s | `OUTBOX_STALL_TIMEOUT` |
/// | `listen` | true | `OUTBOX_LISTEN` |
/// | `listen_url` | none (a connection of the relay's pool) | `OUTBOX_LISTEN_URL` |
/// | `format` | `native` | `OUTBOX_MESSAGE_FORMAT` |
/// | `format_by_topic` | none | `OUTBOX_MESSAGE_FORMAT_BY_TOPIC` (`orders=debezium,users=cloudevents-binary`) |
/// | `cloudevents_source` | `/<service_name>` | `OUTBOX_CLOUDEVENTS_SOURCE` |
///
/// Durations are written like `250ms`, `5s`, `1m 30s` or `24h`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[doc(alias = "ProcessorConfig")]
pub struct RelayConfig {
    /// Names the relay group: relays with the same name share the work.
    pub service_name: String,
    /// The longest time between two polls when there is nothing to do. The relay
    /// polls again at once after a full batch, backs off from `min_poll_interval` to
    /// this when batches come back empty, and wakes at once when an event is stored
    /// (by this process, or on PostgreSQL by any process: see `listen`).
    pub interval: Duration,
    /// Events per shard per batch.
    pub batch_size: usize,
    /// When false, `spawn` starts nothing (the handle reports itself disabled).
    pub enabled: bool,
    /// Retries of an event the broker refuses; after `1 + retry_attempts` failed
    /// attempts it is dead-lettered. Broker outages do not count.
    pub retry_attempts: u32,
    /// The wait after a refused event's failed attempt: `retry_backoff.first` after
    /// the first, doubling with each further failure, at most `retry_backoff.max`. An
    /// outage waits `retry_backoff.first` and uses no attempt.
    pub retry_backoff: Backoff,
    /// Whether published events are deleted after `cleanup_after_days`.
    pub cleanup_enabled: bool,
    /// How often cleanup runs.
    pub cleanup_interval: Duration,
    /// How many days published events are kept. 0 deletes them at each cleanup.
    pub cleanup_after_days: u32,
    /// The shortest wait between polls.
    pub min_poll_interval: Duration,
    /// How long a relay's claim on a shard lasts unless renewed; a relay that dies
    /// loses its shards after this.
    pub lease_ttl: Duration,
    /// How many shards one relay processes at once.
    pub concurrency: usize,
    /// Where dead-lettered events are also sent, if anywhere.
    pub dead_letter_topic: Option<String>,
    /// How long `shutdown` waits for the batch in flight before it aborts it.
    pub shutdown_timeout: Duration,
    /// `healthcheck` fails when no cycle has succeeded for this long.
    pub health_timeout: Duration,
    /// A relay that reaches the database but has delivered nothing to the broker for
    /// this long (every attempt failing as an outage) gives up its shards and stops
    /// heartbeating, so relays that can deliver take its keys; it rejoins once the
    /// broker answers it again. Keep it above the publisher's delivery timeout.
    pub stall_timeout: Duration,
    /// On PostgreSQL, whether the relay listens for the `NOTIFY` that writers in any
    /// process send when they store events (see
    /// [`Outbox::with_wake_connection`](crate::Outbox::with_wake_connection)), and
    /// whether its own process's stores send one. Without it, events stored in other
    /// processes are found by polling (up to `interval` later after an idle spell).
    /// Needs the `postgres` feature; SQLite always wakes in-process only.
    pub listen: bool,
    /// The database the relay listens on, when it must not be a connection of the
    /// relay's pool: behind PgBouncer in transaction mode, `LISTEN` needs a direct
    /// connection to PostgreSQL (the same database). `None`: one connection of the
    /// pool is kept for listening.
    pub listen_url: Option<DatabaseUrl>,
    /// How events are written as Kafka messages ([`MessageFormat`]): this crate's
    /// headers, CloudEvents (binary or structured) or Debezium's outbox format. The
    /// consumer reads every format, so a topic can change format during a rolling
    /// deploy.
    pub format: MessageFormat,
    /// Topics written in another format than `format`.
    pub format_by_topic: BTreeMap<String, MessageFormat>,
    /// The CloudEvents `source` attribute (a URI-reference); `None`:
    /// `/<service_name>`.
    pub cloudevents_source: Option<String>,
}

impl Default for RelayConfig {
    fn default() -> Self {
        RelayConfig {
            service_name: "default".to_owned(),
            interval: Duration::from_secs(5),
            batch_size: 100,
            enabled: true,
            retry_attempts: 3,
            retry_backoff: Backoff::new(Duration::from_secs(10), Duration::from_secs(5 * 60)),
            cleanup_enabled: true,
            cleanup_interval: Duration::from_secs(24 * 60 * 60),
            cleanup_after_days: 7,
            min_poll_interval: Duration::from_millis(10),
            lease_ttl: Duration::from_secs(30),
            concurrency: 4,
            dead_letter_topic: None,
            shutdown_timeout: Duration::from_secs(30),
            health_timeout: Duration::from_secs(60),
            stall_timeout: Duration::from_secs(20),
            listen: true,
            listen_url: None,
            format: MessageFormat::Native,
            format_by_topic: BTreeMap::new(),
            cloudevents_source: None,
        }
    }
}

impl RelayConfig {
    /// The defaults for `service_name`.
    #[doc(alias = "DefaultProcessorConfig")]
    pub fn new(service_name: impl Into<String>) -> Self {
        RelayConfig {
            service_name: service_name.into(),
            ..Self::default()
        }
    }

    /// The defaults, overridden by every `OUTBOX_*` variable that is set.
    ///
    /// # Errors
    /// [`Error::Config`] naming the variable and its value when a value is invalid.
    pub fn from_env() -> Result<Self> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Like [`from_env`](Self::from_env), reading variables through `lookup`.
    ///
    /// ```
    /// let vars = [("OUTBOX_BATCH_SIZE", "500"), ("OUTBOX_INTERVAL", "250ms")];
    /// let config = outbox::RelayConfig::from_lookup(|name| {
    ///     vars.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string())
    /// })?;
    /// assert_eq!(config.batch_size, 500);
    /// assert_eq!(config.interval, std::time::Duration::from_millis(250));
    /// # Ok::<(), outbox::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::Config`] naming the variable and its value when a value is invalid.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let env = Env(lookup);
        let mut c = Self::default();
        env.string("OUTBOX_SERVICE_NAME", &mut c.service_name)?;
        env.duration("OUTBOX_INTERVAL", &mut c.interval)?;
        env.positive("OUTBOX_BATCH_SIZE", &mut c.batch_size)?;
        env.boolean("OUTBOX_ENABLED", &mut c.enabled)?;
        env.number("OUTBOX_RETRY_ATTEMPTS", &mut c.retry_attempts)?;
        env.duration("OUTBOX_RETRY_DELAY", &mut c.retry_backoff.first)?;
        env.boolean("OUTBOX_CLEANUP_ENABLED", &mut c.cleanup_enabled)?;
        env.duration("OUTBOX_CLEANUP_INTERVAL", &mut c.cleanup_interval)?;
        env.number("OUTBOX_CLEANUP_AFTER_DAYS", &mut c.cleanup_after_days)?;
        env.duration("OUTBOX_MAX_RETRY_DELAY", &mut c.retry_backoff.max)?;
        env.duration("OUTBOX_MIN_POLL_INTERVAL", &mut c.min_poll_interval)?;
        env.duration("OUTBOX_LEASE_TTL", &mut c.lease_ttl)?;
        env.positive("OUTBOX_CONCURRENCY", &mut c.concurrency)?;
        if let Some(topic) = env.get("OUTBOX_DEAD_LETTER_TOPIC") {
            c.dead_letter_topic = Some(topic);
        }
        env.duration("OUTBOX_SHUTDOWN_TIMEOUT", &mut c.shutdown_timeout)?;
        env.duration("OUTBOX_HEALTH_TIMEOUT", &mut c.health_timeout)?;
        env.duration("OUTBOX_STALL_TIMEOUT", &mut c.stall_timeout)?;
        env.boolean("OUTBOX_LISTEN", &mut c.listen)?;
        if let Some(url) = env.get("OUTBOX_LISTEN_URL") {
            c.listen_url = Some(DatabaseUrl::from(url));
        }
        env.parse("OUTBOX_MESSAGE_FORMAT", &mut c.format, FORMATS, |v| {
            v.parse().ok()
        })?;
        env.parse(
            "OUTBOX_MESSAGE_FORMAT_BY_TOPIC",
            &mut c.format_by_topic,
            "expected topic=format pairs separated by commas, each format native, cloudevents-binary, cloudevents-structured or debezium",
            formats_by_topic,
        )?;
        if let Some(source) = env.get("OUTBOX_CLOUDEVENTS_SOURCE") {
            c.cloudevents_source = Some(source);
        }
        c.validate()?;
        Ok(c)
    }

    /// The CloudEvents `source`: `cloudevents_source`, or `/<service_name>` (the name
    /// percent-encoded where a URI-reference's path may not hold it as it is).
    pub fn cloudevents_source(&self) -> String {
        self.cloudevents_source.clone().unwrap_or_else(|| {
            let name = percent_encoding::utf8_percent_encode(self.service_name.trim(), PATH);
            format!("/{name}")
        })
    }

    /// How the relay writes messages, per topic.
    pub(crate) fn encodings(&self) -> Encodings {
        Encodings::new(
            self.format,
            &self.format_by_topic,
            &self.cloudevents_source(),
        )
    }

    /// How a refused event is retried.
    pub(crate) fn retries(&self) -> Retries {
        Retries {
            retries: self.retry_attempts,
            backoff: self.retry_backoff,
        }
    }

    /// Checks values that no type can: a non-empty service name, a batch size from 1
    /// to [`MAX_BATCH_SIZE`], a positive concurrency, a minimum poll interval of at
    /// least 1 ms, a lease from 100 ms to 24 h, a retention of at most 36,500 days,
    /// other durations of at most 365 days, and durations that make sense together.
    /// [`Relay::new`](crate::Relay::new) runs it.
    ///
    /// # Errors
    /// [`Error::Config`] naming the field.
    pub fn validate(&self) -> Result<()> {
        let invalid = |variable: &'static str, value: String, reason: &'static str| {
            Err(Error::Config {
                variable,
                value,
                reason,
            })
        };
        if self.service_name.trim().is_empty()
            || self.service_name.chars().count() > MAX_SERVICE_NAME_LEN
        {
            return invalid(
                "OUTBOX_SERVICE_NAME",
                self.service_name.clone(),
                SERVICE_NAME_LENGTH,
            );
        }
        if self.batch_size == 0 || self.batch_size > MAX_BATCH_SIZE {
            return invalid(
                "OUTBOX_BATCH_SIZE",
                self.batch_size.to_string(),
                "expected an integer from 1 to 10000",
            );
        }
        if self.concurrency == 0 {
            return invalid(
                "OUTBOX_CONCURRENCY",
                "0".into(),
                "expected a positive integer",
            );
        }
        if self.interval.is_zero() || self.min_poll_interval > self.interval {
            return invalid(
                "OUTBOX_INTERVAL",
                humantime::format_duration(self.interval).to_string(),
                "expected a duration above zero and not below OUTBOX_MIN_POLL_INTERVAL",
            );
        }
        if self.min_poll_interval < Duration::from_millis(1) {
            return invalid(
                "OUTBOX_MIN_POLL_INTERVAL",
                humantime::format_duration(self.min_poll_interval).to_string(),
                "expected at least 1ms",
            );
        }
        if self.lease_ttl < Duration::from_millis(100) || self.lease_ttl > MAX_LEASE_TTL {
            return invalid(
                "OUTBOX_LEASE_TTL",
                humantime::format_duration(self.lease_ttl).to_string(),
                "expected from 100ms to 24h",
            );
        }
        if self.cleanup_after_days > MAX_CLEANUP_AFTER_DAYS {
            return invalid(
                "OUTBOX_CLEANUP_AFTER_DAYS",
                self.cleanup_after_days.to_string(),
                "expected at most 36500 days",
            );
        }
        validate::durations(self)?;
        validate::cloudevents_source(self)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroU16;

    use super::*;
    use crate::Completion;

    #[test]
    fn the_listen_url_shows_no_password() {
        let config = from(&[
            ("OUTBOX_LISTEN", "false"),
            (
                "OUTBOX_LISTEN_URL",
                "postgres://relay:s3cr3t@db:5432/app?password=p2",
            ),
        ])
        .expect("valid");
        assert!(!config.listen);
        let url = config.listen_url.as_ref().expect("set");
        assert_eq!(
            url.as_str(),
            "postgres://relay:s3cr3t@db:5432/app?password=p2"
        );
        let shown = format!("{config:?}");
        assert!(
            shown.contains("postgres://relay:***@db:5432/app?password=***"),
            "{shown}"
        );
        assert!(
            !shown.contains("s3cr3t") && !shown.contains("p2"),
            "{shown}"
        );
    }

    /// A password with `#`, `?` or `/` in it is hidden too (the parameters were cut
    /// first, at its `#`, and the user info was then shown whole).
    #[test]
    fn a_password_with_url_delimiters_is_not_shown() {
        for (url, host) in [
            ("postgres://u:p#ss@h/db", "postgres://u:***@h/db"),
            (
                "postgres://u:p?ss@h:5432/db?sslmode=require",
                "postgres://u:***@h:5432/db?sslmode=require",
            ),
            (
                "postgres://u:p/ss#x@h/db#frag",
                "postgres://u:***@h/db#frag",
            ),
            (
                "postgres://h/db?application_name=a",
                "postgres://h/db?application_name=a",
            ),
        ] {
            let shown = format!("{:?}", DatabaseUrl::from(url));
            assert_eq!(shown, format!("{host:?}"), "{url}");
        }
    }

    fn from(vars: &[(&str, &str)]) -> Result<RelayConfig> {
        RelayConfig::from_lookup(|name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v).to_owned())
        })
    }

    #[test]
    fn message_formats_are_read_per_relay_and_per_topic() {
        let config = from(&[
            ("OUTBOX_SERVICE_NAME", "billing"),
            ("OUTBOX_MESSAGE_FORMAT", "cloudevents-structured"),
            (
                "OUTBOX_MESSAGE_FORMAT_BY_TOPIC",
                "orders=debezium, users = native",
            ),
        ])
        .expect("valid");
        assert_eq!(config.format, MessageFormat::CloudEventsStructured);
        assert_eq!(
            config.format_by_topic,
            BTreeMap::from([
                ("orders".to_owned(), MessageFormat::Debezium),
                ("users".to_owned(), MessageFormat::Native),
            ])
        );
        assert_eq!(config.cloudevents_source(), "/billing");
        let spaced = RelayConfig::new("billing service/eu");
        assert_eq!(spaced.cloudevents_source(), "/billing%20service%2Feu");
        let encodings = config.encodings();
        assert_eq!(encodings.of("orders").format(), MessageFormat::Debezium);
        assert_eq!(
            encodings.of("payments").format(),
            MessageFormat::CloudEventsStructured
        );
    }

    #[test]
    fn invalid_message_format_settings_name_their_variable() {
        for (variable, value) in [
            ("OUTBOX_MESSAGE_FORMAT", "avro"),
            ("OUTBOX_MESSAGE_FORMAT_BY_TOPIC", "orders"),
            ("OUTBOX_MESSAGE_FORMAT_BY_TOPIC", "orders=protobuf"),
            ("OUTBOX_MESSAGE_FORMAT_BY_TOPIC", "=debezium"),
            ("OUTBOX_CLOUDEVENTS_SOURCE", "my service"),
        ] {
            let error = from(&[(variable, value)]).expect_err("invalid");
            assert!(
                matches!(&error, Error::Config { variable: v, .. } if *v == variable),
                "{variable}={value}: {error}"
            );
        }
    }

    #[test]
    fn no_variables_give_the_go_library_defaults() {
        assert_eq!(from(&[]).expect("defaults"), RelayConfig::default());
    }

    #[test]
    fn every_go_library_variable_is_read() {
        let config = from(&[
            ("OUTBOX_SERVICE_NAME", "billing"),
            ("OUTBOX_INTERVAL", "2s"),
            ("OUTBOX_BATCH_SIZE", "250"),
            ("OUTBOX_ENABLED", "false"),
            ("OUTBOX_RETRY_ATTEMPTS", "5"),
            ("OUTBOX_RETRY_DELAY", "1m 30s"),
            ("OUTBOX_CLEANUP_ENABLED", "0"),
            ("OUTBOX_CLEANUP_INTERVAL", "12h"),
            ("OUTBOX_CLEANUP_AFTER_DAYS", "30"),
            ("OUTBOX_DEAD_LETTER_TOPIC", "billing.dlq"),
            ("OUTBOX_LEASE_TTL", "15s"),
        ])
        .expect("valid");
        assert_eq!(
            config,
            RelayConfig {
                service_name: "billing".into(),
                interval: Duration::from_secs(2),
                batch_size: 250,
                enabled: false,
                retry_attempts: 5,
                retry_backoff: Backoff::new(Duration::from_secs(90), Duration::from_secs(5 * 60)),
                cleanup_enabled: false,
                cleanup_interval: Duration::from_secs(12 * 3600),
                cleanup_after_days: 30,
                dead_letter_topic: Some("billing.dlq".into()),
                lease_ttl: Duration::from_secs(15),
                ..RelayConfig::default()
            }
        );
    }

    #[test]
    fn each_invalid_value_is_named_in_the_error() {
        for (variable, value) in [
            ("OUTBOX_SERVICE_NAME", ""),
            ("OUTBOX_INTERVAL", "5 parsecs"),
            ("OUTBOX_BATCH_SIZE", "0"),
            ("OUTBOX_BATCH_SIZE", "-1"),
            ("OUTBOX_ENABLED", "maybe"),
            ("OUTBOX_RETRY_ATTEMPTS", "three"),
            ("OUTBOX_RETRY_DELAY", "10"),
            ("OUTBOX_CLEANUP_ENABLED", "enabled"),
            ("OUTBOX_CLEANUP_INTERVAL", "daily"),
            ("OUTBOX_CLEANUP_AFTER_DAYS", "7d"),
            ("OUTBOX_LEASE_TTL", "1ms"),
            ("OUTBOX_BATCH_SIZE", "100000"),
            ("OUTBOX_CONCURRENCY", "0"),
            ("OUTBOX_MIN_POLL_INTERVAL", "0s"),
            ("OUTBOX_CLEANUP_AFTER_DAYS", "4000000000"),
        ] {
            let error = from(&[(variable, value)]).expect_err(variable);
            let text = error.to_string();
            assert!(
                text.contains(variable) && text.contains(&format!("{value:?}")),
                "{variable}={value:?} gave: {text}"
            );
        }
    }

    #[test]
    fn the_outbox_variables_are_read_for_writers_and_relays_alike() {
        let vars = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| (*v).to_owned())
            }
        };
        let (shards, completion) = outbox_settings(vars(&[
            ("OUTBOX_SHARDS", "64"),
            ("OUTBOX_COMPLETION", "delete"),
        ]))
        .expect("valid");
        assert_eq!(shards, NonZeroU16::new(64));
        assert_eq!(completion, Some(Completion::Delete));
        assert_eq!(outbox_settings(vars(&[])).expect("valid"), (None, None));
        for (variable, value) in [
            ("OUTBOX_SHARDS", "0"),
            ("OUTBOX_SHARDS", "70000"),
            ("OUTBOX_COMPLETION", "keep"),
        ] {
            let pairs: &'static [(&'static str, &'static str)] =
                Box::leak(Box::new([(variable, value)]));
            let text = outbox_settings(vars(pairs))
                .expect_err(variable)
                .to_string();
            assert!(
                text.contains(variable) && text.contains(&format!("{value:?}")),
                "{variable}={value:?} gave: {text}"
            );
        }
    }

    #[test]
    fn durations_that_would_overflow_a_timestamp_are_refused() {
        for variable in [
            "OUTBOX_LEASE_TTL",
            "OUTBOX_MAX_RETRY_DELAY",
            "OUTBOX_RETRY_DELAY",
            "OUTBOX_CLEANUP_INTERVAL",
            "OUTBOX_HEALTH_TIMEOUT",
            "OUTBOX_SHUTDOWN_TIMEOUT",
        ] {
            let error = from(&[(variable, "300000y")])
                .expect_err(variable)
                .to_string();
            assert!(error.contains(variable), "{variable}: {error}");
        }
    }

    #[test]
    fn the_retry_variables_set_the_backoff() {
        let config = from(&[
            ("OUTBOX_RETRY_DELAY", "2s"),
            ("OUTBOX_MAX_RETRY_DELAY", "1m"),
        ])
        .expect("valid");
        assert_eq!(
            config.retry_backoff,
            Backoff::new(Duration::from_secs(2), Duration::from_secs(60))
        );
    }
}
