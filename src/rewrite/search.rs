//! Finding the next leftmost-longest match: aho-corasick, with a prefilter chosen for
//! credential-shaped needles.
//!
//! aho-corasick's own prefilters give up on exactly the sets a gateway has: more needles than
//! its packed (Teddy) searcher takes, starting with more than three distinct bytes, so it steps
//! its automaton over every byte; or needles that all start with `s` (`sk-...`), so its
//! start-byte prefilter stops on every `s` of English text. But credentials share a few short,
//! rarer prefixes (`sk-`, `ghp_`, `AKIA`, `xoxb`). This module picks the longest prefix length
//! (up to [`MAX_PREFIX_LEN`]) at which the needles have at most [`MAX_PREFIXES`] distinct
//! prefixes, finds candidate positions with a packed searcher over those prefixes (or `memmem`
//! when all needles share one), and confirms each candidate with an anchored leftmost-longest search.
//! Every occurrence of a needle is an occurrence of its prefix, so the first candidate that
//! confirms is the leftmost match, and the anchored search gives the longest needle there.
//!
//! Where aho-corasick's own prefilter is already good (one needle: `memmem`; up to
//! [`OWN_PACKED_MAX`] needles with varied first bytes: Teddy over whole needles) it is kept.
//!
//! Confirming a candidate walks at most the longest needle; if candidates keep failing densely
//! (text crafted to look like needle prefixes), the search falls back to the plain unanchored
//! automaton for the rest of the window, so the cost per byte stays bounded.

use std::collections::BTreeSet;

use aho_corasick::{packed, AhoCorasick, Anchored, BuildError, Input, Match, MatchKind, StartKind};

/// Most distinct prefixes handed to one packed searcher (Teddy slows down past a few dozen).
const MAX_PREFIXES: usize = 32;

/// Most packed searchers over one needle set. A set with more distinct prefixes than one
/// searcher takes (many credentials, each with its encoded forms: hundreds of needles with
/// varied starts) is split into groups of [`MAX_PREFIXES`], each searched on its own; a scan
/// per group is still far cheaper than stepping the automaton of thousands of needles over
/// every byte. Each group's next candidate is kept in a [`Cursor`], so every group scans each
/// byte of a window at most once.
const MAX_GROUPS: usize = 8;

/// Up to this many needles with at least three distinct first bytes, aho-corasick picks its
/// own packed prefilter over whole needles (see its `util/prefilter.rs`), which is faster here.
const OWN_PACKED_MAX: usize = 16;

/// Longest prefix used; longer ones hardly cut false candidates further.
const MAX_PREFIX_LEN: usize = 8;

/// Longest common prefix searched for as one pattern.
const MAX_COMMON_PREFIX_LEN: usize = 32;

/// Failed candidates allowed before the fallback, plus one per this many bytes searched.
const MISSES_FREE: usize = 8;
const BYTES_PER_MISS: usize = 32;

/// A leftmost-longest searcher over a fixed set of needles.
pub(crate) struct Finder {
    ac: AhoCorasick,
    pre: Option<Prefilter>,
}

/// Finds positions where some needle may start.
enum Prefilter {
    /// Every needle starts with this one prefix. A one-pattern aho-corasick searcher is
    /// `memchr`'s `memmem` inside, without adding a dependency.
    Common(AhoCorasick),
    /// Every needle starts with one of the prefixes of these searchers (at most
    /// [`MAX_GROUPS`]).
    Packed(Vec<packed::Searcher>),
}

