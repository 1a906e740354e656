//! What the SQL backends share: rows to domain values, and the column list.

use sqlx::{ColumnIndex, Decode, Row, Type};
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

/// The SQL types every backend must decode.
pub trait Decodes<'r>: Row
where
    &'r str: ColumnIndex<Self>,
{
    fn value_of<T: Decode<'r, Self::Database> + Type<Self::Database>>(&'r self, column: &'r str) -> StoreResult<T> {
        self.try_get(column).map_err(StoreError::other)
    }
}

impl<'r, R: Row> Decodes<'r> for R where &'r str: ColumnIndex<R> {}

fn id_bytes(bytes: &[u8]) -> StoreResult<[u8; 16]> {
    bytes.try_into().map_err(|_| StoreError::other("stored id is not 16 bytes"))
}

pub fn user_from_row<'r, R>(row: &'r R) -> StoreResult<User>
where
    R: Decodes<'r>,
    &'r str: ColumnIndex<R>,
    Vec<u8>: Decode<'r, R::Database> + Type<R::Database>,
    String: Decode<'r, R::Database> + Type<R::Database>,
    i64: Decode<'r, R::Database> + Type<R::Database>,
    bool: Decode<'r, R::Database> + Type<R::Database>,
{
    Ok(User {
        id: UserId::from_bytes(id_bytes(&row.value_of::<Vec<u8>>("id")?)?),
        email: row.value_of("email")?,
        email_key: row.value_of("email_key")?,
        username: row.value_of("username")?,
        username_key: row.value_of("username_key")?,
        password_hash: row.value_of("password_hash")?,
        is_anonymous: row.value_of("is_anonymous")?,
        created_at: Timestamp::from_millis(row.value_of("created_at")?),
    })
}

pub fn session_from_row<'r, R>(row: &'r R) -> StoreResult<Session>
where
    R: Decodes<'r>,
    &'r str: ColumnIndex<R>,
    Vec<u8>: Decode<'r, R::Database> + Type<R::Database>,
    String: Decode<'r, R::Database> + Type<R::Database>,
    i64: Decode<'r, R::Database> + Type<R::Database>,
{
    let millis = |column| row.value_of::<i64>(column).map(Timestamp::from_millis);
    Ok(Session {
        id: SessionId::from_bytes(id_bytes(&row.value_of::<Vec<u8>>("id")?)?),
        user_id: UserId::from_bytes(id_bytes(&row.value_of::<Vec<u8>>("user_id")?)?),
        generation: u64::try_from(row.value_of::<i64>("generation")?).map_err(StoreError::other)?,
        created_at: millis("created_at")?,
        last_used_at: millis("last_used_at")?,
        expires_at: millis("expires_at")?,
        absolute_expires_at: millis("absolute_expires_at")?,
        ended_at: row.value_of::<Option<i64>>("ended_at")?.map(Timestamp::from_millis),
        user_agent: row.value_of("user_agent")?,
        ip: row.value_of("ip")?,
    })
}

pub fn user_id_from_row<'r, R>(row: &'r R) -> StoreResult<UserId>
where
    R: Decodes<'r>,
    &'r str: ColumnIndex<R>,
    Vec<u8>: Decode<'r, R::Database> + Type<R::Database>,
{
    Ok(UserId::from_bytes(id_bytes(&row.value_of::<Vec<u8>>("id")?)?))
}

pub fn session_id_from_row<'r, R>(row: &'r R) -> StoreResult<SessionId>
where
    R: Decodes<'r>,
    &'r str: ColumnIndex<R>,
    Vec<u8>: Decode<'r, R::Database> + Type<R::Database>,
{
    Ok(SessionId::from_bytes(id_bytes(&row.value_of::<Vec<u8>>("id")?)?))
}

/// An OAuth client from a row of `oauth_clients`.
pub fn client_from_row<'r, R>(row: &'r R) -> StoreResult<OAuthClient>
where
    R: Decodes<'r>,
    &'r str: ColumnIndex<R>,
    String: Decode<'r, R::Database> + Type<R::Database>,
    Vec<u8>: Decode<'r, R::Database> + Type<R::Database>,
    i64: Decode<'r, R::Database> + Type<R::Database>,
{
    Ok(OAuthClient {
        id: row.value_of("id")?,
        name: row.value_of("name")?,
        secret_digest: row.value_of("secret_digest")?,
        created_at: Timestamp::from_millis(row.value_of::<i64>("created_at")?),
    })
}

/// A feed entry from a row of `(position, id, ended_at)`.
pub fn ended_from_row<'r, R>(row: &'r R) -> StoreResult<EndedSession>
where
    R: Decodes<'r>,
    &'r str: ColumnIndex<R>,
    Vec<u8>: Decode<'r, R::Database> + Type<R::Database>,
    i64: Decode<'r, R::Database> + Type<R::Database>,
{
    let position = u64::try_from(row.value_of::<i64>("position")?).map_err(StoreError::other)?;
    Ok(EndedSession {
        position: FeedPosition::new(position, 0),
        session_id: session_id_from_row(row)?,
        ended_at: Timestamp::from_millis(row.value_of::<i64>("ended_at")?),
    })
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
