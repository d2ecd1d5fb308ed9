//! The states of an outbox row as SQL conditions, written once for the statements and
//! the migrations' partial indexes.
//!
//! A partial index serves a query only when the query states the index's predicate:
//! PostgreSQL proves the implication, SQLite looks for each of the index's terms among
//! the query's. The migrations build the indexes from these conditions and the relay's
//! statements filter with them, so the two cannot drift apart.
//!
//! | condition | rows | index |
//! |---|---|---|
//! | [`pending`] | waiting to be published (parked and waiting for a retry included) | |
//! | [`claimable`] | pending and not parked: what a claim may take, once due | `idx_<t>_claim` |
//! | [`retrying`] | pending after a failed attempt | `idx_<t>_retry` |
//! | [`dead_lettered`] | dead-lettered (and not replayed) | `idx_<t>_dead` |
//! | [`published`] | published (kept until the retention ends) | `idx_<t>_published_at` |
//!
//! [`event_key`] is the key that orders an event and becomes its Kafka key.

use sea_orm::sea_query::{Condition, Expr, ExprTrait, Func};

use crate::entity::outbox::Column;

/// Events waiting to be published: not published, not dead-lettered.
pub fn pending() -> Condition {
    Condition::all()
        .add(Expr::col(Column::Published).not())
        .add(Expr::col(Column::DeadLetteredAt).is_null())
}

/// Pending events that are not parked behind a failed event of their key: the
/// predicate of the claim index.
pub fn claimable() -> Condition {
    pending().add(Expr::col(Column::Parked).not())
}

/// Pending events that failed at least once (they wait for a retry): the predicate
/// of the small `retry` index, which the claim and the insert probe for waiting keys.
pub fn retrying() -> Condition {
    Condition::all()
        .add(Expr::col(Column::NextAttemptAt).is_not_null())
        .add(pending())
}

/// Dead-lettered events: the predicate of the `dead` index.
pub fn dead_lettered() -> Condition {
    Condition::all().add(Expr::col(Column::DeadLetteredAt).is_not_null())
}

/// Published events: the predicate of the `published_at` index, which cleanup reads.
pub fn published() -> Condition {
    Condition::all().add(Expr::col(Column::Published))
}

/// The key that orders an event (and becomes its Kafka key): its partition key, or
/// its aggregate id when that is NULL (rows written by other tools). Every statement
/// that compares keys uses this expression.
pub fn event_key() -> Expr {
    Func::coalesce([
        Expr::col(Column::PartitionKey),
        Expr::col(Column::AggregateId),
    ])
    .into()
}
