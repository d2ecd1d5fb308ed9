//! sea-orm-migration migrations for the outbox tables.
//!
//! Run them alone with the CLI (`DATABASE_URL=... cargo run -p outbox-migration -- up`),
//! or add them to the `Migrator` of your own migration crate:
//!
//! ```
//! use sea_orm_migration::prelude::*;
//!
//! pub struct Migrator;
//!
//! impl MigratorTrait for Migrator {
//!     fn migrations() -> Vec<Box<dyn MigrationTrait>> {
//!         let mut migrations: Vec<Box<dyn MigrationTrait>> = vec![
//!             // Box::new(m20240101_000001_create_users::Migration),
//!         ];
//!         migrations.extend(outbox_migration::migrations());
//!         migrations
//!     }
//! }
//! ```
//!
//! PostgreSQL, SQLite, MySQL 8 and MariaDB 10.6+ are supported. For tables with other names, construct
//! the migrations with [`migrations_for`].

pub mod m20261127_000001_create_outbox_tables;
pub mod m20261127_000002_park_waiting_events;
pub mod m20261128_000003_archive_published_events;
pub mod m20261128_000004_mysql_key_locks;
pub mod m20261128_000005_create_inbox;
pub mod m20261202_000006_inbox_dead_letters;
pub mod m20261205_000007_mysql_binary_keys;
pub mod m20261205_000008_relay_probation;
pub mod m20261205_000009_inbox_dead_letter_ids;
pub mod m20261205_000010_tombstones;
pub mod m20261206_000011_fleet_members;
pub mod m20261206_000012_scheduled_events;

use sea_orm_migration::prelude::*;

/// A migration over a set of outbox tables: `Migration`, its `new(Tables)`, and
/// `Default` (the default table names) and `MigrationName` (`$name`, with the base
/// table's name as a suffix unless the tables are the default ones, so several
/// outboxes can live in one `Migrator`).
macro_rules! migration {
    ($name:literal) => {
        /// The migration; [`Migration::default`] uses the default table names.
        #[derive(Debug, Clone)]
        pub struct Migration {
            tables: outbox::Tables,
            name: String,
        }

        impl Migration {
            /// The migration over other table names. Its name gets the base table's
            /// name as a suffix, so several outboxes can live in one `Migrator`.
            pub fn new(tables: outbox::Tables) -> Self {
                let name = if tables == outbox::Tables::default() {
                    $name.to_owned()
                } else {
                    format!("{}_{}", $name, tables.outbox())
                };
                Migration { tables, name }
            }
        }

        impl Default for Migration {
            fn default() -> Self {
                Migration::new(outbox::Tables::default())
            }
        }

        impl MigrationName for Migration {
            fn name(&self) -> &str {
                &self.name
            }
        }
    };
}
pub(crate) use migration;

/// The outbox's migrations over the default table names, in order.
pub fn migrations() -> Vec<Box<dyn MigrationTrait>> {
    migrations_for(&outbox::Tables::default())
}

/// The outbox's migrations over `tables`, in order. Their names carry the base table's
/// name (unless it is the default), so several outboxes can live in one `Migrator`.
pub fn migrations_for(tables: &outbox::Tables) -> Vec<Box<dyn MigrationTrait>> {
    vec![
        Box::new(m20261127_000001_create_outbox_tables::Migration::new(
            tables.clone(),
        )),
        Box::new(m20261127_000002_park_waiting_events::Migration::new(
            tables.clone(),
        )),
        Box::new(m20261128_000003_archive_published_events::Migration::new(
            tables.clone(),
        )),
        Box::new(m20261128_000004_mysql_key_locks::Migration::new(
            tables.clone(),
        )),
        Box::new(m20261128_000005_create_inbox::Migration::new(
            tables.clone(),
        )),
        Box::new(m20261202_000006_inbox_dead_letters::Migration::new(
            tables.clone(),
        )),
        Box::new(m20261205_000007_mysql_binary_keys::Migration::new(
            tables.clone(),
        )),
        Box::new(m20261205_000008_relay_probation::Migration::new(
            tables.clone(),
        )),
        Box::new(m20261205_000009_inbox_dead_letter_ids::Migration::new(
            tables.clone(),
        )),
        Box::new(m20261205_000010_tombstones::Migration::new(tables.clone())),
        Box::new(m20261206_000011_fleet_members::Migration::new(
            tables.clone(),
        )),
        Box::new(m20261206_000012_scheduled_events::Migration::new(
            tables.clone(),
        )),
    ]
}

/// A migrator with only the outbox's migrations, used by the CLI and the tests.
#[derive(Debug, Clone, Copy, Default)]
pub struct Migrator;

impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        migrations()
    }
}
