//! AWS Signature Version 4 through the gateway, with real programs on both sides: boto3 holding
//! only dummy keys, using the gateway as its HTTPS proxy (mTLS to the proxy, `CONNECT`, TLS
//! interception), and an S3-like upstream over TLS (`tests/traffic/aws/sigv4_upstream.py`) that checks
//! every signature with botocore's own signer and the real keys.
//!
//! The upstream counts what it verified and rejected, and lists the access key ids it saw; the
//! client dumps every response it received, which is searched for every decodable form of the
//! real key id, secret and session token.
use crate::common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::child::ServerProcess;
use common::decode::any_decoding_holds;
use common::gateway::GatewayProcess;
use common::pki::TestPki;
use serde_json::Value;

const REAL_KEY_ID: &str = "AKIAREALTESTKEY00001";
const REAL_SECRET: &str = "real+Secret/Test0000000000000000000000000";
const REAL_TOKEN: &str = "REALsessionTOKEN//+==";
const DUMMY_KEY_ID: &str = "AKIADUMMYTESTKEY0001";
const DUMMY_SECRET: &str = "dummy-secret-key-for-the-agent-only-0000";
const DUMMY_TOKEN: &str = "dummy-session-token-0001";

fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/traffic/aws")
        .join(name)
}

/// The S3-like upstream.
struct S3 {
    _server: ServerProcess,
    port: u16,
    ca: PathBuf,
}

impl S3 {
    fn start(dir: &Path) -> S3 {
        let pki_dir = dir.join("s3-pki");
        let pki = TestPki::new(&pki_dir);
        let mut cmd = Command::new("python3");
        cmd.arg(script("sigv4_upstream.py"))
            .arg("--cert")
            .arg(pki.server_cert_path())
            .arg("--key")
            .arg(pki.server_key_path())
            .args(["--access-key-id", REAL_KEY_ID, "--secret-key", REAL_SECRET])
            .args(["--session-token", REAL_TOKEN]);
        let server = ServerProcess::start(cmd, "the S3 test upstream (python3 with botocore)");
        S3 {
            port: server.port,
            _server: server,
            ca: pki.ca_path().to_owned(),
        }
    }

    /// `GET /_stats`: verified and rejected counts and the access key ids seen.
    fn stats(&self) -> Value {
        let out = Command::new("curl")
            .args(["-sS", "--max-time", "10", "--cacert"])
            .arg(&self.ca)
            .arg(format!("https://127.0.0.1:{}/_stats", self.port))
            .env_remove("CURL_CA_BUNDLE")
            .env_remove("SSL_CERT_FILE")
            .output()
            .unwrap();
        serde_json::from_slice(&out.stdout).expect("stats JSON")
    }
}

/// A gateway that owns the AWS credential for `s3.test`, routed to the test upstream.
/// `real_secret` lets a test give it a wrong real secret (so the upstream rejects).
fn gateway(s3: &S3, real_secret: &str) -> (GatewayProcess, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    slapenir::pki::init(&certs, slapenir::pki::InitOptions::default()).unwrap();
    let c = certs.display();
    let listener = common::gateway::mtls_listener(&certs);
    let config = format!(
        "{listener}admin:\n  address: {{admin}}\n\
         interception:\n  ca_cert: {c}/intercept_ca.crt\n  ca_key: {c}/intercept_ca.key\n\
         upstreams:\n  s3:\n    url: https://127.0.0.1:{port}\n    ca: {ca}\n\
         \x20 elsewhere:\n    url: http://127.0.0.1:9\n\
         credentials:\n\
         \x20 aws-main:\n    kind: aws\n\
         \x20   access_key_id: {{ dummy: {DUMMY_KEY_ID}, real: {{ env: T_AWS_KEY_ID }} }}\n\
         \x20   secret_access_key: {{ dummy: {DUMMY_SECRET}, real: {{ env: T_AWS_SECRET }} }}\n\
         \x20   session_token: {{ dummy: {DUMMY_TOKEN}, real: {{ env: T_AWS_TOKEN }} }}\n\
         \x20   upstreams: [s3]\n\
         routes:\n  - host: s3.test\n    upstream: s3\n  - host: elsewhere.test\n    upstream: elsewhere\n",
        port = s3.port,
        ca = s3.ca.display(),
    );
    let gw = GatewayProcess::start_in(
        dir,
        &config,
        &[
            ("T_AWS_KEY_ID", REAL_KEY_ID),
            ("T_AWS_SECRET", real_secret),
            ("T_AWS_TOKEN", REAL_TOKEN),
        ],
    );
    (gw, certs)
}

