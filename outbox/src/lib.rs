//! A transactional outbox for [SeaORM](sea_orm).
//!
//! A service that changes its rows and must tell the rest of the system about it
//! stores the event in the **same database transaction** as the change. The event
//! exists if and only if the transaction commits; a relay publishes it afterwards.
//!
//! # Defining events
//!
//! Derive [`OutboxEvent`](derive@OutboxEvent) on a serde struct:
//!
//! ```
//! use outbox::OutboxEvent;
//! use serde::Serialize;
//! use uuid::Uuid;
//!
//! #[derive(Serialize, OutboxEvent)]
//! #[outbox(type = "user.registered", version = "v2", aggregate = "user_id")]
//! struct UserRegistered {
//!     user_id: Uuid,
//!     email: String,
//! }
//!
//! let event = UserRegistered { user_id: Uuid::nil(), email: "ada@example.com".into() };
//! assert_eq!(event.event_type(), "user.registered");
//! assert_eq!(event.event_version(), "v2");
//! assert_eq!(event.aggregate_id(), Uuid::nil().to_string());
//! assert_eq!(event.payload()?["email"], "ada@example.com");
//! # Ok::<(), serde_json::Error>(())
//! ```
//!
//! The attributes:
//!
//! | attribute | meaning |
//! |---|---|
//! | `type = "..."` | required: the event type, e.g. `"user.registered"` |
//! | `version = "..."` | the payload's schema version; default `"v1"` |
//! | `aggregate = "field"` | the field holding the aggregate id (any `Display` type); or mark the field `#[outbox(aggregate)]` |
//! | `partition_key = "field"` | the field holding the default partition key; or mark the field `#[outbox(partition_key)]`; default: the aggregate id |
//! | `crate = "path"` | where the `outbox` crate is, if you renamed the dependency |
//!
//! Generic structs work; the derive adds the bounds it needs. Events whose type is
//! chosen at run time use [`EventBuilder`].
//!
//! ## Events as enums
//!
//! The events of one aggregate, or those one consumer reads, fit an enum: each variant
//! is an event type of its own, with the same attributes on the variant as on a
//! struct. A variant that wraps one value (`Paid(OrderPaid)`) takes everything from
//! that value's own `OutboxEvent` impl.
//!
//! ```
//! use outbox::{DecodeEvent, OutboxEvent};
//! use serde::{Deserialize, Serialize};
//! use uuid::Uuid;
//!
//! #[derive(Debug, PartialEq, Deserialize, Serialize, OutboxEvent)]
//! enum UserEvent {
//!     #[outbox(type = "user.registered", version = "v2", aggregate = "user_id")]
//!     Registered { user_id: Uuid, email: String },
//!     #[outbox(type = "user.deleted", aggregate = "user_id")]
//!     Deleted { user_id: Uuid },
//! }
//!
//! let event = UserEvent::Deleted { user_id: Uuid::nil() };
//! assert_eq!((event.event_type(), event.event_version()), ("user.deleted", "v1"));
//! // The payload is the variant's content: its type travels in the `event_type` header.
//! let payload = event.payload()?;
//! assert_eq!(payload, serde_json::json!({ "user_id": Uuid::nil() }));
//!
//! // A consumer reads it back by the message's `event_type` and `event_version`.
//! let bytes = serde_json::to_vec(&payload)?;
//! assert_eq!(UserEvent::decode("user.deleted", "v1", &bytes)?, event);
//! assert!(matches!(
//!     UserEvent::decode("user.deleted", "v2", &bytes),
//!     Err(outbox::Error::UnknownEvent { .. }),
//! ));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! The derive implements [`DecodeEvent`] for every event that also implements serde's
//! `Deserialize` (structs and enums alike). An enum keeps serde's default
//! representation, derived on the enum itself: `#[serde(tag = ..)]`, `content` and
//! `untagged` are refused, since the event's type is not part of its payload, and so
//! are `from`, `try_from`, `into` and `remote`, since decoding hands serde's derived
//! impl the variant by its position. serde's `rename_all`, `rename` and field
//! attributes shape the payload as usual; a variant serde skips when deserializing
//! (`skip_deserializing`) is stored but never decoded into. Two named variants of one
//! type and version are refused: a received event could not choose between them. A
//! newtype variant's type and version are its field's, which the derive cannot see:
//! keep them distinct from the others' (the first variant that accepts an event
//! decodes it).
//!
//! # Storing events
//!
//! [`Outbox::store`] writes one event on any [`ConnectionTrait`](sea_orm::ConnectionTrait),
//! normally the caller's own `DatabaseTransaction`; [`Outbox::store_batch`] writes many
//! in one statement. Invalid input (an empty type, a topic Kafka would reject, a field
//! longer than its column) is an [`Error`] naming the problem, returned before anything
//! is written, so the transaction stays the caller's to commit or roll back.
//!
//! ```
//! # use outbox::{EventBuilder, Outbox};
//! # use sea_orm::{Database, TransactionTrait};
//! # use sea_orm_migration::MigratorTrait;
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let db = Database::connect("sqlite::memory:").await?;
//! # outbox_migration::Migrator::up(&db, None).await?;
//! let outbox = Outbox::on(&db);
//!
//! let txn = db.begin().await?;
//! let event = EventBuilder::new("order.created", "order-17")
//!     .data(serde_json::json!({ "amount": 4200 }));
//! outbox.store(&txn, &event, "order-events").partition_key("customer-4").await?;
//! txn.commit().await?;
//! # Ok(()) }
//! ```
//!
//! # Relaying
//!
//! A [`Relay`] publishes what was stored, through a [`Publisher`]: the
//! [`KafkaPublisher`] in production, your own implementation, or the [`NoOpPublisher`]
//! and [`MemoryPublisher`] in tests. Configure it with [`RelayConfig`] (a struct
//! with defaults, or `OUTBOX_*` variables through
//! [`RelayConfig::from_env`]).
//!
//! ```
//! # use outbox::{EventBuilder, MemoryPublisher, Outbox, Relay, RelayConfig};
//! # use sea_orm::Database;
//! # use sea_orm_migration::MigratorTrait;
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let mut options = sea_orm::ConnectOptions::new("sqlite::memory:");
//! # options.max_connections(1);
//! # let db = Database::connect(options).await?;
//! # outbox_migration::Migrator::up(&db, None).await?;
//! let outbox = Outbox::on(&db);
//! let publisher = MemoryPublisher::new();
//! let relay = Relay::new(RelayConfig::new("orders"), db.clone(), publisher.clone())?
//!     .with_outbox(outbox.clone()) // a store in this process wakes the relay
//!     .spawn();
//!
//! outbox.store(&db, &EventBuilder::new("order.created", "order-17"), "order-events").await?;
//! while relay.stats().published == 0 {
//!     tokio::time::sleep(std::time::Duration::from_millis(10)).await;
//! }
//! assert_eq!(publisher.messages()[0].event_type, "order.created");
//! relay.shutdown().await?;
//! # Ok(()) }
//! ```
//!
//! # Consuming events
//!
//! The relay publishes at least once, so a consumer may receive an event twice. The
//! consumer's side turns that into effects that happen once:
//!
//! - [`Consumer`] (feature `kafka`) reads the topics as a Kafka consumer group and, for
//!   each message, opens a transaction, records the event in the [`Inbox`] (a
//!   duplicate ends there), calls your handler with the transaction and the event as a
//!   [`Received`], commits, and then stores the offset. Partitions are applied
//!   concurrently, each in offset order; a failing handler is retried with backoff and
//!   then dead-lettered; rebalances and shutdown let the handlers in flight finish and
//!   commit their offsets. See its documentation for the whole contract.
//! - [`Received::decode`] reads an rdkafka message the relay published: its
//!   `event_id`, `event_type` and `event_version` headers, and its payload decoded
//!   into any [`DecodeEvent`] (an event struct, or an enum of several, see
//!   [Events as enums](#events-as-enums)).
//! - [`Inbox::record`] records, in the transaction that applies the event, that the
//!   consumer processed it, and answers `false` for a duplicate: the building block for
//!   a consumer loop of your own. Events stored with the [`Outbox`] on that same
//!   transaction (consume, change, produce) are published once, as any other.
//!
//! `cargo run --example inbox` shows it with no server. Inbox records are kept for
//! [`DEFAULT_DEDUP_WINDOW`] (15 days: with Kafka's default `retention.ms` and
//! `segment.ms`, a record stays readable up to 14 days) and then deleted by the
//! consumer's cleanup, or by [`Inbox::cleanup`].
//!
//! # Guarantees
//!
//! - **Atomic**: an event is stored if and only if its transaction commits.
//! - **At least once**: every committed event is published, across relay crashes,
//!   broker outages and database restarts. A crash between the broker's acknowledgement
//!   and the database update publishes an event again; consumers drop duplicates by the
//!   `event_id` header, with the [`Inbox`] in their own transaction.
//! - **No skip on late commit**: the relay keeps no cursor; whatever is pending and
//!   visible is published, however late its transaction committed.
//! - **Per-key order**: events with the same key reach the broker in the order their
//!   transactions committed, also with several relays of one service: a key's events
//!   live in one shard, a shard is leased to one relay at a time, and the lease is
//!   checked (with a fencing token) when results are written back. Storing takes a
//!   transaction-scoped lock on the key, so for one key, store order is commit order.
//!   The Kafka producer runs with the gapless guarantee, and a batch not acknowledged
//!   within the delivery timeout is purged and its producer replaced, so of each
//!   partition the broker holds a prefix of what was sent; after the first event of a
//!   key that did not go through, no later event of that key is marked published.
//!   See [A relay paused past its lease](#a-relay-paused-past-its-lease) for the one
//!   window that remains.
//! - **Poison isolation**: an event that fails holds back only the later events of its
//!   key. It is retried with exponential backoff, then dead-lettered and kept until
//!   replayed (it then goes out after the events of its key published meanwhile). A
//!   failure uses up an attempt unless the broker is unreachable as a whole, or the
//!   topic exists and the broker was only slow: outages dead-letter nothing; missing
//!   topics, refused sizes, denied authorizations and policy violations do. Events that
//!   shared a refused record batch are each sent again alone, so only the one at fault
//!   uses an attempt.
//! - **Bounded table**: published events are deleted after the retention, in batches.
//! - **Completion modes**: a published event's row is marked (the default), deleted, or
//!   moved to an archive table in the statement that deletes it; see [`Completion`].
//!
//! Leases, heartbeats and retry times go by the database's clock (the offset of the
//! host's clock to PostgreSQL's is measured at every lease round). One outbox table
//! belongs to one service: relays of a second service on the same table publish
//! nothing, and fail their health check, while the first service's relays run.
//!
//! ## A relay paused past its lease
//!
//! A relay keeps a local, monotonic deadline per shard: the start of its last
//! successful renewal plus `lease_ttl`, less a fifth. It checks the deadline before it
//! claims, before it hands a batch to the publisher, and inside every write (which is
//! also fenced by the lease's token in the database). A relay paused past the deadline
//! (SIGSTOP, a frozen VM, CPU throttling) therefore claims, publishes and writes
//! nothing on the shard after it resumes, until a lease round renews it.
//!
//! What remains: messages already handed to the Kafka producer when the process froze.
//! librdkafka sends them when the process resumes (unless their delivery timeout ran
//! out first), possibly after the shard's new owner published later events of the
//! same keys: the broker then holds `E1 E2 E3 E1 E2`. At most one batch per shard the
//! paused relay held can be caught this way. A consumer that keeps the first
//! occurrence of each `event_id` (the [`Inbox`] does) sees the right order; a
//! compacted topic can keep a stale value for the key until its next event.
//!
//! Kafka transactions would close this window (one `transactional.id` per shard, so
//! that the new owner's `InitProducerId` fences the old producer and aborts its open
//! transaction). This crate does not offer that mode, because no broker it can test
//! against implements the part that matters: librdkafka's `MockCluster` hands a reused
//! `transactional.id` a fresh producer id (the old producer is not fenced) and serves
//! every record to `read_committed` consumers; tansu 0.6 fences the old producer's
//! produce requests but does not offer `EndTxn` (a commit fails with "EndTxnRequest not
//! supported by broker") and serves an aborted transaction's records to
//! `read_committed` consumers. A fence that cannot be tested is not offered.
//!
//! Store events of several keys in one transaction with one [`Outbox::store_batch`]
//! call, or always in the same key order: the key locks are taken in sorted order
//! within one call, and two transactions that lock the same keys in opposite orders
//! can deadlock (PostgreSQL then aborts one of them).
//!
//! # An event's life
//!
//! Every transition below, by the relay, an operator command or a library call, keeps
//! two invariants:
//!
//! 1. **Key order**: of a key's pending events, only the earliest may go out; an event
//!    waits for every earlier pending event of its key (one waiting for a retry, one
//!    parked), never for a later one.
//! 2. **Liveness**: an event is parked only behind an earlier event of its key that
//!    waits for a retry, so the first pending event of a key is never parked for
//!    good, and every event that is not dead-lettered is eventually published while a
//!    healthy relay runs.
//!
//! | state | what it means |
//! |---|---|
//! | pending | stored, not yet published; the claim takes it in store order |
//! | retrying | an attempt failed; not claimed before `next_attempt_at`; holds back the later events of its key |
//! | parked | pending behind a retrying event of its key, out of the claim index (so a long queue behind a poison event costs the claim nothing) |
//! | dead-lettered | out of attempts; kept with its error until replayed; holds back nothing |
//! | published | marked (kept for the retention), deleted, or moved to the archive, by the [`Completion`] mode |
//!
//! | transition | by | what it does |
//! |---|---|---|
//! | store | [`Outbox::store`] | pending; parked at once (PostgreSQL, SQLite) when its key has a retrying event |
//! | publish | the relay | published; when it was retrying, its key's parked events are unparked |
//! | fail | the relay, [`Outbox::handle_event_failure`] | retrying (a permanent failure uses an attempt, an outage does not); the relay parks its key's later events |
//! | dead-letter | the same, on the last attempt | dead-lettered; its key's parked events are unparked and go on without it |
//! | park | the claim | an event found behind an earlier retrying or parked event of its key is parked with its key's later events |
//! | unpark | the claim, the sweep | parked events with no earlier retrying event of their key go back in line (the relay sweeps at start and every 30 s; [`Outbox::mark_events_as_published`] and a dead-lettering `handle_event_failure` sweep at once) |
//! | replay | [`Outbox::replay`], [`Outbox::replay_all_dead`], `outbox replay` | pending again with its attempts reset, in its key's shard under today's shard count; it goes out ahead of the events of its key stored or failed after it, and after those published while it was dead |
//! | mark | [`Outbox::mark_events_as_published`] | published by hand; its key's orphaned parked events are unparked |
//!
//! The backlog figures ([`Outbox::backlog`], the `outbox_pending` and
//! `outbox_oldest_pending_age_seconds` gauges, `outbox status`) count retrying and parked events as pending, so a key that
//! stays stuck shows as an age that grows.
//!
//! # Waking relays across processes
//!
//! A relay polls: after finding nothing it waits 10 ms, 20 ms, 40 ms... up to
//! `interval` (5 s). So that events are published within milliseconds, stores wake the
//! relays:
//!
//! - **In this process**: a relay built with a clone of the storing [`Outbox`]
//!   ([`Relay::with_outbox`]) is woken at once, for the shards stored to.
//! - **In other processes (PostgreSQL, feature `postgres`, on by default)**: the
//!   outbox sends a `NOTIFY` on the channel `<outbox table>_wake`, naming the shards it
//!   stored to, and every relay `LISTEN`s on it and claims the named shards it owns.
//!   The `NOTIFY` is sent by a task of the outbox's own, on a pool connection, after
//!   the store and **outside your transaction**: PostgreSQL serialises the commits of
//!   transactions that sent a notification, so one inside every business transaction
//!   would slow every writer (the store benchmark measures it). Bursts are coalesced
//!   into one notification every 2 ms at most. A notification may arrive before your
//!   transaction commits; the relay then polls again after 10 ms, 20 ms, 40 ms... and
//!   finds the event once it is visible.
//!
//! What to set up:
//!
//! - A process that runs a relay with [`Relay::with_outbox`] needs nothing more:
//!   the relay lends the outbox its connection for notifications.
//! - A process that stores events and runs no relay calls
//!   [`Outbox::with_wake_connection`] with its pool. A short-lived one (a script, a
//!   job) should leave the task a moment before it exits, or its last events are found
//!   by the relays' next poll instead.
//! - **PgBouncer in transaction mode**: notifications sent through it work, but
//!   `LISTEN` does not (the server connection changes under it). Give the relays a
//!   direct connection for listening with `OUTBOX_LISTEN_URL`
//!   ([`RelayConfig::listen_url`]); the relay keeps one connection on it. Without
//!   it, the relay listens on a connection of its own pool.
//! - A lost listening connection is opened again (backoff up to 5 s), and the relay
//!   polls once when it listens again, for what was stored meanwhile; until then it
//!   polls as without wake-ups. `OUTBOX_LISTEN=false` turns listening and
//!   notifications off; a relay then finds other processes' events by polling only.
//! - SQLite, MySQL and MariaDB: in-process wake-ups and polling (MySQL has no
//!   `LISTEN`).
//!
//! Relays wake each other the same way when shards change hands. A relay that gives
//! shards up (to a relay that joined, at its lease round; all of them on shutdown; or
//! while it cannot reach the broker) says so: on the same channel with the payload
//! `released by <relay id>`, and to the relays of its process directly. The others run
//! a lease round at once and take the shards, instead of at their next round, a
//! third of `lease_ttl` (10 s) later at most, while events stored to those shards
//! would wait. Without `LISTEN`, relays of other processes take them at that round.
//! The channel is named after the table, not the schema: services that keep outboxes
//! of one name in several schemas of one database wake each other's relays (each of
//! their stores makes the other service's relays claim the shards it names, each
//! release makes them run a lease round): correct, but wasted queries. Give the
//! tables different names (see [`Tables`]) to keep them apart.
//!
//! An idle relay makes about one query a second (its poll asks once which of its
//! shards have work, plus the lease round every third of `lease_ttl` and the backlog
//! gauges every 10 s); the benchmark measures it.
//!
//! # Backends
//!
//! PostgreSQL, MySQL 8 and MariaDB 10.6+ (InnoDB), and SQLite (one process). Every
//! guarantee above holds on each; the tests run on PostgreSQL 15, MariaDB 10.11 and
//! SQLite. The MySQL statements avoid what only MariaDB reads, but MySQL 8 itself is
//! not tested here. What differs underneath on MySQL and MariaDB:
//!
//! - **Key locks**: MySQL has no transaction-scoped advisory lock, and `GET_LOCK`
//!   belongs to the session, which a pooled connection keeps after the transaction, so
//!   an error path could leave a key locked for another request. Instead the
//!   migrations create `_outbox_key_lock` ([`Tables::key_lock`]) with
//!   [`KEY_LOCKS`] rows, and a store locks its keys' rows with a `FOR UPDATE` read
//!   inside its own `INSERT .. SELECT` (one statement, so also atomic on a bare
//!   connection). InnoDB holds row locks until the transaction ends, like
//!   `pg_advisory_xact_lock`. Two keys that share a row only wait for each other's
//!   stores.
//! - **`seq` and commit order**: `seq` is `AUTO_INCREMENT`, given when the row is
//!   inserted, after the key's lock: for one key, `seq` order is commit order, at any
//!   `innodb_autoinc_lock_mode`. Across keys `seq` may differ from commit order, which
//!   nothing relies on: the relay keeps no cursor.
//! - **Isolation**: the relay's claim is one statement outside any transaction, so
//!   it reads a fresh snapshot even under REPEATABLE READ (the default). Its
//!   transactions (write-backs after a failure, parking, the orphan sweep) run at
//!   READ COMMITTED: under REPEATABLE READ an InnoDB UPDATE locks every row it scans
//!   and the gaps between them, so two shards' write-backs waited for each other or
//!   deadlocked (and the loser's failure record was lost, to be made again), and gap
//!   locks would hold up your stores. Your transactions may use any level.
//! - **No `SKIP LOCKED` needed**: relays do not compete for rows; a shard is
//!   leased to one relay (a row of `_outbox_lease`, fenced by its token), on every
//!   backend.
//! - **Indexes**: InnoDB has no partial index. The state columns lead instead
//!   (`claim (shard, published, parked, dead_lettered_at, seq, next_attempt_at)`), so
//!   the claim's equalities skip published history as the predicates do on PostgreSQL,
//!   and the claim (`claim_mysql.sql`) asks for one shard in `seq` order. Events stored
//!   behind a failed one are stored unparked (the check would read the outbox with
//!   shared locks inside your transaction) and parked by the first claim that meets
//!   them; they never go out ahead of the failed event.
//! - **Time**: columns are `DATETIME(6)` holding UTC (the driver writes UTC; MySQL's
//!   `TIMESTAMP` ends in 2038 and converts through the session's time zone), and the
//!   relay reads the database's clock with `UTC_TIMESTAMP(6)`.
//! - **JSON**: `event_data` and `headers` are `JSON` columns; the relay reads them as
//!   text. On MariaDB `JSON` is an alias of `LONGTEXT` with a validity check, so the
//!   text is the one stored; MySQL 8 keeps a parsed form, so, as with PostgreSQL's
//!   `jsonb`, the text is the same JSON value, normalised (whitespace, key order).
//! - **Keys compare as bytes**: the key, aggregate and service-name columns use the
//!   server's binary collation without padding (`utf8mb4_0900_bin` on MySQL 8,
//!   `utf8mb4_nopad_bin` on MariaDB; migration `m20261205_000007`), as the shards, key
//!   locks and Kafka keys compare. Under the default collation
//!   `'ABC' = 'abc' = 'abc '` and `'Zoé' = 'zoe'`, and one key's failure held back the
//!   others; `utf8mb4_bin` still ignores trailing spaces.
//! - **Statements**: identifiers are quoted with backticks and parameters are `?`
//!   (the hand-written statements are respelled); a multi-row insert takes at most
//!   1,024 events, within the 65,535 placeholders and MariaDB's default
//!   `max_allowed_packet` of 16 MiB for events of up to 16 KiB (raise it for larger
//!   ones). `UPDATE .. RETURNING` does not exist there: a lease change is an update,
//!   then a read of the lease (the token fences whatever happens between them).
//!   Archiving copies and deletes in one transaction.
//! - **Wake-ups**: no `LISTEN`/`NOTIFY`; relays in other processes find events by
//!   polling (10 ms after activity, backing off to `interval`).
//!
//! # Configuration
//!
//! [`RelayConfig`] documents every field with its default and its `OUTBOX_*`
//! variable. An invalid variable is an [`Error::Config`] naming the variable and the
//! value; nothing falls back to a default silently.
//!
//! # Tables
//!
//! The `outbox-migration` crate creates the tables (`cargo run -p outbox-migration --
//! up` with `DATABASE_URL` set). To keep one migration history, add its migrations to
//! your own `Migrator`:
//!
//! ```
//! use sea_orm_migration::prelude::*;
//!
//! # #[derive(DeriveMigrationName)]
//! # struct CreateUsers;
//! # #[async_trait::async_trait]
//! # impl MigrationTrait for CreateUsers {
//! #     async fn up(&self, _: &SchemaManager) -> Result<(), DbErr> { Ok(()) }
//! # }
//! pub struct Migrator;
//!
//! impl MigratorTrait for Migrator {
//!     fn migrations() -> Vec<Box<dyn MigrationTrait>> {
//!         let mut migrations: Vec<Box<dyn MigrationTrait>> = vec![Box::new(CreateUsers)];
//!         migrations.extend(outbox_migration::migrations());
//!         migrations
//!     }
//! }
//! ```
//!
//! The [`entity`] module holds the tables' SeaORM entities. Table names can be changed
//! with [`Tables`], which accepts only safe identifiers.
//!
//! # Operations
//!
//! - **Scaling relays**: run more processes with the same `service_name`. Each relay
//!   holds a fair share (`ceil(shards / relays)`) of the 16 shards; a new relay gets
//!   its share within a third of `lease_ttl`, a dead one's shards move after
//!   `lease_ttl`. More relays than shards add nothing.
//! - **Dead letters**: `outbox list --dead` (the `outbox-cli` crate) or
//!   [`Outbox::dead_letters`] show them with their error; fix the cause, then
//!   `outbox replay ID --yes` or [`Outbox::replay`]. A replayed event is published after
//!   the events of its key that went out while it was dead.
//! - **Retention**: published events are kept `cleanup_after_days` days for
//!   inspection (in `_outbox`, or in the archive with [`Completion::Archive`]; not at
//!   all with [`Completion::Delete`]) and deleted in batches of 1,000; pending and
//!   dead-lettered events are never deleted. `outbox purge --published-older-than 1d --yes` deletes on demand.
//! - **Watching**: [`RelayHandle::healthcheck`] for liveness probes; the gauges
//!   `outbox_pending` and `outbox_oldest_pending_age_seconds` for alerts on lag.

