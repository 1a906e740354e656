//! The session rules, unit-tested on the in-memory store behind the fault-injecting one, with a
//! manual clock: time moves when a test says so, never by sleeping.

use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::access::AccessTokens;
use crate::clock::{Clock, ManualClock};
use crate::keys::KeyDir;
use crate::password::{HashParams, PasswordHasher};
use crate::refresh::RefreshTokenCodec;
use crate::session::Rotation;
use crate::testing::faults::{Faults, FaultyStore, Op};
use crate::testing::memory::MemoryStore;

const PASSWORD: &str = "correct horse battery";
const MINUTE: Duration = Duration::from_secs(60);

struct World {
    auth: AuthService,
    clock: ManualClock,
    faults: Faults,
    store: Arc<FaultyStore<MemoryStore>>,
    keys: KeyDir,
    lifetimes: Lifetimes,
    _dir: tempfile::TempDir,
}

fn world() -> World {
    world_with(Lifetimes::default())
}

fn world_with(lifetimes: Lifetimes) -> World {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::at(Timestamp::now());
    let keys = KeyDir::new(dir.path().join("keys"));
    keys.init(clock.now()).unwrap();
    let memory = Arc::new(MemoryStore::new());
    let faults = Faults::new();
    let store = Arc::new(FaultyStore::with_faults(memory, faults.clone()));
    let auth = service(&keys, &store, lifetimes);
    World { auth, clock, faults, store, keys, lifetimes, _dir: dir }
}

/// A service over `store`, as one instance of the deployment is.
fn service(keys: &KeyDir, store: &Arc<FaultyStore<MemoryStore>>, lifetimes: Lifetimes) -> AuthService {
    let access =
        AccessTokens::new(keys.load_keys().unwrap(), "http://t".into(), "tessera".into(), lifetimes.access_ttl);
    let refresh = RefreshTokenCodec::new(&keys.refresh_secret().unwrap());
    let hasher = PasswordHasher::start(HashParams { memory_kib: 1024, iterations: 1, parallelism: 1 }, 1, 16).unwrap();
    let (users, sessions): (Arc<dyn UserStore>, Arc<dyn SessionStore>) = (store.clone(), store.clone());
    AuthService::new(users, sessions, access, refresh, hasher, lifetimes)
}

impl World {
    fn now(&self) -> Timestamp {
        self.clock.now()
    }

    async fn user(&self, email: &str) -> Issued {
        let names = NewNames { email: Some(email), username: None };
        self.auth.register(names, PASSWORD, self.now()).await.unwrap();
        self.login(email).await
    }

    async fn login(&self, email: &str) -> Issued {
        self.auth.login(LoginName::Email(email), PASSWORD, ClientInfo::default(), self.now()).await.unwrap()
    }

    async fn refresh(&self, tokens: &Issued) -> Result<Issued, AuthError> {
        self.auth.refresh(tokens.refresh.expose(), self.now()).await
    }

    fn caller(&self, tokens: &Issued) -> Caller {
        self.auth.authenticate(&tokens.access.token, self.now()).unwrap()
    }

    /// Whether the session's access token is accepted here.
    fn accepted(&self, tokens: &Issued) -> bool {
        self.auth.authenticate(&tokens.access.token, self.now()).is_ok()
    }

    async fn ended_in_store(&self, id: SessionId) -> bool {
        self.store.get_session(id).await.unwrap().is_some_and(|s| s.ended_at.is_some())
    }

    async fn in_feed(&self, id: SessionId) -> bool {
        self.store.ended_after(None, 1000).await.unwrap().iter().any(|e| e.session_id == id)
    }
}

fn invalid_token(result: Result<Issued, AuthError>) -> bool {
    matches!(result, Err(AuthError::InvalidRefreshToken))
}

#[tokio::test]
async fn a_refresh_rotates_and_the_rotated_token_is_dead() {
    let w = world();
    let first = w.user("ada@example.com").await;
    let second = w.refresh(&first).await.unwrap();
    assert_ne!(second.refresh.expose(), first.refresh.expose());
    assert_eq!(second.session_id, first.session_id, "the same session");
    assert!(w.accepted(&second));
}

