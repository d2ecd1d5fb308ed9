//! The SQL the library runs, as statements for the connection's backend.
//!
//! Routine statements are built with sea-query over the entities' columns, the
//! configured table names and the row conditions of [`crate::schema`], so each column
//! name and predicate exists once and the builder speaks each backend's dialect
//! (placeholders, quoting, row locks). The few statements sea-query cannot say are
//! written by hand, each once, with the reason beside it.
//!
//! | file | holds |
//! |---|---|
//! | `mod.rs` | [`Dialect`], building statements, the types they share |
//! | `claim.rs`, `claim.sql`, `claim_mysql.sql`, `ready_shards.sql` | the claim and the idle poll (by hand) |
//! | `insert.rs` | the key-locking insert and the rows it writes (by hand) |
//! | `write_back.rs` | what a relay writes after publishing: fence, completion (mark, delete, archive), failures, parking |
//! | `leases.rs` | shard leases, relay membership, the offset table |
//! | `manage.rs` | listings, replay, cleanup and counts for the manual calls and the CLI |
//! | `inbox.rs` | the consumers' inbox: record, look up, forget; their dead letters |
//! | `backlog.sql`, `backlog_mysql.sql` | the backlog gauges' counts (by hand) |
//!
//! Every value is a bound parameter; table names are checked [`Identifier`]s.
//!
//! Hand-written statements are spelled once, the standard way: identifiers in double
//! quotes, parameters numbered `$1`, `$2`, ... (PostgreSQL and SQLite read both). For
//! MySQL and MariaDB, [`Dialect::hand_written`] respells them: backticks, and a `?` per
//! occurrence with the values repeated and reordered to match. The statements hold no
//! string literals, so every double quote is an identifier's.

mod claim;
mod fleet;
mod inbox;
mod insert;
mod leases;
mod manage;
mod write_back;

#[cfg(test)]
mod tests;

use chrono::{DateTime, Utc};
use sea_orm::StatementBuilder;
use sea_orm::sea_query::{Alias, Expr, Func, Query};
use sea_orm::{
    DatabaseConnection, DatabaseTransaction, DbBackend, IsolationLevel, Statement,
    TransactionTrait, Value,
};

use crate::error::{Error, Result};
use crate::tables::Identifier;

#[cfg(feature = "kafka")]
pub(crate) use inbox::DeadLetterRow;
pub(crate) use insert::EventRow;
pub(crate) use write_back::Published;

/// The SQL dialects the outbox speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    Postgres,
    Sqlite,
    /// MySQL 8 and MariaDB 10.6+ (InnoDB).
    MySql,
}

impl Dialect {
    pub(crate) fn of(backend: DbBackend) -> Result<Self> {
        match backend {
            DbBackend::Postgres => Ok(Dialect::Postgres),
            DbBackend::Sqlite => Ok(Dialect::Sqlite),
            DbBackend::MySql => Ok(Dialect::MySql),
            other => Err(Error::UnsupportedBackend {
                backend: format!("{other:?}"),
            }),
        }
    }

    fn backend(self) -> DbBackend {
        match self {
            Dialect::Postgres => DbBackend::Postgres,
            Dialect::Sqlite => DbBackend::Sqlite,
            Dialect::MySql => DbBackend::MySql,
        }
    }

    /// Begins a transaction on `db` for the relay's own writes: on MySQL at READ
    /// COMMITTED. Under InnoDB's REPEATABLE READ (MySQL's default) an UPDATE locks
    /// every row it scans, matching or not, and the gaps between them, so the write-
    /// backs of two shards that scan one index range (or the whole of a small table)
    /// wait for each other or deadlock, and a deadlock loses the loser's failure
    /// record. At READ COMMITTED InnoDB locks only the rows a statement changes and
    /// takes no gap locks (which would also hold up concurrent stores). The relay's
    /// statements need no snapshot: each reads what it locks.
    pub(crate) async fn begin(self, db: &DatabaseConnection) -> Result<DatabaseTransaction> {
        Ok(match self {
            Dialect::MySql => {
                db.begin_with_config(Some(IsolationLevel::ReadCommitted), None)
                    .await?
            }
            Dialect::Postgres | Dialect::Sqlite => db.begin().await?,
        })
    }

    /// Begins a transaction on `conn` for an operator's change (replay, a recorded
    /// failure): on MySQL at READ COMMITTED, as [`begin`](Self::begin) does for the
    /// relay, so that its updates take no gap locks for the writers' inserts to wait
    /// for (under REPEATABLE READ a replay's update of the `dead` index deadlocked with
    /// concurrent stores). When `conn` is a transaction already (MySQL refuses to set
    /// the level inside one), a savepoint of it at its own level.
    pub(crate) async fn begin_on<C: TransactionTrait>(self, conn: &C) -> Result<C::Transaction> {
        if self == Dialect::MySql
            && let Ok(txn) = conn
                .begin_with_config(Some(IsolationLevel::ReadCommitted), None)
                .await
        {
            return Ok(txn);
        }
        Ok(conn.begin().await?)
    }

    /// `statement` in this dialect, its values bound.
    fn build(self, statement: &impl StatementBuilder) -> Statement {
        self.backend().build(statement)
    }

    /// A hand-written statement with its values bound to `$1`, `$2`, ..., respelled
    /// for MySQL (see the module's docs).
    fn hand_written(self, sql: String, values: impl IntoIterator<Item = Value>) -> Statement {
        match self {
            Dialect::Postgres | Dialect::Sqlite => {
                Statement::from_sql_and_values(self.backend(), sql, values)
            }
            Dialect::MySql => {
                let (sql, values) = respell_for_mysql(&sql, values.into_iter().collect());
                Statement::from_sql_and_values(self.backend(), sql, values)
            }
        }
    }

