//! The dead-letter topic: where dead-lettered events are also sent, when configured.

use tracing::error;

use super::Inner;
use super::batch::Failed;
use crate::publisher::Publisher;
use crate::wire::Message;

impl<P: Publisher> Inner<P> {
    pub(super) async fn send_to_dead_letter_topic(&self, updates: &[Failed<'_>]) {
        let Some(topic) = &self.config.dead_letter_topic else {
            return;
        };
        let dead: Vec<Message> = updates
            .iter()
            .filter(|failed| failed.dead_lettered())
            .map(|Failed { message, error, .. }| {
                let mut copy = (*message).clone();
                copy.topic = topic.clone();
                copy.extra_headers.push((
                    crate::wire::headers::DEAD_LETTER_ERROR.to_owned(),
                    error.message().to_owned(),
                ));
                copy
            })
            .collect();
        if dead.is_empty() {
            return;
        }
        for (message, outcome) in dead.iter().zip(self.publisher.publish(&dead).await) {
            if let Err(error) = outcome {
                error!(event_id = %message.id, %topic, %error, "could not send a dead letter to the dead-letter topic; it stays in the table");
            }
        }
    }
}
