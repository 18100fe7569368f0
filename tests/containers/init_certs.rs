//! `init-certs` in each of its branches, with a stand-in `step` on `PATH`.

use super::*;

/// Stand-in for smallstep's `step` CLI, which cannot be installed on this machine: it records
/// each invocation's arguments (one line each) and writes the files the real subcommand would.
const STANDIN_STEP: &str = r#"#!/bin/sh
# Stand-in for `step` (tests/containers/containers.rs): records its arguments, writes what step would.
printf '%s\n' "$*" >>"$STANDIN_LOG"
for arg; do second_last=${last:-}; last=$arg; done
case "$1 $2" in
    "ca health") ;;
    "ca bootstrap")
        mkdir -p "$STEPPATH/certs"
        cp "$STANDIN_ROOT" "$STEPPATH/certs/root_ca.crt" ;;
    "ca certificate")
        cp "$STANDIN_ISSUED_CRT" "$4"
        cp "$STANDIN_ISSUED_KEY" "$5" ;;
    "ca renew")
        if [ "${STANDIN_RENEW_FAILS:-0}" = 1 ]; then
            echo "stand-in step: renewal refused" >&2
            exit 1
        fi
        cp "$STANDIN_RENEWED_CRT" "$second_last"
        cp "$STANDIN_RENEWED_KEY" "$last" ;;
    *)
        echo "stand-in step: unexpected command: $*" >&2
        exit 64 ;;
esac
"#;

/// The certificate an agent may already hold when init-certs runs.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Existing {
    None,
    Fresh,
    Expiring,
    Expired,
}

/// Writes an agent certificate that expired an hour ago, signed by the PKI's intermediate.
fn write_expired_cert(certs: &Path, name: &str) {
    let ca_pem = fs::read_to_string(certs.join("intermediate_ca.crt")).unwrap();
    let ca_key = rcgen::KeyPair::from_pem(
        &fs::read_to_string(certs.join("secrets/intermediate_ca_key")).unwrap(),
    )
    .unwrap();
    let issuer = rcgen::Issuer::from_ca_cert_pem(&ca_pem, ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["agent-1".to_owned()]).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "agent-1");
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::days(2);
    params.not_after = now - time::Duration::hours(1);
    let cert = params.signed_by(&key, &issuer).unwrap();
    fs::write(
        certs.join(format!("{name}.crt")),
        format!("{}{ca_pem}", cert.pem()),
    )
    .unwrap();
    fs::write(certs.join(format!("{name}.key")), key.serialize_pem()).unwrap();
}

