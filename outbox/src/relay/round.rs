//! What a lease round works on and ends with, and the rows its statements return.

use sea_orm::{DatabaseConnection, FromQueryResult};

use super::clock::Clock;
use crate::sql::Dialect;
use crate::tables::Tables;

/// What a round ended with.
#[derive(Debug)]
pub(crate) struct Round {
    /// Shards held after it.
    pub(crate) owned: usize,
    /// Whether it took shards it did not hold before.
    pub(crate) took: bool,
    /// Whether it gave shards up (for another relay, or all of them).
    pub(crate) released: bool,
    /// The service this relay gives way to, if another service's relays publish the
    /// same table and started first.
    pub(crate) yielded_to: Option<String>,
}

#[derive(Debug, FromQueryResult)]
pub(super) struct TokenRow {
    pub(super) token: i64,
}

#[derive(Debug, FromQueryResult)]
pub(super) struct Renewed {
    pub(super) shard: i32,
    pub(super) token: i64,
}

#[derive(Debug, FromQueryResult)]
pub(super) struct LiveLease {
    pub(super) shard: i32,
    pub(super) owner: String,
}

/// Where a round does its work: the database, its dialect, the tables, the clock.
#[derive(Debug, Clone, Copy)]
pub(crate) struct On<'a> {
    pub(crate) db: &'a DatabaseConnection,
    pub(crate) dialect: Dialect,
    pub(crate) tables: &'a Tables,
    pub(crate) clock: &'a Clock,
}
