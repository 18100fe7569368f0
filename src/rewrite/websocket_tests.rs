//! Tests of `websocket.rs` (kept beside it: the module holds the code, this file the tables).

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]
use super::*;
use crate::rewrite::{Action, Rule};
use proptest::prelude::*;

const DUMMY: &[u8] = b"sk-dummy-openai";
const REAL: &[u8] = b"sk-real-OPENAI-7f3a9c1e5b2d4f6a8c0e";
/// The dummy of a credential bound to another upstream.
const FOREIGN: &[u8] = b"ghp-dummy-github";

fn rule(name: &str, needle: &[u8], action: Action) -> Rule {
    Rule {
        name: name.into(),
        needle: Zeroizing::new(needle.to_vec()),
        action,
    }
}

/// The upstream's request rewriter: its own dummy becomes the real key, a foreign dummy
/// is refused.
fn request_rw() -> Arc<Rewriter> {
    Arc::new(
        Rewriter::new(vec![
            rule(
                "openai",
                DUMMY,
                Action::Replace(Zeroizing::new(REAL.to_vec())),
            ),
            rule("github", FOREIGN, Action::Refuse),
        ])
        .unwrap(),
    )
}

/// The response rewriter: the real key becomes its dummy.
fn response_rw() -> Arc<Rewriter> {
    Arc::new(
        Rewriter::new(vec![rule(
            "openai",
            REAL,
            Action::Replace(Zeroizing::new(DUMMY.to_vec())),
        )])
        .unwrap(),
    )
}

fn rw_for(d: Direction) -> Arc<Rewriter> {
    match d {
        Direction::ToUpstream => request_rw(),
        Direction::ToAgent => response_rw(),
    }
}

/// Encodes one frame the way a peer would: masked with `key` if given, length in its
/// shortest form unless `long` asks for the 64-bit form.
fn encode(fin: bool, opcode: u8, payload: &[u8], key: Option<[u8; 4]>, long: bool) -> Vec<u8> {
    let mut out = vec![if fin { 0x80 } else { 0 } | opcode];
    let m = if key.is_some() { 0x80 } else { 0 };
    let n = payload.len();
    if long {
        out.push(m | 127);
        out.extend_from_slice(&(n as u64).to_be_bytes());
    } else if n <= 125 {
        out.push(m | n as u8);
    } else if n <= 0xFFFF {
        out.push(m | 126);
        out.extend_from_slice(&(n as u16).to_be_bytes());
    } else {
        out.push(m | 127);
        out.extend_from_slice(&(n as u64).to_be_bytes());
    }
    if let Some(k) = key {
        out.extend_from_slice(&k);
    }
    let at = out.len();
    out.extend_from_slice(payload);
    if let Some(k) = key {
        for (i, b) in out[at..].iter_mut().enumerate() {
            *b ^= k[i % 4];
        }
    }
    out
}

/// A frame as a peer in direction `d` sends it (masked iff from the agent).
fn peer(d: Direction, fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    let key = (d == Direction::ToUpstream).then_some([0x37, 0xfa, 0x21, 0x3d]);
    encode(fin, opcode, payload, key, false)
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Parsed {
    fin: bool,
    opcode: u8,
    masked: bool,
    payload: Vec<u8>,
}

/// An independent reference parser of the scanner's output: every frame whole, no RSV
/// bit, shortest length form, masked iff `masked`, no empty frame without FIN.
fn parse(mut b: &[u8], masked: bool) -> Vec<Parsed> {
    let mut frames = Vec::new();
    while !b.is_empty() {
        assert!(b.len() >= 2, "truncated header");
        assert_eq!(b[0] & 0x70, 0, "RSV bit in output");
        assert_eq!(b[1] & 0x80 != 0, masked, "mask bit in output");
        let (len, mut at) = match b[1] & 0x7F {
            126 => (u16::from_be_bytes([b[2], b[3]]) as usize, 4),
            127 => (
                u64::from_be_bytes(b[2..10].try_into().unwrap()) as usize,
                10,
            ),
            n => (n as usize, 2),
        };
        let shortest = match len {
            0..=125 => 2,
            126..=0xFFFF => 4,
            _ => 10,
        };
        assert_eq!(at, shortest, "length not in its shortest form");
        let key = masked.then(|| {
            let k: [u8; 4] = b[at..at + 4].try_into().unwrap();
            at += 4;
            k
        });
        let mut payload = b[at..at + len].to_vec();
        if let Some(k) = key {
            for (i, x) in payload.iter_mut().enumerate() {
                *x ^= k[i % 4];
            }
        }
        let f = Parsed {
            fin: b[0] & 0x80 != 0,
            opcode: b[0] & 0x0F,
            masked,
            payload,
        };
        assert!(f.fin || !f.payload.is_empty(), "an empty frame without FIN");
        frames.push(f);
        b = &b[at + len..];
    }
    frames
}

/// What a receiver sees, in order: a control frame when it arrives, a data message when
/// its last frame arrives.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Event {
    Message(u8, Vec<u8>),
    Control(u8, Vec<u8>),
}

