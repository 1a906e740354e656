//! End-to-end tests of `tessera serve`: each test starts the real binary on a random loopback
//! port with a fresh data directory and talks HTTP to it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod accounts;
mod cli;
mod client;
mod cookies;
mod errors;
mod feed;
mod forward_auth;
mod fresh;
mod fuzz;
mod gateway;
mod helpers;
mod instances;
mod limits;
mod oauth;
mod openapi;
mod operations;
mod outages;
mod races;
mod resource;
mod rotation;
mod sessions;
mod strict;
mod todos;
mod tokens;
