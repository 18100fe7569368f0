//! Why the gateway refused something: the closed list of reasons ([`Reason`]) that the
//! refusal metric, the audit log, the `X-Slapenir-Refusal` header and `docs/api.md` share, the
//! closed list of limits ([`Limit`]) that the limit metric, the audit log and the
//! `X-Slapenir-Limit` header share, and the answer a refused request gets ([`Refusal`]).

/// Declares [`Reason`] from one list: each variant and its label.
macro_rules! reasons {
    ($($variant:ident => $label:literal,)*) => {
        /// Why something was refused. Every reason is documented in `docs/api.md` and its metric
        /// series exists from the start (tests check both).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Reason {
            $($variant,)*
        }

        impl Reason {
            /// Every reason, in the order of the list.
            pub const ALL: &'static [Reason] = &[$(Reason::$variant,)*];

            /// The label: a metric label value, an audit field, a header value.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Reason::$variant => $label,)*
                }
            }
        }
    };
}

reasons! {
    NoRoute => "no_route",
    CredentialBoundElsewhere => "credential_bound_elsewhere",
    CredentialUnavailable => "credential_unavailable",
    ClientNotAllowed => "client_not_allowed",
    UpgradeNotAllowed => "upgrade_not_allowed",
    CompressedBodyRefused => "compressed_body_refused",
    UnsolicitedUpgrade => "unsolicited_upgrade",
    DecodeBudgetExceeded => "decode_budget_exceeded",
    MtlsFailure => "mtls_failure",
    BadRequest => "bad_request",
    ConnectUnsupported => "connect_unsupported",
    PlaceholderInHeaderName => "placeholder_in_header_name",
    CredentialNotForClient => "credential_not_for_client",
    CredentialRuleDenied => "credential_rule_denied",
    RealSecretFromAgent => "real_secret_from_agent",
    MisdirectedRequest => "misdirected_request",
    TunnelHandshakeFailed => "tunnel_handshake_failed",
    AwsSignatureInvalid => "aws_signature_invalid",
    AwsSignatureMalformed => "aws_signature_malformed",
    AwsSigningUnsupported => "aws_signing_unsupported",
    AwsSignedBodyTooLarge => "aws_signed_body_too_large",
    AwsSecretKeySent => "aws_secret_key_sent",
    AwsMisconfigured => "aws_misconfigured",
    WebsocketHandshakeRefused => "websocket_handshake_refused",
    WebsocketProtocolError => "websocket_protocol_error",
    Overloaded => "overloaded",
    RequestHeaderTooLarge => "request_header_too_large",
    RequestTimeout => "request_timeout",
    ClientLimit => "client_limit",
    UpstreamBusy => "upstream_busy",
    InvalidHeader => "invalid_header",
    Internal => "internal",
}

/// Declares [`Limit`] from one list: the per-client limits, then the gateway's own, each with
/// its label.
macro_rules! limits {
    (
        per_client: [$($client:ident => $client_label:literal,)*]
        gateway: [$($gateway:ident => $gateway_label:literal,)*]
    ) => {
        /// A limit a connection or a request hit: the names of `limits:` in the config. Every
        /// gateway-wide limit's metric series exists from the start (a test checks it).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Limit {
            $($client,)*
            $($gateway,)*
        }

        impl Limit {
            /// Every limit, per client first.
            pub const ALL: &'static [Limit] = &[$(Limit::$client,)* $(Limit::$gateway,)*];
            /// The limits each client identity has its own of (`limits.per_client`).
            pub const PER_CLIENT: &'static [Limit] = &[$(Limit::$client,)*];
            /// The gateway's own limits, shared by every client.
            pub const GATEWAY: &'static [Limit] = &[$(Limit::$gateway,)*];

            /// The label: the config key, a metric label value, an audit field, a header value.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Limit::$client => $client_label,)*
                    $(Limit::$gateway => $gateway_label,)*
                }
            }
        }
    };
}

limits! {
    per_client: [
    Connections => "connections",
    Tunnels => "tunnels",
    RequestsPerSecond => "requests_per_second",
    Streams => "streams",
    BodyBytesPerSecond => "body_bytes_per_second",
    ]
    gateway: [
    TotalConnections => "total_connections",
    FileDescriptors => "file_descriptors",
    HeaderBytes => "header_bytes",
    Headers => "headers",
    IdleTimeout => "idle_timeout",
    HeadTimeout => "head_timeout",
    BodyIdleTimeout => "body_idle_timeout",
    RequestTimeout => "request_timeout",
    SendTimeout => "send_timeout",
    ]
}

/// A closed list's label is how it prints and how it serializes (metrics, audit lines, headers).
macro_rules! labelled {
    ($($list:ident),*) => {$(
        impl std::fmt::Display for $list {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl serde::Serialize for $list {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }
    )*};
}

labelled!(Reason, Limit);

/// What a refused request is answered with. Messages name credentials, never values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub status: u16,
    /// Why: a metric label and an audit field.
    pub reason: Reason,
    pub message: String,
    /// The credential involved, if any.
    pub credential: Option<usize>,
}

impl Refusal {
    /// A refusal that involves no credential.
    pub fn new(status: u16, reason: Reason, message: impl Into<String>) -> Refusal {
        Refusal {
            status,
            reason,
            message: message.into(),
            credential: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_has_its_line_in_the_api_docs() {
        let docs = include_str!("../docs/api.md");
        for r in Reason::ALL {
            assert!(
                docs.contains(&format!("`{r}`")),
                "docs/api.md does not name `{r}`"
            );
        }
    }

    #[test]
    fn every_limit_has_its_row_in_the_api_docs() {
        let docs = include_str!("../docs/api.md");
        for l in Limit::ALL {
            assert!(
                docs.contains(&format!("| `{l}` |")),
                "docs/api.md has no row for limit `{l}`"
            );
        }
        assert_eq!(
            Limit::PER_CLIENT.len() + Limit::GATEWAY.len(),
            Limit::ALL.len()
        );
    }
}
