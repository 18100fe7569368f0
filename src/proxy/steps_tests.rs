//! The proxy's steps in-process, one table per concern: a policy compiled from a YAML config
//! (real values in files), then routing, admission (`admit`: tunnels, client lists, upgrades,
//! `allow` rules), request preparation (`request::prepare` and
//! `request::apply_upstream`), the response head scrub (`response::scrub_head`) and config
//! validation errors — no Pingora session, no process, no socket. The end-to-end tests
//! (`tests/`) drive the same steps through the real binary.

#![allow(
    clippy::panic,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::type_complexity
)]

use std::path::Path;

use pingora::http::{RequestHeader, ResponseHeader};

use std::sync::Arc;

use super::request;
use super::response;
use super::{admit, Ctx, Incoming};
use crate::config::{Config, UpstreamId};
use crate::pki::ClientIdentity;
use crate::policy::Policy;
use crate::refusal::Reason;
use crate::rewrite::Hits;
use crate::stream::TunnelInfo;

const OPENAI_DUMMY: &str = "sk-dummy-openai-0000";
const OPENAI_REAL: &str = "sk-real-openai-AAAA1";
const GITHUB_DUMMY: &str = "ghp_dummy_github_000";
const GITHUB_REAL: &str = "ghp_REAL_github_BBB1";
const MAPS_DUMMY: &str = "maps-dummy-key-0000";
const MAPS_REAL: &str = "maps-REAL-key-CCC11";

/// The config every table uses: three upstreams, a credential per upstream with different
/// `swap_in` places, an `allow` rule, and routes with path prefixes and a client list.
fn config(dir: &Path) -> String {
    for (name, value) in [
        ("openai", OPENAI_REAL),
        ("github", GITHUB_REAL),
        ("maps", MAPS_REAL),
    ] {
        std::fs::write(dir.join(name), value).unwrap();
    }
    let d = dir.display();
    format!(
        r#"
listeners:
  - name: agents
    address: 127.0.0.1:0
upstreams:
  openai:
    url: https://api.openai.com
  github:
    url: https://api.github.com:8443
  maps:
    url: http://maps.example
credentials:
  openai:
    dummy: {OPENAI_DUMMY}
    real: {{ file: {d}/openai }}
    upstreams: [openai]
  github:
    dummy: {GITHUB_DUMMY}
    real: {{ file: {d}/github }}
    upstreams: [github]
    swap_in:
      headers: [authorization, x-token]
    allow:
      - methods: [GET]
  maps:
    dummy: {MAPS_DUMMY}
    real: {{ file: {d}/maps }}
    upstreams: [maps]
    swap_in:
      headers: []
      query: [key]
      path: true
routes:
  - host: api.openai.com
    upstream: openai
  - host: api.github.com
    upstream: github
  - host: api.github.com
    path_prefix: /admin
    upstream: github
    clients: [ops]
  - host: maps.example
    upstream: maps
"#
    )
}

fn policy() -> (tempfile::TempDir, Policy) {
    let dir = tempfile::tempdir().unwrap();
    let loaded = Config::from_source(&config(dir.path()), "steps.yaml", dir.path())
        .unwrap_or_else(|e| panic!("config: {e}"));
    let policy = Policy::compile(loaded.config).unwrap_or_else(|e| panic!("policy: {e:?}"));
    (dir, policy)
}

fn upstream(policy: &Policy, name: &str) -> UpstreamId {
    policy
        .config
        .upstream_ids()
        .find_map(|(id, u)| (u.name == name).then_some(id))
        .unwrap()
}

#[test]
fn routing() {
    let (_dir, policy) = policy();
    // (host, port, path) → the upstream, or no route.
    let cases: &[(&str, Option<u16>, &[u8], Option<&str>)] = &[
        ("api.openai.com", None, b"/v1/models", Some("openai")),
        ("api.github.com", None, b"/user", Some("github")),
        ("api.github.com", None, b"/admin/x", Some("github")),
        ("maps.example", Some(80), b"/", Some("maps")),
        ("api.openai.com.evil.example", None, b"/", None),
        ("evil.example", None, b"/v1/models", None),
        ("openai.com", None, b"/", None),
    ];
    for (host, port, path, want) in cases {
        let got = policy
            .route(host, *port, path)
            .and_then(|(_, r)| policy.config.upstream(r.upstream))
            .map(|u| u.name.as_str());
        assert_eq!(got, *want, "{host}{}", String::from_utf8_lossy(path));
    }
}

