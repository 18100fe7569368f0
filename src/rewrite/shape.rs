//! Public hold-back: which tail bytes a response stream holds, decided from public facts only.
//!
//! # Why
//!
//! A stream must hold back the tail of a chunk that could begin a needle, so that a needle split
//! across two chunks is still found. Holding *exactly* the tails that are prefixes of a needle
//! (what [`super::trie::PrefixTrie`] computes) is right for dummies, which the agent knows
//! anyway, but wrong for real secrets: an agent that can make an upstream stream chosen text
//! sees its text delayed exactly when the text is a prefix of the real key, and learns the key
//! one character at a time from arrival times.
//!
//! So a response stream holds every tail that matches the public *shape* of some needle: the
//! form it was produced by (the literal value, one of its encodings) and its length, never its
//! bytes. Shapes come in three families, each a set of byte classes:
//!
//! | shape | held tails (proper prefixes of) | used for |
//! |---|---|---|
//! | [`Shape::Token`] | any run of non-blank bytes (no space, tab, line break or control byte) shorter than the longest such needle | the literal value and most encodings (base64 at each alignment, percent, JSON escapes, hex) |
//! | [`Shape::HexSpaced`] | hex digit pairs separated by single spaces (`6b 2d 4a`) | hex with spaces, as AWS error bodies write it |
//! | [`Shape::Wrapped`] | base64 characters with a line break (`\n` or `\r\n`) every `width` characters, at any phase | MIME (76) and PEM (64) line-wrapped base64 |
//!
//! Every needle's own prefixes match its shape, so a tail held by the exact rule is also held
//! here: the stream's output is the same bytes, only sometimes later. What decides the delay is a
//! function of the bytes' classes and of the needles' lengths (which the gateway treats as
//! public: key formats fix them). A correct guess of a key's first characters and a wrong guess
//! of the same classes are held alike.
//!
//! Liveness: blank bytes end every token run, so a chunk ending in a line break (an SSE event,
//! an NDJSON line) is not held, unless its last line is base64-shaped and could continue a
//! wrapped needle.
//!
//! Cost: one backward scan over at most the longest needle's length per family per push, with
//! no dependence on the data beyond byte classes.

/// The public shape of a needle: see the [module documentation](self).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Shape {
    /// No blank byte (space, tab, CR, LF, other control bytes, DEL).
    Token,
    /// Pairs of hex digits separated by single spaces.
    HexSpaced,
    /// Standard base64 characters with a line break every `width` characters; the first line
    /// may be shorter (the needle can start anywhere in a line), and there is at least one break.
    Wrapped {
        /// Characters per full line (76 for MIME, 64 for PEM).
        width: usize,
        /// `\r\n` line breaks instead of `\n`.
        crlf: bool,
    },
}

/// A blank byte ends a token.
pub(crate) fn is_blank(b: u8) -> bool {
    b <= b' ' || b == 0x7f
}

fn is_base64(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'+' || b == b'/'
}

impl Shape {
    /// Whether `needle` has this shape. For [`Shape::Wrapped`], the number of base64
    /// characters is returned too.
    fn fits(self, needle: &[u8]) -> Option<usize> {
        match self {
            Shape::Token => (!needle.iter().any(|&b| is_blank(b))).then_some(needle.len()),
            Shape::HexSpaced => needle
                .iter()
                .enumerate()
                .all(|(i, &b)| {
                    if i % 3 == 2 {
                        b == b' '
                    } else {
                        b.is_ascii_hexdigit()
                    }
                })
                .then_some(needle.len())
                .filter(|&n| n % 3 == 2),
            Shape::Wrapped { width, crlf } => {
                let segments = split_lines(needle, crlf)?;
                let (first, rest) = segments.split_first()?;
                let (last, middle) = rest.split_last()?;
                let ok = (1..=width).contains(first)
                    && (1..=width).contains(last)
                    && middle.iter().all(|&m| m == width);
                ok.then(|| segments.iter().sum())
            }
        }
    }
}

/// Lengths of the base64 runs between line breaks, or `None` if `bytes` holds anything else.
fn split_lines(bytes: &[u8], crlf: bool) -> Option<Vec<usize>> {
    let mut segments = vec![0usize];
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if is_base64(b) {
            *segments.last_mut()? += 1;
            i += 1;
        } else if crlf && b == b'\r' && bytes.get(i + 1) == Some(&b'\n') {
            segments.push(0);
            i += 2;
        } else if !crlf && b == b'\n' {
            segments.push(0);
            i += 1;
        } else {
            return None;
        }
    }
    Some(segments)
}

