//! Reading settings from `OUTBOX_*` variables, naming the variable and value in every
//! error.

use std::collections::BTreeMap;
use std::num::NonZeroU16;
use std::time::Duration;

use crate::completion::Completion;
use crate::error::{Error, Result};
use crate::wire::MessageFormat;

/// The outbox's settings of `OUTBOX_SHARDS` and `OUTBOX_COMPLETION`, when set (for
/// [`Outbox::from_env`](crate::Outbox::from_env)).
pub(crate) fn outbox_settings(
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<(Option<NonZeroU16>, Option<Completion>)> {
    let env = Env(lookup);
    let mut shards = None;
    env.parse(
        "OUTBOX_SHARDS",
        &mut shards,
        "expected an integer from 1 to 65535",
        |v| v.parse().ok().map(Some),
    )?;
    let mut completion = None;
    env.parse(
        "OUTBOX_COMPLETION",
        &mut completion,
        "expected mark, delete or archive",
        |v| v.parse().ok().map(Some),
    )?;
    Ok((shards, completion))
}

/// `topic=format` pairs separated by commas.
pub(super) fn formats_by_topic(value: &str) -> Option<BTreeMap<String, MessageFormat>> {
    value
        .split(',')
        .filter(|pair| !pair.trim().is_empty())
        .map(|pair| {
            let (topic, format) = pair.split_once('=')?;
            let topic = topic.trim();
            (!topic.is_empty()).then_some(())?;
            Some((topic.to_owned(), format.parse().ok()?))
        })
        .collect()
}

/// Reads and parses variables, naming the variable and value in every error.
pub(super) struct Env<F>(pub(super) F);

impl<F: Fn(&str) -> Option<String>> Env<F> {
    pub(super) fn get(&self, name: &str) -> Option<String> {
        (self.0)(name)
    }

    pub(super) fn parse<T>(
        &self,
        name: &'static str,
        target: &mut T,
        reason: &'static str,
        parse: impl Fn(&str) -> Option<T>,
    ) -> Result<()> {
        if let Some(value) = self.get(name) {
            *target = parse(value.trim()).ok_or(Error::Config {
                variable: name,
                value,
                reason,
            })?;
        }
        Ok(())
    }

    pub(super) fn string(&self, name: &'static str, target: &mut String) -> Result<()> {
        self.parse(name, target, "expected a non-empty value", |v| {
            (!v.is_empty()).then(|| v.to_owned())
        })
    }

    pub(super) fn duration(&self, name: &'static str, target: &mut Duration) -> Result<()> {
        self.parse(
            name,
            target,
            "expected a duration such as 500ms, 5s, 1m 30s or 24h",
            |v| humantime::parse_duration(v).ok(),
        )
    }

    pub(super) fn number<T: std::str::FromStr>(
        &self,
        name: &'static str,
        target: &mut T,
    ) -> Result<()> {
        self.parse(name, target, "expected a non-negative integer", |v| {
            v.parse().ok()
        })
    }

    pub(super) fn positive(&self, name: &'static str, target: &mut usize) -> Result<()> {
        self.parse(name, target, "expected a positive integer", |v| {
            v.parse().ok().filter(|n| *n > 0)
        })
    }

    pub(super) fn boolean(&self, name: &'static str, target: &mut bool) -> Result<()> {
        self.parse(name, target, "expected true or false", |v| {
            match v.to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" | "on" => Some(true),
                "false" | "0" | "no" | "off" => Some(false),
                _ => None,
            }
        })
    }
}
