//! Waking relays when events are stored: in this process at once, and on PostgreSQL
//! across processes, by a `NOTIFY` that relays `LISTEN` for.
//!
//! The cross-process notification is sent **outside** the caller's transaction, on a
//! connection of its own, by a background task: PostgreSQL serialises the commits of
//! transactions that sent `NOTIFY` (one lock for the whole database at commit), so a
//! `NOTIFY` inside the caller's transaction would slow every writer down (the store
//! benchmark measures it). The price is that the notification may arrive before the
//! caller commits; the relay then polls quickly for a while (10 ms, 20 ms, 40 ms...
//! from `OUTBOX_MIN_POLL_INTERVAL`), which finds the event once it is visible.
//!
//! Bursts are coalesced: one `NOTIFY` names every shard stored to since the last one,
//! and at most one is sent every [`COALESCE`]. Its payload is the list of shards
//! (`"3,7,12"`), so a relay that owns none of them does not poll; an empty payload
//! wakes every relay.
//!
//! Relays also tell each other when one gives shards up (to a newcomer, on shutdown,
//! or standing aside while the broker is away): the others run a lease round at once
//! and take them, instead of at their next round, up to a third of the lease time
//! later, while events stored to those shards wait. In this process through the
//! doorbells, across processes by a `NOTIFY` with the payload [`RELEASED`].

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, OnceLock, PoisonError, Weak};
use std::time::Duration;

use sea_orm::{ConnectionTrait, DatabaseBackend, DatabaseConnection, Statement};
use tokio::sync::{Notify, mpsc};
use tracing::debug;

use crate::tables::Tables;

/// At most one cross-process notification per this interval, per process.
pub(crate) const COALESCE: Duration = Duration::from_millis(2);

/// A commit wakes the relays for the shards stored to since this many commits.
const GENERATIONS: usize = 4;

/// PostgreSQL's limit on a notification's payload is 8000 bytes; above this, wake
/// every relay instead of naming shards.
const MAX_PAYLOAD: usize = 4000;

/// The notification a relay sends when it gave shards up: this, then the relay's id.
/// A relay that does not know this form reads no shards in it, and polls every shard
/// it owns: harmless.
const RELEASED: &str = "released by ";

/// The payload of the notification that relay `relay` gave shards up.
pub(crate) fn released_payload(relay: &str) -> String {
    format!("{RELEASED}{relay}")
}

/// The relay a notification's payload says gave shards up, if it says so.
#[cfg(feature = "postgres")] // read by the listener only
pub(crate) fn released_by(payload: &str) -> Option<&str> {
    payload.strip_prefix(RELEASED)
}

/// The notification a store sends when it scheduled events (see
/// [`Wake::scheduled`]): the relays read the next due time again. A relay of an
/// older version reads no shards in it, and polls every shard it owns: harmless.
const SCHEDULED: &str = "scheduled";

/// Whether a notification's payload says events were scheduled.
#[cfg(feature = "postgres")]
pub(crate) fn is_scheduled(payload: &str) -> bool {
    payload == SCHEDULED
}

/// The notification a relay sends itself to check that its listening connection
/// hears: this, then the relay's id. Other relays ignore it (one of an older version
/// reads no shards in it, and polls once: harmless).
#[cfg(feature = "postgres")]
const PROBE: &str = "probe by ";

/// The payload of relay `relay`'s probe.
#[cfg(feature = "postgres")]
pub(crate) fn probe_payload(relay: &str) -> String {
    format!("{PROBE}{relay}")
}

/// The relay whose probe a notification's payload is, if it is one.
#[cfg(feature = "postgres")]
pub(crate) fn probed_by(payload: &str) -> Option<&str> {
    payload.strip_prefix(PROBE)
}

/// The wake-up signals of one outbox (shared by its clones).
#[derive(Debug, Default)]
pub(crate) struct Wake {
    /// Relays of this process built with a clone of the outbox.
    local: Mutex<Vec<Weak<Doorbell>>>,
    /// Relays of every process, through PostgreSQL; set once.
    remote: OnceLock<Notifier>,
    /// Shards stored to since the last commit, and between each of the commits
    /// before it (see [`committed`](Self::committed)).
    recent: Mutex<[BTreeSet<i32>; GENERATIONS]>,
    /// Events with a due time were stored: the relays of this process read the next
    /// due time again.
    scheduled: tokio::sync::Notify,
}

