//! Store backends behind the `tessera-core` traits, one module per backend, each behind a
//! feature, and the contract suite they all pass.
//!
//! - `sqlite` (default): the embedded store, users and sessions in one file.
//! - `postgres`: users and sessions in PostgreSQL, for several server instances.
//! - `redis`: sessions in Valkey/Redis (users stay in SQL), for high refresh rates.
//!
//! [`open`] opens what a deployment's settings name, for every command alike.
//!
//! The in-memory and fault-injecting stores for tests are `tessera_core::testing` (feature
//! `testing`); they pass the same contract suite (`tests/memory.rs`, `tests/faulty.rs`).

pub mod open;
#[cfg(feature = "postgres")]
pub mod postgres;
#[cfg(feature = "postgres")]
mod postgres_watch;
#[cfg(feature = "redis")]
pub mod redis;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod sql;
#[cfg(feature = "sqlite")]
pub mod sqlite;
#[cfg(feature = "sqlite")]
mod sqlite_group;

#[cfg(feature = "contract")]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
pub mod contract;
