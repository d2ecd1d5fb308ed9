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
//!
//! On MySQL, without partial indexes: `claim (shard, published, parked,
//! dead_lettered_at, seq, next_attempt_at)` and `parked (parked, shard,
//! partition_key)`.
//!
//! The columns and the predicates are written here, not taken from the library's
//! entities or `outbox::schema`, so the migration stays as it was written when the
//! library changes.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::DbBackend;

use crate::m20261127_000001_create_outbox_tables::{index_name, outbox_index};

crate::migration!("m20261127_000002_park_waiting_events");

/// Claimable events (pending and not parked): this migration's claim index's
/// predicate, as `outbox::schema::claimable()` rendered it for PostgreSQL and SQLite
/// when the migration was written.
const CLAIMABLE: &str = r#"(NOT "published") AND "dead_lettered_at" IS NULL AND (NOT "parked")"#;

/// Pending events: the predicate of the first migration's claim index, which `down`
/// restores.
const PENDING: &str = r#"(NOT "published") AND "dead_lettered_at" IS NULL"#;

impl Migration {
    /// The claim index of this migration: `(shard, seq)` over claimable events,
    /// with `next_attempt_at` included (PostgreSQL) or as a third key column (SQLite,
    /// which has no INCLUDE).
    fn claim_index(&self, backend: DbBackend) -> IndexCreateStatement {
        let t = &self.tables;
        if backend == DbBackend::MySql {
            return outbox_index(
                t,
                "claim",
                &[
                    "shard",
                    "published",
                    "parked",
                    "dead_lettered_at",
                    "seq",
                    "next_attempt_at",
                ],
            );
        }
        let mut index = Index::create()
            .name(index_name(t.outbox(), "claim"))
            .table(t.outbox().as_str().to_owned())
            .col("shard")
            .col("seq")
            .and_where(Expr::cust(CLAIMABLE))
            .to_owned();
        match backend {
            DbBackend::Postgres => index.include("next_attempt_at"),
            _ => index.col("next_attempt_at"),
        };
        index
    }

    /// The first migration's claim index, restored by `down`.
    fn previous_claim_index(&self, backend: DbBackend) -> IndexCreateStatement {
        let t = &self.tables;
        if backend == DbBackend::MySql {
            return outbox_index(
                t,
                "claim",
                &["shard", "published", "dead_lettered_at", "seq"],
            );
        }
        Index::create()
            .name(index_name(t.outbox(), "claim"))
            .table(t.outbox().as_str().to_owned())
            .col("shard")
            .col("seq")
            .and_where(Expr::cust(PENDING))
            .to_owned()
    }

    /// Finds a key's parked events. As SQL: sea-query cannot write an expression
    /// column (the event key) in an SQLite index.
    fn parked_index(&self) -> String {
        let t = &self.tables;
        format!(
            "CREATE INDEX \"{}\" ON {} (\"shard\", (COALESCE(\"partition_key\", \"aggregate_id\"))) WHERE \"parked\"",
            index_name(t.outbox(), "parked"),
            t.outbox().quoted(),
        )
    }

    /// Drops an index of the outbox (MySQL names the table; the others ignore it).
    fn drop_index(&self, suffix: &str) -> IndexDropStatement {
        let t = &self.tables;
        Index::drop()
            .name(index_name(t.outbox(), suffix))
            .table(t.outbox().as_str().to_owned())
            .to_owned()
    }

    fn outbox(&self) -> TableAlterStatement {
        Table::alter()
            .table(self.tables.outbox().as_str().to_owned())
            .to_owned()
    }
}

// The trait's signature (async-trait) elides SchemaManager's lifetime; an explicit one would not match.
#[allow(elided_lifetimes_in_paths)]
#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let backend = manager.get_database_backend();
        let parked = ColumnDef::new("parked")
            .boolean()
            .not_null()
            .default(false)
            .to_owned();
        manager
            .alter_table(self.outbox().add_column(parked).to_owned())
            .await?;
        manager.drop_index(self.drop_index("claim")).await?;
        manager.create_index(self.claim_index(backend)).await?;
        if backend == DbBackend::MySql {
            // No partial or expression index there: over `partition_key`, which every
            // event the outbox stores has.
            let columns = ["parked", "shard", "partition_key"];
            manager
                .create_index(outbox_index(&self.tables, "parked", &columns))
                .await?;
        } else {
            manager
                .get_connection()
                .execute_unprepared(&self.parked_index())
                .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let backend = manager.get_database_backend();
        manager.drop_index(self.drop_index("parked")).await?;
        manager.drop_index(self.drop_index("claim")).await?;
        manager
            .create_index(self.previous_claim_index(backend))
            .await?;
        manager
            .alter_table(self.outbox().drop_column("parked").to_owned())
            .await?;
        Ok(())
    }
}
