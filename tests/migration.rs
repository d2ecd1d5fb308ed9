//! The migrations run up, down and up again, on PostgreSQL, MySQL and SQLite, and
//! create the tables and indexes the relay relies on.

use outbox::Tables;
use outbox_migration::Migrator;
use outbox_tests::{MySqlDatabase, PgSchema, sqlite};
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, Statement};
use sea_orm_migration::prelude::*;

const TABLES: [&str; 9] = [
    "_outbox",
    "_outbox_offset",
    "_outbox_lease",
    "_outbox_relay",
    "_outbox_published",
    "_outbox_inbox",
    "_outbox_inbox_dead",
    "_outbox_fleet",
    "_outbox_scheduled",
];

async fn tables_present(db: &DatabaseConnection) -> Vec<bool> {
    let manager = SchemaManager::new(db);
    let mut present = Vec::new();
    for table in TABLES {
        present.push(manager.has_table(table).await.expect("has_table"));
    }
    present
}

/// The names of the outbox's, the archive's and the inbox's indexes; `schema` is the PostgreSQL
/// schema or the MySQL database.
async fn index_names(db: &DatabaseConnection, schema: Option<&str>) -> Vec<String> {
    let statement = match (db.get_database_backend(), schema) {
        (DbBackend::Postgres, Some(schema)) => Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT indexname FROM pg_indexes WHERE schemaname = $1 AND tablename IN ('_outbox', '_outbox_published', '_outbox_inbox') ORDER BY 1",
            [schema.into()],
        ),
        (DbBackend::MySql, Some(database)) => Statement::from_sql_and_values(
            DbBackend::MySql,
            "SELECT DISTINCT CAST(index_name AS CHAR) FROM information_schema.statistics WHERE table_schema = ? AND table_name IN ('_outbox', '_outbox_published', '_outbox_inbox') ORDER BY 1",
            [database.into()],
        ),
        _ => Statement::from_string(
            DbBackend::Sqlite,
            "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name IN ('_outbox', '_outbox_published', '_outbox_inbox') AND sql IS NOT NULL ORDER BY 1",
        ),
    };
    db.query_all_raw(statement)
        .await
        .expect("list indexes")
        .iter()
        .map(|row| row.try_get_by_index::<String>(0).expect("index name"))
        .filter(|name| name.starts_with("idx_"))
        .collect()
}

const INDEXES: [&str; 10] = [
    "idx__outbox_aggregate_id",
    "idx__outbox_claim",
    "idx__outbox_dead",
    "idx__outbox_destination_topic",
    "idx__outbox_inbox_consumer_processed",
    "idx__outbox_parked",
    "idx__outbox_published_at",
    "idx__outbox_published_published_at",
    "idx__outbox_retry",
    "idx__outbox_trace_id",
];

/// How many rows MySQL's key lock table holds; `None` without the table.
async fn key_locks(db: &DatabaseConnection) -> Option<i64> {
    if !SchemaManager::new(db)
        .has_table("_outbox_key_lock")
        .await
        .expect("has_table")
    {
        return None;
    }
    let statement = Statement::from_string(
        db.get_database_backend(),
        "SELECT COUNT(*), MIN(id), MAX(id) FROM _outbox_key_lock",
    );
    let row = db
        .query_one_raw(statement)
        .await
        .expect("count key locks")
        .expect("a row");
    let first: i32 = row.try_get_by_index(1).expect("min");
    let last: i32 = row.try_get_by_index(2).expect("max");
    assert_eq!((first, last), (0, outbox::KEY_LOCKS - 1));
    Some(row.try_get_by_index(0).expect("count"))
}

async fn up_down_up(db: &DatabaseConnection, schema: Option<&str>) {
    let mysql = db.get_database_backend() == DbBackend::MySql;
    let key_lock_rows = mysql.then_some(i64::from(outbox::KEY_LOCKS));
    assert_eq!(
        tables_present(db).await,
        [false; 9],
        "the database starts empty"
    );

    Migrator::up(db, None).await.expect("first up");
    assert_eq!(tables_present(db).await, [true; 9]);
    assert_eq!(index_names(db, schema).await, INDEXES);
    assert_eq!(
        key_locks(db).await,
        key_lock_rows,
        "key locks on MySQL only"
    );

    Migrator::down(db, None).await.expect("down");
    assert_eq!(
        tables_present(db).await,
        [false; 9],
        "down removes every table"
    );
    assert_eq!(key_locks(db).await, None);

    Migrator::up(db, None).await.expect("second up");
    assert_eq!(tables_present(db).await, [true; 9]);
    assert_eq!(index_names(db, schema).await, INDEXES);
    assert_eq!(key_locks(db).await, key_lock_rows);
}

