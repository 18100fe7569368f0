//! Live reload and secret rotation, against a real gateway process under load: nothing in
//! flight fails, no request sees a mix of old and new secrets, a bad file is refused while the
//! old configuration keeps serving, `check --admin` shows the plan, a rotated key parked
//! upstream and read back stays scrubbed during the retirement grace, and a rotated secret is
//! gone from the gateway's memory once the grace ends and no request uses it.
use crate::common;

use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::gateway::GatewayProcess;
use common::upstream::{reversed, ChannelBody, Upstream, UpstreamKind};

const DUMMY: &str = "sk-dummy-openai";
const ROTATIONS: usize = 20;

fn real(version: usize) -> String {
    format!("sk-real-v{version:02}-{}", "x7Qz".repeat(8))
}

/// The `rotation:` section of the tests that do not set one: a grace longer than any test.
const LONG_GRACE: &str = "1h";

fn config(extra_route: bool, grace: &str) -> String {
    let extra = if extra_route {
        "  - host: extra.test\n    upstream: api\n"
    } else {
        ""
    };
    format!(
        "listeners:\n  - name: agents\n    address: {{listen}}\n\
         admin:\n  address: {{admin}}\n\
         upstreams:\n  api:\n    url: {{upstream}}\n\
         credentials:\n  openai:\n    dummy: {DUMMY}\n    real: {{ file: {{dir}}/openai_key }}\n    upstreams: [api]\n    swap_in: {{ body: [\"*/*\"] }}\n\
         \x20 other:\n    dummy: sk-dummy-other\n    real: {{ env: TEST_OTHER_KEY }}\n    upstreams: [api]\n\
         routes:\n  - host: api.test\n    upstream: api\n{extra}\
         rotation:\n  retired_grace: {grace}\n"
    )
}

/// Writes `content` to `path` atomically (a reader never sees half a file).
fn write_atomic(path: &Path, content: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, content).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

struct Setup {
    gw: GatewayProcess,
    up: Upstream,
    /// `rotation.retired_grace` of the config.
    grace: &'static str,
}

fn setup() -> Setup {
    setup_with_grace(LONG_GRACE)
}

fn setup_with_grace(grace: &'static str) -> Setup {
    let up = Upstream::start(UpstreamKind::Plain);
    let versions: Vec<Vec<u8>> = (0..=ROTATIONS).map(|v| real(v).into_bytes()).collect();
    up.count_needles(versions.iter().map(|v| v.as_slice()));
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("openai_key"), format!("{}\n", real(0))).unwrap();
    let text = config(false, grace).replace("{upstream}", &up.url());
    let gw = GatewayProcess::start_in(dir, &text, &[("TEST_OTHER_KEY", OTHER_REAL)]);
    Setup { gw, up, grace }
}

/// The real value of credential `other` (from the environment).
const OTHER_REAL: &str = "sk-other-real-1234";

impl Setup {
    /// Rewrites the config (with the current upstream) in place.
    fn write_config(&self, extra_route: bool) {
        self.write_config_text(&config(extra_route, self.grace));
    }

    /// Writes `text` (a config with placeholders) as the config file, atomically.
    fn write_config_text(&self, text: &str) {
        let text = text
            .replace("{upstream}", &self.up.url())
            .replace("{listen}", &self.gw.listen.to_string())
            .replace("{admin}", &self.gw.admin.to_string())
            .replace("{dir}", &self.gw.dir().display().to_string());
        write_atomic(&self.gw.config_path, &text);
    }

    fn admin(&self, path: &str) -> (u16, String) {
        let out = Command::new("curl")
            .args([
                "-s",
                "-w",
                "\n%{http_code}",
                &format!("http://{}{path}", self.gw.admin),
            ])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap();
        (code.parse().unwrap(), body.to_string())
    }

