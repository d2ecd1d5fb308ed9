//! Statements for the manual calls, the CLI and the gauges: listings, replay, cleanup
//! and counts.

use chrono::{DateTime, Utc};
use sea_orm::sea_query::{
    Alias, Asterisk, Condition, Expr, ExprTrait, Func, Order, Query, SelectStatement, UnionType,
    UpdateStatement,
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

    /// Puts dead-lettered events back in line: one by id, or all with `None`.
    pub(crate) fn replay(
        self,
        table: &Identifier,
        id: Option<Uuid>,
        now: DateTime<Utc>,
    ) -> Statement {
        let mut replay = replay(table, now);
        replay.cond_where(dead_letters());
        if let Some(id) = id {
            replay.and_where(Expr::col(Column::Id).eq(id));
        }
        self.build(&replay)
    }

    /// Puts the `n` oldest dead letters back in line.
    pub(crate) fn replay_oldest(self, table: &Identifier, n: u64, now: DateTime<Utc>) -> Statement {
        // MySQL takes no LIMIT in an IN subquery, but orders and limits an UPDATE.
        if self == Dialect::MySql {
            return self.build(
                replay(table, now)
                    .cond_where(dead_letters())
                    .order_by(Column::Seq, Order::Asc)
                    .limit(limit(n)),
            );
        }
        let oldest = seqs(table)
            .cond_where(dead_letters())
            .order_by(Column::Seq, Order::Asc)
            .limit(limit(n))
            .take();
        self.build(replay(table, now).and_where(Expr::col(Column::Seq).in_subquery(oldest)))
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

/// `UPDATE table SET` the state of an event never tried, for replay.
fn replay(table: &Identifier, now: DateTime<Utc>) -> UpdateStatement {
    Query::update()
        .table(super::table(table))
        .values([
            (Column::DeadLetteredAt, Expr::null()),
            (Column::Attempts, 0.into()),
            (Column::NextAttemptAt, Expr::null()),
            (Column::UpdatedAt, now.into()),
        ])
        .take()
}
