//! Third-party log records never carry a real value: a hostile upstream answers malformed heads
//! and bodies holding the real values the gateway sent it, Pingora rejects them and logs the
//! bytes (`Fail to proxy: … buf: HTTP/1.1 2x0 …`), and the gateway's log filter scrubs or
//! withholds every such record. The gateway runs at `RUST_LOG=trace`, so every debug and trace
//! record of Pingora (which quote heads, bodies and the upstream request with its real value)
//! goes through the filter too. Without the filter these records hold the values (shown in the
//! report of the change that added it: `Fail to proxy: … buf: HTTP/1.1 2x0 sk-live-…`).
use crate::common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::process::Command;
use std::time::Duration;

use common::decode::any_decoding_holds;
use common::gateway::GatewayProcess;
use common::wait::wait_for;

const PLAIN_DUMMY: &str = "sk-dummy-plain-0001";
const PLAIN_REAL: &str = "sk-live-PLAINREAL0123456789abcdef";
const ROTATED_REAL: &str = "sk-live-ROTATEDREAL9876543210fedc";
/// Every byte Rust's escapes change, except the control bytes a secret may not hold.
const ESCAPY_DUMMY: &str = "sk-dummy-escapy-001";
const ESCAPY_REAL: &str = "sk-live-q\"u'o\\te-\u{e9}-ESCREAL4567";

/// Malformed answers, each reaching a different error path of Pingora's HTTP/1 client.
/// `{real}` is replaced by the real value the request carried.
const HOSTILE: &[(&str, &str)] = &[
    (
        "bad-status-code",
        "HTTP/1.1 2x0 {real}\r\nContent-Length: 0\r\n\r\n",
    ),
    (
        "interim-then-bad-status",
        "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 2x0 {real}\r\n\r\n",
    ),
    (
        "header-without-colon",
        "HTTP/1.1 200 OK\r\n{real}\r\nContent-Length: 0\r\n\r\n",
    ),
    (
        "bad-byte-in-header-name",
        "HTTP/1.1 200 OK\r\nX-{real}\u{1}: v\r\nContent-Length: 0\r\n\r\n",
    ),
    (
        "nul-in-header-value",
        "HTTP/1.1 200 OK\r\nX-Key: {real}\0\r\nContent-Length: 0\r\n\r\n",
    ),
    ("bad-version", "{real} 200 OK\r\nContent-Length: 0\r\n\r\n"),
    (
        "bad-content-length",
        "HTTP/1.1 200 OK\r\nContent-Length: {real}\r\n\r\n",
    ),
    (
        "bad-chunk-size",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n{real}\r\nabc\r\n",
    ),
    (
        "bad-chunk-end",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc{real}\r\n0\r\n\r\n",
    ),
];

/// A raw TCP upstream: reads a request head and answers the script its path names
/// (`/case/<name>/<plain|escapy|rotated>`), then closes.
fn hostile_upstream() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            std::thread::spawn(move || {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let line = String::from_utf8_lossy(&head);
                let path = line.split(' ').nth(1).unwrap_or_default();
                let mut parts = path.trim_start_matches("/case/").split('/');
                let (name, which) = (parts.next().unwrap_or_default(), parts.next());
                let real = match which {
                    Some("escapy") => ESCAPY_REAL,
                    Some("rotated") => ROTATED_REAL,
                    _ => PLAIN_REAL,
                };
                let script = HOSTILE.iter().find(|(n, _)| *n == name).map_or(
                    "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n",
                    |(_, s)| s,
                );
                let _ = conn.write_all(script.replace("{real}", real).as_bytes());
                let _ = conn.shutdown(std::net::Shutdown::Write);
                // Drain until the gateway closes, so the answer is not cut by a reset.
                while matches!(conn.read(&mut buf), Ok(n) if n > 0) {}
            });
        }
    });
    addr
}

fn config(upstream: SocketAddr) -> String {
    format!(
        "listeners:\n  - name: agents\n    address: {{listen}}\n\
         admin:\n  address: {{admin}}\n\
         upstreams:\n  hostile:\n    url: http://{upstream}\n    http_version: \"1.1\"\n\
         credentials:\n\
         \x20 plain:\n    dummy: {PLAIN_DUMMY}\n    real: {{ file: {{dir}}/plain_key }}\n    upstreams: [hostile]\n\
         \x20 escapy:\n    dummy: {ESCAPY_DUMMY}\n    real: {{ env: TEST_ESCAPY_KEY }}\n    upstreams: [hostile]\n\
         routes:\n  - host: api.test\n    upstream: hostile\n"
    )
}

fn start(upstream: SocketAddr) -> GatewayProcess {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("plain_key"), format!("{PLAIN_REAL}\n")).unwrap();
    GatewayProcess::start_in(
        dir,
        &config(upstream),
        &[("TEST_ESCAPY_KEY", ESCAPY_REAL), ("RUST_LOG", "trace")],
    )
}

