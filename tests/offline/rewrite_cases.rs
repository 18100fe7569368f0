//! Named cases of the credential rewriter: matching semantics across chunk boundaries, what is
//! held back (and what goes out at once), refusals, rule validation, and that no value ever
//! shows up in an error or a debug print.
use std::borrow::Cow;
use std::sync::Arc;

use slapenir::rewrite::{Action, Hits, Problem, Refused, RewriteStream, Rewriter, Rule};
use zeroize::Zeroizing;

/// A rule from text: `Some(replacement)` replaces, `None` refuses.
fn rule(name: &str, needle: &[u8], with: Option<&[u8]>) -> Rule {
    Rule {
        name: name.into(),
        needle: Zeroizing::new(needle.to_vec()),
        action: match with {
            Some(w) => Action::Replace(Zeroizing::new(w.to_vec())),
            None => Action::Refuse,
        },
    }
}

fn rewriter(rules: &[(&[u8], Option<&[u8]>)]) -> Arc<Rewriter> {
    let rules = rules
        .iter()
        .enumerate()
        .map(|(i, &(n, w))| rule(&format!("r{i}"), n, w))
        .collect();
    Arc::new(Rewriter::new(rules).unwrap())
}

/// Streams `chunks` and finishes.
fn run(rw: &Arc<Rewriter>, chunks: &[&[u8]]) -> Result<Vec<u8>, Refused> {
    let mut s = rw.stream();
    let mut out = Vec::new();
    for c in chunks {
        s.push(c, &mut out)?;
    }
    s.finish(&mut out)?;
    Ok(out)
}

type Case<'a> = (
    &'a str,
    &'a [(&'a [u8], Option<&'a [u8]>)],
    &'a [&'a [u8]],
    Result<&'a [u8], usize>,
);

/// Each case: rules, chunks, and the whole output (or the refusing rule). Every case is also
/// run one byte per chunk, as one chunk, and through the one-shot `rewrite`.
const CASES: &[Case] = &[
    (
        "no rules passes everything",
        &[],
        &[b"abc", b"", b"def"],
        Ok(b"abcdef"),
    ),
    (
        "needle split over every byte",
        &[(b"sk-dummy", Some(b"sk-REAL"))],
        &[b"x s", b"k", b"-", b"d", b"u", b"m", b"m", b"y y"],
        Ok(b"x sk-REAL y"),
    ),
    (
        "leftmost wins over a longer match starting later",
        &[(b"bcd", Some(b"2")), (b"ab", Some(b"1"))],
        &[b"a", b"bcd"],
        Ok(b"1cd"),
    ),
    (
        "longest wins at the same start",
        &[(b"ab", Some(b"1")), (b"abc", Some(b"2"))],
        &[b"a", b"b", b"c"],
        Ok(b"2"),
    ),
    (
        "shorter needle once the longer one fails across chunks",
        &[(b"ab", Some(b"1")), (b"abcd", Some(b"2"))],
        &[b"ab", b"c", b"x"],
        Ok(b"1cx"),
    ),
    (
        "needle that is a suffix of another",
        &[(b"bc", Some(b"1")), (b"abc", Some(b"2"))],
        &[b"ab", b"cxb", b"c"],
        Ok(b"2x1"),
    ),
    (
        "open tail found through a failure link",
        &[(b"abcd", Some(b"1")), (b"bcx", Some(b"2"))],
        &[b"abc", b"x"],
        Ok(b"a2"),
    ),
    (
        "overlapping occurrences are not overlapped",
        &[(b"aa", Some(b"X"))],
        &[b"aa", b"aaa"],
        Ok(b"XXa"),
    ),
    (
        "a replacement is never scanned again",
        &[(b"a", Some(b"aa"))],
        &[b"a", b"a"],
        Ok(b"aaaa"),
    ),
    (
        "a replacement containing another needle is left alone",
        &[(b"x", Some(b"yyy")), (b"yy", Some(b"z"))],
        &[b"x", b"yy"],
        Ok(b"yyyz"),
    ),
    (
        "empty replacement deletes",
        &[(b"secret", Some(b""))],
        &[b"a secr", b"et b"],
        Ok(b"a  b"),
    ),
    (
        "one-byte needles",
        &[(b"a", Some(b"1")), (b"b", Some(b"2"))],
        &[b"cab", b"", b"ba"],
        Ok(b"c1221"),
    ),
    (
        "binary, not UTF-8",
        &[
            (b"\xff\x00\xfe", Some(b"\x00")),
            (b"\xff\xff", Some(b"\x01\x02")),
        ],
        &[b"\xff", b"\xff\xff\x00", b"\xfe\xff"],
        Ok(b"\x01\x02\x00\xff"),
    ),
    (
        "needle at the very end is flushed by finish",
        &[(b"ab", Some(b"1")), (b"abc", Some(b"2"))],
        &[b"xab"],
        Ok(b"x1"),
    ),
    (
        "unfinished needle at the end goes out verbatim",
        &[(b"sk-dummy", Some(b"R"))],
        &[b"key sk-dum"],
        Ok(b"key sk-dum"),
    ),
    (
        "a long chunk after held bytes: match across the junction and more inside",
        &[(b"ghp-dummy", Some(b"G")), (b"sk-dummy", Some(b"S"))],
        &[
            b"token ghp-du",
            b"mmy and sk-dummy and a long tail of text ghp-",
            b"dummy",
        ],
        Ok(b"token G and S and a long tail of text G"),
    ),
    (
        "a long chunk after held bytes that do not match",
        &[(b"sk-dummy", Some(b"S"))],
        &[b"sk-du", b"mb sk-dummy, plenty of text afterwards"],
        Ok(b"sk-dumb S, plenty of text afterwards"),
    ),
    (
        "refuse rule stops the stream",
        &[(b"sk-dummy", Some(b"S")), (b"ghp-dummy", None)],
        &[b"sk-dummy ghp-d", b"ummy sk-dummy"],
        Err(1),
    ),
    (
        "a refuse needle inside a longer replace needle does not refuse",
        &[(b"dummy", None), (b"sk-dummy", Some(b"S"))],
        &[b"sk-", b"dummy"],
        Ok(b"S"),
    ),
];

