//! `slapenir::pki` checked with real tools: OpenSSL verifies the chains and shows the extensions,
//! Python's `ssl` (OpenSSL) and rustls (what the gateway uses) complete mTLS handshakes with the
//! files, and the overwrite rules (refuse, force, keep-existing) and file modes hold.
use std::fs;
use std::io::{BufRead, BufReader};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use proptest::prelude::*;
use rcgen::{CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use slapenir::pki::{
    init, issue_client_cert, CertSummary, InitOptions, InitReport, Outcome, PkiError, GATEWAY_CERT,
    GATEWAY_KEY, INTERCEPT_CA_CERT, INTERCEPT_CA_KEY, INTERMEDIATE_CA_CERT, INTERMEDIATE_CA_KEY,
    ROOT_CA_CERT, ROOT_CA_KEY, SECRETS_DIR,
};
use tempfile::TempDir;

const AGENT_CERT: &str = "agent-1.crt";
const AGENT_KEY: &str = "agent-1.key";

/// Every file `init` writes with default options, in layout order.
const ALL_FILES: [&str; 10] = [
    ROOT_CA_CERT,
    ROOT_CA_KEY,
    INTERMEDIATE_CA_CERT,
    INTERMEDIATE_CA_KEY,
    GATEWAY_CERT,
    GATEWAY_KEY,
    AGENT_CERT,
    AGENT_KEY,
    INTERCEPT_CA_CERT,
    INTERCEPT_CA_KEY,
];

/// The environment points OpenSSL-based tools at the system bundle; the tests pass their CA
/// explicitly and clear these so nothing else can make a chain verify.
const TRUST_ENV: [&str; 6] = [
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "REQUESTS_CA_BUNDLE",
    "CURL_CA_BUNDLE",
    "NIX_SSL_CERT_FILE",
    "PIP_CERT",
];

fn fresh_pki() -> (TempDir, InitReport) {
    let dir = tempfile::tempdir().unwrap();
    let report = init(dir.path(), InitOptions::default()).unwrap();
    (dir, report)
}

fn tool(program: &str) -> Command {
    let mut cmd = Command::new(program);
    for var in TRUST_ENV {
        cmd.env_remove(var);
    }
    cmd
}

fn run(cmd: &mut Command) -> (bool, String) {
    let Output {
        status,
        stdout,
        stderr,
    } = cmd.output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&stdout),
        String::from_utf8_lossy(&stderr)
    );
    (status.success(), text)
}

/// `openssl verify` of `cert` against `root` with `untrusted` as the intermediate.
fn openssl_verify(root: &Path, untrusted: &Path, cert: &Path, purpose: &str) -> (bool, String) {
    run(tool("openssl")
        .args([
            "verify",
            "-no-CApath",
            "-no-CAstore",
            "-purpose",
            purpose,
            "-CAfile",
        ])
        .arg(root)
        .arg("-untrusted")
        .arg(untrusted)
        .arg(cert))
}

fn openssl_text(path: &Path) -> String {
    let (ok, text) = run(tool("openssl")
        .args(["x509", "-noout", "-text", "-in"])
        .arg(path));
    assert!(ok, "openssl x509 {}: {text}", path.display());
    text
}

