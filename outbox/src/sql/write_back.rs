//! What a relay writes after publishing a batch: the lease fence, completing the
//! published events (mark, delete, archive), recording failures, and parking the
//! events behind a failed one.

use chrono::{DateTime, Utc};
use sea_orm::sea_query::{
    Alias, CommonTableExpression, Condition, Expr, ExprTrait, Func, InsertStatement, LockType,
    OnConflict, Query, SelectStatement, WithClause,
};
use sea_orm::{ConnectionTrait, Iterable, Statement, TransactionSession, TransactionTrait};
use uuid::Uuid;

use super::{Dialect, FailureUpdate, LeaseKey, table};
use crate::completion::Completion;
use crate::entity::lease::Column as Lease;
use crate::entity::outbox::Column;
use crate::error::Result;
use crate::schema;
use crate::tables::{Identifier, Tables};

/// Which events a write-back completes: by store order (the relay) or by event id
/// (the manual call).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Published<'a> {
    Seqs(&'a [i64]),
    Ids(&'a [Uuid]),
}

/// The statements that complete some events (see [`Dialect::complete`]).
#[derive(Debug)]
#[must_use]
pub(crate) struct Completing(pub(super) Vec<Statement>);

impl Completing {
    /// Runs the statements on `conn`, several in a transaction of their own (a
    /// savepoint when `conn` is a transaction), and returns how many events they
    /// completed.
    pub(crate) async fn run<C>(self, conn: &C) -> Result<u64>
    where
        C: ConnectionTrait + TransactionTrait,
    {
        match <[Statement; 1]>::try_from(self.0) {
            Ok([statement]) => Ok(conn.execute_raw(statement).await?.rows_affected()),
            Err(statements) => {
                let txn = conn.begin().await?;
                let mut completed = 0;
                for statement in statements {
                    completed = txn.execute_raw(statement).await?.rows_affected();
                }
                txn.commit().await?;
                Ok(completed)
            }
        }
    }
}

impl Dialect {
    /// Locks the lease row if `owner` still holds `shard` with `token`; returns a row
    /// only then. Run first in the write-back transaction: a relay that lost its lease
    /// writes nothing, and on PostgreSQL the row lock keeps a new owner from taking
    /// the lease until the write-back is done.
    pub(crate) fn fence(self, tables: &Tables, lease: &LeaseKey<'_>, token: i64) -> Statement {
        self.build(held_lease(tables, lease, token).column(Lease::Token))
    }

    /// Completes the pending events of `events` by `completion`: marks them
    /// published, deletes them, or moves them to the archive table. With `fence`, only
    /// while that lease is still held with its token, checked in the same statement;
    /// the lease row stays locked until the statement ends, as behind
    /// [`fence`](Self::fence) in a transaction.
    ///
    /// One statement, whose row count is the number of events completed; archiving on
    /// SQLite and MySQL takes two (copy, then delete, each counting the events), which
    /// the caller runs in one transaction.
    pub(crate) fn complete(
        self,
        tables: &Tables,
        completion: Completion,
        events: Published<'_>,
        now: DateTime<Utc>,
        fence: Option<(&LeaseKey<'_>, i64)>,
    ) -> Completing {
        let which = match events {
            Published::Seqs(seqs) => Expr::col(Column::Seq).is_in(seqs.iter().copied()),
            Published::Ids(ids) => Expr::col(Column::Id).is_in(ids.iter().copied()),
        };
        let mut rows = Condition::all()
            .add(which)
            .add(Expr::col(Column::Published).not());
        if let Some((lease, token)) = fence {
            let held = held_lease(tables, lease, token).expr(Expr::val(1)).take();
            rows = rows.add(Expr::exists(held));
        }
        let outbox = table(tables.outbox());
        let delete = || {
            Query::delete()
                .from_table(outbox.clone())
                .cond_where(rows.clone())
                .take()
        };
        match (completion, self) {
            (Completion::Mark, _) => Completing(vec![
                self.build(
                    Query::update()
                        .table(outbox.clone())
                        .values([
                            (Column::Published, true.into()),
                            (Column::PublishedAt, now.into()),
                            (Column::UpdatedAt, now.into()),
                            (Column::Parked, false.into()),
                        ])
                        .cond_where(rows),
                ),
            ]),
            (Completion::Delete, _) => Completing(vec![self.build(&delete())]),
            (Completion::Archive, Dialect::Postgres) => {
                let moved = Alias::new("moved");
                let cte = CommonTableExpression::new()
                    .table_name(moved.clone())
                    .query(delete().returning_all().take())
                    .to_owned();
                // Events the archive holds already (a copy left by hand, a restore)
                // are skipped, so the write-back that completes them goes through.
                let mut archive = archive(tables, archived(now).from(moved).take())
                    .on_conflict(OnConflict::column(Column::Id).do_nothing().to_owned())
                    .take();
                let with = WithClause::new().cte(cte).to_owned();
                Completing(vec![self.build(&archive.with_cte(with).take())])
            }
            // No DML in a CTE: copy, then delete, in one transaction. Events the
            // archive holds already are skipped, as on PostgreSQL (an upsert would not
            // do: MariaDB finds `id` ambiguous in `ON DUPLICATE KEY UPDATE` after a
            // SELECT of the outbox).
            (Completion::Archive, Dialect::Sqlite | Dialect::MySql) => {
                let archived_already = Query::select()
                    .expr(Expr::val(1))
                    .from_as(table(tables.archive()), Alias::new("a"))
                    .and_where(
                        Expr::col((Alias::new("a"), Column::Id))
                            .equals((table(tables.outbox()), Column::Id)),
                    )
                    .take();
                let copy = archived(now)
                    .from(outbox.clone())
                    .cond_where(rows.clone())
                    .and_where(Expr::not_exists(archived_already))
                    .take();
                Completing(vec![
                    self.build(&archive(tables, copy)),
                    self.build(&delete()),
                ])
            }
        }
    }

    /// Records a failed attempt of one event, identified by `id`.
    pub(crate) fn record_failure(
        self,
        table: &Identifier,
        id: Uuid,
        failure: &FailureUpdate<'_>,
    ) -> Statement {
        self.build(
            Query::update()
                .table(super::table(table))
                .values([
                    (Column::Attempts, failure.attempts.into()),
                    (Column::LastAttemptAt, failure.now.into()),
                    (Column::UpdatedAt, failure.now.into()),
                    (Column::ErrorMessage, failure.error.into()),
                    (Column::NextAttemptAt, failure.next_attempt_at.into()),
                    (Column::DeadLetteredAt, failure.dead_lettered_at.into()),
                    (Column::Parked, false.into()),
                ])
                .and_where(Expr::col(Column::Id).eq(id))
                .and_where(Expr::col(Column::Published).not()),
        )
    }

    /// Reads one event's attempts and state, locking the row.
    pub(crate) fn failure_state(self, table: &Identifier, id: Uuid) -> Statement {
        self.build(
            Query::select()
                .columns([Column::Attempts, Column::Published])
                .expr_as(Expr::col(Column::DeadLetteredAt).is_not_null(), "dead")
                .from(super::table(table))
                .and_where(Expr::col(Column::Id).eq(id))
                .lock(LockType::Update),
        )
    }

    /// Parks the pending events of `key` in `shard` stored after `seq` (the event that
    /// failed): a range scan of the claim index over the shard's unparked events.
    pub(crate) fn park_behind(
        self,
        table: &Identifier,
        shard: i32,
        key: &str,
        seq: i64,
    ) -> Statement {
        self.build(
            Query::update()
                .table(super::table(table))
                .value(Column::Parked, true)
                .and_where(Expr::col(Column::Shard).eq(shard))
                .cond_where(schema::claimable())
                .and_where(schema::event_key().eq(key))
                .and_where(Expr::col(Column::Seq).gt(seq)),
        )
    }

    /// Unparks the events of `keys` in `shard` (their failed event was published or
    /// dead-lettered), through the `parked` index.
    pub(crate) fn unpark(self, table: &Identifier, shard: i32, keys: &[&str]) -> Statement {
        self.build(
            Query::update()
                .table(super::table(table))
                .value(Column::Parked, false)
                .and_where(Expr::col(Column::Parked))
                .and_where(Expr::col(Column::Shard).eq(shard))
                .and_where(schema::event_key().is_in(keys.iter().copied())),
        )
    }

    /// The shards and keys of parked events that no earlier failed pending event of
    /// their key holds back any more (it was published, dead-lettered or replayed by
    /// other means than the relay's write-back; or only a later event of the key
    /// failed). Each key is judged by its first parked event: the key is an orphan
    /// when no retrying event of it comes before that one. (Unparking every event of
    /// such a key is safe: the claim parks again any that an earlier failure still
    /// holds back.) The keys are found first, then each is checked once, on the small
    /// `retry` index.
    pub(crate) fn orphaned_parked_keys(self, table: &Identifier) -> Statement {
        let parked = Alias::new("p");
        let keys = Query::select()
            .column(Column::Shard)
            .expr_as(schema::event_key(), "key")
            .expr_as(Func::min(Expr::col(Column::Seq)), "first")
            .from(super::table(table))
            .and_where(Expr::col(Column::Parked))
            .add_group_by([Expr::col(Column::Shard), schema::event_key()])
            .take();
        let failed = Query::select()
            .expr(Expr::val(1))
            .from(super::table(table))
            .and_where(Expr::col(Column::Shard).equals((parked.clone(), Column::Shard)))
            .cond_where(schema::retrying())
            .and_where(schema::event_key().eq(Expr::col((parked.clone(), Alias::new("key")))))
            .and_where(Expr::col(Column::Seq).lt(Expr::col((parked.clone(), Alias::new("first")))))
            .take();
        self.build(
            Query::select()
                .column((parked.clone(), Column::Shard))
                .column((parked.clone(), Alias::new("key")))
                .from_subquery(keys, parked)
                .and_where(Expr::not_exists(failed)),
        )
    }
}

/// The columns of an outbox row as it goes to the archive: published at `now`,
/// unparked, the rest as it was; the caller says from where.
fn archived(now: DateTime<Utc>) -> SelectStatement {
    let mut select = Query::select();
    for column in Column::iter() {
        let value = match column {
            Column::Published => Expr::val(true),
            Column::PublishedAt | Column::UpdatedAt => Expr::val(now),
            Column::Parked => Expr::val(false),
            other => Expr::col(other),
        };
        select.expr(value);
    }
    select
}

/// `INSERT INTO` the archive every column of the rows `rows` selects.
fn archive(tables: &Tables, rows: SelectStatement) -> InsertStatement {
    Query::insert()
        .into_table(table(tables.archive()))
        .columns(Column::iter())
        .select_from(rows)
        .expect("the archive's columns are the outbox's, selected in the same order")
        .take()
}

/// `SELECT .. FROM lease WHERE` `owner` still holds the shard with `token`, locking
/// the row (the columns are the caller's): the fence, alone or inside a write-back.
fn held_lease(tables: &Tables, lease: &LeaseKey<'_>, token: i64) -> SelectStatement {
    Query::select()
        .from(table(tables.lease()))
        .and_where(Expr::col(Lease::ServiceName).eq(lease.service))
        .and_where(Expr::col(Lease::Shard).eq(lease.shard))
        .and_where(Expr::col(Lease::Owner).eq(lease.owner))
        .and_where(Expr::col(Lease::Token).eq(token))
        .lock(LockType::Update)
        .take()
}
