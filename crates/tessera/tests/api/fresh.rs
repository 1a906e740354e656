//! The first minute of a newcomer: `tessera serve` as the README's first command runs it, in an
//! empty directory with nothing prepared, and the other commands that take `--data-dir` on a
//! directory that does not exist yet.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use serde_json::{Value, json};

use crate::helpers::*;

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).permissions().mode() & 0o777
}

/// Register, log in and ask `/me`, as the README's "Try it" does.
async fn try_it(server: &TestServer, email: &str) -> Tokens {
    server.register(email).await;
    signed_in(server, email).await
}

async fn signed_in(server: &TestServer, email: &str) -> Tokens {
    let tokens = server.login(email).await;
    assert_eq!(server.me(&tokens.access).await.data()["email"], email);
    tokens
}

#[tokio::test]
async fn serve_with_no_flags_in_an_empty_directory_makes_its_data_directory_and_serves() {
    if !first_run_only("serve_with_no_flags_in_an_empty_directory_makes_its_data_directory_and_serves") {
        return;
    }
    let server = TestServer::start_fresh(&[]).await;
    let data = server.data_dir.path().join("tessera-data");
    assert_eq!(mode(&data), 0o700, "the data directory is private");
    assert!(data.join("tessera.db").is_file());
    let email = unique_email();
    try_it(&server, &email).await;

    // A second start on the same data uses it: the account and the signing key are still there.
    let kid = jwt_parts(&server.login(&email).await.access).0["kid"].clone();
    let server = server.restart(false).await;
    let tokens = signed_in(&server, &email).await;
    assert_eq!(jwt_parts(&tokens.access).0["kid"], kid);
}

#[tokio::test]
async fn a_nested_data_directory_that_does_not_exist_is_made() {
    if !first_run_only("a_nested_data_directory_that_does_not_exist_is_made") {
        return;
    }
    let server = TestServer::start_fresh(&["--data-dir", "a/b/c"]).await;
    let dir = server.data_dir.path();
    for path in ["a", "a/b", "a/b/c"] {
        assert_eq!(mode(&dir.join(path)), 0o700, "{path}");
    }
    assert!(dir.join("a/b/c/tessera.db").is_file() && dir.join("a/b/c/keys").is_dir());
    assert!(!dir.join("tessera-data").exists(), "the named directory, not the default one");
    try_it(&server, &unique_email()).await;
}

#[tokio::test]
async fn a_sqlite_database_url_in_a_directory_that_does_not_exist_is_made() {
    if !first_run_only("a_sqlite_database_url_in_a_directory_that_does_not_exist_is_made") {
        return;
    }
    let server = TestServer::start_fresh(&["--database-url", "sqlite://db/dir/users.db"]).await;
    assert!(server.data_dir.path().join("db/dir/users.db").is_file());
    try_it(&server, &unique_email()).await;
}

fn tessera(dir: &Path, args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_tessera")).current_dir(dir).args(args).output().unwrap()
}

#[tokio::test]
async fn every_command_that_takes_a_data_directory_makes_it() {
    if !first_run_only("every_command_that_takes_a_data_directory_makes_it") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let out = tessera(dir.path(), &["keys", "rotate", "--data-dir", "k/new"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(mode(&dir.path().join("k/new")), 0o700);
    let out = tessera(dir.path(), &["clients", "add", "reports", "--data-dir", "c/new", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(mode(&dir.path().join("c/new")), 0o700);
    let out = tessera(dir.path(), &["clients", "list", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(mode(&dir.path().join("tessera-data")), 0o700, "the default data directory");
    assert_eq!(serde_json::from_slice::<Value>(&out.stdout).unwrap(), json!([]));
}

/// `tessera clients` finds the database the server's `--config` file names (and its
/// `TESSERA_*` variables), exactly as `serve` does: the client it registers is the one the
/// server accepts.
#[tokio::test]
async fn clients_registered_through_the_config_file_are_the_servers_clients() {
    let dir = tempfile::tempdir().unwrap();
    let database = match backend() {
        Backend::Postgres => postgres_args().await[1].clone(),
        _ => format!("sqlite://{}", dir.path().join("from-config/tessera.db").display()),
    };
    let config = dir.path().join("tessera.toml");
    std::fs::write(&config, format!("database_url = \"{database}\"\ndata_dir = \"data\"\n")).unwrap();
    let config = config.to_str().unwrap();

    let out = tessera(dir.path(), &["clients", "add", "billing", "--json", "--config", config]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let client: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(!dir.path().join("data/tessera.db").exists(), "no stray SQLite file in the data directory");
    // The same file through TESSERA_CONFIG, as a service manager would set it.
    let listed = std::process::Command::new(env!("CARGO_BIN_EXE_tessera"))
        .current_dir(dir.path())
        .args(["clients", "list", "--json"])
        .env("TESSERA_CONFIG", config)
        .output()
        .unwrap();
    let listed: Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(listed[0]["client_id"], client["client_id"]);

    let server = TestServer::start_raw(vec!["--config".into(), config.into()]).await;
    let token = server.user(&unique_email()).await.access;
    let (id, secret) = (client["client_id"].as_str().unwrap(), client["client_secret"].as_str().unwrap());
    let reply = read(
        http_client()
            .post(server.url("/oauth/introspect"))
            .basic_auth(id, Some(secret))
            .form(&[("token", token.as_str())])
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(reply.body["active"], true, "{}", reply.body);
}
