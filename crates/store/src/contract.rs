//! The store contract: one behaviour, one suite, every backend.
//!
//! A backend's test file calls [`store_contract_tests!`](crate::store_contract_tests) with an
//! async function that returns fresh, empty [`Stores`]; the macro expands to one `#[tokio::test]`
//! per check below. The checks speak only through the `tessera-core` traits.
//!
//! (Over 400 lines: the whole contract a backend must keep, one check per rule, kept in one
//! file so that a backend's author reads it at once.)

use std::any::Any;
use std::sync::Arc;
use std::time::Duration;

use tessera_core::account::User;
use tessera_core::clients::OAuthClient;
use tessera_core::revocation::{EndedSession, FeedPosition};
use tessera_core::session::{Rotation, Session};
use tessera_core::store::{ClientStore, SessionStore, StoreError, UniqueKey, UserStore};
use tessera_core::{SessionId, Timestamp, UserId};

/// A backend under test. `guard` keeps whatever the stores need alive (a temp dir, a schema).
pub struct Stores {
    pub users: Arc<dyn UserStore>,
    pub clients: Arc<dyn ClientStore>,
    pub sessions: Arc<dyn SessionStore>,
    /// Whether the session store pushes its ends to a [`FeedWatcher`](tessera_core::store::FeedWatcher).
    pub pushes_ends: bool,
    pub guard: Box<dyn Any + Send + Sync>,
}

/// Expands to one test per contract check, each on fresh stores from `$make().await`.
///
/// `store_contract_tests!(make, without_sweep)` leaves out `purge_deletes_only_dead_sessions`,
/// for stores whose dead sessions leave by key expiry rather than by a sweep (Redis Cluster).
#[macro_export]
macro_rules! store_contract_tests {
    ($make:path) => {
        $crate::store_contract_tests!($make, without_sweep);
        $crate::store_contract_tests!(@each $make; purge_deletes_only_dead_sessions);
    };
    ($make:path, without_sweep) => {
        $crate::store_contract_tests!(@each $make;
            users_are_found_by_id_and_by_email_key,
            a_taken_email_key_is_refused,
            users_are_found_by_username_and_a_taken_one_is_named_as_such,
            a_guest_is_upgraded_in_place_and_a_conflict_changes_nothing,
            an_update_from_a_stale_credential_changes_nothing,
            concurrent_updates_from_one_credential_update_once,
            deleting_a_user_frees_its_email_and_username,
            guests_are_listed_page_by_page_by_age,
            clients_round_trip_and_their_names_are_unique,
            sessions_round_trip,
            rotate_moves_to_the_next_generation_and_renews_expiry,
            rotate_never_extends_past_the_absolute_lifetime,
            rotate_of_a_stale_generation_changes_nothing,
            rotate_refuses_ended_expired_and_unknown_sessions,
            concurrent_rotations_of_one_generation_rotate_once,
            end_session_ends_once,
            end_user_sessions_ends_only_that_users_active_sessions,
            list_sessions_shows_active_sessions_oldest_first,
            the_feed_lists_each_end_once_in_commit_order,
            the_feed_orders_by_commit_not_by_clock,
            a_reader_following_the_feed_during_concurrent_ends_sees_each_once,
            a_feed_watcher_wakes_when_an_end_commits,
            ping_answers
        );
    };
    (@each $make:path; $($check:ident),+ $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $check() {
                let stores = $make().await;
                $crate::contract::$check(&stores).await;
            }
        )+
    };
}

const HOUR: Duration = Duration::from_secs(3600);

/// `secs` seconds after the contract's epoch (a fixed instant in 2027).
pub fn t(secs: i64) -> Timestamp {
    Timestamp::from_millis(1_800_000_000_000 + secs * 1000)
}

fn user(email: &str) -> User {
    User {
        email: Some(email.to_owned()),
        email_key: Some(email.to_lowercase()),
        password_hash: Some("$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2g".into()),
        is_anonymous: false,
        ..User::guest(t(0))
    }
}

fn with_username(user: User, username: &str) -> User {
    User { username: Some(username.to_owned()), username_key: Some(username.to_lowercase()), ..user }
}

/// A session of `user_id` created at t(0), expiring at t(3600), absolute end t(7200).
pub fn session(user_id: UserId) -> Session {
    Session {
        id: SessionId::generate(),
        user_id,
        generation: 0,
        created_at: t(0),
        last_used_at: t(0),
        expires_at: t(3600),
        absolute_expires_at: t(7200),
        ended_at: None,
        user_agent: Some("curl/8.0".into()),
        ip: Some("127.0.0.1".into()),
    }
}

