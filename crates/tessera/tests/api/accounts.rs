//! Accounts that change: guests, upgrading a guest in place, usernames, password change and
//! account deletion.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::*;

const GUESTS: &[&str] = &["--allow-anonymous"];

async fn guest(server: &TestServer) -> Tokens {
    let reply = server.post("/api/auth/anonymous", json!({})).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    tokens_of(&reply)
}

async fn upgrade(server: &TestServer, who: &Tokens, body: Value) -> Reply {
    let mut body = body;
    body["refresh_token"] = json!(who.refresh);
    server.send(Method::POST, "/api/auth/upgrade", Some(&who.access), Some(body), &[]).await
}

fn claims(token: &str) -> Value {
    jwt_parts(token).1
}

#[tokio::test]
async fn guest_sign_in_is_off_by_default_and_on_with_the_flag_or_the_variable() {
    let off = TestServer::start().await;
    off.post("/api/auth/anonymous", json!({})).await.assert_error(403, "ANONYMOUS_DISABLED");
    assert_eq!(off.send(Method::GET, "/api/auth/settings", None, None, &[]).await.data()["allow_anonymous"], false);

    let on = TestServer::start_with(GUESTS).await;
    assert_eq!(on.send(Method::GET, "/api/auth/settings", None, None, &[]).await.data()["allow_anonymous"], true);
    // The body is optional.
    let bare = on.send(Method::POST, "/api/auth/anonymous", None, None, &[]).await;
    assert_eq!(bare.status, 200, "{}", bare.body);
    assert_eq!(bare.data()["user"]["is_anonymous"], true);

    let by_variable = TestServer::start_with_env(&[], &[("TESSERA_ALLOW_ANONYMOUS", "true")]).await;
    guest(&by_variable).await;
}

#[tokio::test]
async fn a_guest_token_says_it_is_anonymous_and_carries_no_email() {
    let server = TestServer::start_with(GUESTS).await;
    let guest = guest(&server).await;
    let c = claims(&guest.access);
    assert_eq!(c["is_anonymous"], true);
    assert!(c.get("email").is_none() && c.get("preferred_username").is_none(), "{c}");
    let me = server.me(&guest.access).await;
    assert_eq!(me.data()["is_anonymous"], true);
    assert_eq!(me.data()["email"], Value::Null);

    let registered = server.user(&unique_email()).await;
    assert_eq!(claims(&registered.access)["is_anonymous"], false);
    assert_eq!(server.me(&registered.access).await.data()["is_anonymous"], false);
    assert_eq!(server.audit("anonymous_signed_in").len(), 1);
}

#[tokio::test]
async fn guests_rotate_are_caught_reusing_and_log_out_like_anyone() {
    let server = TestServer::start_with(GUESTS).await;
    let first = guest(&server).await;
    let rotated = tokens_of(&server.refresh(&first.refresh).await);
    assert_eq!(claims(&rotated.access)["is_anonymous"], true);
    let sessions = server.get("/api/auth/sessions", &rotated.access).await;
    assert_eq!(sessions.data()["sessions"].as_array().unwrap().len(), 1);
    // Reuse ends the guest's session.
    server.refresh(&first.refresh).await.assert_error(401, "INVALID_TOKEN");
    server.me(&rotated.access).await.assert_error(401, "UNAUTHORIZED");

    let second = guest(&server).await;
    let logout = server.send(Method::POST, "/api/auth/logout", Some(&second.access), None, &[]).await;
    assert_eq!(logout.data()["logged_out"], true);
    server.refresh(&second.refresh).await.assert_error(401, "INVALID_TOKEN");
}

#[tokio::test]
async fn guest_sign_in_has_its_own_rate_limit_per_address() {
    let server = TestServer::start_with(&["--allow-anonymous", "--anonymous-rate-limit", "2/min"]).await;
    guest(&server).await;
    guest(&server).await;
    let limited = server.post("/api/auth/anonymous", json!({})).await;
    limited.assert_error(429, "RATE_LIMITED");
    assert!(limited.header("retry-after").is_some());
    // Logins are counted apart.
    server.user(&unique_email()).await;
}

