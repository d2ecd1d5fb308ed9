//! Published contracts (the `contract` feature): what each topic carries, for the
//! teams that consume it, generated from the events themselves.
//!
//! A [`Contract`] lists the topics a service writes and the Rust event types stored
//! to each. From the types' [`OutboxEvent::declared`] lists and their
//! [`JsonSchema`] impls (derive it with [schemars](https://docs.rs/schemars) 1.x
//! beside `OutboxEvent`), it writes:
//!
//! - a JSON Schema (draft 2020-12) of every event type and version's payload
//!   ([`Contract::json_schemas`]): the whole type for a struct, one variant's content
//!   for an enum, `null` for a tombstone. It describes what serde writes (schemars'
//!   serialize contract), which is what consumers read;
//! - an AsyncAPI 3.0 document ([`Contract::asyncapi`]): a channel per topic, a message
//!   per event type and version with the headers and value of the topic's
//!   [`MessageFormat`](crate::MessageFormat) (taken from the relay's settings, [`Contract::relay`]), the
//!   Kafka key, and an operation sending them.
//!
//! [`Contract::write`] puts both in a directory, for a service's own binary (or a
//! test) to run in its build: `cargo run --example contract -- DIR` in this
//! repository shows one.
//!
//! ```
//! use outbox::contract::Contract;
//! use outbox::{MessageFormat, OutboxEvent, RelayConfig};
//! use schemars::JsonSchema;
//! use serde::Serialize;
//!
//! #[derive(Serialize, JsonSchema, OutboxEvent)]
//! enum OrderEvent {
//!     #[outbox(type = "order.placed", version = "v2", aggregate = "order_id")]
//!     Placed { order_id: u64, cents: i64 },
//!     #[outbox(type = "order.erased", aggregate = "order_id", tombstone)]
//!     Erased { order_id: u64 },
//! }
//!
//! let mut relay = RelayConfig::new("shop");
//! relay.format = MessageFormat::CloudEventsBinary;
//! let contract = Contract::new("shop", "1.4.0")
//!     .relay(&relay)
//!     .topic::<OrderEvent>("orders");
//!
//! let schemas = contract.json_schemas()?;
//! assert_eq!(schemas[0].declared().event_type(), "order.erased");
//! assert_eq!(schemas[1].schema()["required"], serde_json::json!(["order_id", "cents"]));
//!
//! let asyncapi = contract.asyncapi()?;
//! let placed = &asyncapi["channels"]["orders"]["messages"]["order.placed.v2"];
//! assert_eq!(placed["headers"]["properties"]["ce_type"]["const"], "order.placed");
//! assert_eq!(placed["payload"]["properties"]["cents"]["type"], "integer");
//! # Ok::<(), outbox::contract::ContractError>(())
//! ```

mod asyncapi;
mod split;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use schemars::generate::SchemaSettings;
use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde_json::{Map, Value, json};

use crate::config::RelayConfig;
use crate::event::{DeclaredEvent, OutboxEvent};
use crate::wire::{Encoding, Encodings};

pub use schemars;

/// The topics a service writes and the events each carries; see the
/// [module documentation](self).
pub struct Contract {
    title: String,
    version: String,
    description: Option<String>,
    servers: Vec<(String, String)>,
    encodings: Encodings,
    topics: Vec<Topic>,
}

/// One topic and the Rust types stored to it.
struct Topic {
    name: String,
    types: Vec<Registered>,
}

/// A Rust event type, with what it declares and how to make its schema.
struct Registered {
    rust_type: &'static str,
    declared: Vec<DeclaredEvent>,
    schema: fn(&mut SchemaGenerator) -> Schema,
}

impl fmt::Debug for Contract {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let topics: BTreeMap<_, Vec<_>> = self
            .topics
            .iter()
            .map(|topic| {
                let types = topic.types.iter().map(|each| each.rust_type).collect();
                (topic.name.as_str(), types)
            })
            .collect();
        f.debug_struct("Contract")
            .field("title", &self.title)
            .field("version", &self.version)
            .field("topics", &topics)
            .finish_non_exhaustive()
    }
}