#[tokio::test]
async fn reused_refresh_token_ends_the_session() {
    let w = world();
    let first = w.user("ada@example.com").await;
    let second = w.refresh(&first).await.unwrap();
    assert!(invalid_token(w.refresh(&first).await), "strict by default: the replay is reuse");
    assert!(invalid_token(w.refresh(&second).await), "and the whole session is over");
    assert!(!w.accepted(&second), "its access tokens too");
    assert!(w.ended_in_store(first.session_id).await && w.in_feed(first.session_id).await);
}

#[tokio::test]
async fn within_the_grace_window_a_rotated_token_gets_the_identical_unused_successor() {
    let w = world_with(Lifetimes { refresh_grace: Duration::from_secs(10), ..Lifetimes::default() });
    let first = w.user("ada@example.com").await;
    let second = w.refresh(&first).await.unwrap();
    w.clock.advance(Duration::from_secs(5));
    let again = w.refresh(&first).await.unwrap();
    assert_eq!(again.refresh.expose(), second.refresh.expose(), "byte for byte");
    // Once the successor is used, the old token is a replay again.
    let third = w.refresh(&second).await.unwrap();
    assert!(invalid_token(w.refresh(&first).await));
    assert!(invalid_token(w.refresh(&third).await), "the session ended");
}

#[tokio::test]
async fn past_the_grace_window_a_rotated_token_is_reuse() {
    let w = world_with(Lifetimes { refresh_grace: Duration::from_secs(10), ..Lifetimes::default() });
    let first = w.user("ada@example.com").await;
    let second = w.refresh(&first).await.unwrap();
    w.clock.advance(Duration::from_secs(11));
    assert!(invalid_token(w.refresh(&first).await));
    assert!(invalid_token(w.refresh(&second).await), "the session ended");
}

#[tokio::test]
async fn a_refresh_token_expires_when_idle_and_an_access_token_at_its_lifetime() {
    let w = world();
    let first = w.user("ada@example.com").await;
    w.clock.advance(w.lifetimes.access_ttl);
    assert!(!w.accepted(&first), "the access token expired");
    let second = w.refresh(&first).await.unwrap();
    assert!(w.accepted(&second));
    w.clock.advance(w.lifetimes.refresh_ttl + MINUTE);
    assert!(invalid_token(w.refresh(&second).await), "idle past the refresh lifetime");
}

#[tokio::test]
async fn refreshing_never_extends_a_session_past_its_maximum_lifetime() {
    let lifetimes = Lifetimes {
        refresh_ttl: Duration::from_secs(30 * 60),
        session_max_lifetime: Duration::from_secs(60 * 60),
        ..Lifetimes::default()
    };
    let w = world_with(lifetimes);
    let mut tokens = w.user("ada@example.com").await;
    for _ in 0..2 {
        w.clock.advance(20 * MINUTE);
        tokens = w.refresh(&tokens).await.unwrap();
    }
    w.clock.advance(21 * MINUTE); // 61 minutes in: used every 20 minutes, but over the maximum
    assert!(invalid_token(w.refresh(&tokens).await));
}

#[tokio::test]
async fn logout_ends_the_session_and_another_own_session_named_by_its_refresh_token() {
    let w = world();
    let laptop = w.user("ada@example.com").await;
    let phone = w.login("ada@example.com").await;
    let tablet = w.login("ada@example.com").await;
    let bob = w.user("bob@example.com").await;
    w.auth.logout(&w.caller(&laptop), Some(phone.refresh.expose()), w.now()).await.unwrap();
    assert!(!w.accepted(&laptop) && invalid_token(w.refresh(&phone).await));
    assert!(w.accepted(&tablet), "the user's other sessions live on");
    // Someone else's refresh token in a logout ends nothing of theirs.
    w.auth.logout(&w.caller(&tablet), Some(bob.refresh.expose()), w.now()).await.unwrap();
    assert!(w.refresh(&bob).await.is_ok());
}

#[tokio::test]
async fn logout_all_ends_every_session_of_the_user_and_no_one_elses() {
    let w = world();
    let sessions = [w.user("ada@example.com").await, w.login("ada@example.com").await];
    let bob = w.user("bob@example.com").await;
    let ended = w.auth.logout_all(&w.caller(&sessions[0]), w.now()).await.unwrap();
    assert_eq!(ended, 2);
    for tokens in &sessions {
        assert!(!w.accepted(tokens) && w.in_feed(tokens.session_id).await);
    }
    assert!(w.accepted(&bob));
}

