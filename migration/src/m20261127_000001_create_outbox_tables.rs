//! Creates `_outbox`, `_outbox_offset`, `_outbox_lease` and `_outbox_relay`.
//!
//! Indexes on `_outbox`, against the Go library's:
//! - `idx_<t>_claim (shard, seq) WHERE NOT published AND dead_lettered_at IS NULL`
//!   replaces the Go library's `(published, created_at)`: the relay reads one shard's pending
//!   events in `seq` order, and a partial index holds only pending rows, so retained
//!   history does not slow the claim.
//! - `idx_<t>_retry (shard, partition_key) WHERE next_attempt_at IS NOT NULL AND NOT
//!   published AND dead_lettered_at IS NULL`: the keys waiting for a retry, which the
//!   claim skips; it holds only failed pending events, so it stays tiny.
//! - `idx_<t>_published_at (published_at) WHERE published`: cleanup finds expired rows
//!   without scanning pending ones.
//! - `idx_<t>_dead (dead_lettered_at) WHERE dead_lettered_at IS NOT NULL`: lists dead
//!   letters.
//! - the Go library's `destination_topic`, `aggregate_id` and partial `trace_id` indexes, and
//!   a unique index on the event id. (Not a partial `destination_topic` index on
//!   pending rows: with stale statistics the planner would prefer it to the claim
//!   index and scan every pending row per claim.)
//!
//! MySQL has no partial index; there the state columns lead instead, so the claim's
//! equalities on them skip history as the predicates do: `claim (shard, published,
//! dead_lettered_at, seq)`, `retry (shard, next_attempt_at)` (NULL for every event
//! never failed), `published_at (published_at)` and `dead (dead_lettered_at)` (NULL
//! while pending), and plain `trace_id`. Times are `DATETIME(6)` in UTC there:
//! MySQL's `TIMESTAMP` ends in 2038 and converts through the session's time zone.
//!
//! Everything this migration creates is written here (column names, the partial
//! indexes' predicates as SQL, the index names), never taken from the library's
//! entities or [`outbox::schema`]: a database that ran it keeps the schema it made,
//! whatever the library becomes. Only the table names come from the caller's
//! [`Tables`].

use outbox::{Identifier, Tables};
use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::DbBackend;

crate::migration!("m20261127_000001_create_outbox_tables");

// The trait's signature (async-trait) elides SchemaManager's lifetime; an explicit one would not match.
#[allow(elided_lifetimes_in_paths)]
#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let t = &self.tables;
        let backend = manager.get_database_backend();
        manager
            .create_table(outbox_table(t.outbox(), backend))
            .await?;
        let indexes = match backend {
            DbBackend::MySql => mysql_indexes(t),
            _ => outbox_indexes(t),
        };
        for index in indexes {
            manager.create_index(index).await?;
        }
        manager
            .create_table(offset_table(t.offset(), backend))
            .await?;
        manager
            .create_table(lease_table(t.lease(), backend))
            .await?;
        manager
            .create_table(relay_table(t.relay(), backend))
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let t = &self.tables;
        for table in [t.relay(), t.lease(), t.offset(), t.outbox()] {
            manager
                .drop_table(
                    Table::drop()
                        .table(table.as_str().to_owned())
                        .if_exists()
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }
}

pub(crate) fn varchar(name: impl IntoIden) -> ColumnDef {
    ColumnDef::new(name).string_len(255).to_owned()
}

/// A point in time: `TIMESTAMP WITH TIME ZONE` (PostgreSQL; text on SQLite), or
/// `DATETIME(6)` in UTC on MySQL.
pub(crate) fn timestamp(name: impl IntoIden, backend: DbBackend) -> ColumnDef {
    let mut column = ColumnDef::new(name);
    match backend {
        DbBackend::MySql => column.custom("DATETIME(6)"),
        _ => column.timestamp_with_time_zone(),
    };
    column
}

