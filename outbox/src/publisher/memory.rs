//! Publishers that need no broker: for tests and for running without Kafka.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use super::{PublishError, Publisher, publish_in_key_order};
use crate::wire::Message;

/// Accepts every message and sends it nowhere.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoOpPublisher;

impl Publisher for NoOpPublisher {
    async fn publish(&self, batch: &[Message]) -> Vec<Result<(), PublishError>> {
        batch.iter().map(|_| Ok(())).collect()
    }
}

/// Keeps every message it accepts, in order, for tests to inspect. Clones share the
/// same store. Failures can be scripted per event id.
///
/// ```
/// let publisher = outbox::MemoryPublisher::new();
/// let inspect = publisher.clone();
/// // ... run a Relay with `publisher` ...
/// assert!(inspect.messages().is_empty());
/// ```
#[derive(Debug, Clone, Default)]
pub struct MemoryPublisher {
    inner: Arc<Mutex<Inner>>,
}

#[derive(Debug, Default)]
struct Inner {
    messages: Vec<Message>,
    failures: HashMap<uuid::Uuid, Vec<PublishError>>,
}

impl MemoryPublisher {
    /// An empty publisher.
    pub fn new() -> Self {
        Self::default()
    }

    /// Every message accepted so far, in the order accepted.
    pub fn messages(&self) -> Vec<Message> {
        self.lock().messages.clone()
    }

    /// Makes the next attempts to publish event `id` fail with `errors`, one per
    /// attempt; later attempts succeed.
    pub fn fail_next(&self, id: uuid::Uuid, errors: impl IntoIterator<Item = PublishError>) {
        self.lock().failures.entry(id).or_default().extend(errors);
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves plain data behind; keep using it.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Publisher for MemoryPublisher {
    async fn publish(&self, batch: &[Message]) -> Vec<Result<(), PublishError>> {
        publish_in_key_order(batch, |message| async move {
            let mut inner = self.lock();
            let scripted = inner
                .failures
                .get_mut(&message.id)
                .and_then(|errors| (!errors.is_empty()).then(|| errors.remove(0)));
            match scripted {
                Some(error) => Err(error),
                None => {
                    inner.messages.push(message.clone());
                    Ok(())
                }
            }
        })
        .await
    }
}