fn pem_blocks(path: &Path) -> Vec<String> {
    let text = fs::read_to_string(path).unwrap();
    text.split_inclusive("-----END CERTIFICATE-----\n")
        .map(str::to_owned)
        .collect()
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn snapshot(dir: &Path) -> Vec<(&'static str, Vec<u8>, SystemTime)> {
    ALL_FILES
        .iter()
        .filter(|rel| dir.join(rel).exists())
        .map(|rel| {
            let path = dir.join(rel);
            let modified = fs::metadata(&path).unwrap().modified().unwrap();
            (*rel, fs::read(&path).unwrap(), modified)
        })
        .collect()
}

/// Mints a leaf with the interception CA in `dir`, as a leaked interception key would allow.
/// Returns the chain file (leaf, interception CA) and the key file.
fn mint_with_interception_ca(
    dir: &Path,
    name: &str,
    ekus: &[ExtendedKeyUsagePurpose],
) -> (PathBuf, PathBuf) {
    let ca_pem = fs::read_to_string(dir.join(INTERCEPT_CA_CERT)).unwrap();
    let ca_key =
        KeyPair::from_pem(&fs::read_to_string(dir.join(INTERCEPT_CA_KEY)).unwrap()).unwrap();
    let issuer = Issuer::from_ca_cert_pem(&ca_pem, ca_key).unwrap();
    let mut params = CertificateParams::new(vec![name.to_owned()]).unwrap();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = ekus.to_vec();
    params.use_authority_key_identifier_extension = true;
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();
    let (cert_path, key_path) = (
        dir.join(format!("minted-{name}.crt")),
        dir.join(format!("minted-{name}.key")),
    );
    fs::write(&cert_path, format!("{}{ca_pem}", cert.pem())).unwrap();
    fs::write(&key_path, key.serialize_pem()).unwrap();
    (cert_path, key_path)
}

#[test]
fn openssl_verifies_each_leaf_for_its_purpose_only() {
    let (dir, _) = fresh_pki();
    let d = dir.path();
    // (case, certificate, purpose, verifies)
    let cases = [
        ("gateway as server", GATEWAY_CERT, "sslserver", true),
        ("gateway as client", GATEWAY_CERT, "sslclient", false),
        ("agent as client", AGENT_CERT, "sslclient", true),
        ("agent as server", AGENT_CERT, "sslserver", false),
    ];
    for (case, cert, purpose, want) in cases {
        let (ok, out) = openssl_verify(
            &d.join(ROOT_CA_CERT),
            &d.join(INTERMEDIATE_CA_CERT),
            &d.join(cert),
            purpose,
        );
        assert_eq!(ok, want, "case {case}: {out}");
        if !want {
            // Refused at depth 0: the leaf's own extended key usage.
            assert!(
                out.contains("error 26 at 0 depth lookup: unsuitable certificate purpose"),
                "case {case}: {out}"
            );
        }
    }
}

#[test]
fn openssl_shows_the_expected_extensions() {
    let (dir, _) = fresh_pki();
    // (file, text that must appear, text that must not)
    let cases: [(&str, &[&str], &[&str]); 5] = [
        (
            ROOT_CA_CERT,
            &[
                "Subject: CN = SLAPENIR Development Root CA",
                "CA:TRUE, pathlen:1",
                "Certificate Sign, CRL Sign",
            ],
            &["Extended Key Usage"],
        ),
        (
            INTERMEDIATE_CA_CERT,
            &[
                "Issuer: CN = SLAPENIR Development Root CA",
                "CA:TRUE, pathlen:0",
                "Certificate Sign, CRL Sign",
            ],
            &["Extended Key Usage"],
        ),
        (
            GATEWAY_CERT,
            &[
                "Subject: CN = proxy\n",
                "DNS:proxy, DNS:localhost, IP Address:127.0.0.1\n",
                "TLS Web Server Authentication\n",
                "CA:FALSE",
            ],
            &["Client Authentication"],
        ),
        (
            AGENT_CERT,
            &[
                "Subject: CN = agent-1\n",
                "URI:spiffe://slapenir/agent/agent-1, DNS:agent-1\n",
                "TLS Web Client Authentication\n",
                "CA:FALSE",
            ],
            &["Server Authentication"],
        ),
        (
            INTERCEPT_CA_CERT,
            &[
                "Issuer: CN = SLAPENIR Development Root CA",
                "CA:TRUE, pathlen:0",
                "Certificate Sign\n",
                "TLS Web Server Authentication\n",
            ],
            &["Client Authentication"],
        ),
    ];
    for (file, present, absent) in cases {
        let text = openssl_text(&dir.path().join(file));
        for want in present.iter().chain(&[
            "ASN1 OID: prime256v1",
            "Signature Algorithm: ecdsa-with-SHA256",
        ]) {
            assert!(text.contains(want), "{file} lacks {want:?}:\n{text}");
        }
        for unwanted in absent {
            assert!(!text.contains(unwanted), "{file} has {unwanted:?}:\n{text}");
        }
    }
}

#[test]
fn leaf_files_hold_the_leaf_then_the_intermediate() {
    let (dir, _) = fresh_pki();
    let intermediate = fs::read_to_string(dir.path().join(INTERMEDIATE_CA_CERT)).unwrap();
    for (file, blocks) in [
        (ROOT_CA_CERT, 1),
        (INTERMEDIATE_CA_CERT, 1),
        (GATEWAY_CERT, 2),
        (AGENT_CERT, 2),
        (INTERCEPT_CA_CERT, 1),
    ] {
        let pems = pem_blocks(&dir.path().join(file));
        assert_eq!(pems.len(), blocks, "{file}");
        if blocks == 2 {
            assert_eq!(pems[1], intermediate, "{file}: second certificate");
            assert_ne!(pems[0], intermediate, "{file}: first certificate");
        }
    }
    for key in [
        ROOT_CA_KEY,
        INTERMEDIATE_CA_KEY,
        GATEWAY_KEY,
        AGENT_KEY,
        INTERCEPT_CA_KEY,
    ] {
        let pem = fs::read_to_string(dir.path().join(key)).unwrap();
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----\n"), "{key}");
        let (ok, text) = run(tool("openssl")
            .args(["pkey", "-noout", "-text", "-in"])
            .arg(dir.path().join(key)));
        assert!(
            ok && text.contains("ASN1 OID: prime256v1"),
            "{key} is not P-256"
        );
    }
}

#[test]
fn interception_ca_chains_to_the_root_but_cannot_mint_client_certificates() {
    let (dir, _) = fresh_pki();
    let d = dir.path();
    let (ok, out) = run(tool("openssl")
        .args(["verify", "-no-CApath", "-no-CAstore", "-CAfile"])
        .arg(d.join(ROOT_CA_CERT))
        .arg(d.join(INTERCEPT_CA_CERT)));
    assert!(ok, "interception CA does not chain to the root: {out}");

    use ExtendedKeyUsagePurpose::{ClientAuth, ServerAuth};
    // (case, EKUs of the minted leaf, purpose checked, verifies)
    let cases: [(&str, &[ExtendedKeyUsagePurpose], &str, bool); 4] = [
        ("server leaf as server", &[ServerAuth], "sslserver", true),
        ("client leaf as client", &[ClientAuth], "sslclient", false),
        (
            "dual leaf as client",
            &[ServerAuth, ClientAuth],
            "sslclient",
            false,
        ),
        (
            "dual leaf as server",
            &[ServerAuth, ClientAuth],
            "sslserver",
            true,
        ),
    ];
    for (i, (case, ekus, purpose, want)) in cases.into_iter().enumerate() {
        let (cert, _) = mint_with_interception_ca(d, &format!("host{i}.example"), ekus);
        let (ok, out) = openssl_verify(
            &d.join(ROOT_CA_CERT),
            &d.join(INTERCEPT_CA_CERT),
            &cert,
            purpose,
        );
        assert_eq!(ok, want, "case {case}: {out}");
        if !want {
            // Refused at depth 1: the interception CA's extended key usage, not the leaf's.
            assert!(
                out.contains("error 26 at 1 depth lookup: unsuitable certificate purpose"),
                "case {case}: {out}"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Python ssl (OpenSSL) handshakes

/// Serves mTLS on an ephemeral port: prints the port, then for each of N connections one line,
/// `ok <client CN>` or `fail <reason>`, answering a successful client with `hello <CN>`.
const PY_SERVER: &str = r#"
import socket, ssl, sys
cert, key, ca, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(cert, key)
ctx.load_verify_locations(cafile=ca)
ctx.verify_mode = ssl.CERT_REQUIRED
srv = socket.socket()
srv.bind(("127.0.0.1", 0))
srv.listen(8)
srv.settimeout(30)
print(srv.getsockname()[1], flush=True)
for _ in range(n):
    conn, _ = srv.accept()
    conn.settimeout(30)
    try:
        tls = ctx.wrap_socket(conn, server_side=True)
        cn = dict(x[0] for x in tls.getpeercert()["subject"])["commonName"]
        tls.sendall(("hello " + cn).encode())
        print("ok", cn, flush=True)
        tls.close()
    except (ssl.SSLError, OSError) as e:
        print("fail", getattr(e, "reason", None) or e, flush=True)
        conn.close()
"#;

/// Connects to 127.0.0.1:PORT as SERVER_NAME trusting CA, optionally with a client certificate;
/// prints `ok <reply>` or `fail <reason>`.
const PY_CLIENT: &str = r#"
import socket, ssl, sys
port, name, ca = int(sys.argv[1]), sys.argv[2], sys.argv[3]
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.load_verify_locations(cafile=ca)
if len(sys.argv) > 4:
    ctx.load_cert_chain(sys.argv[4], sys.argv[5])
try:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        with ctx.wrap_socket(sock, server_hostname=name) as tls:
            reply = tls.recv(100)
            print("ok", reply.decode() if reply else "<closed>")
except (ssl.SSLError, OSError) as e:
    print("fail", getattr(e, "reason", None) or e)
"#;

#[test]
fn python_mtls_handshake_needs_the_agent_certificate() {
    let (dir, _) = fresh_pki();
    let d = dir.path();
    let root = d.join(ROOT_CA_CERT);
    let agent = Some((d.join(AGENT_CERT), d.join(AGENT_KEY)));
    // (case, server name the client checks, client certificate, client line, server line)
    let cases = [
        (
            "agent via proxy",
            "proxy",
            agent.clone(),
            "ok hello agent-1",
            "ok agent-1",
        ),
        (
            "agent via localhost",
            "localhost",
            agent.clone(),
            "ok hello agent-1",
            "ok agent-1",
        ),
        (
            "agent via 127.0.0.1",
            "127.0.0.1",
            agent.clone(),
            "ok hello agent-1",
            "ok agent-1",
        ),
        (
            "name not in SANs",
            "api.openai.com",
            agent.clone(),
            "fail CERTIFICATE_VERIFY_FAILED",
            "fail",
        ),
        (
            "no client certificate",
            "proxy",
            None,
            "fail",
            "fail PEER_DID_NOT_RETURN_A_CERTIFICATE",
        ),
    ];

    let mut server = tool("python3")
        .arg("-c")
        .arg(PY_SERVER)
        .arg(d.join(GATEWAY_CERT))
        .arg(d.join(GATEWAY_KEY))
        .arg(&root)
        .arg(cases.len().to_string())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(server.stdout.take().unwrap()).lines();
    let port = lines.next().unwrap().unwrap();

    for (case, name, client_cert, want_client, want_server) in cases {
        let mut client = tool("python3");
        client
            .arg("-c")
            .arg(PY_CLIENT)
            .arg(&port)
            .arg(name)
            .arg(&root);
        if let Some((cert, key)) = client_cert {
            client.arg(cert).arg(key);
        }
        let (ok, client_out) = run(&mut client);
        assert!(ok, "case {case}: client crashed: {client_out}");
        let server_out = lines.next().unwrap().unwrap();
        assert!(
            client_out.starts_with(want_client),
            "case {case}: client said {client_out:?}, want {want_client:?} (server: {server_out:?})"
        );
        assert!(
            server_out.starts_with(want_server),
            "case {case}: server said {server_out:?}, want {want_server:?}"
        );
    }
    assert!(server.wait().unwrap().success());
}

// ---------------------------------------------------------------------------------------------
// rustls (the gateway's TLS) handshakes

fn certs(path: &Path) -> Vec<CertificateDer<'static>> {
    slapenir::pki::pem::certs(&fs::read(path).unwrap()).unwrap()
}

fn key(path: &Path) -> PrivateKeyDer<'static> {
    slapenir::pki::pem::private_key(&fs::read(path).unwrap())
        .unwrap()
        .unwrap()
}

/// One mTLS handshake between a rustls server (gateway.crt, client certificates required from
/// root_ca.crt) and a rustls client trusting root_ca.crt. Returns the server's view: the client's
/// chain, or the error that ended the handshake.
fn rustls_handshake(
    dir: &Path,
    client_auth: Option<(PathBuf, PathBuf)>,
) -> Result<Vec<CertificateDer<'static>>, rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for cert in certs(&dir.join(ROOT_CA_CERT)) {
        roots.add(cert).unwrap();
    }
    let roots = Arc::new(roots);
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        roots.clone(),
        provider.clone(),
    )
    .build()
    .unwrap();
    let server_config = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs(&dir.join(GATEWAY_CERT)), key(&dir.join(GATEWAY_KEY)))
        .unwrap();
    let client_builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let client_config = match client_auth {
        Some((cert, key_path)) => client_builder
            .with_client_auth_cert(certs(&cert), key(&key_path))
            .unwrap(),
        None => client_builder.with_no_client_auth(),
    };

    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = std::thread::spawn(move || {
        let (mut sock, _) = listener.accept().unwrap();
        let mut conn = rustls::ServerConnection::new(Arc::new(server_config)).unwrap();
        while conn.is_handshaking() {
            if let Err(e) = conn.complete_io(&mut sock) {
                let inner = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>());
                return Err(inner.cloned().unwrap_or_else(|| panic!("server io: {e}")));
            }
        }
        Ok(conn.peer_certificates().unwrap_or_default().to_vec())
    });

    let mut sock = TcpStream::connect(addr).unwrap();
    let name = ServerName::try_from("proxy").unwrap();
    let mut conn = rustls::ClientConnection::new(Arc::new(client_config), name).unwrap();
    while conn.is_handshaking() {
        // A refused client learns it from the server's alert; the server's result is what counts.
        if conn.complete_io(&mut sock).is_err() {
            break;
        }
    }
    drop(sock);
    server.join().unwrap()
}

