//! What a database error says about its cause: the database away, a conflict that
//! goes away when tried again, or a refusal of what was asked. Read from the error's
//! SQLSTATE (PostgreSQL, MySQL and MariaDB) or result code (SQLite), so it does not
//! depend on the server's language.

use std::error::Error as StdError;

use sea_orm::DbErr;

/// The cause of a failed statement, as far as its error tells.
#[cfg_attr(
    not(any(feature = "postgres", feature = "mysql", feature = "sqlite")),
    allow(dead_code)
)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cause {
    /// The database could not be reached, or is going away (a lost connection, an
    /// exhausted pool, a server shutting down or in recovery).
    Unreachable,
    /// A deadlock or a serialization failure: the same work usually succeeds when
    /// tried again.
    Transient,
    /// The database refused the work: a constraint, a trigger's raised error, bad
    /// data. Trying again gives the same answer.
    Refused,
}

/// The cause of `error`: of the first [`DbErr`] in its chain (an
/// [`Error::Db`](crate::Error::Db) included), or [`Cause::Refused`] when there is
/// none or it says nothing more.
pub(crate) fn cause_of(error: &(dyn StdError + 'static)) -> Cause {
    let mut next = Some(error);
    while let Some(error) = next {
        if let Some(db) = error.downcast_ref::<DbErr>() {
            return cause(db);
        }
        if let Some(crate::error::Error::Db(db)) = error.downcast_ref::<crate::error::Error>() {
            return cause(db);
        }
        next = error.source();
    }
    Cause::Refused
}

/// The cause of a SeaORM error.
pub(crate) fn cause(error: &DbErr) -> Cause {
    match error {
        DbErr::ConnectionAcquire(_) | DbErr::Conn(_) => Cause::Unreachable,
        DbErr::Exec(runtime) | DbErr::Query(runtime) => runtime_cause(runtime),
        _ => Cause::Refused,
    }
}

#[cfg(any(feature = "postgres", feature = "mysql", feature = "sqlite"))]
fn runtime_cause(error: &sea_orm::RuntimeErr) -> Cause {
    use sea_orm::sqlx::Error as Sqlx;
    let sea_orm::RuntimeErr::SqlxError(error) = error else {
        return Cause::Refused;
    };
    match &**error {
        Sqlx::Io(_)
        | Sqlx::Tls(_)
        | Sqlx::Protocol(_)
        | Sqlx::PoolTimedOut
        | Sqlx::PoolClosed
        | Sqlx::WorkerCrashed => Cause::Unreachable,
        Sqlx::Database(error) => error
            .code()
            .map_or(Cause::Refused, |code| code_cause(&code)),
        _ => Cause::Refused,
    }
}

#[cfg(not(any(feature = "postgres", feature = "mysql", feature = "sqlite")))]
fn runtime_cause(_error: &sea_orm::RuntimeErr) -> Cause {
    Cause::Refused
}

/// The cause an error code names: a five-character SQLSTATE, or SQLite's (extended)
/// result code as a number of up to four digits.
#[cfg_attr(
    not(any(feature = "postgres", feature = "mysql", feature = "sqlite")),
    allow(dead_code)
)]
pub(crate) fn code_cause(code: &str) -> Cause {
    // SQLite's codes have at most four digits; a SQLSTATE has five characters, all
    // digits in many (40001, 23505).
    if let Ok(sqlite) = code.parse::<u32>()
        && code.len() < 5
    {
        // SQLITE_BUSY (5) and SQLITE_LOCKED (6) with their extended codes.
        return match sqlite & 0xff {
            5 | 6 => Cause::Transient,
            _ => Cause::Refused,
        };
    }
    match code {
        // 40001: serialization failure (MySQL and MariaDB report a deadlock so);
        // 40P01: PostgreSQL's deadlock.
        "40001" | "40P01" => Cause::Transient,
        // Class 08: connection exceptions; 57P01-57P05: the server shutting down,
        // crashed, starting up, or the connection idle too long; 53300: too many
        // connections; 25006: a read-only transaction (a standby after a failover).
        _ if code.starts_with("08") => Cause::Unreachable,
        "57P01" | "57P02" | "57P03" | "57P05" | "53300" | "25006" => Cause::Unreachable,
        _ => Cause::Refused,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_name_their_cause() {
        for (code, expected) in [
            ("40P01", Cause::Transient),
            ("40001", Cause::Transient),
            ("5", Cause::Transient),
            ("517", Cause::Transient), // SQLITE_BUSY_SNAPSHOT
            ("08006", Cause::Unreachable),
            ("57P01", Cause::Unreachable),
            ("23505", Cause::Refused),
            ("P0001", Cause::Refused),
            ("45000", Cause::Refused), // MySQL's SIGNAL
            ("2067", Cause::Refused),  // SQLITE_CONSTRAINT_UNIQUE
            ("22021", Cause::Refused),
        ] {
            assert_eq!(code_cause(code), expected, "{code}");
        }
    }

    #[test]
    fn a_lost_connection_is_unreachable_wherever_it_is_in_the_chain() {
        let error = crate::Error::Db(DbErr::ConnectionAcquire(
            sea_orm::error::ConnAcquireErr::Timeout,
        ));
        assert_eq!(cause_of(&error), Cause::Unreachable);
        assert_eq!(cause_of(&std::io::Error::other("x")), Cause::Refused);
    }
}
