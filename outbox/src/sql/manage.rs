//! Statements for the manual calls, the CLI and the gauges: listings, replay, cleanup
//! and counts.

use chrono::{DateTime, Utc};
use sea_orm::sea_query::{
    Alias, Asterisk, Condition, Expr, ExprTrait, Func, Order, Query, SelectStatement, UnionType,
};
use sea_orm::{Statement, Value};
use uuid::Uuid;

use super::{Dialect, HandWritten, Unpublished, limit};
use crate::entity::outbox::Column;
use crate::schema;
use crate::tables::Identifier;

/// See [`Dialect::backlog`].
const BACKLOG: HandWritten = HandWritten(include_str!("backlog.sql"));

/// The backlog on MySQL and MariaDB, whose indexes are not partial.
const BACKLOG_MYSQL: HandWritten = HandWritten(include_str!("backlog_mysql.sql"));

impl Dialect {
    /// Unpublished events in `state`, oldest first.
    pub(crate) fn events(self, table: &Identifier, state: Unpublished, n: u64) -> Statement {
        let state = match state {
            Unpublished::Pending => schema::pending(),
            Unpublished::DeadLettered => dead_letters(),
        };
        self.build(
            Query::select()
                .column(Asterisk)
                .from(super::table(table))
                .cond_where(state)
                .order_by(Column::Seq, Order::Asc)
                .limit(limit(n)),
        )
    }

    /// One event by id.
    pub(crate) fn event(self, table: &Identifier, id: Uuid) -> Statement {
        self.build(
            Query::select()
                .column(Asterisk)
                .from(super::table(table))
                .and_where(Expr::col(Column::Id).eq(id)),
        )
    }

    /// The dead letters to replay, oldest first, as `seq` and key: the one with id
    /// `id`, or the `n` oldest.
    pub(crate) fn dead_letter_keys(
        self,
        table: &Identifier,
        id: Option<Uuid>,
        n: u64,
    ) -> Statement {
        let mut select = Query::select();
        select
            .column(Column::Seq)
            .expr_as(schema::event_key(), "key")
            .from(super::table(table))
            .cond_where(dead_letters())
            .order_by(Column::Seq, Order::Asc)
            .limit(limit(n));
        if let Some(id) = id {
            select.and_where(Expr::col(Column::Id).eq(id));
        }
        self.build(&select)
    }

    /// Puts the dead letters `seqs` back in line, in `shard`: their key's shard under
    /// today's shard count, which may not be the one they were stored with.
    pub(crate) fn replay(
        self,
        table: &Identifier,
        seqs: &[i64],
        shard: i32,
        now: DateTime<Utc>,
    ) -> Statement {
        self.build(
            Query::update()
                .table(super::table(table))
                .values([
                    (Column::DeadLetteredAt, Expr::null()),
                    (Column::Attempts, 0.into()),
                    (Column::NextAttemptAt, Expr::null()),
                    (Column::Parked, false.into()),
                    (Column::Shard, shard.into()),
                    (Column::UpdatedAt, now.into()),
                ])
                .cond_where(dead_letters())
                .and_where(Expr::col(Column::Seq).is_in(seqs.iter().copied())),
        )
    }

    /// `n` = 1 when `table` exists (in the connection's schema or database), else 0:
    /// a read of the catalog, which fails in no case, so it can run inside a
    /// transaction that a failed probe of the table itself would abort.
    pub(crate) fn table_exists(self, table: &Identifier) -> Statement {
        let (sql, name) = match self {
            Dialect::Postgres => (
                "SELECT COUNT(*) AS \"n\" FROM (SELECT to_regclass($1) AS \"t\") AS \"r\" \
                 WHERE \"t\" IS NOT NULL",
                table.quoted(),
            ),
            Dialect::MySql => (
                "SELECT COUNT(*) AS \"n\" FROM \"information_schema\".\"tables\" \
                 WHERE \"table_schema\" = DATABASE() AND \"table_name\" = $1",
                table.as_str().to_owned(),
            ),
            Dialect::Sqlite => (
                "SELECT COUNT(*) AS \"n\" FROM \"sqlite_master\" WHERE \"type\" = $2 AND \"name\" = $1",
                table.as_str().to_owned(),
            ),
        };
        let mut values = vec![Value::from(name)];
        if self == Dialect::Sqlite {
            values.push(Value::from("table"));
        }
        self.hand_written(sql.to_owned(), values)
    }

