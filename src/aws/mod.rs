//! AWS credentials: Signature Version 4 ([`sigv4`]) and the request step that checks an agent's
//! signature with the dummy secret and signs the request again with the real one
//! ([`crate::proxy::aws`]).
pub mod sigv4;