#[tokio::test]
async fn an_upgrade_keeps_the_user_and_the_session_and_rotates_the_refresh_token() {
    let server = TestServer::start_with(GUESTS).await;
    let guest = guest(&server).await;
    let before = claims(&guest.access);
    let email = unique_email();
    let reply = upgrade(&server, &guest, json!({"email": email, "username": "Ada_L", "password": PASSWORD})).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let upgraded = tokens_of(&reply);
    let after = claims(&upgraded.access);
    assert_eq!(after["sub"], before["sub"], "the same user");
    assert_eq!(after["sid"], before["sid"], "the same session");
    assert_eq!(after["is_anonymous"], false);
    assert_eq!(after["email"], email);
    assert_eq!(after["preferred_username"], "Ada_L");
    assert_eq!(reply.data()["user"]["is_anonymous"], false);
    let me = server.me(&upgraded.access).await;
    assert_eq!((me.data()["email"].as_str(), me.data()["is_anonymous"].as_bool()), (Some(email.as_str()), Some(false)));

    // The new refresh token works; the presented one was rotated (using it now is reuse).
    let refreshed = server.refresh(&upgraded.refresh).await;
    assert_eq!(claims(&tokens_of(&refreshed).access)["email"], email);
    // The new credentials sign in, by email and by username.
    server.login(&email).await;
    let by_name = server.post("/api/auth/login", json!({"username": "ada_l", "password": PASSWORD})).await;
    assert_eq!(by_name.status, 200, "{}", by_name.body);
    assert_eq!(server.audit("user_upgraded").len(), 1);
    assert_eq!(server.audit("login_succeeded").len(), 2, "the upgrade itself is no new sign-in");
}

#[tokio::test]
async fn an_upgrade_with_someone_elses_email_or_username_leaves_the_guest_untouched() {
    let server = TestServer::start_with(GUESTS).await;
    let taken = unique_email();
    let reply = server
        .post("/api/auth/register", json!({"email": taken, "username": "taken_name", "password": PASSWORD}))
        .await;
    assert_eq!(reply.status, 201, "{}", reply.body);
    let guest = guest(&server).await;
    upgrade(&server, &guest, json!({"email": taken.to_uppercase(), "password": PASSWORD}))
        .await
        .assert_error(409, "EMAIL_TAKEN");
    upgrade(&server, &guest, json!({"email": unique_email(), "username": "TAKEN_NAME", "password": PASSWORD}))
        .await
        .assert_error(409, "USERNAME_TAKEN");
    // Still the same live guest session, and its refresh token was not used up.
    assert_eq!(server.me(&guest.access).await.data()["is_anonymous"], true);
    let refreshed = server.refresh(&guest.refresh).await;
    assert_eq!(refreshed.status, 200, "{}", refreshed.body);
    assert_eq!(claims(&tokens_of(&refreshed).access)["is_anonymous"], true);
}

#[tokio::test]
async fn only_a_guest_can_upgrade_and_only_with_its_own_current_refresh_token() {
    let server = TestServer::start_with(GUESTS).await;
    let registered = server.user(&unique_email()).await;
    upgrade(&server, &registered, json!({"email": unique_email(), "password": PASSWORD}))
        .await
        .assert_error(409, "ALREADY_REGISTERED");

    let guest = guest(&server).await;
    let other_guest = self::guest(&server).await;
    let foreign = Tokens { access: guest.access.clone(), refresh: other_guest.refresh.clone() };
    upgrade(&server, &foreign, json!({"email": unique_email(), "password": PASSWORD}))
        .await
        .assert_error(401, "INVALID_TOKEN");
    let without = server
        .send(
            Method::POST,
            "/api/auth/upgrade",
            Some(&guest.access),
            Some(json!({"email": unique_email(), "password": PASSWORD})),
            &[],
        )
        .await;
    without.assert_error(400, "MISSING_TOKEN");
    upgrade(&server, &guest, json!({"password": PASSWORD})).await.assert_error(400, "INVALID_REQUEST");
    upgrade(&server, &guest, json!({"email": unique_email(), "password": "short"}))
        .await
        .assert_error(400, "WEAK_PASSWORD");
    assert_eq!(server.me(&guest.access).await.data()["is_anonymous"], true, "nothing changed");
}