#[test]
fn rustls_accepts_the_agent_and_refuses_interception_minted_clients() {
    use rustls::{CertificateError, Error};
    let (dir, _) = fresh_pki();
    let d = dir.path();
    let (minted_cert, minted_key) =
        mint_with_interception_ca(d, "agent-1", &[ExtendedKeyUsagePurpose::ClientAuth]);

    let accepted = rustls_handshake(d, Some((d.join(AGENT_CERT), d.join(AGENT_KEY)))).unwrap();
    assert_eq!(accepted.first(), certs(&d.join(AGENT_CERT)).first());

    let minted = rustls_handshake(d, Some((minted_cert, minted_key))).unwrap_err();
    assert!(
        matches!(
            minted,
            Error::InvalidCertificate(
                CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. }
            )
        ),
        "interception-minted client certificate: {minted:?}"
    );

    let anonymous = rustls_handshake(d, None).unwrap_err();
    assert_eq!(anonymous, Error::NoCertificatesPresented);
}

// ---------------------------------------------------------------------------------------------
// Overwrite rules, modes, report

#[test]
fn refuses_to_overwrite_and_names_every_existing_file() {
    // (case, files present before the second init)
    let cases: [(&str, &[&str]); 3] = [
        ("complete PKI", &ALL_FILES),
        ("one stray key", &[GATEWAY_KEY]),
        ("root only", &[ROOT_CA_CERT, ROOT_CA_KEY]),
    ];
    for (case, present) in cases {
        let (dir, _) = fresh_pki();
        let d = dir.path();
        for rel in ALL_FILES.iter().filter(|f| !present.contains(f)) {
            fs::remove_file(d.join(rel)).unwrap();
        }
        let before: Vec<Vec<u8>> = present
            .iter()
            .map(|f| fs::read(d.join(f)).unwrap())
            .collect();

        let err = init(d, InitOptions::default()).unwrap_err();
        let PkiError::AlreadyExists { existing, .. } = &err else {
            panic!("case {case}: {err:?}");
        };
        let want: Vec<PathBuf> = present.iter().map(|f| d.join(f)).collect();
        assert_eq!(existing, &want, "case {case}");
        let message = err.to_string();
        for f in present {
            assert!(message.contains(f), "case {case}: {message}");
        }
        assert!(message.contains("--force"), "case {case}: {message}");
        let after: Vec<Vec<u8>> = present
            .iter()
            .map(|f| fs::read(d.join(f)).unwrap())
            .collect();
        assert_eq!(before, after, "case {case}: files changed");
        for rel in ALL_FILES.iter().filter(|f| !present.contains(f)) {
            assert!(!d.join(rel).exists(), "case {case}: {rel} was written");
        }
    }
}

