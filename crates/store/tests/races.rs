//! The account operations' races, forced exactly: the service over an in-memory store behind a
//! [`FaultyStore`], whose holds stop one operation's store call until the test has run the
//! other operation to its end. Each interleaving here once left a session alive that must not
//! be (a login racing a deletion or a password change) or an upgrade that answered an error
//! having changed the account.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

use tessera_core::access::AccessTokens;
use tessera_core::keys::KeyDir;
use tessera_core::password::{HashParams, PasswordHasher};
use tessera_core::refresh::RefreshTokenCodec;
use tessera_core::service::{AuthError, AuthService, Caller, ClientInfo, Issued, Lifetimes, LoginName, NewNames};
use tessera_core::store::{SessionStore, UserStore};
use tessera_core::testing::faults::{Faults, FaultyStore, Op};
use tessera_core::testing::memory::MemoryStore;
use tessera_core::{Timestamp, UserId};

const PASSWORD: &str = "correct horse battery";
const NEW_PASSWORD: &str = "another horse battery";

struct World {
    auth: Arc<AuthService>,
    faults: Faults,
    users: Arc<dyn UserStore>,
    sessions: Arc<dyn SessionStore>,
    _keys: tempfile::TempDir,
}

fn world() -> World {
    let dir = tempfile::tempdir().unwrap();
    let keys = KeyDir::new(dir.path().join("keys"));
    keys.init(now()).unwrap();
    let access = AccessTokens::new(
        keys.load_keys().unwrap(),
        "http://t".into(),
        "tessera".into(),
        Lifetimes::default().access_ttl,
    );
    let refresh = RefreshTokenCodec::new(&keys.refresh_secret().unwrap());
    let hasher = PasswordHasher::start(HashParams { memory_kib: 1024, iterations: 1, parallelism: 1 }, 2, 64).unwrap();
    let memory = Arc::new(MemoryStore::new());
    let faults = Faults::new();
    let store = Arc::new(FaultyStore::with_faults(memory, faults.clone()));
    let (users, sessions): (Arc<dyn UserStore>, Arc<dyn SessionStore>) = (store.clone(), store);
    let auth = AuthService::new(users.clone(), sessions.clone(), access, refresh, hasher, Lifetimes::default());
    World { auth: Arc::new(auth), faults, users, sessions, _keys: dir }
}

fn now() -> Timestamp {
    Timestamp::now()
}

impl World {
    async fn register(&self, email: &str) -> UserId {
        let names = NewNames { email: Some(email), username: None };
        self.auth.register(names, PASSWORD, now()).await.unwrap().id
    }

    async fn login(&self, email: &str, password: &str) -> Result<Issued, AuthError> {
        self.auth.login(LoginName::Email(email), password, ClientInfo::default(), now()).await
    }

    /// A login running in its own task.
    fn spawn_login(&self, email: &str, password: &str) -> tokio::task::JoinHandle<Result<Issued, AuthError>> {
        let (auth, email, password) = (self.auth.clone(), email.to_owned(), password.to_owned());
        tokio::spawn(async move { auth.login(LoginName::Email(&email), &password, ClientInfo::default(), now()).await })
    }

    fn caller(&self, issued: &Issued) -> Caller {
        self.auth.authenticate(&issued.access.token, now()).unwrap()
    }

    /// Whether any token of the session still works: its access token here, its refresh token.
    async fn works(&self, issued: &Issued) -> bool {
        let access = self.auth.authenticate(&issued.access.token, now()).is_ok();
        let refresh = self.auth.introspect(issued.refresh.expose(), now()).await.unwrap().is_some();
        access || refresh
    }

    async fn live_sessions(&self, user: UserId) -> usize {
        self.sessions.list_sessions(user, now()).await.unwrap().len()
    }
}

#[tokio::test]
async fn a_login_that_stores_its_session_after_a_deletion_fails_and_leaves_no_session() {
    let w = world();
    let user = w.register("ada@example.com").await;
    let owner = w.login("ada@example.com", PASSWORD).await.unwrap();
    let mut hold = w.faults.hold_next(Op::CreateSession);
    let racer = w.spawn_login("ada@example.com", PASSWORD);
    hold.reached().await; // the racer checked the password and is about to store its session
    w.auth.delete_account(&w.caller(&owner), Some(PASSWORD), now()).await.unwrap();
    hold.release();
    assert!(matches!(racer.await.unwrap(), Err(AuthError::InvalidCredentials)));
    assert_eq!(w.live_sessions(user).await, 0, "no session of the deleted user");
    assert!(w.users.find_user(user).await.unwrap().is_none());
}

#[tokio::test]
async fn a_login_that_stored_its_session_while_a_deletion_ran_is_ended_by_the_deletion() {
    let w = world();
    let user = w.register("ada@example.com").await;
    let owner = w.login("ada@example.com", PASSWORD).await.unwrap();
    // The deletion has ended the sessions once and is about to delete the user.
    let mut hold = w.faults.hold_next(Op::DeleteUser);
    let deletion = {
        let (auth, caller) = (w.auth.clone(), w.caller(&owner));
        tokio::spawn(async move { auth.delete_account(&caller, Some(PASSWORD), now()).await })
    };
    hold.reached().await;
    let racer = w.login("ada@example.com", PASSWORD).await.expect("the user still exists: the login succeeds");
    assert!(w.works(&racer).await);
    hold.release();
    deletion.await.unwrap().unwrap();
    assert!(!w.works(&racer).await, "once the deletion is acknowledged, the racer's session is over");
    assert!(matches!(w.auth.refresh(racer.refresh.expose(), now()).await, Err(AuthError::InvalidRefreshToken)));
    assert_eq!(w.live_sessions(user).await, 0);
}