/// The JSON Schema of one event type and version's payload.
#[derive(Debug, Clone, PartialEq)]
pub struct EventSchema {
    declared: DeclaredEvent,
    schema: Value,
}

impl EventSchema {
    /// The event type and version it describes, and whether they are tombstones.
    pub fn declared(&self) -> &DeclaredEvent {
        &self.declared
    }

    /// The schema: a JSON Schema 2020-12 document with the definitions it refers to.
    pub fn schema(&self) -> &Value {
        &self.schema
    }

    /// The file [`Contract::write`] gives it: `<type>.<version>.json`, with any
    /// character but letters, digits, `.`, `-` and `_` written as `_`.
    pub fn file_name(&self) -> String {
        format!(
            "{}.json",
            identifier(&format!(
                "{}.{}",
                self.declared.event_type(),
                self.declared.event_version()
            ))
        )
    }
}

/// What stopped a contract from being written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ContractError {
    /// A registered type lists no events.
    #[error(
        "`{rust_type}` (registered for topic {topic:?}) declares no events: derive OutboxEvent, or implement OutboxEvent::declared"
    )]
    NoEvents {
        /// The Rust type.
        rust_type: &'static str,
        /// The topic it was registered for.
        topic: String,
    },
    /// An event's schema could not be found in its type's.
    #[error(
        "the schema of {event_type} {event_version} cannot be read from `{rust_type}`'s: {reason}"
    )]
    Schema {
        /// The Rust type.
        rust_type: &'static str,
        /// The event type.
        event_type: String,
        /// The event version.
        event_version: String,
        /// What was wrong.
        reason: String,
    },
    /// Two registered types describe one event type and version differently.
    #[error(
        "{event_type} {event_version} is described differently by `{first}` and `{second}`: one event type and version has one payload schema"
    )]
    Conflict {
        /// The event type.
        event_type: String,
        /// The event version.
        event_version: String,
        /// The type registered first.
        first: &'static str,
        /// The type that disagrees with it.
        second: &'static str,
    },
    /// A file could not be written.
    #[error("cannot write {}: {source}", path.display())]
    Write {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

impl Contract {
    /// A contract titled `title` (usually the service's name) at `version` (the
    /// contract's own, e.g. the service's release), with no topics yet. Topics are
    /// written in the formats of a relay with default settings until
    /// [`relay`](Self::relay) says otherwise.
    pub fn new(title: impl Into<String>, version: impl Into<String>) -> Self {
        Contract {
            title: title.into(),
            version: version.into(),
            description: None,
            servers: Vec::new(),
            encodings: RelayConfig::default().encodings(),
            topics: Vec::new(),
        }
    }

    /// Describes the contract in a sentence or more (AsyncAPI's `info.description`).
    pub fn description(mut self, description: impl Into<String>) -> Self {
        self.description = Some(description.into());
        self
    }

    /// Names a Kafka bootstrap server consumers connect to (`host:port`).
    pub fn server(mut self, name: impl Into<String>, host: impl Into<String>) -> Self {
        self.servers.push((name.into(), host.into()));
        self
    }

    /// Takes each topic's [`MessageFormat`](crate::MessageFormat) and the CloudEvents `source` from the
    /// relay's settings ([`RelayConfig::format`], [`RelayConfig::format_by_topic`],
    /// [`RelayConfig::cloudevents_source`]), as the relay writes them.
    pub fn relay(mut self, config: &RelayConfig) -> Self {
        self.encodings = config.encodings();
        self
    }

    /// Registers the events of `E` as stored to `topic`. A topic may carry several
    /// types, and a type may be registered for several topics.
    pub fn topic<E: OutboxEvent + JsonSchema>(mut self, topic: impl Into<String>) -> Self {
        let topic = topic.into();
        let registered = Registered {
            rust_type: std::any::type_name::<E>(),
            declared: E::declared(),
            schema: SchemaGenerator::subschema_for::<E>,
        };
        match self.topics.iter_mut().find(|known| known.name == topic) {
            Some(known) => known.types.push(registered),
            None => self.topics.push(Topic {
                name: topic,
                types: vec![registered],
            }),
        }
        self
    }

    /// A JSON Schema of every event type and version's payload, sorted by type and
    /// version.
    ///
    /// # Errors
    /// A registered type declares no events, one event's schema cannot be found in its
    /// type's, or two types describe one event type and version differently.
    pub fn json_schemas(&self) -> Result<Vec<EventSchema>, ContractError> {
        let generated = self.generate(SchemaSettings::draft2020_12())?;
        let prefix = "#/$defs/";
        let mut by_event: BTreeMap<(String, String), (&'static str, EventSchema)> = BTreeMap::new();
        for event in generated.topics.iter().flat_map(|topic| &topic.events) {
            let mut schema = Map::new();
            schema.insert(
                "$schema".into(),
                json!("https://json-schema.org/draft/2020-12/schema"),
            );
            schema.insert(
                "title".into(),
                json!(format!("{} {}", event.event_type(), event.event_version())),
            );
            match object_of(&event.payload) {
                Some(payload) => schema.extend(payload),
                None => {
                    schema.insert("allOf".into(), json!([event.payload]));
                }
            }
            let definitions = split::reachable(&event.payload, &generated.definitions, prefix);
            if !definitions.is_empty() {
                schema.insert("$defs".into(), Value::Object(definitions));
            }
            let key = (
                event.event_type().to_owned(),
                event.event_version().to_owned(),
            );
            let mut declared = DeclaredEvent::new(key.0.clone(), key.1.clone());
            if event.declared.is_tombstone() {
                declared = declared.tombstone();
            }
            let schema = EventSchema {
                declared,
                schema: Value::Object(schema),
            };
            match by_event.get(&key) {
                Some((first, known)) if known.schema != schema.schema => {
                    return Err(ContractError::Conflict {
                        event_type: key.0,
                        event_version: key.1,
                        first,
                        second: event.rust_type,
                    });
                }
                Some(_) => {}
                None => {
                    by_event.insert(key, (event.rust_type, schema));
                }
            }
        }
        Ok(by_event.into_values().map(|(_, schema)| schema).collect())
    }

    /// The AsyncAPI 3.0 document of the topics, their formats and events.
    ///
    /// # Errors
    /// As [`json_schemas`](Self::json_schemas).
    pub fn asyncapi(&self) -> Result<Value, ContractError> {
        let path = asyncapi::PREFIX
            .trim_start_matches('#')
            .trim_end_matches('/');
        let settings =
            SchemaSettings::draft07().with(|settings| settings.definitions_path = path.into());
        let generated = self.generate(settings)?;
        Ok(asyncapi::document(self, &generated))
    }

    /// Writes `asyncapi.json` and, under `schemas/`, one file per event type and
    /// version ([`EventSchema::file_name`]) into `dir`, made if missing; returns the
    /// files written.
    ///
    /// # Errors
    /// As [`json_schemas`](Self::json_schemas), or a file that cannot be written.
    pub fn write(&self, dir: impl AsRef<Path>) -> Result<Vec<PathBuf>, ContractError> {
        let dir = dir.as_ref();
        let schemas_dir = dir.join("schemas");
        let mut files = vec![(dir.join("asyncapi.json"), self.asyncapi()?)];
        for schema in self.json_schemas()? {
            files.push((schemas_dir.join(schema.file_name()), schema.schema));
        }
        std::fs::create_dir_all(&schemas_dir).map_err(|source| ContractError::Write {
            path: schemas_dir.clone(),
            source,
        })?;
        let mut written = Vec::with_capacity(files.len());
        for (path, value) in files {
            let result = serde_json::to_string_pretty(&value)
                .map_err(std::io::Error::other)
                .and_then(|text| std::fs::write(&path, text + "\n"));
            if let Err(source) = result {
                return Err(ContractError::Write { path, source });
            }
            written.push(path);
        }
        Ok(written)
    }

    /// Every registered event's payload schema, made with `settings` by one generator
    /// (so that a type used by several events is defined once).
    fn generate(&self, settings: SchemaSettings) -> Result<Generated, ContractError> {
        let prefix = format!("#{}/", settings.definitions_path.trim_end_matches('/'));
        let mut generator = settings.for_serialize().into_generator();
        let mut wholes = Vec::new();
        for topic in &self.topics {
            for registered in &topic.types {
                if registered.declared.is_empty() {
                    return Err(ContractError::NoEvents {
                        rust_type: registered.rust_type,
                        topic: topic.name.clone(),
                    });
                }
                wholes.push((registered.schema)(&mut generator).to_value());
            }
        }
        let definitions = generator.take_definitions(true);
        let mut wholes = wholes.into_iter();
        let mut topics = Vec::with_capacity(self.topics.len());
        for topic in &self.topics {
            let mut events: Vec<GeneratedEvent> = Vec::new();
            for (registered, whole) in topic.types.iter().zip(&mut wholes) {
                for declared in &registered.declared {
                    let Some(payload) = payload_of(declared, &whole, &definitions, &prefix)
                        .map_err(|reason| ContractError::Schema {
                            rust_type: registered.rust_type,
                            event_type: declared.event_type().to_owned(),
                            event_version: declared.event_version().to_owned(),
                            reason,
                        })?
                    else {
                        continue;
                    };
                    let event = GeneratedEvent {
                        rust_type: registered.rust_type,
                        declared: declared.clone(),
                        payload,
                    };
                    let same = |known: &&GeneratedEvent| {
                        (known.event_type(), known.event_version())
                            == (event.event_type(), event.event_version())
                    };
                    match events.iter().find(same) {
                        Some(known) if known.payload != event.payload => {
                            return Err(ContractError::Conflict {
                                event_type: event.event_type().to_owned(),
                                event_version: event.event_version().to_owned(),
                                first: known.rust_type,
                                second: event.rust_type,
                            });
                        }
                        Some(_) => {}
                        None => events.push(event),
                    }
                }
            }
            topics.push(GeneratedTopic {
                name: topic.name.clone(),
                encoding: self.encodings.of(&topic.name).clone(),
                events,
            });
        }
        Ok(Generated {
            topics,
            definitions,
        })
    }
}

/// The payload schema of one declared event: `null` for a tombstone, `None` for an
/// event inside a variant serde never serializes (it is never published).
fn payload_of(
    declared: &DeclaredEvent,
    whole: &Value,
    definitions: &Map<String, Value>,
    prefix: &str,
) -> Result<Option<Value>, String> {
    if declared.is_tombstone() {
        return Ok(Some(json!({
            "type": "null",
            "description": "A tombstone: the value is null, the key says which aggregate it erases.",
        })));
    }
    match declared.variant_path() {
        Some(path) => split::payload_schema(whole, path, definitions, prefix).map(Some),
        None => Ok(None),
    }
}

/// A schema's keywords, for a schema that is an object (`true` has none).
fn object_of(schema: &Value) -> Option<Map<String, Value>> {
    match schema {
        Value::Object(object) => Some(object.clone()),
        Value::Bool(true) => Some(Map::new()),
        _ => None,
    }
}

/// `text` with any character but letters, digits, `.`, `-` and `_` written as `_`: a
/// file name, or an AsyncAPI key.
fn identifier(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            'a'..='z' | 'A'..='Z' | '0'..='9' | '.' | '-' | '_' => c,
            _ => '_',
        })
        .collect()
}