#[test]
fn force_replaces_everything_and_restores_modes() {
    let (dir, _) = fresh_pki();
    let d = dir.path();
    let old = snapshot(d);
    fs::set_permissions(d.join(GATEWAY_KEY), fs::Permissions::from_mode(0o644)).unwrap();
    fs::set_permissions(d.join(SECRETS_DIR), fs::Permissions::from_mode(0o755)).unwrap();
    fs::write(d.join(ROOT_CA_CERT), "not a certificate").unwrap();

    let report = init(
        d,
        InitOptions {
            force: true,
            ..InitOptions::default()
        },
    )
    .unwrap();
    assert_eq!(report.outcome, Outcome::Written);
    let new = snapshot(d);
    assert_eq!(new.len(), ALL_FILES.len());
    for ((rel, old_bytes, _), (_, new_bytes, _)) in old.iter().zip(new) {
        assert_ne!(old_bytes, &new_bytes, "{rel} was not replaced");
    }
    assert_eq!(mode(&d.join(GATEWAY_KEY)), 0o600);
    assert_eq!(mode(&d.join(SECRETS_DIR)), 0o700);
    let (ok, out) = openssl_verify(
        &d.join(ROOT_CA_CERT),
        &d.join(INTERMEDIATE_CA_CERT),
        &d.join(GATEWAY_CERT),
        "sslserver",
    );
    assert!(ok, "{out}");
}

