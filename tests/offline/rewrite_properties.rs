//! Properties of the credential rewriter: any chunking of any input gives the bytes of one-shot
//! leftmost-longest replacement, checked against aho-corasick's own one-shot replacement and a
//! naive reference written here (so a misuse of aho-corasick cannot hide); and the state held
//! between chunks is exactly the bytes that could still begin a match.
use std::sync::Arc;

use aho_corasick::{AhoCorasick, MatchKind};
use proptest::prelude::*;
use slapenir::rewrite::{Action, Hits, Rewriter, Rule, Shape};
use zeroize::Zeroizing;

/// A rule as plain data: `replace: None` means refuse.
#[derive(Clone, Debug)]
struct Spec {
    needle: Vec<u8>,
    replace: Option<Vec<u8>>,
}

/// What rewriting a whole input gives.
#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    /// Output, up to the refusal if there was one.
    out: Vec<u8>,
    /// Matches committed per rule.
    hits: Vec<u64>,
    /// Index of the refusing rule that stopped it.
    refused: Option<usize>,
}

fn rules(specs: &[Spec]) -> Vec<Rule> {
    specs
        .iter()
        .enumerate()
        .map(|(i, s)| Rule {
            name: format!("rule{i}").into(),
            needle: Zeroizing::new(s.needle.clone()),
            action: match &s.replace {
                Some(r) => Action::Replace(Zeroizing::new(r.clone())),
                None => Action::Refuse,
            },
        })
        .collect()
}

/// Naive leftmost-longest, non-overlapping replacement: at each position, the longest needle
/// that starts there, else copy one byte.
fn naive(specs: &[Spec], input: &[u8]) -> Outcome {
    let mut out = Vec::new();
    let mut hits = vec![0; specs.len()];
    let mut pos = 0;
    while pos < input.len() {
        let best = specs
            .iter()
            .enumerate()
            .filter(|(_, s)| input[pos..].starts_with(&s.needle))
            .max_by_key(|(_, s)| s.needle.len());
        match best {
            Some((i, s)) => match &s.replace {
                Some(r) => {
                    out.extend_from_slice(r);
                    hits[i] += 1;
                    pos += s.needle.len();
                }
                None => {
                    return Outcome {
                        out,
                        hits,
                        refused: Some(i),
                    }
                }
            },
            None => {
                out.push(input[pos]);
                pos += 1;
            }
        }
    }
    Outcome {
        out,
        hits,
        refused: None,
    }
}

/// aho-corasick's own one-shot leftmost-longest replacement.
fn with_aho_corasick(specs: &[Spec], input: &[u8]) -> Outcome {
    let ac = AhoCorasick::builder()
        .match_kind(MatchKind::LeftmostLongest)
        .build(specs.iter().map(|s| &s.needle))
        .unwrap();
    let mut out = Vec::new();
    let mut hits = vec![0; specs.len()];
    let mut refused = None;
    let mut cut = None;
    ac.replace_all_with_bytes(input, &mut out, |m, _, dst| {
        let i = m.pattern().as_usize();
        match &specs[i].replace {
            Some(r) => {
                dst.extend_from_slice(r);
                hits[i] += 1;
                true
            }
            None => {
                refused = Some(i);
                cut = Some(dst.len());
                false
            }
        }
    });
    if let Some(cut) = cut {
        out.truncate(cut);
    }
    Outcome { out, hits, refused }
}

/// The bytes a perfect stream holds after `consumed`: the tail from the first position (past
/// committed matches) where the rest is a proper prefix of a needle.
fn naive_held(specs: &[Spec], consumed: &[u8]) -> usize {
    let mut pos = 0;
    while pos < consumed.len() {
        let rest = &consumed[pos..];
        if specs
            .iter()
            .any(|s| s.needle.len() > rest.len() && s.needle.starts_with(rest))
        {
            return rest.len();
        }
        pos += specs
            .iter()
            .filter(|s| rest.starts_with(&s.needle))
            .map(|s| s.needle.len())
            .max()
            .unwrap_or(1);
    }
    0
}

