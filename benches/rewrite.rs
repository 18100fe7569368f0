//! Throughput of the streaming credential rewriter, as ratios to baselines measured in the same
//! run: `memcpy` of the same bytes in the same chunks, and aho-corasick's one-shot
//! leftmost-longest replacement of the whole input into a reused buffer.
//!
//! `cargo bench --bench rewrite` prints markdown tables; `REWRITE_BENCH_QUICK=1` shrinks inputs
//! and timing for a CI smoke run (its numbers are noisy; read the full run).
//!
//! Credential sets have realistic shapes (`sk-...`, `sk-proj-...`, `ghp_...`, `AKIA...`,
//! `xoxb-...`, several sharing a first byte), 1 to 4,096 of them; bodies are JSON-ish text with
//! one credential per 4 KiB or none.

#![allow(clippy::panic)] // a bench that cannot set up stops

use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

use aho_corasick::{AhoCorasick, MatchKind};
use slapenir::rewrite::{Action, RewriteStream, Rewriter, Rule, Shape};
use zeroize::Zeroizing;

/// xorshift64*: deterministic inputs without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick(&mut self, alphabet: &[u8], n: usize) -> Vec<u8> {
        (0..n)
            .map(|_| alphabet[self.below(alphabet.len())])
            .collect()
    }
}

const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
const UPPER_DIGIT: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
const DIGIT: &[u8] = b"0123456789";

/// One credential of the `i`-th shape.
fn token(rng: &mut Rng, shape: usize) -> Vec<u8> {
    let cat = |a: &[u8], b: Vec<u8>| [a, &b].concat();
    match shape % 5 {
        0 => cat(b"sk-", rng.pick(ALNUM, 48)),
        1 => cat(b"sk-proj-", rng.pick(ALNUM, 64)),
        2 => cat(b"ghp_", rng.pick(ALNUM, 36)),
        3 => cat(b"AKIA", rng.pick(UPPER_DIGIT, 16)),
        _ => {
            let mut t = cat(b"xoxb-", rng.pick(DIGIT, 12));
            t.push(b'-');
            t.extend(rng.pick(ALNUM, 24));
            t
        }
    }
}

/// `n` distinct credentials; `all_sk` makes every one `sk-...` (the prefilter's worst case).
fn credentials(n: usize, all_sk: bool, rng: &mut Rng) -> Vec<Vec<u8>> {
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let t = token(rng, if all_sk { 0 } else { out.len() });
        if seen.insert(t.clone()) {
            out.push(t);
        }
    }
    out
}

/// JSON-ish text of `len` bytes; with `every = Some(k)`, one credential each `k` bytes.
fn body(len: usize, creds: &[Vec<u8>], every: Option<usize>, rng: &mut Rng) -> Vec<u8> {
    const WORDS: &[&str] = &[
        "the",
        "model",
        "stream",
        "data:",
        "{\"choices\":[{\"delta\":{\"content\":\"",
        "\"}}]}\n\n",
        "sure",
        "here",
        "is",
        "some",
        "sample",
        "code",
        "fn",
        "main()",
        "sk",
        "token",
        "AKA",
        "github",
        "xo",
        "ghost",
        "gh",
        "request",
        "response",
        "secret",
        "session",
        "assistant",
        "\n",
        "//",
        "so",
        "as",
        "s",
        "A",
        "x",
        "=",
        "let",
    ];
    let mut out = Vec::with_capacity(len + 128);
    let mut next_cred = every.unwrap_or(usize::MAX);
    let mut k = 0;
    while out.len() < len {
        if out.len() >= next_cred {
            out.extend_from_slice(&creds[k % creds.len()]);
            k += 1;
            next_cred += every.unwrap_or(usize::MAX);
        } else {
            out.extend_from_slice(WORDS[rng.below(WORDS.len())].as_bytes());
        }
        out.push(b' ');
    }
    out.truncate(len);
    out
}

/// Best-of-rounds seconds per call of `f`.
fn time(quick: bool, mut f: impl FnMut()) -> f64 {
    let (rounds, min_secs) = if quick { (2, 0.01) } else { (5, 0.08) };
    f();
    let mut best = f64::INFINITY;
    for _ in 0..rounds {
        let mut iters = 0u32;
        let start = Instant::now();
        loop {
            f();
            iters += 1;
            let secs = start.elapsed().as_secs_f64();
            if secs >= min_secs {
                best = best.min(secs / f64::from(iters));
                break;
            }
        }
    }
    best
}

fn stream_all(s: &mut RewriteStream, input: &[u8], chunk: usize, out: &mut Vec<u8>) {
    for c in input.chunks(chunk) {
        if s.push(c, out).is_err() {
            return;
        }
        black_box(&out);
        out.clear();
    }
    if s.finish(out).is_ok() {
        black_box(&out);
    }
    out.clear();
}

