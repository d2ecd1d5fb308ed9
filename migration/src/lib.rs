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
//! Both PostgreSQL and SQLite are supported. For tables with other names, construct
//! the migrations with [`migrations_for`].

pub mod m20261127_000001_create_outbox_tables;
pub mod m20261127_000002_park_waiting_events;
pub mod m20261128_000003_archive_published_events;

use sea_orm_migration::prelude::*;

/// A migration's name: `name`, with the base table's name as a suffix unless `tables`
/// are the default ones, so several outboxes can live in one `Migrator`.
fn name_for(name: &str, tables: &outbox::Tables) -> String {
    if *tables == outbox::Tables::default() {
        name.to_owned()
    } else {
        format!("{name}_{}", tables.outbox())
    }
}

/// `Default` (the default table names) and `MigrationName` for a migration struct
/// with `tables` and `name` fields and a `new(Tables)`.
macro_rules! over_tables {
    ($migration:ident) => {
        impl Default for $migration {
            fn default() -> Self {
                $migration::new(outbox::Tables::default())
            }
        }

        impl MigrationName for $migration {
            fn name(&self) -> &str {
                &self.name
            }
        }
    };
}
pub(crate) use over_tables;

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