/// Streams `input` cut at `sizes` (then the remainder in `tail`-byte chunks).
fn chunks<'a>(input: &'a [u8], sizes: &[usize], tail: usize) -> Vec<&'a [u8]> {
    let mut out = Vec::new();
    let mut rest = input;
    for &s in sizes {
        let (a, b) = rest.split_at(s.min(rest.len()));
        out.push(a);
        rest = b;
    }
    while !rest.is_empty() {
        let (a, b) = rest.split_at(tail.min(rest.len()));
        out.push(a);
        rest = b;
    }
    out
}

/// Streams the chunks; returns the outcome and the stream's hits.
fn stream(rw: &Arc<Rewriter>, chunks: &[&[u8]]) -> Outcome {
    let mut s = rw.stream();
    let mut out = Vec::new();
    let mut refused = None;
    for c in chunks {
        if let Err(r) = s.push(c, &mut out) {
            refused = Some(r);
            break;
        }
    }
    if refused.is_none() {
        refused = s.finish(&mut out).err();
    }
    if let Some(r) = &refused {
        // A refused stream stays refused.
        assert_eq!(s.push(b"more", &mut Vec::new()).as_ref(), Err(r));
        assert_eq!(s.finish(&mut Vec::new()).as_ref(), Err(r));
        assert_eq!(s.held_len(), 0, "a refused stream wipes what it held");
    }
    let hits = (0..rw.rule_count()).map(|i| s.hits().get(i)).collect();
    Outcome {
        out,
        hits,
        refused: refused.map(|r| r.rule),
    }
}

/// Keeps the specs a valid rule set allows, in order: no empty or repeated needle, no needle
/// equal to a replacement.
fn valid(specs: Vec<Spec>) -> Vec<Spec> {
    let mut kept: Vec<Spec> = Vec::new();
    for s in specs {
        let clash = s.needle.is_empty()
            || s.replace.as_ref() == Some(&s.needle)
            || kept.iter().any(|k| {
                // A replacement may equal a refusing rule's needle (output is never scanned
                // again), not a rewriting one's.
                k.needle == s.needle
                    || (s.replace.is_some() && k.replace.as_ref() == Some(&s.needle))
                    || (k.replace.is_some() && s.replace.as_ref() == Some(&k.needle))
            });
        if !clash {
            kept.push(s);
        }
    }
    kept
}

/// Few distinct bytes, so that needles share prefixes and suffixes and occurrences overlap;
/// two of them are not UTF-8.
fn byte() -> impl Strategy<Value = u8> {
    prop_oneof![Just(b'a'), Just(b'b'), Just(b'c'), Just(0x00), Just(0xff)]
}

fn replacement() -> impl Strategy<Value = Option<Vec<u8>>> {
    prop::option::weighted(
        0.85,
        prop::collection::vec(prop_oneof![byte(), Just(b'X')], 0..5),
    )
}

/// Needle sets: either independent short needles, or slices of one base string (prefixes,
/// suffixes and overlaps of each other).
fn specs() -> impl Strategy<Value = Vec<Spec>> {
    let independent =
        prop::collection::vec((prop::collection::vec(byte(), 1..6), replacement()), 1..6).prop_map(
            |v| {
                v.into_iter()
                    .map(|(needle, replace)| Spec { needle, replace })
                    .collect::<Vec<_>>()
            },
        );
    let slices = (
        prop::collection::vec(byte(), 1..8),
        prop::collection::vec((any::<usize>(), any::<usize>(), replacement()), 1..6),
    )
        .prop_map(|(base, cuts)| {
            cuts.into_iter()
                .map(|(a, b, replace)| {
                    let (a, b) = (a % base.len(), b % base.len());
                    let (lo, hi) = (a.min(b), a.max(b) + 1);
                    Spec {
                        needle: base[lo..hi].to_vec(),
                        replace,
                    }
                })
                .collect::<Vec<_>>()
        });
    prop_oneof![independent, slices].prop_map(valid)
}

