//! The checks of [`RelayConfig::validate`] that span several fields.

use std::time::Duration;

use super::RelayConfig;
use crate::error::{Error, Result};

/// The longest of the other durations: timestamps computed from them stay in range.
const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 60 * 60);

/// The error for `variable` set to `value`.
fn invalid(variable: &'static str, value: String, reason: &'static str) -> Result<()> {
    Err(Error::Config {
        variable,
        value,
        reason,
    })
}

/// Every duration of at most 365 days.
pub(super) fn durations(config: &RelayConfig) -> Result<()> {
    for (variable, value) in [
        ("OUTBOX_INTERVAL", config.interval),
        ("OUTBOX_RETRY_DELAY", config.retry_backoff.first),
        ("OUTBOX_MAX_RETRY_DELAY", config.retry_backoff.max),
        ("OUTBOX_CLEANUP_INTERVAL", config.cleanup_interval),
        ("OUTBOX_SHUTDOWN_TIMEOUT", config.shutdown_timeout),
        ("OUTBOX_HEALTH_TIMEOUT", config.health_timeout),
        ("OUTBOX_STALL_TIMEOUT", config.stall_timeout),
    ] {
        if value > MAX_DURATION {
            return invalid(
                variable,
                humantime::format_duration(value).to_string(),
                "expected at most 365 days",
            );
        }
    }
    Ok(())
}

/// A CloudEvents `source` that is a URI-reference: not empty, no spaces or control
/// characters.
pub(super) fn cloudevents_source(config: &RelayConfig) -> Result<()> {
    match &config.cloudevents_source {
        Some(source)
            if source.is_empty() || source.chars().any(|c| c.is_whitespace() || c.is_control()) =>
        {
            invalid(
                "OUTBOX_CLOUDEVENTS_SOURCE",
                source.clone(),
                "expected a URI-reference, such as /billing or https://example.com/billing",
            )
        }
        _ => Ok(()),
    }
}