fn events(frames: &[Parsed]) -> Vec<Event> {
    let mut out = Vec::new();
    let mut open: Option<(u8, Vec<u8>)> = None;
    for f in frames {
        if f.opcode & 0x08 != 0 {
            assert!(f.fin && f.payload.len() <= 125, "bad control frame");
            out.push(Event::Control(f.opcode, f.payload.clone()));
            continue;
        }
        match (&mut open, f.opcode) {
            (None, 1 | 2) => open = Some((f.opcode, f.payload.clone())),
            (Some((_, p)), 0) => p.extend_from_slice(&f.payload),
            _ => panic!("bad data frame sequence: {f:?}"),
        }
        if f.fin {
            let (op, p) = open.take().unwrap();
            out.push(Event::Message(op, p));
        }
    }
    assert!(open.is_none(), "a message left open");
    out
}

/// Feeds `input` cut at `cuts` (positions), then finishes.
fn run(d: Direction, input: &[u8], cuts: &[usize]) -> (Vec<u8>, Result<(), WsError>, Hits) {
    let mut s = WsScanner::new(d, rw_for(d));
    let mut out = Vec::new();
    let mut last = 0;
    let mut res = Ok(());
    for &c in cuts.iter().chain(std::iter::once(&input.len())) {
        let c = c.clamp(last, input.len());
        res = s.push(&input[last..c], &mut out);
        last = c;
        if res.is_err() {
            break;
        }
    }
    if res.is_ok() {
        res = s.finish(&mut out);
    }
    (out, res, s.hits())
}

fn with_real(prefix: &[u8], suffix: &[u8]) -> Vec<u8> {
    [prefix, REAL, suffix].concat()
}
fn with_dummy(prefix: &[u8], suffix: &[u8]) -> Vec<u8> {
    [prefix, DUMMY, suffix].concat()
}

fn close_payload(code: u16, reason: &[u8]) -> Vec<u8> {
    [&code.to_be_bytes()[..], reason].concat()
}

struct Case {
    name: &'static str,
    direction: Direction,
    input: Vec<u8>,
    want: Result<Vec<Event>, &'static str>,
}

