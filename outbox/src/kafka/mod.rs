//! What the Kafka publisher and the consumer share: the client settings
//! ([`KafkaConfig`], with topic creation in `admin.rs`) and the client context that
//! sends librdkafka's logs and errors to `tracing` with secrets scrubbed
//! ([`KafkaContext`]).

mod admin;
mod config;
mod context;

pub use config::KafkaConfig;
pub use context::KafkaContext;
pub(crate) use context::LastError;
