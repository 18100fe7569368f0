//! Certificates: who an agent is, what the gateway trusts, and the development PKI.
//!
//! - [`identity`]: the client identity read from a verified agent certificate.
//! - [`pem`]: certificate chains and keys read from PEM files.
//! - [`upstream`]: an upstream's trust roots and client certificate in Pingora's types.
//! - [`mint`]: leaves minted on the fly for intercepted `CONNECT` tunnels.
//! - [`dev`]: the development PKI behind `slapenir pki init` (step-ca's layout).
//!
//! A leaf: no module here imports another part of the gateway.

pub mod dev;
pub mod identity;
pub mod mint;
pub mod pem;
pub mod upstream;

pub use dev::*;
pub use identity::ClientIdentity;
