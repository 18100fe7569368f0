//! The policy: a validated [`Config`] compiled into what the request path needs — a route table,
//! the request rules of each upstream and one response rewriter. A request takes one
//! `Arc<Policy>` when it starts and keeps it to the end, so a reload never changes the rules under
//! it.
//!
//! Request rules of upstream `u`, for one client identity (needles are the dummies, then every
//! real value in each of its encoded forms). Each place in a request (a header, `Basic`
//! credentials, a query parameter, the path, the body by media type, WebSocket messages) gets the
//! rule set of the credentials swapped there ([`crate::config::SwapIn`]):
//! - a credential bound to `u` and swapped in this place, with a real value for this client:
//!   replace the dummy with it;
//! - the same, without a value: refuse (503 when it is unavailable, 403 when the credential has
//!   values per client and this client has none);
//! - a credential bound to `u` but not swapped in this place: keep the dummy, counted (the
//!   upstream sees only the dummy; an agent's chat history may well hold one);
//! - a credential bound elsewhere: refuse (403) — the exfiltration guard;
//! - a real value, in any encoding, sent by the agent: refuse (403), even towards its own
//!   upstream.
//!
//! Every rule set of an upstream has the same rules in the same order (rule `i < credentials`
//! is credential `i`'s dummy), so hits from different places add up by credential.
//!
//! Response rewriter (needles are real values): every loaded real value becomes its dummy,
//! whichever upstream answered; so do its encoded forms (base64 at each alignment,
//! percent-encoding, JSON escapes; see [`crate::rewrite::encoded`]), each into the same form of the
//! dummy.
//!
//! Retired real values (replaced or removed by a reload, see [`crate::policy::retired`]) stay in the
//! response rewriter, with the same encoded forms, until their grace ends.

mod compile;
pub mod retired;

use std::collections::HashMap;
use std::sync::Arc;

use zeroize::Zeroizing;

use crate::config::{AwsRole, Config, Credential, Route, RouteId, UpstreamId};
use crate::pki::upstream::UpstreamTls;
use crate::pki::ClientIdentity;
use crate::refusal::{Reason, Refusal};
use crate::rewrite::encoded;
use crate::rewrite::{Action, Hits, Refused, Rewriter, Rule, Shape};
use crate::secret::Secret;
use retired::Retired;

/// What a request rule does in one place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuleKind {
    /// Dummy of a credential bound to this upstream, swapped here, with its real value:
    /// replaced.
    Replace,
    /// Dummy of a credential bound to this upstream but not swapped in this place: kept.
    Misplaced,
    /// Dummy of a credential bound to this upstream whose real value is unavailable.
    Unavailable,
    /// Dummy of a credential with values per client, and this client has none.
    NotForClient,
    /// Dummy of a credential bound to another upstream.
    Foreign,
    /// The dummy secret access key of an `aws` credential: never sent anywhere (requests are
    /// signed with it, and the gateway signs them again with the real one).
    AwsSecret,
    /// A real value (or an encoding of one) sent by the agent.
    RealFromAgent,
}

/// An `aws` credential: its parts as indexes into [`Config::credentials`].
#[derive(Debug, Clone)]
pub struct AwsKey {
    /// The credential's name in the file.
    pub name: String,
    pub access_key_id: usize,
    pub secret_access_key: usize,
    pub session_token: Option<usize>,
}

/// The rules of one place in a request: every rule of the upstream, with this place's actions.
#[derive(Debug)]
pub struct RuleSet {
    pub rewriter: Arc<Rewriter>,
    /// For each rule index: the credential index and what the rule does here.
    pub kinds: Vec<(usize, RuleKind)>,
    /// Every replacement keeps the length (dummy and real are equally long), so a body keeps its
    /// `Content-Length`; always true for a set that replaces nothing.
    pub length_preserving: bool,
}

impl RuleSet {
    /// The credential and kind of rule `rule`.
    pub fn kind(&self, rule: usize) -> Option<(usize, RuleKind)> {
        self.kinds.get(rule).copied()
    }
}

/// Request-direction rules of one upstream for one client identity: the rule set of each place.
pub struct UpstreamRules {
    /// Distinct rule sets; `sets[0]` swaps nothing.
    sets: Vec<Arc<RuleSet>>,
    headers: HashMap<http::HeaderName, usize>,
    basic: HashMap<http::HeaderName, usize>,
    query: HashMap<String, usize>,
    path: usize,
    /// Media type patterns as written, each with the set of the credentials it selects.
    body: Vec<(String, usize)>,
    websocket: usize,
}

