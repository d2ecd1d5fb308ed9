//! [`Completion`]: what becomes of an event's row once it is published.

use std::fmt;
use std::str::FromStr;

/// What becomes of an event's row once it is published: set with
/// [`Outbox::with_completion`](crate::Outbox::with_completion), or for a relay built
/// from its configuration with `RelayConfig::completion` (`OUTBOX_COMPLETION`).
///
/// | mode | the published row | costs per event | history |
/// |---|---|---|---|
/// | [`Mark`](Completion::Mark) (default) | stays in `_outbox`, `published = true`, until cleanup | a new row version and an entry in five indexes | in `_outbox` for `cleanup_after_days` |
/// | [`Delete`](Completion::Delete) | is deleted | a deleted row version | none |
/// | [`Archive`](Completion::Archive) | moves to `<base>_published` | a deleted row version, the row written again with two index entries | in `<base>_published` for `cleanup_after_days` |
///
/// Measured (`outbox-bench relay`, PostgreSQL, 1 KiB events): the relay's database
/// work alone runs about 2x as fast deleting as marking, and 1.2-1.3x archiving.
///
/// Every guarantee holds in every mode: the write-back is fenced by the shard's lease
/// in one statement (on SQLite, archiving is two statements in one transaction), a
/// key's events go out in commit order, and failed, parked and dead-lettered events
/// stay in `_outbox` as they are until they are published (or, dead letters, purged),
/// whatever the mode. Only what happens to a published row differs:
///
/// - [`Outbox::mark_events_as_published`](crate::Outbox::mark_events_as_published)
///   completes the events the same way;
/// - [`Outbox::event`](crate::Outbox::event) finds an archived event in the archive, a
///   deleted one nowhere ([`Error::NotFound`](crate::Error::NotFound));
/// - cleanup deletes expired published rows of `_outbox` in every mode (rows marked
///   before a switch of mode), and in `Archive` mode the expired rows of the archive;
/// - `_outbox_offset` names the last event the service published in every mode; in
///   `Delete` mode that row no longer exists, in `Archive` mode it is in the archive.
///
/// Every writer, relay and tool of one outbox table should use the same mode; the
/// modes can be switched at any time, as rows of each state are valid in all of them.
/// `Archive` needs the archive table, which the migrations create.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Completion {
    /// Marks the row published (`published`, `published_at`) and keeps it until the
    /// retention ends.
    #[default]
    Mark,
    /// Deletes the row: no history, and the cheapest write-back (as Debezium users
    /// who delete right after the insert).
    Delete,
    /// Moves the row to the archive table `<base>_published` (see
    /// [`Tables::archive`](crate::Tables::archive)), published, in the statement that
    /// deletes it from `_outbox`.
    Archive,
}

impl Completion {
    /// The mode's name, as `OUTBOX_COMPLETION` spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Completion::Mark => "mark",
            Completion::Delete => "delete",
            Completion::Archive => "archive",
        }
    }
}

impl fmt::Display for Completion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A string that is not a completion mode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown completion mode {0:?}: expected mark, delete or archive")]
pub struct UnknownCompletion(String);

impl FromStr for Completion {
    type Err = UnknownCompletion;

    /// `mark`, `delete` or `archive`, in any case.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "mark" => Ok(Completion::Mark),
            "delete" => Ok(Completion::Delete),
            "archive" => Ok(Completion::Archive),
            _ => Err(UnknownCompletion(s.to_owned())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_mode_and_names_the_modes_when_it_cannot() {
        for mode in [Completion::Mark, Completion::Delete, Completion::Archive] {
            assert_eq!(mode.as_str().parse(), Ok(mode));
            assert_eq!(mode.as_str().to_uppercase().parse(), Ok(mode));
        }
        let error = "purge".parse::<Completion>().expect_err("not a mode");
        assert_eq!(
            error.to_string(),
            "unknown completion mode \"purge\": expected mark, delete or archive"
        );
    }
}
