//! What the SQL backends share: the statements both dialects run alike (for each backend's
//! table names, with `$N` parameters, which SQLite reads too), the binding of a user's and a
//! session's fields, and rows to domain values. A row is decoded as a tuple in the order of its
//! column list (sqlx's own `FromRow` for tuples: no derive macro, which would build sqlx a
//! second time for the compiler); the statements that differ (rotation, ending sessions with
//! their feed entries, the guests' query) stay in each backend.

use sqlx::query::Query;
use sqlx::{Database, Encode, Type};
use tessera_core::account::User;
use tessera_core::clients::OAuthClient;
use tessera_core::revocation::{EndedSession, FeedPosition};
use tessera_core::session::Session;
use tessera_core::store::{StoreError, StoreResult, UniqueKey};
use tessera_core::{SessionId, Timestamp, UserId};

/// The unique key a constraint guards, from its name as the backend reports it (PostgreSQL's
/// constraint, `tessera_users_email_key`; SQLite's columns, `users.email_key`).
pub fn unique_key(constraint: &str) -> UniqueKey {
    if constraint.contains("username_key") {
        UniqueKey::Username
    } else if constraint.contains("email_key") {
        UniqueKey::Email
    } else if constraint.contains("oauth_clients") && constraint.contains("name") {
        UniqueKey::ClientName
    } else {
        UniqueKey::Id
    }
}

pub const SESSION_COLUMNS: &str =
    "id, user_id, generation, created_at, last_used_at, expires_at, absolute_expires_at, ended_at, user_agent, ip";
pub const USER_COLUMNS: &str = "id, email, email_key, username, username_key, password_hash, is_anonymous, created_at";
const CLIENT_COLUMNS: &str = "id, name, secret_digest, created_at";

/// The statements both backends run alike, on one backend's tables: `users`, `sessions`,
/// `oauth_clients` and `session_ends`, each with the backend's prefix.
#[derive(Debug)]
pub struct Statements {
    pub insert_user: String,
    pub find_user_by_email: String,
    pub find_user_by_username: String,
    pub find_user: String,
    /// A compare-and-set on the password hash.
    pub update_user: String,
    pub delete_user: String,
    pub insert_client: String,
    pub find_client: String,
    pub list_clients: String,
    pub delete_client: String,
    pub insert_session: String,
    pub get_session: String,
    pub list_sessions: String,
    pub ended_after: String,
    pub purge_sessions: String,
    pub purge_feed: String,
}

impl Statements {
    pub fn new(prefix: &str) -> Self {
        let users = format!("{prefix}users");
        let sessions = format!("{prefix}sessions");
        let clients = format!("{prefix}oauth_clients");
        let ends = format!("{prefix}session_ends");
        let find_user = |by: &str| format!("SELECT {USER_COLUMNS} FROM {users} WHERE {by} = $1");
        Self {
            insert_user: format!("INSERT INTO {users} ({USER_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"),
            find_user_by_email: find_user("email_key"),
            find_user_by_username: find_user("username_key"),
            find_user: find_user("id"),
            update_user: format!(
                "UPDATE {users} SET email = $2, email_key = $3, username = $4, username_key = $5, \
                 password_hash = $6, is_anonymous = $7 WHERE id = $1 AND password_hash IS NOT DISTINCT FROM $8"
            ),
            delete_user: format!("DELETE FROM {users} WHERE id = $1"),
            insert_client: format!("INSERT INTO {clients} ({CLIENT_COLUMNS}) VALUES ($1, $2, $3, $4)"),
            find_client: format!("SELECT {CLIENT_COLUMNS} FROM {clients} WHERE id = $1"),
            list_clients: format!("SELECT {CLIENT_COLUMNS} FROM {clients} ORDER BY created_at, id"),
            delete_client: format!("DELETE FROM {clients} WHERE id = $1 OR name = $1"),
            insert_session: format!(
                "INSERT INTO {sessions} ({SESSION_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
            ),
            get_session: format!("SELECT {SESSION_COLUMNS} FROM {sessions} WHERE id = $1"),
            list_sessions: format!(
                "SELECT {SESSION_COLUMNS} FROM {sessions} WHERE user_id = $1 AND ended_at IS NULL AND expires_at > $2 \
                 ORDER BY created_at, id"
            ),
            ended_after: format!(
                "SELECT position, id, ended_at FROM {ends} WHERE position > $1 ORDER BY position LIMIT $2"
            ),
            purge_sessions: format!("DELETE FROM {sessions} WHERE expires_at < $1 OR ended_at < $2"),
            purge_feed: format!("DELETE FROM {ends} WHERE ended_at < $1"),
        }
    }
}

type Bound<'q, DB> = Query<'q, DB, <DB as Database>::Arguments<'q>>;

