//! Log lines on stderr, as text for people or JSON for log pipelines.

use std::str::FromStr;

use clap::ValueEnum;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// How log lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub(crate) enum LogFormat {
    /// One line of text per event, for people.
    #[default]
    Text,
    /// One JSON object per line (`timestamp`, `level`, `target`, `fields`), for log
    /// pipelines.
    Json,
}

/// Installs the process's log subscriber: `filter` says which levels of which
/// targets are written (`info`, `warn,outbox=debug`, `librdkafka=debug`).
pub(crate) fn init(format: LogFormat, filter: &str) -> Result<(), String> {
    let targets = Targets::from_str(filter)
        .map_err(|error| format!("invalid log filter {filter:?} (OUTBOX_LOG): {error}"))?;
    let registry = tracing_subscriber::registry().with(targets);
    let lines = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let installed = match format {
        LogFormat::Text => registry.with(lines).try_init(),
        LogFormat::Json => registry
            .with(lines.json().flatten_event(true).with_current_span(false))
            .try_init(),
    };
    installed.map_err(|error| format!("cannot install the log subscriber: {error}"))
}
