//! Shared helpers for end-to-end tests: a real gateway process, a test PKI, real upstream
//! servers and the programs the tests drive.
//!
//! Each test binary (`tests/<group>/main.rs`) includes this module with
//! `#[path = "../common/mod.rs"] mod common;` and uses only part of it, so unused-item warnings
//! are silenced here for the whole module.
#![allow(dead_code, clippy::panic, clippy::unwrap_used, clippy::expect_used)]

pub mod child;
pub mod client;
pub mod decode;
pub mod gateway;
pub mod pki;
pub mod tools;
pub mod upstream;
pub mod wait;
