//! Shard leases, relay membership and the offset table.

use chrono::{DateTime, Utc};
use sea_orm::sea_query::{
    Alias, Asterisk, Condition, Expr, ExprTrait, Func, InsertStatement, OnConflict, Order, Query,
};
use sea_orm::{ConnectionTrait, DatabaseConnection, FromQueryResult, Statement};
use uuid::Uuid;

use super::{Dialect, LeaseKey, table};
use crate::entity::lease::Column as Lease;
use crate::entity::offset::Column as Offset;
use crate::entity::relay::Column as Relay;
use crate::error::Result;
use crate::tables::{Identifier, Tables};

/// A change that returns rows: one statement (with `RETURNING`), or on MySQL the
/// change and then a read, whose rows are returned (see [`Returning::rows`]).
#[derive(Debug)]
#[must_use]
pub(crate) struct Returning(pub(super) Vec<Statement>);

impl Returning {
    fn one(statement: Statement) -> Self {
        Returning(vec![statement])
    }

    /// Runs the statements on `db`, one after the other, and returns the rows of the
    /// last. Each is atomic on its own; no transaction holds them together, which
    /// lease changes need no more than round trips: the read after a change finds a
    /// row of this relay's only if the change made or left it this relay's, and a
    /// relay that took the lease in between (it must have found it expired) bumped its
    /// token, which fences this one's write-backs as always.
    pub(crate) async fn rows<M: FromQueryResult>(self, db: &DatabaseConnection) -> Result<Vec<M>> {
        let mut statements = self.0;
        let last = statements.pop().expect("a change has a statement");
        for statement in statements {
            db.execute_raw(statement).await?;
        }
        Ok(M::find_by_statement(last).all(db).await?)
    }
}

/// `INSERT` of `lease` as a new lease, token 1, until `expires_at`; the caller says
/// what happens when the row exists.
fn new_lease(
    tables: &Tables,
    lease: &LeaseKey<'_>,
    now: DateTime<Utc>,
    expires_at: DateTime<Utc>,
) -> InsertStatement {
    Query::insert()
        .into_table(table(tables.lease()))
        .columns([
            Lease::ServiceName,
            Lease::Shard,
            Lease::Owner,
            Lease::Token,
            Lease::ExpiresAt,
            Lease::UpdatedAt,
        ])
        .values_panic([
            lease.service.into(),
            lease.shard.into(),
            lease.owner.into(),
            1_i64.into(),
            expires_at.into(),
            now.into(),
        ])
        .take()
}

/// The lease row of `service`'s `shard`.
fn lease_row(service: &str, shard: i32) -> Condition {
    Condition::all()
        .add(Expr::col(Lease::ServiceName).eq(service))
        .add(Expr::col(Lease::Shard).eq(shard))
}

impl Dialect {
    /// Records what a service published last (the offset table).
    pub(crate) fn upsert_offset(
        self,
        table: &Identifier,
        service: &str,
        event: Uuid,
        now: DateTime<Utc>,
    ) -> Statement {
        self.build(
            Query::insert()
                .into_table(super::table(table))
                .columns([
                    Offset::ServiceName,
                    Offset::LastEventId,
                    Offset::LastProcessed,
                    Offset::CreatedAt,
                    Offset::UpdatedAt,
                ])
                .values_panic([
                    service.into(),
                    event.into(),
                    now.into(),
                    now.into(),
                    now.into(),
                ])
                .on_conflict(
                    OnConflict::column(Offset::ServiceName)
                        .update_columns([
                            Offset::LastEventId,
                            Offset::LastProcessed,
                            Offset::UpdatedAt,
                        ])
                        .to_owned(),
                ),
        )
    }