impl Wake {
    /// Events with a due time were stored: the relays of this process, and of others
    /// through PostgreSQL, read the next due time again.
    pub(crate) fn scheduled(&self) {
        self.scheduled_heard();
        if let Some(notifier) = self.remote.get() {
            notifier.ring_scheduled();
        }
    }

    /// Another process scheduled events (a relay's listening connection heard it):
    /// the relays of this process read the next due time again.
    pub(crate) fn scheduled_heard(&self) {
        self.scheduled.notify_waiters();
    }

    /// Ends when [`scheduled`](Self::scheduled) is called after this was enabled.
    pub(crate) fn scheduled_stored(&self) -> tokio::sync::futures::Notified<'_> {
        self.scheduled.notified()
    }

    /// Events were stored to `shards`: wake the relays.
    pub(crate) fn stored(&self, shards: impl IntoIterator<Item = i32>) {
        let shards: Vec<i32> = shards.into_iter().collect();
        self.recent()[0].extend(shards.iter().copied());
        self.ring(&shards);
    }

    /// A transaction that stored through this outbox committed: wake the relays for
    /// the shards stored to since the [`GENERATIONS`]th commit before. The committing
    /// transaction stored to them unless as many other commits came between its store
    /// and its own; the relays then find its events by the quick polls that follow
    /// the store's wake-up. (Waking every shard instead made every relay claim every
    /// shard it owns at each commit.)
    pub(crate) fn committed(&self) {
        let shards: Vec<i32> = {
            let mut recent = self.recent();
            recent.rotate_right(1);
            let shards: BTreeSet<i32> = recent.iter().flatten().copied().collect();
            recent[0].clear();
            shards.into_iter().collect()
        };
        if !shards.is_empty() {
            self.ring(&shards);
        }
    }

    /// Events went into the outbox to `shards` in a transaction that has committed,
    /// not through a store (a relay moved due events): wake the relays of this
    /// process. No commit will follow to wake them again, and the relays of other
    /// processes are the caller's to tell (see [`send_notify`]).
    pub(crate) fn committed_to(&self, shards: impl IntoIterator<Item = i32> + Clone) {
        self.ring_local(|doorbell| doorbell.ring(shards.clone()));
    }

    fn ring(&self, shards: &[i32]) {
        self.ring_local(|doorbell| doorbell.ring(shards.iter().copied()));
        if let Some(notifier) = self.remote.get() {
            notifier.ring(shards.iter().copied());
        }
    }

    fn recent(&self) -> std::sync::MutexGuard<'_, [BTreeSet<i32>; GENERATIONS]> {
        self.recent.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Wake every relay, whatever it owns.
    pub(crate) fn ring_all(&self) {
        self.ring_local(|doorbell| doorbell.ring_all());
        if let Some(notifier) = self.remote.get() {
            notifier.ring_all();
        }
    }

    /// The relay of doorbell `by` gave shards up: the other relays of this process run
    /// a lease round now.
    pub(crate) fn announce_release(&self, by: &Doorbell) {
        self.ring_local(|doorbell| {
            if !std::ptr::eq(doorbell, by) {
                doorbell.hear_release();
            }
        });
    }

    /// A doorbell for one relay of this process: rung by every store through this
    /// outbox (or a clone) while the doorbell lives.
    pub(crate) fn subscribe(&self) -> Arc<Doorbell> {
        let doorbell = Arc::new(Doorbell::default());
        let mut local = self.local.lock().unwrap_or_else(PoisonError::into_inner);
        local.retain(|relay| relay.strong_count() > 0);
        local.push(Arc::downgrade(&doorbell));
        doorbell
    }

    fn ring_local(&self, ring: impl Fn(&Doorbell)) {
        let local = self.local.lock().unwrap_or_else(PoisonError::into_inner);
        for doorbell in local.iter().filter_map(Weak::upgrade) {
            ring(&doorbell);
        }
    }

    /// The connection cross-process notifications go through, if set.
    pub(crate) fn remote_connection(&self) -> Option<DatabaseConnection> {
        self.remote.get().map(|notifier| notifier.shared.db.clone())
    }

    /// Sends cross-process notifications through `db` on `channel`, unless a
    /// connection was set already or `db` is not PostgreSQL.
    pub(crate) fn ring_through(&self, db: &DatabaseConnection, channel: String) {
        if db.get_database_backend() == DatabaseBackend::Postgres {
            let _ = self.remote.set(Notifier::new(db.clone(), channel));
        }
    }
}