impl UpstreamRules {
    fn set(&self, i: usize) -> &Arc<RuleSet> {
        self.sets.get(i).unwrap_or(&self.sets[0])
    }

    /// The set that swaps nothing: header names, query names, anything not listed.
    pub fn nowhere(&self) -> &Arc<RuleSet> {
        &self.sets[0]
    }

    /// Rules for the values of header `name`.
    pub fn header(&self, name: &http::HeaderName) -> &Arc<RuleSet> {
        self.set(self.headers.get(name).copied().unwrap_or(0))
    }

    /// Rules for `Basic` credentials in header `name`, when any credential may be swapped there
    /// or the header is `Authorization` (whose `Basic` credentials are always checked).
    pub fn basic(&self, name: &http::HeaderName) -> Option<&Arc<RuleSet>> {
        match self.basic.get(name) {
            Some(&i) => Some(self.set(i)),
            None => (*name == http::header::AUTHORIZATION).then(|| self.nowhere()),
        }
    }

    /// The headers whose `Basic` credentials are checked.
    pub fn basic_headers(&self) -> impl Iterator<Item = &http::HeaderName> {
        std::iter::once(&http::header::AUTHORIZATION).chain(
            self.basic
                .keys()
                .filter(|n| **n != http::header::AUTHORIZATION),
        )
    }

    /// Rules for the value of query parameter `name` (as written).
    pub fn query(&self, name: &[u8]) -> &Arc<RuleSet> {
        let i = std::str::from_utf8(name)
            .ok()
            .and_then(|n| self.query.get(n))
            .copied()
            .unwrap_or(0);
        self.set(i)
    }

    /// Rules for the path.
    pub fn path(&self) -> &Arc<RuleSet> {
        self.set(self.path)
    }

    /// Rules for a body with this `Content-Type` (`None` without one, which only `*/*`
    /// matches): the most specific matching pattern (`type/subtype`, then `type/*`, then
    /// `*/*`; media types compare without case and parameters) selects exactly the credentials
    /// whose lists match. Allocates nothing.
    pub fn body(&self, content_type: Option<&[u8]>) -> &Arc<RuleSet> {
        if self.body.is_empty() {
            return self.nowhere();
        }
        let media_type = content_type.map(|v| {
            let end = v.iter().position(|&b| b == b';').unwrap_or(v.len());
            v[..end].trim_ascii()
        });
        let find = |matches: &dyn Fn(&[u8]) -> bool| {
            self.body
                .iter()
                .find(|(p, _)| matches(p.as_bytes()))
                .map(|(_, i)| *i)
        };
        let specific = media_type.filter(|mt| !mt.is_empty()).and_then(|mt| {
            let ty = mt.split(|&b| b == b'/').next().unwrap_or_default();
            find(&|p| p.eq_ignore_ascii_case(mt)).or_else(|| {
                find(&|p| {
                    p.strip_suffix(b"/*")
                        .is_some_and(|t| t != b"*" && t.eq_ignore_ascii_case(ty))
                })
            })
        });
        self.set(specific.or_else(|| find(&|p| p == b"*/*")).unwrap_or(0))
    }

    /// Rules for WebSocket messages from the agent.
    pub fn websocket(&self) -> &Arc<RuleSet> {
        self.set(self.websocket)
    }
}

/// A compiled configuration.
pub struct Policy {
    pub config: Config,
    /// Per upstream, per client slot (see [`Policy::client_slot`]).
    upstream_rules: Vec<Vec<UpstreamRules>>,
    /// The client identities with values of their own (slot `i + 1` is `clients[i]`).
    pub clients: Vec<String>,
    pub response: Arc<Rewriter>,
    /// For each response rule index: the credential index. A retired value whose credential
    /// is no longer configured points past `config.credentials`, at
    /// `retired[index - config.credentials.len()]`; see [`Policy::response_credential_name`].
    pub response_rules: Vec<usize>,
    pub response_length_preserving: bool,
    /// The `aws` credentials, with their parts.
    pub aws_keys: Vec<AwsKey>,
    /// Real values retired by reloads and still scrubbed from responses.
    pub retired: Vec<Retired>,
    /// Per upstream: trust roots and client certificate, in Pingora's types, parsed once.
    pub upstream_tls: Vec<UpstreamTls>,
    /// Each route's name in metrics and logs: `host` + path prefix (`host:port` + prefix when
    /// the route names a port), built once.
    route_labels: Vec<String>,
    /// Host → route indexes, longest path prefix first.
    routes_by_host: HashMap<String, Vec<usize>>,
}

