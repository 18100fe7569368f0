//! `upstreams:`: URLs, trust roots, client certificates, timeouts and connection caps.

use super::*;

pub(super) fn check_upstreams(
    r: &mut Report<'_>,
    v: Option<&Value>,
    base: &Path,
) -> Vec<(String, Option<Upstream>)> {
    let path = YamlPath::root().key("upstreams");
    let items = named_items(r, &path, v);
    if items.is_empty() {
        r.error(
            &path,
            "at least one upstream is needed, like `openai: { url: https://api.openai.com }`",
        );
    }
    items
        .into_iter()
        .map(|(name, item)| {
            let p = path.key(&name);
            let up = r
                .item::<RawUpstream>(&p, item)
                .and_then(|raw| check_upstream(r, &p, &name, raw, base));
            (name, up)
        })
        .collect()
}

pub(super) fn check_upstream(
    r: &mut Report<'_>,
    p: &YamlPath,
    name: &str,
    raw: RawUpstream,
    base: &Path,
) -> Option<Upstream> {
    let url_path = p.key("url");
    let parsed = parse_upstream_url(&raw.url);
    if let Err(msg) = &parsed {
        r.error(&url_path, msg.clone());
    }
    let ca = match raw.ca {
        Some(ca) => {
            let ca = resolve(base, &ca);
            let certs = read_certs(r, &p.key("ca"), &ca);
            if let Some(certs) = &certs {
                for (i, der) in certs.iter().enumerate() {
                    let mut store = rustls::RootCertStore::empty();
                    if store
                        .add(rustls::pki_types::CertificateDer::from(der.as_slice()))
                        .is_err()
                    {
                        r.error(
                            &p.key("ca"),
                            format!(
                                "certificate #{} in {} is not a usable CA certificate",
                                i + 1,
                                ca.display()
                            ),
                        );
                    }
                }
            }
            Some(certs.map(Arc::new))
        }
        None => None,
    };
    let http_version = match raw.http_version.as_deref() {
        None | Some("auto") => Some(HttpVersion::Auto),
        Some("1.1") | Some("1") => Some(HttpVersion::Http1),
        Some("2") => Some(HttpVersion::Http2),
        Some(other) => {
            r.error(
                &p.key("http_version"),
                format!("`{other}` is not allowed; use `auto` (the default), `1.1` or `2`"),
            );
            None
        }
    };
    let connect_timeout = duration_field(
        r,
        &p.key("connect_timeout"),
        raw.connect_timeout,
        Duration::from_secs(10),
    )?;
    let read_timeout = match raw.read_timeout {
        None => Some(None),
        Some(s) => match bounded_duration(&s, true) {
            Ok(d) => Some(Some(d)),
            Err(m) => {
                r.error(&p.key("read_timeout"), m);
                None
            }
        },
    };
    let max_connections = match raw.max_connections {
        None => Some(Upstream::DEFAULT_MAX_CONNECTIONS),
        Some(n @ 1..=65_536) => usize::try_from(n).ok(),
        Some(n) => {
            r.error(
                &p.key("max_connections"),
                format!(
                    "{n} is not allowed; use 1 to 65536 (default {})",
                    Upstream::DEFAULT_MAX_CONNECTIONS
                ),
            );
            None
        }
    };
    let client_cert = match raw.client_cert {
        None => Some(None),
        Some(cc) => load_client_cert(
            r,
            &p.key("client_cert"),
            &resolve(base, &cc.cert),
            &resolve(base, &cc.key),
        )
        .map(|c| Some(Arc::new(c))),
    };
    if let (Ok((false, _, _)), Some(Some(_))) = (&parsed, &client_cert) {
        r.error(
            &p.key("client_cert"),
            "a client certificate needs an https:// upstream",
        );
    }
    let (tls, host, port) = parsed.ok()?;
    let default_port = if tls { 443 } else { 80 };
    let host_part = if host.contains(':') {
        format!("[{host}]")
    } else {
        host.clone()
    };
    let authority = if port == default_port {
        host_part
    } else {
        format!("{host_part}:{port}")
    };
    let ca = match ca {
        Some(Some(c)) => Some(c),
        Some(None) => return None,
        None => None,
    };
    Some(Upstream {
        name: name.to_owned(),
        tls,
        host,
        port,
        authority,
        ca,
        http_version: http_version?,
        connect_timeout,
        read_timeout: read_timeout?,
        client_cert: client_cert?,
        max_connections: max_connections?,
    })
}