/// Writes a dead letter of `payload` at partition 0, offset 7 of `topic`, with SQL
/// that needs no `id` column.
async fn write_dead_letter(db: &DatabaseConnection, topic: &str, payload: &[u8]) {
    let insert = Query::insert()
        .into_table(Alias::new("_outbox_inbox_dead"))
        .columns(
            [
                "consumer",
                "topic",
                "kafka_partition",
                "kafka_offset",
                "payload",
                "headers",
                "error",
                "attempts",
                "dead_lettered_at",
            ]
            .map(Alias::new),
        )
        .values_panic([
            "billing".into(),
            topic.into(),
            0.into(),
            7i64.into(),
            payload.to_vec().into(),
            "{}".into(),
            "refused".into(),
            3.into(),
            chrono::Utc::now().into(),
        ])
        .to_owned();
    db.execute(&insert).await.expect("dead letter");
}

/// Migration 9 rebuilds the dead-letter table with an `id` key: letters written before
/// are kept, byte for byte, and going down keeps them too.
async fn dead_letters_survive_the_rebuild(db: &DatabaseConnection) {
    Migrator::up(db, Some(8)).await.expect("up to 8");
    let before = vec![7u8; 1024];
    write_dead_letter(db, "accounts", &before).await;
    Migrator::up(db, None).await.expect("up");
    let inbox = outbox::Inbox::new();
    let letters = inbox
        .dead_letters(db, "billing", 10)
        .await
        .expect("letters");
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].payload.as_deref(), Some(&before[..]));
    // A second letter at the same place (a topic created again reuses offsets), past
    // 64 KiB (a MySQL `BLOB`).
    let large = vec![8u8; 100 * 1024];
    write_dead_letter(db, "accounts", &large).await;
    let letters = inbox
        .dead_letters(db, "billing", 10)
        .await
        .expect("letters");
    assert_eq!(letters.len(), 2);
    assert!(letters[0].id < letters[1].id);
    assert_eq!(letters[1].payload.as_deref(), Some(&large[..]));
    assert!(
        inbox
            .delete_dead_letter(db, &letters[1])
            .await
            .expect("delete")
    );
    Migrator::down(db, Some(1)).await.expect("down one");
    write_dead_letter(db, "orders", b"old shape").await;
    Migrator::up(db, None).await.expect("up again");
    let letters = inbox
        .dead_letters(db, "billing", 10)
        .await
        .expect("letters");
    let topics: Vec<&str> = letters.iter().map(|l| l.topic.as_str()).collect();
    assert_eq!(topics, ["accounts", "orders"]);
}

#[tokio::test]
async fn postgres_migrates_up_down_and_up_again() {
    let pg = PgSchema::empty().await;
    up_down_up(&pg.db, Some(&pg.schema)).await;
    pg.drop().await;
    let pg = PgSchema::empty().await;
    dead_letters_survive_the_rebuild(&pg.db).await;
    pg.drop().await;
}

#[tokio::test]
async fn mysql_migrates_up_down_and_up_again() {
    let database = MySqlDatabase::empty().await;
    up_down_up(&database.db, Some(&database.name)).await;
    database.drop().await;
    let database = MySqlDatabase::empty().await;
    dead_letters_survive_the_rebuild(&database.db).await;
    database.drop().await;
}

#[tokio::test]
async fn sqlite_migrates_up_down_and_up_again() {
    let db = sqlite().await;
    up_down_up(&db, None).await;
    dead_letters_survive_the_rebuild(&sqlite().await).await;
}

/// A user's own Migrator can hold the outbox's migration, also under other names.
struct CustomMigrator;

