//! Compiling a configuration into a [`Policy`] ([`Policy::compile_with_retired`]), and the
//! pieces it builds from: the real values the request rules refuse
//! (every form of every value, retired ones too), each upstream's rule sets by place, one rule
//! set's rewriter, and the AWS key pairs.

use super::*;

impl Policy {
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
        let clients = config.client_identities();
        let refused = real_needles(&config, &retired, retired_owner);
        let mut upstream_rules = Vec::new();
        for (u, up) in config.upstream_ids() {
            let mut per_slot = Vec::new();
            for client in std::iter::once(None).chain(clients.iter().map(|c| Some(c.as_str()))) {
                match upstream_rules_for(&config, u, client, &refused) {
                    Ok(r) => per_slot.push(r),
                    Err(e) => errors.push(format!("request rules for upstream `{}`: {e}", up.name)),
                }
            }
            upstream_rules.push(per_slot);
        }
        drop(refused);
        let mut rules = Vec::new();
        let mut shapes = Vec::new();
        let mut response_rules = Vec::new();
        let mut response_length_preserving = true;
        // Literal real values first (a duplicate among them is a configuration error), then
        // their encoded forms, leaving out any needle another rule already has.
        for (c, cred) in config.credentials.iter().enumerate() {
            for real in cred.values.iter().filter_map(|v| v.real.as_ref().ok()) {
                if rules
                    .iter()
                    .any(|r: &Rule| r.needle.as_slice() == real.expose())
                {
                    // The same key for two clients of one credential.
                    continue;
                }
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
            let reals = cred.values.iter().filter_map(|v| v.real.as_ref().ok());
            for form in reals.flat_map(|real| encoded::response_forms(real.expose(), &cred.dummy)) {
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
                upstream_tls: config
                    .upstreams
                    .iter()
                    .map(|u| {
                        UpstreamTls::new(u.ca.as_deref().map(|v| &v[..]), u.client_cert.as_deref())
                    })
                    .collect(),
                config,
                upstream_rules,
                clients,
                response,
                response_rules,
                response_length_preserving,
                routes_by_host,
            }),
            _ => Err(errors),
        }
    }
}

/// A real value for the request rules to refuse: (credential index, rule name, needle, its
/// public shape).
type RefusedReal = (usize, Arc<str>, Zeroizing<Vec<u8>>, Shape);

/// Every real value of every credential, and every retired one still scrubbed, literal and in
/// each encoded form, for the request rules to refuse. Needles are unique. `owner` gives a
/// retired value's credential index (past the credentials for a removed one).
fn real_needles(
    config: &Config,
    retired: &[Retired],
    owner: impl Fn(usize, &Retired) -> usize,
) -> Vec<RefusedReal> {
    let mut out: Vec<RefusedReal> = Vec::new();
    let live = config.credentials.iter().enumerate().flat_map(|(c, cred)| {
        cred.values.iter().filter_map(move |v| {
            let real = v.real.as_ref().ok()?;
            Some((c, cred.name.as_str(), cred.dummy.as_slice(), real.expose()))
        })
    });
    let old = retired.iter().enumerate().map(|(i, r)| {
        (
            owner(i, r),
            r.credential.as_str(),
            r.dummy.as_slice(),
            r.value.expose(),
        )
    });
    for (c, name, dummy, real) in live.chain(old) {
        // Real values hold no blank byte (checked when they are loaded).
        let literal = (Zeroizing::new(real.to_vec()), Shape::Token);
        let forms = encoded::response_forms(real, dummy);
        for (needle, shape) in
            std::iter::once(literal).chain(forms.into_iter().map(|f| (f.needle, f.shape)))
        {
            // A needle already taken, or a dummy.
            let taken = config.credentials.iter().any(|cr| cr.dummy == *needle)
                || out.iter().any(|(_, _, n, _)| *n == needle);
            if !taken {
                out.push((c, Arc::from(name), needle, shape));
            }
        }
    }
    out
}

/// Whether credential `cred` is swapped into a place, by [`SwapIn`](crate::config::SwapIn).
type Place<'a> = &'a dyn Fn(&Credential) -> bool;

