//! The policy: a validated [`Config`] compiled into what the request path needs — a route table,
//! one request rewriter per upstream and one response rewriter. A request takes one `Arc<Policy>`
//! when it starts and keeps it to the end, so a reload never changes the rules under it.
//!
//! Request rewriter of upstream `u` (needles are dummies):
//! - a credential bound to `u` with its real value loaded: replace the dummy with the real value;
//! - a credential bound to `u` whose real value is unavailable: refuse (503, naming the
//!   credential, never its source);
//! - a credential bound elsewhere: refuse (403) — the agent is trying to send a secret where it
//!   does not belong. This is the exfiltration guard.
//!
//! Response rewriter (needles are real values): every loaded real value becomes its dummy,
//! whichever upstream answered; so do its encoded forms (base64 at each alignment,
//! percent-encoding, JSON escapes; see [`crate::encoded`]), each into the same form of the
//! dummy.
//!
//! Retired real values (replaced or removed by a reload, see [`crate::retired`]) stay in the
//! response rewriter, with the same encoded forms, until their grace ends.

use std::collections::HashMap;
use std::sync::Arc;

use zeroize::Zeroizing;

use crate::config::{AwsRole, Config, Credential, Route};
use crate::encoded;
use crate::proxy::peer::UpstreamTls;
use crate::retired::Retired;
use crate::rewrite::{Action, Refused, Rewriter, Rule, Shape};
use crate::secret::Secret;

/// Why a request rule refuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuleKind {
    /// Dummy of a credential bound to this upstream with its real value: replaced.
    Replace,
    /// Dummy of a credential bound to this upstream whose real value is unavailable.
    Unavailable,
    /// Dummy of a credential bound to another upstream.
    Foreign,
    /// The dummy secret access key of an `aws` credential: never sent anywhere (requests are
    /// signed with it, and the gateway signs them again with the real one).
    AwsSecret,
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

/// What a refused request is answered with. Messages name credentials, never values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub status: u16,
    /// A short, stable reason used as a metric label and in the audit log.
    pub reason: &'static str,
    pub message: String,
    /// The credential involved, if any.
    pub credential: Option<usize>,
}

impl Refusal {
    /// A refusal that involves no credential.
    pub fn new(status: u16, reason: &'static str, message: impl Into<String>) -> Refusal {
        Refusal {
            status,
            reason,
            message: message.into(),
            credential: None,
        }
    }
}

/// Request-direction rules of one upstream.
pub struct UpstreamRules {
    pub rewriter: Arc<Rewriter>,
    /// For each rule index: the credential index and what the rule does.
    pub rules: Vec<(usize, RuleKind)>,
    /// Every replacement keeps the length (dummy and real are equally long), so a request's
    /// `Content-Length` stays right.
    pub length_preserving: bool,
}

/// A compiled configuration.
pub struct Policy {
    pub config: Config,
    pub upstream_rules: Vec<UpstreamRules>,
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