/// Specs and an input made of whole needles, cut needles and stray bytes.
fn specs_and_input() -> impl Strategy<Value = (Vec<Spec>, Vec<u8>)> {
    (
        specs(),
        prop::collection::vec(
            (
                any::<usize>(),
                any::<usize>(),
                prop::collection::vec(byte(), 0..3),
            ),
            0..14,
        ),
    )
        .prop_map(|(specs, parts)| {
            let mut input = Vec::new();
            for (which, cut, stray) in parts {
                if !specs.is_empty() {
                    let n = &specs[which % specs.len()].needle;
                    // Mostly whole needles, sometimes a prefix of one.
                    let len = if cut % 3 == 0 { cut % n.len() } else { n.len() };
                    input.extend_from_slice(&n[..len]);
                }
                input.extend_from_slice(&stray);
            }
            (specs, input)
        })
}

fn chunking() -> impl Strategy<Value = (Vec<usize>, usize)> {
    (
        prop::collection::vec(prop_oneof![Just(0usize), Just(1usize), 0usize..24], 0..24),
        1usize..5,
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Any chunking gives one-shot leftmost-longest replacement of the whole input, the same
    /// hit counts and the same refusal, and agrees with `Rewriter::rewrite`.
    #[test]
    fn any_chunking_equals_one_shot(
        (specs, input) in specs_and_input(),
        (sizes, tail) in chunking(),
    ) {
        let want = naive(&specs, &input);
        prop_assert_eq!(&with_aho_corasick(&specs, &input), &want, "aho-corasick vs naive");

        let rw = Arc::new(Rewriter::new(rules(&specs)).unwrap());
        let got = stream(&rw, &chunks(&input, &sizes, tail));
        prop_assert_eq!(&got, &want, "stream vs one-shot");

        let mut hits = Hits::new();
        match rw.rewrite(&input, &mut hits) {
            Ok(out) => {
                prop_assert_eq!(want.refused, None);
                prop_assert_eq!(&*out, &want.out[..]);
                let counts: Vec<u64> = (0..specs.len()).map(|i| hits.get(i)).collect();
                prop_assert_eq!(counts, want.hits);
            }
            Err(r) => prop_assert_eq!(Some(r.rule), want.refused),
        }
    }

    /// After every push: nothing more than `max_len - 1` bytes is held; the output so far is
    /// exactly one-shot replacement of the input before the held tail (so it is a prefix of the
    /// final output); and the held tail is the shortest possible — only bytes that could still
    /// begin a match.
    #[test]
    fn held_tail_is_exactly_what_may_begin_a_match(
        (specs, input) in specs_and_input(),
        (sizes, tail) in chunking(),
    ) {
        // Refusals end a stream early; here every rule replaces.
        let specs = valid(
            specs
                .into_iter()
                .map(|s| Spec { replace: Some(s.replace.unwrap_or_else(|| b"R".to_vec())), ..s })
                .collect(),
        );
        let rw = Arc::new(Rewriter::new(rules(&specs)).unwrap());
        let whole = naive(&specs, &input).out;
        let mut s = rw.stream();
        let mut out = Vec::new();
        let mut consumed = 0;
        for c in chunks(&input, &sizes, tail) {
            s.push(c, &mut out).unwrap();
            consumed += c.len();
            let held = s.held_len();
            prop_assert!(held <= rw.max_needle_len().saturating_sub(1));
            prop_assert_eq!(held, naive_held(&specs, &input[..consumed]));
            prop_assert_eq!(&out, &naive(&specs, &input[..consumed - held]).out);
            prop_assert!(whole.starts_with(&out));
            // Held tail and scratch, plus the hit counts (a `Vec` that grows by doubling from 4).
            prop_assert!(s.state_bytes() <= 3 * rw.max_needle_len() + 16 * (2 * specs.len()).max(4));
        }
        s.finish(&mut out).unwrap();
        prop_assert_eq!(s.held_len(), 0);
        prop_assert_eq!(out, whole);
    }

    /// Arbitrary bytes (full alphabet, needles up to 40 bytes, chunks up to 200 bytes) also
    /// stream to the one-shot result: covers the long-chunk junction path with long needles.
    #[test]
    fn arbitrary_bytes_long_needles(
        specs in prop::collection::vec(
            (prop::collection::vec(any::<u8>(), 1..40), prop::option::weighted(0.9, prop::collection::vec(any::<u8>(), 0..8))),
            0..12,
        ).prop_map(|v| valid(v.into_iter().map(|(needle, replace)| Spec { needle, replace }).collect())),
        noise in prop::collection::vec((any::<u8>(), any::<usize>(), any::<usize>()), 0..40),
        sizes in prop::collection::vec(0usize..200, 0..12),
        tail in 1usize..64,
    ) {
        // Interleave needles (sometimes cut) with noise.
        let mut input = Vec::new();
        for (b, which, cut) in noise {
            input.push(b);
            if !specs.is_empty() && which % 2 == 0 {
                let n = &specs[which % specs.len()].needle;
                input.extend_from_slice(&n[..=(cut % n.len())]);
            }
        }
        let want = naive(&specs, &input);
        prop_assert_eq!(&with_aho_corasick(&specs, &input), &want);
        let rw = Arc::new(Rewriter::new(rules(&specs)).unwrap());
        prop_assert_eq!(&stream(&rw, &chunks(&input, &sizes, tail)), &want);
    }

    /// Compiling reports one problem per clash, and only valid sets compile.
    #[test]
    fn compile_rejects_exactly_the_invalid_sets(
        raw in prop::collection::vec(
            (prop::collection::vec(byte(), 0..3), replacement()),
            0..6,
        ),
    ) {
        let specs: Vec<Spec> = raw.into_iter().map(|(needle, replace)| Spec { needle, replace }).collect();
        let valid_set = valid(specs.clone()).len() == specs.len();
        let mut expected = 0;
        for (i, s) in specs.iter().enumerate() {
            if s.needle.is_empty() {
                expected += 1;
                continue;
            }
            if specs[..i].iter().any(|k| k.needle == s.needle) {
                expected += 1;
            }
        }
        for s in &specs {
            if let Some(r) = &s.replace {
                expected += specs
                    .iter()
                    .filter(|k| !k.needle.is_empty() && &k.needle == r && k.replace.is_some())
                    .count();
            }
        }
        match Rewriter::new(rules(&specs)) {
            Ok(_) => prop_assert!(valid_set),
            Err(e) => {
                prop_assert!(!valid_set);
                prop_assert_eq!(e.problems().len(), expected);
            }
        }
    }
}

/// A needle of a public shape, rendered from its parts.
fn shaped_needle() -> impl Strategy<Value = (Vec<u8>, Shape)> {
    let token = prop::collection::vec(
        prop_oneof![Just(b'a'), Just(b'b'), Just(b'0'), Just(b'/'), Just(b'-')],
        2..9,
    )
    .prop_map(|n| (n, Shape::Token));
    let hex = prop::collection::vec(any::<u8>(), 1..4).prop_map(|bytes| {
        let text: Vec<String> = bytes.iter().map(|b| format!("{:02x}", b % 0x20)).collect();
        (text.join(" ").into_bytes(), Shape::HexSpaced)
    });
    let wrapped = (
        prop::collection::vec(prop_oneof![Just(b'a'), Just(b'B'), Just(b'0')], 2..10),
        2usize..5,
        any::<usize>(),
        any::<bool>(),
    )
        .prop_filter_map("a break inside", |(chars, width, column, crlf)| {
            let column = column % width;
            let mut out = Vec::new();
            let mut breaks = 0;
            for (i, &c) in chars.iter().enumerate() {
                if i > 0 && (column + i) % width == 0 {
                    out.extend_from_slice(if crlf { b"\r\n" } else { b"\n" });
                    breaks += 1;
                }
                out.push(c);
            }
            (breaks > 0).then_some((out, Shape::Wrapped { width, crlf }))
        });
    prop_oneof![token, hex, wrapped]
}

/// Shaped needles (each replaced by `R`), and an input of their fragments (whole needles too
/// when `whole`) and stray bytes of every class (blank, hex digit, other base64, other).
fn shaped_specs_and_input(whole: bool) -> impl Strategy<Value = (Vec<Spec>, Vec<Shape>, Vec<u8>)> {
    (
        prop::collection::vec(shaped_needle(), 1..5),
        prop::collection::vec(
            (
                any::<usize>(),
                any::<usize>(),
                prop::collection::vec(
                    prop_oneof![
                        Just(b' '),
                        Just(b'\n'),
                        Just(b'\r'),
                        Just(b'a'),
                        Just(b'0'),
                        Just(b'z'),
                        Just(b'!')
                    ],
                    0..3,
                ),
            ),
            0..14,
        ),
    )
        .prop_map(move |(needles, parts)| {
            let mut specs = Vec::new();
            let mut shapes = Vec::new();
            for (needle, shape) in needles {
                if specs.iter().any(|s: &Spec| s.needle == needle) {
                    continue;
                }
                specs.push(Spec {
                    needle,
                    replace: Some(b"R".to_vec()),
                });
                shapes.push(shape);
            }
            let mut input = Vec::new();
            for (which, cut, stray) in parts {
                let n = &specs[which % specs.len()].needle;
                let len = if cut % 3 == 0 || !whole {
                    cut % n.len()
                } else {
                    n.len()
                };
                input.extend_from_slice(&n[..len]);
                input.extend_from_slice(&stray);
            }
            (specs, shapes, input)
        })
}

/// The public class of a byte: what the public hold-back may look at.
fn class(b: u8) -> u8 {
    if b <= b' ' || b == 0x7f {
        b
    } else if b.is_ascii_hexdigit() {
        b'h'
    } else if b.is_ascii_alphanumeric() || b == b'+' || b == b'/' {
        b'B'
    } else {
        b'T'
    }
}

/// Another byte of the same class, chosen by `seed`.
fn same_class(b: u8, seed: u8) -> u8 {
    let pick = |set: &[u8]| set[usize::from(seed) % set.len()];
    match class(b) {
        b'h' => pick(b"0123456789abcdefABCDEF"),
        b'B' => pick(b"ghijklmnopqrstuvwxyzGHIJKLMNOPQRSTUVWXYZ+/"),
        b'T' => pick(b"-_.~!#$%&*:;=?@^|"),
        _ => b,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    /// With a public hold-back, any chunking still gives one-shot replacement, and the held
    /// tail always covers what could begin a match (it may hold more, never less).
    #[test]
    fn public_hold_back_streams_to_one_shot_and_covers_every_prefix(
        (specs, shapes, input) in shaped_specs_and_input(true),
        (sizes, tail) in chunking(),
    ) {
        let rw = Arc::new(Rewriter::new_public(rules(&specs), &shapes).unwrap());
        let want = naive(&specs, &input);
        prop_assert_eq!(&stream(&rw, &chunks(&input, &sizes, tail)), &want);
        let mut s = rw.stream();
        let mut out = Vec::new();
        let mut consumed = 0;
        for c in chunks(&input, &sizes, tail) {
            s.push(c, &mut out).unwrap();
            consumed += c.len();
            prop_assert!(s.held_len() <= rw.max_needle_len().saturating_sub(1));
            prop_assert!(s.held_len() >= naive_held(&specs, &input[..consumed]));
        }
    }

    /// The timing side channel, closed: two inputs whose bytes have the same public classes,
    /// neither holding a whole needle, are held back alike after every chunk — so a right guess
    /// of a secret's first characters arrives exactly when a wrong one does.
    #[test]
    fn held_bytes_depend_on_public_classes_only(
        (specs, shapes, input) in shaped_specs_and_input(false),
        seeds in prop::collection::vec(any::<u8>(), 64),
        (sizes, tail) in chunking(),
    ) {
        let other: Vec<u8> = input
            .iter()
            .enumerate()
            .map(|(i, &b)| same_class(b, seeds[i % seeds.len()]))
            .collect();
        let no_match = |x: &[u8]| naive(&specs, x).hits.iter().all(|&h| h == 0);
        prop_assume!(no_match(&input) && no_match(&other));
        let rw = Arc::new(Rewriter::new_public(rules(&specs), &shapes).unwrap());
        let (mut a, mut b) = (rw.stream(), rw.stream());
        let (mut out_a, mut out_b) = (Vec::new(), Vec::new());
        for (ca, cb) in chunks(&input, &sizes, tail).into_iter().zip(chunks(&other, &sizes, tail)) {
            a.push(ca, &mut out_a).unwrap();
            b.push(cb, &mut out_b).unwrap();
            prop_assert_eq!(a.held_len(), b.held_len());
        }
    }
}