fn cases() -> Vec<Case> {
    use Direction::{ToAgent, ToUpstream};
    let up = |fin, op, p: &[u8]| peer(ToUpstream, fin, op, p);
    let down = |fin, op, p: &[u8]| peer(ToAgent, fin, op, p);
    // A close reason that grows past 125 bytes when its dummy is replaced; two-byte
    // characters make the cut land inside one.
    let long_reason = [b"x", DUMMY, "é".repeat(53).as_bytes()].concat();
    let long_close = close_payload(1000, &long_reason);
    let long_close_out = {
        let mut p = close_payload(1000, &[b"x", REAL, "é".repeat(53).as_bytes()].concat());
        // 125 bytes would end in the middle of an `é`.
        p.truncate(2 + 1 + REAL.len() + 86);
        p
    };
    let long_ping = [DUMMY, &[b'x'; 110][..]].concat();
    let long_ping_out = [REAL, &[b'x'; 110][..]].concat()[..125].to_vec();
    vec![
        Case {
            name: "secret in one text frame",
            direction: ToUpstream,
            input: up(true, 1, &with_dummy(b"Bearer ", b"!")),
            want: Ok(vec![Event::Message(1, with_real(b"Bearer ", b"!"))]),
        },
        Case {
            name: "secret in a binary frame",
            direction: ToUpstream,
            input: up(true, 2, &with_dummy(b"\x00\xff", b"\x01")),
            want: Ok(vec![Event::Message(2, with_real(b"\x00\xff", b"\x01"))]),
        },
        Case {
            name: "dummy split across two fragments",
            direction: ToUpstream,
            input: [up(false, 1, b"a sk-dum"), up(true, 0, b"my-openai b")].concat(),
            want: Ok(vec![Event::Message(1, with_real(b"a ", b" b"))]),
        },
        Case {
            name: "real key split across three fragments, one empty",
            direction: ToAgent,
            input: [
                down(false, 1, b"x sk-real-OP"),
                down(false, 0, b""),
                down(true, 0, b"ENAI-7f3a9c1e5b2d4f6a8c0e y"),
            ]
            .concat(),
            want: Ok(vec![Event::Message(1, with_dummy(b"x ", b" y"))]),
        },
        Case {
            name: "ping between fragments leaves the message's stream alone",
            direction: ToUpstream,
            input: [
                up(false, 2, b"a sk-dum"),
                up(true, 9, &with_dummy(b"p ", b"")),
                up(true, 0, b"my-openai"),
            ]
            .concat(),
            want: Ok(vec![
                Event::Control(9, with_real(b"p ", b"")),
                Event::Message(2, with_real(b"a ", b"")),
            ]),
        },
        Case {
            name: "ping and pong from the upstream scrubbed",
            direction: ToAgent,
            input: [
                down(true, 9, &with_real(b"", b"")),
                down(true, 10, &with_real(b"pong ", b"")),
            ]
            .concat(),
            want: Ok(vec![
                Event::Control(9, DUMMY.to_vec()),
                Event::Control(10, with_dummy(b"pong ", b"")),
            ]),
        },
        Case {
            name: "close reason scrubbed",
            direction: ToAgent,
            input: down(true, 8, &close_payload(4000, &with_real(b"bye ", b""))),
            want: Ok(vec![Event::Control(
                8,
                close_payload(4000, &with_dummy(b"bye ", b"")),
            )]),
        },
        Case {
            name: "close reason too long once rewritten is cut at a character boundary",
            direction: ToUpstream,
            input: up(true, 8, &long_close),
            want: Ok(vec![Event::Control(8, long_close_out)]),
        },
        Case {
            name: "ping too long once rewritten is cut at 125 bytes",
            direction: ToUpstream,
            input: up(true, 9, &long_ping),
            want: Ok(vec![Event::Control(9, long_ping_out)]),
        },
        Case {
            name: "empty close and empty message",
            direction: ToAgent,
            input: [down(true, 1, b""), down(true, 8, b"")].concat(),
            want: Ok(vec![
                Event::Message(1, Vec::new()),
                Event::Control(8, Vec::new()),
            ]),
        },
        Case {
            name: "16-bit length and a 64-bit length that could be shorter",
            direction: ToAgent,
            input: [
                down(true, 2, &with_real(&[b'a'; 300], b"")),
                encode(true, 1, &with_real(b"", b"z"), None, true),
            ]
            .concat(),
            want: Ok(vec![
                Event::Message(2, with_dummy(&[b'a'; 300], b"")),
                Event::Message(1, with_dummy(b"", b"z")),
            ]),
        },
        Case {
            name: "a message longer than a slice",
            direction: ToUpstream,
            input: up(true, 2, &with_dummy(&vec![b'q'; SLICE + 5], b"")),
            want: Ok(vec![Event::Message(
                2,
                with_real(&vec![b'q'; SLICE + 5], b""),
            )]),
        },
        Case {
            name: "RSV1 (compression) refused",
            direction: ToAgent,
            input: {
                let mut f = down(true, 1, b"x");
                f[0] |= 0x40;
                f
            },
            want: Err("RSV"),
        },
        Case {
            name: "reserved data opcode refused",
            direction: ToAgent,
            input: down(true, 3, b"x"),
            want: Err("reserved opcode"),
        },
        Case {
            name: "reserved control opcode refused",
            direction: ToUpstream,
            input: up(true, 0xB, b"x"),
            want: Err("reserved opcode"),
        },
        Case {
            name: "unmasked frame from the agent refused",
            direction: ToUpstream,
            input: down(true, 1, b"x"),
            want: Err("unmasked"),
        },
        Case {
            name: "masked frame from the upstream refused",
            direction: ToAgent,
            input: up(true, 1, b"x"),
            want: Err("masked frame from the server"),
        },
        Case {
            name: "continuation without a message refused",
            direction: ToAgent,
            input: down(true, 0, b"x"),
            want: Err("continuation"),
        },
        Case {
            name: "new data message inside an open one refused",
            direction: ToAgent,
            input: [down(false, 1, b"x"), down(true, 2, b"y")].concat(),
            want: Err("before the previous one ended"),
        },
        Case {
            name: "fragmented control frame refused",
            direction: ToAgent,
            input: down(false, 9, b"x"),
            want: Err("fragmented control"),
        },
        Case {
            name: "control frame with a 16-bit length refused",
            direction: ToUpstream,
            input: up(true, 10, &[b'x'; 126]),
            want: Err("longer than 125"),
        },
        Case {
            name: "close with a 1-byte payload refused",
            direction: ToAgent,
            input: down(true, 8, b"x"),
            want: Err("1-byte"),
        },
        Case {
            name: "frame after close refused",
            direction: ToAgent,
            input: [down(true, 8, b""), down(true, 1, b"late")].concat(),
            want: Err("after the close"),
        },
        Case {
            name: "64-bit length with its top bit set refused",
            direction: ToAgent,
            input: {
                let mut f = vec![0x82, 127];
                f.extend_from_slice(&(1u64 << 63).to_be_bytes());
                f
            },
            want: Err("top bit"),
        },
        Case {
            name: "foreign dummy refused",
            direction: ToUpstream,
            input: up(true, 1, &[b"key ", FOREIGN].concat()),
            want: Err("github"),
        },
        Case {
            name: "foreign dummy split across fragments refused",
            direction: ToUpstream,
            input: [up(false, 1, b"key ghp-du"), up(true, 0, b"mmy-github")].concat(),
            want: Err("github"),
        },
        Case {
            name: "foreign dummy in a close reason refused",
            direction: ToUpstream,
            input: up(true, 8, &close_payload(1000, FOREIGN)),
            want: Err("github"),
        },
        Case {
            name: "stream ends inside a frame",
            direction: ToAgent,
            input: down(true, 1, b"hello")[..4].to_vec(),
            want: Err("inside a frame"),
        },
        Case {
            name: "stream ends inside a header",
            direction: ToUpstream,
            input: up(true, 1, b"hello")[..3].to_vec(),
            want: Err("inside a frame"),
        },
        Case {
            name: "stream ends inside a message",
            direction: ToAgent,
            input: down(false, 1, b"sk-real-OP").to_vec(),
            want: Err("inside a fragmented message"),
        },
    ]
}

