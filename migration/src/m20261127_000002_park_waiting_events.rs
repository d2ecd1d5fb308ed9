//! Adds `parked` to `_outbox`: the events waiting behind an earlier event of their key
//! that failed, kept out of the claim index.
//!
//! A key whose first pending event waits for a retry (or an outage) may pile up many
//! later events. Left in the claim index, every claim of their shard would read past
//! them; parked, they leave it, and the claim's cost no longer depends on how many
//! there are. The relay parks them when an event fails, and those stored later when
//! a claim first meets them; it unparks them when the failed event is published or
//! dead-lettered.
//!
//! - `idx_<t>_claim (shard, seq) INCLUDE (next_attempt_at) WHERE NOT published AND
//!   dead_lettered_at IS NULL AND NOT parked` replaces the claim index of the first
//!   migration (on SQLite, `next_attempt_at` is a third key column): the claim finds
//!   the next ready events from the index alone.
//! - `idx_<t>_parked (shard, COALESCE(partition_key, aggregate_id)) WHERE parked`
//!   finds a key's parked events to unpark them.

use outbox::Tables;
use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::DbBackend;

/// The migration; [`Migration::default`] uses the default table names.
#[derive(Debug, Clone)]
pub struct Migration {
    tables: Tables,
    name: String,
}

const NAME: &str = "m20261127_000002_park_waiting_events";

impl Migration {
    /// The migration over other table names (see the first migration's `new`).
    pub fn new(tables: Tables) -> Self {
        let name = if tables == Tables::default() {
            NAME.to_owned()
        } else {
            format!("{NAME}_{}", tables.outbox())
        };
        Migration { tables, name }
    }

    fn statements(&self, up: bool, backend: DbBackend) -> Vec<String> {
        let t = &self.tables;
        let table = t.outbox();
        let claim = t.index(table, "claim");
        let parked = t.index(table, "parked");
        let q = table.quoted();
        let pending = "NOT \"published\" AND \"dead_lettered_at\" IS NULL";
        if up {
            vec![
                format!("ALTER TABLE {q} ADD COLUMN \"parked\" BOOLEAN NOT NULL DEFAULT FALSE"),
                format!("DROP INDEX \"{claim}\""),
                // The claim reads `next_attempt_at` from the index too (PostgreSQL:
                // INCLUDE; SQLite has none, a third key column serves).
                match backend {
                    DbBackend::Postgres => format!(
                        "CREATE INDEX \"{claim}\" ON {q} (\"shard\", \"seq\") INCLUDE (\"next_attempt_at\") \
                         WHERE {pending} AND NOT \"parked\""
                    ),
                    _ => format!(
                        "CREATE INDEX \"{claim}\" ON {q} (\"shard\", \"seq\", \"next_attempt_at\") \
                         WHERE {pending} AND NOT \"parked\""
                    ),
                },
                format!(
                    "CREATE INDEX \"{parked}\" ON {q} (\"shard\", (COALESCE(\"partition_key\", \"aggregate_id\"))) WHERE \"parked\""
                ),
            ]
        } else {
            vec![
                format!("DROP INDEX \"{parked}\""),
                format!("DROP INDEX \"{claim}\""),
                format!("CREATE INDEX \"{claim}\" ON {q} (\"shard\", \"seq\") WHERE {pending}"),
                format!("ALTER TABLE {q} DROP COLUMN \"parked\""),
            ]
        }
    }
}

impl Default for Migration {
    fn default() -> Self {
        Migration::new(Tables::default())
    }
}

impl MigrationName for Migration {
    fn name(&self) -> &str {
        &self.name
    }
}

// The trait's signature (async-trait) elides SchemaManager's lifetime; an explicit one would not match.
#[allow(elided_lifetimes_in_paths)]
#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let backend = manager.get_database_backend();
        for sql in self.statements(true, backend) {
            manager.get_connection().execute_unprepared(&sql).await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let backend = manager.get_database_backend();
        for sql in self.statements(false, backend) {
            manager.get_connection().execute_unprepared(&sql).await?;
        }
        Ok(())
    }
}
