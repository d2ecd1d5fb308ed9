//! Shard leases, relay membership and the offset table.

use chrono::{DateTime, Utc};
use sea_orm::Statement;
use sea_orm::sea_query::{
    Alias, Asterisk, Condition, Expr, ExprTrait, Func, OnConflict, Order, Query,
};
use uuid::Uuid;

use super::{Dialect, LeaseKey, table};
use crate::entity::lease::Column as Lease;
use crate::entity::offset::Column as Offset;
use crate::entity::relay::Column as Relay;
use crate::tables::{Identifier, Tables};

impl Dialect {
    /// Records what a service published last (the Go library's offset table).
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
    pub(crate) fn acquire_lease(
        self,
        tables: &Tables,
        lease: &LeaseKey<'_>,
        now: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> Statement {
        let current = |column| Expr::col((table(tables.lease()), column));
        let excluded = |column| Expr::col((Alias::new("excluded"), column));
        let same_owner = current(Lease::Owner).eq(excluded(Lease::Owner));
        let token = Expr::case(same_owner.clone(), current(Lease::Token))
            .finally(current(Lease::Token).add(1));
        self.build(
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
                .on_conflict(
                    OnConflict::columns([Lease::ServiceName, Lease::Shard])
                        .value(Lease::Token, token)
                        .update_columns([Lease::Owner, Lease::ExpiresAt, Lease::UpdatedAt])
                        .action_and_where(same_owner.or(current(Lease::ExpiresAt).lte(now)))
                        .to_owned(),
                )
                .returning_col(Lease::Token),
        )
    }

    /// Extends the leases `owner` still holds among `shards`, in one statement; returns
    /// the shards (with their tokens) that were still `owner`'s. A lease that expired
    /// but that nobody took is still `owner`'s: nobody else published its shard.
    pub(crate) fn renew_leases(
        self,
        tables: &Tables,
        service: &str,
        owner: &str,
        shards: &[i32],
        now: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> Statement {
        self.build(
            Query::update()
                .table(table(tables.lease()))
                .values([
                    (Lease::ExpiresAt, expires_at.into()),
                    (Lease::UpdatedAt, now.into()),
                ])
                .and_where(Expr::col(Lease::ServiceName).eq(service))
                .and_where(Expr::col(Lease::Owner).eq(owner))
                .and_where(Expr::col(Lease::Shard).is_in(shards.iter().copied()))
                .returning(Query::returning().columns([Lease::Shard, Lease::Token])),
        )
    }

    /// Gives up a lease at once, so another relay can take it without waiting.
    pub(crate) fn release_lease(
        self,
        tables: &Tables,
        lease: &LeaseKey<'_>,
        now: DateTime<Utc>,
    ) -> Statement {
        self.build(
            Query::update()
                .table(table(tables.lease()))
                .values([
                    (Lease::ExpiresAt, now.into()),
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
    ) -> Statement {
        self.build(
            Query::insert()
                .into_table(table(tables.relay()))
                .columns([
                    Relay::ServiceName,
                    Relay::RelayId,
                    Relay::StartedAt,
                    Relay::HeartbeatAt,
                ])
                .values_panic([service.into(), relay.into(), now.into(), now.into()])
                .on_conflict(
                    OnConflict::columns([Relay::ServiceName, Relay::RelayId])
                        .update_column(Relay::HeartbeatAt)
                        .to_owned(),
                ),
        )
    }

    /// Per service, how many of its relays showed life since `since` and the
    /// earliest start among them.
    pub(crate) fn live_services(self, tables: &Tables, since: DateTime<Utc>) -> Statement {
        self.build(
            Query::select()
                .column(Relay::ServiceName)
                .expr_as(Func::min(Expr::col(Relay::StartedAt)), "since")
                .expr_as(Func::count(Expr::col(Asterisk)), "relays")
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
