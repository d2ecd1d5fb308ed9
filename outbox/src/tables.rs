//! The names of the outbox tables, accepted only as safe SQL identifiers.

use std::fmt;

use crate::error::{Error, Result};

/// The longest base name accepted. PostgreSQL truncates identifiers at 63 bytes; the
/// limit leaves room for the suffixes of the derived table and index names.
pub const MAX_BASE_NAME_LEN: usize = 40;
const BASE_NAME_TOO_LONG: &str = "a base table name may have at most 40 characters";
const _: () = assert!(MAX_BASE_NAME_LEN == 40, "update BASE_NAME_TOO_LONG");

/// How many rows MySQL's key lock table ([`Tables::key_lock`]) holds, numbered from 0.
/// A store locks row `lock_id % KEY_LOCKS` of each of its keys; two keys that share a
/// row only wait for each other's stores, as two stores of one key do.
pub const KEY_LOCKS: i32 = 65_536;

/// A SQL identifier known to be safe to use unquoted or quoted: an ASCII letter or `_`
/// first, then ASCII letters, digits or `_`. Names are never interpolated unchecked.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Identifier(String);

impl Identifier {
    /// Checks `name`.
    ///
    /// # Errors
    /// [`Error::InvalidIdentifier`] naming the value and what is wrong with it.
    pub fn new(name: impl Into<String>) -> Result<Self> {
        let name = name.into();
        let invalid = |reason| {
            Err(Error::InvalidIdentifier {
                name: name.clone(),
                reason,
            })
        };
        let mut chars = name.chars();
        match chars.next() {
            None => return invalid("it is empty"),
            Some(first) if !(first.is_ascii_alphabetic() || first == '_') => {
                return invalid("it must start with an ASCII letter or `_`");
            }
            Some(_) => {}
        }
        if !chars.all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return invalid("only ASCII letters, digits and `_` are allowed");
        }
        if name.len() > 63 {
            return invalid("it is longer than 63 characters");
        }
        Ok(Identifier(name))
    }

    /// The identifier as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The identifier in double quotes, for SQL text. Safe because of the checks in
    /// [`Identifier::new`].
    pub fn quoted(&self) -> String {
        format!("\"{}\"", self.0)
    }
}

impl fmt::Display for Identifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The names of the outbox tables.
///
/// The defaults are `_outbox` (the events), `_outbox_offset`, `_outbox_lease`
/// (which relay owns which shard), `_outbox_relay` (which relays are alive) and
/// `_outbox_published` (the archive of published events, for
/// [`Completion::Archive`](crate::Completion::Archive)), `_outbox_inbox` (the events
/// each consumer processed, for [`Inbox`](crate::Inbox)), `_outbox_inbox_dead` (the
/// messages a [`Consumer`](crate::Consumer) gave up on), `_outbox_fleet` (the live
/// members of relay fleets), `_outbox_scheduled` (events waiting for their due time)
/// and, on MySQL, `_outbox_key_lock`. A service that wants its own set uses [`Tables::with_base`]:
///
/// ```
/// let tables = outbox::Tables::with_base("billing_outbox")?;
/// assert_eq!(tables.outbox().as_str(), "billing_outbox");
/// assert_eq!(tables.offset().as_str(), "billing_outbox_offset");
/// assert!(outbox::Tables::with_base("outbox; DROP TABLE users").is_err());
/// # Ok::<(), outbox::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Tables {
    outbox: Identifier,
    offset: Identifier,
    lease: Identifier,
    relay: Identifier,
    archive: Identifier,
    key_lock: Identifier,
    inbox: Identifier,
    inbox_dead: Identifier,
    fleet: Identifier,
    scheduled: Identifier,
}

impl Tables {
    /// Names the tables `{base}`, `{base}_offset`, `{base}_lease`, `{base}_relay`,
    /// `{base}_published`, `{base}_inbox`, `{base}_inbox_dead`, `{base}_fleet`,
    /// `{base}_scheduled` and (on MySQL) `{base}_key_lock`.
    ///
    /// # Errors
    /// [`Error::InvalidIdentifier`] when `base` is not a safe identifier or is longer
    /// than [`MAX_BASE_NAME_LEN`].
    pub fn with_base(base: &str) -> Result<Self> {
        let outbox = Identifier::new(base)?;
        if base.len() > MAX_BASE_NAME_LEN {
            return Err(Error::InvalidIdentifier {
                name: base.to_owned(),
                reason: BASE_NAME_TOO_LONG,
            });
        }
        Ok(Tables {
            offset: Identifier::new(format!("{base}_offset"))?,
            lease: Identifier::new(format!("{base}_lease"))?,
            relay: Identifier::new(format!("{base}_relay"))?,
            archive: Identifier::new(format!("{base}_published"))?,
            key_lock: Identifier::new(format!("{base}_key_lock"))?,
            inbox: Identifier::new(format!("{base}_inbox"))?,
            inbox_dead: Identifier::new(format!("{base}_inbox_dead"))?,
            fleet: Identifier::new(format!("{base}_fleet"))?,
            scheduled: Identifier::new(format!("{base}_scheduled"))?,
            outbox,
        })
    }

