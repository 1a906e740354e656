//! Fault injection for tests: a store wrapper whose operations fail on purpose.
//!
//! [`FaultyStore`] wraps any store (an `Arc<dyn SessionStore>`, an `Arc<dyn UserStore>`, an
//! `Arc<dyn ClientStore>`, or a concrete store such as `Arc<MemoryStore>` that implements all
//! three) and implements the same traits by delegating every call to it. Its [`Faults`] handle,
//! cloneable and shareable between several wrappers, tells it which [operations](Op) to fail with
//! [`StoreError::Unavailable`] — the error a real backend gives when it cannot be reached, the one
//! callers are expected to survive:
//!
//! - [`Faults::fail_next`]`(op, n)`: the next `n` calls of `op` fail without reaching the inner
//!   store (nothing is written);
//! - [`Faults::fail_always`]`(op)`: every call of `op` fails that way until healed;
//! - [`Faults::fail_next_after_commit`]`(op, n)` and [`Faults::fail_always_after_commit`]`(op)`:
//!   the inner call runs and commits, then the wrapper throws its answer away and returns
//!   `Unavailable` — a connection dropped after the write, so the caller cannot tell whether it
//!   happened (if the inner call itself fails, its own error is returned);
//! - [`Faults::break_always`]`(op)`: every call of `op` fails with [`StoreError::Other`] (what a
//!   backend gives for corrupt data or a bug, answered as an internal error) until healed;
//! - [`Faults::heal`] clears every fault, [`Faults::heal_op`] the fault of one operation;
//! - [`Faults::hold_next`]`(op)`: the next call of `op` waits, before it reaches the inner store,
//!   until the returned [`Hold`] is released (or dropped), and the test can wait until a call got
//!   there ([`Hold::reached`]): interleavings of concurrent operations, forced exactly.
//!
//! Each operation has at most one fault at a time: setting one replaces the previous. A call
//! takes its decision when it starts, so a call already running is not affected by a later
//! change. [`Faults::calls`] and [`Faults::injected`] count what happened, and
//! [`InjectedFault::of`] tells an injected error from a real one.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! use std::sync::Arc;
//! use tessera_core::store::{SessionStore, StoreError};
//! use tessera_core::{SessionId, Timestamp};
//! use tessera_core::testing::faults::{FaultyStore, Op};
//! use tessera_core::testing::memory::MemoryStore;
//!
//! let inner: Arc<dyn SessionStore> = Arc::new(MemoryStore::new());
//! let store = FaultyStore::new(inner);
//! let faults = store.faults();
//! faults.fail_next(Op::EndSession, 1);
//! let err = store.end_session(SessionId::generate(), Timestamp::from_millis(0)).await.unwrap_err();
//! assert!(matches!(err, StoreError::Unavailable(_)));
//! assert!(!store.end_session(SessionId::generate(), Timestamp::from_millis(0)).await.unwrap());
//! # }
//! ```
//!
//! The faults' lock is a [`std::sync::Mutex`] taken only to decide, never across an `.await`.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

#[cfg(doc)]
use crate::store::{ClientStore, SessionStore, UserStore};
use crate::store::{StoreError, StoreResult};
use tokio::sync::oneshot;

