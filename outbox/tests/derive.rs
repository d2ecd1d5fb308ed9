//! Behaviour of the impls that `#[derive(OutboxEvent)]` generates.

use std::fmt::Display;

use outbox::{DeclaredEvent, DecodeEvent, Error, OutboxEvent};
use serde::{Deserialize, Serialize};
use serde_json::json;
use uuid::Uuid;

#[derive(Debug, PartialEq, Serialize, Deserialize, OutboxEvent)]
#[outbox(type = "user.registered", version = "v2", aggregate = "user_id")]
struct UserRegistered {
    user_id: Uuid,
    email: String,
}

#[test]
fn container_attributes_set_type_version_and_aggregate() {
    let id = Uuid::now_v7();
    let event = UserRegistered {
        user_id: id,
        email: "ada@example.com".into(),
    };
    assert_eq!(event.event_type(), "user.registered");
    assert_eq!(event.event_version(), "v2");
    assert_eq!(event.aggregate_id(), id.to_string());
    assert_eq!(event.partition_key(), None);
    assert_eq!((event.user_id(), event.trace_id()), (None, None));
    assert_eq!(
        event.payload().expect("payload"),
        json!({ "user_id": id, "email": "ada@example.com" })
    );
}

#[derive(Serialize, OutboxEvent)]
#[outbox(type = "order.shipped")]
struct OrderShipped {
    #[outbox(aggregate)]
    order_id: u64,
    #[outbox(partition_key)]
    customer: String,
    #[serde(rename = "carrierName")]
    carrier: String,
}

#[test]
fn field_attributes_mark_aggregate_and_partition_key() {
    let event = OrderShipped {
        order_id: 17,
        customer: "c-4".into(),
        carrier: "DHL".into(),
    };
    assert_eq!(event.event_version(), outbox::DEFAULT_EVENT_VERSION);
    assert_eq!(event.aggregate_id(), "17");
    assert_eq!(event.partition_key().as_deref(), Some("c-4"));
    assert_eq!(
        event.payload().expect("payload"),
        json!({ "order_id": 17, "customer": "c-4", "carrierName": "DHL" }),
        "serde attributes shape the payload"
    );
}

#[derive(Serialize, OutboxEvent)]
#[outbox(type = "item.added", aggregate = "cart", partition_key = "tenant")]
struct ItemAdded<K, T>
where
    T: Serialize,
{
    cart: K,
    tenant: i32,
    item: T,
}

#[test]
fn generic_structs_get_the_bounds_they_need() {
    fn key_of<K: Display + Serialize, T: Serialize>(event: &ItemAdded<K, T>) -> String {
        event.aggregate_id()
    }
    let event = ItemAdded {
        cart: 'c',
        tenant: -3,
        item: vec![1, 2],
    };
    assert_eq!(key_of(&event), "c");
    assert_eq!(event.partition_key().as_deref(), Some("-3"));
    assert_eq!(
        event.payload().expect("payload"),
        json!({ "cart": "c", "tenant": -3, "item": [1, 2] })
    );
}

#[derive(Serialize, OutboxEvent)]
#[outbox(type = "note.added", aggregate = "id")]
struct NoteAdded<'a> {
    id: &'a str,
}

/// A lifetime named like the one the decoding bound introduces.
#[derive(Serialize, OutboxEvent)]
#[outbox(type = "note.tagged", aggregate = "id")]
struct NoteTagged<'de> {
    id: &'de str,
}

#[test]
fn borrowed_fields_work() {
    assert_eq!(NoteTagged { id: "n-2" }.aggregate_id(), "n-2");
    assert_eq!(NoteAdded { id: "n-1" }.aggregate_id(), "n-1");
}

mod renamed {
    pub(crate) use outbox as events;
}

#[derive(Serialize, OutboxEvent)]
#[outbox(
    type = "renamed.crate",
    aggregate = "id",
    crate = "crate::renamed::events"
)]
struct ThroughRenamedCrate {
    id: u8,
}

