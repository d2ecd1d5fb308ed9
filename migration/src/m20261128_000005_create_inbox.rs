//! Creates `_outbox_inbox`, where consumers record the events they processed (see
//! [`outbox::Inbox`]):
//! - the primary key `(consumer, event_id)`: the record's insert finds a duplicate,
//!   and waits for an uncommitted record of the same event (on MySQL the consumer
//!   name compares as bytes, as on the other backends);
//! - `idx_<inbox>_processed (processed_at)`: cleanup finds expired records.
//!
//! The columns are named here, not taken from the entity, so the migration stays as
//! it was written when the entity changes.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::DbBackend;

use crate::m20261127_000001_create_outbox_tables::{index_name, timestamp, varchar};

crate::migration!("m20261128_000005_create_inbox");

/// The consumer's name. MySQL's default collations ignore case, so "billing" and
/// "Billing" would be one consumer there and two elsewhere: compare bytes.
pub(crate) fn consumer(backend: DbBackend) -> ColumnDef {
    let mut column = match backend {
        DbBackend::MySql => ColumnDef::new("consumer")
            .custom("VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin")
            .to_owned(),
        _ => varchar("consumer"),
    };
    column.not_null().to_owned()
}

// The trait's signature (async-trait) elides SchemaManager's lifetime; an explicit one would not match.
#[allow(elided_lifetimes_in_paths)]
#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let backend = manager.get_database_backend();
        let t = &self.tables;
        manager
            .create_table(
                Table::create()
                    .table(t.inbox().as_str().to_owned())
                    .col(consumer(backend))
                    .col(ColumnDef::new("event_id").uuid().not_null())
                    .col(timestamp("processed_at", backend).not_null())
                    .primary_key(Index::create().col("consumer").col("event_id"))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name(index_name(t.inbox(), "processed"))
                    .table(t.inbox().as_str().to_owned())
                    .col("processed_at")
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(
                Table::drop()
                    .table(self.tables.inbox().as_str().to_owned())
                    .if_exists()
                    .to_owned(),
            )
            .await
    }
}