/// Sends `payload` on `channel` through `db` (PostgreSQL). A failure is only logged:
/// the relays poll anyway, so a lost notification costs latency, never events.
pub(crate) async fn send_notify(db: &DatabaseConnection, channel: &str, payload: String) {
    let notify = Statement::from_sql_and_values(
        DatabaseBackend::Postgres,
        "SELECT pg_notify($1, $2)",
        [channel.into(), payload.into()],
    );
    if let Err(error) = db.execute_raw(notify).await {
        debug!(%error, %channel, "could not notify the relays");
    }
}

/// The payload that names `shards` (all shards, when too many to list).
pub(crate) fn shards_payload(shards: impl IntoIterator<Item = i32>) -> String {
    let list: Vec<String> = shards.into_iter().map(|shard| shard.to_string()).collect();
    let list = list.join(",");
    if list.len() > MAX_PAYLOAD {
        String::new()
    } else {
        list
    }
}

/// The channel the relays of the outbox table in `tables` listen on.
pub(crate) fn channel(tables: &Tables) -> String {
    format!("{}_wake", tables.outbox().as_str())
}

/// Sends coalesced `NOTIFY`s from a task of its own. The task ends when the notifier
/// (the last clone of its outbox) is dropped.
#[derive(Debug)]
struct Notifier {
    shared: Arc<NotifierState>,
    /// Rings the task; started at the first ring (a tokio runtime is needed).
    doorbell: OnceLock<Option<mpsc::Sender<()>>>,
}

#[derive(Debug)]
struct NotifierState {
    db: DatabaseConnection,
    channel: String,
    /// Shards stored to since the last notification.
    pending: Pending,
    /// Events were scheduled since the last notification.
    scheduled: std::sync::atomic::AtomicBool,
}

impl Notifier {
    fn new(db: DatabaseConnection, channel: String) -> Self {
        Notifier {
            shared: Arc::new(NotifierState {
                db,
                channel,
                pending: Pending::default(),
                scheduled: std::sync::atomic::AtomicBool::new(false),
            }),
            doorbell: OnceLock::new(),
        }
    }

    fn ring(&self, shards: impl IntoIterator<Item = i32>) {
        self.shared.pending.add(shards);
        self.send();
    }

    fn ring_scheduled(&self) {
        self.shared
            .scheduled
            .store(true, std::sync::atomic::Ordering::Release);
        self.send();
    }

    fn ring_all(&self) {
        self.shared.pending.any();
        self.send();
    }

    fn send(&self) {
        let doorbell = self.doorbell.get_or_init(|| {
            let runtime = tokio::runtime::Handle::try_current().ok()?;
            let (sender, receiver) = mpsc::channel(1);
            runtime.spawn(Arc::clone(&self.shared).run(receiver));
            Some(sender)
        });
        if let Some(doorbell) = doorbell {
            // Full: a ring is pending already, and it will take these shards along.
            let _ = doorbell.try_send(());
        }
    }
}

impl NotifierState {
    async fn run(self: Arc<Self>, mut doorbell: mpsc::Receiver<()>) {
        while doorbell.recv().await.is_some() {
            if self
                .scheduled
                .swap(false, std::sync::atomic::Ordering::AcqRel)
            {
                send_notify(&self.db, &self.channel, SCHEDULED.to_owned()).await;
            }
            let payload = match self.pending.take() {
                Some(shards) if shards.is_empty() => continue,
                Some(shards) => shards_payload(shards),
                None => String::new(),
            };
            send_notify(&self.db, &self.channel, payload).await;
            tokio::time::sleep(COALESCE).await;
        }
    }
}

/// Shards stored to since someone last looked; `None` when it may be any shard.
#[derive(Debug)]
struct Pending(Mutex<Option<BTreeSet<i32>>>);

impl Default for Pending {
    fn default() -> Self {
        Pending(Mutex::new(Some(BTreeSet::new())))
    }
}

impl Pending {
    fn add(&self, shards: impl IntoIterator<Item = i32>) {
        if let Some(pending) = self.lock().as_mut() {
            pending.extend(shards);
        }
    }

    fn any(&self) {
        *self.lock() = None;
    }