#[test]
fn crate_path_can_be_overridden() {
    assert_eq!(ThroughRenamedCrate { id: 9 }.aggregate_id(), "9");
}

#[test]
fn derived_events_are_usable_as_trait_objects() {
    let events: Vec<Box<dyn OutboxEvent>> = vec![
        Box::new(ThroughRenamedCrate { id: 1 }),
        Box::new(NoteAdded { id: "n" }),
    ];
    let types: Vec<&str> = events.iter().map(|e| e.event_type()).collect();
    assert_eq!(types, ["renamed.crate", "note.added"]);
}

#[test]
fn a_struct_decodes_its_own_type_and_version_only() {
    let event = UserRegistered {
        user_id: Uuid::now_v7(),
        email: "ada@example.com".into(),
    };
    let payload = serde_json::to_vec(&event.payload().expect("payload")).expect("json");
    assert!(UserRegistered::accepts("user.registered", "v2"));
    assert!(
        UserRegistered::knows_type("user.registered"),
        "in any version"
    );
    assert!(!UserRegistered::knows_type("user.deleted"));
    let decoded = UserRegistered::decode("user.registered", "v2", &payload).expect("decode");
    assert_eq!(decoded, event);

    for (event_type, version) in [("user.registered", "v1"), ("user.deleted", "v2")] {
        assert!(!UserRegistered::accepts(event_type, version));
        let error = UserRegistered::decode(event_type, version, &payload).expect_err("unknown");
        assert!(
            matches!(&error, Error::UnknownEvent { event_type: t, event_version: v, target }
                if t == event_type && v == version && target.ends_with("UserRegistered")),
            "{error:?}"
        );
        assert!(
            error.to_string().contains(&format!("{event_type:?}")),
            "{error}"
        );
    }
}

#[test]
fn a_payload_that_does_not_fit_is_a_deserialize_error_naming_the_event() {
    let payload = br#"{"user_id": "00000000-0000-0000-0000-000000000000"}"#;
    let error = UserRegistered::decode("user.registered", "v2", payload).expect_err("no email");
    assert!(
        matches!(&error, Error::Deserialize { event_type, event_version, .. }
            if event_type == "user.registered" && event_version == "v2"),
        "{error:?}"
    );
    let source = std::error::Error::source(&error).expect("the serde error is kept");
    assert!(source.to_string().contains("email"), "{source}");
}

/// The issue's example: one event type per variant, each with its own attributes.
#[derive(Debug, PartialEq, Serialize, Deserialize, OutboxEvent)]
#[serde(rename_all = "snake_case", rename_all_fields = "camelCase")]
enum UserEvent {
    #[outbox(type = "user.registered", version = "v2", aggregate = "user_id")]
    Registered { user_id: Uuid, email: String },
    #[outbox(type = "user.deleted", aggregate = "user_id")]
    Deleted {
        user_id: Uuid,
        #[outbox(partition_key)]
        tenant: String,
    },
    /// A variant serde never reads: it is stored, but not decoded into.
    #[serde(skip_deserializing)]
    #[outbox(type = "user.audited", aggregate = "user_id")]
    Audited { user_id: Uuid },
    #[outbox(type = "user.renamed", version = "v3", aggregate = "user_id")]
    #[serde(rename = "name_changed")]
    Renamed { user_id: Uuid, name: String },
}

