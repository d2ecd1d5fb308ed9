//! What a relay writes after publishing a batch: the lease fence, marking events
//! published, recording failures, and parking the events behind a failed one.

use chrono::{DateTime, Utc};
use sea_orm::Statement;
use sea_orm::sea_query::{
    Alias, Expr, ExprTrait, LockType, Query, SelectStatement, UpdateStatement,
};
use uuid::Uuid;

use super::{Dialect, FailureUpdate, LeaseKey, table};
use crate::entity::lease::Column as Lease;
use crate::entity::outbox::Column;
use crate::schema;
use crate::tables::{Identifier, Tables};

/// Which events a write-back marks published: by store order (the relay) or by event
/// id (the manual call).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Published<'a> {
    Seqs(&'a [i64]),
    Ids(&'a [Uuid]),
}

impl Dialect {
    /// Locks the lease row if `owner` still holds `shard` with `token`; returns a row
    /// only then. Run first in the write-back transaction: a relay that lost its lease
    /// writes nothing, and on PostgreSQL the row lock keeps a new owner from taking
    /// the lease until the write-back is done.
    pub(crate) fn fence(self, tables: &Tables, lease: &LeaseKey<'_>, token: i64) -> Statement {
        self.build(held_lease(tables, lease, token).column(Lease::Token))
    }

    /// Marks the pending events of `events` as published.
    pub(crate) fn mark_published(
        self,
        table: &Identifier,
        events: Published<'_>,
        now: DateTime<Utc>,
    ) -> Statement {
        self.build(&mark(table, events, now))
    }

    /// Marks the pending events of `seqs` as published if `lease` is still held with
    /// `token`: the fence and the write-back in one statement, for a batch with
    /// nothing else to write. The lease row stays locked until the statement ends, as
    /// behind [`fence`](Self::fence) in a transaction.
    pub(crate) fn mark_published_fenced(
        self,
        tables: &Tables,
        lease: &LeaseKey<'_>,
        token: i64,
        seqs: &[i64],
        now: DateTime<Utc>,
    ) -> Statement {
        let fence = held_lease(tables, lease, token).expr(Expr::val(1)).take();
        self.build(mark(tables.outbox(), Published::Seqs(seqs), now).and_where(Expr::exists(fence)))
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

    /// The shards and keys of parked events whose key has no failed pending event any
    /// more (its failed event was published, dead-lettered or replayed by other means
    /// than the relay's write-back). The distinct keys are found first, then each is
    /// checked once, on the small `retry` index.
    pub(crate) fn orphaned_parked_keys(self, table: &Identifier) -> Statement {
        let parked = Alias::new("p");
        let keys = Query::select()
            .distinct()
            .column(Column::Shard)
            .expr_as(schema::event_key(), "key")
            .from(super::table(table))
            .and_where(Expr::col(Column::Parked))
            .take();
        let failed = Query::select()
            .expr(Expr::val(1))
            .from(super::table(table))
            .and_where(Expr::col(Column::Shard).equals((parked.clone(), Column::Shard)))
            .cond_where(schema::retrying())
            .and_where(schema::event_key().eq(Expr::col((parked.clone(), Alias::new("key")))))
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

/// `UPDATE .. SET published ..` of the pending events of `events`, its WHERE clause
/// open to more conditions.
fn mark(table: &Identifier, events: Published<'_>, now: DateTime<Utc>) -> UpdateStatement {
    let which = match events {
        Published::Seqs(seqs) => Expr::col(Column::Seq).is_in(seqs.iter().copied()),
        Published::Ids(ids) => Expr::col(Column::Id).is_in(ids.iter().copied()),
    };
    Query::update()
        .table(super::table(table))
        .values([
            (Column::Published, true.into()),
            (Column::PublishedAt, now.into()),
            (Column::UpdatedAt, now.into()),
            (Column::Parked, false.into()),
        ])
        .and_where(which)
        .and_where(Expr::col(Column::Published).not())
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
