//! Store backends behind the `tessera-core` traits, one module per backend, each behind a
//! feature, and the contract suite they all pass.
//!
//! - `sqlite` (default): the embedded store, users and sessions in one file.
//! - `postgres`: users and sessions in PostgreSQL, for several server instances.
//! - `redis`: sessions in Valkey/Redis (users stay in SQL), for high refresh rates.
//!
//! Always built, without a feature: [`memory`], everything in process memory, for tests and
//! for trying tessera without files; and [`faults`], a wrapper that makes any store fail on
//! purpose, for testing how callers survive an unavailable store.

pub mod faults;
pub mod memory;
#[cfg(feature = "postgres")]
pub mod postgres;
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