mod backlog;
mod backoff;
mod completion;
mod config;
#[cfg(feature = "kafka")]
mod consumer;
#[cfg(feature = "kafka")]
mod db_error;
mod dead_letter_filter;
mod decode;
pub mod entity;
mod envelope;
mod error;
mod event;
#[cfg(feature = "http")]
pub mod http;
mod inbox;
#[cfg(feature = "kafka")]
mod kafka;
mod key;
#[cfg(all(feature = "opentelemetry", feature = "kafka"))]
mod otel;
mod panic;
mod publisher;
mod relay;
mod repository;
mod retry;
pub mod schema;
mod secrets;
mod signal;
mod sql;
mod store;
mod tables;
mod wake;
mod wire;

pub use backlog::{Backlog, RelayInfo, TopicBacklog};
pub use backoff::Backoff;
pub use completion::{Completion, UnknownCompletion};
pub use config::{DatabaseUrl, MAX_BATCH_SIZE, RelayConfig};
#[cfg(feature = "kafka")]
pub use consumer::{
    Consumer, ConsumerConfig, ConsumerHandle, ConsumerProbe, ConsumerStats, ConsumerWithHandler,
    Handler, HandlerError, HandlerFuture, consumer_metric_names,
};
#[cfg(feature = "kafka")]
pub use kafka::{KafkaConfig, KafkaContext};
#[cfg(feature = "kafka")]
pub use publisher::KafkaPublisher;
pub use publisher::{
    MemoryPublisher, NoOpPublisher, PublishError, PublishErrorKind, Publisher, publish_in_key_order,
};
pub use relay::{HealthProbe, ProcessReport, Relay, RelayHandle, RelayStats, relay_metric_names};
pub use repository::FailureOutcome;

pub use dead_letter_filter::DeadLetterFilter;
pub use decode::DecodeEvent;
pub use envelope::Envelope;
pub use error::{Error, EventField, Result};
pub use event::{DEFAULT_EVENT_VERSION, EventBuilder, OutboxEvent};
pub use inbox::{DEFAULT_DEDUP_WINDOW, Inbox};
pub use secrets::Secrets;
pub use signal::shutdown_signal;
pub use store::{DEFAULT_SHARDS, Outbox, Store};
pub use tables::{Identifier, KEY_LOCKS, MAX_BASE_NAME_LEN, Tables};
#[cfg(feature = "kafka")]
pub use wire::Received;
pub use wire::{Message, headers};

/// Derives [`OutboxEvent`](trait@OutboxEvent), and [`DecodeEvent`] when the type
/// also implements `Deserialize`, for a struct with named fields, a newtype or an
/// enum of such variants; see the
/// [crate documentation](crate#defining-events) for the attributes.
pub use outbox_derive::OutboxEvent;

/// What the derive's expansion refers to. Not public API.
#[doc(hidden)]
pub mod __private {
    pub use crate::decode::{decode_struct, decode_variant, unknown_event, variant_payload};
    pub use serde;
    pub use serde_json;
}