/// Defines [`Op`], [`Op::ALL`] and [`Op::name`] from one list, so that an operation is named
/// once (its delegation in the trait impls below is the only other place).
macro_rules! operations {
    ($($(#[$doc:meta])* $op:ident => $name:literal,)+) => {
        /// One store operation: a method of [`UserStore`], [`SessionStore`] or [`ClientStore`].
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Op {
            $($(#[$doc])* $op,)+
        }

        impl Op {
            /// Every operation, users', sessions' then clients'.
            pub const ALL: [Op; [$($name),+].len()] = [$(Op::$op),+];

            /// The trait method's name, e.g. `end_session` (`UserStore::ping` /
            /// `SessionStore::ping` for the two pings).
            pub const fn name(self) -> &'static str {
                match self {
                    $(Op::$op => $name,)+
                }
            }
        }
    };
}

operations! {
    /// [`UserStore::create_user`]
    CreateUser => "create_user",
    /// [`UserStore::find_user_by_email`]
    FindUserByEmail => "find_user_by_email",
    /// [`UserStore::find_user_by_username`]
    FindUserByUsername => "find_user_by_username",
    /// [`UserStore::find_user`]
    FindUser => "find_user",
    /// [`UserStore::update_user`]
    UpdateUser => "update_user",
    /// [`UserStore::delete_user`]
    DeleteUser => "delete_user",
    /// [`UserStore::guests`]
    Guests => "guests",
    /// [`UserStore::ping`]
    UserPing => "UserStore::ping",
    /// [`SessionStore::create_session`]
    CreateSession => "create_session",
    /// [`SessionStore::get_session`]
    GetSession => "get_session",
    /// [`SessionStore::rotate`]
    Rotate => "rotate",
    /// [`SessionStore::end_session`]
    EndSession => "end_session",
    /// [`SessionStore::end_user_sessions`]
    EndUserSessions => "end_user_sessions",
    /// [`SessionStore::list_sessions`]
    ListSessions => "list_sessions",
    /// [`SessionStore::ended_after`]
    EndedAfter => "ended_after",
    /// [`SessionStore::purge`]
    Purge => "purge",
    /// [`SessionStore::ping`]
    SessionPing => "SessionStore::ping",
    /// [`ClientStore::create_client`]
    CreateClient => "create_client",
    /// [`ClientStore::find_client`]
    FindClient => "find_client",
    /// [`ClientStore::list_clients`]
    ListClients => "list_clients",
    /// [`ClientStore::delete_client`]
    DeleteClient => "delete_client",
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The cause inside the [`StoreError::Unavailable`] a [`FaultyStore`] returns on purpose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InjectedFault {
    pub op: Op,
    /// Whether the inner store ran the call (and committed whatever it writes) first.
    pub after_commit: bool,
}

impl InjectedFault {
    /// The injected fault `err` carries, if it is one (and not a real failure).
    pub fn of(err: &StoreError) -> Option<&InjectedFault> {
        match err {
            StoreError::Unavailable(cause) | StoreError::Other(cause) => cause.downcast_ref(),
            StoreError::Conflict(_) => None,
        }
    }
}

impl fmt::Display for InjectedFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.after_commit {
            write!(f, "injected fault: {} failed after the inner store committed", self.op)
        } else {
            write!(f, "injected fault: {} failed before reaching the inner store", self.op)
        }
    }
}

impl std::error::Error for InjectedFault {}

/// When a fault strikes: instead of the call, or after it committed; or how (broken).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Strike {
    Before,
    AfterCommit,
    /// Instead of the call, with [`StoreError::Other`].
    Broken,
}

#[derive(Debug, Clone, Copy)]
struct Fault {
    strike: Strike,
    /// How many more calls it affects; `None`: all of them.
    remaining: Option<u64>,
}

#[derive(Debug, Default)]
struct State {
    faults: HashMap<Op, Fault>,
    holds: HashMap<Op, HoldSlot>,
    calls: HashMap<Op, u64>,
    injected: HashMap<Op, u64>,
}

/// The store's side of a [`Hold`].
#[derive(Debug)]
struct HoldSlot {
    reached: oneshot::Sender<()>,
    release: oneshot::Receiver<()>,
}

/// A call of one operation held before it reaches the inner store (see [`Faults::hold_next`]).
#[derive(Debug)]
pub struct Hold {
    reached: Option<oneshot::Receiver<()>>,
    release: oneshot::Sender<()>,
}

impl Hold {
    /// Resolves once a call is waiting at the hold.
    pub async fn reached(&mut self) {
        if let Some(reached) = self.reached.take() {
            let _ = reached.await;
        }
    }

    /// Lets the held call go on (dropping the hold does too).
    pub fn release(self) {
        let _ = self.release.send(());
    }
}

/// The control handle of one or more [`FaultyStore`]s: clones share the same faults.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    state: Arc<Mutex<State>>,
}