struct Set {
    label: &'static str,
    needles: Vec<Vec<u8>>,
    dummies: Vec<Vec<u8>>,
    rw: Arc<Rewriter>,
    ac: AhoCorasick,
}

fn set(label: &'static str, n: usize, all_sk: bool, rng: &mut Rng) -> Set {
    let needles = credentials(n, all_sk, rng);
    let dummies: Vec<Vec<u8>> = (0..n).map(|i| format!("dummy-{i}").into_bytes()).collect();
    let rules = needles
        .iter()
        .zip(&dummies)
        .enumerate()
        .map(|(i, (nd, d))| Rule {
            name: format!("cred{i}").into(),
            needle: Zeroizing::new(nd.clone()),
            action: Action::Replace(Zeroizing::new(d.clone())),
        })
        .collect();
    let rw = match Rewriter::new(rules) {
        Ok(rw) => Arc::new(rw),
        Err(e) => panic!("bench rules: {e}"),
    };
    let ac = match AhoCorasick::builder()
        .match_kind(MatchKind::LeftmostLongest)
        .build(&needles)
    {
        Ok(ac) => ac,
        Err(e) => panic!("bench automaton: {e}"),
    };
    Set {
        label,
        needles,
        dummies,
        rw,
        ac,
    }
}

fn main() {
    let quick = std::env::var_os("REWRITE_BENCH_QUICK").is_some();
    let len = if quick { 256 << 10 } else { 4 << 20 };
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    let sets = [
        set("mixed", 1, false, &mut rng),
        set("mixed", 16, false, &mut rng),
        set("mixed", 256, false, &mut rng),
        set("mixed", 4096, false, &mut rng),
        set("all sk-", 16, true, &mut rng),
        set("all sk-", 256, true, &mut rng),
        set("all sk-", 4096, true, &mut rng),
    ];
    let gbps = |secs: f64, bytes: usize| bytes as f64 / secs / 1e9;

    println!(
        "## Streaming rewrite throughput ({} KiB body{})\n",
        len >> 10,
        if quick { ", quick mode" } else { "" }
    );
    println!("Ratios > 1 mean the stream is faster than the baseline. One-shot is aho-corasick");
    println!(
        "LeftmostLongest `replace_all_with_bytes` over the whole body into a reused buffer.\n"
    );
    println!("| set | N | matches | chunk | stream GB/s | memcpy GB/s | one-shot GB/s | vs memcpy | vs one-shot |");
    println!("|---|---:|---|---:|---:|---:|---:|---:|---:|");
    let mut worst_16k = f64::INFINITY;
    for s in &sets {
        for (every, matches) in [(Some(4096), "1 per 4 KiB"), (None, "none")] {
            let input = body(len, &s.needles, every, &mut rng);
            let mut out = Vec::with_capacity(len * 2);
            let one_shot = time(quick, || {
                s.ac.replace_all_with_bytes(&input, &mut out, |m, _, dst| {
                    dst.extend_from_slice(&s.dummies[m.pattern().as_usize()]);
                    true
                });
                black_box(&out);
                out.clear();
            });
            for chunk in [64, 16 << 10, 64 << 10] {
                let memcpy = time(quick, || {
                    for c in input.chunks(chunk) {
                        out.extend_from_slice(c);
                        black_box(&out);
                        out.clear();
                    }
                });
                let stream = time(quick, || {
                    let mut st = s.rw.stream();
                    stream_all(&mut st, &input, chunk, &mut out);
                });
                if chunk == 16 << 10 {
                    worst_16k = worst_16k.min(one_shot / stream);
                }
                println!(
                    "| {} | {} | {} | {} | {:.2} | {:.2} | {:.2} | {:.2}x | {:.2}x |",
                    s.label,
                    s.needles.len(),
                    matches,
                    human(chunk),
                    gbps(stream, len),
                    gbps(memcpy, len),
                    gbps(one_shot, len),
                    memcpy / stream,
                    one_shot / stream,
                );
            }
        }
    }
    println!(
        "\nWorst ratio to one-shot at 16 KiB chunks: {worst_16k:.2}x (target: at least 0.80x)\n"
    );

    // One-byte chunks: per-byte cost must not grow with the body.
    println!("## One-byte chunks (per-byte cost must not grow with the body)\n");
    println!("| set | N | body | ns/byte |");
    println!("|---|---:|---:|---:|");
    let sizes = if quick {
        [16 << 10, 64 << 10]
    } else {
        [64 << 10, 512 << 10]
    };
    for s in [&sets[1], &sets[5]] {
        for size in sizes {
            let input = body(size, &s.needles, Some(4096), &mut rng);
            let mut out = Vec::with_capacity(64);
            let secs = time(quick, || {
                let mut st = s.rw.stream();
                stream_all(&mut st, &input, 1, &mut out);
            });
            println!(
                "| {} | {} | {} | {:.2} |",
                s.label,
                s.needles.len(),
                human(size),
                secs * 1e9 / size as f64
            );
        }
    }

    encoded_forms_cost(quick, len, &mut rng);

    println!("\n## Memory\n");
    println!(
        "| set | N | longest needle | stream state (struct + heap) | compiled rewriter heap |"
    );
    println!("|---|---:|---:|---:|---:|");
    for s in &sets {
        let mut st = s.rw.stream();
        // Hold a tail and count one hit, so the figure includes both.
        let mut out = Vec::new();
        let probe = [&s.needles[0][..], b" ", &s.needles[0][..3]].concat();
        if st.push(&probe, &mut out).is_err() {
            continue;
        }
        println!(
            "| {} | {} | {} B | {} B | {} KiB |",
            s.label,
            s.needles.len(),
            s.rw.max_needle_len(),
            std::mem::size_of::<RewriteStream>() + st.state_bytes(),
            s.rw.heap_bytes() >> 10
        );
    }
}

