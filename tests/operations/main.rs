//! What an operator runs and reads: live reload and secret rotation, the log filter, and the
//! observability outputs (Prometheus scraping, the Grafana dashboard's queries and the alert
//! rules, the status page in Chromium), each searched for real secrets.
#![allow(
    clippy::panic,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::type_complexity
)]

#[path = "../common/mod.rs"]
mod common;

mod log_scrub;
mod observability;
mod reload;
