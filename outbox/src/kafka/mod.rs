//! What the Kafka publisher and the consumer share: the client settings
//! ([`KafkaConfig`]) and the client context that sends librdkafka's logs and errors
//! to `tracing` with secrets scrubbed ([`KafkaContext`]).

mod config;
mod context;

pub use config::KafkaConfig;
pub use context::KafkaContext;
pub(crate) use context::LastError;
