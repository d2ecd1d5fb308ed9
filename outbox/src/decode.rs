//! Reading events back: the [`DecodeEvent`] trait, and what the derive's expansion
//! calls to decode a struct or one variant of an enum.

use serde::de::{self, DeserializeOwned, IntoDeserializer, Visitor};
use serde_json::Value;

use crate::error::{Error, Result};

/// An event type that can be read back from a received message, by the message's
/// `event_type` and `event_version` headers and its JSON payload.
///
/// `#[derive(OutboxEvent)]` implements it for every event that also implements
/// serde's `Deserialize`: a struct decodes its own type and version; an enum decodes
/// each of its variants' (see the [crate documentation](crate#events-as-enums)).
///
/// ```
/// use outbox::{DecodeEvent, OutboxEvent};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Debug, PartialEq, Serialize, Deserialize, OutboxEvent)]
/// #[outbox(type = "user.registered", version = "v2", aggregate = "user_id")]
/// struct UserRegistered { user_id: u64, email: String }
///
/// let event = UserRegistered::decode(
///     "user.registered", "v2", br#"{"user_id": 7, "email": "ada@example.com"}"#,
/// )?;
/// assert_eq!(event.user_id, 7);
///
/// let old = UserRegistered::decode("user.registered", "v1", b"{}");
/// assert!(matches!(old, Err(outbox::Error::UnknownEvent { .. })));
/// # Ok::<(), outbox::Error>(())
/// ```
pub trait DecodeEvent: Sized {
    /// Whether [`decode`](DecodeEvent::decode) reads events of this type and version.
    fn accepts(event_type: &str, event_version: &str) -> bool;

    /// Whether events of `event_type`, in some version, belong to this Rust type. A
    /// [`Consumer`](crate::Consumer) that skips unknown events
    /// ([`ConsumerConfig::skip_unknown_events`](crate::ConsumerConfig::skip_unknown_events))
    /// skips only types this answers `false` for: a version it does not know of a
    /// type it knows (a producer that upgraded first) is dead-lettered, not lost.
    ///
    /// The derive answers from the types it declares. The default answers `true`, so
    /// that nothing is ever skipped for an implementation that does not say.
    fn knows_type(event_type: &str) -> bool {
        let _ = event_type;
        true
    }

    /// Reads an event of `event_type` and `event_version` from its JSON `payload`.
    ///
    /// # Errors
    /// [`Error::UnknownEvent`] when this Rust type has no place for the event's type
    /// and version; [`Error::Deserialize`] when the payload does not fit it.
    fn decode(event_type: &str, event_version: &str, payload: &[u8]) -> Result<Self>;

    /// Reads a tombstone: an event of `event_type` and `event_version` published with
    /// a null value ([`OutboxEvent::is_tombstone`](crate::OutboxEvent::is_tombstone)),
    /// of the aggregate `aggregate_id`, under the message key `key` (each stands in
    /// for the other when the message carries only one).
    ///
    /// The derive reads the types it declares `tombstone` from these keys alone (see
    /// the [crate documentation](crate#tombstones)). The default refuses every
    /// tombstone.
    ///
    /// # Errors
    /// [`Error::UnknownEvent`] when this Rust type has no place for the event's type
    /// and version; [`Error::UnexpectedTombstone`] when it has, but not as a
    /// tombstone; [`Error::Deserialize`] when a key does not fit its field.
    fn decode_tombstone(
        event_type: &str,
        event_version: &str,
        aggregate_id: &str,
        key: &str,
    ) -> Result<Self> {
        let _ = (aggregate_id, key);
        if !Self::accepts(event_type, event_version) {
            return Err(unknown_event::<Self>(event_type, event_version));
        }
        Err(unexpected_tombstone::<Self>(event_type, event_version))
    }
}

/// The error for a tombstone of a type and version `T` reads only with a payload.
#[doc(hidden)]
pub fn unexpected_tombstone<T>(event_type: &str, event_version: &str) -> Error {
    Error::UnexpectedTombstone {
        event_type: event_type.to_owned(),
        event_version: event_version.to_owned(),
        target: std::any::type_name::<T>(),
    }
}

/// Reads one key field of a derived tombstone from `text` (the aggregate id or the
/// message key) with the field's `FromStr`.
#[doc(hidden)]
pub fn tombstone_field<T>(
    event_type: &str,
    event_version: &str,
    field: &str,
    text: &str,
) -> Result<T>
where
    T: std::str::FromStr,
    T::Err: std::fmt::Display,
{
    text.parse().map_err(|error| {
        let source = <serde_json::Error as de::Error>::custom(format_args!(
            "the tombstone's field `{field}` cannot be read from {text:?}: {error}"
        ));
        deserialize_error(event_type, event_version, source)
    })
}