/// Binds `$1`…`$7` of [`Statements::insert_user`] and [`Statements::update_user`]: the id, then
/// the fields an update may change.
pub fn bind_user<'q, DB: Database>(query: Bound<'q, DB>, user: &'q User) -> Bound<'q, DB>
where
    &'q [u8]: Encode<'q, DB> + Type<DB>,
    Option<String>: Encode<'q, DB> + Type<DB>,
    bool: Encode<'q, DB> + Type<DB>,
{
    query
        .bind(&user.id.as_bytes()[..])
        .bind(user.email.clone())
        .bind(user.email_key.clone())
        .bind(user.username.clone())
        .bind(user.username_key.clone())
        .bind(user.password_hash.clone())
        .bind(user.is_anonymous)
}

/// Binds every column of [`SESSION_COLUMNS`], in order.
pub fn bind_session<'q, DB: Database>(query: Bound<'q, DB>, s: &'q Session) -> StoreResult<Bound<'q, DB>>
where
    &'q [u8]: Encode<'q, DB> + Type<DB>,
    Option<String>: Encode<'q, DB> + Type<DB>,
    i64: Encode<'q, DB> + Type<DB>,
    Option<i64>: Encode<'q, DB> + Type<DB>,
{
    Ok(query
        .bind(&s.id.as_bytes()[..])
        .bind(&s.user_id.as_bytes()[..])
        .bind(generation(s.generation)?)
        .bind(s.created_at.as_millis())
        .bind(s.last_used_at.as_millis())
        .bind(s.expires_at.as_millis())
        .bind(s.absolute_expires_at.as_millis())
        .bind(s.ended_at.map(Timestamp::as_millis))
        .bind(s.user_agent.clone())
        .bind(s.ip.clone()))
}

/// A row of [`USER_COLUMNS`].
pub type UserRow = (Vec<u8>, Option<String>, Option<String>, Option<String>, Option<String>, Option<String>, bool, i64);
/// A row of [`SESSION_COLUMNS`].
pub type SessionRow = (Vec<u8>, Vec<u8>, i64, i64, i64, i64, i64, Option<i64>, Option<String>, Option<String>);
/// A row of `id, name, secret_digest, created_at`.
pub type ClientRow = (String, String, Vec<u8>, i64);
/// A row of `position, id, ended_at` of the feed.
pub type EndedRow = (i64, Vec<u8>, i64);
/// A row of one id.
pub type IdRow = (Vec<u8>,);

fn id_bytes(bytes: &[u8]) -> StoreResult<[u8; 16]> {
    bytes.try_into().map_err(|_| StoreError::other("stored id is not 16 bytes"))
}

pub fn user(
    (id, email, email_key, username, username_key, password_hash, is_anonymous, created_at): UserRow,
) -> StoreResult<User> {
    Ok(User {
        id: UserId::from_bytes(id_bytes(&id)?),
        email,
        email_key,
        username,
        username_key,
        password_hash,
        is_anonymous,
        created_at: Timestamp::from_millis(created_at),
    })
}

pub fn session(row: SessionRow) -> StoreResult<Session> {
    let (id, user_id, generation, created_at, last_used_at, expires_at, absolute_expires_at, ended_at, user_agent, ip) =
        row;
    Ok(Session {
        id: SessionId::from_bytes(id_bytes(&id)?),
        user_id: UserId::from_bytes(id_bytes(&user_id)?),
        generation: u64::try_from(generation).map_err(StoreError::other)?,
        created_at: Timestamp::from_millis(created_at),
        last_used_at: Timestamp::from_millis(last_used_at),
        expires_at: Timestamp::from_millis(expires_at),
        absolute_expires_at: Timestamp::from_millis(absolute_expires_at),
        ended_at: ended_at.map(Timestamp::from_millis),
        user_agent,
        ip,
    })
}

pub fn client((id, name, secret_digest, created_at): ClientRow) -> OAuthClient {
    OAuthClient { id, name, secret_digest, created_at: Timestamp::from_millis(created_at) }
}

pub fn ended((position, id, ended_at): EndedRow) -> StoreResult<EndedSession> {
    let position = u64::try_from(position).map_err(StoreError::other)?;
    Ok(EndedSession {
        position: FeedPosition::new(position, 0),
        session_id: SessionId::from_bytes(id_bytes(&id)?),
        ended_at: Timestamp::from_millis(ended_at),
    })
}

pub fn user_id((id,): IdRow) -> StoreResult<UserId> {
    Ok(UserId::from_bytes(id_bytes(&id)?))
}

pub fn session_id((id,): IdRow) -> StoreResult<SessionId> {
    Ok(SessionId::from_bytes(id_bytes(&id)?))
}

/// The SQL bound of a feed position (SQL stores use only its major part).
pub fn feed_position(after: Option<FeedPosition>) -> StoreResult<i64> {
    after.map_or(Ok(0), |p| i64::try_from(p.major).map_err(StoreError::other))
}

/// A row count for `LIMIT`.
pub fn limit(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

pub fn generation(g: u64) -> StoreResult<i64> {
    i64::try_from(g).map_err(StoreError::other)
}