impl Faults {
    /// A handle with no faults set.
    pub fn new() -> Self {
        Self::default()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Nothing panics while the lock is held; the state stays consistent.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn set(&self, op: Op, strike: Strike, remaining: Option<u64>) {
        let mut state = self.state();
        if remaining == Some(0) {
            state.faults.remove(&op);
        } else {
            state.faults.insert(op, Fault { strike, remaining });
        }
    }

    /// The next `n` calls of `op` fail with `Unavailable` without reaching the inner store
    /// (`n = 0` clears `op`'s fault).
    pub fn fail_next(&self, op: Op, n: u64) {
        self.set(op, Strike::Before, Some(n));
    }

    /// Every call of `op` fails with `Unavailable` without reaching the inner store, until
    /// [`heal`](Self::heal) or [`heal_op`](Self::heal_op).
    pub fn fail_always(&self, op: Op) {
        self.set(op, Strike::Before, None);
    }

    /// The next `n` calls of `op` run on the inner store, then return `Unavailable` instead of
    /// its answer: the write happened, the caller is told it may not have.
    pub fn fail_next_after_commit(&self, op: Op, n: u64) {
        self.set(op, Strike::AfterCommit, Some(n));
    }

    /// Every call of `op` runs on the inner store, then returns `Unavailable`, until healed.
    pub fn fail_always_after_commit(&self, op: Op) {
        self.set(op, Strike::AfterCommit, None);
    }

    /// Every call of `op` fails with [`StoreError::Other`] without reaching the inner store (a
    /// broken backend: corrupt data, a bug), until healed.
    pub fn break_always(&self, op: Op) {
        self.set(op, Strike::Broken, None);
    }

    /// The next call of `op` waits before reaching the inner store until the hold is released;
    /// its fault, if any, is decided after that. Replaces an earlier hold of `op` not reached yet.
    pub fn hold_next(&self, op: Op) -> Hold {
        let (reached_tx, reached_rx) = oneshot::channel();
        let (release_tx, release_rx) = oneshot::channel();
        self.state().holds.insert(op, HoldSlot { reached: reached_tx, release: release_rx });
        Hold { reached: Some(reached_rx), release: release_tx }
    }

    /// Clears every fault (the counters stay).
    pub fn heal(&self) {
        self.state().faults.clear();
    }

    /// Clears the fault of `op`, if any.
    pub fn heal_op(&self, op: Op) {
        self.state().faults.remove(&op);
    }

    /// Whether any fault is set.
    pub fn is_healthy(&self) -> bool {
        self.state().faults.is_empty()
    }

    /// How many calls of `op` the wrappers received, failed ones included.
    pub fn calls(&self, op: Op) -> u64 {
        self.state().calls.get(&op).copied().unwrap_or(0)
    }

    /// How many calls of `op` failed on purpose.
    pub fn injected(&self, op: Op) -> u64 {
        self.state().injected.get(&op).copied().unwrap_or(0)
    }

    /// Counts a call of `op` and decides its fate, using up one of a `fail_next*` budget.
    fn on_call(&self, op: Op) -> Option<Strike> {
        let mut state = self.state();
        *state.calls.entry(op).or_default() += 1;
        let fault = state.faults.get_mut(&op)?;
        let strike = fault.strike;
        if let Some(remaining) = &mut fault.remaining {
            *remaining -= 1;
            if *remaining == 0 {
                state.faults.remove(&op);
            }
        }
        Some(strike)
    }

    fn count_injected(&self, op: Op) {
        *self.state().injected.entry(op).or_default() += 1;
    }

    /// Runs `call` under `op`'s fault, if any.
    async fn run<T>(&self, op: Op, call: impl Future<Output = StoreResult<T>>) -> StoreResult<T> {
        let hold = self.state().holds.remove(&op);
        if let Some(HoldSlot { reached, release }) = hold {
            let _ = reached.send(());
            let _ = release.await;
        }
        match self.on_call(op) {
            None => call.await,
            Some(Strike::Before) => {
                self.count_injected(op);
                Err(StoreError::unavailable(InjectedFault { op, after_commit: false }))
            }
            Some(Strike::AfterCommit) => {
                call.await?;
                self.count_injected(op);
                Err(StoreError::unavailable(InjectedFault { op, after_commit: true }))
            }
            Some(Strike::Broken) => {
                self.count_injected(op);
                Err(StoreError::other(InjectedFault { op, after_commit: false }))
            }
        }
    }
}

mod store;

pub use store::FaultyStore;

#[cfg(test)]
mod tests;
