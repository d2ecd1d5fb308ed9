//! Behaviour of the impls that `#[derive(OutboxEvent)]` generates.

use std::fmt::Display;

use outbox::OutboxEvent;
use serde::Serialize;
use serde_json::json;
use uuid::Uuid;

#[derive(Serialize, OutboxEvent)]
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

#[test]
fn borrowed_fields_work() {
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