fn check(case: &Case, cuts: &[usize], how: &str) {
    let (out, res, _) = run(case.direction, &case.input, cuts);
    let masked = case.direction == Direction::ToUpstream;
    let frames = parse(&out, masked);
    match &case.want {
        Ok(want) => {
            assert!(res.is_ok(), "{} ({how}): {res:?}", case.name);
            assert_eq!(&events(&frames), want, "{} ({how})", case.name);
        }
        Err(text) => {
            let e = res.expect_err(case.name);
            assert!(e.to_string().contains(text), "{} ({how}): {e}", case.name);
            // Nothing refused reaches the other side, not even in part.
            let sent: Vec<u8> = frames.iter().flat_map(|f| f.payload.clone()).collect();
            assert!(
                !sent.windows(FOREIGN.len()).any(|w| w == FOREIGN),
                "{} ({how})",
                case.name
            );
        }
    }
}

#[test]
fn named_cases_whole_and_byte_by_byte() {
    for case in cases() {
        check(&case, &[], "one read");
        let every: Vec<usize> = (1..case.input.len()).collect();
        check(&case, &every, "one byte per read");
    }
}

#[test]
fn split_across_reads_at_every_byte() {
    for case in cases() {
        if case.input.len() > 400 {
            continue; // the byte-by-byte run covers it
        }
        for i in 0..=case.input.len() {
            check(&case, &[i], &format!("split at {i}"));
        }
    }
}

#[test]
fn masking_keys_are_fresh_and_round_trip() {
    let input = [
        peer(Direction::ToUpstream, false, 1, b"hello "),
        peer(Direction::ToUpstream, true, 0, b"world"),
    ]
    .concat();
    let (out, res, _) = run(Direction::ToUpstream, &input, &[3]);
    res.unwrap();
    let frames = parse(&out, true);
    assert_eq!(
        events(&frames),
        vec![Event::Message(1, b"hello world".to_vec())]
    );
    // The agent's key is not reused: the wire bytes differ from the input's.
    assert!(!out.windows(4).any(|w| w == [0x37, 0xfa, 0x21, 0x3d]));
    let (out2, _, _) = run(Direction::ToUpstream, &input, &[3]);
    assert_ne!(out, out2, "two runs drew the same masking keys");
}

#[test]
fn released_bytes_go_out_at_once() {
    // A frame whose payload is still arriving: what cannot start a match is sent now.
    let mut s = WsScanner::new(Direction::ToAgent, response_rw());
    let mut out = Vec::new();
    let frame = peer(Direction::ToAgent, true, 1, b"data: one sk-real-O");
    s.push(&frame[..frame.len() - 3], &mut out).unwrap();
    let frames = parse(&out, false);
    assert_eq!(frames.len(), 1);
    assert_eq!(frames[0].payload, b"data: one ");
    assert!(!frames[0].fin);
}