/// Reads an upstream client certificate chain and its key, and checks that they belong together.
pub(super) fn load_client_cert(
    r: &mut Report<'_>,
    p: &YamlPath,
    cert: &Path,
    key: &Path,
) -> Option<ClientCert> {
    let chain = read_certs(r, &p.key("cert"), cert)?;
    let data = match std::fs::read(key) {
        Ok(d) => zeroize::Zeroizing::new(d),
        Err(e) => {
            r.error(&p.key("key"), format!("cannot read {}: {e}", key.display()));
            return None;
        }
    };
    let key_der = match crate::pki::pem::private_key(&data) {
        Ok(Some(k)) => k,
        _ => {
            r.error(
                &p.key("key"),
                format!("{} holds no valid PEM private key", key.display()),
            );
            return None;
        }
    };
    let certs: Vec<rustls::pki_types::CertificateDer<'static>> = chain
        .iter()
        .map(|c| rustls::pki_types::CertificateDer::from(c.clone()))
        .collect();
    let provider = rustls::crypto::ring::default_provider();
    match rustls::sign::CertifiedKey::from_der(certs, key_der.clone_key(), &provider)
        .and_then(|ck| ck.keys_match().map(|_| ck))
    {
        Ok(_) => Some(ClientCert {
            chain,
            key: zeroize::Zeroizing::new(key_der.secret_der().to_vec()),
        }),
        Err(_) => {
            r.error(
                &p.key("key"),
                format!(
                    "{} does not match the certificate {}",
                    key.display(),
                    cert.display()
                ),
            );
            None
        }
    }
}

pub(super) fn duration_field(
    r: &mut Report<'_>,
    p: &YamlPath,
    v: Option<String>,
    default: Duration,
) -> Option<Duration> {
    match v {
        None => Some(default),
        Some(s) => match bounded_duration(&s, false) {
            Ok(d) => Some(d),
            Err(m) => {
                r.error(p, m);
                None
            }
        },
    }
}

/// `https://host[:port]` → (tls, host, port). No user info, path, query or fragment.
pub(super) fn parse_upstream_url(s: &str) -> Result<(bool, String, u16), String> {
    let allowed = "use scheme://host[:port], like https://api.openai.com or http://127.0.0.1:8080";
    let uri: http::Uri = s
        .parse()
        .map_err(|_| format!("`{s}` is not a URL; {allowed}"))?;
    let tls = match uri.scheme_str() {
        Some("https") => true,
        Some("http") => false,
        Some(other) => return Err(format!("scheme `{other}` is not supported; {allowed}")),
        None => return Err(format!("`{s}` has no scheme; {allowed}")),
    };
    let authority = uri
        .authority()
        .ok_or_else(|| format!("`{s}` has no host; {allowed}"))?;
    if authority.as_str().contains('@') {
        return Err(format!(
            "`{s}` has user info; credentials belong in `credentials`, not in the URL"
        ));
    }
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        return Err(format!(
            "`{s}` has a path or query; routes choose paths, so {allowed}"
        ));
    }
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_ascii_lowercase();
    if host.is_empty() {
        return Err(format!("`{s}` has no host; {allowed}"));
    }
    let port = authority.port_u16().unwrap_or(if tls { 443 } else { 80 });
    if port == 0 {
        return Err(format!("`{s}` has port 0"));
    }
    Ok((tls, host, port))
}