impl Prefilter {
    /// Chooses a prefilter for `needles`, or `None` when aho-corasick's own is as good.
    fn new(needles: &[&[u8]]) -> Option<Prefilter> {
        let shortest = needles.iter().map(|n| n.len()).min()?;
        // With a one-byte needle, any prefilter stops on that byte; aho-corasick's own
        // start-byte prefilter does the same job.
        if shortest < 2 {
            return None;
        }
        // aho-corasick's own prefilter is already the best there is for one needle (`memmem`
        // over all of it) and for a few needles with varied first bytes (Teddy over whole
        // needles, which confirms a match without a second search).
        let first_bytes = needles.iter().map(|n| n[0]).collect::<BTreeSet<u8>>().len();
        if needles.len() == 1 || (needles.len() <= OWN_PACKED_MAX && first_bytes >= 3) {
            return None;
        }
        let common = common_prefix(needles);
        if common.len() >= 2 {
            let common = &common[..common.len().min(MAX_COMMON_PREFIX_LEN)];
            return AhoCorasick::new([common]).ok().map(Prefilter::Common);
        }
        let sets: Vec<BTreeSet<&[u8]>> = (2..=MAX_PREFIX_LEN.min(shortest))
            .rev()
            .map(|k| needles.iter().map(|n| &n[..k]).collect::<BTreeSet<&[u8]>>())
            .collect();
        // The longest prefixes one searcher takes; else the longest that a few groups take.
        let prefixes = sets
            .iter()
            .find(|set| set.len() <= MAX_PREFIXES)
            .or_else(|| {
                sets.iter()
                    .find(|set| set.len() <= MAX_PREFIXES * MAX_GROUPS)
            })?;
        let prefixes: Vec<&[u8]> = prefixes.iter().copied().collect();
        let groups = prefixes
            .chunks(MAX_PREFIXES)
            .map(|group| {
                packed::Config::new()
                    .builder()
                    .extend(group.iter().copied())
                    .build()
            })
            .collect::<Option<Vec<_>>>()?;
        Some(Prefilter::Packed(groups))
    }

    /// Searchers to keep a next candidate for in a [`Cursor`].
    fn groups(&self) -> usize {
        match self {
            Prefilter::Common(_) => 1,
            Prefilter::Packed(g) => g.len(),
        }
    }

    /// Start of group `g`'s first candidate at or after `from`, or `w.len()` when none.
    fn find(&self, g: usize, w: &[u8], from: usize) -> usize {
        let found = match self {
            Prefilter::Common(ac) => ac
                .find(Input::new(w).span(from..w.len()))
                .map(|m| m.start()),
            Prefilter::Packed(groups) => groups.get(g).and_then(|s| {
                s.find_in(w, aho_corasick::Span::from(from..w.len()))
                    .map(|m| m.start())
            }),
        };
        found.unwrap_or(w.len())
    }

    fn memory_usage(&self) -> usize {
        match self {
            Prefilter::Common(ac) => ac.memory_usage(),
            Prefilter::Packed(g) => g.iter().map(packed::Searcher::memory_usage).sum(),
        }
    }
}

/// The longest prefix every needle shares.
fn common_prefix<'a>(needles: &[&'a [u8]]) -> &'a [u8] {
    let Some((first, rest)) = needles.split_first() else {
        return &[];
    };
    let len = rest.iter().fold(first.len(), |len, n| {
        first[..len]
            .iter()
            .zip(n.iter())
            .take_while(|(a, b)| a == b)
            .count()
    });
    &first[..len]
}

impl Finder {
    /// Builds the searcher for `needles` (none empty).
    pub(crate) fn new(needles: &[&[u8]]) -> Result<Finder, BuildError> {
        let pre = Prefilter::new(needles);
        let ac = AhoCorasick::builder()
            .match_kind(MatchKind::LeftmostLongest)
            .start_kind(if pre.is_some() {
                StartKind::Both
            } else {
                StartKind::Unanchored
            })
            .build(needles)?;
        Ok(Finder { ac, pre })
    }

    /// The leftmost-longest match in `w[from..]`, if any. To find every match of one window,
    /// use a [`Cursor`]: it does not scan the same bytes again on each call.
    ///
    /// Exact for a window: aho-corasick has no look-behind, so a search of `w[from..]` gives
    /// what a search of the whole input would from `from`, among matches that end within `w`.
    #[cfg(test)]
    pub(crate) fn find(&self, w: &[u8], from: usize) -> Option<Match> {
        self.cursor(w).find(from)
    }

