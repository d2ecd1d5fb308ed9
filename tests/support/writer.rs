//! A writer in a process of its own, for tests of cross-process wake-ups: stores
//! `COUNT` events (one transaction each) for `TOPIC` in the database of
//! `DATABASE_URL`, with cross-process wake-ups on, and exits.
//!
//! ```text
//! DATABASE_URL=... outbox-test-writer TOPIC COUNT
//! ```

use std::time::Duration;

use outbox::{EventBuilder, Outbox};
use sea_orm::{ConnectOptions, Database, TransactionTrait};

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let mut args = std::env::args().skip(1);
    let topic = args.next().expect("TOPIC");
    let count: usize = args.next().and_then(|n| n.parse().ok()).expect("COUNT");
    let url = std::env::var("DATABASE_URL").expect("DATABASE_URL");
    let mut options = ConnectOptions::new(url);
    options.sqlx_logging(false);
    let db = Database::connect(options).await.expect("connect");
    let outbox = Outbox::on(&db);
    for n in 0..count {
        let txn = db.begin().await.expect("begin");
        let event = EventBuilder::new("thing.happened", format!("key-{}", n % 4));
        outbox.store(&txn, &event, &topic).await.expect("store");
        txn.commit().await.expect("commit");
    }
    // The notification is sent by a task of the outbox's, after the store: a process
    // that exits at once may end before it is sent (the relays would then find the
    // events by polling). Give it a moment, as a short-lived writer should.
    tokio::time::sleep(Duration::from_millis(100)).await;
}