#[test]
fn each_variant_of_an_enum_is_an_event_type_of_its_own() {
    let id = Uuid::now_v7();
    let registered = UserEvent::Registered {
        user_id: id,
        email: "ada@example.com".into(),
    };
    assert_eq!(
        (registered.event_type(), registered.event_version()),
        ("user.registered", "v2")
    );
    assert_eq!(registered.aggregate_id(), id.to_string());
    assert_eq!(registered.partition_key(), None);
    assert_eq!(
        registered.payload().expect("payload"),
        json!({ "userId": id, "email": "ada@example.com" }),
        "the payload is the variant's content, shaped by serde's attributes, without the variant's name"
    );

    let deleted = UserEvent::Deleted {
        user_id: id,
        tenant: "acme".into(),
    };
    assert_eq!(
        (deleted.event_type(), deleted.event_version()),
        ("user.deleted", outbox::DEFAULT_EVENT_VERSION)
    );
    assert_eq!(deleted.partition_key().as_deref(), Some("acme"));
    assert_eq!(
        deleted.payload().expect("payload"),
        json!({ "userId": id, "tenant": "acme" })
    );

    let audited = UserEvent::Audited { user_id: id };
    assert_eq!(audited.event_type(), "user.audited");
    assert_eq!(
        audited.payload().expect("payload"),
        json!({ "userId": id }),
        "a variant serde skips when deserializing is still stored"
    );
}

