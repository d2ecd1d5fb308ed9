//! `outbox`: see and fix what is stuck in the outbox without writing SQL, and run the
//! relay as its own process.
//!
//! ```text
//! outbox status                                  # pending, dead letters, scheduled, per topic, relays
//! outbox list --dead                             # dead-lettered events
//! outbox list --scheduled                        # events waiting for their due time
//! outbox show 01a2...                            # one event, every column
//! outbox replay 01a2... --yes                    # put a dead letter back in line
//! outbox replay --all-dead                       # dry run: what would be replayed
//! outbox purge --published-older-than 30d --yes  # delete old published events
//! outbox relay --http-addr 0.0.0.0:9464           # run the relay until Ctrl-C / SIGTERM
//! outbox relay --databases tenants.txt            # one relay process for many databases
//! outbox status --databases tenants.txt           # a row per database, and totals
//! outbox list --databases tenants.txt --database tenant-a
//! outbox inbox list --consumer billing            # a consumer's dead letters
//! outbox inbox replay 42 --yes                    # hand one to its consumer again
//! ```
//!
//! Every command reads `DATABASE_URL` (or `--database-url`), or with `--databases FILE`
//! the database named by `--database`; `--json` prints JSON for
//! scripts. Commands that write do a dry run unless given `--yes`; the long ones
//! (`replay --all-dead`, `purge`) work in batches that each commit, show their
//! progress on a terminal, and stop after the batch in progress on Ctrl-C.

mod changes;
mod fleet_status;
mod inbox;
mod logs;
mod progress;
mod read;
mod relay;
mod table;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{ArgGroup, Args, Parser, Subcommand};
use outbox::{Outbox, Tables};
use sea_orm::{ConnectOptions, Database, DatabaseConnection};
use serde::Serialize;
use uuid::Uuid;

use crate::changes::{purge, replay_all, replay_one};
use crate::logs::LogFormat;
use crate::read::{list, list_scheduled, show, status};
use crate::relay::relay;
use outbox::Secrets;

#[derive(Debug, Parser)]
#[command(
    name = "outbox",
    version,
    about = "Inspect and repair the transactional outbox, or run its relay"
)]
struct Cli {
    /// The database, e.g. postgres://user@host:5432/app or sqlite://app.sqlite
    #[arg(
        long,
        short = 'u',
        env = "DATABASE_URL",
        global = true,
        hide_env_values = true
    )]
    database_url: Option<String>,

    /// A databases file (one `NAME URL [tables=BASE]` a line, `#` comments) instead of
    /// DATABASE_URL: `relay` serves every database of it (reading it again every
    /// OUTBOX_FLEET_REFRESH and on SIGHUP), `status` shows a row per database, the
    /// other commands work on the one named by --database.
    #[arg(long, env = "OUTBOX_DATABASES_FILE", global = true)]
    databases: Option<PathBuf>,

    /// With --databases: the database (by its name in the file) to work on.
    #[arg(long, global = true)]
    database: Option<String>,

    /// Base name of the outbox tables (see outbox::Tables::with_base).
    #[arg(long, default_value = "_outbox", global = true)]
    table: String,

    /// How many shards events are spread over: the writers' count (`relay` leases
    /// these; `status` reports pending events outside them).
    #[arg(long, env = "OUTBOX_SHARDS", default_value = "16", global = true)]
    shards: std::num::NonZeroU16,

    /// What becomes of published events: mark, delete or archive (see
    /// outbox::Completion). `show` and `purge` look in the archive too with archive;
    /// `relay` completes events this way.
    #[arg(long, env = "OUTBOX_COMPLETION", default_value = "mark", global = true)]
    completion: outbox::Completion,

    /// Print JSON instead of a table.
    #[arg(long, global = true)]
    json: bool,

    /// How long to try to reach the database.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration, global = true)]
    connect_timeout: Duration,

    /// Log lines on stderr as text or as JSON objects.
    #[arg(
        long,
        env = "OUTBOX_LOG_FORMAT",
        value_enum,
        default_value_t,
        global = true
    )]
    log_format: LogFormat,

    /// Which log lines to write: a level, or `target=level` pairs, e.g.
    /// `info,librdkafka=debug`.
    #[arg(long, env = "OUTBOX_LOG", default_value = "info", global = true)]
    log: String,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Pending and dead-lettered events, the oldest pending event's age, per topic, and
    /// the relays with the shards they hold.
    Status,
    /// List pending events (oldest first), dead letters with --dead, or events
    /// waiting for their due time with --scheduled (soonest first).
    List {
        /// List dead-lettered events instead of pending ones.
        #[arg(long, conflicts_with = "scheduled")]
        dead: bool,
        /// List events waiting for their due time instead of pending ones.
        #[arg(long)]
        scheduled: bool,
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: u64,
    },
    /// Show one event with every column.
    Show {
        /// The event id.
        id: Uuid,
    },
    /// Put dead-lettered events back in line (a dry run without --yes).
    Replay(Replay),
    /// Delete published events older than a duration, archived ones too with
    /// --completion archive (a dry run without --yes).
    Purge {
        /// e.g. 7d, 12h, 30m
        #[arg(long, value_parser = humantime::parse_duration)]
        published_older_than: Duration,
        #[command(flatten)]
        confirm: Confirm,
    },
    /// Run the relay until Ctrl-C or SIGTERM. Configured by the OUTBOX_* variables;
    /// any librdkafka property by OUTBOX_KAFKA_<PROPERTY> (e.g.
    /// OUTBOX_KAFKA_SECURITY_PROTOCOL=SASL_SSL) or --kafka-config.
    Relay(RelayOptions),
    /// The consumers' dead letters (the inbox side): list, show, replay, delete.
    Inbox {
        #[command(subcommand)]
        command: inbox::InboxCommand,
    },
}

