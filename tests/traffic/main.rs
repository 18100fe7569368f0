//! Agent traffic through a real gateway process: each module starts its own gateways and
//! upstreams on ephemeral ports and drives them with real clients (curl, git, boto3, the OpenAI
//! SDK, Python `websockets`, hyper, raw sockets). The adversarial suite, the AWS re-signing,
//! `CONNECT` interception, mTLS, content codings, least privilege, WebSockets and the
//! upstream side all live here; their helper scripts sit in the directory named after each.
#![allow(
    clippy::panic,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::type_complexity
)]

#[path = "../common/mod.rs"]
mod common;

mod adversarial;
mod aws;
mod aws_crosscheck;
mod connect;
mod decode_budget;
mod encodings;
mod gateway_e2e;
mod git;
mod least_privilege;
mod mtls;
mod upstream_side;
mod websocket;
