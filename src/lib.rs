//! SLAPENIR: a Pingora gateway between sandboxed LLM agents and the APIs they call. The agent
//! holds only dummy credentials; the gateway swaps each dummy for its real secret only towards
//! the upstream that secret belongs to, and swaps real secrets in responses back to dummies.
//!
//! Modules:
//! - [`aws`]: AWS Signature Version 4, verified and signed again.
//! - [`config`]: the YAML file, validated into typed values with located errors.
//! - [`secret`]: the `Secret` type and its sources.
//! - [`rewrite`]: the streaming replacer (no Pingora types).
//! - [`decode`]: push-style decompression of response bodies.
//! - [`encoded`]: credentials inside encodings (Basic auth, base64, percent, JSON escapes).
//! - [`policy`]: a config compiled into routes and rewriters.
//! - [`retired`]: real values a reload replaced or removed, kept scrubbed for a grace.
//! - [`proxy`]: the Pingora `ProxyHttp` implementation.
//! - [`server`]: listeners, the admin endpoint and the process.
//! - [`websocket`]: WebSocket frames scanned both ways on upgraded connections (no Pingora types).
//! - [`log_scrub`]: the process log, with real values filtered out of third-party records.
pub mod admin;
pub mod audit;
pub mod aws;
pub mod config;
pub mod connect;
pub mod decode;
pub mod dns;
pub mod encoded;
pub mod limits;
pub mod log_scrub;
pub mod metrics;
pub mod overload;
pub mod pki;
pub mod plan;
pub mod policy;
pub mod proxy;
pub mod reload;
pub mod retired;
pub mod rewrite;
pub mod secret;
pub mod server;
pub mod status;
pub mod tls;
pub mod websocket;