#[tokio::test]
async fn usernames_register_and_sign_in_without_regard_to_case_and_are_unique() {
    let server = TestServer::start().await;
    let reply = server.post("/api/auth/register", json!({"username": "Grace.Hopper", "password": PASSWORD})).await;
    assert_eq!(reply.status, 201, "{}", reply.body);
    assert_eq!(reply.data()["user"]["username"], "Grace.Hopper");
    assert_eq!(reply.data()["user"]["email"], Value::Null);
    let login = server.post("/api/auth/login", json!({"username": "grace.hopper", "password": PASSWORD})).await;
    let tokens = tokens_of(&login);
    let c = claims(&tokens.access);
    assert_eq!(c["preferred_username"], "Grace.Hopper");
    assert!(c.get("email").is_none(), "{c}");
    assert_eq!(server.me(&tokens.access).await.data()["username"], "Grace.Hopper");

    server
        .post("/api/auth/register", json!({"username": "GRACE.HOPPER", "email": unique_email(), "password": PASSWORD}))
        .await
        .assert_error(409, "USERNAME_TAKEN");
    for bad in ["ab", "grace hopper", "grace@hopper", "_grace", "grаce"] {
        server
            .post("/api/auth/register", json!({"username": bad, "password": PASSWORD}))
            .await
            .assert_error(400, "INVALID_USERNAME");
    }
    server.post("/api/auth/register", json!({"password": PASSWORD})).await.assert_error(400, "INVALID_REQUEST");
    server
        .post("/api/auth/login", json!({"username": "grace.hopper", "email": "g@example.com", "password": PASSWORD}))
        .await
        .assert_error(400, "INVALID_REQUEST");

    // A wrong password and an unknown username get the same answer.
    let wrong = server.post("/api/auth/login", json!({"username": "grace.hopper", "password": "wrong password"})).await;
    let unknown =
        server.post("/api/auth/login", json!({"username": "nobody_here", "password": "wrong password"})).await;
    wrong.assert_error(401, "INVALID_CREDENTIALS");
    assert_eq!(wrong.body, unknown.body);
}

#[tokio::test]
async fn a_password_change_ends_every_other_session_and_keeps_the_callers() {
    let server = TestServer::start().await;
    let email = unique_email();
    let mine = server.user(&email).await;
    let other = server.login(&email).await;
    let change = |current: &str, new: &str| json!({"current_password": current, "new_password": new});

    let wrong = server
        .send(
            Method::POST,
            "/api/auth/password",
            Some(&mine.access),
            Some(change("wrong password", "a brand new one")),
            &[],
        )
        .await;
    wrong.assert_error(401, "INVALID_CREDENTIALS");
    assert_eq!(server.me(&other.access).await.status, 200, "a refused change ends nothing");

    let done = server
        .send(Method::POST, "/api/auth/password", Some(&mine.access), Some(change(PASSWORD, "a brand new one")), &[])
        .await;
    assert_eq!(done.data()["password_changed"], true);
    assert_eq!(done.data()["sessions_ended"], 1);
    server.me(&other.access).await.assert_error(401, "UNAUTHORIZED");
    server.refresh(&other.refresh).await.assert_error(401, "INVALID_TOKEN");
    assert_eq!(server.me(&mine.access).await.status, 200, "the caller's session lives on");
    assert_eq!(server.refresh(&mine.refresh).await.status, 200);

    server
        .post("/api/auth/login", json!({"email": email, "password": PASSWORD}))
        .await
        .assert_error(401, "INVALID_CREDENTIALS");
    assert_eq!(
        server.post("/api/auth/login", json!({"email": email, "password": "a brand new one"})).await.status,
        200
    );
    assert_eq!(server.audit("password_changed").len(), 1);
}

#[tokio::test]
async fn a_guest_has_no_password_to_change() {
    let server = TestServer::start_with(GUESTS).await;
    let guest = guest(&server).await;
    let body = json!({"current_password": PASSWORD, "new_password": "a brand new one"});
    server
        .send(Method::POST, "/api/auth/password", Some(&guest.access), Some(body), &[])
        .await
        .assert_error(403, "GUEST_ACCOUNT");
}

#[tokio::test]
async fn deleting_an_account_ends_every_session_and_frees_its_email_and_username() {
    let server = TestServer::start().await;
    let email = unique_email();
    let reply =
        server.post("/api/auth/register", json!({"email": email, "username": "deleteme", "password": PASSWORD})).await;
    let old_id = reply.data()["user"]["id"].clone();
    let mine = server.login(&email).await;
    let other = server.login(&email).await;

    let delete = |password: &str| json!({"password": password});
    server
        .send(Method::DELETE, "/api/auth/account", Some(&mine.access), Some(delete("wrong password")), &[])
        .await
        .assert_error(401, "INVALID_CREDENTIALS");
    assert_eq!(server.me(&mine.access).await.status, 200);

    let done = server.send(Method::DELETE, "/api/auth/account", Some(&mine.access), Some(delete(PASSWORD)), &[]).await;
    assert_eq!(done.data()["deleted"], true);
    for tokens in [&mine, &other] {
        server.me(&tokens.access).await.assert_error(401, "UNAUTHORIZED");
        server.refresh(&tokens.refresh).await.assert_error(401, "INVALID_TOKEN");
    }
    server
        .post("/api/auth/login", json!({"email": email, "password": PASSWORD}))
        .await
        .assert_error(401, "INVALID_CREDENTIALS");
    let again =
        server.post("/api/auth/register", json!({"email": email, "username": "DeleteMe", "password": PASSWORD})).await;
    assert_eq!(again.status, 201, "{}", again.body);
    assert_ne!(again.data()["user"]["id"], old_id, "a new account");
    assert_eq!(server.audit("account_deleted").len(), 1);
}

