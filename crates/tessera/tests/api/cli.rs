//! The `tessera` command-line client against a real server, with its own config directory.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::helpers::*;

/// A user's shell: the `tessera` binary with `HOME` and `XDG_CONFIG_HOME` in a temp dir.
struct Shell {
    home: tempfile::TempDir,
    server: String,
}

impl Shell {
    fn new(server: &TestServer) -> Self {
        Self { home: tempfile::tempdir().unwrap(), server: server.base.clone() }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tessera"));
        cmd.args(args)
            .env("HOME", self.home.path())
            .env("XDG_CONFIG_HOME", self.home.path().join("config"))
            .env("TESSERA_SERVER", &self.server)
            .stdin(Stdio::null());
        cmd
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    fn run_with_stdin(&self, args: &[&str], stdin: &str) -> Output {
        let mut child =
            self.command(args).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        // A command that fails on its arguments exits without reading: the pipe may be closed.
        let _ = child.stdin.take().unwrap().write_all(stdin.as_bytes());
        child.wait_with_output().unwrap()
    }

    fn login(&self, email: &str) -> Output {
        self.run_with_stdin(&["login", "--email", email, "--password-stdin"], &format!("{PASSWORD}\n"))
    }

    fn token_file(&self) -> PathBuf {
        self.home.path().join("config/tessera/tokens.json")
    }

    fn tokens(&self) -> Value {
        serde_json::from_slice(&std::fs::read(self.token_file()).unwrap()).unwrap()
    }
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn assert_exit(o: &Output, code: i32) {
    assert_eq!(o.status.code(), Some(code), "stdout: {}\nstderr: {}", stdout(o), stderr(o));
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[tokio::test]
async fn login_status_token_logout_round_trip() {
    let server = TestServer::start().await;
    let email = unique_email();
    server.register(&email).await;
    let sh = Shell::new(&server);

    let login = sh.login(&email);
    assert_exit(&login, 0);
    assert!(stdout(&login).contains(&email));
    assert_eq!(mode(&sh.token_file()), 0o600);
    let saved = sh.tokens();
    for field in ["server", "access_token", "refresh_token", "expires_at", "email"] {
        assert!(!saved[field].is_null(), "{field} missing from {saved}");
    }
    assert_eq!(saved["server"], server.base.as_str());
    assert_eq!(saved["email"], email.as_str());

    let status = sh.run(&["status"]);
    assert_exit(&status, 0);
    let text = stdout(&status);
    assert!(text.contains(&format!("Server: {}", server.base)), "{text}");
    assert!(text.contains("Authenticated: true") && text.contains(&email), "{text}");
    assert!(text.contains("valid for 1") || text.contains("valid for 9") || text.contains("valid for 15m"), "{text}");

    let token = sh.run(&["token"]);
    assert_exit(&token, 0);
    let access = stdout(&token).trim().to_owned();
    assert_eq!(server.me(&access).await.data()["email"], email.as_str());

    let logout = sh.run(&["logout"]);
    assert_exit(&logout, 0);
    assert!(!sh.token_file().exists());
    let status = sh.run(&["status"]);
    assert_exit(&status, 3);
    assert!(
        stdout(&status).contains("Authenticated: false (run 'tessera login' to authenticate)"),
        "{}",
        stdout(&status)
    );
    server.refresh(saved["refresh_token"].as_str().unwrap()).await.assert_error(401, "INVALID_TOKEN");
    server.me(&access).await.assert_error(401, "UNAUTHORIZED");
}

#[tokio::test]
async fn whoami_after_expiry_refreshes_transparently() {
    let server = TestServer::start_with(&["--access-ttl", "3s"]).await;
    let email = unique_email();
    server.register(&email).await;
    let sh = Shell::new(&server);
    assert_exit(&sh.login(&email), 0);
    let first = sh.tokens();
    tokio::time::sleep(Duration::from_millis(3200)).await;
    let whoami = sh.run(&["whoami"]);
    assert_exit(&whoami, 0);
    assert!(stdout(&whoami).starts_with(&email), "{}", stdout(&whoami));
    assert_ne!(sh.tokens()["refresh_token"], first["refresh_token"], "rotated and saved");
    assert_eq!(server.audit("token_refreshed").len(), 1);
}

#[tokio::test]
async fn concurrent_token_commands_at_expiry_never_trip_reuse_detection() {
    let server = TestServer::start_with(&["--access-ttl", "3s"]).await;
    let email = unique_email();
    server.register(&email).await;
    let sh = Shell::new(&server);
    assert_exit(&sh.login(&email), 0);
    tokio::time::sleep(Duration::from_millis(3100)).await;
    let children: Vec<_> =
        (0..8).map(|_| sh.command(&["token"]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap()).collect();
    let outputs: Vec<Output> = children.into_iter().map(|c| c.wait_with_output().unwrap()).collect();
    for o in &outputs {
        assert_exit(o, 0);
        server.me(stdout(o).trim()).await.data();
    }
    assert!(server.audit("refresh_token_reused").is_empty(), "a process presented a rotated token");
    assert_eq!(server.audit("token_refreshed").len(), 1, "one process refreshed, the others used its pair");
    // The session is still alive afterwards.
    assert_exit(&sh.run(&["whoami"]), 0);
}

#[tokio::test]
async fn sessions_lists_and_revokes() {
    let server = TestServer::start().await;
    let email = unique_email();
    server.register(&email).await;
    let other = server.login(&email).await;
    let sh = Shell::new(&server);
    assert_exit(&sh.login(&email), 0);
    let list = sh.run(&["sessions"]);
    assert_exit(&list, 0);
    let other_sid = server.me(&other.access).await.data()["session_id"].as_str().unwrap().to_owned();
    let text = stdout(&list);
    assert!(text.contains(&other_sid), "{text}");
    assert_eq!(text.lines().filter(|l| l.starts_with('*')).count(), 1, "the current session is marked: {text}");
    assert_exit(&sh.run(&["sessions", "--revoke", &other_sid]), 0);
    server.me(&other.access).await.assert_error(401, "UNAUTHORIZED");
    let again = sh.run(&["sessions", "--revoke", &other_sid]);
    assert_exit(&again, 1);
    assert!(stderr(&again).contains("not found"), "{}", stderr(&again));
}

#[tokio::test]
async fn failures_have_one_line_and_distinct_exit_codes() {
    let server = TestServer::start().await;
    let email = unique_email();
    server.register(&email).await;
    let sh = Shell::new(&server);

    let not_logged_in = sh.run(&["whoami"]);
    assert_exit(&not_logged_in, 3);
    assert!(stderr(&not_logged_in).contains("not logged in"));

    let wrong = sh.run_with_stdin(&["login", "--email", &email, "--password-stdin"], "wrong password\n");
    assert_exit(&wrong, 5);
    assert_eq!(stderr(&wrong).trim(), "tessera: invalid email or password");

    let unreachable = sh
        .run_with_stdin(&["login", "--server", "http://127.0.0.1:9", "--email", &email, "--password-stdin"], PASSWORD);
    assert_exit(&unreachable, 6);
    assert_eq!(stderr(&unreachable).lines().count(), 1, "{}", stderr(&unreachable));

    assert_exit(&sh.run(&["login", "--email", &email]), 2); // no terminal, no --password-stdin
    assert_exit(&sh.run(&["login", "--interactive", "--password-stdin"]), 2);
    assert_exit(&sh.run(&["status", "--server", "ftp://x"]), 2);

    // Session ended elsewhere: the CLI says so and forgets the tokens.
    assert_exit(&sh.login(&email), 0);
    let access = sh.tokens()["access_token"].as_str().unwrap().to_owned();
    server.send(reqwest::Method::POST, "/api/auth/logout-all", Some(&access), None, &[]).await.data();
    let expired = sh.run(&["whoami"]);
    assert_exit(&expired, 4);
    assert!(stderr(&expired).contains("run 'tessera login'"), "{}", stderr(&expired));
    assert_exit(&sh.run(&["status"]), 3);
}

#[tokio::test]
async fn a_damaged_token_file_gets_a_clear_message() {
    let server = TestServer::start().await;
    let sh = Shell::new(&server);
    std::fs::create_dir_all(sh.token_file().parent().unwrap()).unwrap();
    for junk in ["{not json", "{\"server\": 5}", ""] {
        std::fs::write(sh.token_file(), junk).unwrap();
        for cmd in ["status", "whoami", "token"] {
            let o = sh.run(&[cmd]);
            assert_exit(&o, 1);
            assert!(stderr(&o).contains("damaged") && stderr(&o).contains("tokens.json"), "{cmd}: {}", stderr(&o));
        }
    }
    // Logging in again replaces it.
    let email = unique_email();
    server.register(&email).await;
    assert_exit(&sh.login(&email), 0);
    assert_exit(&sh.run(&["whoami"]), 0);
}

#[tokio::test]
async fn logout_without_the_server_still_removes_the_tokens_and_says_so() {
    let server = TestServer::start().await;
    let email = unique_email();
    server.register(&email).await;
    let sh = Shell::new(&server);
    assert_exit(&sh.login(&email), 0);
    let mut server = server;
    server.stop(true);
    let logout = sh.run(&["logout"]);
    assert_exit(&logout, 6);
    assert!(stderr(&logout).contains("removed the local tokens"), "{}", stderr(&logout));
    assert!(!sh.token_file().exists());
}

#[test]
fn the_password_prompt_does_not_echo() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let server = runtime.block_on(TestServer::start());
    let email = unique_email();
    runtime.block_on(server.register(&email));
    let sh = Shell::new(&server);
    let mut cmd = sh.command(&["login", "--interactive"]);
    cmd.stdin(Stdio::inherit());
    let mut session = rexpect::session::spawn_command(cmd, Some(15_000)).unwrap();
    session.exp_string("Email: ").unwrap();
    session.send_line(&email).unwrap();
    session.exp_string("Password: ").unwrap();
    session.send_line(PASSWORD).unwrap();
    let rest = session.exp_eof().unwrap();
    assert!(!rest.contains(PASSWORD), "the password was echoed: {rest:?}");
    assert!(rest.contains("Logged in"), "{rest:?}");
    assert_eq!(sh.tokens()["email"], email.as_str());
}

const NEW_PASSWORD: &str = "a brand new passphrase";

/// A registered account with a username and no email.
async fn username_account(server: &TestServer) -> String {
    let username = unique_email().split('@').next().unwrap().to_owned();
    let reply =
        server.post("/api/auth/register", serde_json::json!({"username": username, "password": PASSWORD})).await;
    assert_eq!(reply.status, 201, "{}", reply.body);
    username
}

#[tokio::test]
async fn login_by_username() {
    let server = TestServer::start().await;
    let username = username_account(&server).await;
    let sh = Shell::new(&server);

    let login = sh.run_with_stdin(&["login", "--username", &username, "--password-stdin"], &format!("{PASSWORD}\n"));
    assert_exit(&login, 0);
    assert!(stdout(&login).contains(&format!("as {username}.")), "{}", stdout(&login));
    let saved = sh.tokens();
    assert_eq!((saved["email"].as_str(), saved["username"].as_str()), (Some(""), Some(username.as_str())), "{saved}");
    assert_eq!(saved["is_anonymous"], false);
    let status = sh.run(&["status"]);
    assert_exit(&status, 0);
    assert!(stdout(&status).contains(&format!("User: {username}\n")), "{}", stdout(&status));
    let whoami = sh.run(&["whoami"]);
    assert_exit(&whoami, 0);
    assert!(stdout(&whoami).starts_with(&username), "{}", stdout(&whoami));

    let wrong = sh.run_with_stdin(&["login", "--username", &username, "--password-stdin"], "wrong password\n");
    assert_exit(&wrong, 5);
    assert_eq!(stderr(&wrong).trim(), "tessera: invalid username or password");
    let both = sh
        .run_with_stdin(&["login", "--email", "a@example.com", "--username", &username, "--password-stdin"], PASSWORD);
    assert_exit(&both, 2);
    let neither = sh.run_with_stdin(&["login", "--password-stdin"], PASSWORD);
    assert_exit(&neither, 2);
    assert!(stderr(&neither).contains("--email or --username"), "{}", stderr(&neither));
}

#[tokio::test]
async fn status_shows_both_names_when_the_account_has_both() {
    let server = TestServer::start().await;
    let (email, username) = (unique_email(), unique_email().replace(['@', '.'], "-"));
    let body = serde_json::json!({"email": email, "username": username, "password": PASSWORD});
    assert_eq!(server.post("/api/auth/register", body).await.status, 201);
    let sh = Shell::new(&server);
    assert_exit(&sh.run_with_stdin(&["login", "--username", &username, "--password-stdin"], PASSWORD), 0);
    let status = stdout(&sh.run(&["status"]));
    assert!(status.contains(&format!("User: {email} (username {username})")), "{status}");
}

#[tokio::test]
async fn passwd_from_standard_input_ends_the_other_sessions() {
    let server = TestServer::start().await;
    let email = unique_email();
    server.register(&email).await;
    let other = server.login(&email).await;
    let sh = Shell::new(&server);
    assert_exit(&sh.login(&email), 0);
    let before = sh.tokens();

    let wrong = sh.run_with_stdin(&["passwd", "--password-stdin"], &format!("not the password\n{NEW_PASSWORD}\n"));
    assert_exit(&wrong, 5);
    assert_eq!(stderr(&wrong).trim(), "tessera: the current password is wrong; nothing changed");
    assert_eq!(sh.tokens(), before, "the tokens are kept");
    server.me(&other.access).await.data();

    let one_line = sh.run_with_stdin(&["passwd", "--password-stdin"], &format!("{PASSWORD}\n"));
    assert_exit(&one_line, 2);
    assert!(stderr(&one_line).contains("the new password"), "{}", stderr(&one_line));
    assert_exit(&sh.run(&["passwd"]), 2); // no terminal, no --password-stdin

    let changed = sh.run_with_stdin(&["passwd", "--password-stdin"], &format!("{PASSWORD}\n{NEW_PASSWORD}\n"));
    assert_exit(&changed, 0);
    assert!(stdout(&changed).contains("1 other session ended"), "{}", stdout(&changed));
    server.me(&other.access).await.assert_error(401, "UNAUTHORIZED");
    assert_exit(&sh.run(&["whoami"]), 0);

    assert_exit(&sh.run(&["logout"]), 0);
    assert_exit(&sh.login(&email), 5);
    assert_exit(&sh.run_with_stdin(&["login", "--email", &email, "--password-stdin"], NEW_PASSWORD), 0);
    // The only session now: nothing else to end.
    let again = sh.run_with_stdin(&["passwd", "--password-stdin"], &format!("{NEW_PASSWORD}\r\n{PASSWORD}\r\n"));
    assert_exit(&again, 0);
    assert!(stdout(&again).contains("no other session"), "{}", stdout(&again));

    assert_exit(&sh.run(&["logout"]), 0);
    let logged_out = sh.run_with_stdin(&["passwd", "--password-stdin"], &format!("{PASSWORD}\n{NEW_PASSWORD}\n"));
    assert_exit(&logged_out, 3);
}

#[test]
fn passwd_prompts_hidden_and_asks_twice_for_the_new_password() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let server = runtime.block_on(TestServer::start());
    let email = unique_email();
    runtime.block_on(server.register(&email));
    let sh = Shell::new(&server);
    assert_exit(&sh.login(&email), 0);
    let passwd = |current: &str, new: &str, repeat: &str| {
        let mut cmd = sh.command(&["passwd"]);
        cmd.stdin(Stdio::inherit());
        let mut session = rexpect::session::spawn_command(cmd, Some(15_000)).unwrap();
        session.exp_string("Current password: ").unwrap();
        session.send_line(current).unwrap();
        session.exp_string("New password: ").unwrap();
        session.send_line(new).unwrap();
        session.exp_string("Repeat the new password: ").unwrap();
        session.send_line(repeat).unwrap();
        let rest = session.exp_eof().unwrap();
        for secret in [current, new, repeat] {
            assert!(!rest.contains(secret), "a password was echoed: {rest:?}");
        }
        rest
    };
    let mismatch = passwd(PASSWORD, NEW_PASSWORD, "something else entirely");
    assert!(mismatch.contains("do not match"), "{mismatch:?}");
    let changed = passwd(PASSWORD, NEW_PASSWORD, NEW_PASSWORD);
    assert!(changed.contains("Password changed"), "{changed:?}");
    runtime.block_on(async {
        let login = server.post("/api/auth/login", serde_json::json!({"email": email, "password": NEW_PASSWORD})).await;
        login.data();
    });
}