    /// Takes or renews a shard's lease for `owner`: succeeds (returns the token) when
    /// the shard is free, expired, or already `owner`'s. The token grows whenever the
    /// lease changes hands.
    ///
    /// One upsert with `RETURNING`; on MySQL, which has neither a conditional upsert
    /// nor `RETURNING`, the row is created if missing, then taken by an update under the
    /// same condition, then read (see [`Returning::rows`]).
    pub(crate) fn acquire_lease(
        self,
        tables: &Tables,
        lease: &LeaseKey<'_>,
        now: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> Returning {
        if self == Dialect::MySql {
            return self.acquire_lease_mysql(tables, lease, now, expires_at);
        }
        let current = |column| Expr::col((table(tables.lease()), column));
        let excluded = |column| Expr::col((Alias::new("excluded"), column));
        let same_owner = current(Lease::Owner).eq(excluded(Lease::Owner));
        let token = Expr::case(same_owner.clone(), current(Lease::Token))
            .finally(current(Lease::Token).add(1));
        Returning::one(
            self.build(
                new_lease(tables, lease, now, expires_at)
                    .on_conflict(
                        OnConflict::columns([Lease::ServiceName, Lease::Shard])
                            .value(Lease::Token, token)
                            .update_columns([Lease::Owner, Lease::ExpiresAt, Lease::UpdatedAt])
                            .action_and_where(same_owner.or(current(Lease::ExpiresAt).lte(now)))
                            .to_owned(),
                    )
                    .returning_col(Lease::Token),
            ),
        )
    }

    fn acquire_lease_mysql(
        self,
        tables: &Tables,
        lease: &LeaseKey<'_>,
        now: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> Returning {
        let current = |column| Expr::col((table(tables.lease()), column));
        let create = new_lease(tables, lease, now, expires_at)
            // Leaves an existing row as it is.
            .on_conflict(
                OnConflict::column(Lease::ServiceName)
                    .update_column(Lease::ServiceName)
                    .to_owned(),
            )
            .take();
        let same_owner = current(Lease::Owner).eq(lease.owner);
        // MySQL assigns left to right: the token is computed from the previous owner.
        let take = Query::update()
            .table(table(tables.lease()))
            .values([
                (
                    Lease::Token,
                    Expr::case(same_owner.clone(), current(Lease::Token))
                        .finally(current(Lease::Token).add(1))
                        .into(),
                ),
                (Lease::Owner, lease.owner.into()),
                (Lease::ExpiresAt, expires_at.into()),
                (Lease::UpdatedAt, now.into()),
            ])
            .cond_where(lease_row(lease.service, lease.shard))
            .and_where(same_owner.or(current(Lease::ExpiresAt).lte(now)))
            .take();
        let read = Query::select()
            .column(Lease::Token)
            .from(table(tables.lease()))
            .cond_where(lease_row(lease.service, lease.shard))
            .and_where(Expr::col(Lease::Owner).eq(lease.owner))
            .take();
        Returning(vec![
            self.build(&create),
            self.build(&take),
            self.build(&read),
        ])
    }

    /// Extends the leases `owner` still holds among `shards`, in one statement; returns
    /// the shards (with their tokens) that were still `owner`'s. A lease that expired
    /// but that nobody took is still `owner`'s: nobody else published its shard.
    ///
    /// On MySQL (no `UPDATE .. RETURNING`) the update, then a read of the leases
    /// still `owner`'s.
    pub(crate) fn renew_leases(
        self,
        tables: &Tables,
        service: &str,
        owner: &str,
        shards: &[i32],
        now: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> Returning {
        let owned = Condition::all()
            .add(Expr::col(Lease::ServiceName).eq(service))
            .add(Expr::col(Lease::Owner).eq(owner))
            .add(Expr::col(Lease::Shard).is_in(shards.iter().copied()));
        let mut renew = Query::update()
            .table(table(tables.lease()))
            .values([
                (Lease::ExpiresAt, expires_at.into()),
                (Lease::UpdatedAt, now.into()),
            ])
            .cond_where(owned.clone())
            .take();
        let columns = [Lease::Shard, Lease::Token];
        if self == Dialect::MySql {
            let read = Query::select()
                .columns(columns)
                .from(table(tables.lease()))
                .cond_where(owned)
                .take();
            return Returning(vec![self.build(&renew), self.build(&read)]);
        }
        Returning::one(self.build(renew.returning(Query::returning().columns(columns))))
    }

    /// Gives up a lease at once, so another relay can take it without waiting: it
    /// expired at `expired` (in the past).
    pub(crate) fn release_lease(
        self,
        tables: &Tables,
        lease: &LeaseKey<'_>,
        now: DateTime<Utc>,
        expired: DateTime<Utc>,
    ) -> Statement {
        self.build(
            Query::update()
                .table(table(tables.lease()))
                .values([
                    (Lease::ExpiresAt, expired.into()),
                    (Lease::UpdatedAt, now.into()),
                ])
                .and_where(Expr::col(Lease::ServiceName).eq(lease.service))
                .and_where(Expr::col(Lease::Shard).eq(lease.shard))
                .and_where(Expr::col(Lease::Owner).eq(lease.owner)),
        )
    }

    /// The unexpired leases of a service: shard and owner.
    pub(crate) fn live_leases(
        self,
        tables: &Tables,
        service: &str,
        now: DateTime<Utc>,
    ) -> Statement {
        self.build(
            Query::select()
                .columns([Lease::Shard, Lease::Owner])
                .from(table(tables.lease()))
                .and_where(Expr::col(Lease::ServiceName).eq(service))
                .and_where(Expr::col(Lease::ExpiresAt).gt(now))
                .order_by(Lease::Shard, Order::Asc),
        )
    }

    /// Records that a relay is alive.
    pub(crate) fn heartbeat(
        self,
        tables: &Tables,
        service: &str,
        relay: &str,
        now: DateTime<Utc>,
        probation: bool,
    ) -> Statement {
        self.build(
            Query::insert()
                .into_table(table(tables.relay()))
                .columns([
                    Relay::ServiceName,
                    Relay::RelayId,
                    Relay::StartedAt,
                    Relay::HeartbeatAt,
                    Relay::Probation,
                ])
                .values_panic([
                    service.into(),
                    relay.into(),
                    now.into(),
                    now.into(),
                    probation.into(),
                ])
                .on_conflict(
                    OnConflict::columns([Relay::ServiceName, Relay::RelayId])
                        .update_columns([Relay::HeartbeatAt, Relay::Probation])
                        .to_owned(),
                ),
        )
    }

    /// Per service, how many of its relays showed life since `since`, how many of
    /// those are on probation, how many not on probation have an id before `relay`'s
    /// (its rank, for an exact split of the shards), and the earliest start among them.
    pub(crate) fn live_services(
        self,
        tables: &Tables,
        relay: &str,
        since: DateTime<Utc>,
    ) -> Statement {
        let ahead = Expr::col(Relay::RelayId)
            .lt(relay)
            .and(Expr::col(Relay::Probation).not());
        self.build(
            Query::select()
                .column(Relay::ServiceName)
                .expr_as(Func::min(Expr::col(Relay::StartedAt)), "since")
                .expr_as(Func::count(Expr::col(Asterisk)), "relays")
                .expr_as(
                    Func::count(Expr::case(Expr::col(Relay::Probation), 1)),
                    "on_probation",
                )
                .expr_as(Func::count(Expr::case(ahead, 1)), "ahead")
                .from(table(tables.relay()))
                .and_where(Expr::col(Relay::HeartbeatAt).gt(since))
                .group_by_col(Relay::ServiceName),
        )
    }

    /// Removes the membership of relays silent since `stale_before`, and of `relay`
    /// (one shutting down).
    pub(crate) fn leave(
        self,
        tables: &Tables,
        service: &str,
        relay: Option<&str>,
        stale_before: DateTime<Utc>,
    ) -> Statement {
        let gone = Condition::any()
            .add(Expr::col(Relay::HeartbeatAt).lt(stale_before))
            .add_option(relay.map(|relay| Expr::col(Relay::RelayId).eq(relay)));
        self.build(
            Query::delete()
                .from_table(table(tables.relay()))
                .and_where(Expr::col(Relay::ServiceName).eq(service))
                .cond_where(gone),
        )
    }

    /// The relays of every service with how many unexpired leases each holds.
    pub(crate) fn relays(self, tables: &Tables, now: DateTime<Utc>) -> Statement {
        let relay = |column| Expr::col((table(tables.relay()), column));
        let shards = Query::select()
            .expr(Func::count(Expr::col(Asterisk)))
            .from(table(tables.lease()))
            .and_where(Expr::col(Lease::ServiceName).eq(relay(Relay::ServiceName)))
            .and_where(Expr::col(Lease::Owner).eq(relay(Relay::RelayId)))
            .and_where(Expr::col(Lease::ExpiresAt).gt(now))
            .take();
        self.build(
            Query::select()
                .columns([
                    Relay::ServiceName,
                    Relay::RelayId,
                    Relay::StartedAt,
                    Relay::HeartbeatAt,
                ])
                .expr_as(shards, "shards")
                .from(table(tables.relay()))
                .order_by(Relay::ServiceName, Order::Asc)
                .order_by(Relay::RelayId, Order::Asc),
        )
    }
}
