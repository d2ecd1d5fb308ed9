//! `outbox-bench`: measures the outbox against PostgreSQL and a Kafka-protocol broker,
//! prints a table, and writes the same figures as JSON.
//!
//! ```text
//! cargo run --release -p outbox-bench -- all            # the full run (several minutes)
//! cargo run --release -p outbox-bench -- all --quick    # seconds; CI runs this
//! cargo run --release -p outbox-bench -- relay --events 20000   # relay throughput only
//! cargo run --release -p outbox-bench -- relay --completion delete   # in one mode
//! MYSQL_URL=mysql://root@127.0.0.1:3306/test \
//!   cargo run --release -p outbox-bench -- consumer   # consumer throughput, the proof's cost
//! DATABASE_URL=mysql://root@127.0.0.1:3306/test \
//!   cargo run --release -p outbox-bench -- relay      # the relay scenario on MySQL/MariaDB
//! ```
//!
//! Every comparison is a ratio of figures measured in the same run: the machines are
//! shared and noisy, so absolute numbers travel badly.

mod scenarios;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(about = "Benchmarks of the outbox against PostgreSQL and a Kafka-protocol broker")]
struct Cli {
    /// PostgreSQL to measure against; every scenario works in a schema of its own. The
    /// relay scenario also runs on MySQL or MariaDB (`mysql://`), in databases of its
    /// own.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/test"
    )]
    database_url: String,
    /// Kafka bootstrap servers.
    #[arg(long, env = "KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
    brokers: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Every scenario: store overhead, relay throughput against its limits, latency,
    /// scale, peak memory.
    All {
        /// A small run that takes seconds, to keep the benchmark from rotting.
        #[arg(long)]
        quick: bool,
        /// Where to write the figures as JSON.
        #[arg(long, default_value = "target/bench/results.json")]
        json: PathBuf,
    },
    /// Relay throughput only: one relay on preloaded events, beside its two limits,
    /// in each completion mode, with PostgreSQL's share of the CPU in each (Linux).
    Relay {
        /// Events of 1 KiB to preload.
        #[arg(long, default_value_t = 20_000)]
        events: usize,
        /// The completion modes to measure (mark, delete, archive; repeat or separate
        /// with commas); every mode when not given. The first one also runs without
        /// wake-ups and with 5 requests in flight.
        #[arg(long, value_delimiter = ',')]
        completion: Vec<outbox::Completion>,
        /// Shards the relay processes at once (OUTBOX_CONCURRENCY; the default's
        /// when not given).
        #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
        concurrency: Option<u16>,
    },
    /// Latency only: the broker's floor, commit-to-receive at 1,000 events/s (relay
    /// in-process, relays in their own processes), one event every 1-2 s after an idle
    /// spell, and an idle relay's queries a second.
    Latency {
        /// How long the writers write.
        #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
        duration: std::time::Duration,
    },
    /// Relay throughput per message format (native, CloudEvents binary and
    /// structured, Debezium), each against native in the same run.
    Formats {
        /// Events of 1 KiB to preload for each run.
        #[arg(long, default_value_t = 50_000)]
        events: usize,
    },
    /// Relay throughput over 8 databases (one fleet process) against one database of
    /// the same events; the latency of one database at a low rate beside 49 idle
    /// ones against one relay on one database (PostgreSQL).
    Fleet {
        /// Events of 1 KiB to preload for each run (spread over the 8 databases).
        #[arg(long, default_value_t = 80_000)]
        events: usize,
    },
    /// Relay throughput with events waiting for a due time next week, against
    /// none.
    Delayed {
        /// Events of 1 KiB to preload and drain in each run.
        #[arg(long, default_value_t = 50_000)]
        events: usize,
        /// Events due in a week, stored first.
        #[arg(long, default_value_t = 1_000_000)]
        scheduled: usize,
    },
    /// Store overhead only: a business transaction with and without storing events.
    Store,
    /// The claim behind a blocked key only: flowing keys' throughput with `blocked`
    /// events piled up behind one key's failed event, against nothing blocked.
    Blocked {
        /// Events behind the blocked key.
        #[arg(long, default_value_t = 100_000)]
        blocked: usize,
    },
    /// Consumer throughput, and its transaction proof's cost: hand-written loops
    /// without a check, with `SELECT 1`, with the proof, then the `Consumer`; on
    /// `DATABASE_URL` and, when set, `MYSQL_URL`.
    Consumer {
        /// Messages to preload.
        #[arg(long, default_value_t = 10_000)]
        messages: usize,
        /// MySQL or MariaDB to measure against too.
        #[arg(long, env = "MYSQL_URL")]
        mysql_url: Option<String>,
    },
    /// Internal: a relay process for the cross-process latency scenario.
    #[command(hide = true)]
    RelayProcess {
        /// The schema to relay from.
        #[arg(long)]
        schema: String,
    },
}

