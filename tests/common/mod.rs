//! Shared helpers for end-to-end tests: a real gateway process, a test PKI and real upstream
//! servers.
//!
//! Each integration test file includes this module with `mod common;` and uses only part of
//! it, so unused-item warnings are silenced here for the whole module.
#![allow(dead_code, clippy::panic, clippy::unwrap_used, clippy::expect_used)]

pub mod child;
pub mod client;
pub mod decode;
pub mod gateway;
pub mod pki;
pub mod upstream;
pub mod wait;
