//! The inbox's statements: record an event as processed, and forget old records.

use chrono::{DateTime, Utc};
use sea_orm::Statement;
use sea_orm::sea_query::{Expr, ExprTrait, OnConflict, Order, Query};
use uuid::Uuid;

use super::{Dialect, limit};
use crate::entity::inbox::Column;
use crate::tables::Identifier;

impl Dialect {
    /// Inserts the record that `consumer` processed `event_id`, or nothing when it is
    /// there already: one row affected for a first delivery, none for a duplicate.
    /// While another transaction holds an uncommitted record of the same event, the
    /// insert waits for it to end (the primary key's uniqueness check), so two
    /// deliveries of one event never both go on.
    pub(crate) fn record_processed(
        self,
        table: &Identifier,
        consumer: &str,
        event_id: Uuid,
        now: DateTime<Utc>,
    ) -> Statement {
        let mut insert = Query::insert()
            .into_table(super::table(table))
            .columns([Column::Consumer, Column::EventId, Column::ProcessedAt])
            .values_panic([consumer.into(), event_id.into(), now.into()])
            .to_owned();
        match self {
            // MySQL: `INSERT IGNORE`, which sea-query does not write. The `ON DUPLICATE
            // KEY UPDATE` it writes for "do nothing" counts a duplicate as a row found
            // (the driver sets CLIENT_FOUND_ROWS), so a duplicate would look recorded.
            Dialect::MySql => {
                let mut statement = self.build(&insert);
                statement.sql = statement.sql.replacen("INSERT ", "INSERT IGNORE ", 1);
                statement
            }
            Dialect::Postgres | Dialect::Sqlite => self.build(
                insert.on_conflict(
                    OnConflict::columns([Column::Consumer, Column::EventId])
                        .do_nothing()
                        .to_owned(),
                ),
            ),
        }
    }

    /// Whether `consumer` has a record of `event_id`.
    pub(crate) fn processed(self, table: &Identifier, consumer: &str, event_id: Uuid) -> Statement {
        self.build(
            Query::select()
                .column(Column::EventId)
                .from(super::table(table))
                .and_where(Expr::col(Column::Consumer).eq(consumer))
                .and_where(Expr::col(Column::EventId).eq(event_id)),
        )
    }

    /// Deletes up to `n` records made before `cutoff`, oldest first.
    pub(crate) fn forget_processed(
        self,
        table: &Identifier,
        cutoff: DateTime<Utc>,
        n: u64,
    ) -> Statement {
        let expired = Expr::col(Column::ProcessedAt).lt(cutoff);
        // MySQL takes no LIMIT in an IN subquery, but orders and limits a DELETE.
        if self == Dialect::MySql {
            return self.build(
                Query::delete()
                    .from_table(super::table(table))
                    .and_where(expired)
                    .order_by(Column::ProcessedAt, Order::Asc)
                    .limit(limit(n)),
            );
        }
        let oldest = Query::select()
            .columns([Column::Consumer, Column::EventId])
            .from(super::table(table))
            .and_where(expired)
            .order_by(Column::ProcessedAt, Order::Asc)
            .limit(limit(n))
            .take();
        self.build(
            Query::delete().from_table(super::table(table)).and_where(
                Expr::tuple([Expr::col(Column::Consumer), Expr::col(Column::EventId)])
                    .in_subquery(oldest),
            ),
        )
    }
}
