//! The store contract against a real PostgreSQL, one fresh schema per test.
//!
//! `scripts/test` starts a throwaway server and sets `TESSERA_TEST_POSTGRES_URL`; without it
//! these tests fail (they never skip silently).

use std::sync::Arc;

use sqlx::postgres::PgConnectOptions;
use tessera_store::contract::Stores;
use tessera_store::postgres::PostgresStore;

pub fn postgres_url() -> String {
    std::env::var("TESSERA_TEST_POSTGRES_URL").unwrap_or_else(|_| {
        panic!("TESSERA_TEST_POSTGRES_URL is not set: run the suite with scripts/test, which starts a PostgreSQL")
    })
}

async fn fresh_postgres() -> Stores {
    let url = postgres_url();
    let schema = format!("t{}", tessera_core::SessionId::generate().to_string().replace('-', ""));
    let admin = sqlx::PgPool::connect(&url).await.expect("connect to the test PostgreSQL");
    sqlx::raw_sql(&format!("CREATE SCHEMA {schema}")).execute(&admin).await.expect("create schema");
    let options: PgConnectOptions = url.parse().expect("postgres url");
    let store = PostgresStore::connect_with(options.options([("search_path", schema.as_str())]))
        .await
        .expect("open the PostgreSQL store");
    let store = Arc::new(store);
    Stores { users: store.clone(), clients: store.clone(), sessions: store, pushes_ends: true, guard: Box::new(admin) }
}

tessera_store::store_contract_tests!(fresh_postgres);
