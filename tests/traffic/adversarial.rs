//! The adversarial suite: a hostile upstream (`tests/traffic/adversarial/hostile_upstream.py`) answers
//! with exactly the bytes or HTTP/2 frames a probe scripts, each one hiding the real key in a
//! channel an agent can read — 1xx blocks, the reason phrase, header names, trailers, stacked
//! or transfer codings, an unsolicited upgrade, wrapped base64, partial percent-encoding — and
//! curl, the agent, must find no decodable form of the key in anything it receives.
//!
//! Each probe runs in three steps:
//!
//! 1. **Direct**: curl straight to the hostile upstream, once per protocol the script speaks,
//!    must receive the key in some decodable form. A probe whose bytes do not leak without the
//!    gateway cannot fail, and fails itself.
//! 2. **Through the gateway**, in every client mode (`CONNECT` + mTLS with HTTP/1.1 or HTTP/2
//!    inside the tunnel; gateway mode, mTLS with `Host: api.test`, HTTP/1.1 or HTTP/2) and
//!    towards the upstream over each protocol the script speaks (`/h1/...` routes to an
//!    upstream pinned to HTTP/1.1, `/h2/...` to one pinned to HTTP/2): curl must receive no
//!    decodable form of the key in its status lines, 1xx blocks, headers, trailers, error
//!    messages or body (de-chunked and decompressed every way it could be). A refusal or a
//!    cut connection is fine.
//! 3. The gateway's stdout and stderr hold no form of the key.
//!
//! "Decodable form" is [`common::decode::any_decoding_holds`] over the bytes as received, the
//! same with line breaks removed (wrapped base64), and every de-chunking and decompression
//! (gzip, deflate, brotli, zstd, up to three layers) of the body; plus the key in any letter
//! case (a lower-cased key is one small brute force away from the key).
//!
//! Every probe prints its outcome per mode (`cargo test ... -- --nocapture` shows them); with
//! `ADVERSARIAL_DUMP=DIR` set, what curl received in each mode is copied into `DIR`.
use crate::common;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use common::child::ServerProcess;
use common::decode::{any_decoding_holds, percent_decode};
use common::gateway::GatewayProcess;
use common::pki::TestPki;
use serde_json::{json, Value};

/// The real key: mixed case, so that a header name holding it shows whether case survives.
const REAL: &str = "sk-Live-7fQ3a9Zc1e5B2d4f6A8c0eXy";
const DUMMY: &str = "sk-dummy-openai";
/// A second real key with bytes that partial percent-encodings treat differently: `/` (kept by
/// both `encodeURI` and Python's `quote`), `+` and `=` (kept by `encodeURI` only), `|` and `^`
/// (encoded by both).
const SLASHY: &str = "AbC/dEf+GhI|jKl^mN0pQ1rS2tU3vW4xYz=";
const SLASHY_DUMMY: &str = "dummy-slashy-secret";

// ---- the setup: one hostile upstream and one gateway per probe -------------------------

struct Setup {
    gw: GatewayProcess,
    up: ServerProcess,
    /// The hostile upstream's CA and the scripts it reads.
    work: tempfile::TempDir,
    /// The gateway's development PKI (its root, the agent's certificate).
    certs: PathBuf,
}

fn setup() -> Setup {
    let work = tempfile::tempdir().unwrap();
    let pki = TestPki::new(&work.path().join("pki"));
    let scripts = work.path().join("scripts");
    std::fs::create_dir_all(&scripts).unwrap();
    let mut cmd = Command::new("python3");
    cmd.arg(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/traffic/adversarial/hostile_upstream.py"
    ))
    .arg("--cert")
    .arg(pki.server_cert_path())
    .arg("--key")
    .arg(pki.server_key_path())
    .arg("--scripts")
    .arg(&scripts)
    .args(["--alpn", "h2,http/1.1"]);
    let up = ServerProcess::start(cmd, "hostile upstream");

    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    slapenir::pki::init(&certs, slapenir::pki::InitOptions::default()).unwrap();
    let c = certs.display();
    let upstream = |name: &str, version: &str| {
        format!(
            "  {name}:\n    url: https://127.0.0.1:{port}\n    ca: {ca}\n    http_version: \"{version}\"\n",
            port = up.port,
            ca = pki.ca_path().display(),
        )
    };
    let listener = common::gateway::mtls_listener(&certs);
    let config = format!(
        "{listener}admin:\n  address: {{admin}}\n\
         interception:\n  ca_cert: {c}/intercept_ca.crt\n  ca_key: {c}/intercept_ca.key\n\
         upstreams:\n{h1}{h2}\
         credentials:\n\
         \x20 openai:\n    dummy: {DUMMY}\n    real: {{ env: TEST_OPENAI_KEY }}\n    upstreams: [hostile-h1, hostile-h2]\n\
         \x20 slashy:\n    dummy: {SLASHY_DUMMY}\n    real: {{ env: TEST_SLASHY_KEY }}\n    upstreams: [hostile-h1, hostile-h2]\n\
         routes:\n\
         \x20 - host: api.test\n    path_prefix: /h2/\n    upstream: hostile-h2\n\
         \x20 - host: api.test\n    upstream: hostile-h1\n",
        h1 = upstream("hostile-h1", "1.1"),
        h2 = upstream("hostile-h2", "2"),
    );
    let gw = GatewayProcess::start_in(
        dir,
        &config,
        &[("TEST_OPENAI_KEY", REAL), ("TEST_SLASHY_KEY", SLASHY)],
    );
    Setup {
        gw,
        up,
        work,
        certs,
    }
}

