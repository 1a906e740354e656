//! Group commit of rotations on SQLite's single writer.
//!
//! SQLite commits one transaction at a time, and a transaction of one small `UPDATE` costs
//! about as much as one of many: the price is per statement and per commit (a round trip to the
//! connection's worker thread, the WAL frames' header and checksums), not per row. So rotations
//! are not written one by one: they queue, and one task takes whatever has queued while the
//! previous group committed (up to [`MAX_GROUP`]), after letting the requests that are already
//! runnable queue theirs too, and writes it as one statement in one transaction, sent to the
//! worker thread as one batch (`BEGIN IMMEDIATE; UPDATE …; COMMIT`). Under no load a group is a
//! single rotation and waits for nothing but one yield to the scheduler; under load, groups grow
//! by themselves (about 16 rotations each at the benchmark's 32 connections).
//!
//! The guarantees stay those of the trait:
//! - a caller is answered only after the transaction holding its rotation committed, so every
//!   acknowledged rotation survives `kill -9` (and power loss with `synchronous = FULL`); a
//!   failed commit fails every rotation of the group, none of which took effect;
//! - each rotation is the same compare-and-set as before (`generation = from`, not ended, not
//!   expired, in the `WHERE` clause); a session appears at most once per statement, so several
//!   rotations of one session in a group run one statement after another, in arrival order,
//!   exactly as if they had been sent one by one: at most one rotates, the others see the
//!   rotated session and are stale, reading it as committed after the group.

use std::collections::{HashMap, HashSet};

use futures_util::StreamExt as _;
use sqlx::sqlite::{SqliteConnection, SqlitePool};
use sqlx::{Either, Executor as _, FromRow as _};
use tessera_core::session::Rotation;
use tessera_core::store::{StoreError, StoreResult};
use tessera_core::{SessionId, Timestamp};
use tokio::sync::{mpsc, oneshot};

use crate::sql::{self, SESSION_COLUMNS, SessionRow, generation};

/// Rotations committed together at most (SQLite allows 32 766 bound values; four per rotation).
pub const MAX_GROUP: usize = 128;

/// Times the group task lets runnable requests queue their rotations before it takes a group.
/// Fewer, larger groups cost less per rotation: at the benchmark's 32 connections, groups grew
/// from about 8 to 16 rotations and refresh took 71 instead of 80 µs of CPU.
const MAX_YIELDS: usize = 8;

/// One rotation waiting for its group.
pub struct Pending {
    pub id: SessionId,
    pub from: u64,
    pub now: Timestamp,
    pub idle_expires_at: Timestamp,
    pub answer: oneshot::Sender<StoreResult<Rotation>>,
}

/// Starts the task that commits queued rotations in groups; it ends when every sender is gone.
pub fn start(writer: SqlitePool) -> mpsc::Sender<Pending> {
    let (queue, mut incoming) = mpsc::channel::<Pending>(4 * MAX_GROUP);
    tokio::spawn(async move {
        let mut group = Vec::with_capacity(MAX_GROUP);
        while incoming.recv_many(&mut group, MAX_GROUP).await > 0 {
            // Requests that are already runnable are about to queue their rotations: let them
            // (a yield puts this task behind them) while more keep coming, so that they join
            // this group instead of waiting for the next. Idle, this costs one yield.
            for _ in 0..MAX_YIELDS {
                tokio::task::yield_now().await;
                if incoming.is_empty() || group.len() >= MAX_GROUP {
                    break;
                }
                let room = MAX_GROUP - group.len();
                incoming.recv_many(&mut group, room).await;
            }
            let wanted: Vec<_> = group.iter().map(|p| (p.id, p.from, p.now, p.idle_expires_at)).collect();
            match commit(&writer, &wanted).await {
                Ok(outcomes) => {
                    for (pending, outcome) in group.drain(..).zip(outcomes) {
                        let _ = pending.answer.send(Ok(outcome));
                    }
                }
                Err(e) => {
                    let unavailable = matches!(e, StoreError::Unavailable(_));
                    let message = e.to_string();
                    for pending in group.drain(..) {
                        let error = if unavailable {
                            StoreError::unavailable(message.clone())
                        } else {
                            StoreError::other(message.clone())
                        };
                        let _ = pending.answer.send(Err(error));
                    }
                }
            }
        }
    });
    queue
}