#[test]
fn hits_count_data_and_control_frames() {
    let input = [
        peer(Direction::ToAgent, true, 1, &with_real(b"", b"")),
        peer(Direction::ToAgent, true, 9, &with_real(b"", b"")),
    ]
    .concat();
    let (_, res, hits) = run(Direction::ToAgent, &input, &[]);
    res.unwrap();
    assert_eq!(hits.get(0), 2);
}

/// A data message and how it is cut into frames, with a ping after some frames.
#[derive(Debug, Clone)]
struct Msg {
    text: bool,
    payload: Vec<u8>,
    cuts: Vec<usize>,
    pings: Vec<bool>,
}

fn payload(needles: Vec<Vec<u8>>) -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        3 => proptest::collection::vec(prop_oneof![Just(b'a'), Just(b's'), Just(b'k'), Just(b'-'), any::<u8>()], 0..12),
        2 => proptest::sample::select(needles),
    ];
    proptest::collection::vec(piece, 0..6).prop_map(|v| v.concat())
}

fn msg(needles: Vec<Vec<u8>>) -> impl Strategy<Value = Msg> {
    (any::<bool>(), payload(needles)).prop_flat_map(|(text, payload)| {
        let n = payload.len();
        (
            proptest::collection::vec(0..=n, 0..4),
            proptest::collection::vec(any::<bool>(), 0..5),
        )
            .prop_map(move |(mut cuts, pings)| {
                cuts.sort_unstable();
                Msg {
                    text,
                    payload: payload.clone(),
                    cuts,
                    pings,
                }
            })
    })
}

fn needles(d: Direction) -> Vec<Vec<u8>> {
    let main = match d {
        Direction::ToUpstream => DUMMY,
        Direction::ToAgent => REAL,
    };
    vec![
        main.to_vec(),
        main[..main.len() - 1].to_vec(),
        main[..5].to_vec(),
        main[3..].to_vec(),
    ]
}

fn property(d: Direction, msgs: &[Msg], read_cuts: &[usize]) -> Result<(), TestCaseError> {
    let rw = rw_for(d);
    let mut input = Vec::new();
    let mut want = Vec::new();
    let mut want_hits = Hits::new();
    for (i, m) in msgs.iter().enumerate() {
        let mut bounds = vec![0];
        bounds.extend(&m.cuts);
        bounds.push(m.payload.len());
        let frames = bounds.len() - 1;
        let whole = rw.rewrite(&m.payload, &mut want_hits).unwrap().into_owned();
        for f in 0..frames {
            let op = if f > 0 {
                0
            } else if m.text {
                1
            } else {
                2
            };
            let key = [i as u8, f as u8, 0x5a, 0xc3];
            let key = (d == Direction::ToUpstream).then_some(key);
            input.extend(encode(
                f + 1 == frames,
                op,
                &m.payload[bounds[f]..bounds[f + 1]],
                key,
                f % 2 == 1,
            ));
            if f + 1 == frames {
                want.push(Event::Message(if m.text { 1 } else { 2 }, whole.clone()));
            }
            if m.pings.get(f).copied().unwrap_or(false) {
                let ping = [b"p".as_slice(), &m.payload[..m.payload.len().min(20)]].concat();
                input.extend(encode(true, 9, &ping, key, false));
                let scrubbed = rw.rewrite(&ping, &mut want_hits).unwrap().into_owned();
                want.push(Event::Control(9, scrubbed));
            }
        }
    }
    let mut cuts: Vec<usize> = read_cuts.iter().map(|c| c % (input.len() + 1)).collect();
    cuts.sort_unstable();
    let (out, res, hits) = run(d, &input, &cuts);
    prop_assert!(res.is_ok(), "{:?}", res);
    let frames = parse(&out, d == Direction::ToUpstream);
    prop_assert!(frames
        .iter()
        .all(|f| f.masked == (d == Direction::ToUpstream)));
    prop_assert_eq!(events(&frames), want);
    prop_assert_eq!(hits, want_hits);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Any messages with needles inserted, any fragmentation into frames (with pings in
    /// between) and any split of the byte stream into reads: each message comes out as
    /// one-shot rewriting of its whole payload, in well-formed frames.
    #[test]
    fn any_fragmentation_and_reads_give_one_shot_rewriting(
        msgs in proptest::collection::vec(msg(needles(Direction::ToUpstream)), 0..4),
        reads in proptest::collection::vec(any::<usize>(), 0..12),
        down in proptest::collection::vec(msg(needles(Direction::ToAgent)), 0..4),
        reads_down in proptest::collection::vec(any::<usize>(), 0..12),
    ) {
        property(Direction::ToUpstream, &msgs, &reads)?;
        property(Direction::ToAgent, &down, &reads_down)?;
    }
}
