//! How a consumer's transaction proves, before its commit, that it is still the
//! transaction that holds its event's inbox record (see `WorkerContext::prove`).

use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, DbErr, Statement};
use tracing::warn;
use uuid::Uuid;

use crate::db_error::{Cause, cause};
use crate::sql::Dialect;
use crate::tables::Identifier;

/// What the database can tell about the transaction a statement runs in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Proof {
    /// PostgreSQL: the record's `xmin` is the running transaction's id.
    Postgres,
    /// MariaDB: `@@in_transaction`, and the record is seen.
    InTransaction,
    /// MySQL and SQLite: the record is seen. A transaction a DDL statement committed
    /// early passes unnoticed on MySQL, which has no `in_transaction`.
    Record,
}

impl Proof {
    /// The proof `db` allows. An unreachable database is an error: the answer is
    /// learned once, so it must not be guessed from an outage.
    pub(super) async fn learn(db: &DatabaseConnection) -> Result<Self, DbErr> {
        match db.get_database_backend() {
            DbBackend::Postgres => Ok(Proof::Postgres),
            DbBackend::MySql => {
                let probe =
                    Statement::from_string(DbBackend::MySql, "SELECT @@in_transaction".to_owned());
                match db.query_one_raw(probe).await {
                    Ok(_) => Ok(Proof::InTransaction),
                    Err(error) if cause(&error) == Cause::Unreachable => Err(error),
                    Err(error) => {
                        warn!(%error, "this server has no @@in_transaction (MySQL): a handler whose DDL statement commits the transaction early goes unnoticed; a swallowed deadlock is still caught");
                        Ok(Proof::Record)
                    }
                }
            }
            _ => Ok(Proof::Record),
        }
    }

    /// The statement that answers 1 when the running transaction holds `consumer`'s
    /// record of `event_id`.
    pub(super) fn statement(
        self,
        dialect: Dialect,
        table: &Identifier,
        consumer: &str,
        event_id: Uuid,
    ) -> Statement {
        dialect.holds_record(table, consumer, event_id, self == Proof::InTransaction)
    }
}
