//! An operator's replay of a consumer's dead letter: the running consumer hands the
//! message to its handler again, in a transaction that deletes the letter and renews
//! the event's inbox record; one that fails again stays a dead letter.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use outbox::{Consumer, DeadLetterFilter, HandlerError, Inbox, Received};
use outbox_tests::kafka::{brokers, create_topic, unique_topic};
use outbox_tests::{ServerDatabase, eventually};
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, Statement};

use super::{AccountEvent, consumer_config, credit, done_with, publish, publisher, unique_name};

/// Each application of a credit, as `n`s in the order applied.
async fn applied(db: &DatabaseConnection) -> Vec<i64> {
    db.query_all_raw(Statement::from_string(
        db.get_database_backend(),
        "SELECT n FROM replayed_credits ORDER BY seq",
    ))
    .await
    .expect("applied")
    .iter()
    .map(|row| row.try_get_by_index(0).expect("n"))
    .collect()
}

async fn replay_after_the_cause_is_mended(database: &ServerDatabase) {
    let db = database.db();
    let backend = db.get_database_backend();
    let table = match backend {
        DbBackend::MySql => {
            "CREATE TABLE replayed_credits (seq BIGINT AUTO_INCREMENT PRIMARY KEY, n BIGINT NOT NULL)"
        }
        _ => "CREATE TABLE replayed_credits (seq BIGSERIAL PRIMARY KEY, n BIGINT NOT NULL)",
    };
    db.execute_unprepared(table).await.expect("table");
    let topic = unique_topic("accounts");
    create_topic(&brokers(), &topic, 1).await;
    let messages: Vec<_> = (0..3).map(|n| credit(&topic, "account-0", n)).collect();
    publish(&publisher().await, &messages).await;

    let name = unique_name("billing");
    let mut config = consumer_config(&name, &topic);
    config.replay_interval = Some(Duration::from_millis(100));
    // n = 1 is refused until the cause is mended.
    let mended = Arc::new(AtomicBool::new(false));
    let handler_mended = Arc::clone(&mended);
    let consumer = Consumer::new(config, db.clone())
        .expect("valid consumer")
        .handle(move |txn, event: Received<AccountEvent>| {
            let mended = handler_mended.load(Ordering::SeqCst);
            Box::pin(async move {
                let AccountEvent::Credited { n, .. } = *event.event() else {
                    return Ok(());
                };
                if n == 1 && !mended {
                    return Err(HandlerError::permanent("account-0 is frozen"));
                }
                let insert = match txn.get_database_backend() {
                    DbBackend::MySql => "INSERT INTO replayed_credits (n) VALUES (?)",
                    _ => "INSERT INTO replayed_credits (n) VALUES ($1)",
                };
                txn.execute_raw(Statement::from_sql_and_values(
                    txn.get_database_backend(),
                    insert,
                    [n.into()],
                ))
                .await?;
                Ok(())
            })
        })
        .spawn()
        .expect("consumer starts");
    done_with(&consumer, 3).await;
    let inbox = Inbox::new();
    let mine = DeadLetterFilter::consumer(name.clone());
    let dead = inbox.find_dead_letters(db, &mine, 10).await.expect("dead");
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].event_id, Some(messages[1].id));

    // Replayed before the cause is mended: it fails again and stays, unmarked.
    assert_eq!(inbox.request_replay(db, &mine).await.expect("mark"), 1);
    eventually("the replay is tried", Duration::from_secs(30), || async {
        inbox
            .dead_letter(db, dead[0].id)
            .await
            .expect("letter")
            .is_some_and(|letter| letter.replay_requested_at.is_none())
    })
    .await;
    let letter = inbox
        .dead_letter(db, dead[0].id)
        .await
        .expect("letter")
        .expect("kept");
    assert_eq!(letter.error, "replay: account-0 is frozen");
    assert_eq!(letter.attempts, dead[0].attempts + 1);

    // Mended, and replayed again: applied once, the letter gone, the event recorded.
    mended.store(true, Ordering::SeqCst);
    assert_eq!(inbox.request_replay(db, &mine).await.expect("mark"), 1);
    eventually("the replay is applied", Duration::from_secs(30), || async {
        consumer.stats().replayed == 1
    })
    .await;
    assert!(
        inbox
            .find_dead_letters(db, &mine, 10)
            .await
            .expect("dead")
            .is_empty()
    );
    assert!(
        inbox
            .contains(db, &name, messages[1].id)
            .await
            .expect("recorded")
    );
    assert_eq!(applied(db).await, [0, 2, 1]);
    consumer.shutdown().await.expect("shutdown");
}

outbox_tests::on_server_databases!(replay_after_the_cause_is_mended);