#[test]
fn file_modes() {
    let (dir, _) = fresh_pki();
    let d = dir.path();
    assert_eq!(mode(&d.join(SECRETS_DIR)), 0o700, "{SECRETS_DIR}/");
    for rel in ALL_FILES {
        let want = if rel.ends_with(".crt") { 0o644 } else { 0o600 };
        assert_eq!(mode(&d.join(rel)), want, "{rel}: {:o}", mode(&d.join(rel)));
    }
    let leftovers: Vec<_> = fs::read_dir(d)
        .unwrap()
        .chain(fs::read_dir(d.join(SECRETS_DIR)).unwrap())
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
}

fn keep() -> InitOptions {
    InitOptions {
        keep_existing: true,
        ..InitOptions::default()
    }
}

/// What `init` with `keep_existing` should answer: the outcome, or the files an error names.
#[derive(Debug)]
enum Want {
    Outcome(Outcome),
    Incomplete { missing: &'static [&'static str] },
    Unusable { files: &'static [&'static str] },
    InvalidOption(&'static str),
}

#[test]
fn keep_existing() {
    type Setup = fn(&Path);
    // (case, mint first, change before keeping, options, expected)
    let cases: [(&str, bool, Setup, InitOptions, Want); 8] = [
        (
            "empty directory is minted",
            false,
            |_| {},
            keep(),
            Want::Outcome(Outcome::Written),
        ),
        (
            "complete PKI is kept",
            true,
            |_| {},
            keep(),
            Want::Outcome(Outcome::Kept),
        ),
        (
            "missing key",
            true,
            |d| fs::remove_file(d.join(INTERCEPT_CA_KEY)).unwrap(),
            keep(),
            Want::Incomplete {
                missing: &[INTERCEPT_CA_KEY],
            },
        ),
        (
            "other agent name",
            true,
            |_| {},
            InitOptions {
                agent_name: "agent-7".to_owned(),
                ..keep()
            },
            Want::Incomplete {
                missing: &["agent-7.crt", "agent-7.key"],
            },
        ),
        (
            "corrupt certificate",
            true,
            |d| fs::write(d.join(INTERMEDIATE_CA_CERT), "garbage\n").unwrap(),
            keep(),
            // The leaves name the intermediate as the second certificate they should carry.
            Want::Unusable {
                files: &[INTERMEDIATE_CA_CERT, GATEWAY_CERT, AGENT_CERT],
            },
        ),
        (
            "swapped key",
            true,
            |d| {
                fs::copy(d.join(AGENT_KEY), d.join(GATEWAY_KEY)).unwrap();
            },
            keep(),
            Want::Unusable {
                files: &[GATEWAY_KEY],
            },
        ),
        (
            "gateway from another PKI",
            true,
            |d| {
                let other = tempfile::tempdir().unwrap();
                init(other.path(), InitOptions::default()).unwrap();
                for f in [GATEWAY_CERT, GATEWAY_KEY] {
                    fs::copy(other.path().join(f), d.join(f)).unwrap();
                }
            },
            keep(),
            Want::Unusable {
                files: &[GATEWAY_CERT, GATEWAY_CERT],
            },
        ),
        (
            "keep with force",
            true,
            |_| {},
            InitOptions {
                force: true,
                ..keep()
            },
            Want::InvalidOption("force"),
        ),
    ];
    for (case, mint_first, setup, opts, want) in cases {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        if mint_first {
            init(d, InitOptions::default()).unwrap();
        }
        setup(d);
        let before = snapshot(d);
        let got = init(d, opts);
        match (&got, &want) {
            (Ok(report), Want::Outcome(outcome)) => {
                assert_eq!(report.outcome, *outcome, "case {case}");
                assert_eq!(report.files.len(), ALL_FILES.len(), "case {case}");
                assert_eq!(report.certificates.len(), 5, "case {case}");
            }
            (Err(PkiError::Incomplete { missing, .. }), Want::Incomplete { missing: want }) => {
                let want: Vec<PathBuf> = want.iter().map(|f| d.join(f)).collect();
                assert_eq!(missing, &want, "case {case}");
            }
            (Err(PkiError::Unusable { problems, .. }), Want::Unusable { files }) => {
                let named: Vec<PathBuf> = problems.iter().map(|(p, _)| p.clone()).collect();
                let want: Vec<PathBuf> = files.iter().map(|f| d.join(f)).collect();
                assert_eq!(named, want, "case {case}: {problems:?}");
            }
            (Err(PkiError::InvalidOption { option, .. }), Want::InvalidOption(want)) => {
                assert_eq!(option, want, "case {case}");
            }
            _ => panic!("case {case}: got {got:?}, want {want:?}"),
        }
        // Keeping, or refusing to keep, never touches a file.
        if mint_first {
            assert_eq!(before, snapshot(d), "case {case}: files changed");
        }
    }
}

