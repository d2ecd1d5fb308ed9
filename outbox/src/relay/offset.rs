//! The service's offset: the last event its relays published (`_outbox_offset`),
//! written now and then by the main loop.

use std::time::{Duration, Instant};

use sea_orm::ConnectionTrait;
use tracing::warn;
use uuid::Uuid;

use super::keeper::Keeper;
use super::setup::Setup;
use crate::error::Result;

/// While batches keep coming, the service's offset (its last published event) is
/// written at most this often; at once when the relay goes idle.
const OFFSET_INTERVAL: Duration = Duration::from_secs(1);

/// The service's offset: the last event published, written now and then.
#[derive(Debug)]
pub(super) struct Offset {
    unwritten: Option<Uuid>,
    written_at: Instant,
}

impl Default for Offset {
    fn default() -> Self {
        Offset {
            unwritten: None,
            written_at: Instant::now(),
        }
    }
}

impl Offset {
    pub(super) fn published(&mut self, last: Option<Uuid>) {
        if last.is_some() {
            self.unwritten = last;
        }
    }

    pub(super) fn due(&self) -> bool {
        self.unwritten.is_some() && self.written_at.elapsed() >= OFFSET_INTERVAL
    }

    pub(super) async fn write(&mut self, setup: &Setup, keeper: &Keeper) {
        let Some(event) = self.unwritten else {
            return;
        };
        match write(setup, keeper, event).await {
            Ok(()) => {
                self.unwritten = None;
                self.written_at = Instant::now();
            }
            Err(error) => {
                warn!(relay = %setup.relay_id, %error, "could not write the service's offset; trying again later");
            }
        }
    }
}

/// Records `event` as the last one the service published (`_outbox_offset`).
pub(super) async fn write(setup: &Setup, keeper: &Keeper, event: Uuid) -> Result<()> {
    let statement = setup.dialect.upsert_offset(
        setup.tables().offset(),
        setup.service(),
        event,
        keeper.clock.now(),
    );
    setup.db.execute_raw(statement).await?;
    Ok(())
}