#[tokio::test]
async fn a_login_with_the_old_password_racing_a_password_change_does_not_survive_it() {
    let w = world();
    let user = w.register("ada@example.com").await;
    let owner = w.login("ada@example.com", PASSWORD).await.unwrap();
    let mut hold = w.faults.hold_next(Op::CreateSession);
    let racer = w.spawn_login("ada@example.com", PASSWORD);
    hold.reached().await; // the old password was checked
    let ended = w.auth.change_password(&w.caller(&owner), PASSWORD, NEW_PASSWORD, now()).await.unwrap();
    assert_eq!(ended, 0, "the racer had no session yet when the others were listed");
    hold.release();
    assert!(matches!(racer.await.unwrap(), Err(AuthError::InvalidCredentials)));
    let live = w.sessions.list_sessions(user, now()).await.unwrap();
    assert_eq!(live.iter().map(|s| s.id).collect::<Vec<_>>(), vec![owner.session_id], "only the changer's");
    assert!(w.login("ada@example.com", NEW_PASSWORD).await.is_ok());
}

#[tokio::test]
async fn of_two_racing_password_changes_one_wins_and_the_other_changes_nothing() {
    let w = world();
    w.register("ada@example.com").await;
    let (a, b) =
        (w.login("ada@example.com", PASSWORD).await.unwrap(), w.login("ada@example.com", PASSWORD).await.unwrap());
    let mut hold = w.faults.hold_next(Op::UpdateUser);
    let first = {
        let (auth, caller) = (w.auth.clone(), w.caller(&a));
        tokio::spawn(async move { auth.change_password(&caller, PASSWORD, "first new password", now()).await })
    };
    hold.reached().await;
    w.auth.change_password(&w.caller(&b), PASSWORD, NEW_PASSWORD, now()).await.unwrap();
    hold.release();
    assert!(matches!(first.await.unwrap(), Err(AuthError::InvalidCredentials)), "its current password is stale");
    assert!(w.login("ada@example.com", NEW_PASSWORD).await.is_ok());
    assert!(w.login("ada@example.com", "first new password").await.is_err());
}

async fn guest(w: &World) -> Issued {
    w.auth.sign_in_anonymously(ClientInfo::default(), now()).await.unwrap()
}

fn upgrade(w: &World, guest: &Issued, email: &str) -> tokio::task::JoinHandle<Result<Issued, AuthError>> {
    let (auth, caller, refresh, email) =
        (w.auth.clone(), w.caller(guest), guest.refresh.expose().to_owned(), email.to_owned());
    tokio::spawn(async move {
        let names = NewNames { email: Some(&email), username: None };
        auth.upgrade(&caller, &refresh, names, PASSWORD, now()).await
    })
}

#[tokio::test]
async fn of_two_racing_upgrades_the_one_that_answers_holds_the_account() {
    let w = world();
    let guest = guest(&w).await;
    let mut hold = w.faults.hold_next(Op::UpdateUser);
    let loser = upgrade(&w, &guest, "a@example.com");
    hold.reached().await;
    let winner = upgrade(&w, &guest, "b@example.com").await.unwrap().unwrap();
    hold.release();
    assert!(matches!(loser.await.unwrap(), Err(AuthError::AlreadyRegistered)));
    let user = w.users.find_user(guest.user.id).await.unwrap().unwrap();
    assert_eq!(user.email.as_deref(), Some("b@example.com"), "the credentials of the upgrade that answered");
    assert_eq!(winner.user.email.as_deref(), Some("b@example.com"));
    assert!(w.works(&winner).await, "the winner's session is not ended");
    assert!(w.login("a@example.com", PASSWORD).await.is_err());
    assert!(w.login("b@example.com", PASSWORD).await.is_ok());
}

/// An upgrade whose rotation loses to `other` (run while the upgrade waits to rotate) answers
/// an error and leaves the guest as it was.
async fn an_upgrade_losing_its_rotation_to(other: impl AsyncFnOnce(&World, &Issued)) {
    let w = world();
    let guest = guest(&w).await;
    let mut hold = w.faults.hold_next(Op::Rotate);
    let upgrading = upgrade(&w, &guest, "ada@example.com");
    hold.reached().await; // the account is registered, the session not rotated yet
    other(&w, &guest).await;
    hold.release();
    assert!(matches!(upgrading.await.unwrap(), Err(AuthError::InvalidRefreshToken)));
    let user = w.users.find_user(guest.user.id).await.unwrap().unwrap();
    assert!(user.is_anonymous && user.email.is_none() && user.password_hash.is_none(), "{user:?}");
    assert!(w.users.find_user_by_email("ada@example.com").await.unwrap().is_none(), "the email is still free");
    assert!(w.login("ada@example.com", PASSWORD).await.is_err());
}

#[tokio::test]
async fn an_upgrade_racing_a_refresh_that_answers_an_error_changed_nothing() {
    an_upgrade_losing_its_rotation_to(async |w, guest| {
        w.auth.refresh(guest.refresh.expose(), now()).await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn an_upgrade_racing_a_logout_that_answers_an_error_changed_nothing() {
    an_upgrade_losing_its_rotation_to(async |w, guest| {
        w.auth.logout(&w.caller(guest), None, now()).await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn a_held_call_waits_for_its_release() {
    let w = world();
    let mut hold = w.faults.hold_next(Op::SessionPing);
    let sessions = w.sessions.clone();
    let ping = tokio::spawn(async move { sessions.ping().await });
    hold.reached().await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(!ping.is_finished());
    hold.release();
    ping.await.unwrap().unwrap();
}