/// The schemas of every registered event, by topic, with the definitions they share.
struct Generated {
    topics: Vec<GeneratedTopic>,
    definitions: Map<String, Value>,
}

struct GeneratedTopic {
    name: String,
    encoding: Encoding,
    events: Vec<GeneratedEvent>,
}

struct GeneratedEvent {
    rust_type: &'static str,
    declared: DeclaredEvent,
    payload: Value,
}

impl GeneratedEvent {
    fn event_type(&self) -> &str {
        self.declared.event_type()
    }

    fn event_version(&self) -> &str {
        self.declared.event_version()
    }
}

#[cfg(test)]
mod tests {
    use schemars::JsonSchema;
    use serde::{Deserialize, Serialize};

    use super::*;

    /// Variants serde leaves out one way or the other, before the ones that matter.
    #[derive(Serialize, Deserialize, JsonSchema, crate::OutboxEvent)]
    #[outbox(crate = "crate")]
    #[serde(rename_all = "kebab-case")]
    enum Skipping {
        /// Never serialized: it cannot be stored, so it is not in the contract.
        #[serde(skip_serializing)]
        #[outbox(type = "never.published", aggregate = "id")]
        Never {
            id: u64,
        },
        /// Stored, never decoded by serde: published, so in the contract.
        #[allow(dead_code, reason = "only its schema is asked for")]
        #[serde(skip_deserializing)]
        #[outbox(type = "write.only", aggregate = "id")]
        WriteOnly {
            id: u64,
            note: String,
        },
        #[outbox(type = "order.placed", version = "v2", aggregate = "id")]
        Placed {
            id: u64,
            cents: i64,
        },
        Nested(Inner),
    }