/// What a prepared request looks like upstream, or why it was refused.
#[derive(Debug, PartialEq)]
enum Out {
    /// The upstream's path and query, and the header values that were asked about.
    Sent(String, Vec<(&'static str, Option<String>)>),
    Refused(Reason),
}

#[test]
fn request_preparation() {
    let (_dir, policy) = policy();
    let basic = |user: &str, pass: &str| {
        use base64::Engine as _;
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"))
        )
    };
    type Case<'a> = (
        &'a str,
        &'a str,
        &'a str,
        &'a str,
        Vec<(&'a str, String)>,
        Out,
    );
    let bearer = |v: &str| format!("Bearer {v}");
    let maps_target = format!("/tiles/{MAPS_DUMMY}?key={MAPS_DUMMY}&other={MAPS_DUMMY}");
    let cases: Vec<Case> = vec![
        (
            "the dummy in Authorization becomes the real value towards its upstream",
            "openai",
            "GET",
            "/v1/models",
            vec![("authorization", bearer(OPENAI_DUMMY))],
            Out::Sent(
                "/v1/models".into(),
                vec![("authorization", Some(bearer(OPENAI_REAL)))],
            ),
        ),
        (
            "inside Basic too",
            "openai",
            "GET",
            "/",
            vec![("authorization", basic("x", OPENAI_DUMMY))],
            Out::Sent(
                "/".into(),
                vec![("authorization", Some(basic("x", OPENAI_REAL)))],
            ),
        ),
        (
            "a dummy bound to another upstream is refused",
            "openai",
            "GET",
            "/",
            vec![("authorization", bearer(GITHUB_DUMMY))],
            Out::Refused(Reason::CredentialBoundElsewhere),
        ),
        (
            "a real value from the agent is refused, even towards its own upstream",
            "openai",
            "GET",
            "/",
            vec![("authorization", bearer(OPENAI_REAL))],
            Out::Refused(Reason::RealSecretFromAgent),
        ),
        (
            "a real value of another credential is refused",
            "openai",
            "GET",
            "/",
            vec![("x-note", GITHUB_REAL.into())],
            Out::Refused(Reason::RealSecretFromAgent),
        ),
        (
            "a dummy in a header name is refused",
            "openai",
            "GET",
            "/",
            vec![(OPENAI_DUMMY, "x".into())],
            Out::Refused(Reason::PlaceholderInHeaderName),
        ),
        (
            "a dummy outside its places is forwarded unchanged",
            "openai",
            "GET",
            "/",
            vec![("x-other", OPENAI_DUMMY.into())],
            Out::Sent("/".into(), vec![("x-other", Some(OPENAI_DUMMY.into()))]),
        ),
        (
            "a declared header is a place",
            "github",
            "GET",
            "/user",
            vec![("x-token", GITHUB_DUMMY.into())],
            Out::Sent("/user".into(), vec![("x-token", Some(GITHUB_REAL.into()))]),
        ),
        (
            "a swap outside the allow rules is refused",
            "github",
            "POST",
            "/user",
            vec![("authorization", bearer(GITHUB_DUMMY))],
            Out::Refused(Reason::CredentialRuleDenied),
        ),
        (
            "query parameter and path places",
            "maps",
            "GET",
            &maps_target,
            vec![],
            Out::Sent(
                format!("/tiles/{MAPS_REAL}?key={MAPS_REAL}&other={MAPS_DUMMY}"),
                vec![],
            ),
        ),
        (
            "Authorization is not a place where the credential says so",
            "maps",
            "GET",
            "/",
            vec![("authorization", bearer(MAPS_DUMMY))],
            Out::Sent(
                "/".into(),
                vec![("authorization", Some(bearer(MAPS_DUMMY)))],
            ),
        ),
        (
            "the upstream's Host and identity encoding; hop-by-hop proxy headers dropped",
            "github",
            "GET",
            "/",
            vec![
                ("host", "api.github.com".into()),
                ("accept-encoding", "gzip, br".into()),
                ("proxy-authorization", "Basic eDp5".into()),
            ],
            Out::Sent(
                "/".into(),
                vec![
                    ("host", Some("api.github.com:8443".into())),
                    ("accept-encoding", Some("identity".into())),
                    ("proxy-authorization", None),
                ],
            ),
        ),
    ];
    for (name, up, method, target, headers, want) in cases {
        let u = upstream(&policy, up);
        let mut req = RequestHeader::build(method, target.as_bytes(), None).unwrap();
        for (n, v) in &headers {
            req.append_header(n.to_string(), v.as_str()).unwrap();
        }
        let got = request::prepare(&policy, u, 0, &req, target.as_bytes()).and_then(
            |(prepared, hits)| {
                let path = target.split('?').next().unwrap_or_default();
                let denied = policy.denied_credentials(
                    u,
                    method,
                    path.as_bytes(),
                    request::query(target.as_bytes()),
                );
                policy.check_allowed(&denied, &hits)?;
                let mut out = req.clone();
                request::apply_upstream(&policy, u, &prepared, &mut out)?;
                Ok(out)
            },
        );
        let got = match got {
            Err(refusal) => Out::Refused(refusal.reason),
            Ok(out) => {
                let asked = match &want {
                    Out::Sent(_, asked) => asked.iter().map(|(n, _)| *n).collect(),
                    Out::Refused(_) => Vec::new(),
                };
                Out::Sent(
                    String::from_utf8_lossy(out.raw_path()).into_owned(),
                    asked
                        .into_iter()
                        .map(|n| {
                            let v = out
                                .headers
                                .get(n)
                                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
                            (n, v)
                        })
                        .collect(),
                )
            }
        };
        assert_eq!(got, want, "{name}");
    }
}

/// A tunnel as `connect` records it: the `CONNECT` target and the outer handshake's identity.
fn tunnel(host: &str, port: u16, client: Option<&str>) -> TunnelInfo {
    TunnelInfo {
        host: host.to_owned(),
        port,
        identity: client.map(identity),
    }
}

fn identity(name: &str) -> ClientIdentity {
    ClientIdentity {
        common_name: Some(name.to_owned()),
        sans: Vec::new(),
    }
}

/// `admit`, the whole `request_filter` decision, without a session: the request's head, the
/// tunnel it came through, the connection's identity and whether it asks for an upgrade →
/// the upstream it goes to (and who the client is), or the refusal.
#[test]
fn admission() {
    let (_dir, policy) = policy();
    let policy = Arc::new(policy);
    #[derive(Debug, PartialEq)]
    enum Admitted {
        To(&'static str, Option<String>),
        Refused(Reason),
    }
    use Admitted::{Refused, To};
    let bearer = |v: &str| format!("Bearer {v}");
    // (story, method, URI, Host, headers, tunnel, connection identity, upgrade, outcome)
    type Case = (
        &'static str,
        &'static str,
        &'static str,
        &'static str,
        Vec<(&'static str, String)>,
        Option<TunnelInfo>,
        Option<&'static str>,
        bool,
        Admitted,
    );
    let cases: Vec<Case> = vec![
        (
            "gateway mode: the Host names the API",
            "GET",
            "/v1/models",
            "api.openai.com",
            vec![("authorization", bearer(OPENAI_DUMMY))],
            None,
            None,
            false,
            To("openai", None),
        ),
        (
            "an absolute URI names it too",
            "GET",
            "https://api.openai.com/v1/models",
            "api.openai.com",
            vec![],
            None,
            None,
            false,
            To("openai", None),
        ),
        (
            "a host with no route is refused before anything else",
            "GET",
            "/",
            "evil.example",
            vec![("authorization", bearer(OPENAI_DUMMY))],
            None,
            None,
            false,
            Refused(Reason::NoRoute),
        ),
        (
            "a suffix of a routed name is not the name",
            "GET",
            "/",
            "api.openai.com.evil.example",
            vec![],
            None,
            None,
            false,
            Refused(Reason::NoRoute),
        ),
        (
            "inside a tunnel, a request for the tunnel's host goes, as the tunnel's client",
            "GET",
            "/v1/models",
            "api.openai.com",
            vec![],
            Some(tunnel("api.openai.com", 443, Some("agent-1"))),
            None,
            false,
            To("openai", Some("agent-1".into())),
        ),
        (
            "inside a tunnel, a request for another host is misdirected",
            "GET",
            "/user",
            "api.github.com",
            vec![("authorization", bearer(GITHUB_DUMMY))],
            Some(tunnel("api.openai.com", 443, Some("agent-1"))),
            None,
            false,
            Refused(Reason::MisdirectedRequest),
        ),
        (
            "inside a tunnel, another port of the tunnel's host is misdirected",
            "GET",
            "/",
            "api.openai.com:8443",
            vec![],
            Some(tunnel("api.openai.com", 443, None)),
            None,
            false,
            Refused(Reason::MisdirectedRequest),
        ),
        (
            "a route limited to clients refuses a connection without a certificate",
            "GET",
            "/admin/users",
            "api.github.com",
            vec![],
            None,
            None,
            false,
            Refused(Reason::ClientNotAllowed),
        ),
        (
            "... and a client not on its list",
            "GET",
            "/admin/users",
            "api.github.com",
            vec![],
            None,
            Some("agent-1"),
            false,
            Refused(Reason::ClientNotAllowed),
        ),
        (
            "... and admits one on it",
            "GET",
            "/admin/users",
            "api.github.com",
            vec![],
            None,
            Some("ops"),
            false,
            To("github", Some("ops".into())),
        ),
        (
            "inside a tunnel the list is checked against the tunnel's client",
            "GET",
            "/admin/users",
            "api.github.com",
            vec![],
            Some(tunnel("api.github.com", 443, Some("agent-1"))),
            Some("ops"),
            false,
            Refused(Reason::ClientNotAllowed),
        ),
        (
            "an upgrade on a route without `websocket: true` is refused",
            "GET",
            "/v1/realtime",
            "api.openai.com",
            vec![
                ("upgrade", "websocket".into()),
                ("connection", "upgrade".into()),
            ],
            None,
            None,
            true,
            Refused(Reason::UpgradeNotAllowed),
        ),
        (
            "a swap outside the credential's `allow` rules is refused",
            "POST",
            "/user",
            "api.github.com",
            vec![("authorization", bearer(GITHUB_DUMMY))],
            None,
            None,
            false,
            Refused(Reason::CredentialRuleDenied),
        ),
        (
            "... while the same request without the dummy goes",
            "POST",
            "/user",
            "api.github.com",
            vec![],
            None,
            None,
            false,
            To("github", None),
        ),
        (
            "a real value from the agent is refused at admission",
            "GET",
            "/",
            "api.openai.com",
            vec![("x-anything", OPENAI_REAL.into())],
            None,
            None,
            false,
            Refused(Reason::RealSecretFromAgent),
        ),
        (
            "a dummy bound elsewhere is refused at admission",
            "GET",
            "/",
            "maps.example",
            vec![("authorization", bearer(OPENAI_DUMMY))],
            None,
            None,
            false,
            Refused(Reason::CredentialBoundElsewhere),
        ),
    ];
    for (story, method, uri, host, headers, tunnel, client, upgrade, want) in cases {
        let mut req = RequestHeader::build(method, uri.as_bytes(), None).unwrap();
        req.insert_header("host", host).unwrap();
        for (n, v) in &headers {
            req.append_header(n.to_string(), v.as_str()).unwrap();
        }
        let mut ctx = Ctx::new(Arc::clone(&policy));
        ctx.identity = client.map(identity);
        let incoming = Incoming {
            req: &req,
            tunnel: tunnel.as_ref(),
            upgrade,
        };
        let got = match admit(incoming, &mut ctx) {
            Err(refusal) => Refused(refusal.reason),
            Ok(pending) => {
                assert!(pending.is_none(), "{story}: no AWS upstream here");
                assert!(ctx.prepared.is_some(), "{story}: admitted but not prepared");
                let upstream = ctx.upstream.and_then(|u| policy.config.upstream(u));
                To(
                    upstream.map_or("?", |u| match u.name.as_str() {
                        "openai" => "openai",
                        "github" => "github",
                        "maps" => "maps",
                        _ => "?",
                    }),
                    ctx.identity
                        .as_ref()
                        .and_then(|i| i.name())
                        .map(str::to_owned),
                )
            }
        };
        assert_eq!(got, want, "{story}");
    }
}

const AWS_DUMMY_KEY_ID: &str = "AKIADUMMY0000000001";
const AWS_DUMMY_SECRET: &str = "dummy-secret-key-do-not-use";
const AWS_REAL_KEY_ID: &str = "AKIAREALKEY00000001";
const AWS_REAL_SECRET: &str = "real-secret-key-AAAAAAAAAAAAAAAAAAAAAAAA";

/// A policy with one AWS key pair bound to `s3.test`.
fn aws_policy() -> (tempfile::TempDir, Policy) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("akid"), AWS_REAL_KEY_ID).unwrap();
    std::fs::write(d.join("secret"), AWS_REAL_SECRET).unwrap();
    let yaml = format!(
        r#"
listeners:
  - name: agents
    address: 127.0.0.1:0
upstreams:
  s3:
    url: https://s3.test
credentials:
  aws-main:
    kind: aws
    access_key_id: {{ dummy: {AWS_DUMMY_KEY_ID}, real: {{ file: {akid} }} }}
    secret_access_key: {{ dummy: {AWS_DUMMY_SECRET}, real: {{ file: {secret} }} }}
    upstreams: [s3]
routes:
  - host: s3.test
    upstream: s3
"#,
        akid = d.join("akid").display(),
        secret = d.join("secret").display(),
    );
    let loaded = Config::from_source(&yaml, "aws.yaml", d).unwrap_or_else(|e| panic!("{e}"));
    let policy = Policy::compile(loaded.config).unwrap_or_else(|e| panic!("policy: {e:?}"));
    (dir, policy)
}

/// A `GET` of `s3.test` signed by the agent with the dummy key pair (`UNSIGNED-PAYLOAD`), over
/// `extra` headers too, each listed in `SignedHeaders`.
fn agent_signed_get(extra: &[(&str, &str)]) -> RequestHeader {
    use crate::aws::sigv4;
    let now = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    let amz_date: String = now.chars().filter(|c| c.is_ascii_alphanumeric()).collect();
    let date = &amz_date[..8];
    let mut headers: Vec<(String, String)> = vec![
        ("host".into(), "s3.test".into()),
        ("x-amz-content-sha256".into(), "UNSIGNED-PAYLOAD".into()),
        ("x-amz-date".into(), amz_date.clone()),
    ];
    headers.extend(
        extra
            .iter()
            .map(|(n, v)| ((*n).to_owned(), (*v).to_owned())),
    );
    headers.sort();
    let signed: Vec<String> = headers.iter().map(|(n, _)| n.clone()).collect();
    let pairs: Vec<(&[u8], &[u8])> = headers
        .iter()
        .map(|(n, v)| (n.as_bytes(), v.as_bytes()))
        .collect();
    let view = sigv4::RequestView {
        method: "GET",
        path: b"/bucket/key",
        query: b"",
        headers: &pairs,
    };
    let canonical =
        sigv4::canonical_request(&view, "s3", &signed, &sigv4::PayloadHash::Unsigned).unwrap();
    let scope = sigv4::Scope {
        access_key_id: AWS_DUMMY_KEY_ID.into(),
        date: date.into(),
        region: "us-east-1".into(),
        service: "s3".into(),
    };
    let timestamp = sigv4::Timestamp::parse(amz_date.as_bytes()).unwrap();
    let to_sign = sigv4::string_to_sign(&timestamp, &scope, &canonical);
    let key = sigv4::signing_key(AWS_DUMMY_SECRET.as_bytes(), date, "us-east-1", "s3");
    let signature = sigv4::to_hex(&sigv4::sign(&key, &to_sign));
    let mut req = RequestHeader::build("GET", b"/bucket/key", None).unwrap();
    for (n, v) in &headers {
        req.append_header(n.clone(), v.as_str()).unwrap();
    }
    req.append_header(
        "authorization",
        format!(
            "AWS4-HMAC-SHA256 Credential={AWS_DUMMY_KEY_ID}/{date}/us-east-1/s3/aws4_request, SignedHeaders={}, Signature={signature}",
            signed.join(";")
        ),
    )
    .unwrap();
    req
}

/// An agent's AWS signature over a header the gateway never forwards (`proxy-connection`) is
/// checked, but the request is not signed again without it: `400 aws_signature_malformed`,
/// where the gateway would otherwise send the upstream a signature over a header it dropped.
/// The same request without that header is signed again with the real key id.
#[test]
fn aws_signature_over_a_dropped_header_is_refused() {
    let (_dir, policy) = aws_policy();
    let policy = Arc::new(policy);
    let upstream_request = |req: &RequestHeader| {
        let mut ctx = Ctx::new(Arc::clone(&policy));
        let incoming = Incoming {
            req,
            tunnel: None,
            upgrade: false,
        };
        let pending = admit(incoming, &mut ctx)?;
        assert!(pending.is_none(), "UNSIGNED-PAYLOAD needs no body");
        let (u, prepared) = (ctx.upstream.unwrap(), ctx.prepared.as_ref().unwrap());
        let mut out = req.clone();
        request::apply_upstream(&policy, u, prepared, &mut out)?;
        super::aws::sign_upstream(prepared.resign.as_ref().unwrap(), &mut out)?;
        Ok::<_, crate::refusal::Refusal>(out)
    };
    let plain = upstream_request(&agent_signed_get(&[]))
        .unwrap_or_else(|r| panic!("a plain signed GET is refused: {r:?}"));
    let auth = plain
        .headers
        .get("authorization")
        .unwrap()
        .to_str()
        .unwrap();
    assert!(
        auth.contains(&format!("Credential={AWS_REAL_KEY_ID}/")),
        "not signed again with the real key id"
    );
    assert!(!auth.contains(AWS_DUMMY_KEY_ID));
    let refused = upstream_request(&agent_signed_get(&[("proxy-connection", "keep-alive")]))
        .err()
        .map(|r| (r.status, r.reason));
    assert_eq!(refused, Some((400, Reason::AwsSignatureMalformed)));
}

#[test]
fn response_head_scrub() {
    let (_dir, policy) = policy();
    // (header name, value) in → (name, value) out; `None`: the header is dropped.
    let cases: &[(&str, String, Option<(&str, String)>)] = &[
        (
            "x-echo",
            format!("key={OPENAI_REAL}"),
            Some(("x-echo", format!("key={OPENAI_DUMMY}"))),
        ),
        (
            "x-echo",
            format!("{GITHUB_REAL},{MAPS_REAL}"),
            Some(("x-echo", format!("{GITHUB_DUMMY},{MAPS_DUMMY}"))),
        ),
        (
            "x-plain",
            "nothing".into(),
            Some(("x-plain", "nothing".into())),
        ),
        (
            &format!("x-{}", OPENAI_REAL.to_ascii_lowercase()),
            "1".into(),
            None,
        ),
        (
            "x-dummy",
            OPENAI_DUMMY.into(),
            Some(("x-dummy", OPENAI_DUMMY.into())),
        ),
    ];
    for (name, value, want) in cases {
        let mut resp = ResponseHeader::build(200, None).unwrap();
        resp.set_reason_phrase(Some(OPENAI_REAL)).unwrap();
        resp.append_header(name.to_string(), value.as_str())
            .unwrap();
        let mut hits = Hits::new();
        response::scrub_head(&policy, &mut resp, &mut hits).unwrap();
        assert_eq!(
            resp.get_reason_phrase(),
            Some("OK"),
            "{name}: reason phrase"
        );
        let got = resp.headers.iter().next().map(|(n, v)| {
            (
                n.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        });
        let want = want.as_ref().map(|(n, v)| (n.to_string(), v.clone()));
        assert_eq!(got, want, "{name}: {value}");
    }
}

#[test]
fn config_validation_errors() {
    let dir = tempfile::tempdir().unwrap();
    let good = config(dir.path());
    // (what is changed, from → to, a piece of the located error)
    let cases: &[(&str, &str, &str, &str)] = &[
        (
            "an unknown key",
            "    url: http://maps.example",
            "    url: http://maps.example\n    urll: x",
            "unknown field `urll`",
        ),
        (
            "a credential bound to an upstream that does not exist",
            "    upstreams: [maps]",
            "    upstreams: [nowhere]",
            "nowhere",
        ),
        (
            "a route to an upstream that does not exist",
            "    upstream: maps",
            "    upstream: mapz",
            "mapz",
        ),
        (
            "a dummy too short",
            &format!("dummy: {MAPS_DUMMY}"),
            "dummy: short",
            "credentials.maps.dummy",
        ),
        (
            "an absurd timeout",
            "    url: http://maps.example",
            "    url: http://maps.example\n    connect_timeout: 500000000000years",
            "connect_timeout",
        ),
    ];
    for (what, from, to, want) in cases {
        assert!(good.contains(from), "{what}: `{from}` not in the config");
        let bad = good.replacen(from, to, 1);
        match Config::from_source(&bad, "steps.yaml", dir.path()) {
            Ok(_) => panic!("{what}: accepted"),
            Err(e) => {
                let text = e.to_string();
                assert!(text.contains(want), "{what}: {text}");
                assert!(text.contains("steps.yaml:"), "{what}: not located: {text}");
            }
        }
    }
    assert!(Config::from_source(&good, "steps.yaml", dir.path()).is_ok());
}