/// The request rules of upstream `u` for `client` (`None`: a client without values of its own).
fn upstream_rules_for(
    config: &Config,
    u: UpstreamId,
    client: Option<&str>,
    refused: &[RefusedReal],
) -> Result<UpstreamRules, String> {
    let creds = &config.credentials;
    // Each place's key: which credentials are swapped there. Equal keys share a set.
    let mut keys: Vec<Vec<bool>> = vec![vec![false; creds.len()]];
    let mut key_of = |place: Place<'_>| -> usize {
        let key: Vec<bool> = creds
            .iter()
            .map(|c| c.upstreams.contains(&u) && place(c))
            .collect();
        match keys.iter().position(|k| *k == key) {
            Some(i) => i,
            None => {
                keys.push(key);
                keys.len() - 1
            }
        }
    };
    let mut headers = HashMap::new();
    let mut basic = HashMap::new();
    let mut query = HashMap::new();
    let mut body = Vec::new();
    for c in creds.iter().filter(|c| c.upstreams.contains(&u)) {
        for h in &c.swap_in.headers {
            if !headers.contains_key(h) {
                headers.insert(h.clone(), key_of(&|o| o.swap_in.headers.contains(h)));
            }
            if c.swap_in.basic && !basic.contains_key(h) {
                basic.insert(
                    h.clone(),
                    key_of(&|o| o.swap_in.basic && o.swap_in.headers.contains(h)),
                );
            }
        }
        for q in &c.swap_in.query {
            if !query.contains_key(q) {
                query.insert(q.clone(), key_of(&|o| o.swap_in.query.contains(q)));
            }
        }
        for pattern in &c.swap_in.body {
            if !body.iter().any(|(p, _)| p == pattern) {
                body.push((
                    pattern.clone(),
                    key_of(&|o| o.swap_in.body_matches(pattern)),
                ));
            }
        }
    }
    let path = key_of(&|c| c.swap_in.path);
    let websocket = key_of(&|c| c.swap_in.websocket);
    let sets = keys
        .iter()
        .map(|key| rule_set(config, u, client, key, refused).map(Arc::new))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(UpstreamRules {
        sets,
        headers,
        basic,
        query,
        path,
        body,
        websocket,
    })
}

/// One rule set: credential `c`'s dummy is swapped where `swapped[c]`.
fn rule_set(
    config: &Config,
    u: UpstreamId,
    client: Option<&str>,
    swapped: &[bool],
    refused: &[RefusedReal],
) -> Result<RuleSet, String> {
    let mut rules = Vec::with_capacity(config.credentials.len() + refused.len());
    let mut kinds = Vec::with_capacity(rules.capacity());
    let mut shapes = Vec::with_capacity(rules.capacity());
    let mut length_preserving = true;
    for (c, cred) in config.credentials.iter().enumerate() {
        let aws_secret = cred
            .aws
            .as_ref()
            .is_some_and(|a| a.role == AwsRole::SecretAccessKey);
        let bound = cred.upstreams.contains(&u);
        let (action, kind) = if aws_secret {
            (Action::Refuse, RuleKind::AwsSecret)
        } else if !bound {
            (Action::Refuse, RuleKind::Foreign)
        } else if !swapped.get(c).copied().unwrap_or(false) {
            (Action::Keep, RuleKind::Misplaced)
        } else {
            match cred.value_for(client).map(|v| &v.real) {
                None => (Action::Refuse, RuleKind::NotForClient),
                Some(Err(_)) => (Action::Refuse, RuleKind::Unavailable),
                Some(Ok(real)) => {
                    length_preserving &= real.len() == cred.dummy.len();
                    (
                        Action::Replace(Zeroizing::new(real.expose().to_vec())),
                        RuleKind::Replace,
                    )
                }
            }
        };
        rules.push(Rule {
            name: Arc::from(cred.name.as_str()),
            needle: Zeroizing::new(cred.dummy.clone()),
            action,
        });
        kinds.push((c, kind));
        // Dummies are printable without spaces (checked when they are loaded).
        shapes.push(Shape::Token);
    }
    for (c, name, needle, shape) in refused {
        rules.push(Rule {
            name: Arc::clone(name),
            needle: needle.clone(),
            action: Action::Refuse,
        });
        kinds.push((*c, RuleKind::RealFromAgent));
        shapes.push(*shape);
    }
    // Public hold-back: the rules hold real values, so when the agent's streamed bytes reach the
    // upstream must not depend on their bytes (a colluding upstream would learn a guess of the
    // key byte by byte; see `rewrite::Shape`).
    let rewriter = Rewriter::new_public(rules, &shapes).map_err(|e| e.to_string())?;
    Ok(RuleSet {
        rewriter: Arc::new(rewriter),
        kinds,
        length_preserving,
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