    /// The moment the current statement started, by the database's clock, where relays
    /// on several hosts share it (PostgreSQL, MySQL); `None` on SQLite. One value for
    /// every row, and no later than the statement's snapshot: a row the statement
    /// does not see committed after it. (PostgreSQL's `clock_timestamp()` is read row
    /// by row, as late as a lock the statement waited for was released.)
    pub(crate) fn statement_time(self) -> Option<Expr> {
        match self {
            Dialect::Postgres => Some(Func::cust("statement_timestamp").into()),
            // Read once, as the statement starts; the UTC time, with microseconds (the
            // column types hold no time zone).
            Dialect::MySql => Some(Expr::cust("UTC_TIMESTAMP(6)")),
            Dialect::Sqlite => None,
        }
    }

    /// The database's time, read as a [`DatabaseNow`] row where relays on several
    /// hosts share it (PostgreSQL, MySQL); `None` on SQLite, whose time is the host's.
    pub(crate) fn database_now(self) -> Option<Statement> {
        let now: Expr = match self {
            Dialect::Postgres => Func::cust("clock_timestamp").into(),
            // The UTC time, with microseconds; the column types hold no time zone.
            Dialect::MySql => Expr::cust("UTC_TIMESTAMP(6)"),
            Dialect::Sqlite => return None,
        };
        Some(self.build(Query::select().expr_as(now, "now")))
    }
}

/// The row of [`Dialect::database_now`].
#[derive(Debug, sea_orm::FromQueryResult)]
pub(crate) struct DatabaseNow {
    pub(crate) now: chrono::DateTime<chrono::Utc>,
}

/// The text of a hand-written statement (a `.sql` file beside this one). Its leading
/// `--` comment lines explain it and are not sent; `{outbox}` stands for the outbox
/// table's name and `{shards}` for a list of shard numbers.
#[derive(Debug, Clone, Copy)]
struct HandWritten(&'static str);

impl HandWritten {
    /// The statement over `table`.
    fn on(self, table: &Identifier) -> String {
        self.body().replace("{outbox}", &table.quoted())
    }

    /// The statement over `table` and the rows of `shards`, a one-column table: a
    /// `VALUES` list, or on MySQL (whose `VALUES` rows are spelled `ROW(..)`, unlike
    /// MariaDB's) a `UNION ALL` of selects, which both read.
    fn on_shards(
        self,
        dialect: Dialect,
        table: &Identifier,
        shards: impl IntoIterator<Item = i32>,
    ) -> String {
        let shards = shards.into_iter();
        let rows = match dialect {
            Dialect::Postgres | Dialect::Sqlite => {
                let rows: Vec<String> = shards.map(|shard| format!("({shard})")).collect();
                format!("VALUES {}", rows.join(", "))
            }
            Dialect::MySql => {
                let rows: Vec<String> = shards.map(|shard| format!("SELECT {shard}")).collect();
                rows.join(" UNION ALL ")
            }
        };
        self.on(table).replace("{shards}", &rows)
    }

    /// The SQL after the leading comment lines.
    fn body(self) -> &'static str {
        let mut rest = self.0;
        while rest.starts_with("--") {
            rest = rest.split_once('\n').map_or("", |(_, after)| after);
        }
        rest.trim()
    }
}

/// `sql` with ANSI quotes and numbered parameters, respelled for MySQL: backticks, and
/// one `?` per occurrence of `$n`, with `values` in the order of the occurrences.
fn respell_for_mysql(sql: &str, values: Vec<Value>) -> (String, Vec<Value>) {
    let mut out = String::with_capacity(sql.len());
    let mut bound = Vec::with_capacity(values.len());
    let mut chars = sql.char_indices().peekable();
    while let Some((at, c)) = chars.next() {
        match c {
            '"' => out.push('`'),
            '$' => {
                let mut end = at + 1;
                while let Some(&(i, d)) = chars.peek()
                    && d.is_ascii_digit()
                {
                    end = i + 1;
                    chars.next();
                }
                let n: usize = sql[at + 1..end]
                    .parse()
                    .expect("a hand-written statement's `$` begins a numbered parameter");
                bound.push(values[n - 1].clone());
                out.push('?');
            }
            c => out.push(c),
        }
    }
    (out, bound)
}

/// A configured table name, for sea-query.
fn table(name: &Identifier) -> Alias {
    Alias::new(name.as_str())
}

/// A row count for `LIMIT`, within the signed 64-bit integer it is bound as.
fn limit(n: u64) -> u64 {
    n.min(i64::MAX.unsigned_abs())
}

/// Identifies a shard lease.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LeaseKey<'a> {
    pub(crate) service: &'a str,
    pub(crate) shard: i32,
    pub(crate) owner: &'a str,
}

/// Which unpublished events a listing shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unpublished {
    /// Waiting to be published (parked and waiting for a retry included).
    Pending,
    /// Dead-lettered and not replayed.
    DeadLettered,
}

/// The new state of an event after a failed attempt.
#[derive(Debug)]
pub(crate) struct FailureUpdate<'a> {
    pub(crate) attempts: i32,
    pub(crate) error: &'a str,
    pub(crate) now: DateTime<Utc>,
    pub(crate) next_attempt_at: Option<DateTime<Utc>>,
    pub(crate) dead_lettered_at: Option<DateTime<Utc>>,
}