#[test]
fn an_enum_decodes_each_variant_by_type_and_version() {
    let id = Uuid::now_v7();
    let events = [
        UserEvent::Registered {
            user_id: id,
            email: "ada@example.com".into(),
        },
        UserEvent::Deleted {
            user_id: id,
            tenant: "acme".into(),
        },
        UserEvent::Renamed {
            user_id: id,
            name: "Ada".into(),
        },
    ];
    for event in events {
        let payload = serde_json::to_vec(&event.payload().expect("payload")).expect("json");
        assert!(UserEvent::accepts(
            event.event_type(),
            event.event_version()
        ));
        let decoded =
            UserEvent::decode(event.event_type(), event.event_version(), &payload).expect("decode");
        assert_eq!(decoded, event);
    }

    assert!(!UserEvent::accepts("user.audited", "v1"), "serde skips it");
    assert!(UserEvent::knows_type("user.registered"));
    assert!(!UserEvent::knows_type("user.audited"), "serde skips it");
    assert!(!UserEvent::knows_type("order.created"));
    for (event_type, version) in [
        ("user.registered", "v1"),
        ("user.renamed", "v2"),
        ("order.created", "v1"),
        ("user.audited", "v1"),
    ] {
        let error = UserEvent::decode(event_type, version, b"{}").expect_err("unknown");
        assert!(
            matches!(&error, Error::UnknownEvent { target, .. } if target.ends_with("UserEvent")),
            "{error:?}"
        );
    }

    let error = UserEvent::decode("user.deleted", "v1", br#"{"userId": "not a uuid"}"#)
        .expect_err("bad payload");
    assert!(matches!(error, Error::Deserialize { .. }), "{error:?}");
    let error =
        UserEvent::decode("user.deleted", "v1", b"{} trailing").expect_err("trailing characters");
    assert!(matches!(error, Error::Deserialize { .. }), "{error:?}");
}

/// An enum over existing event structs: each newtype variant is described by its
/// field's own impl.
#[derive(Debug, PartialEq, Serialize, Deserialize, OutboxEvent)]
enum Inbound {
    Registered(UserRegistered),
    User(UserEvent),
    #[outbox(type = "order.paid", aggregate = "order_id")]
    OrderPaid {
        order_id: u64,
    },
}

#[test]
fn newtype_variants_delegate_to_the_event_they_wrap() {
    let id = Uuid::now_v7();
    let inner = UserRegistered {
        user_id: id,
        email: "ada@example.com".into(),
    };
    let event = Inbound::Registered(UserRegistered {
        user_id: id,
        email: "ada@example.com".into(),
    });
    assert_eq!(event.event_type(), inner.event_type());
    assert_eq!(event.event_version(), inner.event_version());
    assert_eq!(event.aggregate_id(), inner.aggregate_id());
    assert_eq!(
        event.payload().expect("payload"),
        inner.payload().expect("payload")
    );

    let payload = serde_json::to_vec(&inner.payload().expect("payload")).expect("json");
    assert_eq!(
        Inbound::decode("user.registered", "v2", &payload).expect("decode"),
        event
    );
    let deleted = br#"{"userId": "00000000-0000-0000-0000-000000000000", "tenant": "t"}"#;
    assert_eq!(
        Inbound::decode("user.deleted", "v1", deleted).expect("decode"),
        Inbound::User(UserEvent::Deleted {
            user_id: Uuid::nil(),
            tenant: "t".into()
        })
    );
    assert_eq!(
        Inbound::decode("order.paid", "v1", br#"{"order_id": 3}"#).expect("decode"),
        Inbound::OrderPaid { order_id: 3 }
    );
    assert!(!Inbound::accepts("user.audited", "v1"));
    for known in ["user.registered", "user.deleted", "order.paid"] {
        assert!(Inbound::knows_type(known), "{known}");
    }
    assert!(!Inbound::knows_type("order.shipped"));
}

/// Stored only: without `Deserialize` it is an event, just not a decodable one.
#[derive(Serialize, OutboxEvent)]
enum StoredOnly {
    #[outbox(type = "audit.logged", aggregate = "id")]
    Logged { id: u32 },
}

#[test]
fn an_event_without_deserialize_is_still_an_event() {
    let event = StoredOnly::Logged { id: 4 };
    assert_eq!(event.payload().expect("payload"), json!({ "id": 4 }));
}

#[derive(Debug, PartialEq, Serialize, Deserialize, OutboxEvent)]
enum Tagged<T> {
    #[outbox(type = "box.packed", aggregate = "id")]
    Packed { id: T, weight: u32 },
}

#[test]
fn generic_enums_get_the_bounds_they_need() {
    fn round_trip<T>(event: Tagged<T>) -> Tagged<T>
    where
        T: Display + Serialize + serde::de::DeserializeOwned,
    {
        let payload = serde_json::to_vec(&event.payload().expect("payload")).expect("json");
        Tagged::decode(event.event_type(), event.event_version(), &payload).expect("decode")
    }
    let event = Tagged::Packed { id: 'x', weight: 3 };
    assert_eq!(event.aggregate_id(), "x");
    assert_eq!(
        round_trip(Tagged::Packed { id: 7u8, weight: 1 }),
        Tagged::Packed { id: 7, weight: 1 }
    );
}

#[test]
fn the_derive_and_the_crate_agree_on_the_default_version() {
    // The derive tells variants apart by version without seeing the crate's constant.
    assert_eq!(outbox::DEFAULT_EVENT_VERSION, "v1");
}

/// A tombstone is not serialized (its payload is null); decoding asks `Deserialize`
/// as of any event.
#[derive(Debug, PartialEq, Deserialize, OutboxEvent)]
#[outbox(type = "customer.forgotten", aggregate = "customer_id", tombstone)]
struct CustomerForgotten {
    customer_id: u64,
    #[outbox(partition_key)]
    tenant: String,
}

#[test]
fn a_tombstone_struct_has_a_null_payload_and_is_read_back_from_its_keys() {
    let event = CustomerForgotten {
        customer_id: 7,
        tenant: "acme".into(),
    };
    assert!(event.is_tombstone());
    assert_eq!(event.payload().expect("payload"), serde_json::Value::Null);
    assert_eq!(event.partition_key().as_deref(), Some("acme"));
    let decoded = CustomerForgotten::decode_tombstone("customer.forgotten", "v1", "7", "acme");
    assert_eq!(decoded.expect("read from its keys"), event);
}

#[derive(Debug, PartialEq, Serialize, Deserialize, OutboxEvent)]
#[outbox(type = "session.ended", aggregate = "session", tombstone)]
struct SessionEnded {
    session: Uuid,
}

#[derive(Debug, PartialEq, Serialize, Deserialize, OutboxEvent)]
enum AccountEvent {
    #[outbox(type = "account.opened", aggregate = "account")]
    Opened {
        account: u64,
        owner: String,
    },
    #[outbox(
        type = "account.closed",
        version = "v2",
        aggregate = "account",
        tombstone
    )]
    Closed {
        account: u64,
    },
    Session(SessionEnded),
}