#[tokio::test]
async fn a_guest_deletes_its_account_without_a_password() {
    let server = TestServer::start_with(GUESTS).await;
    let guest = guest(&server).await;
    let done = server.send(Method::DELETE, "/api/auth/account", Some(&guest.access), None, &[]).await;
    assert_eq!(done.data()["deleted"], true, "{}", done.body);
    server.refresh(&guest.refresh).await.assert_error(401, "INVALID_TOKEN");
}

#[tokio::test]
async fn an_upgrade_on_one_instance_is_in_the_tokens_another_instance_mints() {
    let a = TestServer::start_with(&["--allow-anonymous", "--issuer", "https://auth.test"]).await;
    let b = a.sibling().await;
    let guest = guest(&a).await;
    // B has served this guest before the upgrade.
    let on_b = tokens_of(&b.refresh(&guest.refresh).await);
    assert_eq!(claims(&on_b.access)["is_anonymous"], true);
    assert_eq!(b.me(&on_b.access).await.data()["is_anonymous"], true);
    let email = unique_email();
    let upgraded = tokens_of(&upgrade(&a, &on_b, json!({"email": email, "password": PASSWORD})).await);
    // B's next refresh mints with the new profile at once.
    let after = tokens_of(&b.refresh(&upgraded.refresh).await);
    let c = claims(&after.access);
    assert_eq!((c["is_anonymous"].as_bool(), c["email"].as_str()), (Some(false), Some(email.as_str())));
    assert_eq!(b.me(&after.access).await.data()["email"], email);
}

#[tokio::test]
async fn a_deleted_account_is_refused_by_other_instances_too() {
    let a = TestServer::start_with(&["--issuer", "https://auth.test"]).await;
    let b = a.sibling().await;
    let email = unique_email();
    let tokens = a.user(&email).await;
    assert_eq!(b.me(&tokens.access).await.status, 200);
    let body = json!({"password": PASSWORD});
    assert_eq!(a.send(Method::DELETE, "/api/auth/account", Some(&tokens.access), Some(body), &[]).await.status, 200);
    assert!(
        eventually(Duration::from_secs(3), async || b.me(&tokens.access).await.status == 401).await,
        "the other instance still accepts the deleted account's token"
    );
}

#[tokio::test]
async fn guests_without_a_live_session_are_purged_after_the_retention() {
    let server = TestServer::start_with(&["--allow-anonymous", "--guest-retention", "1s"]).await;
    let gone = guest(&server).await;
    let kept = guest(&server).await;
    server.send(Method::POST, "/api/auth/logout", Some(&gone.access), None, &[]).await.data();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    // The purge runs at start and every hour.
    let server = server.restart(false).await;
    assert!(
        eventually(Duration::from_secs(5), async || server.logs().contains("purged guest accounts")).await,
        "no purge logged"
    );
    let line = server.logs().lines().find(|l| l.contains("purged guest accounts")).unwrap().to_owned();
    assert_eq!(serde_json::from_str::<Value>(&line).unwrap()["purged"], 1, "{line}");
    assert_eq!(server.me(&kept.access).await.status, 200, "a guest with a live session stays");
}

#[tokio::test]
async fn wrong_current_passwords_and_wrong_logins_share_the_accounts_budget() {
    let server = TestServer::start_with(&["--login-failure-limit", "3/15min"]).await;
    let email = unique_email();
    let mine = server.user(&email).await;
    let wrong_login = json!({"email": email, "password": "wrong password"});
    server.post("/api/auth/login", wrong_login.clone()).await.assert_error(401, "INVALID_CREDENTIALS");
    let change = json!({"current_password": "wrong password", "new_password": "a brand new one"});
    for _ in 0..2 {
        let reply =
            server.send(Method::POST, "/api/auth/password", Some(&mine.access), Some(change.clone()), &[]).await;
        reply.assert_error(401, "INVALID_CREDENTIALS");
    }
    server.post("/api/auth/login", wrong_login).await.assert_error(429, "RATE_LIMITED");
    let reply = server.send(Method::POST, "/api/auth/password", Some(&mine.access), Some(change), &[]).await;
    reply.assert_error(429, "RATE_LIMITED");
    assert_eq!(server.me(&mine.access).await.status, 200, "the open session is not throttled");
}