    /// The shards since the last call (`None`: any shard), and a fresh start.
    fn take(&self) -> Option<BTreeSet<i32>> {
        self.lock().replace(BTreeSet::new())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<BTreeSet<i32>>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// One relay's wake-ups: the shards stored to since it last looked, and whether
/// another relay gave shards up.
#[derive(Debug, Default)]
pub(crate) struct Doorbell {
    rung: Notify,
    shards: Pending,
    released: Notify,
}

impl Doorbell {
    /// Events were stored to `shards`.
    pub(crate) fn ring(&self, shards: impl IntoIterator<Item = i32>) {
        self.shards.add(shards);
        self.rung.notify_one();
    }

    /// Events may have been stored to any shard.
    pub(crate) fn ring_all(&self) {
        self.shards.any();
        self.rung.notify_one();
    }

    /// Another relay of the service gave shards up.
    pub(crate) fn hear_release(&self) {
        self.released.notify_one();
    }

    /// Waits until another relay gave shards up (at once if one did since the last
    /// call).
    pub(crate) async fn release_heard(&self) {
        self.released.notified().await;
    }

    /// Waits for a ring; the shards rung for since the last answer (`None`: every
    /// shard). A ring while nobody waits is kept for the next call.
    pub(crate) async fn rung(&self) -> Option<BTreeSet<i32>> {
        self.rung.notified().await;
        self.shards.take()
    }
}

/// The shards a notification's payload names; `None` for every shard.
#[cfg(feature = "postgres")] // read by the listener only
pub(crate) fn shards_of(payload: &str) -> Option<Vec<i32>> {
    if payload.is_empty() {
        return None;
    }
    payload
        .split(',')
        .map(|shard| shard.trim().parse().ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_relay_of_the_process_hears_the_shards_stored_to() {
        let wake = Wake::default();
        let (first, second) = (wake.subscribe(), wake.subscribe());
        wake.stored([3, 7]);
        wake.stored([7, 9]);
        assert_eq!(first.rung().await, Some(BTreeSet::from([3, 7, 9])));
        assert_eq!(second.rung().await, Some(BTreeSet::from([3, 7, 9])));
        wake.ring_all();
        assert_eq!(first.rung().await, None, "every shard");
        drop(second);
        wake.stored([1]);
        assert_eq!(wake.local.lock().expect("not poisoned").len(), 2);
        let _third = wake.subscribe();
        assert_eq!(
            wake.local.lock().expect("not poisoned").len(),
            2,
            "a dropped relay's doorbell is forgotten"
        );
        assert_eq!(first.rung().await, Some(BTreeSet::from([1])));
    }

    #[tokio::test]
    async fn a_commit_wakes_the_shards_stored_to_since_a_few_commits() {
        let wake = Wake::default();
        let relay = wake.subscribe();
        wake.stored([3]);
        wake.stored([5]);
        assert_eq!(relay.rung().await, Some(BTreeSet::from([3, 5])));
        wake.committed();
        assert_eq!(relay.rung().await, Some(BTreeSet::from([3, 5])));
        wake.stored([7]);
        for _ in 1..GENERATIONS {
            wake.committed();
            assert_eq!(
                relay.rung().await,
                Some(BTreeSet::from([3, 5, 7])),
                "the stores before the last commits, for a transaction that commits just after them"
            );
        }
        wake.committed();
        assert_eq!(relay.rung().await, Some(BTreeSet::from([7])));
        wake.committed();
        wake.stored([1]);
        assert_eq!(
            relay.rung().await,
            Some(BTreeSet::from([1])),
            "nothing stored: a commit wakes nobody"
        );
    }

    #[cfg(feature = "postgres")]
    #[test]
    fn payloads_name_shards_or_every_shard() {
        assert_eq!(shards_of("3,7,12"), Some(vec![3, 7, 12]));
        assert_eq!(shards_of(""), None);
        assert_eq!(shards_of("3,x"), None, "unreadable: wake for every shard");
        let released = released_payload("billing-41-ab12");
        assert_eq!(released_by(&released), Some("billing-41-ab12"));
        assert_eq!(released_by("3,7"), None);
        assert_eq!(
            shards_of(&released),
            None,
            "a relay that reads it as shards polls every shard it owns"
        );
    }

    #[tokio::test]
    async fn a_release_rings_every_other_relay_of_the_process() {
        let wake = Wake::default();
        let (releasing, other) = (wake.subscribe(), wake.subscribe());
        wake.announce_release(&releasing);
        tokio::time::timeout(Duration::from_secs(1), other.release_heard())
            .await
            .expect("the other relay hears of it");
        assert!(
            tokio::time::timeout(Duration::from_millis(50), releasing.release_heard())
                .await
                .is_err(),
            "the releasing relay does not"
        );
    }
}