async fn stored(s: &Stores, session: Session) -> Session {
    s.sessions.create_session(&session).await.expect("create session");
    session
}

pub async fn users_are_found_by_id_and_by_email_key(s: &Stores) {
    let ada = user("Ada@Example.com");
    s.users.create_user(&ada).await.expect("create user");
    assert_eq!(s.users.find_user(ada.id).await.unwrap(), Some(ada.clone()));
    assert_eq!(s.users.find_user_by_email("ada@example.com").await.unwrap(), Some(ada));
    assert_eq!(s.users.find_user_by_email("Ada@Example.com").await.unwrap(), None, "lookup is by the exact key");
    assert_eq!(s.users.find_user(UserId::generate()).await.unwrap(), None);
}

pub async fn a_taken_email_key_is_refused(s: &Stores) {
    s.users.create_user(&user("bob@example.com")).await.unwrap();
    let err = s.users.create_user(&user("BOB@example.com")).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict(UniqueKey::Email)), "{err:?}");
}

pub async fn users_are_found_by_username_and_a_taken_one_is_named_as_such(s: &Stores) {
    let ada = with_username(user("ada@example.com"), "Ada");
    s.users.create_user(&ada).await.unwrap();
    assert_eq!(s.users.find_user_by_username("ada").await.unwrap(), Some(ada.clone()));
    assert_eq!(s.users.find_user_by_username("Ada").await.unwrap(), None, "lookup is by the exact key");
    let err = s.users.create_user(&with_username(user("other@example.com"), "ADA")).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict(UniqueKey::Username)), "a taken username is not a taken email: {err:?}");
    let err = s.users.create_user(&with_username(user("ADA@example.com"), "someone")).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict(UniqueKey::Email)), "{err:?}");
    // Accounts without an email, or without a username, do not collide on the missing one.
    let only_name = User { email: None, email_key: None, ..with_username(user("x@example.com"), "only_name") };
    let also_only_name = User { email: None, email_key: None, ..with_username(user("y@example.com"), "also_only") };
    s.users.create_user(&only_name).await.unwrap();
    s.users.create_user(&also_only_name).await.unwrap();
    s.users.create_user(&User::guest(t(0))).await.unwrap();
    s.users.create_user(&User::guest(t(0))).await.unwrap();
    assert_eq!(s.users.find_user(only_name.id).await.unwrap(), Some(only_name));
}

pub async fn a_guest_is_upgraded_in_place_and_a_conflict_changes_nothing(s: &Stores) {
    let taken = with_username(user("taken@example.com"), "taken");
    s.users.create_user(&taken).await.unwrap();
    let guest = User::guest(t(5));
    s.users.create_user(&guest).await.unwrap();

    for (clash, expected) in [
        (with_username(User { id: guest.id, ..user("taken@example.com") }, "free"), "email"),
        (with_username(User { id: guest.id, ..user("free@example.com") }, "TAKEN"), "username"),
    ] {
        let err = s.users.update_user(&clash, None).await.unwrap_err();
        let named = match err {
            StoreError::Conflict(UniqueKey::Email) => "email",
            StoreError::Conflict(UniqueKey::Username) => "username",
            ref other => panic!("{other:?}"),
        };
        assert_eq!(named, expected);
        assert_eq!(s.users.find_user(guest.id).await.unwrap(), Some(guest.clone()), "unchanged");
    }

    let upgraded = with_username(User { id: guest.id, created_at: t(5), ..user("Guest@example.com") }, "Guest");
    assert!(s.users.update_user(&upgraded, None).await.unwrap());
    assert_eq!(s.users.find_user(guest.id).await.unwrap(), Some(upgraded.clone()));
    assert_eq!(s.users.find_user_by_email("guest@example.com").await.unwrap(), Some(upgraded.clone()));
    assert_eq!(s.users.find_user_by_username("guest").await.unwrap(), Some(upgraded.clone()));
    // Updating a user with its own keys is no conflict; an unknown user is `false`.
    let rehashed = User { password_hash: Some("other".into()), ..upgraded.clone() };
    assert!(s.users.update_user(&rehashed, upgraded.password_hash.as_deref()).await.unwrap());
    assert_eq!(s.users.find_user(guest.id).await.unwrap(), Some(rehashed));
    assert!(!s.users.update_user(&user("nobody@example.com"), None).await.unwrap());
}