// ---- the agent: curl, and everything it received ---------------------------------------

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Proto {
    H1,
    H2,
}

impl Proto {
    fn curl_flag(self) -> &'static str {
        match self {
            Proto::H1 => "--http1.1",
            Proto::H2 => "--http2",
        }
    }
    fn path(self) -> &'static str {
        match self {
            Proto::H1 => "h1",
            Proto::H2 => "h2",
        }
    }
}

/// How the agent reaches the upstream.
#[derive(Clone, Copy, Debug)]
enum Mode {
    Direct(Proto),
    Connect(Proto),
    Gateway(Proto),
}

/// What curl got: every byte it could show the agent, and how the exchange ended.
struct Received {
    head: Vec<u8>,
    body: Vec<u8>,
    /// curl's own messages (they quote reason phrases and protocol errors).
    stderr: Vec<u8>,
    exit: i32,
    /// `%{http_version} %{http_code}`.
    version_status: String,
}

impl Received {
    fn refusal(&self) -> Option<String> {
        String::from_utf8_lossy(&self.head).lines().find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("x-slapenir-refusal:")
                .map(|v| v.trim().to_string())
        })
    }

    fn outcome(&self) -> String {
        match (self.refusal(), self.exit) {
            (Some(r), _) => format!("refused ({r}) [{}]", self.version_status),
            (None, 0) => format!("answered [{}]", self.version_status),
            (None, n) => format!("cut (curl exit {n}) [{}]", self.version_status),
        }
    }
}

fn curl(s: &Setup, mode: Mode, upstream: Proto, script: &str) -> Received {
    let out_dir = tempfile::tempdir_in(s.work.path()).unwrap();
    let head = out_dir.path().join("head");
    let body = out_dir.path().join("body");
    let path = format!("/{}/{script}", upstream.path());
    let mut cmd = Command::new("curl");
    cmd.args([
        "-sS",
        "--raw",
        "--max-time",
        "15",
        "-w",
        "%{http_version} %{http_code}",
    ])
    .arg("-D")
    .arg(&head)
    .arg("-o")
    .arg(&body)
    .env_remove("SSL_CERT_FILE")
    .env_remove("CURL_CA_BUNDLE")
    .env_remove("REQUESTS_CA_BUNDLE")
    .env_remove("HTTPS_PROXY")
    .env_remove("https_proxy")
    .env_remove("ALL_PROXY")
    .env_remove("all_proxy");
    let root = s.certs.join("root_ca.crt");
    let (cert, key) = (s.certs.join("agent-1.crt"), s.certs.join("agent-1.key"));
    match mode {
        Mode::Direct(p) => {
            cmd.arg(p.curl_flag())
                .arg("--cacert")
                .arg(s.work.path().join("pki/ca.crt"))
                .arg(format!("https://127.0.0.1:{}{path}", s.up.port));
        }
        Mode::Connect(p) => {
            cmd.arg(p.curl_flag())
                .arg("--proxy")
                .arg(format!("https://127.0.0.1:{}", s.gw.listen.port()))
                .arg("--proxy-cacert")
                .arg(&root)
                .arg("--proxy-cert")
                .arg(&cert)
                .arg("--proxy-key")
                .arg(&key)
                .arg("--cacert")
                .arg(&root)
                .arg(format!("https://api.test{path}"));
        }
        Mode::Gateway(p) => {
            cmd.arg(p.curl_flag())
                .arg("--cacert")
                .arg(&root)
                .arg("--cert")
                .arg(&cert)
                .arg("--key")
                .arg(&key)
                .args(["-H", "Host: api.test"])
                .arg(format!("https://localhost:{}{path}", s.gw.listen.port()));
        }
    }
    let out = cmd.output().expect("run curl");
    if let Some(dump) = std::env::var_os("ADVERSARIAL_DUMP") {
        let stem = Path::new(&dump).join(format!("{script}-{mode:?}-up{upstream:?}"));
        std::fs::create_dir_all(&dump).unwrap();
        let _ = std::fs::copy(&head, stem.with_extension("head"));
        let _ = std::fs::copy(&body, stem.with_extension("body"));
    }
    Received {
        head: std::fs::read(&head).unwrap_or_default(),
        body: std::fs::read(&body).unwrap_or_default(),
        stderr: out.stderr,
        exit: out.status.code().unwrap_or(-1),
        version_status: String::from_utf8_lossy(&out.stdout).into_owned(),
    }
}

