//! `credentials:`: dummies, where real values come from (never read into a message), where
//! they may be swapped and for whom.

use super::*;

pub(super) fn check_credentials(
    r: &mut Report<'_>,
    v: Option<&Value>,
    upstream_names: &[String],
    base: &Path,
) -> Option<Vec<Credential>> {
    let path = YamlPath::root().key("credentials");
    let items = named_items(r, &path, v);
    let mut out = Vec::new();
    let mut ok = true;
    let mut dummies: HashMap<Vec<u8>, String> = HashMap::new();
    for (name, item) in items {
        let p = path.key(&name);
        if !check_secret_shapes(r, &p, item) {
            ok = false;
            continue;
        }
        let Some(raw) = r.item::<RawCredential>(&p, item) else {
            ok = false;
            continue;
        };
        let mut ups = Vec::new();
        if raw.upstreams.is_empty() {
            r.error(
                &p.key("upstreams"),
                format!("credential `{name}` must be bound to at least one upstream"),
            );
            ok = false;
        }
        for (i, u) in raw.upstreams.iter().enumerate() {
            match upstream_names.iter().position(|n| n == u) {
                Some(idx) if !ups.contains(&UpstreamId(idx)) => ups.push(UpstreamId(idx)),
                Some(_) => {
                    r.error(
                        &p.key("upstreams").index(i),
                        format!("upstream `{u}` is listed twice"),
                    );
                    ok = false;
                }
                None => {
                    r.error(
                        &p.key("upstreams").index(i),
                        format!(
                            "upstream `{u}` is not defined; defined upstreams: {}",
                            list(upstream_names)
                        ),
                    );
                    ok = false;
                }
            }
        }
        let aws_kind = raw.kind.as_deref() == Some("aws");
        let mut problems = Vec::new();
        let swap_in = super::swap::swap_in(raw.swap_in, &p, aws_kind, &mut problems);
        let allow = super::swap::allow(raw.allow, &p, aws_kind, &mut problems);
        for (at, msg) in problems {
            r.error(&at, msg);
            ok = false;
        }
        let mut parts: Vec<RawPart> = Vec::new();
        match raw.kind.as_deref().unwrap_or("token") {
            "token" => {
                let aws_keys = [
                    ("access_key_id", raw.access_key_id.is_some()),
                    ("secret_access_key", raw.secret_access_key.is_some()),
                    ("session_token", raw.session_token.is_some()),
                ];
                for (key, present) in aws_keys {
                    if present {
                        r.error(
                            &p.key(key),
                            format!("`{key}` belongs to credentials of `kind: aws`"),
                        );
                        ok = false;
                    }
                }
                match (raw.dummy, raw.real, raw.clients) {
                    (Some(dummy), Some(real), None) => parts.push((
                        name.clone(),
                        p.clone(),
                        dummy,
                        vec![(None, p.key("real"), real)],
                        None,
                    )),
                    (Some(dummy), None, Some(clients)) => {
                        match client_values(r, &p.key("clients"), clients) {
                            Some(values) => {
                                parts.push((name.clone(), p.clone(), dummy, values, None))
                            }
                            None => ok = false,
                        }
                    }
                    (Some(_), Some(_), Some(_)) => {
                        r.key_error(
                            &p.key("clients"),
                            "give `real` (one value for every client) or `clients` (a value per client identity), not both",
                        );
                        ok = false;
                    }
                    (dummy, _, _) => {
                        let missing = if dummy.is_none() {
                            "dummy"
                        } else {
                            "real` (or `clients"
                        };
                        r.error(&p, format!("credential `{name}` needs `{missing}`"));
                        ok = false;
                    }
                }
            }
            "aws" => {
                if raw.dummy.is_some() || raw.real.is_some() {
                    r.error(
                        &p,
                        "a credential of `kind: aws` has `access_key_id`, `secret_access_key` and optionally `session_token`, each with `dummy` and `real`, instead of `dummy` and `real`",
                    );
                    ok = false;
                }
                if raw.clients.is_some() {
                    r.key_error(
                        &p.key("clients"),
                        "`clients` is not supported on `aws` credentials; declare one `aws` credential per client and bind each with a route's `clients`",
                    );
                    ok = false;
                }
                let pairs = [
                    (AwsRole::AccessKeyId, raw.access_key_id, true),
                    (AwsRole::SecretAccessKey, raw.secret_access_key, true),
                    (AwsRole::SessionToken, raw.session_token, false),
                ];
                for (role, pair, required) in pairs {
                    match pair {
                        Some(pair) => parts.push((
                            format!("{name}.{}", role.key()),
                            p.key(role.key()),
                            pair.dummy,
                            vec![(None, p.key(role.key()).key("real"), pair.real)],
                            Some(role),
                        )),
                        None if required => {
                            r.error(
                                &p,
                                format!(
                                    "credential `{name}` of `kind: aws` needs `{}`",
                                    role.key()
                                ),
                            );
                            ok = false;
                        }
                        None => {}
                    }
                }
            }
            other => {
                r.error(
                    &p.key("kind"),
                    format!(
                        "unknown credential kind `{other}`; use `token` (the default) or `aws`"
                    ),
                );
                ok = false;
            }
        }
        for (part_name, pp, dummy, raw_values, role) in parts {
            if out.iter().any(|c: &Credential| c.name == part_name) {
                r.error(&pp, format!("credential name `{part_name}` is used twice"));
                ok = false;
            }
            // The values are checked even when the dummy is bad: every error at once.
            let checked = check_unique_dummy(r, &pp, &part_name, dummy.clone(), &mut dummies);
            ok &= checked.is_some();
            let dummy = checked.unwrap_or_else(|| dummy.into_bytes());
            let mut values = Vec::new();
            for (client, at, raw_real) in raw_values {
                match load_value(r, &at, &part_name, &dummy, raw_real, base) {
                    Some((source, real)) => values.push(RealValue {
                        client,
                        source,
                        real,
                    }),
                    None => ok = false,
                }
            }
            out.push(Credential {
                name: part_name,
                dummy,
                values,
                upstreams: ups.clone(),
                aws: role.map(|role| AwsPart {
                    group: name.clone(),
                    role,
                }),
                swap_in: swap_in.clone(),
                allow: allow.clone(),
            });
        }
    }
    // A real value equal to another credential's dummy would be swapped back and forth.
    for a in &out {
        for b in &out {
            for v in &a.values {
                if let Ok(real) = &v.real
                    && a.name != b.name
                    && real.ct_eq(&b.dummy)
                {
                    let at = match &v.client {
                        None => path.key(&a.name).key("real"),
                        Some(c) => path.key(&a.name).key("clients").key(c),
                    };
                    r.error(
                        &at,
                        format!(
                            "the real value of credential `{}` equals the dummy of credential `{}`",
                            a.name, b.name
                        ),
                    );
                    ok = false;
                }
            }
        }
    }
    ok.then_some(out)
}