impl Policy {
    /// Compiles a validated configuration.
    ///
    /// # Errors
    /// Conflicts between credentials that only show when the rewriters are built (for example
    /// two credentials with the same real value), as messages naming the credentials.
    pub fn compile(config: Config) -> Result<Policy, Vec<String>> {
        Self::compile_with_retired(config, Vec::new())
    }

    /// Every real value this policy's configuration holds: (credential name, the dummy it is
    /// scrubbed into, value). Retired values are not included (they are in `retired`).
    pub fn real_values(&self) -> impl Iterator<Item = (&str, &[u8], &Arc<Secret>)> {
        real_values(&self.config)
    }

    /// The credential name of response rule `rule`, for metrics, the status page and the audit
    /// line; a retired value is named after the credential it belonged to.
    pub fn response_credential_name(&self, rule: usize) -> Option<&str> {
        let c = *self.response_rules.get(rule)?;
        match self.config.credentials.get(c) {
            Some(cred) => Some(cred.name.as_str()),
            None => self
                .retired
                .get(c.checked_sub(self.config.credentials.len())?)
                .map(|r| r.credential.as_str()),
        }
    }

    /// The `aws` credential (index into `aws_keys`) bound to `upstream` whose dummy access key
    /// id is `key_id`.
    pub fn aws_key_for(&self, upstream: UpstreamId, key_id: &str) -> Option<usize> {
        self.aws_keys.iter().position(|k| {
            self.aws_key_id_if_bound(k, upstream)
                .is_some_and(|c| c.dummy == key_id.as_bytes())
        })
    }

    /// Whether any `aws` credential is bound to `upstream`.
    pub fn has_aws_key(&self, upstream: UpstreamId) -> bool {
        self.aws_keys
            .iter()
            .any(|k| self.aws_key_id_if_bound(k, upstream).is_some())
    }

    /// The access key id part of `key`, when the key is bound to `upstream`.
    fn aws_key_id_if_bound(&self, key: &AwsKey, upstream: UpstreamId) -> Option<&Credential> {
        self.config
            .credentials
            .get(key.access_key_id)
            .filter(|c| c.upstreams.contains(&upstream))
    }

    /// The route for a request to `host` (lower case), `port` (when the request names one) and
    /// `path`: the longest matching path prefix wins.
    pub fn route(&self, host: &str, port: Option<u16>, path: &[u8]) -> Option<(RouteId, &Route)> {
        self.routes_by_host.get(host)?.iter().find_map(|&i| {
            let r = &self.config.routes[i];
            let port_ok = r.port.is_none() || r.port == port;
            (port_ok && path.starts_with(r.path_prefix.as_bytes())).then_some((RouteId(i), r))
        })
    }

    /// The label of a route (see `route_labels`).
    pub fn route_label(&self, id: RouteId) -> Option<&str> {
        self.route_labels.get(id.0).map(String::as_str)
    }

    /// Whether a `CONNECT host:port` may open a tunnel: some route names `host` and either names
    /// `port` or names no port and `port` is 443.
    pub fn has_connect_route(&self, host: &str, port: u16) -> bool {
        self.routes_by_host.get(host).is_some_and(|list| {
            list.iter().any(|&i| {
                let r = &self.config.routes[i];
                r.port.map_or(port == 443, |p| p == port)
            })
        })
    }

    /// The client slot of an identity: `1 + i` for the first of [`Policy::clients`] the
    /// identity holds (its common name or a SAN), `0` for any other or none.
    pub fn client_slot(&self, identity: Option<&ClientIdentity>) -> usize {
        let Some(id) = identity else { return 0 };
        self.clients
            .iter()
            .position(|c| id.is_any_of(std::slice::from_ref(c)))
            .map_or(0, |i| i + 1)
    }

    /// The client identity of slot `slot`, if any.
    pub fn client_name(&self, slot: usize) -> Option<&str> {
        slot.checked_sub(1)
            .and_then(|i| self.clients.get(i))
            .map(String::as_str)
    }

    /// The request rules of `upstream` for client slot `slot`.
    pub fn request_rules(&self, upstream: UpstreamId, slot: usize) -> Option<&UpstreamRules> {
        let per_slot = self.upstream_rules.get(upstream.0)?;
        per_slot.get(slot).or_else(|| per_slot.first())
    }