// ---- finding the key in what was received -----------------------------------------------

/// At most this much output per decompression attempt.
const INFLATE_LIMIT: u64 = 4 << 20;

/// Reads a decoder until it ends or fails, keeping what it produced before a failure (a
/// truncated or trailing-garbage stream still shows its plaintext to a lenient client).
fn drain(mut r: impl Read) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    while (out.len() as u64) < INFLATE_LIMIT {
        match r.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
    out
}

/// Every decompression of `data` a client could try: gzip and zstd from each magic number,
/// zlib, raw deflate and brotli from the start.
fn inflations(data: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for (i, w) in data.windows(4).enumerate() {
        if w[..3] == [0x1f, 0x8b, 0x08] {
            out.push(drain(flate2::read::MultiGzDecoder::new(&data[i..])));
        }
        if w == [0x28, 0xb5, 0x2f, 0xfd]
            && let Ok(d) = zstd::stream::read::Decoder::new(&data[i..])
        {
            out.push(drain(d));
        }
    }
    out.push(drain(flate2::read::ZlibDecoder::new(data)));
    out.push(drain(flate2::read::DeflateDecoder::new(data)));
    out.push(drain(brotli::Decompressor::new(data, 4096)));
    out.retain(|d| !d.is_empty());
    out
}

/// Undoes chunked framing leniently: stops at the first malformed size line and keeps what
/// it has.
fn dechunk(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut rest = data;
    while let Some(eol) = rest.windows(2).position(|w| w == b"\r\n") {
        let size_text = String::from_utf8_lossy(&rest[..eol]);
        let Ok(size) = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
        else {
            break;
        };
        if size == 0 {
            break;
        }
        let start = eol + 2;
        let end = (start + size).min(rest.len());
        out.extend_from_slice(&rest[start..end]);
        rest = rest.get(end + 2..).unwrap_or_default();
    }
    out
}

/// The body as received, de-chunked, and every chain of up to three decompressions of both.
fn body_forms(body: &[u8]) -> Vec<Vec<u8>> {
    let mut forms = vec![body.to_vec(), dechunk(body)];
    let mut layer = forms.clone();
    for _ in 0..3 {
        let next: Vec<Vec<u8>> = layer.iter().flat_map(|f| inflations(f)).collect();
        forms.extend(next.iter().cloned());
        layer = next;
    }
    forms
}

fn without_line_breaks(data: &[u8]) -> Vec<u8> {
    data.iter()
        .copied()
        .filter(|b| *b != b'\r' && *b != b'\n')
        .collect()
}

/// Where in `data` a form of `needle` shows: `Some("exact")` when a decoding holds it as
/// is (line breaks removed or not), `Some("case-folded")` when it shows only in another
/// letter case, `None` when it does not.
fn form_in(data: &[u8], needle: &str) -> Option<&'static str> {
    let lower = needle.to_ascii_lowercase();
    let joined = [data.to_vec(), without_line_breaks(data)];
    if joined
        .iter()
        .any(|d| any_decoding_holds(d, needle.as_bytes()))
    {
        return Some("exact");
    }
    joined
        .iter()
        .any(|d| {
            common::decode::holds(&d.to_ascii_lowercase(), lower.as_bytes())
                || common::decode::holds(&percent_decode(d).to_ascii_lowercase(), lower.as_bytes())
        })
        .then_some("case-folded")
}

fn holds_any_form(data: &[u8], needle: &str) -> bool {
    form_in(data, needle).is_some()
}

/// Where the agent got a form of `needle`, if anywhere: "head", "body", "curl's messages",
/// with the form's kind.
fn leak(r: &Received, needle: &str) -> Option<String> {
    let body = body_forms(&r.body)
        .iter()
        .find_map(|f| form_in(f, needle))
        .map(|k| format!("body, {k}"));
    let parts = [
        ("head", form_in(&r.head, needle)),
        ("curl's messages", form_in(&r.stderr, needle)),
    ];
    let mut found: Vec<String> = parts
        .iter()
        .filter_map(|(place, kind)| kind.map(|k| format!("{place}, {k}")))
        .collect();
    found.extend(body);
    (!found.is_empty()).then(|| found.join("; "))
}

