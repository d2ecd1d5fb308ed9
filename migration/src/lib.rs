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
//! the migrations with [`m20261127_000001_create_outbox_tables::Migration::new`].

pub mod m20261127_000001_create_outbox_tables;

use sea_orm_migration::prelude::*;

/// The outbox's migrations over the default table names, in order.
pub fn migrations() -> Vec<Box<dyn MigrationTrait>> {
    vec![Box::new(
        m20261127_000001_create_outbox_tables::Migration::default(),
    )]
}

/// A migrator with only the outbox's migrations, used by the CLI and the tests.
#[derive(Debug, Clone, Copy, Default)]
pub struct Migrator;

impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        migrations()
    }
}