#[test]
fn cases() {
    for &(name, rules, chunks, want) in CASES {
        let rw = rewriter(rules);
        let want = want.map(<[u8]>::to_vec);
        let whole: Vec<u8> = chunks.concat();
        let got = run(&rw, chunks).map_err(|r| r.rule);
        assert_eq!(got, want, "case {name:?}: as given");
        let bytes: Vec<&[u8]> = whole.chunks(1).collect();
        assert_eq!(
            run(&rw, &bytes).map_err(|r| r.rule),
            want,
            "case {name:?}: one byte per chunk"
        );
        assert_eq!(
            run(&rw, &[&whole]).map_err(|r| r.rule),
            want,
            "case {name:?}: one chunk"
        );
        let one_shot = rw
            .rewrite(&whole, &mut Hits::new())
            .map(Cow::into_owned)
            .map_err(|r| r.rule);
        assert_eq!(one_shot, want, "case {name:?}: one-shot");
    }
}

/// Each case: needles, one chunk, what is emitted at once and how many bytes are held.
/// Server-sent events must not wait behind bytes that cannot begin a match.
#[test]
fn held_back_only_what_may_begin_a_match() {
    type HeldCase<'a> = (&'a str, &'a [&'a [u8]], &'a [u8], &'a [u8], usize);
    let cases: &[HeldCase] = &[
        (
            "SSE event with no needle prefix goes out whole",
            &[b"sk-dummy"],
            b"data: {\"delta\":\"hello\"}\n\n",
            b"data: {\"delta\":\"hello\"}\n\n",
            0,
        ),
        (
            "a tail that may begin a needle is held",
            &[b"sk-dummy"],
            b"key sk-du",
            b"key ",
            5,
        ),
        (
            "a single first byte is held",
            &[b"sk-dummy"],
            b"tasks",
            b"task",
            1,
        ),
        (
            "a complete needle with no longer one goes at once",
            &[b"sk-dummy"],
            b"sk-dummy",
            b"R0",
            0,
        ),
        (
            "a complete needle that a longer one extends is held",
            &[b"sk-dummy", b"sk-dummy-2"],
            b"x sk-dummy",
            b"x ",
            8,
        ),
        ("the earliest open tail wins", &[b"aaaa"], b"baaa", b"b", 3),
        (
            "bytes that only end a needle are not held",
            &[b"sk-dummy"],
            b"my-dummy",
            b"my-dummy",
            0,
        ),
    ];
    for &(name, needles, chunk, emitted, held) in cases {
        let rules: Vec<Rule> = needles
            .iter()
            .enumerate()
            .map(|(i, n)| rule(&format!("r{i}"), n, Some(format!("R{i}").as_bytes())))
            .collect();
        let rw = Arc::new(Rewriter::new(rules).unwrap());
        let mut s = rw.stream();
        let mut out = Vec::new();
        s.push(chunk, &mut out).unwrap();
        assert_eq!(out, emitted, "case {name:?}: emitted");
        assert_eq!(s.held_len(), held, "case {name:?}: held");
    }
}

