//! Decompression amplification, end to end: an upstream sends a gzip bomb (about 127 KiB that
//! inflates to 128 MiB; an agent can arrange this by storing one and downloading it) to four
//! concurrent slow readers through the gateway, and the gateway's peak RSS (`VmHWM`) is
//! compared with the same four readers fetching a plain body of the same decoded size.
//!
//! Before the decoding budget, one upstream read (64 KiB of gzip) decoded whole into a single
//! 64 MiB buffer that was then queued for the slow reader: about 500 MiB per response at peak.
//! With the budget, a read may decode to at most `max_ratio × its bytes + 1 MiB`, so each bomb
//! is refused at its first read (`502` with `x-slapenir-refusal: decode_budget_exceeded` when
//! the head has not been sent, a cut connection otherwise) and memory stays flat.
//!
//! The ignored test runs the same bomb with the budget turned off (a ratio and a total nothing
//! reaches), which shows the measurement catches the amplification; run it by hand:
//! `cargo test --release --test decode_budget -- --ignored --nocapture`.
use crate::common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::thread;

use common::gateway::GatewayProcess;

const MIB: u64 = 1 << 20;
/// Decoded size of the bomb, and size of the plain body.
const DECODED: u64 = 128 * MIB;
/// Concurrent slow readers.
const READERS: usize = 4;
/// How fast each reader reads, and for how long at most (curl's `--limit-rate`, `--max-time`).
const READ_RATE: &str = "2M";
const READ_SECONDS: &str = "6";

/// The bound asserted for the bomb case: above the gateway's RSS before the requests, each
/// reader may cost two step limits (the decoded buffer and the scrubbed copy) of a 64 KiB read
/// at the default budget (100 × 64 KiB + 1 MiB), plus 32 MiB for everything else.
const BOMB_BOUND_KIB: u64 = (READERS as u64 * 2 * (100 * 64 * 1024 + MIB) + 32 * MIB) / 1024;

/// A one-shot HTTP/1.1 upstream: `/bomb` sends the gzip bomb with `Content-Encoding: gzip`,
/// `/plain` sends [`DECODED`] bytes of text; both with `Content-Length` and `Connection: close`,
/// each connection on its own thread (blocked writes are the backpressure).
struct BombServer {
    addr: SocketAddr,
}

impl BombServer {
    fn start() -> BombServer {
        let bomb = Arc::new(gzip_zeros(DECODED));
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let bomb = bomb.clone();
                thread::spawn(move || serve(stream, &bomb));
            }
        });
        BombServer { addr }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

fn gzip_zeros(len: u64) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    let zeros = vec![0u8; MIB as usize];
    for _ in 0..len / MIB {
        gz.write_all(&zeros).unwrap();
    }
    gz.finish().unwrap()
}

fn serve(stream: TcpStream, bomb: &[u8]) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).is_err() {
        return;
    }
    loop {
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) if line == "\r\n" => break,
            Ok(_) => {}
        }
    }
    let path = request_line.split_whitespace().nth(1).unwrap_or("/");
    let mut stream = stream;
    // Write errors mean the gateway gave up on the body: that is the point of the test.
    let _ = match path {
        "/bomb" => write_response(&mut stream, "content-encoding: gzip\r\n", &[bomb], 1),
        "/plain" => {
            let line = [b'.'; 63].iter().chain(b"\n").copied().collect::<Vec<u8>>();
            let chunk = line.repeat(1024);
            let times = DECODED / chunk.len() as u64;
            write_response(&mut stream, "", &[&chunk], times)
        }
        _ => stream.write_all(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n"),
    };
}

/// Sends `parts` `times` over, after a head announcing their total length.
fn write_response(
    stream: &mut TcpStream,
    extra_headers: &str,
    parts: &[&[u8]],
    times: u64,
) -> std::io::Result<()> {
    let len: u64 = parts.iter().map(|p| p.len() as u64).sum::<u64>() * times;
    write!(
        stream,
        "HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\n{extra_headers}\
         content-length: {len}\r\nconnection: close\r\n\r\n"
    )?;
    for _ in 0..times {
        for part in parts {
            stream.write_all(part)?;
        }
    }
    stream.flush()
}

