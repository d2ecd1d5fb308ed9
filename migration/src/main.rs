//! `outbox-migration`: applies or reverts the outbox's migrations.
//!
//! ```text
//! DATABASE_URL=postgres://postgres@127.0.0.1:5432/app outbox-migration up
//! DATABASE_URL=sqlite://outbox.sqlite?mode=rwc outbox-migration status
//! ```

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use outbox_migration::Migrator;
use sea_orm_migration::MigratorTrait;
use sea_orm_migration::sea_orm::{Database, DbErr};

#[derive(Debug, Parser)]
#[command(version, about = "Apply or revert the outbox's database migrations")]
struct Cli {
    /// Database to migrate, e.g. postgres://user@host:5432/db or sqlite://file.sqlite?mode=rwc
    #[arg(long, short = 'u', env = "DATABASE_URL")]
    database_url: String,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Apply pending migrations.
    Up {
        /// Apply at most this many.
        #[arg(long, short = 'n')]
        num: Option<u32>,
    },
    /// Revert applied migrations (the last one unless told otherwise).
    Down {
        /// Revert this many.
        #[arg(long, short = 'n', default_value_t = 1)]
        num: u32,
    },
    /// Show which migrations are applied.
    Status,
    /// Revert all migrations, then apply them all again.
    Refresh,
    /// Revert all migrations.
    Reset,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<(), DbErr> {
    let db = Database::connect(&cli.database_url).await?;
    match cli.command {
        Command::Up { num } => Migrator::up(&db, num).await?,
        Command::Down { num } => Migrator::down(&db, Some(num)).await?,
        Command::Status => {
            for migration in Migrator::get_migration_with_status(&db).await? {
                println!(
                    "{:<10} {}",
                    migration.status().to_string(),
                    migration.name()
                );
            }
        }
        Command::Refresh => Migrator::refresh(&db).await?,
        Command::Reset => Migrator::reset(&db).await?,
    }
    Ok(())
}
