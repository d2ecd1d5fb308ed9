//! The AsyncAPI 3.0 document: a channel per topic, a message per event type and
//! version, an operation sending them.
//!
//! A message's headers and value are read off the messages the relay would publish
//! ([`Message::headers`], [`Message::value`]) for the topic's format, not restated
//! here: a header present in every one of them is required, one present only with a
//! user id or a trace is optional.

use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};
use uuid::Uuid;

use super::{Contract, Generated, GeneratedEvent, GeneratedTopic, identifier};
use crate::wire::headers::{self, cloudevents, debezium};
use crate::wire::{Encoding, Message, MessageFormat};

/// The AsyncAPI version written.
const ASYNCAPI: &str = "3.0.0";

/// Where the document's definitions are, as references name them.
pub(super) const PREFIX: &str = "#/components/schemas/";

/// The Kafka bindings' version written.
const KAFKA_BINDING: &str = "0.5.0";

pub(super) fn document(contract: &Contract, generated: &Generated) -> Value {
    let mut info = Map::new();
    info.insert("title".into(), json!(contract.title));
    info.insert("version".into(), json!(contract.version));
    if let Some(description) = &contract.description {
        info.insert("description".into(), json!(description));
    }
    let mut document = Map::new();
    document.insert("asyncapi".into(), json!(ASYNCAPI));
    document.insert("info".into(), Value::Object(info));
    if !contract.servers.is_empty() {
        let servers: Map<String, Value> = contract
            .servers
            .iter()
            .map(|(name, host)| {
                (
                    identifier(name),
                    json!({ "host": host, "protocol": "kafka" }),
                )
            })
            .collect();
        document.insert("servers".into(), Value::Object(servers));
    }
    document.insert("defaultContentType".into(), json!(cloudevents::JSON));
    let mut channels = Map::new();
    let mut operations = Map::new();
    for topic in &generated.topics {
        let (channel, messages) = channel(topic);
        let id = identifier(&topic.name);
        operations.insert(
            format!("send_{id}"),
            json!({
                "action": "send",
                "summary": format!("The relay publishes the events stored to {}.", topic.name),
                "channel": { "$ref": format!("#/channels/{id}") },
                "messages": messages
                    .iter()
                    .map(|message| json!({ "$ref": format!("#/channels/{id}/messages/{message}") }))
                    .collect::<Vec<_>>(),
            }),
        );
        channels.insert(id, channel);
    }
    document.insert("channels".into(), Value::Object(channels));
    document.insert("operations".into(), Value::Object(operations));
    // The definitions the messages refer to (a type's whole enum is not one of them).
    let payloads = generated
        .topics
        .iter()
        .flat_map(|topic| &topic.events)
        .map(|event| event.payload.clone())
        .collect();
    let used = super::split::reachable(&Value::Array(payloads), &generated.definitions, PREFIX);
    if !used.is_empty() {
        document.insert("components".into(), json!({ "schemas": used }));
    }
    Value::Object(document)
}

/// A topic's channel, and the ids of its messages.
fn channel(topic: &GeneratedTopic) -> (Value, Vec<String>) {
    let mut messages = Map::new();
    for event in &topic.events {
        let mut id = identifier(&format!("{}.{}", event.event_type(), event.event_version()));
        while messages.contains_key(&id) {
            id.push('_');
        }
        messages.insert(id, message(&topic.encoding, event));
    }
    let ids = messages.keys().cloned().collect();
    let channel = json!({
        "address": topic.name,
        "description": format!(
            "Written by the relay in the `{}` format; the key orders each aggregate's events.",
            topic.encoding.format()
        ),
        "messages": messages,
        "bindings": { "kafka": { "topic": topic.name, "bindingVersion": KAFKA_BINDING } },
    });
    (channel, ids)
}

/// One event type and version as a Kafka message of the topic's format.
fn message(encoding: &Encoding, event: &GeneratedEvent) -> Value {
    let samples = samples(encoding, event);
    let format = samples[0].wire_format();
    let payload = match (format, samples[0].tombstone) {
        (_, true)
        | (
            MessageFormat::Native | MessageFormat::CloudEventsBinary | MessageFormat::Debezium,
            false,
        ) => event.payload.clone(),
        (MessageFormat::CloudEventsStructured, false) => structured(&samples, &event.payload),
    };
    let mut message = Map::new();
    message.insert("name".into(), json!(event.event_type()));
    message.insert(
        "title".into(),
        json!(format!("{} {}", event.event_type(), event.event_version())),
    );
    if event.declared.is_tombstone() {
        message.insert(
            "summary".into(),
            json!("A tombstone: the key and a null value, which a compacted topic reads as the end of the aggregate."),
        );
    } else {
        let content_type = match format {
            MessageFormat::CloudEventsStructured => cloudevents::STRUCTURED,
            _ => cloudevents::JSON,
        };
        message.insert("contentType".into(), json!(content_type));
    }
    message.insert(
        "headers".into(),
        object(
            samples.iter().map(|sample| {
                sample
                    .headers()
                    .into_iter()
                    .map(|(name, value)| (name.to_owned(), value))
                    .collect()
            }),
            header_schema,
        ),
    );
    message.insert("payload".into(), payload);
    message.insert(
        "bindings".into(),
        json!({
            "kafka": {
                "key": {
                    "type": "string",
                    "description": "The partition key the event was stored with, else its aggregate id.",
                },
                "bindingVersion": KAFKA_BINDING,
            },
        }),
    );
    message.insert(
        "x-outbox".into(),
        json!({
            "eventType": event.event_type(),
            "eventVersion": event.event_version(),
            "tombstone": event.declared.is_tombstone(),
            "format": format.name(),
        }),
    );
    Value::Object(message)
}

