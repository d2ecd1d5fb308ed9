//! Creates `_outbox_inbox_dead`, where a consumer keeps the messages it gave up on
//! (see [`outbox::Consumer`]): a handler that kept failing, or a message it could not
//! read. The primary key `(consumer, topic, kafka_partition, kafka_offset)` is the
//! message: one dead letter per message and consumer, however often it is delivered.
//!
//! The columns are named here, not taken from the entity, so the migration stays as
//! it was written when the entity changes.

use sea_orm_migration::prelude::*;

use crate::m20261127_000001_create_outbox_tables::{timestamp, varchar};
use crate::m20261128_000005_create_inbox::consumer;

crate::migration!("m20261202_000006_inbox_dead_letters");

// The trait's signature (async-trait) elides SchemaManager's lifetime; an explicit one would not match.
#[allow(elided_lifetimes_in_paths)]
#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let backend = manager.get_database_backend();
        manager
            .create_table(
                Table::create()
                    .table(self.tables.inbox_dead().as_str().to_owned())
                    .col(consumer(backend))
                    .col(varchar("topic").not_null())
                    .col(ColumnDef::new("kafka_partition").integer().not_null())
                    .col(ColumnDef::new("kafka_offset").big_integer().not_null())
                    .col(ColumnDef::new("event_id").uuid().null())
                    .col(varchar("event_type").null())
                    .col(ColumnDef::new("message_key").blob().null())
                    .col(ColumnDef::new("payload").blob().null())
                    .col(ColumnDef::new("headers").text().not_null())
                    .col(ColumnDef::new("error").text().not_null())
                    .col(ColumnDef::new("attempts").integer().not_null())
                    .col(timestamp("dead_lettered_at", backend).not_null())
                    .primary_key(
                        Index::create()
                            .col("consumer")
                            .col("topic")
                            .col("kafka_partition")
                            .col("kafka_offset"),
                    )
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(
                Table::drop()
                    .table(self.tables.inbox_dead().as_str().to_owned())
                    .if_exists()
                    .to_owned(),
            )
            .await
    }
}
