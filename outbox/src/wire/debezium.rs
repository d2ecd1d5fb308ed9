//! Debezium's outbox event router, as a consumer written for it reads its output.
//!
//! With its defaults, for an outbox row (`id`, `aggregatetype`, `aggregateid`, `type`,
//! `payload`), Debezium emits a message whose key is `aggregateid`, whose value is
//! `payload`, with the header `id` holding the event id, to the topic
//! `outbox.event.<aggregatetype>`. This format writes the same message from this
//! crate's row:
//!
//! | Debezium | here |
//! |---|---|
//! | key: `aggregateid` | the partition key, or the aggregate id |
//! | value: `payload` | the payload (JSON text: Debezium's output with a string converter or `table.expand.json.payload=true`) |
//! | header `id` | the event id |
//! | topic `outbox.event.<aggregatetype>` | the topic given at store time: [`debezium_topic`] names Debezium's for an aggregate type |
//! | header `eventType` (with `table.fields.additional.placement=type:header:eventType`) | the event type |
//! | (none) | header `eventVersion`: the event version |
//! | a tombstone, with `route.tombstone.on.empty.payload=true` | a tombstone: the key, a null value, the headers |
//! | header `traceparent` (Debezium's OpenTelemetry tracing) | the W3C trace context, when the trace id is one |
//!
//! A consumer written for Debezium reads the key, the value and `id` as before; the
//! other headers are for this crate's consumer, which needs the type and version to
//! decode.

use crate::wire::Message;
use crate::wire::headers::debezium::{EVENT_TYPE, EVENT_VERSION, ID, TRACEPARENT};

/// The topic Debezium's outbox event router routes events of `aggregate_type` to with
/// its defaults (`route.by.field=aggregatetype`,
/// `route.topic.replacement=outbox.event.${routedByValue}`): store to it where
/// consumers subscribe to Debezium's topics.
///
/// ```
/// use outbox::{EventBuilder, Envelope, debezium_topic};
///
/// assert_eq!(debezium_topic("order"), "outbox.event.order");
/// let event = EventBuilder::new("order.created", "17");
/// let envelope = Envelope::new(&event, debezium_topic("order"))?;
/// # Ok::<(), outbox::Error>(())
/// ```
pub fn debezium_topic(aggregate_type: &str) -> String {
    format!("outbox.event.{aggregate_type}")
}

/// The headers of `message` in this format.
pub(crate) fn headers(message: &Message) -> Vec<(&'static str, String)> {
    let mut all = vec![
        (ID, message.id.to_string()),
        (EVENT_TYPE, message.event_type.clone()),
        (EVENT_VERSION, message.event_version.clone()),
    ];
    if let Some(traceparent) = message.traceparent() {
        all.push((TRACEPARENT, traceparent));
    }
    all
}

#[cfg(test)]
mod tests {
    use uuid::Uuid;

    use super::*;
    use crate::wire::format::MessageFormat;
    use crate::wire::message::sample;

    /// Debezium's documented example: the row `id = 406c07f3-26f0-4eea-a50c-109940064b8f`,
    /// `aggregatetype = Order`, `aggregateid = 1`, `type = OrderCreated`, `payload` an
    /// order, becomes a message with key `1`, the header `id` and the payload as value.
    #[test]
    fn the_message_is_debeziums_default_output_for_the_same_row() {
        let payload = r#"{"id": 1, "customerId": 123, "orderDate": "2019-01-31T12:13:01"}"#;
        let message = Message {
            id: Uuid::parse_str("406c07f3-26f0-4eea-a50c-109940064b8f").expect("a UUID"),
            event_type: "OrderCreated".into(),
            event_version: "v1".into(),
            aggregate_id: "1".into(),
            topic: debezium_topic("Order"),
            key: "1".into(),
            payload: payload.into(),
            extra_headers: Vec::new(),
            trace_id: None,
            user_id: None,
            ..sample(MessageFormat::Debezium)
        };
        assert_eq!(message.key, "1", "key: aggregateid");
        assert_eq!(message.value().as_deref(), Some(payload), "value: payload");
        assert_eq!(
            message.headers(),
            vec![
                ("id", "406c07f3-26f0-4eea-a50c-109940064b8f".to_owned()),
                ("eventType", "OrderCreated".to_owned()),
                ("eventVersion", "v1".to_owned()),
            ],
            "Debezium's header id, then what this crate's consumer needs"
        );
    }
}