/// `update_user` is a compare-and-set on the password hash: a change made from a credential
/// that is no longer the stored one changes nothing, so of two racing changes one wins.
pub async fn an_update_from_a_stale_credential_changes_nothing(s: &Stores) {
    let guest = User::guest(t(5));
    s.users.create_user(&guest).await.unwrap();
    let first = with_username(User { id: guest.id, created_at: t(5), ..user("first@example.com") }, "first");
    let second = User { password_hash: Some("second".into()), ..user("second@example.com") };
    let second = User { id: guest.id, created_at: t(5), ..second };
    assert!(s.users.update_user(&first, None).await.unwrap(), "the first upgrade of a guest wins");
    assert!(!s.users.update_user(&second, None).await.unwrap(), "the second finds no guest any more");
    assert_eq!(s.users.find_user(guest.id).await.unwrap(), Some(first.clone()));
    assert_eq!(s.users.find_user_by_email("second@example.com").await.unwrap(), None);

    let changed = User { password_hash: Some("changed".into()), ..first.clone() };
    assert!(!s.users.update_user(&changed, Some("not the stored hash")).await.unwrap());
    assert!(s.users.update_user(&changed, first.password_hash.as_deref()).await.unwrap());
    assert!(!s.users.update_user(&first, first.password_hash.as_deref()).await.unwrap(), "stale now");
    // Back to a guest, as an upgrade that failed later undoes itself.
    assert!(s.users.update_user(&guest, Some("changed")).await.unwrap());
    assert_eq!(s.users.find_user(guest.id).await.unwrap(), Some(guest.clone()));
    assert_eq!(s.users.find_user_by_email("first@example.com").await.unwrap(), None, "its email is free again");
}

pub async fn concurrent_updates_from_one_credential_update_once(s: &Stores) {
    let guest = User::guest(t(5));
    s.users.create_user(&guest).await.unwrap();
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let users = s.users.clone();
            let upgraded = User { id: guest.id, created_at: t(5), ..user(&format!("racer{i}@example.com")) };
            let upgraded = User { password_hash: Some(format!("hash-{i}")), ..upgraded };
            tokio::spawn(async move { (users.update_user(&upgraded, None).await.unwrap(), upgraded) })
        })
        .collect();
    let mut winners = Vec::new();
    for task in tasks {
        let (won, upgraded) = task.await.unwrap();
        if won {
            winners.push(upgraded);
        }
    }
    assert_eq!(winners.len(), 1, "exactly one of the racing upgrades wins");
    assert_eq!(s.users.find_user(guest.id).await.unwrap(), Some(winners[0].clone()), "and holds the account");
}

pub async fn deleting_a_user_frees_its_email_and_username(s: &Stores) {
    let ada = with_username(user("ada@example.com"), "ada");
    s.users.create_user(&ada).await.unwrap();
    assert!(s.users.delete_user(ada.id).await.unwrap());
    assert!(!s.users.delete_user(ada.id).await.unwrap());
    assert_eq!(s.users.find_user(ada.id).await.unwrap(), None);
    assert_eq!(s.users.find_user_by_email("ada@example.com").await.unwrap(), None);
    assert_eq!(s.users.find_user_by_username("ada").await.unwrap(), None);
    s.users.create_user(&with_username(user("ada@example.com"), "ada")).await.expect("free again");
}

pub async fn guests_are_listed_page_by_page_by_age(s: &Stores) {
    let mut old: Vec<UserId> = Vec::new();
    for _ in 0..5 {
        let guest = User::guest(t(10));
        s.users.create_user(&guest).await.unwrap();
        old.push(guest.id);
    }
    s.users.create_user(&User::guest(t(100))).await.unwrap();
    s.users.create_user(&User { created_at: t(10), ..user("registered@example.com") }).await.unwrap();
    old.sort();
    let first = s.users.guests(t(50), None, 3).await.unwrap();
    assert_eq!(first, old[..3]);
    let rest = s.users.guests(t(50), first.last().copied(), 3).await.unwrap();
    assert_eq!(rest, old[3..]);
    assert!(s.users.guests(t(50), rest.last().copied(), 3).await.unwrap().is_empty());
}

pub async fn sessions_round_trip(s: &Stores) {
    let created = stored(s, session(UserId::generate())).await;
    assert_eq!(s.sessions.get_session(created.id).await.unwrap(), Some(created));
    assert_eq!(s.sessions.get_session(SessionId::generate()).await.unwrap(), None);
}

