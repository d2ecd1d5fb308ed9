//! The dead-letter topic: where dead-lettered events are also sent, when configured.

use tracing::error;

use super::outcome::Failure;
use crate::publisher::Publisher;
use crate::wire::Message;

/// Sends the dead-lettered events among `failed` to `topic`, with the error in the
/// [`DEAD_LETTER_ERROR`](crate::headers::DEAD_LETTER_ERROR) header. A failure is only
/// logged: the event stays dead-lettered in the table.
pub(super) async fn send<P: Publisher>(publisher: &P, topic: &str, failed: &[Failure<'_>]) {
    let dead: Vec<Message> = failed
        .iter()
        .filter(|failed| failed.dead_lettered())
        .map(|Failure { message, error, .. }| {
            let mut copy = (*message).clone();
            copy.topic = topic.to_owned();
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
    for (message, outcome) in dead.iter().zip(publisher.publish(&dead).await) {
        if let Err(error) = outcome {
            error!(event_id = %message.id, %topic, %error, "could not send a dead letter to the dead-letter topic; it stays in the table");
        }
    }
}
