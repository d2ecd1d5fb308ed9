//! Domain events: the [`OutboxEvent`] trait and the [`EventBuilder`] for dynamic events.

use std::borrow::Cow;

use serde::Serialize;
use serde_json::Value;

use crate::error::{Error, Result};

/// The version an event has unless it says otherwise.
pub const DEFAULT_EVENT_VERSION: &str = "v1";

/// A domain event that can be stored in the outbox.
///
/// Usually derived; see the [crate documentation](crate#defining-events) for the attributes. Implement it by hand
/// when an event needs logic the attributes cannot express:
///
/// ```
/// use outbox::OutboxEvent;
///
/// struct PriceChanged { sku: String, cents: i64 }
///
/// impl OutboxEvent for PriceChanged {
///     fn event_type(&self) -> &str { "catalog.price_changed" }
///     fn aggregate_id(&self) -> String { self.sku.clone() }
///     fn payload(&self) -> Result<serde_json::Value, serde_json::Error> {
///         Ok(serde_json::json!({ "sku": self.sku, "cents": self.cents }))
///     }
/// }
///
/// let event = PriceChanged { sku: "A-1".into(), cents: 990 };
/// assert_eq!(event.event_version(), "v1");
/// assert_eq!(event.payload()?["cents"], 990);
/// # Ok::<(), serde_json::Error>(())
/// ```
pub trait OutboxEvent {
    /// What happened, e.g. `"user.registered"`. Consumers route on it.
    fn event_type(&self) -> &str;

    /// The schema version of the payload, e.g. `"v2"`. Defaults to
    /// [`DEFAULT_EVENT_VERSION`].
    fn event_version(&self) -> &str {
        DEFAULT_EVENT_VERSION
    }

    /// The id of the aggregate the event belongs to. It is also the Kafka message key
    /// unless a partition key is given.
    fn aggregate_id(&self) -> String;

    /// The key that orders and partitions this event, when it is not the aggregate id.
    /// Events with the same key reach Kafka in the order their transactions committed.
    fn partition_key(&self) -> Option<String> {
        None
    }

    /// The user on whose behalf the event happened, for audit trails.
    fn user_id(&self) -> Option<String> {
        None
    }

    /// The trace the event belongs to, for distributed tracing.
    fn trace_id(&self) -> Option<String> {
        None
    }

    /// The event's data as JSON.
    fn payload(&self) -> Result<Value, serde_json::Error>;

    /// Whether the event is a tombstone: published with its key and a null value,
    /// which a compacted topic reads as "forget every earlier message of this key"
    /// (the right to be forgotten, a deleted aggregate). A tombstone carries no data:
    /// its payload must be `null`. Its headers (id, type, version, trace) are sent as
    /// for any event, and it keeps its place in its key's order.
    fn is_tombstone(&self) -> bool {
        false
    }

    /// Every event type and version this Rust type stores, for the contracts a
    /// consumer team reads (`outbox::contract::Contract`, with the `contract`
    /// feature). The derive lists the ones it declares (an enum: each
    /// variant's, a newtype variant's from the type it wraps). The default lists none:
    /// an implementation by hand that publishes a contract says what it stores.
    ///
    /// ```
    /// use outbox::{DeclaredEvent, OutboxEvent};
    /// # use serde::Serialize;
    ///
    /// #[derive(Serialize, OutboxEvent)]
    /// #[outbox(type = "user.registered", version = "v2", aggregate = "user_id")]
    /// struct UserRegistered { user_id: u64, email: String }
    ///
    /// assert_eq!(UserRegistered::declared(), [DeclaredEvent::new("user.registered", "v2")]);
    /// ```
    fn declared() -> Vec<DeclaredEvent>
    where
        Self: Sized,
    {
        Vec::new()
    }
}

/// One event type and version a Rust type stores, as [`OutboxEvent::declared`] lists
/// them: what a published contract describes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DeclaredEvent {
    event_type: Cow<'static, str>,
    event_version: Cow<'static, str>,
    tombstone: bool,
    /// Where the payload lies in the Rust type's serde representation: the indices
    /// (among the variants serde serializes) of the enum variants from the outer type
    /// in, none for the whole type; `None` inside a variant serde never serializes.
    variants: Option<Vec<u32>>,
}

impl DeclaredEvent {
    /// Events of `event_type` and `event_version` whose payload is the whole Rust type.
    pub fn new(
        event_type: impl Into<Cow<'static, str>>,
        event_version: impl Into<Cow<'static, str>>,
    ) -> Self {
        DeclaredEvent {
            event_type: event_type.into(),
            event_version: event_version.into(),
            tombstone: false,
            variants: Some(Vec::new()),
        }
    }

    /// The same events as tombstones ([`OutboxEvent::is_tombstone`]): no payload.
    pub fn tombstone(mut self) -> Self {
        self.tombstone = true;
        self
    }