/// For bodies made of `#pos N#` segments ([`wrapped_base64`]): the positions whose segment
/// holds a form of `needle`.
fn leaking_positions(r: &Received, needle: &str) -> Vec<usize> {
    let found: std::collections::BTreeSet<usize> = body_forms(&r.body)
        .iter()
        .flat_map(|f| {
            String::from_utf8_lossy(f)
                .split("#pos ")
                .skip(1)
                .filter(|seg| holds_any_form(seg.as_bytes(), needle))
                .filter_map(|seg| seg.split('#').next().and_then(|n| n.parse().ok()))
                .collect::<Vec<_>>()
        })
        .collect();
    found.into_iter().collect()
}

fn leaks(r: &Received, needle: &str) -> bool {
    leak(r, needle).is_some()
}

// ---- probes -----------------------------------------------------------------------------

/// One attack: the script for each protocol the upstream answers it over, and the real key
/// it tries to get out.
struct Probe {
    name: &'static str,
    needle: &'static str,
    h1: Option<Vec<Value>>,
    h2: Option<Vec<Value>>,
}

impl Probe {
    fn h1(name: &'static str, steps: Vec<Value>) -> Self {
        Probe {
            name,
            needle: REAL,
            h1: Some(steps),
            h2: None,
        }
    }
    fn h2(name: &'static str, steps: Vec<Value>) -> Self {
        Probe {
            name,
            needle: REAL,
            h1: None,
            h2: Some(steps),
        }
    }
    fn both(name: &'static str, h1: Vec<Value>, h2: Vec<Value>) -> Self {
        Probe {
            name,
            needle: REAL,
            h1: Some(h1),
            h2: Some(h2),
        }
    }
    fn needle(mut self, needle: &'static str) -> Self {
        self.needle = needle;
        self
    }
    fn protocols(&self) -> Vec<Proto> {
        let mut p = Vec::new();
        if self.h1.is_some() {
            p.push(Proto::H1);
        }
        if self.h2.is_some() {
            p.push(Proto::H2);
        }
        p
    }
}

/// Runs a probe: direct (must leak), then every client mode through the gateway (must not),
/// then the gateway's logs (must not). Panics with the outcome of every mode.
fn run(probe: Probe) {
    let s = setup();
    let script = json!({ "h1": probe.h1, "h2": probe.h2 });
    std::fs::write(
        s.work.path().join(format!("scripts/{}.json", probe.name)),
        serde_json::to_vec_pretty(&script).unwrap(),
    )
    .unwrap();

    let mut report = Vec::new();
    let mut cannot_fail = Vec::new();
    for up in probe.protocols() {
        let r = curl(&s, Mode::Direct(up), up, probe.name);
        let leaked = leak(&r, probe.needle);
        report.push(format!(
            "  direct {up:?}: {} -> {}",
            r.outcome(),
            leaked
                .as_deref()
                .map_or("no leak".into(), |w| format!("LEAK as expected ({w})"))
        ));
        if leaked.is_none() {
            cannot_fail.push(format!("{up:?}"));
        }
    }
    let mut leaked_modes = Vec::new();
    for up in probe.protocols() {
        for mode in [
            Mode::Connect(Proto::H1),
            Mode::Connect(Proto::H2),
            Mode::Gateway(Proto::H1),
            Mode::Gateway(Proto::H2),
        ] {
            let r = curl(&s, mode, up, probe.name);
            let leaked = leak(&r, probe.needle);
            report.push(format!(
                "  {mode:?} -> upstream {up:?}: {} -> {}",
                r.outcome(),
                leaked
                    .as_deref()
                    .map_or("clean".into(), |w| format!("LEAK ({w})"))
            ));
            let positions = leaking_positions(&r, probe.needle);
            if !positions.is_empty() {
                report.push(format!("    line break after key byte: {positions:?}"));
            }
            if leaked.is_some() {
                leaked_modes.push(format!("{mode:?} -> upstream {up:?}"));
            }
        }
    }
    let logs = format!("{}{}", s.gw.stdout(), s.gw.stderr());
    let logs_leak = holds_any_form(logs.as_bytes(), probe.needle);
    report.push(format!(
        "  gateway logs: {}",
        if logs_leak { "LEAK" } else { "clean" }
    ));
    let report = report.join("\n");
    println!("PROBE {}\n{report}", probe.name);
    assert!(
        cannot_fail.is_empty(),
        "{}: the probe cannot fail: the hostile upstream's answer does not leak the key even \
         without the gateway ({})\n{report}",
        probe.name,
        cannot_fail.join(", ")
    );
    assert!(
        leaked_modes.is_empty() && !logs_leak,
        "{}: the key reached the agent ({}){}\n{report}",
        probe.name,
        leaked_modes.join("; "),
        if logs_leak {
            "; and the gateway's logs hold it"
        } else {
            ""
        }
    );
}

// ---- script building blocks -------------------------------------------------------------

/// Bytes written as given (`\r\n` are the bytes 0d 0a).
fn text(s: &str) -> Value {
    json!({ "text": s })
}