#[test]
fn report_lists_every_file_with_subject_and_expiry() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let two_days = Duration::from_secs(2 * 24 * 3600);
    let started = SystemTime::now();
    let report = init(
        d,
        InitOptions {
            leaf_validity: two_days,
            ..InitOptions::default()
        },
    )
    .unwrap();
    let want_files: Vec<PathBuf> = ALL_FILES.iter().map(|f| d.join(f)).collect();
    assert_eq!(report.files, want_files);

    let expires_in = |c: &CertSummary| c.not_after.duration_since(started).unwrap().as_secs();
    let day = 24 * 3600;
    // (file, subject, issuer CN, lifetime in days)
    let cases = [
        (
            ROOT_CA_CERT,
            "CN=SLAPENIR Development Root CA, O=SLAPENIR Development",
            "Root CA",
            3650,
        ),
        (
            INTERMEDIATE_CA_CERT,
            "CN=SLAPENIR Development Intermediate CA, O=SLAPENIR Development",
            "Root CA",
            1825,
        ),
        (GATEWAY_CERT, "CN=proxy", "Intermediate CA", 2),
        (AGENT_CERT, "CN=agent-1", "Intermediate CA", 2),
        (
            INTERCEPT_CA_CERT,
            "CN=SLAPENIR Development Interception CA, O=SLAPENIR Development",
            "Root CA",
            1825,
        ),
    ];
    assert_eq!(report.certificates.len(), cases.len());
    for (summary, (file, subject, issuer, days)) in report.certificates.iter().zip(cases) {
        assert_eq!(summary.path, d.join(file));
        assert_eq!(summary.subject, subject, "{file}");
        assert!(
            summary.issuer.contains(issuer),
            "{file}: issuer {}",
            summary.issuer
        );
        // Certificates carry whole seconds, and minting happens after `started`.
        let secs = expires_in(summary);
        assert!(
            (days * day - 1..days * day + 60).contains(&secs),
            "{file}: expires in {secs}s"
        );
    }
}

