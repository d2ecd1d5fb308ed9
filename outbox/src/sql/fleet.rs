//! The statements of a fleet's membership (`_outbox_fleet`, in its coordinator
//! database): heartbeats, the live members, leaving.

use chrono::{DateTime, Utc};
use sea_orm::Statement;
use sea_orm::sea_query::{Alias, Condition, Expr, ExprTrait, OnConflict, Order, Query};

use super::{Dialect, table};
use crate::tables::Tables;

fn column(name: &'static str) -> Alias {
    Alias::new(name)
}

impl Dialect {
    /// Records that `member` of the fleet `service` is alive at `now`.
    pub(crate) fn fleet_heartbeat(
        self,
        tables: &Tables,
        service: &str,
        member: &str,
        now: DateTime<Utc>,
    ) -> Statement {
        self.build(
            Query::insert()
                .into_table(table(tables.fleet()))
                .columns([
                    column("service_name"),
                    column("member_id"),
                    column("started_at"),
                    column("heartbeat_at"),
                ])
                .values_panic([service.into(), member.into(), now.into(), now.into()])
                .on_conflict(
                    OnConflict::columns([column("service_name"), column("member_id")])
                        .update_column(column("heartbeat_at"))
                        .to_owned(),
                ),
        )
    }

    /// The members of the fleet `service` alive since `since`, by id.
    pub(crate) fn fleet_members(
        self,
        tables: &Tables,
        service: &str,
        since: DateTime<Utc>,
    ) -> Statement {
        self.build(
            Query::select()
                .column(column("member_id"))
                .from(table(tables.fleet()))
                .and_where(Expr::col(column("service_name")).eq(service))
                .and_where(Expr::col(column("heartbeat_at")).gt(since))
                .order_by(column("member_id"), Order::Asc),
        )
    }

    /// Removes the members of `service` silent since `stale_before`, and `member`
    /// (one leaving).
    pub(crate) fn fleet_leave(
        self,
        tables: &Tables,
        service: &str,
        member: Option<&str>,
        stale_before: DateTime<Utc>,
    ) -> Statement {
        let gone = Condition::any()
            .add(Expr::col(column("heartbeat_at")).lt(stale_before))
            .add_option(member.map(|member| Expr::col(column("member_id")).eq(member)));
        self.build(
            Query::delete()
                .from_table(table(tables.fleet()))
                .and_where(Expr::col(column("service_name")).eq(service))
                .cond_where(gone),
        )
    }
}
