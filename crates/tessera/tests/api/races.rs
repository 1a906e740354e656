//! Account operations racing logins, refreshes and logouts, tried many times on the real server
//! with production password hashing (its slowness is the window these races need). After every
//! try the invariants are checked:
//!
//! - once a deletion is acknowledged, no session of the deleted user works, and no token pairs
//!   its `sub` with the email of whoever registers the freed email next;
//! - once a password change is acknowledged, no session opened with the old password works;
//! - an upgrade that answers an error changed nothing, and the account holds the credentials of
//!   the upgrade that answered 200.
//!
//! The same interleavings are forced exactly, one at a time, in `tessera-store`'s
//! `tests/races.rs`.

use std::time::Duration;

use futures_util::future::join_all;
use reqwest::Method;
use serde_json::json;

use crate::helpers::*;

const TRIES: usize = 12;
const RACERS: usize = 6;
/// Production argon2id (the harness's default is cheap).
const SLOW_HASHING: &[&str] = &["--argon2-memory-kib", "19456", "--argon2-iterations", "2"];

async fn server(extra: &[&str]) -> TestServer {
    let flags: Vec<&str> = SLOW_HASHING.iter().chain(extra).copied().collect();
    TestServer::start_with(&flags).await
}

/// Logins with `password`, started `delay` after the call, all at once; the tokens of those
/// that succeeded.
async fn racing_logins(server: &TestServer, email: &str, password: &str, delay: Duration) -> Vec<Tokens> {
    let logins = (0..RACERS).map(|_| async {
        tokio::time::sleep(delay).await;
        server.post("/api/auth/login", json!({"email": email, "password": password})).await
    });
    join_all(logins).await.iter().filter(|r| r.status == 200).map(tokens_of).collect()
}

async fn assert_dead(server: &TestServer, tokens: &Tokens, after: &str) {
    let me = server.me(&tokens.access).await;
    assert_eq!(me.status, 401, "/me still answers after {after}: {}", me.body);
    let refreshed = server.refresh(&tokens.refresh).await;
    assert_eq!(refreshed.status, 401, "a refresh still works after {after}: {}", refreshed.body);
}

#[tokio::test]
async fn no_session_of_a_deleted_user_works_however_logins_race_the_deletion() {
    let server = server(&[]).await;
    let mut raced = 0;
    for _ in 0..TRIES {
        let email = unique_email();
        let owner = server.user(&email).await;
        let deletion = server.send(
            Method::DELETE,
            "/api/auth/account",
            Some(&owner.access),
            Some(json!({ "password": PASSWORD })),
            &[],
        );
        let (deleted, survivors) =
            tokio::join!(deletion, racing_logins(&server, &email, PASSWORD, Duration::from_millis(3)));
        deleted.data();
        raced += survivors.len();
        for tokens in &survivors {
            assert_dead(&server, tokens, "the deletion").await;
        }
        // Whoever takes the email next gets a user of their own; the racers' tokens stay dead.
        let next = server.user(&email).await;
        let next_sub = jwt_parts(&next.access).1["sub"].clone();
        for tokens in &survivors {
            assert_ne!(jwt_parts(&tokens.access).1["sub"], next_sub);
            assert_dead(&server, tokens, "the email was registered again").await;
        }
    }
    eprintln!("{raced} logins raced a deletion and got tokens; none of them works");
}

#[tokio::test]
async fn no_session_opened_with_the_old_password_outlives_a_password_change() {
    let server = server(&[]).await;
    let mut raced = 0;
    for _ in 0..TRIES {
        let email = unique_email();
        let owner = server.user(&email).await;
        let change = server.send(
            Method::POST,
            "/api/auth/password",
            Some(&owner.access),
            Some(json!({"current_password": PASSWORD, "new_password": "a brand new password"})),
            &[],
        );
        let (changed, survivors) =
            tokio::join!(change, racing_logins(&server, &email, PASSWORD, Duration::from_millis(3)));
        changed.data();
        raced += survivors.len();
        for tokens in &survivors {
            assert_dead(&server, tokens, "the password change").await;
        }
        assert_eq!(server.me(&owner.access).await.status, 200, "the changer's own session lives on");
    }
    eprintln!("{raced} logins with the old password raced a change and got tokens; none of them works");
}