#[test]
fn declared_lists_every_event_type_and_version_a_type_stores() {
    let listed = |declared: Vec<DeclaredEvent>| {
        declared
            .iter()
            .map(|d| {
                (
                    d.event_type().to_owned(),
                    d.event_version().to_owned(),
                    d.is_tombstone(),
                )
            })
            .collect::<Vec<_>>()
    };
    let owned = |list: &[(&str, &str, bool)]| {
        list.iter()
            .map(|(t, v, tombstone)| ((*t).to_owned(), (*v).to_owned(), *tombstone))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        listed(UserEvent::declared()),
        owned(&[
            ("user.registered", "v2", false),
            ("user.deleted", "v1", false),
            ("user.audited", "v1", false),
            ("user.renamed", "v3", false),
        ]),
        "every variant, in order, the one serde skips when deserializing too"
    );
    assert_eq!(
        listed(AccountEvent::declared()),
        owned(&[
            ("account.opened", "v1", false),
            ("account.closed", "v2", true),
            ("session.ended", "v1", true),
        ]),
        "a newtype variant lists its type's"
    );
    assert_eq!(
        SessionEnded::declared(),
        [DeclaredEvent::new("session.ended", "v1").tombstone()]
    );
    assert!(
        outbox::EventBuilder::declared().is_empty(),
        "dynamic events declare none"
    );
}

#[test]
fn tombstones_decode_from_their_keys_in_structs_and_every_kind_of_variant() {
    let session = Uuid::now_v7();
    let decoded = SessionEnded::decode_tombstone("session.ended", "v1", &session.to_string(), "k")
        .expect("a tombstone struct");
    assert_eq!(decoded, SessionEnded { session });

    let closed = AccountEvent::decode_tombstone("account.closed", "v2", "41", "41");
    assert_eq!(
        closed.expect("a named variant"),
        AccountEvent::Closed { account: 41 }
    );
    let ended = AccountEvent::decode_tombstone("session.ended", "v1", &session.to_string(), "x");
    assert_eq!(
        ended.expect("a newtype variant"),
        AccountEvent::Session(SessionEnded { session })
    );
    assert!(AccountEvent::Closed { account: 41 }.is_tombstone());
    assert!(AccountEvent::Session(SessionEnded { session }).is_tombstone());
    let opened = AccountEvent::Opened {
        account: 1,
        owner: "ada".into(),
    };
    assert!(!opened.is_tombstone());
    assert_eq!(
        AccountEvent::Closed { account: 41 }
            .payload()
            .expect("payload"),
        serde_json::Value::Null
    );
}

#[test]
fn a_tombstone_the_type_does_not_declare_or_keys_that_do_not_fit_are_named() {
    match AccountEvent::decode_tombstone("account.opened", "v1", "1", "1") {
        Err(Error::UnexpectedTombstone {
            event_type,
            event_version,
            ..
        }) => assert_eq!(
            (event_type.as_str(), event_version.as_str()),
            ("account.opened", "v1")
        ),
        other => panic!("expected UnexpectedTombstone, got {other:?}"),
    }
    assert!(matches!(
        AccountEvent::decode_tombstone("account.closed", "v1", "1", "1"),
        Err(Error::UnknownEvent { .. })
    ));
    assert!(matches!(
        UserRegistered::decode_tombstone("user.registered", "v2", "u", "u"),
        Err(Error::UnexpectedTombstone { .. })
    ));
    match AccountEvent::decode_tombstone("account.closed", "v2", "forty-one", "forty-one") {
        Err(error @ Error::Deserialize { .. }) => {
            let cause = std::error::Error::source(&error)
                .expect("a cause")
                .to_string();
            assert!(
                cause.contains("`account`") && cause.contains("\"forty-one\""),
                "{cause}"
            );
        }
        other => panic!("expected Deserialize, got {other:?}"),
    }
}
