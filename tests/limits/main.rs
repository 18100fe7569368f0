//! The limits, end to end: per client identity (`client_limits`, driven by `drive.py` beside
//! this file) and gateway-wide overload protection (`overload`). Both measure how the gateway
//! behaves at a bound, so they share a binary and no other test's load.
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

#[path = "../common/mod.rs"]
mod common;

mod client_limits;
mod overload;