/// The containers of a `real` must be maps before serde sees them: its error for a scalar
/// credential (`openai: sk-live-...`) or AWS pair (`access_key_id: AKIA...`) would quote the
/// value. `real` itself never echoes (see [`RawSecretSource`]). False after reporting.
pub(super) fn check_secret_shapes(r: &mut Report<'_>, p: &YamlPath, item: &Value) -> bool {
    let Value::Mapping(map) = item else {
        r.error(
            p,
            "a credential must be a map with `dummy`, `real` and `upstreams` (or `kind: aws` and \
             its pairs); a value written here is not shown",
        );
        return false;
    };
    let mut ok = true;
    for role in [
        AwsRole::AccessKeyId,
        AwsRole::SecretAccessKey,
        AwsRole::SessionToken,
    ] {
        match map.get(role.key()) {
            None | Some(Value::Mapping(_) | Value::Null) => {}
            Some(_) => {
                r.error(
                    &p.key(role.key()),
                    format!(
                        "`{}` must be a map with `dummy` and `real`; a value written here is not shown",
                        role.key()
                    ),
                );
                ok = false;
            }
        }
    }
    ok
}

/// A credential or `aws` part as written: its name, where it stands in the file, its dummy, its
/// real values and its AWS role.
pub(super) type RawPart = (String, YamlPath, String, Vec<RawValue>, Option<AwsRole>);

/// A real value as written: the client identity it is for (`None`: every client), where its
/// source stands in the file, and the source.
pub(super) type RawValue = (Option<String>, YamlPath, RawSecretSource);