/// A point in time, defaulting to the current time (in UTC on MySQL).
fn timestamp_now(name: &'static str, backend: DbBackend) -> ColumnDef {
    let now = match backend {
        DbBackend::MySql => Expr::cust("(UTC_TIMESTAMP(6))"),
        _ => Expr::current_timestamp(),
    };
    timestamp(name, backend).not_null().default(now).to_owned()
}

fn outbox_table(table: &Identifier, backend: DbBackend) -> TableCreateStatement {
    let seq = ColumnDef::new("seq")
        .big_integer()
        .not_null()
        .auto_increment()
        .primary_key()
        .to_owned();
    event_table(
        table,
        seq,
        ColumnDef::new("id")
            .uuid()
            .not_null()
            .unique_key()
            .to_owned(),
        backend,
    )
}

/// A table of events with this migration's columns, `seq` and `id` as given: the
/// outbox, and (with `parked` added by the later migration) the archive.
pub(crate) fn event_table(
    table: &Identifier,
    seq: ColumnDef,
    id: ColumnDef,
    backend: DbBackend,
) -> TableCreateStatement {
    let timestamp = |name| timestamp(name, backend);
    Table::create()
        .table(table.as_str().to_owned())
        .col(seq)
        .col(id)
        .col(varchar("event_type").not_null())
        .col(varchar("aggregate_id").not_null())
        .col(ColumnDef::new("event_data").json_binary().not_null())
        .col(
            ColumnDef::new("event_version")
                .string_len(50)
                .not_null()
                .default("v1"),
        )
        .col(varchar("destination_topic").not_null())
        .col(varchar("partition_key").null())
        .col(ColumnDef::new("headers").json_binary().null())
        .col(ColumnDef::new("shard").integer().not_null().default(0))
        .col(
            ColumnDef::new("published")
                .boolean()
                .not_null()
                .default(false),
        )
        .col(timestamp("published_at").null())
        .col(ColumnDef::new("attempts").integer().not_null().default(0))
        .col(timestamp("last_attempt_at").null())
        .col(timestamp("next_attempt_at").null())
        .col(ColumnDef::new("error_message").text().null())
        .col(timestamp("dead_lettered_at").null())
        .col(varchar("trace_id").null())
        .col(varchar("user_id").null())
        .col(timestamp_now("created_at", backend))
        .col(timestamp_now("updated_at", backend))
        .to_owned()
}

/// The name `idx_<table>_<suffix>` of an index of `table`, as the migrations name
/// their indexes (the same as [`Tables::index`] when they were written; kept here so
/// that a later migration's `down` finds the index an earlier one created).
pub(crate) fn index_name(table: &Identifier, suffix: &str) -> String {
    format!("idx_{table}_{suffix}")
}