    #[derive(Serialize, Deserialize, JsonSchema, crate::OutboxEvent)]
    #[outbox(crate = "crate")]
    enum Inner {
        #[outbox(type = "inner.first", aggregate = "id")]
        First { id: u64, first: bool },
        #[outbox(type = "inner.second", aggregate = "id")]
        Second { id: u64, second: String },
    }

    fn required(schemas: &[EventSchema], event_type: &str) -> Value {
        let schema = schemas
            .iter()
            .find(|schema| schema.declared().event_type() == event_type)
            .unwrap_or_else(|| panic!("no schema of {event_type}"));
        schema.schema()["required"].clone()
    }

    #[test]
    fn each_event_has_its_own_variants_content_whatever_serde_skips() {
        let contract = Contract::new("test", "1").topic::<Skipping>("t");
        let schemas = contract.json_schemas().expect("schemas");
        let types: Vec<&str> = schemas.iter().map(|s| s.declared().event_type()).collect();
        assert_eq!(
            types,
            ["inner.first", "inner.second", "order.placed", "write.only"]
        );
        assert_eq!(required(&schemas, "write.only"), json!(["id", "note"]));
        assert_eq!(required(&schemas, "order.placed"), json!(["id", "cents"]));
        assert_eq!(required(&schemas, "inner.first"), json!(["id", "first"]));
        assert_eq!(required(&schemas, "inner.second"), json!(["id", "second"]));
        let placed = &schemas[2];
        assert_eq!(placed.file_name(), "order.placed.v2.json");
        assert_eq!(placed.schema()["title"], "order.placed v2");
        assert!(placed.schema().get("$defs").is_none(), "nothing to define");
    }

