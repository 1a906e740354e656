//! Store backends behind the `tessera-core` traits, one module per backend, each behind a
//! feature, and the contract suite they all pass.
//!
//! - `sqlite` (default): the embedded store, users and sessions in one file.

#[cfg(feature = "sqlite")]
pub mod sqlite;

#[cfg(feature = "contract")]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
pub mod contract;