#[derive(Debug, Args)]
struct RelayOptions {
    /// Kafka bootstrap servers (else `bootstrap.servers` from --kafka-config or
    /// OUTBOX_KAFKA_BOOTSTRAP_SERVERS).
    #[arg(long, env = "KAFKA_BROKERS")]
    brokers: Option<String>,
    /// A librdkafka properties file (`key=value` lines, as `kcat -F` reads); the
    /// OUTBOX_KAFKA_* variables and --brokers override what it sets.
    #[arg(long, env = "OUTBOX_KAFKA_CONFIG")]
    kafka_config: Option<PathBuf>,
    /// Serve /metrics (Prometheus), /healthz and /readyz on this address, e.g.
    /// 0.0.0.0:9464.
    #[arg(long, env = "OUTBOX_HTTP_ADDR")]
    http_addr: Option<SocketAddr>,
    /// How events are written as Kafka messages: native, cloudevents-binary,
    /// cloudevents-structured or debezium (else OUTBOX_MESSAGE_FORMAT, else native;
    /// OUTBOX_MESSAGE_FORMAT_BY_TOPIC names topics written otherwise).
    #[arg(long)]
    message_format: Option<outbox::MessageFormat>,
}

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("target").required(true).args(["id", "all_dead"])))]
struct Replay {
    /// The dead-lettered event to replay.
    id: Option<Uuid>,
    /// Replay every dead-lettered event.
    #[arg(long)]
    all_dead: bool,
    #[command(flatten)]
    confirm: Confirm,
}

#[derive(Debug, Args)]
struct Confirm {
    /// Do it; without this the command only says what it would do.
    #[arg(long)]
    yes: bool,
    /// Rows per statement (each batch commits on its own).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    batch_size: u64,
}

type Failure = Box<dyn std::error::Error>;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(error) = logs::init(cli.log_format, &cli.log) {
        eprintln!("error: {error}");
        return ExitCode::FAILURE;
    }
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn run(mut cli: Cli) -> Result<(), Failure> {
    let mut tables = Tables::with_base(&cli.table)?;
    if let Some(file) = cli.databases.clone() {
        let outbox = Outbox::new()
            .with_shards(cli.shards)
            .with_completion(cli.completion);
        match (&cli.command, &cli.database) {
            (Command::Relay(options), None) => return relay::fleet(file, outbox, options).await,
            (Command::Status, None) => {
                return fleet_status::status(&file, &outbox, cli.connect_timeout, cli.json).await;
            }
            (_, None) => {
                return Err(format!(
                    "name the database to work on with --database NAME (one of {})",
                    file.display()
                )
                .into());
            }
            (_, Some(name)) => {
                let entry = fleet_status::entry(&file, name).await?;
                cli.database_url = Some(entry.url().as_str().to_owned());
                tables = entry.tables().clone();
            }
        }
    }
    let db = connect(cli.database_url.as_deref(), cli.connect_timeout).await?;
    // On the database: a replay wakes the relays of every process at once.
    let outbox = Outbox::on(&db)
        .with_tables(tables)
        .with_shards(cli.shards)
        .with_completion(cli.completion);
    let json = cli.json;
    match cli.command {
        Command::Status => status(&db, &outbox, json).await,
        Command::List {
            scheduled: true,
            limit,
            ..
        } => list_scheduled(&outbox.scheduled(&db, limit).await?, json),
        Command::List { dead, limit, .. } => {
            let events = if dead {
                outbox.dead_letters(&db, limit).await?
            } else {
                outbox.pending(&db, limit).await?
            };
            list(&events, json)
        }
        Command::Show { id } => show(&outbox.event(&db, id).await?, json),
        Command::Replay(replay) => match replay.id {
            Some(id) => replay_one(&db, &outbox, id, replay.confirm.yes, json).await,
            None => replay_all(&db, &outbox, &replay.confirm, json).await,
        },
        Command::Purge {
            published_older_than,
            confirm,
        } => purge(&db, &outbox, published_older_than, &confirm, json).await,
        Command::Relay(options) => relay(db, outbox, options).await,
        Command::Inbox { command } => {
            let inbox = outbox::Inbox::with_tables(outbox.tables().clone());
            inbox::run(&db, &inbox, command, json).await
        }
    }
}

async fn connect(url: Option<&str>, timeout: Duration) -> Result<DatabaseConnection, Failure> {
    let url = url.ok_or("no database given: set DATABASE_URL or pass --database-url")?;
    let mut options = ConnectOptions::new(url);
    options
        .connect_timeout(timeout)
        .acquire_timeout(timeout)
        .sqlx_logging(false);
    Database::connect(options).await.map_err(|error| {
        let secrets = Secrets::of_url(url);
        secrets
            .scrub(&format!("cannot connect to the database at {url}: {error}"))
            .into()
    })
}

fn print_json(value: &impl Serialize) -> Result<(), Failure> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}