#[test]
fn refused_stream_stays_refused_and_names_the_credential() {
    let rw = Arc::new(
        Rewriter::new(vec![
            rule("openai", b"sk-dummy-openai", Some(b"sk-real-openai")),
            rule("github", b"ghp-dummy-github", None),
        ])
        .unwrap(),
    );
    let mut s: RewriteStream = rw.stream();
    let mut out = Vec::new();
    s.push(b"a sk-dummy-openai b ghp-dummy-", &mut out).unwrap();
    assert_eq!(out, b"a sk-real-openai b ");
    let err = s.push(b"github c", &mut out).unwrap_err();
    assert_eq!((err.rule, &*err.name), (1, "github"));
    let text = err.to_string();
    assert!(text.contains("`github`"), "{text}");
    assert!(!text.contains("ghp-dummy"), "{text}");
    assert_eq!(s.push(b"", &mut out), Err(err.clone()));
    assert_eq!(s.finish(&mut out), Err(err));
    assert_eq!(s.held_len(), 0);
    assert_eq!(s.hits().get(0), 1);
}

#[test]
fn compile_reports_every_problem_by_name() {
    type Named<'a> = (&'a str, &'a [u8], Option<&'a [u8]>);
    let cases: &[(&str, &[Named], &[&str])] = &[
        (
            "valid",
            &[("a", b"x1", Some(b"y1")), ("b", b"x2", None)],
            &[],
        ),
        (
            "empty needle",
            &[("openai", b"", Some(b"sk-real"))],
            &["rule `openai` (#0): the value to find is empty"],
        ),
        (
            "same needle twice",
            &[
                ("a", b"sk-dummy", Some(b"s1")),
                ("b", b"sk-dummy", Some(b"s2")),
            ],
            &["rule `b` (#1) has the same value to find as rule `a` (#0)"],
        ),
        (
            "needle equal to its own replacement",
            &[("a", b"sk-dummy", Some(b"sk-dummy"))],
            &["rule `a` (#0): the value to find equals its own replacement"],
        ),
        (
            "needle equal to another rule's replacement",
            &[
                ("dummy", b"sk-dummy", Some(b"sk-real")),
                ("scrub", b"sk-real", Some(b"sk-dummy")),
            ],
            &[
                "rule `scrub` (#1): the value to find equals the replacement of rule `dummy` (#0)",
                "rule `dummy` (#0): the value to find equals the replacement of rule `scrub` (#1)",
            ],
        ),
        (
            "every problem, not just the first",
            &[
                ("e1", b"", Some(b"z")),
                ("a", b"tok", Some(b"TOK")),
                ("b", b"tok", None),
                ("c", b"TOK", Some(b"q")),
                ("e2", b"", None),
            ],
            &[
                "rule `e1` (#0): the value to find is empty",
                "rule `b` (#2) has the same value to find as rule `a` (#1)",
                "rule `e2` (#4): the value to find is empty",
                "rule `c` (#3): the value to find equals the replacement of rule `a` (#1)",
            ],
        ),
    ];
    for &(name, rules, want) in cases {
        let built = Rewriter::new(
            rules
                .iter()
                .map(|&(n, needle, w)| rule(n, needle, w))
                .collect(),
        );
        let got: Vec<String> = match built {
            Ok(_) => Vec::new(),
            Err(e) => {
                let text = e.to_string();
                for &(_, needle, with) in rules {
                    for value in [Some(needle), with]
                        .into_iter()
                        .flatten()
                        .filter(|v| v.len() > 2)
                    {
                        let value = String::from_utf8_lossy(value);
                        assert!(
                            !text.contains(&*value),
                            "case {name:?}: value in error: {text}"
                        );
                    }
                }
                e.problems().iter().map(Problem::to_string).collect()
            }
        };
        assert_eq!(got, want, "case {name:?}");
    }
}