    /// The events table (`_outbox` by default).
    pub fn outbox(&self) -> &Identifier {
        &self.outbox
    }

    /// The per-service progress table (`_outbox_offset` by default).
    pub fn offset(&self) -> &Identifier {
        &self.offset
    }

    /// The shard lease table (`_outbox_lease` by default).
    pub fn lease(&self) -> &Identifier {
        &self.lease
    }

    /// The relay membership table (`_outbox_relay` by default).
    pub fn relay(&self) -> &Identifier {
        &self.relay
    }

    /// The archive of published events (`_outbox_published` by default), where
    /// [`Completion::Archive`](crate::Completion::Archive) moves them.
    pub fn archive(&self) -> &Identifier {
        &self.archive
    }

    /// MySQL's table of key locks (`_outbox_key_lock` by default): stores of one key
    /// lock one of its rows until their transaction ends, so that for each key `seq`
    /// order is commit order. Only the MySQL migrations create it.
    pub fn key_lock(&self) -> &Identifier {
        &self.key_lock
    }

    /// The consumers' record of the events they processed (`_outbox_inbox` by
    /// default), for [`Inbox`](crate::Inbox).
    pub fn inbox(&self) -> &Identifier {
        &self.inbox
    }

    /// The messages consumers gave up on (`_outbox_inbox_dead` by default), for
    /// [`Consumer`](crate::Consumer)'s dead letters.
    pub fn inbox_dead(&self) -> &Identifier {
        &self.inbox_dead
    }

    /// The live members of relay fleets (`_outbox_fleet` by default), in a fleet's
    /// coordinator database ([`fleet`](crate::fleet)).
    pub fn fleet(&self) -> &Identifier {
        &self.fleet
    }

    /// The events waiting for their due time (`_outbox_scheduled` by default): stored
    /// with [`Store::deliver_at`](crate::Store::deliver_at) or
    /// [`Store::delay`](crate::Store::delay), moved into the outbox table by a relay
    /// when due.
    pub fn scheduled(&self) -> &Identifier {
        &self.scheduled
    }

    /// The name of one of this set's indexes, e.g. `idx__outbox_claim`.
    pub fn index(&self, table: &Identifier, suffix: &str) -> String {
        format!("idx_{table}_{suffix}")
    }
}

impl Default for Tables {
    fn default() -> Self {
        Tables {
            outbox: Identifier("_outbox".to_owned()),
            offset: Identifier("_outbox_offset".to_owned()),
            lease: Identifier("_outbox_lease".to_owned()),
            relay: Identifier("_outbox_relay".to_owned()),
            archive: Identifier("_outbox_published".to_owned()),
            key_lock: Identifier("_outbox_key_lock".to_owned()),
            inbox: Identifier("_outbox_inbox".to_owned()),
            inbox_dead: Identifier("_outbox_inbox_dead".to_owned()),
            fleet: Identifier("_outbox_fleet".to_owned()),
            scheduled: Identifier("_outbox_scheduled".to_owned()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_plain_identifiers() {
        for name in ["_outbox", "orders_outbox", "Outbox2", "x"] {
            assert_eq!(
                Identifier::new(name).map(|i| i.0).ok().as_deref(),
                Some(name)
            );
        }
    }

    #[test]
    fn rejects_unsafe_identifiers_with_the_reason() {
        for (name, reason) in [
            ("", "it is empty"),
            ("1outbox", "it must start with an ASCII letter or `_`"),
            ("out box", "only ASCII letters, digits and `_` are allowed"),
            ("out\"box", "only ASCII letters, digits and `_` are allowed"),
            (
                "outbox;drop",
                "only ASCII letters, digits and `_` are allowed",
            ),
            (
                "schema.outbox",
                "only ASCII letters, digits and `_` are allowed",
            ),
            ("ôutbox", "it must start with an ASCII letter or `_`"),
        ] {
            match Identifier::new(name) {
                Err(Error::InvalidIdentifier { name: n, reason: r }) => {
                    assert_eq!((n.as_str(), r), (name, reason));
                }
                other => panic!("{name:?} was not rejected: {other:?}"),
            }
        }
    }

    #[test]
    fn base_names_derive_the_other_tables() {
        let tables = Tables::with_base("billing").expect("valid base");
        assert_eq!(tables.lease().as_str(), "billing_lease");
        assert_eq!(tables.index(tables.outbox(), "claim"), "idx_billing_claim");
        let long = "a".repeat(MAX_BASE_NAME_LEN + 1);
        assert!(matches!(
            Tables::with_base(&long),
            Err(Error::InvalidIdentifier { .. })
        ));
    }
}