fn raw(bytes: &[u8]) -> Value {
    json!({ "b64": STANDARD.encode(bytes) })
}

fn pause() -> Value {
    json!({ "pause": 0.02 })
}

/// An HTTP/1.1 `200` with `extra` header lines (each ending in `\r\n`) and a sized body.
fn h1_final(extra: &str, body: &[u8]) -> Vec<Value> {
    vec![
        text(&format!(
            "HTTP/1.1 200 OK\r\n{extra}Content-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        )),
        raw(body),
    ]
}

/// One HTTP/2 header block.
fn headers(fields: &[(&str, &str)], end_stream: bool) -> Value {
    json!({ "headers": fields, "end_stream": end_stream })
}

fn data(bytes: &[u8], end_stream: bool) -> Value {
    json!({ "data": { "b64": STANDARD.encode(bytes) }, "end_stream": end_stream })
}

/// An HTTP/2 `200` with `extra` fields and a body in one DATA frame.
fn h2_final(extra: &[(&str, &str)], body: &[u8]) -> Vec<Value> {
    let mut fields = vec![(":status", "200")];
    fields.extend_from_slice(extra);
    vec![headers(&fields, false), data(body, true)]
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn brotli(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    {
        let mut w = brotli::CompressorWriter::new(&mut out, 4096, 5, 22);
        w.write_all(data).unwrap();
    }
    out
}

/// Chunked framing with chunks of `size` bytes, a pause between chunks, and no trailers.
fn chunked(body: &[u8], size: usize) -> Vec<Value> {
    let mut steps = Vec::new();
    for c in body.chunks(size) {
        let mut frame = format!("{:x}\r\n", c.len()).into_bytes();
        frame.extend_from_slice(c);
        frame.extend_from_slice(b"\r\n");
        steps.push(raw(&frame));
        steps.push(pause());
    }
    steps.push(text("0\r\n\r\n"));
    steps
}

fn secret_body() -> Vec<u8> {
    format!("{{\"error\":\"invalid api key {REAL}\"}}\n").into_bytes()
}

fn cat(parts: Vec<Vec<Value>>) -> Vec<Value> {
    parts.into_iter().flatten().collect()
}

// ---- 1xx informational responses --------------------------------------------------------

#[test]
fn early_hints_103_link_header_carries_the_key() {
    let link = format!("</a.css?k={REAL}>; rel=preload");
    run(Probe::both(
        "early_hints_103",
        cat(vec![
            vec![text(&format!(
                "HTTP/1.1 103 Early Hints\r\nLink: {link}\r\n\r\n"
            ))],
            h1_final("", b"ok"),
        ]),
        cat(vec![
            vec![headers(&[(":status", "103"), ("link", &link)], false)],
            h2_final(&[], b"ok"),
        ]),
    ));
}

#[test]
fn continue_100_with_headers_carries_the_key() {
    run(Probe::both(
        "continue_100",
        cat(vec![
            vec![text(&format!(
                "HTTP/1.1 100 Continue\r\nX-Debug: {REAL}\r\n\r\n"
            ))],
            h1_final("", b"ok"),
        ]),
        cat(vec![
            vec![headers(&[(":status", "100"), ("x-debug", REAL)], false)],
            h2_final(&[], b"ok"),
        ]),
    ));
}

#[test]
fn processing_102_carries_the_key() {
    run(Probe::both(
        "processing_102",
        cat(vec![
            vec![text(&format!(
                "HTTP/1.1 102 Processing\r\nX-Progress: {REAL}\r\n\r\n"
            ))],
            h1_final("", b"ok"),
        ]),
        cat(vec![
            vec![headers(&[(":status", "102"), ("x-progress", REAL)], false)],
            h2_final(&[], b"ok"),
        ]),
    ));
}

#[test]
fn informational_reason_phrase_carries_the_key() {
    run(Probe::h1(
        "informational_reason",
        cat(vec![
            vec![text(&format!("HTTP/1.1 103 {REAL}\r\n\r\n"))],
            h1_final("", b"ok"),
        ]),
    ));
}

// ---- status line and header names -------------------------------------------------------

#[test]
fn reason_phrase_carries_the_key() {
    run(Probe::h1(
        "reason_phrase",
        vec![text(&format!(
            "HTTP/1.1 200 {REAL}\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
        ))],
    ));
}

#[test]
fn header_name_in_its_original_case_carries_the_key() {
    run(Probe::h1(
        "header_name_mixed_case",
        h1_final(&format!("{REAL}: 1\r\n"), b"ok"),
    ));
}

/// HTTP/2 header names are lower case on the wire (clients refuse upper case): the key comes
/// out lower-cased, which is still the key up to a small brute force.
#[test]
fn h2_header_name_carries_the_key_lower_cased() {
    let name = REAL.to_ascii_lowercase();
    run(Probe::h2(
        "h2_header_name",
        h2_final(&[(name.as_str(), "1")], b"ok"),
    ));
}

/// The one channel already scrubbed today: a control for the rest.
#[test]
fn header_value_carries_the_key() {
    let value = format!("Bearer {REAL}");
    run(Probe::both(
        "header_value",
        h1_final(&format!("X-Echo: {value}\r\n"), b"ok"),
        h2_final(&[("x-echo", &value)], b"ok"),
    ));
}

/// An obsolete line folding (RFC 9112 §5.2): the key on a continuation line.
#[test]
fn obs_fold_continuation_line_carries_the_key() {
    run(Probe::h1(
        "obs_fold",
        h1_final(&format!("X-Folded: start\r\n {REAL}\r\n"), b"ok"),
    ));
}

// ---- trailers ---------------------------------------------------------------------------

#[test]
fn chunked_trailer_carries_the_key() {
    run(Probe::h1(
        "chunked_trailer",
        vec![text(&format!(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Leak\r\n\
             Connection: close\r\n\r\n2\r\nok\r\n0\r\nX-Leak: {REAL}\r\n\r\n"
        ))],
    ));
}

/// A chunk extension (`2;k=...`): clients that keep the raw framing (`curl --raw`) show it.
#[test]
fn chunk_extension_carries_the_key() {
    run(Probe::h1(
        "chunk_extension",
        vec![text(&format!(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n\
             2;k={REAL}\r\nok\r\n0\r\n\r\n"
        ))],
    ));
}

#[test]
fn h2_trailer_grpc_message_carries_the_key() {
    let message = format!("invalid api key {REAL}");
    run(Probe::h2(
        "h2_trailer_grpc_message",
        vec![
            headers(
                &[(":status", "200"), ("content-type", "application/grpc")],
                false,
            ),
            data(b"\0\0\0\0\0", false),
            headers(&[("grpc-status", "16"), ("grpc-message", &message)], true),
        ],
    ));
}

// ---- content codings the gateway must decode or refuse ----------------------------------

#[test]
fn content_encoding_identity_then_gzip_hides_the_key() {
    let body = gzip(&secret_body());
    run(Probe::both(
        "ce_identity_then_gzip",
        h1_final(
            "Content-Encoding: identity\r\nContent-Encoding: gzip\r\n",
            &body,
        ),
        h2_final(
            &[
                ("content-encoding", "identity"),
                ("content-encoding", "gzip"),
            ],
            &body,
        ),
    ));
}

#[test]
fn content_encoding_empty_field_then_gzip_hides_the_key() {
    let body = gzip(&secret_body());
    run(Probe::both(
        "ce_empty_then_gzip",
        h1_final("Content-Encoding: \r\nContent-Encoding: gzip\r\n", &body),
        h2_final(
            &[("content-encoding", ""), ("content-encoding", "gzip")],
            &body,
        ),
    ));
}

#[test]
fn content_encoding_gzip_twice_in_two_fields_hides_the_key() {
    let body = gzip(&gzip(&secret_body()));
    run(Probe::both(
        "ce_gzip_twice",
        h1_final(
            "Content-Encoding: gzip\r\nContent-Encoding: gzip\r\n",
            &body,
        ),
        h2_final(
            &[("content-encoding", "gzip"), ("content-encoding", "gzip")],
            &body,
        ),
    ));
}

#[test]
fn content_encoding_gzip_then_br_in_one_field_hides_the_key() {
    let body = brotli(&gzip(&secret_body()));
    run(Probe::both(
        "ce_gzip_br",
        h1_final("Content-Encoding: gzip, br\r\n", &body),
        h2_final(&[("content-encoding", "gzip, br")], &body),
    ));
}

// ---- transfer codings -------------------------------------------------------------------

#[test]
fn transfer_encoding_gzip_chunked_hides_the_key() {
    run(Probe::h1(
        "te_gzip_chunked",
        cat(vec![
            vec![text(
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\nConnection: close\r\n\r\n",
            )],
            chunked(&gzip(&secret_body()), 16),
        ]),
    ));
}

#[test]
fn transfer_encoding_gzip_then_chunked_as_two_fields_hides_the_key() {
    run(Probe::h1(
        "te_gzip_then_chunked",
        cat(vec![
            vec![text(
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\
                 Connection: close\r\n\r\n",
            )],
            chunked(&gzip(&secret_body()), 16),
        ]),
    ));
}

// ---- upgrades ---------------------------------------------------------------------------

#[test]
fn unsolicited_101_upgrade_smuggles_the_key() {
    run(Probe::h1(
        "unsolicited_101",
        vec![
            text("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"),
            pause(),
            text(&format!("raw bytes after the upgrade: {REAL}\n")),
            pause(),
        ],
    ));
}

// ---- encodings the scrubber must see through --------------------------------------------

/// Base64 of a blob holding the key, wrapped at `width` columns with `eol`, once for each
/// byte of the key after which the first line break falls (all three base64 alignments occur
/// on the way). Each blob follows a `#pos N#` marker line.
fn wrapped_base64(width: usize, eol: &str) -> Vec<u8> {
    let per_line = width / 4 * 3;
    let mut out = String::new();
    for cut in 1..REAL.len() {
        let prefix = "x".repeat(per_line - cut);
        let blob = format!("{prefix}{REAL} trailing text");
        let encoded = STANDARD.encode(blob.as_bytes());
        out.push_str(&format!("#pos {cut}#{eol}"));
        for line in encoded.as_bytes().chunks(width) {
            out.push_str(std::str::from_utf8(line).unwrap());
            out.push_str(eol);
        }
    }
    out.into_bytes()
}

#[test]
fn mime_base64_wrapped_at_76_columns_hides_the_key() {
    let body = wrapped_base64(76, "\r\n");
    run(Probe::both(
        "base64_mime_76",
        h1_final("Content-Type: message/rfc822\r\n", &body),
        h2_final(&[("content-type", "message/rfc822")], &body),
    ));
}

#[test]
fn pem_base64_wrapped_at_64_columns_hides_the_key() {
    let body = wrapped_base64(64, "\n");
    run(Probe::both(
        "base64_pem_64",
        h1_final("Content-Type: application/x-pem-file\r\n", &body),
        h2_final(&[("content-type", "application/x-pem-file")], &body),
    ));
}

/// Percent-encodes every byte outside `keep` and ASCII alphanumerics.
fn percent_keeping(value: &str, keep: &str, lower_hex: bool) -> String {
    value
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || keep.as_bytes().contains(&b) {
                char::from(b).to_string()
            } else if lower_hex {
                format!("%{b:02x}")
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Python's `urllib.parse.quote` (keeps `/` and `_.-~`), in a `Location` header and a body.
#[test]
fn python_quote_keeping_slash_hides_the_key() {
    let quoted = percent_keeping(SLASHY, "_.-~/", false);
    let lower = percent_keeping(SLASHY, "_.-~/", true);
    let location = format!("/cb?token={quoted}");
    let body = format!("next=/cb?token={quoted}\nagain={lower}\n");
    run(Probe::both(
        "python_quote",
        h1_final(&format!("Location: {location}\r\n"), body.as_bytes()),
        h2_final(&[("location", &location)], body.as_bytes()),
    )
    .needle(SLASHY));
}

/// JavaScript's `encodeURI` (keeps `;,/?:@&=+$#-_.!~*'()`), in a `Location` header and a body.
#[test]
fn js_encode_uri_keeping_slash_and_plus_hides_the_key() {
    let encoded = percent_keeping(SLASHY, ";,/?:@&=+$#-_.!~*'()", false);
    let location = format!("/cb?token={encoded}");
    let body = format!("next=/cb?token={encoded}\n");
    run(Probe::both(
        "js_encode_uri",
        h1_final(&format!("Location: {location}\r\n"), body.as_bytes()),
        h2_final(&[("location", &location)], body.as_bytes()),
    )
    .needle(SLASHY));
}

// ---- the key split across the body's pieces ---------------------------------------------

/// The key split across chunked-encoding chunks (HTTP/1.1) and DATA frames (HTTP/2), a few
/// bytes each, each piece in its own TCP segment.
#[test]
fn key_split_across_chunks_and_data_frames_carries_the_key() {
    let body = secret_body();
    let frames: Vec<Value> = body
        .chunks(5)
        .flat_map(|c| [data(c, false), pause()])
        .chain([data(b"", true)])
        .collect();
    run(Probe::both(
        "split_across_pieces",
        cat(vec![
            vec![text(
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
            )],
            chunked(&body, 5),
        ]),
        cat(vec![vec![headers(&[(":status", "200")], false)], frames]),
    ));
}

// ---- self-checks of the leak finder -----------------------------------------------------

#[test]
fn the_leak_finder_sees_through_what_the_probes_use() {
    let cases: Vec<(&str, Vec<u8>, bool)> = vec![
        ("plain", secret_body(), true),
        ("gzip twice", gzip(&gzip(&secret_body())), true),
        ("brotli over gzip", brotli(&gzip(&secret_body())), true),
        ("mime base64", wrapped_base64(76, "\r\n"), true),
        ("lower case", REAL.to_ascii_lowercase().into_bytes(), true),
        ("the dummy", DUMMY.as_bytes().to_vec(), false),
    ];
    for (name, body, want) in cases {
        let r = Received {
            head: Vec::new(),
            body,
            stderr: Vec::new(),
            exit: 0,
            version_status: String::new(),
        };
        assert_eq!(leaks(&r, REAL), want, "{name}");
    }
    let chunks: Vec<u8> = b"5\r\nsk-Li\r\n3\r\nve-\r\n0\r\n\r\n".to_vec();
    assert_eq!(dechunk(&chunks), b"sk-Live-");
    assert!(Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/traffic/adversarial/hostile_upstream.py"
    ))
    .exists());
}

// ---- timing: when bytes arrive must not depend on the key ----------------------------------

/// How long after the first body bytes each marker text reached the agent.
struct Arrivals {
    guess: std::time::Duration,
    rest: std::time::Duration,
}

/// curl through `CONNECT` + mTLS (HTTP/1.1 inside the tunnel, unbuffered), reading its output
/// as it comes: when did `guess` arrive, and when did the text after the upstream's pause?
fn arrivals(s: &Setup, script: &str, guess: &str) -> Arrivals {
    use std::io::BufRead as _;
    use std::time::Instant;
    let root = s.certs.join("root_ca.crt");
    let mut child = Command::new("curl")
        .args(["-sS", "-N", "--http1.1", "--max-time", "15", "--proxy"])
        .arg(format!("https://127.0.0.1:{}", s.gw.listen.port()))
        .arg("--proxy-cacert")
        .arg(&root)
        .arg("--proxy-cert")
        .arg(s.certs.join("agent-1.crt"))
        .arg("--proxy-key")
        .arg(s.certs.join("agent-1.key"))
        .arg("--cacert")
        .arg(&root)
        .arg(format!("https://api.test/h1/{script}"))
        .env_remove("SSL_CERT_FILE")
        .env_remove("CURL_CA_BUNDLE")
        .env_remove("HTTPS_PROXY")
        .env_remove("https_proxy")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut seen = Vec::new();
    let (mut start, mut guess_at, mut rest_at) = (None, None, None);
    while rest_at.is_none() {
        let buf = out.fill_buf().unwrap();
        if buf.is_empty() {
            break;
        }
        let now = Instant::now();
        seen.extend_from_slice(buf);
        let n = buf.len();
        out.consume(n);
        start.get_or_insert(now);
        let text = String::from_utf8_lossy(&seen).into_owned();
        if guess_at.is_none() && (text.contains(guess) || text.contains(DUMMY)) {
            guess_at = Some(now);
        }
        if text.contains("after the pause") {
            rest_at = Some(now);
        }
    }
    let _ = child.wait();
    let text = String::from_utf8_lossy(&seen).into_owned();
    let (Some(start), Some(guess_at), Some(rest_at)) = (start, guess_at, rest_at) else {
        panic!("curl did not receive the whole answer: {text:?}");
    };
    Arrivals {
        guess: guess_at - start,
        rest: rest_at - start,
    }
}

/// The hold-back timing side channel (issue: "4 characters took 41 requests"). An upstream
/// streams text the agent chose, ending in a guess of the key's first characters, then pauses
/// before the rest. The old rule held back exactly the tails that are prefixes of the real key,
/// so a right guess arrived after the pause and a wrong one at once. Now a right guess and a
/// wrong guess of the same character classes arrive at the same moment.
#[test]
fn streamed_guess_of_the_key_start_arrives_when_a_wrong_guess_does() {
    const PAUSE: f64 = 0.8;
    const REST: &str = " after the pause\n";
    let right = &REAL[..14];
    let wrong = "sk-Live-8eR4b0";
    assert_ne!(right, wrong);
    let s = setup();
    for (name, guess) in [("guess-right", right), ("guess-wrong", wrong)] {
        let first = format!("data: the key starts with {guess}");
        let script = json!({ "h1": [
            text("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n"),
            text(&format!("{:x}\r\n{first}\r\n", first.len())),
            json!({ "pause": PAUSE }),
            text(&format!("{:x}\r\n{REST}\r\n0\r\n\r\n", REST.len())),
        ]});
        std::fs::write(
            s.work.path().join(format!("scripts/{name}.json")),
            serde_json::to_vec(&script).unwrap(),
        )
        .unwrap();
    }
    // Interleaved rounds; what matters is how long each guess waited for the rest.
    let mut waits: Vec<(f64, f64)> = Vec::new();
    for _ in 0..3 {
        let r = arrivals(&s, "guess-right", right);
        let w = arrivals(&s, "guess-wrong", wrong);
        waits.push((
            (r.rest - r.guess).as_secs_f64(),
            (w.rest - w.guess).as_secs_f64(),
        ));
    }
    println!("seconds between the guess and the text after the pause (right, wrong): {waits:?}");
    for (right_wait, wrong_wait) in &waits {
        assert!(
            (right_wait - wrong_wait).abs() < PAUSE / 2.0,
            "a right guess and a wrong guess arrive at different times: {waits:?}"
        );
    }
    let all = format!("{}{}", s.gw.stdout(), s.gw.stderr());
    assert!(!all.contains(REAL));
}