const GUESTS: &[&str] = &["--allow-anonymous", "--anonymous-rate-limit", "off"];

async fn guest(server: &TestServer) -> Tokens {
    tokens_of(&server.post("/api/auth/anonymous", json!({})).await)
}

async fn upgrade(server: &TestServer, guest: &Tokens, email: &str) -> Reply {
    let body = json!({"email": email, "password": PASSWORD, "refresh_token": guest.refresh});
    server.send(Method::POST, "/api/auth/upgrade", Some(&guest.access), Some(body), &[]).await
}

/// Whether `email` with the password signs in: the account holds that upgrade's credentials.
async fn holds(server: &TestServer, email: &str) -> bool {
    server.post("/api/auth/login", json!({"email": email, "password": PASSWORD})).await.status == 200
}

#[tokio::test]
async fn of_racing_upgrades_the_account_holds_the_one_that_answered() {
    let server = server(GUESTS).await;
    for _ in 0..TRIES {
        let guest = guest(&server).await;
        let (a, b) = (unique_email(), unique_email());
        let (first, second) = tokio::join!(upgrade(&server, &guest, &a), upgrade(&server, &guest, &b));
        let answered: Vec<_> = [(&first, &a), (&second, &b)].into_iter().filter(|(r, _)| r.status == 200).collect();
        assert_eq!(
            answered.len(),
            1,
            "one upgrade wins: {} {} / {} {}",
            first.status,
            first.body,
            second.status,
            second.body
        );
        let (winner, winner_email) = answered[0];
        let loser = if winner_email == &a { &second } else { &first };
        loser.assert_error(409, "ALREADY_REGISTERED");
        let won = tokens_of(winner);
        assert_eq!(jwt_parts(&won.access).1["email"], winner_email.as_str());
        assert_eq!(server.refresh(&won.refresh).await.status, 200, "the winner's session lives");
        assert!(holds(&server, winner_email).await);
        assert!(!holds(&server, if winner_email == &a { &b } else { &a }).await);
    }
}

/// An upgrade racing `other` (a refresh or a logout with the same session): it answers 200 and
/// the account is registered, or it answers an error and the account is still the guest.
async fn an_upgrade_racing(other: &str) {
    let server = server(GUESTS).await;
    let mut failed = 0;
    for attempt in 0..TRIES {
        let guest = guest(&server).await;
        let email = unique_email();
        // Early and late: the racer wins some tries and loses others.
        let delay = Duration::from_millis(2 + 9 * attempt as u64);
        let racer = async {
            tokio::time::sleep(delay).await;
            match other {
                "refresh" => server.refresh(&guest.refresh).await,
                _ => server.send(Method::POST, "/api/auth/logout", Some(&guest.access), None, &[]).await,
            }
        };
        let (upgraded, _) = tokio::join!(upgrade(&server, &guest, &email), racer);
        let registered = holds(&server, &email).await;
        assert_eq!(upgraded.status == 200, registered, "the upgrade answered {} {}", upgraded.status, upgraded.body);
        if upgraded.status != 200 {
            failed += 1;
        }
    }
    eprintln!("{failed} of {TRIES} upgrades lost the race with a {other} and changed nothing");
}

#[tokio::test]
async fn an_upgrade_racing_a_refresh_registers_the_account_only_when_it_answers_200() {
    an_upgrade_racing("refresh").await;
}

#[tokio::test]
async fn an_upgrade_racing_a_logout_registers_the_account_only_when_it_answers_200() {
    an_upgrade_racing("logout").await;
}