/// The response rewriter scrubs each real value's encoded forms too (base64 at three
/// alignments and line-wrapped at 64/76 columns, percent with several kept sets, JSON escapes,
/// HTML references, hex) and holds back by public shape (`Rewriter::new_public`): the cost of
/// those extra needles and of the public hold-back, as the ratio of literal-only throughput
/// (exact hold-back, as before) to the shipped response rewriter's on the same body, in 16 KiB
/// chunks and in 200-byte chunks (SSE-sized); with build time and heap size.
fn encoded_forms_cost(quick: bool, len: usize, rng: &mut Rng) {
    println!("\n## Encoded forms and public hold-back in the response rewriter\n");
    println!("| N | needles literal | needles shipped | build ms | heap MiB | matches | chunk | literal GB/s | shipped GB/s | cost |");
    println!("|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|");
    for n in [1, 16, 64] {
        let reals = credentials(n, false, rng);
        let dummies: Vec<Vec<u8>> = (0..n)
            .map(|i| format!("dummy-{i:08}").into_bytes())
            .collect();
        let rule = |i: usize, needle: &[u8], with: &[u8]| Rule {
            name: format!("cred{i}").into(),
            needle: Zeroizing::new(needle.to_vec()),
            action: Action::Replace(Zeroizing::new(with.to_vec())),
        };
        let literal: Vec<Rule> = (0..n).map(|i| rule(i, &reals[i], &dummies[i])).collect();
        let mut all: Vec<Rule> = (0..n).map(|i| rule(i, &reals[i], &dummies[i])).collect();
        let mut shapes = vec![Shape::Token; n];
        for i in 0..n {
            for f in slapenir::rewrite::encoded::response_forms(&reals[i], &dummies[i]) {
                if !all.iter().any(|r| r.needle == f.needle) {
                    all.push(rule(i, &f.needle, &f.replacement));
                    shapes.push(f.shape);
                }
            }
        }
        let (n_lit, n_all) = (literal.len(), all.len());
        let built = Instant::now();
        let full = Rewriter::new_public(all, &shapes);
        let build_ms = built.elapsed().as_secs_f64() * 1e3;
        let (Ok(lit), Ok(full)) = (Rewriter::new(literal), full) else {
            panic!("bench rules for encoded forms");
        };
        let heap = full.heap_bytes() as f64 / (1 << 20) as f64;
        let (lit, full) = (Arc::new(lit), Arc::new(full));
        for (every, matches) in [(Some(4096), "1 per 4 KiB"), (None, "none")] {
            let input = body(len, &reals, every, rng);
            let mut out = Vec::with_capacity(len * 2);
            for chunk in [16 << 10, 200] {
                let t_lit = time(quick, || {
                    stream_all(&mut lit.stream(), &input, chunk, &mut out)
                });
                let t_all = time(quick, || {
                    stream_all(&mut full.stream(), &input, chunk, &mut out)
                });
                println!(
                    "| {n} | {n_lit} | {n_all} | {build_ms:.0} | {heap:.1} | {matches} | {} | {:.2} | {:.2} | {:.2}x |",
                    human(chunk),
                    len as f64 / t_lit / 1e9,
                    len as f64 / t_all / 1e9,
                    t_all / t_lit
                );
            }
        }
    }
    println!("\nCost > 1 means the shipped response rewriter is that many times slower than literal-only matching with exact hold-back.");
}

fn human(bytes: usize) -> String {
    if bytes >= 1 << 10 {
        format!("{} KiB", bytes >> 10)
    } else {
        format!("{bytes} B")
    }
}