#[tokio::main]
async fn main() -> Result<(), scenarios::Failure> {
    let cli = Cli::parse();
    let relay_only = matches!(
        cli.command,
        Command::Relay { .. } | Command::Consumer { .. }
    );
    if cli.database_url.starts_with("mysql:") && !relay_only {
        return Err("on MySQL only the relay scenario runs (`outbox-bench relay`); the others measure PostgreSQL's wake-ups, schemas and statistics".into());
    }
    match cli.command {
        Command::All { quick, json } => {
            let size = if quick {
                scenarios::Size::quick()
            } else {
                scenarios::Size::full()
            };
            let report = scenarios::run_all(&cli.database_url, &cli.brokers, &size).await?;
            println!("{}", report.table());
            if let Some(dir) = json.parent() {
                std::fs::create_dir_all(dir)?;
            }
            std::fs::write(&json, serde_json::to_string_pretty(&report.json())?)?;
            println!("figures written to {}", json.display());
            Ok(())
        }
        Command::Relay {
            events,
            completion,
            concurrency,
        } => {
            let size =
                scenarios::Size::relay_only(events, completion, concurrency.map(usize::from));
            let report = scenarios::run_relay(&cli.database_url, &cli.brokers, &size).await?;
            println!("{}", report.table());
            Ok(())
        }
        Command::Latency { duration } => {
            let size = scenarios::Size::latency_only(duration);
            let report = scenarios::run_latency(&cli.database_url, &cli.brokers, &size).await?;
            println!("{}", report.table());
            Ok(())
        }
        Command::Formats { events } => {
            let size = scenarios::Size::formats_only(events);
            let report = scenarios::run_formats(&cli.database_url, &cli.brokers, &size).await?;
            println!("{}", report.table());
            Ok(())
        }
        Command::Fleet { events } => {
            let size = scenarios::Size::fleet_only(events);
            let report = scenarios::run_fleet(&cli.database_url, &cli.brokers, &size).await?;
            println!("{}", report.table());
            Ok(())
        }
        Command::Delayed { events, scheduled } => {
            let size = scenarios::Size::delayed_only(events, scheduled);
            let report = scenarios::run_delayed(&cli.database_url, &cli.brokers, &size).await?;
            println!("{}", report.table());
            Ok(())
        }
        Command::Store => {
            let size = scenarios::Size::full();
            let report = scenarios::run_store(&cli.database_url, &cli.brokers, &size).await?;
            println!("{}", report.table());
            Ok(())
        }
        Command::Blocked { blocked } => {
            let size = scenarios::Size::blocked_only(blocked);
            let report = scenarios::run_blocked(&cli.database_url, &cli.brokers, &size).await?;
            println!("{}", report.table());
            Ok(())
        }
        Command::Consumer {
            messages,
            mysql_url,
        } => {
            let urls: Vec<String> = std::iter::once(cli.database_url.clone())
                .chain(mysql_url)
                .collect();
            scenarios::run_consumer(&urls, &cli.brokers, messages).await
        }
        Command::RelayProcess { schema } => {
            scenarios::relay_process(&cli.database_url, &cli.brokers, &schema).await
        }
    }
}
