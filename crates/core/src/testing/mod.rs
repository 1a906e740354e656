//! Test doubles of the stores, for tests of the service and of everything above it (feature
//! `testing`, and core's own unit tests): [`memory`], every store in process memory, and
//! [`faults`], a wrapper that makes any store fail — or wait — on purpose. Both pass the store
//! contract suite (`tessera-store`'s tests). Not built into the product.

pub mod faults;
pub mod memory;
