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
//!   a unique index on the event id. (A partial `destination_topic` index on pending
//!   rows was tried: with stale statistics the planner preferred it to the claim index
//!   and scanned every pending row per claim.)
//!
//! MySQL has no partial index; there the state columns lead instead, so the claim's
//! equalities on them skip history as the predicates do: `claim (shard, published,
//! dead_lettered_at, seq)`, `retry (shard, next_attempt_at)` (NULL for every event
//! never failed), `published_at (published_at)` and `dead (dead_lettered_at)` (NULL
//! while pending), and plain `trace_id`. Times are `DATETIME(6)` in UTC there:
//! MySQL's `TIMESTAMP` ends in 2038 and converts through the session's time zone.

use outbox::entity::outbox::Column;
use outbox::{Identifier, Tables, schema};
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

/// The index `idx_<outbox>_<suffix>` of the outbox table over `columns`.
pub(crate) fn outbox_index(
    tables: &Tables,
    suffix: &str,
    columns: &[Column],
) -> IndexCreateStatement {
    let mut index = Index::create()
        .name(tables.index(tables.outbox(), suffix))
        .table(tables.outbox().as_str().to_owned())
        .to_owned();
    for &column in columns {
        index.col(column);
    }
    index
}

/// The indexes; the partial ones take their predicates from [`outbox::schema`], which
/// the relay's statements filter with.
fn outbox_indexes(tables: &Tables) -> Vec<IndexCreateStatement> {
    let index = |suffix: &str, columns: &[Column]| outbox_index(tables, suffix, columns);
    vec![
        index("claim", &[Column::Shard, Column::Seq])
            .cond_where(schema::pending())
            .to_owned(),
        index("retry", &[Column::Shard, Column::PartitionKey])
            .cond_where(schema::retrying())
            .to_owned(),
        index("published_at", &[Column::PublishedAt])
            .cond_where(schema::published())
            .to_owned(),
        index("dead", &[Column::DeadLetteredAt])
            .cond_where(schema::dead_lettered())
            .to_owned(),
        index("destination_topic", &[Column::DestinationTopic]),
        index("aggregate_id", &[Column::AggregateId]),
        index("trace_id", &[Column::TraceId])
            .and_where(Expr::col(Column::TraceId).is_not_null())
            .to_owned(),
    ]
}

/// The indexes on MySQL, without partial ones: the columns of each predicate lead.
fn mysql_indexes(tables: &Tables) -> Vec<IndexCreateStatement> {
    let index = |suffix: &str, columns: &[Column]| outbox_index(tables, suffix, columns);
    vec![
        index(
            "claim",
            &[
                Column::Shard,
                Column::Published,
                Column::DeadLetteredAt,
                Column::Seq,
            ],
        ),
        index("retry", &[Column::Shard, Column::NextAttemptAt]),
        index("published_at", &[Column::PublishedAt]),
        index("dead", &[Column::DeadLetteredAt]),
        index("destination_topic", &[Column::DestinationTopic]),
        index("aggregate_id", &[Column::AggregateId]),
        index("trace_id", &[Column::TraceId]),
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