/// The rotations `wanted` (id, from, now, idle expiry), in one transaction; their outcomes in the
/// same order.
///
/// The transaction is one batch of statements sent to the connection's worker at once
/// (`BEGIN IMMEDIATE`, one `UPDATE … RETURNING` per round, `COMMIT`): one round trip to the
/// worker thread instead of one per statement. If any statement fails, the batch stops there and
/// the transaction is rolled back, so none of the group's rotations took effect.
async fn commit(writer: &SqlitePool, wanted: &[(SessionId, u64, Timestamp, Timestamp)]) -> StoreResult<Vec<Rotation>> {
    let mut conn = writer.acquire().await.map_err(super::sqlite::classify)?;
    let mut rotated = match rotate_in_rounds(&mut conn, wanted).await {
        Ok(rotated) => rotated,
        Err(e) => {
            // No transaction may stay open on the writer. If even the rollback fails (there was
            // no transaction left to roll back, or the connection is broken), the connection is
            // closed rather than returned to the pool in a state nobody knows.
            if sqlx::query("ROLLBACK").execute(&mut *conn).await.is_err() {
                conn.close_on_drop();
            }
            return Err(e);
        }
    };
    // The stale ones see their session as it is now, committed: the group's own rotations
    // included.
    let stale: Vec<SessionId> = (0..wanted.len()).filter(|i| !rotated.contains_key(i)).map(|i| wanted[i].0).collect();
    let mut current = HashMap::new();
    if !stale.is_empty() {
        let marks = vec!["?"; stale.len()].join(", ");
        let sql = format!("SELECT {SESSION_COLUMNS} FROM sessions WHERE id IN ({marks})");
        let mut query = sqlx::query(&sql);
        for id in &stale {
            query = query.bind(id.as_bytes().to_vec());
        }
        for row in query.fetch_all(&mut *conn).await.map_err(super::sqlite::classify)? {
            let session = sql::session(SessionRow::from_row(&row).map_err(StoreError::other)?)?;
            current.insert(session.id, session);
        }
    }
    Ok((0..wanted.len())
        .map(|i| rotated.remove(&i).unwrap_or_else(|| Rotation::Stale(current.get(&wanted[i].0).cloned())))
        .collect())
}