#[tokio::test]
async fn a_password_change_ends_the_other_sessions_and_keeps_the_callers() {
    let w = world();
    let here = w.user("ada@example.com").await;
    let other = w.login("ada@example.com").await;
    let ended = w.auth.change_password(&w.caller(&here), PASSWORD, "a brand new password", w.now()).await.unwrap();
    assert_eq!(ended, 1);
    assert!(w.accepted(&here) && w.refresh(&here).await.is_ok());
    assert!(!w.accepted(&other) && invalid_token(w.refresh(&other).await));
    let old = w.auth.login(LoginName::Email("ada@example.com"), PASSWORD, ClientInfo::default(), w.now()).await;
    assert!(matches!(old, Err(AuthError::InvalidCredentials)));
}

#[tokio::test]
async fn a_deletion_ends_every_session_and_frees_the_email() {
    let w = world();
    let here = w.user("ada@example.com").await;
    let other = w.login("ada@example.com").await;
    w.auth.delete_account(&w.caller(&here), Some(PASSWORD), w.now()).await.unwrap();
    assert!(!w.accepted(&here) && !w.accepted(&other));
    assert!(invalid_token(w.refresh(&other).await));
    let again = w.user("ada@example.com").await;
    assert_ne!(again.user.id, here.user.id, "a new user, not the old one back");
}

#[tokio::test]
async fn an_upgrade_to_a_taken_name_changes_nothing_and_a_registered_user_cannot_upgrade() {
    let w = world();
    let ada = w.user("ada@example.com").await;
    let guest = w.auth.sign_in_anonymously(ClientInfo::default(), w.now()).await.unwrap();
    let names = NewNames { email: Some("ADA@example.com"), username: None };
    let taken = w.auth.upgrade(&w.caller(&guest), guest.refresh.expose(), names, PASSWORD, w.now()).await;
    assert!(matches!(taken, Err(AuthError::EmailTaken)), "{taken:?}");
    assert!(w.refresh(&guest).await.is_ok(), "the guest's token was not used up");
    let names = NewNames { email: Some("other@example.com"), username: None };
    let registered = w.auth.upgrade(&w.caller(&ada), ada.refresh.expose(), names, PASSWORD, w.now()).await;
    assert!(matches!(registered, Err(AuthError::AlreadyRegistered)), "{registered:?}");
}

#[tokio::test]
async fn an_upgrade_keeps_the_user_and_the_session() {
    let w = world();
    let guest = w.auth.sign_in_anonymously(ClientInfo::default(), w.now()).await.unwrap();
    let names = NewNames { email: Some("ada@example.com"), username: None };
    let upgraded = w.auth.upgrade(&w.caller(&guest), guest.refresh.expose(), names, PASSWORD, w.now()).await.unwrap();
    assert_eq!((upgraded.user.id, upgraded.session_id), (guest.user.id, guest.session_id));
    assert!(!upgraded.user.is_anonymous);
    assert!(invalid_token(w.refresh(&guest).await), "the guest's refresh token was rotated: reuse now");
}

#[tokio::test]
async fn an_end_the_store_failed_to_write_is_refused_here_at_once_and_retried_until_it_lands() {
    let w = world();
    let tokens = w.user("ada@example.com").await;
    w.faults.fail_next(Op::EndSession, 1);
    let failed = w.auth.logout(&w.caller(&tokens), None, w.now()).await;
    assert!(matches!(failed, Err(AuthError::Unavailable(_))));
    assert!(!w.accepted(&tokens), "this instance refuses the session's tokens at once");
    assert!(!w.ended_in_store(tokens.session_id).await, "the store did not write it");
    assert_eq!(w.auth.retry_unfinished_ends().await, 0);
    assert!(w.ended_in_store(tokens.session_id).await && w.in_feed(tokens.session_id).await);
}

#[tokio::test]
async fn an_end_whose_answer_was_lost_after_the_commit_is_retried_harmlessly() {
    let w = world();
    let tokens = w.user("ada@example.com").await;
    let other = w.login("ada@example.com").await;
    w.faults.fail_next_after_commit(Op::EndUserSessions, 1);
    let failed = w.auth.logout_all(&w.caller(&tokens), w.now()).await;
    assert!(matches!(failed, Err(AuthError::Unavailable(_))));
    assert!(w.ended_in_store(other.session_id).await, "the store committed it");
    assert_eq!(w.auth.retry_unfinished_ends().await, 0);
    let feed = w.store.ended_after(None, 1000).await.unwrap();
    assert_eq!(feed.iter().filter(|e| e.session_id == other.session_id).count(), 1, "listed once");
    // A second instance learns of it from the feed.
    let elsewhere = service(&w.keys, &w.store, w.lifetimes);
    elsewhere.catch_up_revocations(w.now()).await.unwrap();
    assert!(elsewhere.authenticate(&other.access.token, w.now()).is_err());
}

