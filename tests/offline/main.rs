//! Tests that serve no traffic through a gateway: the credential rewriter in-process (named
//! cases and properties), the CLI's `check` and `pki init` through the real binary, and the
//! self-test of the test upstreams in `common` that the other binaries rely on.
#![allow(
    clippy::panic,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::type_complexity
)]

#[path = "../common/mod.rs"]
mod common;

mod config_check;
mod pki_init;
mod rewrite_cases;
mod rewrite_properties;
mod upstream_selftest;