fn gateway(upstream: &BombServer, decoding: &str) -> GatewayProcess {
    let config = format!(
        "listeners:\n  - name: agents\n    address: {{listen}}\n\
         admin:\n  address: {{admin}}\n\
         upstreams:\n  store:\n    url: {url}\n\
         routes:\n  - host: store.test\n    upstream: store\n\
         {decoding}",
        url = upstream.url()
    );
    GatewayProcess::start(&config, &[])
}

/// What one slow reader got.
#[derive(Debug)]
struct Reader {
    status: u16,
    refusal: Option<String>,
    body_bytes: u64,
    curl_exit: i32,
}

fn slow_reader(gw: &GatewayProcess, path: &str) -> Child {
    Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-D", "-"])
        .args(["--limit-rate", READ_RATE, "--max-time", READ_SECONDS])
        .args(["-H", "Host: store.test", "-w", "\n%{size_download}\n"])
        .arg(format!("{}{path}", gw.url()))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap()
}

fn finish_reader(mut child: Child) -> Reader {
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    let curl_exit = child.wait().unwrap().code().unwrap_or(-1);
    let status = out
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let refusal = out.lines().find_map(|l| {
        let (name, value) = l.split_once(':')?;
        name.eq_ignore_ascii_case("x-slapenir-refusal")
            .then(|| value.trim().to_owned())
    });
    let body_bytes = out
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or(0);
    Reader {
        status,
        refusal,
        body_bytes,
        curl_exit,
    }
}

struct Run {
    baseline_kib: u64,
    peak_kib: u64,
    readers: Vec<Reader>,
    gw: GatewayProcess,
}

/// Starts a gateway, sends [`READERS`] concurrent slow readers to `path`, and measures.
fn run(upstream: &BombServer, path: &str, decoding: &str) -> Run {
    let gw = gateway(upstream, decoding);
    let baseline_kib = gw.peak_rss_kib();
    let children: Vec<Child> = (0..READERS).map(|_| slow_reader(&gw, path)).collect();
    let readers = children.into_iter().map(finish_reader).collect();
    let peak_kib = gw.peak_rss_kib();
    Run {
        baseline_kib,
        peak_kib,
        readers,
        gw,
    }
}

#[test]
fn gzip_bomb_to_slow_readers_is_refused_in_constant_memory() {
    let upstream = BombServer::start();

    let plain = run(&upstream, "/plain", "");
    let bomb = run(&upstream, "/bomb", "");
    println!(
        "peak RSS over the idle gateway, {READERS} slow readers of 128 MiB: plain {} KiB \
         (idle {} KiB, peak {} KiB), gzip bomb {} KiB (idle {} KiB, peak {} KiB); bound {} KiB",
        plain.peak_kib - plain.baseline_kib,
        plain.baseline_kib,
        plain.peak_kib,
        bomb.peak_kib - bomb.baseline_kib,
        bomb.baseline_kib,
        bomb.peak_kib,
        BOMB_BOUND_KIB
    );
    println!("plain readers: {:?}", plain.readers);
    println!("bomb readers: {:?}", bomb.readers);

    // The plain body streams: every reader got data, none was refused.
    for r in &plain.readers {
        assert_eq!(r.status, 200, "{r:?}");
        assert!(r.body_bytes > 0, "{r:?}");
        assert_eq!(r.refusal, None, "{r:?}");
    }

    // Every bomb is refused: a 502 naming the reason if the head had not been sent, otherwise
    // a body cut far short of its decoded size.
    for r in &bomb.readers {
        match r.status {
            502 => assert_eq!(
                r.refusal.as_deref(),
                Some("decode_budget_exceeded"),
                "{r:?}"
            ),
            200 => assert!(r.curl_exit != 0 && r.body_bytes < 16 * MIB, "{r:?}"),
            _ => panic!("unexpected answer to a bomb: {r:?}"),
        }
    }
    let audit = bomb.gw.stdout_with_lines(READERS);
    let refused = audit
        .lines()
        .filter(|l| l.contains("\"refusal\":\"decode_budget_exceeded\""))
        .count();
    assert_eq!(refused, READERS, "audit:\n{audit}");
    let metrics = Command::new("curl")
        .args(["-s", &format!("http://{}/metrics", bomb.gw.admin)])
        .output()
        .unwrap();
    let metrics = String::from_utf8_lossy(&metrics.stdout);
    assert!(
        metrics.contains(&format!(
            "slapenir_refusals_total{{reason=\"decode_budget_exceeded\"}} {READERS}"
        )),
        "{metrics}"
    );

    assert!(
        bomb.peak_kib - bomb.baseline_kib <= BOMB_BOUND_KIB,
        "the bomb raised the gateway's RSS by {} KiB, more than {BOMB_BOUND_KIB} KiB",
        bomb.peak_kib - bomb.baseline_kib
    );
}

