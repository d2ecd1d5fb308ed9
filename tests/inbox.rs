//! The inbox: a consumer's record of the events it processed, in its own transaction,
//! on every backend.

use std::time::Duration;

use chrono::Utc;
use outbox::entity::inbox as record;
use outbox::{Error, Inbox};
use sea_orm::{
    ActiveValue::Set, DatabaseConnection, EntityTrait, PaginatorTrait, TransactionTrait,
};
use uuid::Uuid;

async fn first_delivery_is_recorded_a_duplicate_is_not(db: DatabaseConnection) {
    let inbox = Inbox::new();
    let event = Uuid::now_v7();

    let txn = db.begin().await.expect("begin");
    assert!(inbox.record(&txn, "billing", event).await.expect("record"));
    txn.commit().await.expect("commit");

    let txn = db.begin().await.expect("begin");
    assert!(
        !inbox.record(&txn, "billing", event).await.expect("record"),
        "a second delivery finds the record"
    );
    txn.rollback().await.expect("rollback");

    assert!(
        inbox
            .contains(&db, "billing", event)
            .await
            .expect("contains")
    );
    for other in ["shipping", "Billing"] {
        assert!(
            inbox.record(&db, other, event).await.expect("record"),
            "each consumer keeps its own record ({other})"
        );
    }
    assert!(
        !inbox
            .contains(&db, "billing", Uuid::now_v7())
            .await
            .expect("contains")
    );
    assert_eq!(record::Entity::find().count(&db).await.expect("count"), 3);
}

async fn a_rolled_back_record_is_forgotten(db: DatabaseConnection) {
    let inbox = Inbox::new();
    let event = Uuid::now_v7();
    let txn = db.begin().await.expect("begin");
    assert!(inbox.record(&txn, "billing", event).await.expect("record"));
    txn.rollback().await.expect("rollback");

    assert!(
        !inbox
            .contains(&db, "billing", event)
            .await
            .expect("contains")
    );
    assert!(
        inbox.record(&db, "billing", event).await.expect("record"),
        "the event is applied when it comes again"
    );
}

async fn cleanup_forgets_records_older_than_the_window(db: DatabaseConnection) {
    let inbox = Inbox::new();
    let window = chrono::Duration::from_std(outbox::DEFAULT_DEDUP_WINDOW).expect("window");
    let old = Utc::now() - window - chrono::Duration::days(1);
    // More than one cleanup batch (1,000) of old records of `billing`, and some of
    // `audit`, which keeps its records longer.
    let old_records: Vec<record::ActiveModel> = (0..1_284)
        .map(|i| record::ActiveModel {
            consumer: Set(if i < 1_234 { "billing" } else { "audit" }.to_owned()),
            event_id: Set(Uuid::now_v7()),
            processed_at: Set(old),
        })
        .collect();
    for chunk in old_records.chunks(500) {
        record::Entity::insert_many(chunk.to_vec())
            .exec(&db)
            .await
            .expect("old records");
    }
    let recent = Uuid::now_v7();
    assert!(inbox.record(&db, "billing", recent).await.expect("record"));

    let deleted = inbox
        .cleanup(&db, "billing", outbox::DEFAULT_DEDUP_WINDOW)
        .await
        .expect("cleanup");
    assert_eq!(deleted, 1_234);
    let left = record::Entity::find().all(&db).await.expect("records");
    assert_eq!(left.len(), 51, "audit's records are audit's to forget");
    assert!(left.iter().any(|r| r.event_id == recent));
    let ninety_days = Duration::from_secs(90 * 24 * 3600);
    assert_eq!(
        inbox
            .cleanup(&db, "audit", ninety_days)
            .await
            .expect("cleanup"),
        0
    );
    assert_eq!(
        inbox
            .cleanup(&db, "billing", Duration::from_secs(3600))
            .await
            .expect("cleanup"),
        0
    );
}

async fn invalid_consumer_names_are_refused_before_writing(db: DatabaseConnection) {
    let inbox = Inbox::new();
    for (name, reason) in [
        ("", "it must not be empty"),
        ("  ", "it must not be empty"),
        ("billing ", "it must not begin or end with whitespace"),
        ("\tbilling", "it must not begin or end with whitespace"),
        (
            &"c".repeat(256) as &str,
            "it may have at most 255 characters",
        ),
        ("bill\0ing", "it must not contain a NUL character"),
    ] {
        match inbox.record(&db, name, Uuid::now_v7()).await {
            Err(Error::InvalidConsumer { name: n, reason: r }) => {
                assert_eq!((n.as_str(), r), (name, reason));
            }
            other => panic!("{name:?} was not refused: {other:?}"),
        }
    }
    assert!(
        inbox
            .record(&db, &"é".repeat(255), Uuid::now_v7())
            .await
            .expect("fits")
    );
    assert_eq!(record::Entity::find().count(&db).await.expect("count"), 1);
}

outbox_tests::on_every_backend!(
    first_delivery_is_recorded_a_duplicate_is_not,
    a_rolled_back_record_is_forgotten,
    cleanup_forgets_records_older_than_the_window,
    invalid_consumer_names_are_refused_before_writing,
);

/// Two deliveries of one event at once (two consumers of a group during a
/// rebalance): the second waits for the first's transaction and follows its outcome.
async fn a_second_delivery_waits_for_the_first_and_follows_its_outcome(db: DatabaseConnection) {
    for commit in [true, false] {
        let inbox = Inbox::new();
        let event = Uuid::now_v7();
        let first = db.begin().await.expect("begin");
        assert!(
            inbox
                .record(&first, "billing", event)
                .await
                .expect("record")
        );

        let second = tokio::spawn({
            let (db, inbox) = (db.clone(), inbox.clone());
            async move {
                let txn = db.begin().await.expect("begin");
                let recorded = inbox.record(&txn, "billing", event).await.expect("record");
                txn.commit().await.expect("commit");
                recorded
            }
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(
            !second.is_finished(),
            "the second delivery waits for the first"
        );

        if commit {
            first.commit().await.expect("commit");
        } else {
            first.rollback().await.expect("rollback");
        }
        let recorded = tokio::time::timeout(Duration::from_secs(10), second)
            .await
            .expect("the second delivery goes on once the first ends")
            .expect("task");
        assert_eq!(
            recorded, !commit,
            "after a commit the second is a duplicate; after a rollback it is the first"
        );
        assert!(
            inbox
                .contains(&db, "billing", event)
                .await
                .expect("contains")
        );
    }
}

outbox_tests::on_server_backends!(a_second_delivery_waits_for_the_first_and_follows_its_outcome);
