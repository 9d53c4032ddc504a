//! Schema changes carry a database written by an earlier version.

use crate::support::{Fixture, spend, tokens};
use scrip_ledger::LedgerError;

/// Puts the spent set back as migrations 0001 and 0002 left it (keyed by the whole nullifier)
/// and forgets that 0003 ran, as on a database an earlier version wrote.
const BACK_TO_0002: &str = "
    CREATE TABLE spent_0002 (nullifier BYTEA PRIMARY KEY, key_no BIGINT NOT NULL, seq BIGINT NOT NULL);
    INSERT INTO spent_0002 SELECT nullifier, key_no, seq FROM spent
        UNION ALL SELECT nullifier, key_no, seq FROM spent_clash;
    DROP TABLE spent;
    DROP TABLE spent_clash;
    DROP FUNCTION nullifier_head(BYTEA);
    ALTER TABLE spent_0002 RENAME TO spent;
    CREATE INDEX spent_by_key ON spent (key_no);
    DELETE FROM _sqlx_migrations WHERE version = 3;
";

/// Migration 0003 moves every spent nullifier into the spent set keyed by its first 8 bytes:
/// the ledger reopens with a spent set that matches its log, and two nullifiers that share
/// their first 8 bytes both stay spent.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs SCRIP_TEST_PG_URL"]
async fn postgres_spent_set_keyed_by_the_whole_nullifier_is_carried_over() {
    let f = Fixture::postgres().await;
    f.announce(&f.a, "op-a", 0, "queue").await;
    let batch = tokens(0, "op-a", 40);
    f.ledger
        .submit(f.request(&f.b, spend(batch)).await)
        .await
        .expect("spend");
    let before = f.ledger.store().spent_set().await.expect("spent set");
    assert_eq!(before.len(), 40);
    let pool = sqlx::PgPool::connect(&f.url).await.expect("postgres");
    sqlx::raw_sql(BACK_TO_0002)
        .execute(&pool)
        .await
        .expect("back to 0002");

    let reopened = f.reopen().await.expect("a migrated database opens");
    assert_eq!(
        reopened.store().spent_set().await.expect("spent set"),
        before
    );

    // A nullifier that shares its first 8 bytes with a spent one (no spend in the log made it,
    // so the ledger then refuses to start, naming it; the store still reads it).
    sqlx::raw_sql(BACK_TO_0002)
        .execute(&pool)
        .await
        .expect("back to 0002");
    let (first, key, seq) = before[0];
    let mut bytes = first.0;
    bytes[31] ^= 1;
    let clash = scrip_spec::Nullifier(bytes);
    sqlx::query(
        "INSERT INTO spent (nullifier, key_no, seq) SELECT $1, key_no, seq FROM spent \
         WHERE nullifier = $2",
    )
    .bind(&clash.0[..])
    .bind(&first.0[..])
    .execute(&pool)
    .await
    .expect("insert a clash");
    let store = scrip_ledger::connect(&f.url).await.expect("migrate");
    let mut expected = before.clone();
    expected.push((clash, key, seq));
    expected.sort();
    assert_eq!(store.spent_set().await.expect("spent set"), expected);
    for n in [first, clash] {
        let found = store.nullifier(&n).await.expect("lookup").map(|s| s.seq);
        assert_eq!(found, Some(seq), "nullifier {n}");
    }
    match f.reopen().await {
        Err(LedgerError::DerivedStateMismatch(e)) => {
            assert!(e.to_string().contains(&clash.to_string()), "{e}");
        }
        Err(e) => panic!("refused for another reason: {e}"),
        Ok(_) => panic!("a ledger started on a spent set with a nullifier no spend made"),
    }
}

/// The indexes SQLite keeps on the spent set besides its primary key.
async fn spent_indexes(pool: &sqlx::SqlitePool) -> Vec<String> {
    sqlx::query_scalar("SELECT name FROM pragma_index_list('spent') WHERE origin = 'c'")
        .fetch_all(pool)
        .await
        .expect("index list")
}

/// Migration 0003 on SQLite drops the spent set's index by key (a second B-tree on random
/// keys, written once per spent token): the spent set is carried over as it is, and pruning,
/// which read that index, still removes exactly its key's rows (the shared prune case checks
/// that on a fresh database).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_spent_set_loses_its_index_by_key() {
    let f = Fixture::sqlite().await;
    f.announce(&f.a, "op-a", 0, "queue").await;
    f.ledger
        .submit(f.request(&f.b, spend(tokens(0, "op-a", 40))).await)
        .await
        .expect("spend");
    let before = f.ledger.store().spent_set().await.expect("spent set");
    assert_eq!(before.len(), 40);
    let pool = sqlx::SqlitePool::connect(&f.url).await.expect("sqlite");
    assert!(
        spent_indexes(&pool).await.is_empty(),
        "a fresh database has no index by key"
    );
    sqlx::raw_sql(
        "CREATE INDEX spent_by_key ON spent (key_no); \
         DELETE FROM _sqlx_migrations WHERE version = 3;",
    )
    .execute(&pool)
    .await
    .expect("back to 0002");
    assert_eq!(spent_indexes(&pool).await, vec!["spent_by_key".to_owned()]);

    let reopened = f.reopen().await.expect("a migrated database opens");
    assert!(spent_indexes(&pool).await.is_empty(), "0003 dropped it");
    assert_eq!(
        reopened.store().spent_set().await.expect("spent set"),
        before
    );
}