pub async fn rotate_moves_to_the_next_generation_and_renews_expiry(s: &Stores) {
    let before = stored(s, session(UserId::generate())).await;
    let rotated = s.sessions.rotate(before.id, 0, t(60), t(60 + 3600)).await.unwrap();
    let expected = Session { generation: 1, last_used_at: t(60), expires_at: t(3660), ..before.clone() };
    assert_eq!(rotated, Rotation::Rotated(expected.clone()));
    assert_eq!(s.sessions.get_session(before.id).await.unwrap(), Some(expected));
}

pub async fn rotate_never_extends_past_the_absolute_lifetime(s: &Stores) {
    let before = stored(s, session(UserId::generate())).await;
    let Rotation::Rotated(after) =
        s.sessions.rotate(before.id, 0, t(3000), t(3000).saturating_add(2 * HOUR)).await.unwrap()
    else {
        panic!("should rotate");
    };
    assert_eq!(after.expires_at, t(7200));
}

pub async fn rotate_of_a_stale_generation_changes_nothing(s: &Stores) {
    let before = stored(s, session(UserId::generate())).await;
    let Rotation::Rotated(current) = s.sessions.rotate(before.id, 0, t(10), t(3610)).await.unwrap() else {
        panic!("should rotate");
    };
    for stale in [0, 2, 99] {
        let again = s.sessions.rotate(before.id, stale, t(20), t(3620)).await.unwrap();
        assert_eq!(again, Rotation::Stale(Some(current.clone())), "generation {stale}");
    }
}

pub async fn rotate_refuses_ended_expired_and_unknown_sessions(s: &Stores) {
    let ended = stored(s, session(UserId::generate())).await;
    assert!(s.sessions.end_session(ended.id, t(5)).await.unwrap());
    let Rotation::Stale(Some(seen)) = s.sessions.rotate(ended.id, 0, t(10), t(3610)).await.unwrap() else {
        panic!("an ended session must not rotate");
    };
    assert_eq!((seen.generation, seen.ended_at), (0, Some(t(5))));

    let expired = stored(s, session(UserId::generate())).await;
    let at_expiry = s.sessions.rotate(expired.id, 0, t(3600), t(7200)).await.unwrap();
    assert_eq!(at_expiry, Rotation::Stale(Some(expired)), "expires_at is exclusive");

    assert_eq!(s.sessions.rotate(SessionId::generate(), 0, t(1), t(3601)).await.unwrap(), Rotation::Stale(None));
}

pub async fn concurrent_rotations_of_one_generation_rotate_once(s: &Stores) {
    let before = stored(s, session(UserId::generate())).await;
    let mut racers = tokio::task::JoinSet::new();
    for i in 0..32 {
        let sessions = s.sessions.clone();
        racers.spawn(async move { sessions.rotate(before.id, 0, t(10 + i), t(3610)).await.expect("rotate") });
    }
    let outcomes = racers.join_all().await;
    let winners = outcomes.iter().filter(|o| matches!(o, Rotation::Rotated(_))).count();
    assert_eq!(winners, 1, "{outcomes:?}");
    assert_eq!(s.sessions.get_session(before.id).await.unwrap().map(|s| s.generation), Some(1));
}

pub async fn end_session_ends_once(s: &Stores) {
    let live = stored(s, session(UserId::generate())).await;
    assert!(s.sessions.end_session(live.id, t(30)).await.unwrap());
    assert!(!s.sessions.end_session(live.id, t(40)).await.unwrap());
    assert_eq!(s.sessions.get_session(live.id).await.unwrap().and_then(|s| s.ended_at), Some(t(30)));
    assert!(!s.sessions.end_session(SessionId::generate(), t(40)).await.unwrap());
}

pub async fn end_user_sessions_ends_only_that_users_active_sessions(s: &Stores) {
    let (ada, bob) = (UserId::generate(), UserId::generate());
    let a1 = stored(s, session(ada)).await;
    let a2 = stored(s, session(ada)).await;
    let a_ended = stored(s, session(ada)).await;
    s.sessions.end_session(a_ended.id, t(1)).await.unwrap();
    let b1 = stored(s, session(bob)).await;

    let mut ended = s.sessions.end_user_sessions(ada, t(10)).await.unwrap();
    ended.sort();
    let mut expected = vec![a1.id, a2.id];
    expected.sort();
    assert_eq!(ended, expected);
    assert_eq!(s.sessions.get_session(a_ended.id).await.unwrap().and_then(|s| s.ended_at), Some(t(1)));
    assert_eq!(s.sessions.get_session(b1.id).await.unwrap().and_then(|s| s.ended_at), None);
    assert!(s.sessions.end_user_sessions(ada, t(11)).await.unwrap().is_empty());
}