/// The same bomb with the budget turned off: the measurement above must be able to fail.
#[test]
#[ignore = "takes about 1 GiB of memory: run by hand to see what the budget prevents"]
fn gzip_bomb_without_a_budget_amplifies() {
    let upstream = BombServer::start();
    let off = "decoding:\n  max_ratio: 1000000000\n  max_bytes: 1TiB\n";
    let bomb = run(&upstream, "/bomb", off);
    let grew = bomb.peak_kib - bomb.baseline_kib;
    println!(
        "budget off, {READERS} slow readers of a gzip bomb: peak RSS grew by {grew} KiB \
         (idle {} KiB, peak {} KiB); bound {BOMB_BOUND_KIB} KiB",
        bomb.baseline_kib, bomb.peak_kib
    );
    println!("readers: {:?}", bomb.readers);
    assert!(grew > BOMB_BOUND_KIB, "{grew} KiB");
}

/// `decoding:` in the config: its keys are checked with located errors.
#[test]
fn decoding_section_is_validated() {
    let dir = tempfile::tempdir().unwrap();
    let base = "listeners:\n  - name: l\n    address: 127.0.0.1:1\n\
                upstreams:\n  a:\n    url: http://127.0.0.1:1\n";
    let cases: &[(&str, &str, Result<(), &str>)] = &[
        ("absent", "", Ok(())),
        ("empty", "decoding:\n", Ok(())),
        (
            "both keys",
            "decoding:\n  max_ratio: 20\n  max_bytes: 512MiB\n",
            Ok(()),
        ),
        (
            "bytes as a number",
            "decoding:\n  max_bytes: 1048576\n",
            Ok(()),
        ),
        (
            "unit with a space",
            "decoding:\n  max_bytes: 2 GiB\n",
            Ok(()),
        ),
        (
            "zero ratio",
            "decoding:\n  max_ratio: 0\n",
            Err(":8:14: decoding.max_ratio: must be at least 1"),
        ),
        (
            "bad size",
            "decoding:\n  max_bytes: 1GB\n",
            Err(":8:14: decoding.max_bytes: `1GB` is not a size"),
        ),
        (
            "zero size",
            "decoding:\n  max_bytes: 0KiB\n",
            Err("decoding.max_bytes: must be more than zero"),
        ),
        (
            "size overflows",
            "decoding:\n  max_bytes: 99999999999TiB\n",
            Err("is not a size"),
        ),
        (
            "unknown key",
            "decoding:\n  max_rate: 5\n",
            Err("decoding.max_rate: unknown field `max_rate`"),
        ),
    ];
    for (name, section, want) in cases {
        let path = dir.path().join(format!("{}.yaml", name.replace(' ', "-")));
        std::fs::write(&path, format!("{base}{section}")).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_slapenir"))
            .args(["check", "--config"])
            .arg(&path)
            .env_remove("RUST_LOG")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        match want {
            Ok(()) => assert!(out.status.success(), "{name}: {stderr}"),
            Err(fragment) => {
                assert!(!out.status.success(), "{name}: check passed");
                assert!(
                    stderr.contains(fragment),
                    "{name}: `{fragment}` not in:\n{stderr}"
                );
            }
        }
    }
}
