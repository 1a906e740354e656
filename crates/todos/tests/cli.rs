//! The `tessera-todos` binary as an operator starts it. (Its behaviour against a real tessera is
//! tested end to end in `crates/tessera/tests/api/resource.rs`; this test also makes
//! `cargo test` build the binary those tests run.)

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;
use std::time::{Duration, Instant};

fn todos() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tessera-todos"))
}

#[test]
fn the_issuer_is_required() {
    let out = todos().output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--issuer"));
}

#[test]
fn an_unreachable_issuer_fails_the_start_with_a_reason_after_the_startup_timeout() {
    // Nothing listens on port 1 of loopback.
    let started = Instant::now();
    let out = todos()
        .args(["--listen", "127.0.0.1:0", "--issuer", "http://127.0.0.1:1", "--startup-timeout", "1s"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cannot trust tokens of http://127.0.0.1:1"), "{stderr}");
    assert!(started.elapsed() < Duration::from_secs(10));
}