pub async fn list_sessions_shows_active_sessions_oldest_first(s: &Stores) {
    let ada = UserId::generate();
    let newer = stored(s, Session { created_at: t(5), ..session(ada) }).await;
    let older = stored(s, session(ada)).await;
    let ended = stored(s, session(ada)).await;
    s.sessions.end_session(ended.id, t(6)).await.unwrap();
    stored(s, Session { expires_at: t(8), ..session(ada) }).await;
    stored(s, session(UserId::generate())).await;

    let listed = s.sessions.list_sessions(ada, t(10)).await.unwrap();
    assert_eq!(listed, vec![older, newer]);
}

/// The feed entries of these sessions (other tests may share a Redis stream), after `after`.
async fn feed_of(s: &Stores, after: Option<FeedPosition>, ids: &[SessionId]) -> Vec<EndedSession> {
    let all = s.sessions.ended_after(after, 10_000).await.unwrap();
    all.into_iter().filter(|e| ids.contains(&e.session_id)).collect()
}

pub async fn the_feed_lists_each_end_once_in_commit_order(s: &Stores) {
    let (ada, bob) = (UserId::generate(), UserId::generate());
    let early = stored(s, session(ada)).await;
    let late = stored(s, session(ada)).await;
    let bobs = [stored(s, session(bob)).await.id, stored(s, session(bob)).await.id];
    let untouched = stored(s, session(ada)).await;
    s.sessions.end_session(early.id, t(10)).await.unwrap();
    s.sessions.end_session(late.id, t(20)).await.unwrap();
    s.sessions.end_session(early.id, t(25)).await.unwrap();
    s.sessions.end_user_sessions(bob, t(30)).await.unwrap();

    let ids = [early.id, late.id, bobs[0], bobs[1], untouched.id];
    let feed = feed_of(s, None, &ids).await;
    assert_eq!(feed.len(), 4, "each end once, nothing for the live session: {feed:?}");
    assert_eq!((feed[0].session_id, feed[0].ended_at), (early.id, t(10)));
    assert_eq!((feed[1].session_id, feed[1].ended_at), (late.id, t(20)));
    let mut tail: Vec<_> = feed[2..].iter().map(|e| (e.session_id, e.ended_at)).collect();
    tail.sort();
    let mut expected = vec![(bobs[0], t(30)), (bobs[1], t(30))];
    expected.sort();
    assert_eq!(tail, expected);
    assert!(feed.windows(2).all(|w| w[0].position < w[1].position), "positions grow: {feed:?}");

    assert_eq!(feed_of(s, Some(feed[0].position), &ids).await, feed[1..].to_vec(), "resume after a position");
    assert!(feed_of(s, Some(feed[3].position), &ids).await.is_empty());
    assert_eq!(s.sessions.ended_after(None, 1).await.unwrap().len(), 1, "the limit holds");
}

pub async fn the_feed_orders_by_commit_not_by_clock(s: &Stores) {
    let user_id = UserId::generate();
    let (first, second) = (stored(s, session(user_id)).await, stored(s, session(user_id)).await);
    // The second end comes from an instance whose clock is a minute behind.
    s.sessions.end_session(first.id, t(100)).await.unwrap();
    let cursor = feed_of(s, None, &[first.id]).await[0].position;
    s.sessions.end_session(second.id, t(40)).await.unwrap();
    let after = feed_of(s, Some(cursor), &[first.id, second.id]).await;
    assert_eq!(after.iter().map(|e| (e.session_id, e.ended_at)).collect::<Vec<_>>(), vec![(second.id, t(40))]);
}

pub async fn a_reader_following_the_feed_during_concurrent_ends_sees_each_once(s: &Stores) {
    let user_id = UserId::generate();
    let mut ids = Vec::new();
    for _ in 0..24 {
        ids.push(stored(s, session(user_id)).await.id);
    }
    let start = s.sessions.ended_after(None, 100_000).await.unwrap().last().map(|e| e.position);
    let enders: Vec<_> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| {
            let (sessions, id) = (s.sessions.clone(), *id);
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(i as u64 % 6)).await;
                sessions.end_session(id, t(10)).await.unwrap();
            })
        })
        .collect();
    let mut seen = Vec::new();
    let mut cursor = start;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while seen.len() < ids.len() && std::time::Instant::now() < deadline {
        let batch = s.sessions.ended_after(cursor, 5).await.unwrap();
        cursor = batch.last().map(|e| e.position).or(cursor);
        seen.extend(batch.iter().map(|e| e.session_id).filter(|id| ids.contains(id)));
        tokio::task::yield_now().await;
    }
    for ender in enders {
        ender.await.unwrap();
    }
    seen.extend(feed_of(s, cursor, &ids).await.iter().map(|e| e.session_id));
    seen.sort();
    ids.sort();
    assert_eq!(seen, ids, "every end exactly once, none skipped by a reader that resumed mid-way");
}

