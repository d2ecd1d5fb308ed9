//! Creating topics with the producer's settings (TLS, SASL included).

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::types::RDKafkaErrorCode;

use crate::error::{Error, Result};
use crate::kafka::KafkaConfig;

/// How long the broker may take to create a topic.
const CREATE_TIMEOUT: Duration = Duration::from_secs(10);

impl KafkaConfig {
    /// Creates `topic` with `partitions` partitions, each on `replication` brokers,
    /// unless it exists; returns whether it created it. For setup scripts, tests and
    /// a dead-letter topic; production clusters often manage topics elsewhere.
    ///
    /// ```no_run
    /// # async fn f() -> outbox::Result<()> {
    /// let kafka = outbox::KafkaConfig::from_env()?;
    /// kafka.create_topic("user-events", 12, 3).await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`Error::CreateTopic`] naming the topic when the broker refuses it (other than
    /// because it exists), or [`Error::Kafka`] when the broker cannot be reached.
    pub async fn create_topic(
        &self,
        topic: &str,
        partitions: i32,
        replication: i32,
    ) -> Result<bool> {
        let admin: AdminClient<DefaultClientContext> = self.client_config().create()?;
        let options = AdminOptions::new().operation_timeout(Some(CREATE_TIMEOUT));
        let new = NewTopic::new(topic, partitions, TopicReplication::Fixed(replication));
        let results = admin.create_topics([&new], &options).await?;
        match results.into_iter().next() {
            Some(Ok(_)) => Ok(true),
            Some(Err((_, RDKafkaErrorCode::TopicAlreadyExists))) => Ok(false),
            Some(Err((topic, code))) => Err(Error::CreateTopic {
                topic,
                reason: code.to_string(),
            }),
            None => Err(Error::CreateTopic {
                topic: topic.to_owned(),
                reason: "the broker sent no answer for it".to_owned(),
            }),
        }
    }
}