/// Decodes a derived struct: the whole payload is the struct.
#[doc(hidden)]
pub fn decode_struct<T: DeserializeOwned>(
    accepted: bool,
    event_type: &str,
    event_version: &str,
    payload: &[u8],
) -> Result<T> {
    if !accepted {
        return Err(unknown_event::<T>(event_type, event_version));
    }
    serde_json::from_slice(payload)
        .map_err(|source| deserialize_error(event_type, event_version, source))
}

/// Decodes one variant of a derived enum: the payload is the variant's content, which
/// serde's own `Deserialize` impl reads as the variant numbered `index` (serde numbers
/// the variants it deserializes, as non-self-describing formats need). The variant's
/// serde name (renamed or not) plays no part.
#[doc(hidden)]
pub fn decode_variant<T: DeserializeOwned>(
    index: u32,
    event_type: &str,
    event_version: &str,
    payload: &[u8],
) -> Result<T> {
    let mut json = serde_json::Deserializer::from_slice(payload);
    T::deserialize(Variant {
        index,
        content: &mut json,
    })
    .and_then(|value| json.end().map(|()| value))
    .map_err(|source| deserialize_error(event_type, event_version, source))
}

/// The payload of one variant of a derived enum: serde writes a variant as
/// `{"Variant": content}`; the event's payload is the content alone (its type travels
/// in the `event_type` header).
#[doc(hidden)]
pub fn variant_payload(
    value: Result<Value, serde_json::Error>,
) -> Result<Value, serde_json::Error> {
    match value? {
        Value::Object(map) if map.len() == 1 => Ok(map
            .into_iter()
            .next()
            .map_or(Value::Null, |(_, content)| content)),
        _ => Err(<serde_json::Error as serde::ser::Error>::custom(
            "an OutboxEvent enum must keep serde's default representation: {\"Variant\": content}",
        )),
    }
}

/// The error for an event `T` has no place for.
#[doc(hidden)]
pub fn unknown_event<T>(event_type: &str, event_version: &str) -> Error {
    Error::UnknownEvent {
        event_type: event_type.to_owned(),
        event_version: event_version.to_owned(),
        target: std::any::type_name::<T>(),
    }
}

fn deserialize_error(event_type: &str, event_version: &str, source: serde_json::Error) -> Error {
    Error::Deserialize {
        event_type: event_type.to_owned(),
        event_version: event_version.to_owned(),
        source,
    }
}

/// A deserializer that presents the variant numbered `index`, with `content` as its
/// data, to an enum's `Deserialize` impl.
struct Variant<'a, 'de> {
    index: u32,
    content: &'a mut serde_json::Deserializer<serde_json::de::SliceRead<'de>>,
}

const NOT_AN_ENUM: &str = "decode_variant reads an enum in serde's default representation";

impl<'de> de::Deserializer<'de> for Variant<'_, 'de> {
    type Error = serde_json::Error;

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        visitor.visit_enum(self)
    }

    fn deserialize_any<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value, Self::Error> {
        Err(de::Error::custom(NOT_AN_ENUM))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
        byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map
        struct identifier ignored_any
    }
}

impl<'de> de::EnumAccess<'de> for Variant<'_, 'de> {
    type Error = serde_json::Error;
    type Variant = Self;

    fn variant_seed<S: de::DeserializeSeed<'de>>(
        self,
        seed: S,
    ) -> Result<(S::Value, Self), Self::Error> {
        let index: de::value::U32Deserializer<serde_json::Error> = self.index.into_deserializer();
        Ok((seed.deserialize(index)?, self))
    }
}

impl<'de> de::VariantAccess<'de> for Variant<'_, 'de> {
    type Error = serde_json::Error;

    fn unit_variant(self) -> Result<(), Self::Error> {
        de::Deserialize::deserialize(&mut *self.content)
    }

    fn newtype_variant_seed<S: de::DeserializeSeed<'de>>(
        self,
        seed: S,
    ) -> Result<S::Value, Self::Error> {
        seed.deserialize(&mut *self.content)
    }

    fn tuple_variant<V: Visitor<'de>>(
        self,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        de::Deserializer::deserialize_tuple(&mut *self.content, len, visitor)
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        de::Deserializer::deserialize_struct(&mut *self.content, "", fields, visitor)
    }
}