#[test]
fn issue_client_cert_signs_another_agent_with_the_intermediate() {
    let (dir, _) = fresh_pki();
    let d = dir.path();
    let (cert, key) = issue_client_cert(d, "agent-2", Duration::from_secs(3600)).unwrap();
    assert_eq!(
        (cert.clone(), key.clone()),
        (d.join("agent-2.crt"), d.join("agent-2.key"))
    );
    assert_eq!(mode(&key), 0o600);
    let (ok, out) = openssl_verify(
        &d.join(ROOT_CA_CERT),
        &d.join(INTERMEDIATE_CA_CERT),
        &cert,
        "sslclient",
    );
    assert!(ok, "{out}");
    let text = openssl_text(&cert);
    for want in [
        "Subject: CN = agent-2\n",
        "URI:spiffe://slapenir/agent/agent-2, DNS:agent-2\n",
        "TLS Web Client Authentication\n",
        "ASN1 OID: prime256v1",
    ] {
        assert!(text.contains(want), "lacks {want:?}:\n{text}");
    }
    assert_eq!(
        pem_blocks(&cert)[1],
        fs::read_to_string(d.join(INTERMEDIATE_CA_CERT)).unwrap()
    );
    let accepted = rustls_handshake(d, Some((cert, key))).unwrap();
    assert_eq!(accepted.first(), certs(&d.join("agent-2.crt")).first());
}

const DAY: Duration = Duration::from_secs(24 * 3600);

/// A PKI whose intermediate (replaced by one signed with the root key) expires in `lifetime`,
/// as an operator's would near the end of its five years.
fn pki_with_intermediate_expiring_in(lifetime: Duration) -> TempDir {
    let (dir, _) = fresh_pki();
    let d = dir.path();
    let root_key = KeyPair::from_pem(&fs::read_to_string(d.join(ROOT_CA_KEY)).unwrap()).unwrap();
    let root =
        Issuer::from_ca_cert_pem(&fs::read_to_string(d.join(ROOT_CA_CERT)).unwrap(), root_key)
            .unwrap();
    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "Short-lived Intermediate CA");
    params.is_ca = IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign];
    params.not_before = time::OffsetDateTime::now_utc();
    params.not_after = params.not_before + lifetime;
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &root).unwrap();
    fs::write(d.join(INTERMEDIATE_CA_CERT), cert.pem()).unwrap();
    fs::write(d.join(INTERMEDIATE_CA_KEY), key.serialize_pem()).unwrap();
    dir
}