/// One request through the gateway with both dummies, so the upstream request (logged by
/// Pingora at debug level) carries both real values.
fn request(gw: &GatewayProcess, path: &str) {
    let out = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "--max-time", "20"])
        .args(["-H", "Host: api.test"])
        .args(["-H", &format!("Authorization: Bearer {PLAIN_DUMMY}")])
        .args(["-H", &format!("X-Other: {ESCAPY_DUMMY}")])
        .arg(format!("{}{path}", gw.url()))
        .output()
        .unwrap();
    // curl fails on a truncated body; the answer itself is not what this test is about.
    let _ = out;
}

/// Undoes one level of Rust's escapes (`\\`, `\"`, `\'`, `\xNN`, `\u{…}`), the forms Pingora
/// writes peer bytes in.
fn rust_unescape(input: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(input);
    let mut out = Vec::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.extend_from_slice(c.to_string().as_bytes());
            continue;
        }
        match chars.peek().copied() {
            Some(e @ ('\\' | '"' | '\'')) => {
                chars.next();
                out.push(e as u8);
            }
            Some('x') => {
                chars.next();
                let hex: String = chars.clone().take(2).collect();
                match u8::from_str_radix(&hex, 16) {
                    Ok(b) => {
                        chars.nth(1);
                        out.push(b);
                    }
                    Err(_) => out.extend_from_slice(b"\\x"),
                }
            }
            Some('u') => {
                let rest: String = chars.clone().take(10).collect();
                let decoded = rest
                    .strip_prefix("u{")
                    .and_then(|r| r.split_once('}'))
                    .and_then(|(h, _)| u32::from_str_radix(h, 16).ok().map(|v| (h.len(), v)))
                    .and_then(|(n, v)| char::from_u32(v).map(|c| (n, c)));
                match decoded {
                    Some((n, ch)) => {
                        for _ in 0..n + 3 {
                            chars.next();
                        }
                        out.extend_from_slice(ch.to_string().as_bytes());
                    }
                    None => out.push(b'\\'),
                }
            }
            _ => out.push(b'\\'),
        }
    }
    out
}

/// Whether `log` holds `real` in any decodable form, escaped once or twice by Rust, or as the
/// `Debug` of its chars (`'s', 'k', '\'', …`).
fn leaks(log: &[u8], real: &str) -> bool {
    let once = rust_unescape(log);
    let twice = rust_unescape(&once);
    let chars = rust_unescape(String::from_utf8_lossy(log).replace("', '", "").as_bytes());
    [log, &once, &twice, &chars]
        .iter()
        .any(|view| any_decoding_holds(view, real.as_bytes()))
}

fn assert_clean(gw: &GatewayProcess, reals: &[&str]) {
    let log = format!("{}\n{}", gw.stdout(), gw.stderr());
    for real in reals {
        assert!(
            !leaks(log.as_bytes(), real),
            "a real value reached the gateway's log:\n{}",
            log.lines()
                .filter(|l| leaks(l.as_bytes(), real))
                .take(5)
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}

#[test]
fn hostile_upstream_bytes_never_reach_the_log_with_a_real_value() {
    let gw = start(hostile_upstream());
    let mut n = 0;
    for (name, _) in HOSTILE {
        for which in ["plain", "escapy"] {
            request(&gw, &format!("/case/{name}/{which}"));
            n += 1;
            // The audit line is written after Pingora's error record.
            gw.stdout_with_lines(n);
        }
    }
    assert_clean(&gw, &[PLAIN_REAL, ESCAPY_REAL]);
    let stderr = gw.stderr();
    // The error paths ran: Pingora logged a failure for each malformed head.
    let errors = stderr
        .lines()
        .filter(|l| l.contains("ERROR pingora_proxy"))
        .count();
    assert!(errors >= 2 * 6, "{errors} Pingora error records:\n{stderr}");
    assert!(stderr.contains("withheld"), "{stderr}");
}

/// The filter scrubs the values of the running policy: after a reload rotates a secret, the new
/// value is scrubbed too.
#[test]
fn the_filter_follows_reloads() {
    let gw = start(hostile_upstream());
    std::fs::write(gw.path("plain_key"), format!("{ROTATED_REAL}\n")).unwrap();
    gw.signal("HUP");
    wait_for(
        Duration::from_secs(20),
        Duration::from_millis(20),
        "the reload",
        || {
            gw.stderr()
                .contains("credentials rotated: plain")
                .then_some(())
        },
        || gw.stderr(),
    );
    request(&gw, "/case/bad-status-code/rotated");
    gw.stdout_with_lines(1);
    assert_clean(&gw, &[PLAIN_REAL, ROTATED_REAL, ESCAPY_REAL]);
    assert!(
        gw.stderr().contains("ERROR pingora_proxy"),
        "{}",
        gw.stderr()
    );
}
