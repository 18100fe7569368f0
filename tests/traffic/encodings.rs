//! Credentials inside encodings, end to end: dummies inside `Authorization: Basic` reach the
//! upstream as the real value (or are refused when bound elsewhere), and a real value that an
//! upstream echoes base64-encoded (inside a longer blob, at each byte alignment, standard and
//! URL-safe), percent-encoded or JSON-escaped — in a header, a whole body or a body streamed in
//! small chunks — never reaches the client in any form that decodes back to it.
//!
//! The client side decodes everything it received every way it knows (percent, JSON escapes,
//! both base64 alphabets from every start offset, and their combinations) and searches the
//! results. The same decoder run on the upstream's answer fetched directly must find the real
//! value, so a decoder that finds nothing cannot pass the test.
use crate::common;

use std::process::Command;

use base64::engine::general_purpose::{STANDARD, URL_SAFE};
use base64::Engine as _;
use common::decode::any_decoding_holds;
use common::gateway::GatewayProcess;
use common::upstream::{percent_encode, reversed, Upstream, UpstreamKind};

const DUMMY: &str = "sk-dummy-openai";
/// Longer than its dummy, with bytes that percent-encoding and JSON escape (`/`, `+`, `"`, `=`).
const REAL: &str = "sk-real/Enc+ode\"d=7f3a9c1e5b2d4f6a";
const GH_DUMMY: &str = "ghp-dummy-github";
const GH_REAL: &str = "ghp_REALgithubToken0123456789abcdef";

fn gateway_for(up: &Upstream) -> GatewayProcess {
    let config = format!(
        "listeners:\n  - name: agents\n    address: {{listen}}\n\
         admin:\n  address: {{admin}}\n\
         upstreams:\n  api:\n    url: {url}\n  other:\n    url: http://127.0.0.1:9\n\
         credentials:\n\
         \x20 openai:\n    dummy: {DUMMY}\n    real: {{ env: TEST_OPENAI_KEY }}\n    upstreams: [api]\n\
         \x20 github:\n    dummy: {GH_DUMMY}\n    real: {{ env: TEST_GITHUB_KEY }}\n    upstreams: [other]\n\
         routes:\n  - host: api.test\n    upstream: api\n",
        url = up.url()
    );
    GatewayProcess::start(
        &config,
        &[("TEST_OPENAI_KEY", REAL), ("TEST_GITHUB_KEY", GH_REAL)],
    )
}

/// GET `url` with curl (optionally with a `Host` header); returns status line, headers and body.
fn curl(url: &str, host: Option<&str>, extra: &[&str]) -> (u16, Vec<u8>) {
    let mut cmd = Command::new("curl");
    cmd.args(["-s", "-i", "--max-time", "30"]);
    if let Some(h) = host {
        cmd.arg("-H").arg(format!("Host: {h}"));
    }
    let out = cmd.args(extra).arg(url).output().expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, out.stdout)
}

// ---- the encodings an upstream echoes ----------------------------------------------------

fn json_escape(value: &str, slash: bool, unicode_punct: bool) -> String {
    let mut out = String::new();
    for c in value.chars() {
        match c {
            c if unicode_punct && !c.is_ascii_alphanumeric() => {
                out.push_str(&format!("\\u{:04X}", c as u32));
            }
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '/' if slash => out.push_str("\\/"),
            c => out.push(c),
        }
    }
    out
}

/// (name, text the upstream sends). Base64 cases put the secret inside a longer blob at byte
/// offsets 30, 31 and 32, so all three alignments occur.
fn echoed_forms() -> Vec<(String, String)> {
    let mut forms = Vec::new();
    for (alphabet, engine) in [("standard", &STANDARD), ("url-safe", &URL_SAFE)] {
        for offset in 30..33 {
            // Binary bytes, then JSON whose secret starts at `offset`.
            let prefix = "\u{1}\u{2}\u{3}\u{fe}".repeat(3);
            let filler = "p".repeat(offset - prefix.len() - "{\"token\":\"".len());
            let blob = format!("{prefix}{filler}{{\"token\":\"{REAL}\",\"scope\":\"repo\"}}");
            assert_eq!(blob.find(REAL), Some(offset));
            forms.push((
                format!("base64 {alphabet} at offset {offset}"),
                format!("blob={};", engine.encode(blob.as_bytes())),
            ));
        }
    }
    forms.push((
        "percent-encoded".into(),
        format!("next=/cb?token={}", percent_encode(REAL)),
    ));
    let lower_hex: String = REAL
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02x}")
            }
        })
        .collect();
    forms.push((
        "percent-encoded, lower-case hex".into(),
        format!("next=/cb?token={lower_hex}"),
    ));
    forms.push((
        "percent-encoded, every byte".into(),
        REAL.bytes().map(|b| format!("%{b:02X}")).collect(),
    ));
    forms.push((
        "JSON, minimal escapes".into(),
        format!("{{\"key\":\"{}\"}}", json_escape(REAL, false, false)),
    ));
    forms.push((
        "JSON, escaped slash".into(),
        format!("{{\"key\":\"{}\"}}", json_escape(REAL, true, false)),
    ));
    forms.push((
        "JSON, \\u escapes".into(),
        format!("{{\"key\":\"{}\"}}", json_escape(REAL, false, true)),
    ));
    forms
}