#[test]
fn init_certs_branches() {
    struct Case {
        name: &'static str,
        existing: Existing,
        token: bool,
        renew_fails: bool,
        /// The `step` subcommands expected, in order.
        calls: &'static [&'static str],
        /// Which certificate ends up in place: "kept", "issued", "renewed", or "" on failure.
        result: &'static str,
    }
    let cases = [
        Case {
            name: "present",
            existing: Existing::Fresh,
            token: true,
            renew_fails: false,
            calls: &[],
            result: "kept",
        },
        Case {
            name: "missing",
            existing: Existing::None,
            token: true,
            renew_fails: false,
            calls: &["ca health", "ca bootstrap", "ca certificate"],
            result: "issued",
        },
        Case {
            name: "expiring",
            existing: Existing::Expiring,
            token: true,
            renew_fails: false,
            calls: &["ca health", "ca renew"],
            result: "renewed",
        },
        Case {
            name: "expiring, renewal refused",
            existing: Existing::Expiring,
            token: true,
            renew_fails: true,
            calls: &[
                "ca health",
                "ca renew",
                "ca health",
                "ca bootstrap",
                "ca certificate",
            ],
            result: "issued",
        },
        Case {
            name: "expired",
            existing: Existing::Expired,
            token: true,
            renew_fails: false,
            calls: &["ca health", "ca bootstrap", "ca certificate"],
            result: "issued",
        },
        Case {
            name: "missing, no token",
            existing: Existing::None,
            token: false,
            renew_fails: false,
            // It waits for the CA, then (AGENT_CA_WAIT) for a token that never comes.
            calls: &["ca health"],
            result: "",
        },
    ];
    tool("openssl", "apt-get install -y openssl");

    // One PKI provides every certificate the cases need.
    let pki_dir = tempfile::tempdir().unwrap();
    let pki = dev_pki(pki_dir.path());
    let day = Duration::from_secs(86_400);
    for (name, validity) in [
        ("fresh", 30 * day),
        ("soon", Duration::from_secs(3600)),
        ("issued", 30 * day),
        ("renewed", 30 * day),
    ] {
        slapenir::pki::issue_client_cert(&pki, name, validity).unwrap();
    }
    write_expired_cert(&pki, "expired");
    let root = pki.join("root_ca.crt");
    let root_pem = fs::read_to_string(&root).unwrap();
    let system_bundle = pki.join("intermediate_ca.crt");
    let token = "enroll-token-5f1e2d3c4b5a6978";

    for case in cases {
        let dir = tempfile::tempdir().unwrap();
        let certs = dir.path().join("home/agent/certs");
        let enroll = dir.path().join("enroll");
        let bin = dir.path().join("bin");
        for d in [&certs, &enroll, &bin] {
            fs::create_dir_all(d).unwrap();
        }
        let step = bin.join("step");
        fs::write(&step, STANDIN_STEP).unwrap();
        fs::set_permissions(&step, fs::Permissions::from_mode(0o755)).unwrap();
        fs::write(enroll.join("root_ca.fingerprint"), "f1ng3rpr1nt\n").unwrap();
        if case.token {
            fs::write(enroll.join("agent-1.token"), token).unwrap();
        }
        let source = match case.existing {
            Existing::None => None,
            Existing::Fresh => Some("fresh"),
            Existing::Expiring => Some("soon"),
            Existing::Expired => Some("expired"),
        };
        if let Some(src) = source {
            fs::copy(pki.join(format!("{src}.crt")), certs.join("agent-1.crt")).unwrap();
            fs::copy(pki.join(format!("{src}.key")), certs.join("agent-1.key")).unwrap();
            fs::copy(&root, certs.join("root_ca.crt")).unwrap();
        }
        let log = dir.path().join("step.log");
        let path = format!(
            "{}:{}",
            bin.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let mut cmd = Command::new(init_certs_script());
        cmd.env("PATH", path)
            .env_remove("STEPPATH")
            .env_remove("STEP_FINGERPRINT")
            .env("AGENT_NAME", "agent-1")
            .env("AGENT_CERT_DIR", &certs)
            .env("AGENT_USER", current_user())
            .env("STEP_CA_URL", "https://ca.test:9000")
            .env("AGENT_ENROLL_DIR", &enroll)
            .env("AGENT_CA_WAIT", "2")
            .env("AGENT_SYSTEM_CA_BUNDLE", &system_bundle)
            .env("STANDIN_LOG", &log)
            .env("STANDIN_ROOT", &root)
            .env("STANDIN_ISSUED_CRT", pki.join("issued.crt"))
            .env("STANDIN_ISSUED_KEY", pki.join("issued.key"))
            .env("STANDIN_RENEWED_CRT", pki.join("renewed.crt"))
            .env("STANDIN_RENEWED_KEY", pki.join("renewed.key"))
            .env(
                "STANDIN_RENEW_FAILS",
                if case.renew_fails { "1" } else { "0" },
            );
        let out = run_with_deadline(cmd, Duration::from_secs(30));
        let output = format!("{}{}", text(&out.stdout), text(&out.stderr));
        let context = format!("case `{}`:\n{output}", case.name);
        assert!(
            !output.contains(token),
            "init-certs printed the token: {context}"
        );

        let calls = fs::read_to_string(&log).unwrap_or_default();
        let subcommands: Vec<String> = calls
            .lines()
            .map(|l| l.split_whitespace().take(2).collect::<Vec<_>>().join(" "))
            .collect();
        assert_eq!(subcommands, case.calls, "{context}\nstep calls:\n{calls}");

        if case.result.is_empty() {
            assert!(!out.status.success(), "{context}");
            assert!(output.contains("no enrollment token"), "{context}");
            assert!(!certs.join("agent-1.crt").exists(), "{context}");
            continue;
        }
        assert!(out.status.success(), "{context}");
        let expected = match case.result {
            "kept" => "fresh",
            other => other,
        };
        assert_eq!(
            fs::read(certs.join("agent-1.crt")).unwrap(),
            fs::read(pki.join(format!("{expected}.crt"))).unwrap(),
            "{context}"
        );
        for line in calls.lines() {
            if line.starts_with("ca bootstrap") {
                assert!(line.contains("--ca-url https://ca.test:9000"), "{line}");
                assert!(line.contains("--fingerprint f1ng3rpr1nt"), "{line}");
            }
            if line.starts_with("ca certificate") {
                assert!(line.starts_with("ca certificate agent-1 "), "{line}");
                assert!(line.contains(&format!("--token {token}")), "{line}");
                assert!(
                    line.contains("--san spiffe://slapenir/agent/agent-1"),
                    "{line}"
                );
            }
            if line.starts_with("ca renew") {
                assert!(line.contains("--root "), "{line}");
            }
        }
        let bundle = fs::read_to_string(certs.join("ca-bundle.crt")).unwrap();
        assert!(
            bundle.starts_with(&fs::read_to_string(&system_bundle).unwrap())
                && bundle.ends_with(&root_pem),
            "{context}: the trust bundle is not system roots + root"
        );
        assert_eq!(
            fs::metadata(certs.join("agent-1.key"))
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o600,
            "{context}"
        );
    }
}