impl MigratorTrait for CustomMigrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        let tables = Tables::with_base("billing_outbox").expect("valid base name");
        let mut migrations = outbox_migration::migrations();
        migrations.extend(outbox_migration::migrations_for(&tables));
        migrations
    }
}

#[tokio::test]
async fn migrations_compose_into_a_users_migrator_with_custom_table_names() {
    let pg = PgSchema::empty().await;
    CustomMigrator::up(&pg.db, None).await.expect("up");
    let manager = SchemaManager::new(&pg.db);
    for table in TABLES.into_iter().chain([
        "billing_outbox",
        "billing_outbox_offset",
        "billing_outbox_lease",
        "billing_outbox_published",
        "billing_outbox_inbox",
        "billing_outbox_inbox_dead",
        "billing_outbox_fleet",
        "billing_outbox_scheduled",
    ]) {
        assert!(
            manager.has_table(table).await.expect("has_table"),
            "{table} missing"
        );
    }
    let applied: Vec<String> = CustomMigrator::get_applied_migrations(&pg.db)
        .await
        .expect("applied")
        .iter()
        .map(|m| m.name().to_owned())
        .collect();
    assert_eq!(
        applied,
        [
            "m20261127_000001_create_outbox_tables",
            "m20261127_000002_park_waiting_events",
            "m20261128_000003_archive_published_events",
            "m20261128_000004_mysql_key_locks",
            "m20261128_000005_create_inbox",
            "m20261202_000006_inbox_dead_letters",
            "m20261205_000007_mysql_binary_keys",
            "m20261205_000008_relay_probation",
            "m20261205_000009_inbox_dead_letter_ids",
            "m20261205_000010_tombstones",
            "m20261206_000011_fleet_members",
            "m20261206_000012_scheduled_events",
            "m20261127_000001_create_outbox_tables_billing_outbox",
            "m20261127_000002_park_waiting_events_billing_outbox",
            "m20261128_000003_archive_published_events_billing_outbox",
            "m20261128_000004_mysql_key_locks_billing_outbox",
            "m20261128_000005_create_inbox_billing_outbox",
            "m20261202_000006_inbox_dead_letters_billing_outbox",
            "m20261205_000007_mysql_binary_keys_billing_outbox",
            "m20261205_000008_relay_probation_billing_outbox",
            "m20261205_000009_inbox_dead_letter_ids_billing_outbox",
            "m20261205_000010_tombstones_billing_outbox",
            "m20261206_000011_fleet_members_billing_outbox",
            "m20261206_000012_scheduled_events_billing_outbox",
        ]
    );
    CustomMigrator::down(&pg.db, None).await.expect("down");
    assert!(
        !manager
            .has_table("billing_outbox")
            .await
            .expect("has_table")
    );
    pg.drop().await;
}

/// The columns of `table`, sorted; `schema` is the PostgreSQL schema or the MySQL
/// database.
async fn column_names(db: &DatabaseConnection, schema: Option<&str>, table: &str) -> Vec<String> {
    let statement = match (db.get_database_backend(), schema) {
        (DbBackend::Postgres, Some(schema)) => Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT column_name::text FROM information_schema.columns WHERE table_schema = $1 AND table_name = $2",
            [schema.into(), table.into()],
        ),
        (DbBackend::MySql, Some(database)) => Statement::from_sql_and_values(
            DbBackend::MySql,
            "SELECT CAST(column_name AS CHAR) FROM information_schema.columns WHERE table_schema = ? AND table_name = ?",
            [database.into(), table.into()],
        ),
        _ => Statement::from_sql_and_values(
            DbBackend::Sqlite,
            "SELECT name FROM pragma_table_info(?)",
            [table.into()],
        ),
    };
    let mut names: Vec<String> = db
        .query_all_raw(statement)
        .await
        .expect("list columns")
        .iter()
        .map(|row| row.try_get_by_index::<String>(0).expect("column name"))
        .collect();
    names.sort();
    names
}

/// The columns of an entity, sorted.
fn entity_columns<C: sea_orm::Iterable + sea_orm::IdenStatic>() -> Vec<String> {
    let mut names: Vec<String> = C::iter().map(|c| c.as_str().to_owned()).collect();
    names.sort();
    names
}