    /// The event type.
    pub fn event_type(&self) -> &str {
        &self.event_type
    }

    /// The event version.
    pub fn event_version(&self) -> &str {
        &self.event_version
    }

    /// Whether the events are tombstones.
    pub fn is_tombstone(&self) -> bool {
        self.tombstone
    }

    /// The same events, found in the enum variant numbered `index` among those serde
    /// serializes (`None`: one serde never serializes) of an outer type. The derive's.
    #[doc(hidden)]
    pub fn in_variant(mut self, index: Option<u32>) -> Self {
        match (&mut self.variants, index) {
            (Some(path), Some(index)) => path.insert(0, index),
            _ => self.variants = None,
        }
        self
    }

    /// The indices of the enum variants that hold the payload, outermost first (empty:
    /// the whole type); `None` inside a variant serde never serializes.
    #[cfg_attr(not(feature = "contract"), allow(dead_code))]
    pub(crate) fn variant_path(&self) -> Option<&[u32]> {
        self.variants.as_deref()
    }
}

/// An event whose type and data are chosen at run time.
///
/// ```
/// use outbox::{EventBuilder, OutboxEvent};
/// use serde_json::json;
///
/// let event = EventBuilder::new("order.created", "order-17")
///     .version("v2")
///     .user_id("customer-4")
///     .trace_id("4bf92f3577b34da6a3ce929d0e0e4736")
///     .data(json!({ "order_id": "order-17", "amount": 4200, "currency": "EUR" }));
///
/// assert_eq!(event.event_type(), "order.created");
/// assert_eq!(event.aggregate_id(), "order-17");
/// assert_eq!(event.payload()?["amount"], 4200);
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct EventBuilder {
    event_type: String,
    aggregate_id: String,
    version: String,
    user_id: Option<String>,
    trace_id: Option<String>,
    data: Value,
    tombstone: bool,
}

impl EventBuilder {
    /// Starts an event of `event_type` for the aggregate `aggregate_id`, at version
    /// [`DEFAULT_EVENT_VERSION`], with `null` data.
    pub fn new(event_type: impl Into<String>, aggregate_id: impl ToString) -> Self {
        EventBuilder {
            event_type: event_type.into(),
            aggregate_id: aggregate_id.to_string(),
            version: DEFAULT_EVENT_VERSION.to_owned(),
            user_id: None,
            trace_id: None,
            data: Value::Null,
            tombstone: false,
        }
    }

    /// Makes the event a tombstone ([`OutboxEvent::is_tombstone`]): published with its
    /// key (the aggregate id, or the partition key it is stored with) and a null value.
    /// It must carry no data: storing a tombstone with data is refused.
    ///
    /// ```
    /// use outbox::{EventBuilder, OutboxEvent};
    ///
    /// let forgotten = EventBuilder::new("customer.forgotten", "customer-4").tombstone();
    /// assert!(forgotten.is_tombstone());
    /// assert_eq!(forgotten.payload()?, serde_json::Value::Null);
    /// # Ok::<(), serde_json::Error>(())
    /// ```
    pub fn tombstone(mut self) -> Self {
        self.tombstone = true;
        self
    }

    /// Sets the schema version.
    pub fn version(mut self, version: impl Into<String>) -> Self {
        self.version = version.into();
        self
    }

    /// Sets the user on whose behalf the event happened.
    pub fn user_id(mut self, user_id: impl ToString) -> Self {
        self.user_id = Some(user_id.to_string());
        self
    }

    /// Sets the trace id.
    pub fn trace_id(mut self, trace_id: impl Into<String>) -> Self {
        self.trace_id = Some(trace_id.into());
        self
    }

    /// Sets the event's data.
    pub fn data(mut self, data: Value) -> Self {
        self.data = data;
        self
    }

    /// Sets the event's data by serializing `data`.
    ///
    /// # Errors
    /// [`Error::Serialize`] when `data` cannot be represented as JSON.
    pub fn serialize_data<T: Serialize + ?Sized>(self, data: &T) -> Result<Self, Error> {
        match serde_json::to_value(data) {
            Ok(value) => Ok(self.data(value)),
            Err(source) => Err(Error::Serialize {
                event_type: self.event_type,
                source,
            }),
        }
    }
}

impl OutboxEvent for EventBuilder {
    fn event_type(&self) -> &str {
        &self.event_type
    }

    fn event_version(&self) -> &str {
        &self.version
    }

    fn aggregate_id(&self) -> String {
        self.aggregate_id.clone()
    }

    fn user_id(&self) -> Option<String> {
        self.user_id.clone()
    }

    fn trace_id(&self) -> Option<String> {
        self.trace_id.clone()
    }

    fn payload(&self) -> Result<Value, serde_json::Error> {
        Ok(self.data.clone())
    }

    fn is_tombstone(&self) -> bool {
        self.tombstone
    }
}
