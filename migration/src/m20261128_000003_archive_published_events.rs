//! Creates `_outbox_published`, the archive that
//! [`Completion::Archive`](outbox::Completion::Archive) moves published events to.
//!
//! It has the outbox's columns, so its rows are [`outbox::entity::outbox::Model`]s,
//! and as few indexes as its readers need, since each is written once per archived
//! event:
//! - the primary key `id`: `Outbox::event` and `outbox show` find an archived event
//!   (UUID v7, so new entries go to the right edge of the B-tree); an event keeps the
//!   `seq` it was stored with, not indexed;
//! - `idx_<archive>_published_at (published_at)`: cleanup finds expired rows.
//!
//! The columns are named here, not taken from the entity, so the migration stays as
//! it was written when the entity changes.

use sea_orm_migration::prelude::*;

use crate::m20261127_000001_create_outbox_tables::{event_table, index_name};

crate::migration!("m20261128_000003_archive_published_events");

impl Migration {
    fn index(&self, suffix: &str, column: &'static str) -> IndexCreateStatement {
        let t = &self.tables;
        Index::create()
            .name(index_name(t.archive(), suffix))
            .table(t.archive().as_str().to_owned())
            .col(column)
            .to_owned()
    }
}

// The trait's signature (async-trait) elides SchemaManager's lifetime; an explicit one would not match.
#[allow(elided_lifetimes_in_paths)]
#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let seq = ColumnDef::new("seq").big_integer().not_null().to_owned();
        let id = ColumnDef::new("id")
            .uuid()
            .not_null()
            .primary_key()
            .to_owned();
        let parked = ColumnDef::new("parked")
            .boolean()
            .not_null()
            .default(false)
            .to_owned();
        let backend = manager.get_database_backend();
        let archive = event_table(self.tables.archive(), seq, id, backend)
            .col(parked)
            .to_owned();
        manager.create_table(archive).await?;
        manager
            .create_index(self.index("published_at", "published_at"))
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(
                Table::drop()
                    .table(self.tables.archive().as_str().to_owned())
                    .if_exists()
                    .to_owned(),
            )
            .await
    }
}