    /// Deletes up to `n` events published before `cutoff`, oldest first.
    pub(crate) fn cleanup(self, table: &Identifier, cutoff: DateTime<Utc>, n: u64) -> Statement {
        // MySQL takes no LIMIT in an IN subquery, but orders and limits a DELETE.
        if self == Dialect::MySql {
            return self.build(
                Query::delete()
                    .from_table(super::table(table))
                    .cond_where(published_before(cutoff))
                    .order_by(Column::PublishedAt, Order::Asc)
                    .limit(limit(n)),
            );
        }
        let expired = seqs(table)
            .cond_where(published_before(cutoff))
            .order_by(Column::PublishedAt, Order::Asc)
            .limit(limit(n))
            .take();
        self.build(
            Query::delete()
                .from_table(super::table(table))
                .and_where(Expr::col(Column::Seq).in_subquery(expired)),
        )
    }

    /// How many events were published before `cutoff`.
    pub(crate) fn count_published_before(
        self,
        table: &Identifier,
        cutoff: DateTime<Utc>,
    ) -> Statement {
        self.build(count(table).cond_where(published_before(cutoff)))
    }

    /// How many pending events are in shard `first` or above (a range scan of the claim
    /// index).
    pub(crate) fn count_pending_from_shard(self, table: &Identifier, first: i32) -> Statement {
        self.build(
            count(table)
                .and_where(Expr::col(Column::Shard).gte(first))
                .cond_where(schema::claimable()),
        )
    }

    /// Counts of pending and dead-lettered events, and the oldest pending event's time,
    /// from the partial indexes only; the SQL is `backlog.sql` (on MySQL
    /// `backlog_mysql.sql`, through its full indexes).
    pub(crate) fn backlog(self, table: &Identifier, shards: u16) -> Statement {
        let (backlog, values) = match self {
            Dialect::Postgres | Dialect::Sqlite => (BACKLOG, Vec::new()),
            Dialect::MySql => (
                BACKLOG_MYSQL,
                vec![Value::from(i32::from(Ord::max(shards, 1)) - 1)],
            ),
        };
        self.hand_written(
            backlog.on_shards(self, table, (0..shards).map(i32::from)),
            values,
        )
    }

    /// Per topic: pending and dead-lettered events, and the oldest pending one, read
    /// through the partial indexes of pending, parked and dead-lettered events. The
    /// rows are counted with `COUNT` (a `SUM` would be a `DECIMAL` on MySQL).
    pub(crate) fn topic_backlog(self, table: &Identifier) -> Statement {
        let rows = |pending: bool, oldest: Expr, which: Condition| {
            Query::select()
                .expr_as(Expr::col(Column::DestinationTopic), "topic")
                .expr_as(Expr::Constant(i32::from(pending).into()), "pending")
                .expr_as(oldest, "oldest")
                .from(super::table(table))
                .cond_where(which)
                .take()
        };
        let created = || Expr::col(Column::CreatedAt);
        let all = rows(true, created(), schema::claimable())
            .union(
                UnionType::All,
                rows(
                    true,
                    created(),
                    schema::pending().add(Expr::col(Column::Parked)),
                ),
            )
            .union(UnionType::All, rows(false, Expr::null(), dead_letters()))
            .take();
        let column = |name: &str| Expr::col(Alias::new(name));
        // `COUNT(CASE WHEN pending = 1 THEN 1 END)`, and for dead letters `= 0`.
        let count = |pending: i32| Func::count(Expr::case(column("pending").eq(pending), 1));
        self.build(
            Query::select()
                .column(Alias::new("topic"))
                .expr_as(count(1), "pending")
                .expr_as(count(0), "dead")
                .expr_as(Func::min(column("oldest")), "oldest")
                .from_subquery(all, Alias::new("backlog"))
                .group_by_col(Alias::new("topic"))
                .order_by(Alias::new("topic"), Order::Asc),
        )
    }
}

/// Dead-lettered events that were not published since (a manual mark may publish one).
fn dead_letters() -> Condition {
    schema::dead_lettered().add(Expr::col(Column::Published).not())
}

fn published_before(cutoff: DateTime<Utc>) -> Condition {
    schema::published().add(Expr::col(Column::PublishedAt).lt(cutoff))
}

/// `SELECT seq FROM table`, for a subquery that picks rows.
fn seqs(table: &Identifier) -> SelectStatement {
    Query::select()
        .column(Column::Seq)
        .from(super::table(table))
        .take()
}

/// `SELECT COUNT(*) AS n FROM table`.
fn count(table: &Identifier) -> SelectStatement {
    Query::select()
        .expr_as(Func::count(Expr::col(Asterisk)), "n")
        .from(super::table(table))
        .take()
}
