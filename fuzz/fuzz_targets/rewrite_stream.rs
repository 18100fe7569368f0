//! Differential fuzz target: streamed rewriting, under any chunking, equals one-shot
//! leftmost-longest replacement (aho-corasick's and a naive one), with the same hits and the
//! same refusal; the held tail stays shorter than the longest needle.
#![no_main]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use aho_corasick::{AhoCorasick, MatchKind};
use libfuzzer_sys::fuzz_target;
use slapenir::rewrite::{Action, Rewriter, Rule};
use zeroize::Zeroizing;

/// Reads the fuzzer's bytes front to back; zeros once they run out.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn byte(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        let n = n.min(self.0.len());
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        a.to_vec()
    }
}

/// `(needle, Some(replacement))` or `(needle, None)` for refuse.
type Spec = (Vec<u8>, Option<Vec<u8>>);

/// Output, hits per rule, refusing rule.
type Outcome = (Vec<u8>, Vec<u64>, Option<usize>);

fn naive(specs: &[Spec], input: &[u8]) -> Outcome {
    let (mut out, mut hits, mut pos) = (Vec::new(), vec![0; specs.len()], 0);
    while pos < input.len() {
        let best = specs
            .iter()
            .enumerate()
            .filter(|(_, s)| input[pos..].starts_with(&s.0))
            .max_by_key(|(_, s)| s.0.len());
        match best {
            Some((i, (n, Some(r)))) => {
                out.extend_from_slice(r);
                hits[i] += 1;
                pos += n.len();
            }
            Some((i, (_, None))) => return (out, hits, Some(i)),
            None => {
                out.push(input[pos]);
                pos += 1;
            }
        }
    }
    (out, hits, None)
}

fn with_aho_corasick(specs: &[Spec], input: &[u8]) -> Outcome {
    let ac = AhoCorasick::builder()
        .match_kind(MatchKind::LeftmostLongest)
        .build(specs.iter().map(|s| &s.0))
        .unwrap();
    let (mut out, mut hits, mut refused, mut cut) = (Vec::new(), vec![0; specs.len()], None, None);
    ac.replace_all_with_bytes(input, &mut out, |m, _, dst| {
        let i = m.pattern().as_usize();
        match &specs[i].1 {
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
    (out, hits, refused)
}

fuzz_target!(|data: &[u8]| {
    let mut r = Reader(data);
    // Rules: small alphabets come from the fuzzer itself; needles up to 24 bytes.
    let mut specs: Vec<Spec> = Vec::new();
    let rule_count = r.byte() % 9;
    for _ in 0..rule_count {
        let len = usize::from(r.byte() % 24) + 1;
        let needle = r.bytes(len);
        let flag = r.byte();
        let replace = (flag % 8 != 0).then(|| r.bytes(usize::from(flag / 8 % 8)));
        let clash = needle.is_empty()
            || replace.as_ref() == Some(&needle)
            || specs.iter().any(|(n, rep)| {
                *n == needle || rep.as_ref() == Some(&needle) || replace.as_ref() == Some(n)
            });
        if !clash {
            specs.push((needle, replace));
        }
    }
    // Chunk sizes (0 = empty chunk), then the rest in chunks of `tail` bytes.
    let count = r.byte() % 32;
    let sizes: Vec<usize> = (0..count).map(|_| usize::from(r.byte() % 40)).collect();
    let tail = usize::from(r.byte() % 8) + 1;
    let input = r.0;

    let rules = specs
        .iter()
        .enumerate()
        .map(|(i, (n, rep))| Rule {
            name: format!("r{i}").into(),
            needle: Zeroizing::new(n.clone()),
            action: match rep {
                Some(rep) => Action::Replace(Zeroizing::new(rep.clone())),
                None => Action::Refuse,
            },
        })
        .collect();
    let rw = Arc::new(Rewriter::new(rules).unwrap());
    let want = naive(&specs, input);
    assert_eq!(
        with_aho_corasick(&specs, input),
        want,
        "aho-corasick vs naive"
    );

    let mut chunks = Vec::new();
    let mut rest = input;
    for s in sizes {
        let (a, b) = rest.split_at(s.min(rest.len()));
        chunks.push(a);
        rest = b;
    }
    chunks.extend(rest.chunks(tail));

    let mut s = rw.stream();
    let mut out = Vec::new();
    let mut refused = None;
    for c in chunks {
        if let Err(e) = s.push(c, &mut out) {
            refused = Some(e.rule);
            break;
        }
        assert!(s.held_len() < rw.max_needle_len().max(1));
        assert!(want.0.starts_with(&out) || want.2.is_some());
    }
    if refused.is_none() {
        refused = s.finish(&mut out).err().map(|e| e.rule);
    }
    let hits: Vec<u64> = (0..specs.len()).map(|i| s.hits().get(i)).collect();
    assert_eq!((out, hits, refused), want, "stream vs one-shot");
});