/// The values of `clients:` (at `p`): identity names checked. `None` after reporting an error.
pub(super) fn client_values(
    r: &mut Report<'_>,
    p: &YamlPath,
    clients: std::collections::BTreeMap<String, RawSecretSource>,
) -> Option<Vec<RawValue>> {
    if clients.is_empty() {
        r.error(
            p,
            "an empty `clients` map gives the credential to no one; remove it and use `real`",
        );
        return None;
    }
    let mut ok = true;
    let mut out = Vec::new();
    for (id, source) in clients {
        let valid = !id.is_empty() && id.len() <= 255 && id.bytes().all(|b| b.is_ascii_graphic());
        if !valid {
            // Identity names are labels in metrics; a key pasted here is not quoted.
            r.key_error(
                &p.key(&id),
                "a client identity is a certificate's common name or SAN: 1-255 printable characters without spaces (the name written here is not shown)",
            );
            ok = false;
            continue;
        }
        out.push((Some(id.clone()), p.key(&id), source));
    }
    ok.then_some(out)
}

/// The dummy at `p` checked, and unique among `dummies`. `None` after reporting an error.
pub(super) fn check_unique_dummy(
    r: &mut Report<'_>,
    p: &YamlPath,
    name: &str,
    dummy: String,
    dummies: &mut HashMap<Vec<u8>, String>,
) -> Option<Vec<u8>> {
    let mut ok = true;
    let dummy = dummy.into_bytes();
    if let Err(msg) = check_dummy(&dummy) {
        r.error(&p.key("dummy"), msg);
        ok = false;
    }
    if let Some(other) = dummies.insert(dummy.clone(), name.to_owned()) {
        r.error(
            &p.key("dummy"),
            format!("credential `{name}` has the same dummy as credential `{other}`; each dummy must be unique"),
        );
        ok = false;
    }
    ok.then_some(dummy)
}

/// A real value's source at `p` (`real` or `clients.ID`) parsed and loaded: the source and the
/// secret, or why it is unavailable. `None` after reporting an error.
pub(super) fn load_value(
    r: &mut Report<'_>,
    p: &YamlPath,
    name: &str,
    dummy: &[u8],
    raw_real: RawSecretSource,
    base: &Path,
) -> Option<(SecretSource, Result<Arc<crate::secret::Secret>, String>)> {
    let source = match (raw_real.env, raw_real.file) {
        (Some(env), None) => {
            if !is_env_name(&env) {
                // Not quoted: a key pasted here by mistake would be printed.
                r.error(
                    &p.key("env"),
                    "this is not an environment variable name: use letters, digits and `_`, \
                     not starting with a digit (the name written here is not shown)",
                );
                return None;
            }
            SecretSource::Env(env)
        }
        (None, Some(file)) => SecretSource::File(resolve(base, &file)),
        _ => {
            r.error(
                p,
                "give exactly one of `env: VARIABLE` or `file: PATH` (secrets are never written in the config)",
            );
            return None;
        }
    };
    let real = match source.load() {
        Ok(s) => {
            if s.ct_eq(dummy) {
                r.error(
                    p,
                    format!("the real value of credential `{name}` equals its dummy"),
                );
                return None;
            }
            Ok(Arc::new(s))
        }
        Err(LoadError::Missing(msg)) => {
            r.warn(
                p,
                format!(
                    "credential `{name}` is unavailable ({msg}); requests that need it get 503"
                ),
            );
            Err(msg)
        }
        Err(LoadError::Unreadable(msg)) => {
            r.error(p, msg);
            return None;
        }
    };
    Some((source, real))
}

/// `[A-Za-z_][A-Za-z0-9_]*`: the names a shell can set, and never a pasted key like
/// `sk-live-...` (which would then be named in warnings about the unset variable).
pub(super) fn is_env_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// A dummy goes into headers and URLs and is searched for in every request: it must be long
/// enough not to occur by chance and made of URL- and header-safe characters.
pub(super) fn check_dummy(d: &[u8]) -> Result<(), String> {
    if d.len() < 8 {
        return Err(format!(
            "a dummy must be at least 8 characters long (this one has {}), so that it never occurs by chance",
            d.len()
        ));
    }
    if d.len() > 1024 {
        return Err("a dummy must be at most 1024 characters long".into());
    }
    if let Some(c) = d.iter().find(|b| !(b.is_ascii_graphic())) {
        return Err(format!(
            "a dummy must be printable ASCII without spaces; found byte 0x{c:02x}"
        ));
    }
    Ok(())
}