/// The index `idx_<outbox>_<suffix>` of the outbox table over `columns`.
pub(crate) fn outbox_index(
    tables: &Tables,
    suffix: &str,
    columns: &[&'static str],
) -> IndexCreateStatement {
    let mut index = Index::create()
        .name(index_name(tables.outbox(), suffix))
        .table(tables.outbox().as_str().to_owned())
        .to_owned();
    for &column in columns {
        index.col(column);
    }
    index
}

/// Pending events (not published, not dead-lettered): the claim index's predicate.
/// As `outbox::schema::pending()` rendered it for PostgreSQL and SQLite when this
/// migration was written.
const PENDING: &str = r#"(NOT "published") AND "dead_lettered_at" IS NULL"#;

/// Pending events that failed at least once: the retry index's predicate
/// (`outbox::schema::retrying()` then).
const RETRYING: &str =
    r#""next_attempt_at" IS NOT NULL AND ((NOT "published") AND "dead_lettered_at" IS NULL)"#;

/// Published events: the `published_at` index's predicate
/// (`outbox::schema::published()` then).
const PUBLISHED: &str = r#""published""#;

/// Dead-lettered events: the `dead` index's predicate
/// (`outbox::schema::dead_lettered()` then).
const DEAD_LETTERED: &str = r#""dead_lettered_at" IS NOT NULL"#;

/// Events with a trace: the `trace_id` index's predicate.
const TRACED: &str = r#""trace_id" IS NOT NULL"#;

/// The indexes, with the predicates above (PostgreSQL and SQLite, whose identifiers
/// both take double quotes).
fn outbox_indexes(tables: &Tables) -> Vec<IndexCreateStatement> {
    let index = |suffix: &str, columns: &[&'static str], predicate: Option<&'static str>| {
        let mut index = outbox_index(tables, suffix, columns);
        if let Some(predicate) = predicate {
            index.and_where(Expr::cust(predicate));
        }
        index
    };
    vec![
        index("claim", &["shard", "seq"], Some(PENDING)),
        index("retry", &["shard", "partition_key"], Some(RETRYING)),
        index("published_at", &["published_at"], Some(PUBLISHED)),
        index("dead", &["dead_lettered_at"], Some(DEAD_LETTERED)),
        index("destination_topic", &["destination_topic"], None),
        index("aggregate_id", &["aggregate_id"], None),
        index("trace_id", &["trace_id"], Some(TRACED)),
    ]
}

/// The indexes on MySQL, without partial ones: the columns of each predicate lead.
fn mysql_indexes(tables: &Tables) -> Vec<IndexCreateStatement> {
    let index = |suffix: &str, columns: &[&'static str]| outbox_index(tables, suffix, columns);
    vec![
        index("claim", &["shard", "published", "dead_lettered_at", "seq"]),
        index("retry", &["shard", "next_attempt_at"]),
        index("published_at", &["published_at"]),
        index("dead", &["dead_lettered_at"]),
        index("destination_topic", &["destination_topic"]),
        index("aggregate_id", &["aggregate_id"]),
        index("trace_id", &["trace_id"]),
    ]
}

fn offset_table(table: &Identifier, backend: DbBackend) -> TableCreateStatement {
    Table::create()
        .table(table.as_str().to_owned())
        .col(varchar("service_name").not_null().primary_key())
        .col(ColumnDef::new("last_event_id").uuid().not_null())
        .col(timestamp("last_processed", backend).not_null())
        .col(timestamp_now("created_at", backend))
        .col(timestamp_now("updated_at", backend))
        .to_owned()
}

fn lease_table(table: &Identifier, backend: DbBackend) -> TableCreateStatement {
    Table::create()
        .table(table.as_str().to_owned())
        .col(varchar("service_name").not_null())
        .col(ColumnDef::new("shard").integer().not_null())
        .col(varchar("owner").not_null())
        .col(ColumnDef::new("token").big_integer().not_null().default(0))
        .col(timestamp("expires_at", backend).not_null())
        .col(timestamp_now("updated_at", backend))
        .primary_key(Index::create().col("service_name").col("shard"))
        .to_owned()
}

fn relay_table(table: &Identifier, backend: DbBackend) -> TableCreateStatement {
    Table::create()
        .table(table.as_str().to_owned())
        .col(varchar("service_name").not_null())
        .col(varchar("relay_id").not_null())
        .col(timestamp("started_at", backend).not_null())
        .col(timestamp("heartbeat_at", backend).not_null())
        .primary_key(Index::create().col("service_name").col("relay_id"))
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The index names are still the library's: [`Tables::index`] changing would
    /// leave the library looking for indexes these migrations did not create.
    #[test]
    fn index_names_are_the_librarys() {
        for tables in [
            Tables::default(),
            Tables::with_base("billing_outbox").expect("valid base name"),
        ] {
            for table in [tables.outbox(), tables.archive(), tables.inbox()] {
                assert_eq!(index_name(table, "claim"), tables.index(table, "claim"));
            }
        }
    }
}