/// A CloudEvents structured-mode value: the attributes, and the payload as `data`.
fn structured(samples: &[Message], payload: &Value) -> Value {
    let attributes = samples.iter().map(|sample| {
        let value = sample.value().unwrap_or_default();
        let event: Map<String, Value> = serde_json::from_str(&value).unwrap_or_default();
        event
            .into_iter()
            .filter(|(name, _)| name != "data")
            .map(|(name, value)| (name, value.as_str().unwrap_or_default().to_owned()))
            .collect()
    });
    let mut value = object(attributes, |name, value| {
        let header = match name {
            "datacontenttype" => cloudevents::CONTENT_TYPE.to_owned(),
            _ => format!("{}{name}", cloudevents::PREFIX),
        };
        header_schema(&header, value)
    });
    value["properties"]["data"] = payload.clone();
    if let Some(Value::Array(required)) = value.get_mut("required") {
        required.push(json!("data"));
    }
    value
}

/// An object schema of string properties: those in every one of `each` required, each
/// described by `describe` from its name and its value in the first that has it.
fn object(
    each: impl Iterator<Item = Vec<(String, String)>>,
    describe: fn(&str, &str) -> Value,
) -> Value {
    let each: Vec<Vec<(String, String)>> = each.collect();
    let mut properties = Map::new();
    for (name, value) in each.iter().flatten() {
        if !properties.contains_key(name) {
            properties.insert(name.clone(), describe(name, value));
        }
    }
    let required: Vec<&String> = properties
        .keys()
        .filter(|name| {
            each.iter()
                .all(|one| one.iter().any(|(present, _)| present == *name))
        })
        .collect();
    json!({ "type": "object", "properties": properties, "required": required })
}

/// The schema of the header `name`, whose value in a sample is `value` (kept for the
/// headers that are the same for every event of a type and version).
fn header_schema(name: &str, value: &str) -> Value {
    use headers::cloudevents as ce;
    let text = |description: &str| json!({ "type": "string", "description": description });
    match name {
        headers::EVENT_TYPE | ce::TYPE | debezium::EVENT_TYPE => {
            json!({ "type": "string", "const": value, "description": "The event type." })
        }
        headers::EVENT_VERSION | ce::EVENTVERSION | debezium::EVENT_VERSION => {
            json!({ "type": "string", "const": value, "description": "The event version." })
        }
        ce::SPECVERSION | ce::SOURCE | ce::CONTENT_TYPE => {
            json!({ "type": "string", "const": value })
        }
        headers::EVENT_ID | ce::ID | debezium::ID => json!({
            "type": "string",
            "format": "uuid",
            "description": "The event id: a consumer drops a message whose id it has seen.",
        }),
        headers::CREATED_AT | ce::TIME => json!({
            "type": "string",
            "format": "date-time",
            "description": "When the event was stored.",
        }),
        headers::AGGREGATE_ID | ce::SUBJECT => {
            text("The id of the aggregate the event belongs to.")
        }
        headers::USER_ID | ce::USERID => text("The user on whose behalf the event happened."),
        headers::TRACEPARENT | ce::TRACEPARENT => json!({
            "type": "string",
            "pattern": "^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$",
            "description": "The W3C trace context of the transaction that stored the event.",
        }),
        headers::TRACESTATE | ce::TRACESTATE => text("The W3C tracestate beside traceparent."),
        headers::TRACE_ID | ce::TRACEID => text("The trace id the event was stored with."),
        _ => text("A header given at store time."),
    }
}

/// Messages of `event` as the relay writes them in `encoding`: one with nothing
/// optional, one with a user id and an OpenTelemetry trace context, one with a trace
/// id of another kind.
fn samples(encoding: &Encoding, event: &GeneratedEvent) -> [Message; 3] {
    let bare = Message {
        seq: 1,
        id: Uuid::nil(),
        event_type: event.event_type().to_owned(),
        event_version: event.event_version().to_owned(),
        aggregate_id: "aggregate".into(),
        topic: String::new(),
        key: "aggregate".into(),
        payload: if event.declared.is_tombstone() {
            "null"
        } else {
            "{}"
        }
        .into(),
        extra_headers: Vec::new(),
        trace_id: None,
        user_id: None,
        created_at: DateTime::<Utc>::UNIX_EPOCH,
        attempts: 0,
        tombstone: event.declared.is_tombstone(),
        encoding: encoding.clone(),
    };
    let traced = Message {
        trace_id: Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into()),
        user_id: Some("user".into()),
        extra_headers: vec![(headers::TRACESTATE.to_owned(), "vendor=1".to_owned())],
        ..bare.clone()
    };
    let other_trace = Message {
        trace_id: Some("request-17".into()),
        ..bare.clone()
    };
    [bare, traced, other_trace]
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// Every header and attribute a format writes has a description of its own: none
    /// falls through to the one for headers given at store time.
    #[test]
    fn every_header_a_format_writes_is_described() {
        let unknown = header_schema("x-anything", "");
        for format in MessageFormat::ALL {
            for tombstone in [false, true] {
                let event = GeneratedEvent {
                    rust_type: "Test",
                    declared: {
                        let declared = crate::DeclaredEvent::new("order.placed", "v2");
                        if tombstone {
                            declared.tombstone()
                        } else {
                            declared
                        }
                    },
                    payload: json!({}),
                };
                let samples = samples(&Encoding::new(format, "/shop"), &event);
                let names: BTreeSet<String> = samples
                    .iter()
                    .flat_map(|sample| sample.headers())
                    .map(|(name, _)| name.to_owned())
                    .collect();
                for name in names {
                    assert_ne!(header_schema(&name, "x"), unknown, "{format}: {name}");
                }
            }
        }
    }
}