/// The predicate of the index `name` as the database keeps it: PostgreSQL's
/// normalised expression, SQLite's text after `WHERE`.
async fn index_predicate(db: &DatabaseConnection, schema: Option<&str>, name: &str) -> String {
    let statement = match (db.get_database_backend(), schema) {
        (DbBackend::Postgres, Some(schema)) => Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT pg_get_expr(i.indpred, i.indrelid) FROM pg_index i \
             JOIN pg_class c ON c.oid = i.indexrelid \
             JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = $1 AND c.relname = $2",
            [schema.into(), name.into()],
        ),
        _ => Statement::from_sql_and_values(
            DbBackend::Sqlite,
            "SELECT sql FROM sqlite_master WHERE type = 'index' AND name = ?",
            [name.into()],
        ),
    };
    let row = db
        .query_one_raw(statement)
        .await
        .expect("read the index")
        .unwrap_or_else(|| panic!("no index {name}"));
    let definition: Option<String> = row.try_get_by_index(0).expect("its definition");
    let definition = definition.unwrap_or_else(|| panic!("{name} is not partial"));
    match db.get_database_backend() {
        DbBackend::Postgres => definition,
        _ => definition
            .split_once(" WHERE ")
            .unwrap_or_else(|| panic!("{name} is not partial: {definition}"))
            .1
            .to_owned(),
    }
}

/// The migrated schema is the one the library works with: every table has its
/// entity's columns, no more, no fewer (the archive has the outbox's), and each
/// partial index of the outbox has the predicate [`outbox::schema`] gives today, as
/// the database reads both back (an index built from `outbox::schema` next to it).
/// The migrations keep their own copies of the predicates and column names, so this
/// is what tells when the library and its migrations part.
async fn assert_schema_agrees_with_the_library(db: &DatabaseConnection, schema: Option<&str>) {
    use outbox::entity::{inbox, inbox_dead, lease, offset, outbox as event, relay};

    Migrator::up(db, None).await.expect("up");
    let t = Tables::default();
    for (table, columns) in [
        (t.outbox(), entity_columns::<event::Column>()),
        (t.archive(), entity_columns::<event::Column>()),
        (t.offset(), entity_columns::<offset::Column>()),
        (t.lease(), entity_columns::<lease::Column>()),
        (t.relay(), entity_columns::<relay::Column>()),
        (t.inbox(), entity_columns::<inbox::Column>()),
        (t.inbox_dead(), entity_columns::<inbox_dead::Column>()),
    ] {
        assert_eq!(
            column_names(db, schema, table.as_str()).await,
            columns,
            "the columns of {table}"
        );
    }
    if db.get_database_backend() == DbBackend::MySql {
        return; // no partial indexes there
    }
    let manager = SchemaManager::new(db);
    for (suffix, predicate) in [
        ("claim", outbox::schema::claimable()),
        ("retry", outbox::schema::retrying()),
        ("published_at", outbox::schema::published()),
        ("dead", outbox::schema::dead_lettered()),
    ] {
        let reference = format!("reference_{suffix}");
        manager
            .create_index(
                Index::create()
                    .name(&reference)
                    .table(Alias::new(t.outbox().as_str()))
                    .col(Alias::new("seq"))
                    .cond_where(predicate)
                    .to_owned(),
            )
            .await
            .expect("the reference index");
        assert_eq!(
            index_predicate(db, schema, &t.index(t.outbox(), suffix)).await,
            index_predicate(db, schema, &reference).await,
            "the predicate of {suffix}"
        );
        manager
            .drop_index(
                Index::drop()
                    .name(&reference)
                    .table(Alias::new(t.outbox().as_str()))
                    .to_owned(),
            )
            .await
            .expect("drop the reference index");
    }
}

#[tokio::test]
async fn the_migrated_schema_agrees_with_the_entities_and_outbox_schema() {
    assert_schema_agrees_with_the_library(&sqlite().await, None).await;
    let pg = PgSchema::empty().await;
    assert_schema_agrees_with_the_library(&pg.db, Some(&pg.schema)).await;
    pg.drop().await;
    let database = MySqlDatabase::empty().await;
    assert_schema_agrees_with_the_library(&database.db, Some(&database.name)).await;
    database.drop().await;
}