    #[derive(Serialize, JsonSchema, crate::OutboxEvent)]
    #[outbox(
        crate = "crate",
        type = "order.placed",
        version = "v2",
        aggregate = "id"
    )]
    struct OtherPlaced {
        id: String,
    }

    #[derive(Serialize, JsonSchema)]
    struct NotAnEvent {
        id: u64,
    }

    impl OutboxEvent for NotAnEvent {
        fn event_type(&self) -> &str {
            "not.declared"
        }
        fn aggregate_id(&self) -> String {
            self.id.to_string()
        }
        fn payload(&self) -> Result<Value, serde_json::Error> {
            serde_json::to_value(self)
        }
    }

    #[test]
    fn conflicting_descriptions_and_undeclared_types_are_named() {
        let conflict = Contract::new("test", "1")
            .topic::<Skipping>("a")
            .topic::<OtherPlaced>("b");
        let error = conflict
            .json_schemas()
            .expect_err("two schemas of order.placed v2");
        assert!(matches!(error, ContractError::Conflict { .. }), "{error}");
        assert!(error.to_string().contains("OtherPlaced"), "{error}");
        let same_topic = Contract::new("test", "1")
            .topic::<Skipping>("a")
            .topic::<OtherPlaced>("a");
        let error = same_topic.asyncapi().expect_err("two schemas on one topic");
        assert!(matches!(error, ContractError::Conflict { .. }), "{error}");

        let undeclared = Contract::new("test", "1").topic::<NotAnEvent>("c");
        let error = undeclared.asyncapi().expect_err("declares nothing");
        assert!(matches!(error, ContractError::NoEvents { .. }), "{error}");
        assert!(error.to_string().contains("NotAnEvent"), "{error}");
        assert!(error.to_string().contains("\"c\""), "{error}");
    }
}
