//! `listeners:`, `admin:` and `interception:`, and the certificate and key files they name.

use super::*;

/// Reads a PEM file and returns the DER of every certificate in it (at least one).
pub(super) fn read_certs(r: &mut Report<'_>, path: &YamlPath, file: &Path) -> Option<Vec<Vec<u8>>> {
    let data = match std::fs::read(file) {
        Ok(d) => d,
        Err(e) => {
            r.error(path, format!("cannot read {}: {e}", file.display()));
            return None;
        }
    };
    let mut certs = Vec::new();
    match crate::pki::pem::certs(&data) {
        Ok(found) => certs.extend(found.iter().map(|c| c.as_ref().to_vec())),
        Err(e) => {
            r.error(path, format!("{} is not valid PEM: {e}", file.display()));
            return None;
        }
    }
    if certs.is_empty() {
        r.error(
            path,
            format!(
                "{} holds no PEM certificate (`-----BEGIN CERTIFICATE-----`)",
                file.display()
            ),
        );
        return None;
    }
    Some(certs)
}

/// Checks that a private key file is readable PEM. The key itself is not kept here.
pub(super) fn check_key_file(r: &mut Report<'_>, path: &YamlPath, file: &Path) -> bool {
    let data = match std::fs::read(file) {
        Ok(d) => zeroize::Zeroizing::new(d),
        Err(e) => {
            r.error(path, format!("cannot read {}: {e}", file.display()));
            return false;
        }
    };
    match crate::pki::pem::private_key(&data) {
        Ok(Some(_)) => true,
        Ok(None) => {
            r.error(path, format!("{} holds no PEM private key", file.display()));
            false
        }
        Err(_) => {
            r.error(
                path,
                format!("{} is not a valid PEM private key", file.display()),
            );
            false
        }
    }
}

pub(super) fn check_listeners(
    r: &mut Report<'_>,
    v: Option<&Value>,
    base: &Path,
) -> Option<Vec<Listener>> {
    let path = YamlPath::root().key("listeners");
    let items = seq_items(r, &path, v);
    if items.is_empty() {
        r.error(
            &path,
            "at least one listener is needed, like `- { name: agents, address: 0.0.0.0:443 }`",
        );
        return None;
    }
    let mut out = Vec::new();
    let mut ok = true;
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut seen_addr: HashMap<SocketAddr, usize> = HashMap::new();
    for (i, item) in items.into_iter().enumerate() {
        let p = path.index(i);
        let Some(raw) = r.item::<RawListener>(&p, item) else {
            ok = false;
            continue;
        };
        if let Err(msg) = check_name(&raw.name) {
            r.error(&p.key("name"), msg);
            ok = false;
        }
        if let Some(first) = seen.insert(raw.name.clone(), i) {
            r.error(
                &p.key("name"),
                format!(
                    "listener name `{}` is already used by listeners[{first}]",
                    raw.name
                ),
            );
            ok = false;
        }
        let address = parse_addr(r, &p.key("address"), &raw.address);
        if let Some(a) = address
            && let Some(first) = seen_addr.insert(a, i)
        {
            r.error(
                &p.key("address"),
                format!("address {a} is already used by listeners[{first}]"),
            );
            ok = false;
        }
        let tls = match raw.tls {
            None => {
                r.warn(
                    &p,
                    format!(
                        "listener `{}` has no `tls`: agents connect in plain text and without \
                         client certificates (development only)",
                        raw.name
                    ),
                );
                Some(None)
            }
            Some(t) => check_listener_tls(r, &p.key("tls"), t, base).map(Some),
        };
        match (address, tls) {
            (Some(address), Some(tls)) if ok => out.push(Listener {
                name: raw.name,
                address,
                tls,
            }),
            _ => ok = false,
        }
    }
    ok.then_some(out)
}

pub(super) fn check_listener_tls(
    r: &mut Report<'_>,
    p: &YamlPath,
    t: RawListenerTls,
    base: &Path,
) -> Option<ListenerTls> {
    let cert = resolve(base, &t.cert);
    let key = resolve(base, &t.key);
    let mut ok = read_certs(r, &p.key("cert"), &cert).is_some();
    ok &= check_key_file(r, &p.key("key"), &key);
    let client_ca = match (t.client_auth.as_deref(), t.client_ca) {
        (None | Some("required"), Some(ca)) => {
            let ca = resolve(base, &ca);
            ok &= read_certs(r, &p.key("client_ca"), &ca).is_some();
            Some(ca)
        }
        (None | Some("required"), None) => {
            r.error(
                p,
                "`client_ca` is missing: clients must present a certificate from this CA. To \
                 accept clients without certificates, say `client_auth: none` explicitly",
            );
            ok = false;
            None
        }
        (Some("none"), None) => {
            r.warn(
                &p.key("client_auth"),
                "`client_auth: none`: any client that can reach this listener may use it",
            );
            None
        }
        (Some("none"), Some(_)) => {
            r.error(
                &p.key("client_auth"),
                "`client_auth: none` contradicts `client_ca`; remove one of them",
            );
            ok = false;
            None
        }
        (Some(other), _) => {
            r.error(
                &p.key("client_auth"),
                format!("`{other}` is not allowed; use `required` (the default) or `none`"),
            );
            ok = false;
            None
        }
    };
    ok.then_some(ListenerTls {
        cert,
        key,
        client_ca,
    })
}

pub(super) fn check_admin(r: &mut Report<'_>, v: &Value) -> Option<Admin> {
    let p = YamlPath::root().key("admin");
    let raw = r.item::<RawAdmin>(&p, v)?;
    let address = parse_addr(r, &p.key("address"), &raw.address)?;
    if !address.ip().is_loopback() {
        r.warn(
            &p.key("address"),
            format!("the admin address {address} is not loopback: keep it off the agents' network"),
        );
    }
    Some(Admin { address })
}

pub(super) fn check_interception(
    r: &mut Report<'_>,
    v: &Value,
    base: &Path,
) -> Option<Interception> {
    let p = YamlPath::root().key("interception");
    let raw = r.item::<RawInterception>(&p, v)?;
    let ca_cert = resolve(base, &raw.ca_cert);
    let ca_key = resolve(base, &raw.ca_key);
    let ok = read_certs(r, &p.key("ca_cert"), &ca_cert).is_some()
        & check_key_file(r, &p.key("ca_key"), &ca_key);
    if !ok {
        return None;
    }
    match crate::pki::mint::Minter::load(&ca_cert, &ca_key) {
        Ok(minter) => Some(Interception {
            ca_cert,
            ca_key,
            minter: std::sync::Arc::new(minter),
        }),
        Err(e) => {
            r.error(&p, format!("the interception CA cannot sign: {e}"));
            None
        }
    }
}
