//! SeaORM entities of the outbox tables.
//!
//! The entities carry the default table names (`_outbox`, `_outbox_offset`,
//! `_outbox_lease`, `_outbox_relay`, `_outbox_inbox`, `_outbox_inbox_dead`). With custom [`Tables`](crate::Tables), use the library's calls,
//! which take the names from the [`Outbox`](crate::Outbox), or
//! `Entity::find().from_raw_sql(..)` with your own SQL.

pub mod inbox;
pub mod inbox_dead;
pub mod lease;
pub mod offset;
pub mod outbox;
pub mod relay;

/// The entities under distinct names, for `use outbox::entity::prelude::*`.
pub mod prelude {
    pub use super::inbox::Entity as OutboxInbox;
    pub use super::inbox_dead::Entity as OutboxInboxDead;
    pub use super::lease::Entity as OutboxLease;
    pub use super::offset::Entity as OutboxOffset;
    pub use super::outbox::Entity as Outbox;
    pub use super::relay::Entity as OutboxRelay;
}