    /// Waits until the gateway's log holds `needle` at least `count` times.
    fn wait_log(&self, needle: &str, count: usize) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.gw.stderr().matches(needle).count() < count {
            assert!(
                Instant::now() < deadline,
                "no `{needle}` in:\n{}",
                self.gw.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Rotates `openai` to `real(v)` and reloads; returns when the reload is applied.
    fn rotate(&self, v: usize) {
        write_atomic(&self.gw.dir().join("openai_key"), &format!("{}\n", real(v)));
        self.gw.signal("HUP");
        self.wait_applied();
    }

    /// Waits until the running configuration is the file on disk.
    fn wait_applied(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let (code, body) = self.admin("/reload/plan");
            if code == 200 && body.trim() == "no changes" {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "not applied: {code} {body}\n{}",
                self.gw.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn client() -> hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    ChannelBody,
> {
    hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .pool_max_idle_per_host(64)
        .build_http()
}

/// Which secret versions a recorded request carried: in the Authorization header and in the
/// body.
fn versions_seen(r: &common::upstream::RecordedRequest) -> (Option<usize>, Vec<usize>) {
    let header = r
        .header_str("authorization")
        .and_then(|a| (0..=ROTATIONS).find(|&v| a == format!("Bearer {}", real(v))));
    let body: Vec<usize> = r
        .body
        .needle_counts
        .iter()
        .enumerate()
        .filter(|(_, c)| **c > 0)
        .map(|(v, _)| v)
        .collect();
    (header, body)
}

/// 50 concurrent clients — short requests and long streamed uploads that span several
/// reloads — while 20 reloads add and remove a route and rotate the secret file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_under_load_lose_nothing_and_never_mix_secrets() {
    let s = Arc::new(setup());
    let url = s.gw.url();
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for worker in 0..50 {
        let (url, stop, failures, done) =
            (url.clone(), stop.clone(), failures.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            let client = client();
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                let (tx, body) = ChannelBody::channel(4);
                let long = worker % 5 == 0;
                let req = http::Request::post(format!("{url}/sink?w={worker}&n={n}"))
                    .header("host", "api.test")
                    .header("authorization", format!("Bearer {DUMMY}"))
                    .body(body)
                    .unwrap();
                let sender = tokio::spawn(async move {
                    // A long upload: 40 chunks over about two seconds, a dummy in each.
                    let parts = if long { 40 } else { 2 };
                    for i in 0..parts {
                        let chunk = format!("part {i} {DUMMY} ");
                        if tx.send(bytes::Bytes::from(chunk)).await.is_err() {
                            return;
                        }
                        if long {
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                    }
                });
                match client.request(req).await {
                    Ok(resp) if resp.status() == 200 => {
                        use http_body_util::BodyExt;
                        if resp.into_body().collect().await.is_err() {
                            failures.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    _ => {
                        failures.fetch_add(1, Ordering::Relaxed);
                    }
                }
                let _ = sender.await;
                done.fetch_add(1, Ordering::Relaxed);
                n += 1;
            }
        }));
    }
    let s2 = s.clone();
    tokio::task::spawn_blocking(move || {
        let s = s2;
        for v in 1..=ROTATIONS {
            let extra = v % 2 == 1;
            s.write_config(extra);
            write_atomic(&s.gw.dir().join("openai_key"), &format!("{}\n", real(v)));
            s.gw.signal("HUP");
            s.wait_applied();
            // Requests after the reload see the new secret and the new routes.
            let out = Command::new("curl")
                .args([
                    "-s",
                    "-o",
                    "/dev/null",
                    "-w",
                    "%{http_code}",
                    "-H",
                    "Host: extra.test",
                ])
                .arg(format!("{}/status/200", s.gw.url()))
                .output()
                .unwrap();
            let code = String::from_utf8_lossy(&out.stdout).to_string();
            assert_eq!(
                code,
                if extra { "200" } else { "403" },
                "reload {v}: route not applied"
            );
            let marker = format!("/echo-header?probe={v}");
            let out = Command::new("curl")
                .args(["-s", "-o", "/dev/null", "-H", "Host: api.test", "-H"])
                .arg(format!("Authorization: Bearer {DUMMY}"))
                .arg(format!("{}{marker}", s.gw.url()))
                .output()
                .unwrap();
            assert!(out.status.success());
            let probe =
                s.up.requests()
                    .into_iter()
                    .rfind(|r| r.path == marker)
                    .unwrap();
            assert_eq!(
                versions_seen(&probe).0,
                Some(v),
                "reload {v}: the old secret was used after the reload"
            );
        }
    })
    .await
    .unwrap();
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(
        failures.load(Ordering::Relaxed),
        0,
        "requests failed during reloads"
    );
    let total = done.load(Ordering::Relaxed);
    assert!(total > 200, "too little load: {total} requests");
    let mut spanning = 0;
    for r in
        s.up.requests()
            .iter()
            .filter(|r| r.path.starts_with("/sink"))
    {
        let (header, body) = versions_seen(r);
        assert!(r.body.complete);
        assert_eq!(body.len(), 1, "{}: body carried versions {body:?}", r.path);
        assert_eq!(
            header,
            Some(body[0]),
            "{}: header and body carried different versions",
            r.path
        );
        if r.body.len > 1000 {
            spanning += 1;
        }
    }
    assert!(spanning >= 10, "only {spanning} long uploads");
    let (_, metrics) = s.admin("/metrics");
    let successes: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("slapenir_config_reloads_total{result=\"success\"} "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    assert!(
        successes >= ROTATIONS as u64,
        "{successes} successful reloads:\n{metrics}"
    );
    assert!(
        metrics.contains("slapenir_config_reloads_total{result=\"failure\"} 0"),
        "{metrics}"
    );
    let out = format!("{}{}", s.gw.stdout(), s.gw.stderr());
    for v in 0..=ROTATIONS {
        assert!(
            !out.contains(&real(v)),
            "a real secret is in the gateway's output"
        );
    }
}

#[test]
fn a_bad_config_or_an_unreadable_secret_is_refused_and_the_old_one_keeps_serving() {
    let s = setup();
    let get = || {
        let out = Command::new("curl")
            .args([
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "-H",
                "Host: api.test",
                "-H",
            ])
            .arg(format!("Authorization: Bearer {DUMMY}"))
            .arg(format!("{}/status/200", s.gw.url()))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    assert_eq!(get(), "200");
    let wait_log = |needle: &str, count: usize| {
        let deadline = Instant::now() + Duration::from_secs(20);
        while s.gw.stderr().matches(needle).count() < count {
            assert!(
                Instant::now() < deadline,
                "no `{needle}` in:\n{}",
                s.gw.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    // 1. A config with an undefined upstream.
    let good = std::fs::read_to_string(&s.gw.config_path).unwrap();
    write_atomic(
        &s.gw.config_path,
        &good.replace("    upstream: api\n", "    upstream: nope\n"),
    );
    s.gw.signal("HUP");
    wait_log("configuration NOT reloaded", 1);
    assert!(
        s.gw.stderr()
            .contains("routes[0].upstream: upstream `nope` is not defined"),
        "{}",
        s.gw.stderr()
    );
    assert_eq!(get(), "200", "the old configuration stopped serving");
    // The plan endpoint reports the same errors.
    let (code, body) = s.admin("/reload/plan");
    assert_eq!(code, 422);
    assert!(body.contains("upstream `nope` is not defined"), "{body}");
    // 2. A good config, but the secret file is unreadable (a directory where the file was).
    write_atomic(&s.gw.config_path, &good);
    let key = s.gw.dir().join("openai_key");
    std::fs::remove_file(&key).unwrap();
    std::fs::create_dir(&key).unwrap();
    s.gw.signal("HUP");
    wait_log("configuration NOT reloaded", 2);
    assert!(
        s.gw.stderr()
            .contains("credentials.openai.real: cannot read file"),
        "{}",
        s.gw.stderr()
    );
    assert_eq!(get(), "200");
    let probe = s.up.requests().pop().unwrap();
    assert_eq!(
        versions_seen(&probe).0,
        Some(0),
        "the old secret must keep serving"
    );
    let (_, metrics) = s.admin("/metrics");
    assert!(
        metrics.contains("slapenir_config_reloads_total{result=\"failure\"} 2"),
        "{metrics}"
    );
}

#[test]
fn check_against_the_running_gateway_shows_the_plan_without_applying_it() {
    let s = setup();
    s.write_config(true);
    write_atomic(&s.gw.dir().join("openai_key"), &format!("{}\n", real(1)));
    let out = Command::new(env!("CARGO_BIN_EXE_slapenir"))
        .args(["check", "--config"])
        .arg(&s.gw.config_path)
        .arg("--admin")
        .arg(s.gw.admin.to_string())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("routes added: extra.test/"), "{text}");
    assert!(text.contains("credentials rotated: openai"), "{text}");
    assert!(
        text.contains("old values retired (still scrubbed from responses): openai"),
        "{text}"
    );
    assert!(
        !text.contains("other"),
        "an unchanged credential was listed: {text}"
    );
    assert!(!text.contains(&real(1)) && !text.contains(&real(0)));
    // Not applied: the file watcher may apply it later, but `check` itself did not.
    let audit_before = s.gw.stderr().matches("configuration reloaded").count();
    assert_eq!(audit_before, 0);
}

/// Scans every readable region of `pid`'s memory for `needle`.
fn memory_contains(pid: u32, needle: &[u8]) -> usize {
    use std::io::{Read, Seek, SeekFrom};
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    let mut mem = std::fs::File::open(format!("/proc/{pid}/mem")).unwrap();
    let finder = aho_corasick::AhoCorasick::new([needle]).unwrap();
    let mut hits = 0;
    for line in maps.lines() {
        let mut parts = line.split_whitespace();
        let (Some(range), Some(perms)) = (parts.next(), parts.next()) else {
            continue;
        };
        if !perms.starts_with('r') || line.ends_with("[vvar]") || line.ends_with("[vsyscall]") {
            continue;
        }
        let (a, b) = range.split_once('-').unwrap();
        let (a, b) = (
            u64::from_str_radix(a, 16).unwrap(),
            u64::from_str_radix(b, 16).unwrap(),
        );
        let mut buf = vec![0u8; (b - a) as usize];
        if mem.seek(SeekFrom::Start(a)).is_err() || mem.read_exact(&mut buf).is_err() {
            continue;
        }
        hits += finder.find_iter(&buf).count();
    }
    hits
}

/// Sends `traffic` requests through the gateway with `real(v)` live: the dummy goes out (and
/// becomes the real value), the upstream echoes the real value back in a header and a body
/// (scrubbed to the dummy).
fn traffic(s: &Setup, n: usize, v: usize) {
    for i in 0..n {
        let out = Command::new("curl")
            .args(["-s", "-H", "Host: api.test", "-H"])
            .arg(format!("Authorization: Bearer {DUMMY}"))
            .args(["--data-binary", &format!("x {DUMMY} {i}")])
            .arg(format!(
                "{}/echo-header?name=x-echo&{}",
                s.gw.url(),
                reversed("value", &real(v))
            ))
            .output()
            .unwrap();
        assert!(out.status.success());
    }
}

/// What an agent reading `value` back from the upstream receives (status line, headers and
/// body), with or without the gateway: the upstream echoes it in a header, and in the body
/// plain and base64-encoded.
fn read_back(base: &str, via_gateway: bool, value: &str) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(value);
    let mut out = String::new();
    for path in [
        // Sent reversed: the agent may not send a real value, retired ones included.
        format!("/echo-header?name=x-parked&{}", reversed("value", value)),
        format!("/body?{}", reversed("text", &format!("{value} and {b64}"))),
    ] {
        let mut cmd = Command::new("curl");
        cmd.args(["-s", "-i"]);
        if via_gateway {
            cmd.args(["-H", "Host: api.test"]);
        }
        let got = cmd.arg(format!("{base}{path}")).output().unwrap();
        assert!(got.status.success());
        out.push_str(&String::from_utf8_lossy(&got.stdout));
    }
    out
}

/// Whether a `curl -i` output holds the header `name: value` (name in any case).
fn has_header(output: &str, name: &str, value: &str) -> bool {
    output.lines().any(|l| {
        l.split_once(':')
            .is_some_and(|(n, v)| n.eq_ignore_ascii_case(name) && v.trim() == value)
    })
}

/// A key the agent parked upstream while it was live (here: the upstream echoes whatever it is
/// asked to) and reads back after the rotation stays scrubbed during the grace, in a header
/// and a body, plain and encoded; so does the value of a credential the reload removed.
#[test]
fn a_rotated_key_parked_upstream_and_read_back_is_scrubbed_during_the_grace() {
    let s = setup();
    // Without the gateway, reading it back yields the key: the check can fail.
    let direct = read_back(&s.up.url(), false, &real(0));
    assert!(direct.contains(&real(0)), "{direct}");
    assert!(has_header(&direct, "x-parked", &real(0)), "{direct}");
    // Rotate `openai` and remove `other`.
    s.rotate(1);
    s.wait_log(
        "credential `openai`: the retired value stays scrubbed from responses until ",
        1,
    );
    let other =
        "  other:\n    dummy: sk-dummy-other\n    real: { env: TEST_OTHER_KEY }\n    upstreams: [api]\n";
    let without_other = config(false, LONG_GRACE).replace(other, "");
    assert_ne!(without_other, config(false, LONG_GRACE));
    s.write_config_text(&without_other);
    let (_, plan) = s.admin("/reload/plan");
    assert!(plan.contains("credentials removed: other"), "{plan}");
    assert!(
        plan.contains("old values retired (still scrubbed from responses): other"),
        "{plan}"
    );
    s.gw.signal("HUP");
    s.wait_applied();
    s.wait_log(
        "credential `other`: the retired value stays scrubbed from responses until ",
        1,
    );
    let cases = [
        ("rotated key", real(0), DUMMY),
        (
            "removed credential's key",
            OTHER_REAL.to_owned(),
            "sk-dummy-other",
        ),
    ];
    for (name, value, dummy) in cases {
        let seen = read_back(&s.gw.url(), true, &value);
        assert!(seen.starts_with("HTTP/1.1 200"), "{name}: {seen}");
        assert!(
            !common::decode::any_decoding_holds(seen.as_bytes(), value.as_bytes()),
            "{name}: the retired key reached the agent:\n{seen}"
        );
        assert!(has_header(&seen, "x-parked", dummy), "{name}: {seen}");
        assert!(seen.contains(&format!("{dummy} and ")), "{name}: {seen}");
    }
    // The status page lists the retirements by name.
    let (_, status) = s.admin("/status");
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    let mut retired: Vec<&str> = status["retired"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["credential"].as_str().unwrap())
        .collect();
    retired.sort_unstable();
    assert_eq!(retired, ["openai", "other"], "{status}");
    // Counted under the credential's name, the removed one included.
    let (_, metrics) = s.admin("/metrics");
    for credential in ["openai", "other"] {
        let label = format!("credential=\"{credential}\"");
        let counted = metrics.lines().any(|l| {
            l.starts_with("slapenir_replacements_total{")
                && l.contains(&label)
                && l.contains("direction=\"response\"")
        });
        assert!(
            counted,
            "no response replacements of {credential} in:\n{metrics}"
        );
    }
    // The live key is still scrubbed, and nothing printed a value.
    let live = read_back(&s.gw.url(), true, &real(1));
    assert!(!live.contains(&real(1)), "{live}");
    let out = format!("{}{}", s.gw.stdout(), s.gw.stderr());
    for value in [real(0), real(1), OTHER_REAL.to_owned()] {
        assert!(
            !out.contains(&value),
            "a real value is in the gateway's output"
        );
    }
}

/// After rotation, once the grace ends and no request uses the old secret, it is nowhere in
/// the gateway's memory.
#[test]
fn a_rotated_secret_is_gone_from_memory() {
    let s = setup_with_grace("5s");
    traffic(&s, 50, 0);
    let pid = s.gw.pid();
    assert!(
        memory_contains(pid, real(0).as_bytes()) > 0,
        "the scan does not find a live secret"
    );
    s.rotate(1);
    // During the grace the old value is still held (it is scrubbed from responses).
    s.wait_log(
        "credential `openai`: the retired value stays scrubbed from responses until ",
        1,
    );
    assert!(
        memory_contains(pid, real(0).as_bytes()) > 0,
        "the retired value is not held during the grace"
    );
    s.wait_log("credential `openai`: retired value dropped", 1);
    traffic(&s, 50, 1);
    let old = memory_contains(pid, real(0).as_bytes());
    let new = memory_contains(pid, real(1).as_bytes());
    eprintln!("after the grace: old secret found {old} times, new secret {new} times");
    assert!(new > 0, "the scan does not find the live secret");
    assert_eq!(
        old, 0,
        "the rotated secret is still in the gateway's memory"
    );
}

/// `retired_grace: 0s`: the reload that rotates the key drops the old value at once — it is
/// gone from memory right after the reload, and no longer scrubbed.
#[test]
fn a_zero_grace_drops_the_retired_value_at_once() {
    let s = setup_with_grace("0s");
    traffic(&s, 50, 0);
    let pid = s.gw.pid();
    assert!(memory_contains(pid, real(0).as_bytes()) > 0);
    write_atomic(&s.gw.dir().join("openai_key"), &format!("{}\n", real(1)));
    let (_, plan) = s.admin("/reload/plan");
    assert!(plan.contains("retired values dropped: openai"), "{plan}");
    assert!(!plan.contains("old values retired"), "{plan}");
    s.gw.signal("HUP");
    s.wait_applied();
    s.wait_log("credential `openai`: retired value dropped", 1);
    assert!(
        !s.gw.stderr().contains("stays scrubbed"),
        "{}",
        s.gw.stderr()
    );
    traffic(&s, 50, 1);
    let old = memory_contains(pid, real(0).as_bytes());
    eprintln!("after a zero grace: old secret found {old} times");
    assert_eq!(
        old, 0,
        "the rotated secret is still in the gateway's memory"
    );
    // Dropped means no longer known: the old key read back passes unchanged (revoke it first).
    let seen = read_back(&s.gw.url(), true, &real(0));
    assert!(seen.contains(&real(0)), "{seen}");
}
