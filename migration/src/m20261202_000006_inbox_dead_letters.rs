//! Creates `_outbox_inbox_dead`, where a consumer keeps the messages it gave up on
//! (see [`outbox::Consumer`]): a handler that kept failing, or a message it could not
//! read. The primary key `(consumer, topic, kafka_partition, kafka_offset)` is the
//! message: one dead letter per message and consumer, however often it is delivered.

use outbox::entity::inbox_dead::Column;
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
                    .col(varchar(Column::Topic).not_null())
                    .col(ColumnDef::new(Column::KafkaPartition).integer().not_null())
                    .col(ColumnDef::new(Column::KafkaOffset).big_integer().not_null())
                    .col(ColumnDef::new(Column::EventId).uuid().null())
                    .col(varchar(Column::EventType).null())
                    .col(ColumnDef::new(Column::MessageKey).blob().null())
                    .col(ColumnDef::new(Column::Payload).blob().null())
                    .col(ColumnDef::new(Column::Headers).text().not_null())
                    .col(ColumnDef::new(Column::Error).text().not_null())
                    .col(ColumnDef::new(Column::Attempts).integer().not_null())
                    .col(timestamp(Column::DeadLetteredAt, backend).not_null())
                    .primary_key(
                        Index::create()
                            .col(Column::Consumer)
                            .col(Column::Topic)
                            .col(Column::KafkaPartition)
                            .col(Column::KafkaOffset),
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
