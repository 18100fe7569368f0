//! SLAPENIR: a Pingora gateway between sandboxed LLM agents and the APIs they call. The agent
//! holds only dummy credentials; the gateway swaps each dummy for its real secret only towards
//! the upstream that secret belongs to, and swaps real secrets in responses back to dummies.
//!
//! The modules form layers (`ARCHITECTURE.md`); each imports only from the layers below it.
//!
//! - [`server`]: the process — listeners, live reload, the admin endpoint and status page.
//! - [`connect`]: the agents' listener — HTTP/1 heads, `CONNECT` tunnels, listener TLS.
//! - [`proxy`]: the Pingora `ProxyHttp` implementation: thin hooks over plain steps.
//! - [`limits`]: per-client and gateway-wide limits.
//! - [`policy`], [`dns`]: a config compiled into routes and rewriters (and the values a reload
//!   retired); upstream addresses.
//! - [`config`]: the YAML file, validated into typed values with located errors.
//! - [`metrics`], [`audit`]: Prometheus metrics and the audit log.
//! - Leaves: [`rewrite`] (the streaming replacer, the codecs and encodings beside it),
//!   [`aws`] (Signature Version 4), [`pki`] (identities, certificates, the development PKI),
//!   [`secret`], [`stream`] (the agent's stream type), [`refusal`].
pub mod audit;
pub mod aws;
pub mod config;
pub mod connect;
pub mod dns;
pub mod limits;
pub mod metrics;
pub mod pki;
pub mod policy;
pub mod proxy;
pub mod refusal;
pub mod rewrite;
pub mod secret;
pub mod server;
pub mod stream;