/// Runs `boto_client.py --mode MODE` with the dummies through the gateway; returns its JSON
/// summary and every response it received (as text).
fn boto(gw: &GatewayProcess, certs: &Path, mode: &str, extra: &[&str]) -> (Value, String) {
    let dump = gw.dir().join(format!("responses-{mode}.json"));
    let f = |n: &str| certs.join(n).display().to_string();
    let out = Command::new("python3")
        .arg(script("boto_client.py"))
        .args(["--mode", mode, "--endpoint-url", "https://s3.test"])
        .arg("--proxy")
        .arg(format!("https://127.0.0.1:{}", gw.listen.port()))
        .args(["--proxy-ca", &f("root_ca.crt")])
        .args([
            "--proxy-cert",
            &f("agent-1.crt"),
            "--proxy-key",
            &f("agent-1.key"),
        ])
        .args(["--ca-bundle", &f("root_ca.crt")])
        .arg("--dump-responses")
        .arg(&dump)
        .args(extra)
        .env("AWS_ACCESS_KEY_ID", DUMMY_KEY_ID)
        .env("AWS_SECRET_ACCESS_KEY", DUMMY_SECRET)
        .env("AWS_SESSION_TOKEN", DUMMY_TOKEN)
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .env_remove("HTTPS_PROXY")
        .env_remove("https_proxy")
        .env_remove("REQUESTS_CA_BUNDLE")
        .env_remove("SSL_CERT_FILE")
        .env_remove("CURL_CA_BUNDLE")
        .env_remove("AWS_CA_BUNDLE")
        .output()
        .expect("run boto_client.py (python3 with boto3)");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "boto_client.py {mode} failed:\n{stdout}\n{stderr}"
    );
    let summary: Value = serde_json::from_str(&stdout).expect("summary JSON");
    let responses = std::fs::read_to_string(&dump).unwrap_or_default();
    (summary, format!("{stdout}{stderr}{responses}"))
}

/// Nothing the agent saw decodes to a real part of the key.
fn assert_no_real_key_material(agent_saw: &str, what: &str) {
    for (name, real) in [
        ("access key id", REAL_KEY_ID),
        ("secret", REAL_SECRET),
        ("session token", REAL_TOKEN),
    ] {
        assert!(
            !any_decoding_holds(agent_saw.as_bytes(), real.as_bytes()),
            "{what}: the real {name} reached the agent"
        );
    }
}

fn assert_gateway_clean(gw: &GatewayProcess) {
    let out = format!("{}{}", gw.stdout(), gw.stderr());
    for real in [REAL_KEY_ID, REAL_SECRET, REAL_TOKEN] {
        assert!(
            !any_decoding_holds(out.as_bytes(), real.as_bytes()),
            "the gateway logged a real value"
        );
    }
}

#[test]
fn boto3_round_trip_is_verified_and_signed_again_with_the_real_key() {
    let tmp = tempfile::tempdir().unwrap();
    let s3 = S3::start(tmp.path());
    let (gw, certs) = gateway(&s3, REAL_SECRET);
    // boto3's default upload is an aws-chunked body with a CRC32 trailer; with
    // `when_required` it is a plain body signed over its SHA-256, which the gateway reads,
    // checks and hashes again.
    for checksum in ["when_supported", "when_required"] {
        let (summary, saw) = boto(&gw, &certs, "roundtrip", &["--checksum", checksum]);
        for (step, status) in [
            ("put", 200),
            ("get", 200),
            ("head", 200),
            ("presigned_get", 200),
            ("missing_key", 404),
        ] {
            assert_eq!(summary[step], status, "{checksum} {step}: {summary}");
        }
        assert_eq!(summary["get_matches"], true, "{checksum}: {summary}");
        assert_eq!(summary["presigned_matches"], true, "{checksum}: {summary}");
        let payloads: Vec<&str> = summary["sent"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|s| s["payload_hash"].as_str())
            .collect();
        let expected = if checksum == "when_required" {
            "hex"
        } else {
            "STREAMING-UNSIGNED-PAYLOAD-TRAILER"
        };
        assert!(payloads.contains(&expected), "{checksum}: {payloads:?}");
        assert_no_real_key_material(&saw, checksum);
    }
    let stats = s3.stats();
    assert_eq!(stats["rejected"], 0, "{stats}");
    assert!(stats["verified"].as_u64().unwrap() >= 10, "{stats}");
    for id in stats["access_key_ids"].as_array().unwrap() {
        assert_eq!(id, REAL_KEY_ID, "the upstream saw another key id");
    }
    assert_gateway_clean(&gw);
}

#[test]
fn forged_or_altered_requests_are_refused_and_nothing_is_sent() {
    let tmp = tempfile::tempdir().unwrap();
    let s3 = S3::start(tmp.path());
    let (gw, certs) = gateway(&s3, REAL_SECRET);
    let before = s3.stats();
    let cases: [(&str, &[(&str, u64)]); 4] = [
        ("wrong-secret", &[("get", 403), ("put", 403)]),
        ("alter-header", &[("put", 403)]),
        ("alter-body", &[("put", 403)]),
        ("alter-presigned", &[("presigned_get", 403)]),
    ];
    for (mode, want) in cases {
        let (summary, saw) = boto(&gw, &certs, mode, &[]);
        for (step, status) in want {
            assert_eq!(summary[step], *status, "{mode} {step}: {summary}");
        }
        assert!(saw.contains("AWS Signature Version 4"), "{mode}: {saw}");
        assert_no_real_key_material(&saw, mode);
    }
    // Nothing reached the upstream.
    let after = s3.stats();
    assert_eq!(before["verified"], after["verified"], "{after}");
    assert_eq!(before["rejected"], after["rejected"], "{after}");
    let audit = gw.stdout();
    assert!(audit.contains("aws_signature_invalid"), "{audit}");
    assert_gateway_clean(&gw);
}