    /// The credentials bound to `upstream` whose `allow:` rules do not admit this request: their
    /// dummies must not be swapped in it. `path` is the path as routed (see
    /// `proxy::request::match_path`), `query` the raw query. Allocates only when one is denied.
    pub fn denied_credentials(
        &self,
        upstream: UpstreamId,
        method: &str,
        path: &[u8],
        query: &[u8],
    ) -> Vec<usize> {
        self.config
            .credentials
            .iter()
            .enumerate()
            .filter(|(_, c)| c.upstreams.contains(&upstream))
            .filter(|(_, c)| {
                c.allow
                    .as_ref()
                    .is_some_and(|rules| !rules.iter().any(|r| r.matches(method, path, query)))
            })
            .map(|(i, _)| i)
            .collect()
    }

    /// The refusal for the first credential of `denied` that `hits` swapped, if any (hits of
    /// request rules count by credential: see the module documentation).
    pub fn check_allowed(&self, denied: &[usize], hits: &Hits) -> Result<(), Refusal> {
        if denied.is_empty() {
            return Ok(());
        }
        match hits.iter().find(|(rule, _)| denied.contains(rule)) {
            None => Ok(()),
            Some((c, _)) => {
                let name = self
                    .config
                    .credentials
                    .get(c)
                    .map_or("?", |c| c.name.as_str());
                Err(Refusal {
                    status: 403,
                    reason: Reason::CredentialRuleDenied,
                    message: format!(
                        "credential `{name}` may not be used for this request: its method, path or query parameters are outside the credential's `allow` rules (credentials.{name}.allow)"
                    ),
                    credential: Some(c),
                })
            }
        }
    }

    /// The credential of a request rule's hit: rule `i` of every request rule set is credential
    /// `i`'s dummy (hits of the other rules, refusals, are never counted).
    pub fn hit_credential(&self, rule: usize) -> Option<&Credential> {
        self.config.credentials.get(rule)
    }

    /// Turns a refused request rule of `set` into the answer for the agent; `upstream` is the
    /// request's, named in the message when known.
    pub fn request_refusal(
        &self,
        upstream: Option<UpstreamId>,
        set: &RuleSet,
        refused: &Refused,
    ) -> Refusal {
        let (credential, kind) = set
            .kind(refused.rule)
            .map_or((None, RuleKind::Foreign), |(c, kind)| (Some(c), kind));
        let up = match upstream.and_then(|u| self.config.upstream(u)) {
            Some(u) => format!("upstream `{}`", u.name),
            None => "this upstream".to_owned(),
        };
        let name = &refused.name;
        let (status, reason, message) = match kind {
            // The agent learns which credential, never its source: a variable name or path
            // is the operator's business (and may be a key pasted in the wrong place).
            RuleKind::Unavailable => (
                503,
                Reason::CredentialUnavailable,
                format!("credential `{name}` is unavailable on this gateway"),
            ),
            RuleKind::NotForClient => (
                403,
                Reason::CredentialNotForClient,
                format!("credential `{name}` has no value for this client; it is configured per client identity"),
            ),
            RuleKind::AwsSecret => (
                403,
                Reason::AwsSecretKeySent,
                format!(
                    "credential `{name}` is an AWS secret access key: it is never sent; requests are signed with it"
                ),
            ),
            RuleKind::RealFromAgent => (
                403,
                Reason::RealSecretFromAgent,
                format!(
                    "the request holds the real value of credential `{name}`; agents hold only dummies, and a real value is never forwarded"
                ),
            ),
            RuleKind::Foreign | RuleKind::Replace | RuleKind::Misplaced => (
                403,
                Reason::CredentialBoundElsewhere,
                format!(
                    "credential `{name}` may not be sent to {up}; it is bound to other upstreams"
                ),
            ),
        };
        Refusal {
            status,
            reason,
            message,
            credential,
        }
    }
}

/// Every real value `config` holds, shared and per client: (credential name, its dummy,
/// value). The one place that enumerates them, so that retiring values (see
/// [`crate::policy::retired`]) misses none.
pub fn real_values(config: &Config) -> impl Iterator<Item = (&str, &[u8], &Arc<Secret>)> {
    config.credentials.iter().flat_map(|c| {
        c.values.iter().filter_map(move |v| {
            let real = v.real.as_ref().ok()?;
            Some((c.name.as_str(), c.dummy.as_slice(), real))
        })
    })
}