#[test]
fn encoded_real_secrets_never_reach_the_client() {
    let up = Upstream::start(UpstreamKind::Plain);
    let gw = gateway_for(&up);
    let dummy_core = &DUMMY.as_bytes()[1..DUMMY.len() - 1];
    for (name, text) in echoed_forms() {
        // Sent reversed: the agent may not send a real value in any encoding the gateway knows.
        let (value, t) = (reversed("value", &text), reversed("text", &text));
        let places = [
            ("header", format!("/echo-header?name=x-blob&{value}")),
            ("body", format!("/body?{t}")),
            (
                "body in 1-byte chunks",
                format!("/chunked?{t}&parts={}", text.len()),
            ),
            ("body in 7 chunks", format!("/chunked?{t}&parts=7")),
        ];
        for (place, path) in places {
            // Control: straight from the upstream, the decoder finds the real value.
            let (status, direct) = curl(&format!("{}{path}", up.url()), None, &[]);
            assert_eq!(status, 200, "{name} {place}: direct");
            assert!(
                any_decoding_holds(&direct, REAL.as_bytes()),
                "{name} {place}: the decoder cannot find the real value in the direct answer"
            );
            let (status, seen) = curl(&format!("{}{path}", gw.url()), Some("api.test"), &[]);
            assert_eq!(status, 200, "{name} {place}");
            assert!(
                !any_decoding_holds(&seen, REAL.as_bytes()),
                "{name} {place}: a decodable form of the real secret reached the client:\n{}",
                String::from_utf8_lossy(&seen)
            );
            // Not scrubbed by mangling: the dummy is there, in the same encoding (its first
            // and last byte share base64 characters with the neighbouring bytes).
            assert!(
                any_decoding_holds(&seen, dummy_core),
                "{name} {place}: the dummy is not in the answer:\n{}",
                String::from_utf8_lossy(&seen)
            );
        }
    }
    let all = format!("{}{}", gw.stdout(), gw.stderr());
    assert!(!any_decoding_holds(all.as_bytes(), REAL.as_bytes()));
}

#[test]
fn basic_auth_dummies_are_swapped_inside_the_encoding() {
    let up = Upstream::start(UpstreamKind::Plain);
    let gw = gateway_for(&up);
    let cases = [
        (
            "password",
            format!("x-access-token:{DUMMY}"),
            format!("x-access-token:{REAL}"),
        ),
        (
            "user",
            format!("{DUMMY}:x-oauth-basic"),
            format!("{REAL}:x-oauth-basic"),
        ),
        (
            "no dummy",
            "alice:s3cret".to_string(),
            "alice:s3cret".to_string(),
        ),
    ];
    for (i, (name, userinfo, want)) in cases.iter().enumerate() {
        let (status, seen) = curl(
            &format!("{}/echo", gw.url()),
            Some("api.test"),
            &["-u", userinfo],
        );
        assert_eq!(status, 200, "{name}");
        assert!(!any_decoding_holds(&seen, REAL.as_bytes()), "{name}");
        let r = up.wait_for_requests_blocking(i + 1, std::time::Duration::from_secs(10));
        let got = r[i].header_str("authorization").unwrap();
        assert_eq!(got, format!("Basic {}", STANDARD.encode(want)), "{name}");
    }
}

#[test]
fn a_foreign_dummy_in_basic_auth_is_refused_before_anything_is_sent() {
    let up = Upstream::start(UpstreamKind::Plain);
    let gw = gateway_for(&up);
    for userinfo in [format!("x-access-token:{GH_DUMMY}"), format!("{GH_DUMMY}:")] {
        let (status, seen) = curl(
            &format!("{}/echo", gw.url()),
            Some("api.test"),
            &["-u", &userinfo],
        );
        let text = String::from_utf8_lossy(&seen);
        assert_eq!(status, 403, "{text}");
        assert!(text.contains("credential `github`"), "{text}");
    }
    assert!(
        up.requests().is_empty(),
        "a refused request reached the upstream"
    );
}
