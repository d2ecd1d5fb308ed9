//! The reconciler: keeps one member task per database of this process's share,
//! following the source's list and the fleet's members.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use super::member::Member;
use super::membership::Membership;
use super::share;
use super::source::{DatabaseEntry, DatabaseSource};
use crate::publisher::Publisher;

/// Keeps one member task per database the source lists.
pub(super) struct Reconciler<S, P> {
    pub(super) source: S,
    pub(super) member: Arc<Member<P>>,
    pub(super) membership: Membership,
    /// The coordinator's name, when set.
    pub(super) coordinator: Option<String>,
    /// The live members last read from the coordinator, and when.
    pub(super) view: Option<(Instant, Vec<String>)>,
    /// How long a view is trusted while the coordinator cannot be read.
    pub(super) ttl: Duration,
    /// Whether it said that it serves every database for want of a view.
    pub(super) said_alone: bool,
    pub(super) every: Duration,
    pub(super) refresh: Arc<Notify>,
    pub(super) tracker: TaskTracker,
    pub(super) running: BTreeMap<String, Running>,
}

/// A database being served: what it was started from, and how to stop it.
pub(super) struct Running {
    entry: DatabaseEntry,
    cancel: CancellationToken,
    done: tokio::task::JoinHandle<()>,
}

impl<S: DatabaseSource, P: Publisher + Clone> Reconciler<S, P> {
    pub(super) async fn run(mut self, cancel: CancellationToken) {
        loop {
            match self.source.databases().await {
                Ok(entries) => {
                    self.member.shared.source_read(None);
                    let members = self.members(&entries).await;
                    let mut names: Vec<&str> = entries.iter().map(DatabaseEntry::name).collect();
                    names.sort_unstable();
                    let mine: Vec<String> =
                        share::share(&names, &members, self.membership.member_id())
                            .into_iter()
                            .map(str::to_owned)
                            .collect();
                    self.member
                        .shared
                        .shared(members.len().max(1), entries.len());
                    let entries = entries
                        .into_iter()
                        .filter(|entry| mine.iter().any(|name| name == entry.name()))
                        .collect();
                    self.apply(entries).await;
                }
                Err(error) => {
                    warn!(%error, "cannot read the databases; serving the last list read");
                    self.member.shared.source_read(Some(error.to_string()));
                }
            }
            tokio::select! {
                () = cancel.cancelled() => break,
                () = tokio::time::sleep(self.every) => {}
                () = self.refresh.notified() => {}
            }
        }
        stop(std::mem::take(&mut self.running).into_values().collect()).await;
        self.membership.leave().await;
    }

    /// The live members of the fleet, from the coordinator among `entries`; the last
    /// ones read while it cannot be reached, for a time to live; then none, and this
    /// member serves every database (the shard leases keep that safe) until it can.
    async fn members(&mut self, entries: &[DatabaseEntry]) -> Vec<String> {
        let coordinator = match &self.coordinator {
            Some(name) => entries.iter().find(|entry| entry.name() == name),
            None => entries.iter().min_by(|a, b| a.name().cmp(b.name())),
        };
        let Some(coordinator) = coordinator else {
            if !entries.is_empty() {
                warn!(coordinator = ?self.coordinator, "the fleet's coordinator is not in the list of databases: serving them all");
            }
            return Vec::new();
        };
        match self.membership.round(coordinator).await {
            Ok(members) => {
                let changed = self.view.as_ref().is_none_or(|(_, seen)| *seen != members);
                if changed {
                    info!(members = members.len(), member = %self.membership.member_id(), "fleet members");
                }
                self.view = Some((Instant::now(), members.clone()));
                self.said_alone = false;
                members
            }
            Err(error) => match &self.view {
                Some((seen, members)) if seen.elapsed() < self.ttl => members.clone(),
                view => {
                    // Said once per outage, not at every refresh.
                    if view.is_some() || !self.said_alone {
                        warn!(%error, "cannot read the fleet's members: serving every database until the coordinator is back");
                    }
                    self.view = None;
                    self.said_alone = true;
                    Vec::new()
                }
            },
        }
    }

    /// Starts the databases that are new or changed, stops those gone or changed.
    async fn apply(&mut self, entries: Vec<DatabaseEntry>) {
        let wanted: BTreeMap<String, DatabaseEntry> = entries
            .into_iter()
            .map(|entry| (entry.name().to_owned(), entry))
            .collect();
        let stale: Vec<String> = self
            .running
            .iter()
            .filter(|(name, running)| wanted.get(*name) != Some(&running.entry))
            .map(|(name, _)| name.clone())
            .collect();
        let stopping = stale
            .iter()
            .filter_map(|name| self.running.remove(name))
            .collect();
        stop(stopping).await;
        for name in stale.iter().filter(|name| !wanted.contains_key(*name)) {
            self.member.shared.forget(name);
            info!(database = %name, "database released");
        }
        for (name, entry) in wanted {
            if self.running.contains_key(&name) {
                continue;
            }
            info!(database = %name, "serving database");
            let cancel = CancellationToken::new();
            let member = Arc::clone(&self.member);
            let done = self
                .tracker
                .spawn(member.serve(entry.clone(), cancel.clone()));
            self.running.insert(
                name,
                Running {
                    entry,
                    cancel,
                    done,
                },
            );
        }
    }
}

/// Stops serving `databases`, all at once, and waits until each is let go (its relay
/// shut down within its shutdown timeout, its connections closed).
async fn stop(databases: Vec<Running>) {
    for running in &databases {
        running.cancel.cancel();
    }
    for running in databases {
        if let Err(error) = running.done.await {
            warn!(database = %running.entry.name(), %error, "serving the database ended in a panic");
        }
    }
}