#[test]
fn issue_client_cert_refusals() {
    let (dir, _) = fresh_pki();
    let d = dir.path();
    let empty = tempfile::tempdir().unwrap();
    let short = pki_with_intermediate_expiring_in(DAY);
    let hour = Duration::from_secs(3600);
    let five_years = slapenir::pki::INTERMEDIATE_CA_VALIDITY;
    // (case, directory, name, validity, what the error must say)
    let cases = [
        (
            "existing agent",
            d,
            "agent-1",
            hour,
            "refusing to overwrite",
        ),
        ("gateway's name", d, "gateway", hour, "invalid agent_name"),
        ("path in name", d, "../agent", hour, "invalid agent_name"),
        (
            "zero validity",
            d,
            "agent-3",
            Duration::ZERO,
            "invalid validity",
        ),
        (
            "longer than any intermediate",
            d,
            "agent-3",
            five_years * 2,
            "invalid validity",
        ),
        (
            "outlives the intermediate",
            short.path(),
            "agent-3",
            2 * DAY,
            "would outlive",
        ),
        (
            "no intermediate",
            empty.path(),
            "agent-3",
            hour,
            "intermediate_ca.crt: cannot read",
        ),
    ];
    for (case, dir, name, validity, want) in cases {
        let err = issue_client_cert(dir, name, validity).unwrap_err();
        assert!(err.to_string().contains(want), "case {case}: {err}");
    }
    assert!(!d.join("agent-3.crt").exists() && !d.join("agent-3.key").exists());
}

/// A key file that does not parse must be named in the error, never quoted: its bytes may be a
/// real key in a format we do not read (an encrypted step-ca key, a PKCS#1 RSA key).
#[test]
fn errors_name_bad_key_files_without_quoting_them() {
    const MARKER: &str = "MHcCAQEEIKEYMATERIALthatmustneverbeprinted";
    let bad_key =
        format!("-----BEGIN EC PRIVATE KEY-----\n{MARKER}\n-----END EC PRIVATE KEY-----\n");
    // (case, file replaced with the bad key, operation)
    type Op = fn(&Path) -> PkiError;
    let cases: [(&str, &str, Op); 2] = [
        ("keep existing", GATEWAY_KEY, |d| {
            init(d, keep()).unwrap_err()
        }),
        ("issue client certificate", INTERMEDIATE_CA_KEY, |d| {
            issue_client_cert(d, "agent-2", DAY).unwrap_err()
        }),
    ];
    for (case, file, op) in cases {
        let (dir, _) = fresh_pki();
        fs::write(dir.path().join(file), &bad_key).unwrap();
        let err = op(dir.path());
        let (shown, debug) = (err.to_string(), format!("{err:?}"));
        assert!(shown.contains(file), "case {case}: {shown}");
        assert!(
            !shown.contains(MARKER) && !debug.contains(MARKER),
            "case {case}: {shown}"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// An agent name is accepted exactly when it is a lowercase DNS label (not `gateway`), and an
    /// accepted name always yields its two files inside the directory and nowhere else.
    #[test]
    fn agent_name_is_accepted_iff_it_is_a_dns_label(
        name in prop_oneof![
            "[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?",
            "[a-zA-Z0-9./_ -]{0,12}",
            "\\PC{0,8}",
        ]
    ) {
        let is_label = !name.is_empty()
            && name.len() <= 63
            && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !name.starts_with('-')
            && !name.ends_with('-')
            && name != "gateway";
        let dir = tempfile::tempdir().unwrap();
        let pki = dir.path().join("certs");
        let got = init(&pki, InitOptions { agent_name: name.clone(), ..InitOptions::default() });
        prop_assert_eq!(got.is_ok(), is_label, "{:?}: {:?}", name, got.as_ref().err());
        if is_label {
            let (cert, key) = (pki.join(format!("{name}.crt")), pki.join(format!("{name}.key")));
            prop_assert!(cert.is_file() && key.is_file());
            let outside: Vec<_> = fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
            prop_assert_eq!(outside, vec![std::ffi::OsString::from("certs")]);
        } else {
            prop_assert!(!pki.exists(), "rejected name {:?} still wrote files", name);
        }
    }
}