/// The families of a rule set, with the lengths that bound their held tails.
#[derive(Debug, Default)]
pub(crate) struct PublicHold {
    /// Longest [`Shape::Token`] needle.
    token_max: usize,
    /// Longest [`Shape::HexSpaced`] needle.
    hex_max: usize,
    /// Per `(width, crlf)`: the most base64 characters of a wrapped needle.
    wrapped: Vec<(usize, bool, usize)>,
    /// Longest needle of all: no held tail reaches this length.
    max_len: usize,
}

impl PublicHold {
    /// The families of `needles` with `shapes` (parallel). Returns the indexes of needles that
    /// do not have their declared shape.
    pub(crate) fn new(needles: &[&[u8]], shapes: &[Shape]) -> Result<PublicHold, Vec<usize>> {
        let mut hold = PublicHold::default();
        let mut bad = Vec::new();
        for (i, (needle, shape)) in needles.iter().zip(shapes).enumerate() {
            let Some(units) = shape.fits(needle) else {
                bad.push(i);
                continue;
            };
            hold.max_len = hold.max_len.max(needle.len());
            match *shape {
                Shape::Token => hold.token_max = hold.token_max.max(units),
                Shape::HexSpaced => hold.hex_max = hold.hex_max.max(units),
                Shape::Wrapped { width, crlf } => {
                    match hold
                        .wrapped
                        .iter_mut()
                        .find(|(w, c, _)| *w == width && *c == crlf)
                    {
                        Some(entry) => entry.2 = entry.2.max(units),
                        None => hold.wrapped.push((width, crlf, units)),
                    }
                }
            }
        }
        if needles.len() != shapes.len() {
            bad.extend(shapes.len()..needles.len());
        }
        if bad.is_empty() {
            Ok(hold)
        } else {
            Err(bad)
        }
    }

    /// The earliest `t >= from` such that `w[t..]` is a proper prefix of some needle's shape,
    /// or `w.len()` if there is none.
    pub(crate) fn earliest_open(&self, w: &[u8], from: usize) -> usize {
        let n = w.len();
        // No held tail reaches the longest needle's length.
        let floor = from.max(n.saturating_sub(self.max_len.saturating_sub(1)));
        if floor >= n {
            return n;
        }
        let mut best = n;
        best = best.min(self.token_open(w, floor));
        if self.hex_max > 1 {
            best = best.min(self.hex_open(w, floor));
        }
        for &(width, crlf, units) in &self.wrapped {
            best = best.min(wrapped_open(w, floor, width, crlf, units));
        }
        best
    }

    /// Token family: the trailing run of non-blank bytes, shorter than the longest token needle.
    fn token_open(&self, w: &[u8], floor: usize) -> usize {
        let n = w.len();
        if self.token_max < 2 {
            return n;
        }
        let run_start = w[floor..]
            .iter()
            .rposition(|&b| is_blank(b))
            .map_or(floor, |p| floor + p + 1);
        run_start.max((n + 1).saturating_sub(self.token_max)).min(n)
    }

    /// Hex-spaced family: `w[t..]` follows `hh hh hh...` from its start. For each residue of `t`
    /// modulo 3 the positions' expected classes are fixed, so one backward scan per residue
    /// finds how far back the pattern holds.
    fn hex_open(&self, w: &[u8], floor: usize) -> usize {
        let n = w.len();
        let lowest = floor.max((n + 1).saturating_sub(self.hex_max));
        let mut best = n;
        for q in 0..3 {
            // Scan back from the end while each byte fits the class its phase asks for.
            let mut start = n;
            while start > lowest {
                let i = start - 1;
                let fits = if (i + 3 - q) % 3 == 2 {
                    w[i] == b' '
                } else {
                    w[i].is_ascii_hexdigit()
                };
                if !fits {
                    break;
                }
                start = i;
            }
            // The smallest t >= start with t ≡ q (mod 3).
            let t = start + (q + 3 - start % 3) % 3;
            if t < n {
                best = best.min(t);
            }
        }
        best
    }
}