    /// A cursor over window `w`, for calls to [`Cursor::find`] with growing `from`.
    pub(crate) fn cursor<'f, 'w>(&'f self, w: &'w [u8]) -> Cursor<'f, 'w> {
        Cursor {
            finder: self,
            w,
            next: [None; MAX_GROUPS],
        }
    }

    fn unanchored(&self, w: &[u8], from: usize) -> Option<Match> {
        self.ac.find(Input::new(w).span(from..w.len()))
    }

    /// Heap bytes of the automaton and the prefilter.
    pub(crate) fn memory_usage(&self) -> usize {
        self.ac.memory_usage() + self.pre.as_ref().map_or(0, Prefilter::memory_usage)
    }
}

/// Finds the matches of one window in order: each prefilter group's next candidate is kept
/// between calls, so no group scans a byte twice however many matches and failed candidates
/// the window holds. Calls must not go back (`from` never below the end of a returned match).
pub(crate) struct Cursor<'f, 'w> {
    finder: &'f Finder,
    w: &'w [u8],
    /// Per group: its first candidate at or after where it last searched (`w.len()`: none).
    next: [Option<usize>; MAX_GROUPS],
}

impl Cursor<'_, '_> {
    /// The leftmost-longest match in `w[from..]`, if any.
    pub(crate) fn find(&mut self, from: usize) -> Option<Match> {
        let w = self.w;
        let Some(pre) = &self.finder.pre else {
            return self.finder.unanchored(w, from);
        };
        let mut at = from;
        let mut misses = 0;
        while at < w.len() {
            let mut c = w.len();
            for g in 0..pre.groups() {
                let slot = &mut self.next[g];
                let next = match *slot {
                    Some(n) if n >= at => n,
                    _ => pre.find(g, w, at),
                };
                *slot = Some(next);
                c = c.min(next);
            }
            if c >= w.len() {
                return None;
            }
            let input = Input::new(w).span(c..w.len()).anchored(Anchored::Yes);
            if let Some(m) = self.finder.ac.find(input) {
                return Some(m);
            }
            at = c + 1;
            misses += 1;
            if misses > MISSES_FREE + (at - from) / BYTES_PER_MISS {
                return self.finder.unanchored(w, at);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// From any position, the finder gives aho-corasick's own unanchored leftmost-longest
        /// match, whichever prefilter was chosen, and also when text made of needle prefixes
        /// (near-misses) forces the fallback.
        #[test]
        fn finder_equals_plain_leftmost_longest(
            needles in prop::collection::btree_set(prop::collection::vec(b'a'..=b'c', 1..12), 1..6),
            parts in prop::collection::vec(
                (any::<prop::sample::Index>(), any::<prop::sample::Index>(), prop::collection::vec(b'a'..=b'd', 0..2)),
                0..80,
            ),
            from in any::<prop::sample::Index>(),
        ) {
            let needles: Vec<&[u8]> = needles.iter().map(Vec::as_slice).collect();
            let mut w = Vec::new();
            for (which, cut, noise) in parts {
                let n = needles[which.index(needles.len())];
                w.extend_from_slice(&n[..cut.index(n.len())]);
                w.extend_from_slice(&noise);
            }
            let f = Finder::new(&needles).unwrap();
            let plain = AhoCorasick::builder()
                .match_kind(MatchKind::LeftmostLongest)
                .build(&needles)
                .unwrap();
            let from = from.index(w.len() + 1);
            let want = plain.find(Input::new(&w).span(from..w.len()));
            prop_assert_eq!(f.find(&w, from), want);
        }
    }

    proptest! {
        /// Sets with more distinct prefixes than one packed searcher takes are searched in
        /// groups; one cursor walking a window match by match finds what aho-corasick finds.
        #[test]
        fn grouped_prefilter_cursor_equals_plain(
            needles in prop::collection::btree_set(prop::collection::vec(b'a'..=b'h', 2..10), 40..90),
            parts in prop::collection::vec(
                (any::<prop::sample::Index>(), any::<prop::sample::Index>(), prop::collection::vec(b'a'..=b'i', 0..3)),
                0..120,
            ),
        ) {
            let needles: Vec<&[u8]> = needles.iter().map(Vec::as_slice).collect();
            let mut w = Vec::new();
            for (which, cut, noise) in parts {
                let n = needles[which.index(needles.len())];
                w.extend_from_slice(&n[..=cut.index(n.len())]);
                w.extend_from_slice(&noise);
            }
            let f = Finder::new(&needles).unwrap();
            let plain = AhoCorasick::builder()
                .match_kind(MatchKind::LeftmostLongest)
                .build(&needles)
                .unwrap();
            let want: Vec<(usize, usize, usize)> = plain
                .find_iter(&w)
                .map(|m| (m.start(), m.end(), m.pattern().as_usize()))
                .collect();
            let mut got = Vec::new();
            let mut cursor = f.cursor(&w);
            let mut pos = 0;
            while let Some(m) = cursor.find(pos) {
                got.push((m.start(), m.end(), m.pattern().as_usize()));
                pos = m.end();
            }
            prop_assert_eq!(got, want);
        }
    }

    #[test]
    fn prefilter_choice_by_case() {
        let many: Vec<Vec<u8>> = (0..17)
            .map(|i| format!("{}-{i:02}", ["sk", "ghp", "AKIA"][i % 3]).into_bytes())
            .collect();
        let many: Vec<&[u8]> = many.iter().map(Vec::as_slice).collect();
        // 70 needles with 70 distinct starts.
        let grouped: Vec<Vec<u8>> = (0..70u8)
            .map(|i| vec![b'0' + i, b'-', b'x', b'y'])
            .collect();
        let grouped: Vec<&[u8]> = grouped.iter().map(Vec::as_slice).collect();
        let cases: &[(&str, &[&[u8]], &str)] = &[
            (
                "one needle: aho-corasick's memmem",
                &[b"sk-dummy-openai"],
                "none",
            ),
            (
                "all sk-: the common prefix",
                &[b"sk-abc", b"sk-xyz", b"sk-proj-q"],
                "common 3",
            ),
            (
                "a one-byte needle: aho-corasick's own",
                &[b"a", b"sk-x"],
                "none",
            ),
            (
                "shared first byte only: packed",
                &[b"sa1", b"sb2"],
                "packed",
            ),
            (
                "two first bytes: packed",
                &[b"sk-abc", b"ghp_abc"],
                "packed",
            ),
            (
                "a few mixed shapes: aho-corasick's Teddy",
                &[b"sk-abc", b"ghp_abc", b"AKIAXYZ", b"xoxb-12"],
                "none",
            ),
            ("many mixed shapes: packed", &many, "packed"),
            (
                "more prefixes than one searcher takes: groups",
                &grouped,
                "packed in 3 groups",
            ),
        ];
        for &(name, needles, want) in cases {
            let got = match Prefilter::new(needles) {
                None => "none".to_string(),
                Some(Prefilter::Common(ac)) => format!("common {}", ac.max_pattern_len()),
                Some(Prefilter::Packed(g)) if g.len() == 1 => "packed".to_string(),
                Some(Prefilter::Packed(g)) => format!("packed in {} groups", g.len()),
            };
            assert_eq!(got, want, "case {name:?}");
        }
    }

    /// Text full of near-misses takes the fallback and still finds the match after them.
    #[test]
    fn dense_failed_candidates_fall_back_and_still_find() {
        let f = Finder::new(&[b"sk-dummy-openai", b"ghp-dummy-github"]).unwrap();
        let mut w = b"sk-dummy-".repeat(200);
        w.extend_from_slice(b"ghp-dummy-github");
        let m = f.find(&w, 0).unwrap();
        assert_eq!(
            (m.start(), m.end(), m.pattern().as_usize()),
            (1800, 1816, 1)
        );
    }
}