#[tokio::test]
async fn the_maintenance_tick_retries_ends_and_reads_the_feed_and_says_when_it_cannot() {
    let w = world();
    let tokens = w.user("ada@example.com").await;
    let mut maintenance = Maintenance::new(Duration::from_secs(7 * 86_400));
    w.faults.fail_always(Op::EndSession);
    assert!(w.auth.logout(&w.caller(&tokens), None, w.now()).await.is_err());
    w.faults.fail_always(Op::EndedAfter);
    let tick = maintenance.tick(&w.auth, w.now()).await;
    assert_eq!((tick.ended, tick.unfinished, tick.purged), (None, 1, true));
    w.faults.heal();
    let tick = maintenance.tick(&w.auth, w.now()).await;
    assert_eq!((tick.ended, tick.unfinished, tick.purged), (Some(1), 0, false), "the purge runs hourly");
    w.clock.advance(Duration::from_secs(3601));
    assert!(maintenance.tick(&w.auth, w.now()).await.purged);
}

/// Signing while the rotation commits (when the instance knows the session's user) gives the
/// same token as signing after it, and nothing when the rotation fails.
#[tokio::test]
async fn a_token_signed_while_the_rotation_commits_says_what_one_signed_after_it_says() {
    let w = world();
    let first = w.user("ada@example.com").await;
    let known = w.refresh(&first).await.unwrap(); // this instance opened the session: it knows the user
    let restarted = service(&w.keys, &w.store, w.lifetimes); // knows nothing yet
    let unknown = restarted.refresh(known.refresh.expose(), w.now()).await.unwrap();
    let claims = |t: &Issued| {
        let c = w.auth.access_tokens().verify(&t.access.token, w.now()).unwrap();
        (c.sub.clone(), c.sid.clone(), c.email.clone(), c.is_anonymous, c.iss.clone(), c.aud.clone())
    };
    assert_eq!(claims(&known), claims(&unknown));

    let session = w.store.get_session(first.session_id).await.unwrap().unwrap();
    let stale = w.store.rotate(session.id, 0, w.now(), w.now());
    let (rotation, early) = w.auth.sign_while_rotating(session.id, Some(session.user_id), stale, w.now()).await;
    assert!(matches!(rotation, Ok(Rotation::Stale(_))), "a stale generation rotates nothing");
    assert!(early.is_some(), "the token was signed meanwhile, and the caller drops it");
    let (_, none) = w.auth.sign_while_rotating(session.id, None, std::future::ready(rotation), w.now()).await;
    assert!(none.is_none(), "without the user known, nothing is signed early");
}

/// An end on one instance reaches another that follows the store's pushed ends as it commits,
/// with no periodic catch-up; a feed read that fails when woken is tried again shortly.
#[tokio::test]
async fn an_end_on_one_instance_reaches_another_following_pushed_ends() {
    let w = world();
    let other = Arc::new(service(&w.keys, &w.store, w.lifetimes));
    let watcher = other.feed_watcher().expect("the memory store pushes its ends");
    let follower = tokio::spawn({
        let other = other.clone();
        async move { other.follow_pushed_ends(watcher, &crate::clock::SystemClock).await }
    });
    let mut heard_there = other.journal().subscribe();
    let within = Duration::from_secs(5);
    for (email, failing_reads) in [("ada@example.com", 0), ("grace@example.com", 1)] {
        let tokens = w.user(email).await;
        assert!(other.authenticate(&tokens.access.token, w.now()).is_ok());
        w.faults.fail_next(Op::EndedAfter, failing_reads);
        w.auth.logout(&w.caller(&tokens), None, w.now()).await.unwrap();
        tokio::time::timeout(within, heard_there.changed()).await.expect("heard of the end").unwrap();
        assert!(other.authenticate(&tokens.access.token, w.now()).is_err(), "{email}: refused there too");
        assert_eq!(w.faults.injected(Op::EndedAfter), failing_reads);
    }
    follower.abort();
}
