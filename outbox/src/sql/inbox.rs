//! The inbox's statements: record an event as processed, forget old records, and a
//! consumer's dead letters.

use chrono::{DateTime, Utc};
use sea_orm::Statement;
use sea_orm::sea_query::{Expr, ExprTrait, InsertStatement, IntoIden, OnConflict, Order, Query};
use uuid::Uuid;

use super::{Dialect, limit};
use crate::entity::inbox::Column;
use crate::entity::inbox_dead as dead;
use crate::tables::Identifier;

/// A dead letter's columns, in the order they are written and read.
const DEAD_LETTER_COLUMNS: [dead::Column; 12] = [
    dead::Column::Consumer,
    dead::Column::Topic,
    dead::Column::KafkaPartition,
    dead::Column::KafkaOffset,
    dead::Column::EventId,
    dead::Column::EventType,
    dead::Column::MessageKey,
    dead::Column::Payload,
    dead::Column::Headers,
    dead::Column::Error,
    dead::Column::Attempts,
    dead::Column::DeadLetteredAt,
];

/// A dead letter as written: the message as it came, and why it was given up on.
#[cfg(feature = "kafka")]
#[derive(Debug)]
pub(crate) struct DeadLetterRow<'a> {
    pub(crate) consumer: &'a str,
    pub(crate) topic: &'a str,
    pub(crate) partition: i32,
    pub(crate) offset: i64,
    pub(crate) event_id: Option<Uuid>,
    pub(crate) event_type: Option<&'a str>,
    pub(crate) key: Option<&'a [u8]>,
    pub(crate) payload: Option<&'a [u8]>,
    pub(crate) headers: &'a str,
    pub(crate) error: &'a str,
    pub(crate) attempts: i32,
    pub(crate) now: DateTime<Utc>,
}

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
        let insert = Query::insert()
            .into_table(super::table(table))
            .columns([Column::Consumer, Column::EventId, Column::ProcessedAt])
            .values_panic([consumer.into(), event_id.into(), now.into()])
            .to_owned();
        self.insert_unless_there(insert, [Column::Consumer, Column::EventId])
    }

    /// `insert`, doing nothing for a row whose primary key (`key`) exists: one row
    /// affected for a new row, none for one that was there.
    fn insert_unless_there<C: IntoIden>(
        self,
        mut insert: InsertStatement,
        key: impl IntoIterator<Item = C>,
    ) -> Statement {
        match self {
            // MySQL: `INSERT IGNORE`, which sea-query does not write. The `ON DUPLICATE
            // KEY UPDATE` it writes for "do nothing" counts a duplicate as a row found
            // (the driver sets CLIENT_FOUND_ROWS), so a duplicate would look written.
            Dialect::MySql => {
                let mut statement = self.build(&insert);
                statement.sql = statement.sql.replacen("INSERT ", "INSERT IGNORE ", 1);
                statement
            }
            Dialect::Postgres | Dialect::Sqlite => {
                self.build(insert.on_conflict(OnConflict::columns(key).do_nothing().to_owned()))
            }
        }
    }

    /// Writes a consumer's dead letter, or nothing when the message has one already.
    #[cfg(feature = "kafka")]
    pub(crate) fn record_dead_letter(
        self,
        table: &Identifier,
        letter: &DeadLetterRow<'_>,
    ) -> Statement {
        use dead::Column as D;
        let insert = Query::insert()
            .into_table(super::table(table))
            .columns(DEAD_LETTER_COLUMNS)
            .values_panic([
                letter.consumer.into(),
                letter.topic.into(),
                letter.partition.into(),
                letter.offset.into(),
                letter.event_id.into(),
                letter.event_type.into(),
                letter.key.map(<[u8]>::to_vec).into(),
                letter.payload.map(<[u8]>::to_vec).into(),
                letter.headers.into(),
                letter.error.into(),
                letter.attempts.into(),
                letter.now.into(),
            ])
            .to_owned();
        self.insert_unless_there(
            insert,
            [D::Consumer, D::Topic, D::KafkaPartition, D::KafkaOffset],
        )
    }

    /// A consumer's dead letters, oldest first, at most `n`.
    pub(crate) fn dead_letters(self, table: &Identifier, consumer: &str, n: u64) -> Statement {
        use dead::Column as D;
        self.build(
            Query::select()
                .columns(DEAD_LETTER_COLUMNS)
                .from(super::table(table))
                .and_where(Expr::col(D::Consumer).eq(consumer))
                .order_by(D::DeadLetteredAt, Order::Asc)
                .order_by(D::Topic, Order::Asc)
                .order_by(D::KafkaPartition, Order::Asc)
                .order_by(D::KafkaOffset, Order::Asc)
                .limit(limit(n)),
        )
    }

    /// Deletes one dead letter.
    pub(crate) fn forget_dead_letter(
        self,
        table: &Identifier,
        consumer: &str,
        topic: &str,
        partition: i32,
        offset: i64,
    ) -> Statement {
        use dead::Column as D;
        self.build(
            Query::delete()
                .from_table(super::table(table))
                .and_where(Expr::col(D::Consumer).eq(consumer))
                .and_where(Expr::col(D::Topic).eq(topic))
                .and_where(Expr::col(D::KafkaPartition).eq(partition))
                .and_where(Expr::col(D::KafkaOffset).eq(offset)),
        )
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