/// Wrapped family `(width, crlf)` with at most `units` base64 characters: `w[t..]` is one or
/// more base64 runs separated by line breaks (the last run may be empty, the last break
/// partial), the first run at most `width` long, the runs between exactly `width`, the last at
/// most `width`, fewer than `units` characters in all. Runs are walked from the end; a start in
/// an earlier run needs every run after it to fit, so the walk stops at the first misfit.
fn wrapped_open(w: &[u8], floor: usize, width: usize, crlf: bool, units: usize) -> usize {
    let n = w.len();
    let nl = if crlf { 2 } else { 1 };
    let mut end = n;
    // Runs after the current one (0: the current run is the last line).
    let mut later_runs = 0usize;
    if crlf && end > floor && w[end - 1] == b'\r' {
        // The tail ends inside a `\r\n` break: the last line is empty.
        end -= 1;
        later_runs = 1;
    }
    // Base64 characters in the runs after the current one.
    let mut later = 0usize;
    let mut best = n;
    loop {
        let start = w[floor..end]
            .iter()
            .rposition(|&b| !is_base64(b))
            .map_or(floor, |p| floor + p + 1);
        let run = end - start;
        // A start inside this run makes it the first (partial) line.
        if let Some(room) = units.checked_sub(later + 1) {
            let a = run.min(width).min(room);
            if a >= 1 {
                best = best.min(end - a);
            }
        }
        // Going further back, this run becomes a full line: the last line may be short, the
        // ones before it must be exactly `width`.
        let fits = if later_runs == 0 {
            run <= width
        } else {
            run == width
        };
        if !fits || start < floor + nl {
            break;
        }
        let broken = if crlf {
            &w[start - 2..start] == b"\r\n"
        } else {
            w[start - 1] == b'\n'
        };
        if !broken {
            break;
        }
        later += run;
        later_runs += 1;
        if later + 1 >= units {
            break;
        }
        end = start - nl;
    }
    best
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn hold(needles: &[(&str, Shape)]) -> PublicHold {
        let bytes: Vec<&[u8]> = needles.iter().map(|(n, _)| n.as_bytes()).collect();
        let shapes: Vec<Shape> = needles.iter().map(|(_, s)| *s).collect();
        PublicHold::new(&bytes, &shapes).unwrap()
    }

    #[test]
    fn shapes_are_checked() {
        let cases: &[(&str, &str, Shape, bool)] = &[
            ("token", "sk-live-abc", Shape::Token, true),
            ("token with a space", "sk live", Shape::Token, false),
            ("hex spaced", "6b 2d 4a", Shape::HexSpaced, true),
            ("hex spaced, odd end", "6b 2d 4", Shape::HexSpaced, false),
            (
                "wrapped once",
                "abc\ndefg",
                Shape::Wrapped {
                    width: 4,
                    crlf: false,
                },
                true,
            ),
            (
                "wrapped, middle line short",
                "ab\ncd\nef",
                Shape::Wrapped {
                    width: 4,
                    crlf: false,
                },
                false,
            ),
            (
                "wrapped, crlf",
                "ab\r\ncdef\r\ngh",
                Shape::Wrapped {
                    width: 4,
                    crlf: true,
                },
                true,
            ),
            (
                "wrapped without a break",
                "abcd",
                Shape::Wrapped {
                    width: 4,
                    crlf: false,
                },
                false,
            ),
        ];
        for &(name, needle, shape, ok) in cases {
            assert_eq!(shape.fits(needle.as_bytes()).is_some(), ok, "case {name}");
        }
    }

    #[test]
    fn earliest_open_by_case() {
        let token = hold(&[("sk-live-0123", Shape::Token)]);
        let hex = hold(&[("6b 2d 4a 5f", Shape::HexSpaced)]);
        let wrapped = hold(&[
            (
                "abcdefgh\nij",
                Shape::Wrapped {
                    width: 8,
                    crlf: false,
                },
            ),
            (
                "a\nbcdefghi",
                Shape::Wrapped {
                    width: 8,
                    crlf: false,
                },
            ),
        ]);
        let cases: &[(&str, &PublicHold, &str, usize)] = &[
            ("token run held", &token, "hello sk-li", 6),
            ("any token run, not only prefixes", &token, "hello xq-zz", 6),
            (
                "token run capped below the needle",
                &token,
                "x abcdefghijklmnop",
                7,
            ),
            ("ends in a line break: nothing", &token, "data: x\n\n", 9),
            ("hex pairs held", &hex, "zz 6b 2d", 3),
            ("hex ending in a space held", &hex, "zz 6b 2d ", 3),
            ("not hex", &hex, "zz 6b 2g", 8),
            ("wrapped: run then break", &wrapped, "zz abcdefgh\n", 3),
            ("wrapped: break then run", &wrapped, "zz ab\ncde", 3),
            (
                "wrapped: a last line longer than a line",
                &wrapped,
                "abcdefgh\nijklmnopq",
                10,
            ),
            ("two line breaks: not held", &wrapped, "abc\n\n", 5),
        ];
        for &(name, h, w, want) in cases {
            assert_eq!(h.earliest_open(w.as_bytes(), 0), want, "case {name}");
        }
    }
}