    /// Compiles a validated configuration whose response rules also scrub `retired` values
    /// (each into its credential's dummy, with all its encoded forms). A retired value equal
    /// to a live real value is left to the live rule and not kept in `retired`.
    ///
    /// # Errors
    /// As [`Policy::compile`].
    pub fn compile_with_retired(
        config: Config,
        retired: Vec<Retired>,
    ) -> Result<Policy, Vec<String>> {
        let mut errors = Vec::new();
        let mut upstream_rules = Vec::new();
        for (u, up) in config.upstreams.iter().enumerate() {
            let mut rules = Vec::new();
            let mut meta = Vec::new();
            let mut length_preserving = true;
            for (c, cred) in config.credentials.iter().enumerate() {
                let aws_secret = cred
                    .aws
                    .as_ref()
                    .is_some_and(|a| a.role == AwsRole::SecretAccessKey);
                let (action, kind) = match (&cred.real, cred.upstreams.contains(&u)) {
                    _ if aws_secret => (Action::Refuse, RuleKind::AwsSecret),
                    (Ok(real), true) => {
                        length_preserving &= real.len() == cred.dummy.len();
                        (
                            Action::Replace(Zeroizing::new(real.expose().to_vec())),
                            RuleKind::Replace,
                        )
                    }
                    (Err(_), true) => (Action::Refuse, RuleKind::Unavailable),
                    (_, false) => (Action::Refuse, RuleKind::Foreign),
                };
                rules.push(Rule {
                    name: Arc::from(cred.name.as_str()),
                    needle: Zeroizing::new(cred.dummy.clone()),
                    action,
                });
                meta.push((c, kind));
            }
            match Rewriter::new(rules) {
                Ok(rw) => upstream_rules.push(UpstreamRules {
                    rewriter: Arc::new(rw),
                    rules: meta,
                    length_preserving,
                }),
                Err(e) => errors.push(format!("request rules for upstream `{}`: {e}", up.name)),
            }
        }
        let mut rules = Vec::new();
        let mut shapes = Vec::new();
        let mut response_rules = Vec::new();
        let mut response_length_preserving = true;
        // Literal real values first (a duplicate among them is a configuration error), then
        // their encoded forms, leaving out any needle another rule already has.
        for (c, cred) in config.credentials.iter().enumerate() {
            if let Ok(real) = &cred.real {
                response_length_preserving &= real.len() == cred.dummy.len();
                rules.push(Rule {
                    name: Arc::from(cred.name.as_str()),
                    needle: Zeroizing::new(real.expose().to_vec()),
                    action: Action::Replace(Zeroizing::new(cred.dummy.clone())),
                });
                // Real values hold no blank byte (checked when they are loaded).
                shapes.push(Shape::Token);
                response_rules.push(c);
            }
        }
        // Where each retired value's rules point: its credential if it is still configured,
        // else past the credentials (see `response_rules`).
        let retired_owner = |i: usize, r: &Retired| {
            config
                .credentials
                .iter()
                .position(|c| c.name == r.credential)
                .unwrap_or(config.credentials.len() + i)
        };
        // A retired value that is live again is the live rule's business.
        let retired: Vec<Retired> = retired
            .into_iter()
            .filter(|r| !real_values(&config).any(|(_, _, v)| v.ct_eq(r.value.expose())))
            .collect();
        for (i, r) in retired.iter().enumerate() {
            let needle = r.value.expose();
            if rules.iter().any(|x: &Rule| x.needle.as_slice() == needle) {
                continue;
            }
            response_length_preserving &= needle.len() == r.dummy.len();
            rules.push(Rule {
                name: Arc::from(r.credential.as_str()),
                needle: Zeroizing::new(needle.to_vec()),
                action: Action::Replace(Zeroizing::new(r.dummy.clone())),
            });
            shapes.push(Shape::Token);
            response_rules.push(retired_owner(i, r));
        }
        for (c, cred) in config.credentials.iter().enumerate() {
            let Ok(real) = &cred.real else { continue };
            for form in encoded::response_forms(real.expose(), &cred.dummy) {
                if rules.iter().any(|r: &Rule| r.needle == form.needle) {
                    continue;
                }
                response_length_preserving &= form.needle.len() == form.replacement.len();
                rules.push(Rule {
                    name: Arc::from(cred.name.as_str()),
                    needle: form.needle,
                    action: Action::Replace(form.replacement),
                });
                shapes.push(form.shape);
                response_rules.push(c);
            }
        }
        for (i, r) in retired.iter().enumerate() {
            for form in encoded::response_forms(r.value.expose(), &r.dummy) {
                if rules.iter().any(|x: &Rule| x.needle == form.needle) {
                    continue;
                }
                response_length_preserving &= form.needle.len() == form.replacement.len();
                rules.push(Rule {
                    name: Arc::from(r.credential.as_str()),
                    needle: form.needle,
                    action: Action::Replace(form.replacement),
                });
                shapes.push(form.shape);
                response_rules.push(retired_owner(i, r));
            }
        }
        // Public hold-back: when scrubbed bytes reach the agent must not depend on a real
        // value's bytes (see `rewrite::Shape`).
        let response = match Rewriter::new_public(rules, &shapes) {
            Ok(rw) => Some(Arc::new(rw)),
            Err(e) => {
                errors.push(format!("response rules: {e}"));
                None
            }
        };
        let mut routes_by_host: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, r) in config.routes.iter().enumerate() {
            routes_by_host.entry(r.host.clone()).or_default().push(i);
        }
        for list in routes_by_host.values_mut() {
            list.sort_by_key(|&i| {
                let r = &config.routes[i];
                // Longest prefix first; a route with a port before one without.
                (std::cmp::Reverse(r.path_prefix.len()), r.port.is_none())
            });
        }
        let aws_keys = aws_keys(&config);
        match response {
            Some(response) if errors.is_empty() => Ok(Policy {
                aws_keys,
                retired,
                route_labels: config
                    .routes
                    .iter()
                    .map(|r| {
                        let port = r.port.map(|p| format!(":{p}")).unwrap_or_default();
                        format!("{}{port}{}", r.host, r.path_prefix)
                    })
                    .collect(),
                upstream_tls: config.upstreams.iter().map(UpstreamTls::new).collect(),
                config,
                upstream_rules,
                response,
                response_rules,
                response_length_preserving,
                routes_by_host,
            }),
            _ => Err(errors),
        }
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
    pub fn aws_key_for(&self, upstream: usize, key_id: &str) -> Option<usize> {
        self.aws_keys.iter().position(|k| {
            self.aws_key_id_if_bound(k, upstream)
                .is_some_and(|c| c.dummy == key_id.as_bytes())
        })
    }

