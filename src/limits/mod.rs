//! Limits at run time: who a client is for its limits ([`client_key`]), the closed list of limits
//! that metrics and audit lines share ([`Limit`], kept with the refusal reasons), and the metric label a client is
//! counted under ([`client_label`]). The numbers come from `crate::config::limits`; per-client
//! enforcement (what each client holds now, its buckets) is in [`client`].

pub mod client;
pub mod overload;

use std::borrow::Cow;
use std::net::IpAddr;

use crate::config::limits::Limits;
use crate::pki::ClientIdentity;

pub use crate::refusal::Limit;

/// The name a client's limits are kept under: the first of its certificate's names (common name,
/// then SANs) that `limits.clients` names; else its common name or first SAN; else, on a
/// listener without client certificates, its source IP address; else `unknown`. Borrowed when it
/// is a certificate name (no allocation per request).
pub fn client_key<'a>(
    identity: Option<&'a ClientIdentity>,
    peer: Option<IpAddr>,
    limits: &Limits,
) -> Cow<'a, str> {
    if let Some(id) = identity {
        let named = id
            .common_name
            .iter()
            .chain(id.sans.iter())
            .find(|n| limits.clients.contains_key(n.as_str()));
        if let Some(n) = named.or(id.common_name.as_ref()).or(id.sans.first()) {
            return Cow::Borrowed(n.as_str());
        }
    }
    Cow::Owned(match peer {
        Some(ip) => ip.to_canonical().to_string(),
        None => "unknown".to_owned(),
    })
}

/// The `client` label a client is counted under: its key when the config names it (in
/// `limits.clients` or in a credential's `clients`), else `other`, so that a flood of source
/// addresses or certificate names cannot grow the label set.
pub fn client_label<'a>(key: &'a str, limits: &Limits, named: &[String]) -> &'a str {
    if limits.clients.contains_key(key) || named.iter().any(|n| n == key) {
        key
    } else {
        "other"
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::config::limits::ClientLimits;

    fn id(cn: Option<&str>, sans: &[&str]) -> ClientIdentity {
        ClientIdentity {
            common_name: cn.map(str::to_owned),
            sans: sans.iter().map(|s| (*s).to_owned()).collect(),
        }
    }

    #[test]
    fn a_client_is_known_by_its_configured_name_first() {
        let mut limits = Limits::default_limits();
        limits.clients.insert("batch".into(), ClientLimits::DEFAULT);
        let ip: IpAddr = "::ffff:10.0.0.7".parse().unwrap();
        let cases: &[(&str, Option<ClientIdentity>, &str)] = &[
            (
                "common name",
                Some(id(Some("agent-1"), &["batch-x"])),
                "agent-1",
            ),
            (
                "a SAN named in clients wins",
                Some(id(Some("agent-1"), &["batch"])),
                "batch",
            ),
            (
                "first SAN without a CN",
                Some(id(None, &["a.example", "b"])),
                "a.example",
            ),
            ("no certificate: the address", None, "10.0.0.7"),
            (
                "an empty identity: the address",
                Some(id(None, &[])),
                "10.0.0.7",
            ),
        ];
        for (name, identity, want) in cases {
            assert_eq!(
                client_key(identity.as_ref(), Some(ip), &limits),
                *want,
                "{name}"
            );
        }
        assert_eq!(client_key(None, None, &limits), "unknown");
    }

    #[test]
    fn labels_name_only_configured_clients() {
        let mut limits = Limits::default_limits();
        limits.clients.insert("batch".into(), ClientLimits::DEFAULT);
        let named = vec!["agent-1".to_owned()];
        assert_eq!(client_label("batch", &limits, &named), "batch");
        assert_eq!(client_label("agent-1", &limits, &named), "agent-1");
        assert_eq!(client_label("10.0.0.7", &limits, &named), "other");
    }
}