/// Runs the group's transaction as one batch and returns the sessions it rotated, by index in
/// `wanted`. Each session appears once per round (an `UPDATE` of its own), rounds in arrival
/// order.
async fn rotate_in_rounds(
    conn: &mut SqliteConnection,
    wanted: &[(SessionId, u64, Timestamp, Timestamp)],
) -> StoreResult<HashMap<usize, Rotation>> {
    let mut rounds: Vec<Vec<usize>> = Vec::new();
    let mut left: Vec<usize> = (0..wanted.len()).collect();
    while !left.is_empty() {
        let mut seen = HashSet::new();
        let (round, later): (Vec<usize>, Vec<usize>) = left.iter().partition(|&&i| seen.insert(wanted[i].0));
        rounds.push(round);
        left = later;
    }
    let mut sql = String::from("BEGIN IMMEDIATE; ");
    for round in &rounds {
        let values = vec!["(?, ?, ?, ?)"; round.len()].join(", ");
        sql.push_str(&format!(
            "WITH wanted(rid, rfrom, rnow, ridle) AS (VALUES {values}) \
             UPDATE sessions SET generation = generation + 1, last_used_at = rnow, \
             expires_at = MIN(ridle, absolute_expires_at) FROM wanted \
             WHERE id = rid AND generation = rfrom AND ended_at IS NULL AND expires_at > rnow \
             RETURNING {SESSION_COLUMNS}; "
        ));
    }
    sql.push_str("COMMIT");
    let mut query = sqlx::query(&sql);
    for &i in rounds.iter().flatten() {
        let (id, from, now, idle) = wanted[i];
        query = query.bind(id.as_bytes().to_vec()).bind(generation(from)?).bind(now.as_millis()).bind(idle.as_millis());
    }
    let mut rotated = HashMap::new();
    // Statement 0 is BEGIN, statement k its k-th round, the last one COMMIT.
    let mut statement: usize = 0;
    let mut results = conn.fetch_many(query);
    while let Some(result) = results.next().await {
        match result.map_err(super::sqlite::classify)? {
            Either::Left(_done) => statement += 1,
            Either::Right(row) => {
                let session = sql::session(SessionRow::from_row(&row).map_err(StoreError::other)?)?;
                let round = statement.checked_sub(1).and_then(|k| rounds.get(k));
                if let Some(&i) = round.and_then(|r| r.iter().find(|&&i| wanted[i].0 == session.id)) {
                    rotated.insert(i, Rotation::Rotated(session));
                }
            }
        }
    }
    if statement != rounds.len() + 2 {
        return Err(StoreError::other(format!(
            "the group's transaction ran {statement} of {} statements",
            rounds.len() + 2
        )));
    }
    Ok(rotated)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use tessera_core::UserId;
    use tessera_core::session::Session;
    use tessera_core::store::SessionStore;

    use super::*;
    use crate::contract::t;
    use crate::sqlite::SqliteStore;

    fn session() -> Session {
        crate::contract::session(UserId::generate())
    }

    #[tokio::test]
    async fn a_failed_group_rotates_none_of_its_sessions_and_leaves_no_transaction_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("group.db");
        let store = SqliteStore::open(&path, false).await.unwrap();
        let (good, bad) = (session(), session());
        store.create_session(&good).await.unwrap();
        store.create_session(&bad).await.unwrap();
        let writer = crate::sqlite::writer_pool_options()
            .connect_with(crate::sqlite::connect_options(&path, false))
            .await
            .unwrap();
        // The second statement of the batch fails: the bad session's update raises an error.
        let bad_id: String = bad.id.as_bytes().iter().map(|b| format!("{b:02x}")).collect();
        sqlx::query(&format!(
            "CREATE TRIGGER refuse BEFORE UPDATE ON sessions WHEN OLD.id = x'{bad_id}' \
             BEGIN SELECT RAISE(ABORT, 'refused'); END"
        ))
        .execute(&writer)
        .await
        .unwrap();
        let rotation = |s: &Session| (s.id, 0, t(10), t(3610));

        assert!(commit(&writer, &[rotation(&good), rotation(&bad)]).await.is_err());
        assert_eq!(
            store.get_session(good.id).await.unwrap().unwrap().generation,
            0,
            "nothing of the group took effect"
        );

        // The next group begins a transaction of its own on the same connection.
        let outcomes = commit(&writer, &[rotation(&good)]).await.unwrap();
        assert!(matches!(&outcomes[..], [Rotation::Rotated(s)] if s.generation == 1), "{outcomes:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_group_with_several_rotations_of_one_session_rotates_each_session_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(SqliteStore::open(&dir.path().join("group.db"), false).await.unwrap());
        let mut ids = Vec::new();
        for _ in 0..16 {
            let session = session();
            store.create_session(&session).await.unwrap();
            ids.push(session.id);
        }
        // 4 racers per session, all at once: they share groups.
        let racers: Vec<_> = (0..64)
            .map(|i| {
                let (store, id) = (store.clone(), ids[i % 16]);
                tokio::spawn(async move { store.rotate(id, 0, t(10), t(3610)).await.unwrap() })
            })
            .collect();
        let mut rotated = HashMap::<SessionId, usize>::new();
        for racer in racers {
            match racer.await.unwrap() {
                Rotation::Rotated(s) => *rotated.entry(s.id).or_default() += 1,
                Rotation::Stale(Some(s)) => assert_eq!(s.generation, 1, "a stale racer sees the rotated session"),
                Rotation::Stale(None) => panic!("the session exists"),
            }
        }
        assert_eq!(rotated.len(), 16);
        assert!(rotated.values().all(|n| *n == 1), "{rotated:?}");
        for id in ids {
            assert_eq!(store.get_session(id).await.unwrap().unwrap().generation, 1);
        }
    }
}