#[test]
fn debug_prints_no_value() {
    let r = rule("openai", b"sk-dummy-openai", Some(b"sk-real-openai"));
    let text = format!("{r:?}");
    assert!(text.contains("openai") && !text.contains("sk-"), "{text}");
    let rw = Arc::new(Rewriter::new(vec![r]).unwrap());
    let mut s = rw.stream();
    s.push(b"sk-dummy-op", &mut Vec::new()).unwrap();
    for text in [format!("{rw:?}"), format!("{s:?}")] {
        assert!(!text.contains("sk-"), "{text}");
    }
}

#[test]
fn one_shot_borrows_when_nothing_matches() {
    let rw = rewriter(&[(b"sk-dummy", Some(b"S"))]);
    let mut hits = Hits::new();
    assert!(matches!(
        rw.rewrite(b"sk-dumm", &mut hits),
        Ok(Cow::Borrowed(b"sk-dumm"))
    ));
    assert!(matches!(
        rw.rewrite(b"x sk-dummy", &mut hits),
        Ok(Cow::Owned(_))
    ));
    assert_eq!(hits.total(), 1);
}

#[test]
fn rule_names_and_limits() {
    let rw = rewriter(&[(b"abc", Some(b"1")), (b"abcdef", None)]);
    assert_eq!(rw.max_needle_len(), 6);
    assert_eq!(rw.rule_count(), 2);
    assert_eq!(rw.rule_name(1), "r1");
    assert_eq!(rw.rule_name(7), "<no such rule>");
}

#[test]
fn state_is_bounded_by_the_longest_needle_not_the_body() {
    let rw = rewriter(&[(b"sk-dummy-0123456789", Some(b"S"))]);
    let mut s = rw.stream();
    let before = s.state_bytes();
    assert!(before <= 3 * rw.max_needle_len(), "{before}");
    let mut out = Vec::new();
    for _ in 0..1000 {
        s.push(&[b's'; 300], &mut out).unwrap();
        s.push(b"sk-dummy-01234", &mut out).unwrap();
        out.clear();
    }
    assert_eq!(s.state_bytes(), before);
}

#[test]
fn finish_then_push_starts_a_new_body() {
    let rw = rewriter(&[(b"abc", Some(b"X"))]);
    let mut s = rw.stream();
    let mut out = Vec::new();
    s.push(b"ab", &mut out).unwrap();
    s.finish(&mut out).unwrap();
    s.push(b"c abc", &mut out).unwrap();
    s.finish(&mut out).unwrap();
    assert_eq!(out, b"abc X");
    assert_eq!(s.hits().get(0), 1);
}

#[test]
fn shared_across_threads() {
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>() {}
    send_sync::<Rewriter>();
    send::<RewriteStream>();
    let rw = rewriter(&[(b"sk-dummy", Some(b"S"))]);
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let rw = Arc::clone(&rw);
            std::thread::spawn(move || run(&rw, &[b"a sk-du", b"mmy b"]).unwrap())
        })
        .collect();
    for h in handles {
        assert_eq!(h.join().unwrap(), b"a S b");
    }
}
