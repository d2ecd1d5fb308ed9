//! The inbox's statements: record an event as processed, forget old records, and a
//! consumer's dead letters.

use chrono::{DateTime, Utc};
use sea_orm::Statement;
use sea_orm::sea_query::{
    Condition, Expr, ExprTrait, InsertStatement, IntoIden, LikeExpr, OnConflict, Order, Query,
};
use uuid::Uuid;

use super::{Dialect, limit};
use crate::dead_letter_filter::DeadLetterFilter;
use crate::entity::inbox::Column;
use crate::entity::inbox_dead as dead;
use crate::tables::Identifier;

/// A dead letter's columns but its id (which the database assigns), in the order they
/// are written.
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

/// The condition a [`DeadLetterFilter`] stands for.
fn picked(filter: &DeadLetterFilter) -> Condition {
    use dead::Column as D;
    let mut condition = Condition::all();
    if let Some(id) = filter.id {
        condition = condition.add(Expr::col(D::Id).eq(id));
    }
    if let Some(consumer) = &filter.consumer {
        condition = condition.add(Expr::col(D::Consumer).eq(consumer.as_str()));
    }
    if let Some(topic) = &filter.topic {
        condition = condition.add(Expr::col(D::Topic).eq(topic.as_str()));
    }
    if filter.marked_for_replay {
        condition = condition.add(Expr::col(D::ReplayRequestedAt).is_not_null());
    }
    if let Some(text) = &filter.error_contains {
        let escaped = text
            .replace('\\', "\\\\")
            .replace('%', "\\%")
            .replace('_', "\\_");
        condition = condition
            .add(Expr::col(D::Error).like(LikeExpr::new(format!("%{escaped}%")).escape('\\')));
    }
    condition
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

    /// Writes a consumer's dead letter. A plain insert: MySQL's `INSERT IGNORE` would
    /// cut a value too long for its column with a mere warning.
    #[cfg(feature = "kafka")]
    pub(crate) fn record_dead_letter(
        self,
        table: &Identifier,
        letter: &DeadLetterRow<'_>,
    ) -> Statement {
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
        self.build(&insert)
    }

    /// The key, payload and headers of the dead letters `letter`'s consumer has at its
    /// topic, partition and offset: one when the message was dead-lettered before,
    /// more when its topic was deleted and created again since.
    #[cfg(feature = "kafka")]
    pub(crate) fn dead_letters_at(
        self,
        table: &Identifier,
        letter: &DeadLetterRow<'_>,
    ) -> Statement {
        use dead::Column as D;
        self.build(
            Query::select()
                .columns([D::MessageKey, D::Payload, D::Headers])
                .from(super::table(table))
                .and_where(Expr::col(D::Consumer).eq(letter.consumer))
                .and_where(Expr::col(D::Topic).eq(letter.topic))
                .and_where(Expr::col(D::KafkaPartition).eq(letter.partition))
                .and_where(Expr::col(D::KafkaOffset).eq(letter.offset)),
        )
    }

    /// 1 when the transaction it runs in holds `consumer`'s record of `event_id`, else
    /// 0 (or an error, for a PostgreSQL transaction an error aborted). PostgreSQL: the
    /// record's `xmin` is this transaction's id. MariaDB (`in_transaction`): a
    /// transaction is open and sees the record. MySQL and SQLite: the record is seen.
    #[cfg(feature = "kafka")]
    pub(crate) fn holds_record(
        self,
        table: &Identifier,
        consumer: &str,
        event_id: Uuid,
        in_transaction: bool,
    ) -> Statement {
        let table = table.quoted();
        let record = format!("SELECT 1 FROM {table} WHERE consumer = $1 AND event_id = $2");
        let sql = match self {
            Dialect::Postgres => format!(
                "SELECT CAST(CASE WHEN EXISTS ({record} AND xmin::text::bigint = txid_current() % 4294967296) THEN 1 ELSE 0 END AS BIGINT)"
            ),
            Dialect::MySql if in_transaction => format!(
                "SELECT CAST(CASE WHEN @@in_transaction = 1 AND EXISTS ({record}) THEN 1 ELSE 0 END AS SIGNED)"
            ),
            Dialect::MySql => {
                format!("SELECT CAST(CASE WHEN EXISTS ({record}) THEN 1 ELSE 0 END AS SIGNED)")
            }
            Dialect::Sqlite => format!("SELECT CASE WHEN EXISTS ({record}) THEN 1 ELSE 0 END"),
        };
        self.hand_written(sql, [consumer.into(), event_id.into()])
    }

    /// The dead letters `filter` picks, oldest first, at most `n`.
    pub(crate) fn dead_letters(
        self,
        table: &Identifier,
        filter: &DeadLetterFilter,
        n: u64,
    ) -> Statement {
        use dead::Column as D;
        self.build(
            Query::select()
                .column(D::Id)
                .columns(DEAD_LETTER_COLUMNS)
                .column(D::ReplayRequestedAt)
                .from(super::table(table))
                .cond_where(picked(filter))
                .order_by(D::Id, Order::Asc)
                .limit(limit(n)),
        )
    }

    /// How many dead letters `filter` picks.
    pub(crate) fn count_dead_letters(
        self,
        table: &Identifier,
        filter: &DeadLetterFilter,
    ) -> Statement {
        self.build(
            Query::select()
                .expr_as(Expr::col(dead::Column::Id).count(), "n")
                .from(super::table(table))
                .cond_where(picked(filter)),
        )
    }

    /// Marks the dead letters `filter` picks (not yet marked) for replay at `now`.
    pub(crate) fn request_replays(
        self,
        table: &Identifier,
        filter: &DeadLetterFilter,
        now: DateTime<Utc>,
    ) -> Statement {
        use dead::Column as D;
        self.build(
            Query::update()
                .table(super::table(table))
                .value(D::ReplayRequestedAt, now)
                .cond_where(picked(filter).add(Expr::col(D::ReplayRequestedAt).is_null())),
        )
    }

    /// Deletes the dead letters `filter` picks.
    pub(crate) fn forget_dead_letters(
        self,
        table: &Identifier,
        filter: &DeadLetterFilter,
    ) -> Statement {
        self.build(
            Query::delete()
                .from_table(super::table(table))
                .cond_where(picked(filter)),
        )
    }

    /// Takes a dead letter marked for replay: deletes it, in the transaction that
    /// replays it. One row affected for the taker; none when another consumer took it,
    /// or the mark was withdrawn.
    #[cfg(feature = "kafka")]
    pub(crate) fn take_replay(self, table: &Identifier, id: i64) -> Statement {
        use dead::Column as D;
        self.build(
            Query::delete()
                .from_table(super::table(table))
                .and_where(Expr::col(D::Id).eq(id))
                .and_where(Expr::col(D::ReplayRequestedAt).is_not_null()),
        )
    }

    /// A replay that failed: the mark is cleared, the error and attempts updated.
    #[cfg(feature = "kafka")]
    pub(crate) fn replay_failed(self, table: &Identifier, id: i64, error: &str) -> Statement {
        use dead::Column as D;
        self.build(
            Query::update()
                .table(super::table(table))
                .value(D::ReplayRequestedAt, Option::<DateTime<Utc>>::None)
                .value(D::Error, error)
                .value(D::Attempts, Expr::col(D::Attempts).add(1))
                .and_where(Expr::col(D::Id).eq(id)),
        )
    }

    /// Deletes `consumer`'s record of `event_id`.
    #[cfg(feature = "kafka")]
    pub(crate) fn forget_record(
        self,
        table: &Identifier,
        consumer: &str,
        event_id: Uuid,
    ) -> Statement {
        self.build(
            Query::delete()
                .from_table(super::table(table))
                .and_where(Expr::col(Column::Consumer).eq(consumer))
                .and_where(Expr::col(Column::EventId).eq(event_id)),
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

    /// Deletes up to `n` of `consumer`'s records made before `cutoff`, oldest first.
    pub(crate) fn forget_processed(
        self,
        table: &Identifier,
        consumer: &str,
        cutoff: DateTime<Utc>,
        n: u64,
    ) -> Statement {
        let expired = Expr::col(Column::Consumer)
            .eq(consumer)
            .and(Expr::col(Column::ProcessedAt).lt(cutoff));
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