    /// Whether any `aws` credential is bound to `upstream`.
    pub fn has_aws_key(&self, upstream: usize) -> bool {
        self.aws_keys
            .iter()
            .any(|k| self.aws_key_id_if_bound(k, upstream).is_some())
    }

    /// The access key id part of `key`, when the key is bound to `upstream`.
    fn aws_key_id_if_bound(&self, key: &AwsKey, upstream: usize) -> Option<&Credential> {
        self.config
            .credentials
            .get(key.access_key_id)
            .filter(|c| c.upstreams.contains(&upstream))
    }

    /// The route for a request to `host` (lower case), `port` (when the request names one) and
    /// `path`: the longest matching path prefix wins.
    pub fn route(&self, host: &str, port: Option<u16>, path: &[u8]) -> Option<(usize, &Route)> {
        self.routes_by_host.get(host)?.iter().find_map(|&i| {
            let r = &self.config.routes[i];
            let port_ok = r.port.is_none() || r.port == port;
            (port_ok && path.starts_with(r.path_prefix.as_bytes())).then_some((i, r))
        })
    }

    /// The label of route `idx` (see `route_labels`).
    pub fn route_label(&self, idx: usize) -> Option<&str> {
        self.route_labels.get(idx).map(String::as_str)
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

    /// Turns a refused request rule into the answer for the agent.
    pub fn request_refusal(&self, upstream: usize, refused: &Refused) -> Refusal {
        let (cred, kind) = self
            .upstream_rules
            .get(upstream)
            .and_then(|u| u.rules.get(refused.rule))
            .copied()
            .unwrap_or((usize::MAX, RuleKind::Foreign));
        let up = self
            .config
            .upstreams
            .get(upstream)
            .map_or("?", |u| u.name.as_str());
        let name = &refused.name;
        match kind {
            // The agent learns which credential, never its source: a variable name or path
            // is the operator's business (and may be a key pasted in the wrong place).
            RuleKind::Unavailable => Refusal {
                status: 503,
                reason: "credential_unavailable",
                message: format!("credential `{name}` is unavailable on this gateway"),
                credential: Some(cred),
            },
            RuleKind::AwsSecret => Refusal {
                status: 403,
                reason: "aws_secret_key_sent",
                message: format!(
                    "credential `{name}` is an AWS secret access key: it is never sent; requests are signed with it"
                ),
                credential: Some(cred),
            },
            RuleKind::Foreign | RuleKind::Replace => Refusal {
                status: 403,
                reason: "credential_bound_elsewhere",
                message: format!(
                    "credential `{name}` may not be sent to upstream `{up}`; it is bound to other upstreams"
                ),
                credential: Some(cred),
            },
        }
    }
}

/// Every real value `config` holds: (credential name, its dummy, value). The one place that
/// enumerates them, so that retiring values (see [`crate::retired`]) misses none.
pub fn real_values(config: &Config) -> impl Iterator<Item = (&str, &[u8], &Arc<Secret>)> {
    config.credentials.iter().filter_map(|c| {
        let real = c.real.as_ref().ok()?;
        Some((c.name.as_str(), c.dummy.as_slice(), real))
    })
}

/// Groups the parts of each `aws` credential (validation guarantees the required ones).
fn aws_keys(config: &Config) -> Vec<AwsKey> {
    let mut keys: Vec<AwsKey> = Vec::new();
    for (i, c) in config.credentials.iter().enumerate() {
        let Some(part) = &c.aws else { continue };
        let find = |role: AwsRole| {
            config.credentials.iter().position(|o| {
                o.aws
                    .as_ref()
                    .is_some_and(|a| a.group == part.group && a.role == role)
            })
        };
        if part.role != AwsRole::AccessKeyId {
            continue;
        }
        if let Some(secret) = find(AwsRole::SecretAccessKey) {
            keys.push(AwsKey {
                name: part.group.clone(),
                access_key_id: i,
                secret_access_key: secret,
                session_token: find(AwsRole::SessionToken),
            });
        }
    }
    keys
}