/// An upstream that rejects the gateway's signature answers as S3 does: the error echoes the
/// access key id, the string to sign and the canonical request (which holds the session token)
/// as text and as hex bytes. The agent sees only dummies.
#[test]
fn aws_error_bodies_echoing_key_material_are_scrubbed() {
    let tmp = tempfile::tempdir().unwrap();
    let s3 = S3::start(tmp.path());
    let (gw, certs) = gateway(&s3, "not+the/real0secret000000000000000000000");
    let (summary, saw) = boto(&gw, &certs, "roundtrip", &["--checksum", "when_required"]);
    assert_eq!(summary["put"], 403, "{summary}");
    let stats = s3.stats();
    assert!(stats["rejected"].as_u64().unwrap() >= 1, "{stats}");
    // The upstream did echo: its error names the key id it received (now the dummy, for the
    // agent) and dumps the canonical request bytes.
    assert!(
        saw.contains(&format!("<AWSAccessKeyId>{DUMMY_KEY_ID}</AWSAccessKeyId>")),
        "{saw}"
    );
    assert!(saw.contains("CanonicalRequestBytes"), "{saw}");
    assert_no_real_key_material(&saw, "error bodies");
    assert_gateway_clean(&gw);
}

/// Refusals that ordinary SDKs never produce, sent by hand inside a tunnel: chunk-signed
/// uploads (501), the dummy secret itself (403), and the AWS key's dummy sent to a host it is
/// not bound to (403). None reaches an upstream.
#[test]
fn hand_made_refusals() {
    let tmp = tempfile::tempdir().unwrap();
    let s3 = S3::start(tmp.path());
    let (gw, certs) = gateway(&s3, REAL_SECRET);
    let before = s3.stats();
    let now = time::OffsetDateTime::now_utc();
    let amz_date = format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
        now.year(),
        u8::from(now.month()),
        now.day(),
        now.hour(),
        now.minute(),
        now.second()
    );
    let day = &amz_date[..8];
    let auth = format!(
        "AWS4-HMAC-SHA256 Credential={DUMMY_KEY_ID}/{day}/us-east-1/s3/aws4_request, SignedHeaders=host;x-amz-content-sha256;x-amz-date, Signature={}",
        "0".repeat(64)
    );
    let cases: Vec<(&str, &str, Vec<String>, u16, &str)> = vec![
        (
            "chunk-signed upload",
            "s3.test",
            vec![
                format!("Authorization: {auth}"),
                format!("X-Amz-Date: {amz_date}"),
                "X-Amz-Content-SHA256: STREAMING-AWS4-HMAC-SHA256-PAYLOAD".into(),
            ],
            501,
            "AWS Signature Version 4",
        ),
        (
            "the dummy secret itself",
            "s3.test",
            vec![format!("X-Leak: {DUMMY_SECRET}")],
            403,
            "never sent",
        ),
        (
            "the dummy key id to another host",
            "elsewhere.test",
            vec![
                format!("Authorization: {auth}"),
                format!("X-Amz-Date: {amz_date}"),
            ],
            403,
            "aws-main.access_key_id",
        ),
    ];
    for (name, host, headers, status, message) in &cases {
        let mut args: Vec<String> = vec![
            "-sS".into(),
            "-i".into(),
            "--max-time".into(),
            "20".into(),
            "--proxy".into(),
            format!("https://127.0.0.1:{}", gw.listen.port()),
            "--proxy-cacert".into(),
            certs.join("root_ca.crt").display().to_string(),
            "--proxy-cert".into(),
            certs.join("agent-1.crt").display().to_string(),
            "--proxy-key".into(),
            certs.join("agent-1.key").display().to_string(),
            "--cacert".into(),
            certs.join("root_ca.crt").display().to_string(),
        ];
        for h in headers {
            args.push("-H".into());
            args.push(h.clone());
        }
        args.push(format!("https://{host}/bucket/key"));
        let out = Command::new("curl")
            .args(&args)
            .env_remove("CURL_CA_BUNDLE")
            .env_remove("SSL_CERT_FILE")
            .env_remove("HTTPS_PROXY")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let got = text
            .lines()
            .rfind(|l| l.starts_with("HTTP/"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|s| s.parse::<u16>().ok());
        assert_eq!(got, Some(*status), "{name}: {text}");
        assert!(text.contains(message), "{name}: `{message}` not in {text}");
    }
    let after = s3.stats();
    assert_eq!(before["verified"], after["verified"]);
    assert_eq!(before["rejected"], after["rejected"]);
    assert_gateway_clean(&gw);
}