pub async fn a_feed_watcher_wakes_when_an_end_commits(s: &Stores) {
    let Some(mut watcher) = s.sessions.feed_watcher() else {
        assert!(!s.pushes_ends, "a store that pushes its ends has a feed watcher");
        return;
    };
    assert!(s.pushes_ends, "a feed watcher from a store said not to push");
    let session = stored(s, session(UserId::generate())).await;
    let head = s.sessions.ended_after(None, 100_000).await.unwrap().last().map(|e| e.position);
    // With nothing ending, a wait runs out (the first may wake at once: it may be wrong, never late).
    let mut quiet = false;
    for _ in 0..3 {
        if !watcher.wait(head, Duration::from_millis(300)).await.unwrap() {
            quiet = true;
            break;
        }
    }
    assert!(quiet, "a watcher wakes with nothing ending");
    let ender = {
        let sessions = s.sessions.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            sessions.end_session(session.id, t(10)).await.unwrap();
        })
    };
    let started = std::time::Instant::now();
    assert!(watcher.wait(head, Duration::from_secs(30)).await.unwrap(), "woken by the end");
    assert!(started.elapsed() < Duration::from_secs(10), "woken as the end committed, not at the wait's end");
    ender.await.unwrap();
    assert_eq!(feed_of(s, head, &[session.id]).await.len(), 1);
}

pub async fn purge_deletes_only_dead_sessions(s: &Stores) {
    let user_id = UserId::generate();
    let live = stored(s, session(user_id)).await;
    let expired = stored(s, Session { expires_at: t(100), ..session(user_id) }).await;
    let ended = stored(s, session(user_id)).await;
    s.sessions.end_session(ended.id, t(50)).await.unwrap();
    let recently_ended = stored(s, session(user_id)).await;
    s.sessions.end_session(recently_ended.id, t(500)).await.unwrap();

    let purged = s.sessions.purge(t(200), t(200), Timestamp::from_millis(0)).await.unwrap();
    assert_eq!(purged, 2);
    assert_eq!(feed_of(s, None, &[ended.id, recently_ended.id]).await.len(), 2, "the feed keeps its window");
    assert!(s.sessions.get_session(live.id).await.unwrap().is_some());
    assert!(s.sessions.get_session(recently_ended.id).await.unwrap().is_some());
    assert!(s.sessions.get_session(expired.id).await.unwrap().is_none());
    assert!(s.sessions.get_session(ended.id).await.unwrap().is_none());
}

pub async fn clients_round_trip_and_their_names_are_unique(s: &Stores) {
    let client = |id: &str, name: &str, at: i64| OAuthClient {
        id: id.into(),
        name: name.into(),
        secret_digest: vec![7; 32],
        created_at: t(at),
    };
    let (billing, reports) = (client("tc_1", "billing", 1), client("tc_2", "reports", 2));
    s.clients.create_client(&reports).await.unwrap();
    s.clients.create_client(&billing).await.unwrap();
    assert_eq!(s.clients.find_client("tc_1").await.unwrap(), Some(billing.clone()));
    assert_eq!(s.clients.find_client("tc_9").await.unwrap(), None);
    assert_eq!(s.clients.list_clients().await.unwrap(), vec![billing.clone(), reports.clone()]);
    let err = s.clients.create_client(&client("tc_3", "billing", 3)).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict(UniqueKey::ClientName)), "{err:?}");

    assert!(s.clients.delete_client("tc_1").await.unwrap(), "by id");
    assert!(s.clients.delete_client("reports").await.unwrap(), "by name");
    assert!(!s.clients.delete_client("reports").await.unwrap());
    assert!(s.clients.list_clients().await.unwrap().is_empty());
}

pub async fn ping_answers(s: &Stores) {
    s.users.ping().await.expect("user store ping");
    s.sessions.ping().await.expect("session store ping");
}
