//! Gives each row of `_outbox_inbox_dead` an id of its own, and keeps every byte:
//!
//! - the primary key becomes `id` (in the order letters were written), and
//!   `idx_<inbox_dead>_message (consumer, topic, kafka_partition, kafka_offset)` finds
//!   a message's letters. A topic deleted and created again reuses offsets: its
//!   messages' dead letters were lost to the old key's conflict;
//! - on MySQL the key and payload become `LONGBLOB` and the headers and error
//!   `LONGTEXT` (a `BLOB` holds 64 KiB);
//! - `replay_requested_at` (null) marks a letter an operator asked to replay: its
//!   consumer hands the message to its handler again;
//! - `idx_<inbox>_processed` becomes `idx_<inbox>_consumer_processed (consumer,
//!   processed_at)`: each consumer's cleanup deletes its own records.
//!
//! The table is rebuilt (created anew, its rows copied, renamed): SQLite cannot
//! change a primary key in place. Going down fails while a message has more than one
//! letter.
//!
//! The columns are named here, not taken from the entity, so the migration stays as
//! it was written when the entity changes.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::{ConnectionTrait, DbBackend};

use crate::m20261127_000001_create_outbox_tables::{index_name, timestamp, varchar};
use crate::m20261128_000005_create_inbox::consumer;

crate::migration!("m20261205_000009_inbox_dead_letter_ids");

/// The columns both shapes of the table have, in order.
const COLUMNS: &str = "consumer, topic, kafka_partition, kafka_offset, event_id, event_type, \
    message_key, payload, headers, error, attempts, dead_lettered_at";

/// The dead-letter table, with an `id` key (`up`) or keyed by the message (`down`).
fn dead_letter_table(name: &str, backend: DbBackend, with_id: bool) -> TableCreateStatement {
    let (blob, text) = match backend {
        DbBackend::MySql => ("LONGBLOB", "LONGTEXT"),
        DbBackend::Postgres => ("BYTEA", "TEXT"),
        _ => ("BLOB", "TEXT"),
    };
    let mut table = Table::create();
    table.table(name.to_owned());
    if with_id {
        table.col(
            ColumnDef::new("id")
                .big_integer()
                .not_null()
                .auto_increment()
                .primary_key(),
        );
    }
    table
        .col(consumer(backend))
        .col(varchar("topic").not_null())
        .col(ColumnDef::new("kafka_partition").integer().not_null())
        .col(ColumnDef::new("kafka_offset").big_integer().not_null())
        .col(ColumnDef::new("event_id").uuid().null())
        .col(varchar("event_type").null())
        .col(ColumnDef::new("message_key").custom(blob).null())
        .col(ColumnDef::new("payload").custom(blob).null())
        .col(ColumnDef::new("headers").custom(text).not_null())
        .col(ColumnDef::new("error").custom(text).not_null())
        .col(ColumnDef::new("attempts").integer().not_null())
        .col(timestamp("dead_lettered_at", backend).not_null());
    if with_id {
        table.col(timestamp("replay_requested_at", backend).null());
    } else {
        table.primary_key(
            Index::create()
                .col("consumer")
                .col("topic")
                .col("kafka_partition")
                .col("kafka_offset"),
        );
    }
    table.to_owned()
}

impl Migration {
    /// Rebuilds the dead-letter table in the shape `with_id` names, keeping its rows.
    async fn rebuild(&self, manager: &SchemaManager<'_>, with_id: bool) -> Result<(), DbErr> {
        let backend = manager.get_database_backend();
        let t = &self.tables;
        let old = t.inbox_dead().as_str();
        let new = format!("{old}_rebuilt");
        manager
            .create_table(dead_letter_table(&new, backend, with_id))
            .await?;
        let quote = |name: &str| match backend {
            DbBackend::MySql => format!("`{name}`"),
            _ => format!("\"{name}\""),
        };
        manager
            .get_connection()
            .execute_unprepared(&format!(
                "INSERT INTO {} ({COLUMNS}) SELECT {COLUMNS} FROM {} ORDER BY dead_lettered_at, topic, kafka_partition, kafka_offset",
                quote(&new),
                quote(old)
            ))
            .await?;
        manager
            .drop_table(Table::drop().table(old.to_owned()).to_owned())
            .await?;
        manager
            .rename_table(
                Table::rename()
                    .table(new.clone(), old.to_owned())
                    .to_owned(),
            )
            .await?;
        if with_id {
            manager
                .create_index(
                    Index::create()
                        .name(index_name(t.inbox_dead(), "message"))
                        .table(old.to_owned())
                        .col("consumer")
                        .col("topic")
                        .col("kafka_partition")
                        .col("kafka_offset")
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }

    /// Replaces the inbox's cleanup index `from` by `to`, over `columns`.
    async fn reindex_inbox(
        &self,
        manager: &SchemaManager<'_>,
        from: &str,
        to: &str,
        columns: &[&'static str],
    ) -> Result<(), DbErr> {
        let t = &self.tables;
        let mut index = Index::create();
        index
            .name(index_name(t.inbox(), to))
            .table(t.inbox().as_str().to_owned());
        for column in columns {
            index.col(*column);
        }
        manager.create_index(index.to_owned()).await?;
        manager
            .drop_index(
                Index::drop()
                    .name(index_name(t.inbox(), from))
                    .table(t.inbox().as_str().to_owned())
                    .to_owned(),
            )
            .await
    }
}

// The trait's signature (async-trait) elides SchemaManager's lifetime; an explicit one would not match.
#[allow(elided_lifetimes_in_paths)]
#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        self.rebuild(manager, true).await?;
        self.reindex_inbox(
            manager,
            "processed",
            "consumer_processed",
            &["consumer", "processed_at"],
        )
        .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        self.reindex_inbox(
            manager,
            "consumer_processed",
            "processed",
            &["processed_at"],
        )
        .await?;
        self.rebuild(manager, false).await
    }
}
