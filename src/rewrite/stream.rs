//! The per-body stream state: held-back tail, junction scratch, hit counts.
//!
//! See the [module documentation](super) for the algorithm and why the state is bounded.

use std::sync::Arc;

use zeroize::{Zeroize, Zeroizing};

use super::shape::PublicHold;
use super::trie::ROOT;
use super::{Hits, Hold, Refused, Rewriter};

/// Rewrites one body, chunk by chunk; see the [module documentation](super).
///
/// Cheap to create ([`Rewriter::stream`]); `Send`. Output is appended to a `Vec<u8>` the caller
/// owns and may reuse. The held tail and the scratch window are zeroized when cleared and on
/// drop.
pub struct RewriteStream {
    rw: Arc<Rewriter>,
    /// Bytes that may begin a match the next chunk completes; shorter than the longest needle.
    held: Zeroizing<Vec<u8>>,
    /// Window `held ++ chunk[..]` around a chunk boundary; shorter than twice the longest needle.
    scratch: Zeroizing<Vec<u8>>,
    hits: Hits,
    /// Set once a refusal is returned; every later call returns it again.
    refused: Option<Refused>,
}

impl std::fmt::Debug for RewriteStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RewriteStream")
            .field("held_len", &self.held.len())
            .field("hits", &self.hits)
            .field("refused", &self.refused)
            .finish_non_exhaustive()
    }
}

impl RewriteStream {
    pub(super) fn new(rw: Arc<Rewriter>) -> RewriteStream {
        // Both buffers get their final capacity now so they never reallocate, which would leave
        // an unwiped copy of held bytes behind.
        let l = rw.max_len;
        RewriteStream {
            held: Zeroizing::new(Vec::with_capacity(l.saturating_sub(1))),
            scratch: Zeroizing::new(Vec::with_capacity(2 * l.saturating_sub(1))),
            hits: Hits::new(),
            refused: None,
            rw,
        }
    }

    /// Rewrites the next chunk of the body, appending to `out` every byte whose fate is
    /// decided; holds back only a tail that may begin a match (fewer than
    /// [`Rewriter::max_needle_len`] bytes). Empty chunks are fine.
    ///
    /// # Errors
    ///
    /// [`Refused`] when a match of a refusing rule is committed; bytes before it may already be
    /// in `out`. The stream stays refused: every later call returns the same error.
    pub fn push(&mut self, chunk: &[u8], out: &mut Vec<u8>) -> Result<(), Refused> {
        if let Some(r) = &self.refused {
            return Err(r.clone());
        }
        let res = self.push_inner(chunk, out);
        self.refuse_on(res)
    }

    /// Ends the body: rewrites and appends the held tail. The stream is then empty; pushing
    /// again starts a new body (no match spans a `finish`), with the hit counts kept.
    ///
    /// # Errors
    ///
    /// As [`push`](Self::push).
    pub fn finish(&mut self, out: &mut Vec<u8>) -> Result<(), Refused> {
        if let Some(r) = &self.refused {
            return Err(r.clone());
        }
        let Self { rw, held, hits, .. } = self;
        let res = commit_all(rw, held, out, hits);
        wipe(held);
        self.refuse_on(res)
    }

    /// Bytes held back now.
    pub fn held_len(&self) -> usize {
        self.held.len()
    }

    /// Replacements made so far, per rule index.
    pub fn hits(&self) -> &Hits {
        &self.hits
    }

    /// Heap bytes owned by this stream state (not counting the shared [`Rewriter`]). Bounded
    /// by about three times the longest needle, plus 16 bytes (amortised) per rule that matched.
    pub fn state_bytes(&self) -> usize {
        self.held.capacity() + self.scratch.capacity() + self.hits.heap_bytes()
    }

    /// Records a refusal so later calls repeat it, and wipes the state.
    fn refuse_on(&mut self, res: Result<(), Refused>) -> Result<(), Refused> {
        if let Err(r) = &res {
            self.refused = Some(r.clone());
            wipe(&mut self.held);
            wipe(&mut self.scratch);
        }
        res
    }

    fn push_inner(&mut self, chunk: &[u8], out: &mut Vec<u8>) -> Result<(), Refused> {
        let Self {
            rw,
            held,
            scratch,
            hits,
            ..
        } = self;
        if held.is_empty() {
            // Search the chunk in place.
            let t = commit_final(rw, chunk, 0, out, hits)?;
            held.extend_from_slice(&chunk[t..]);
            return Ok(());
        }
        if chunk.is_empty() {
            return Ok(());
        }
        let h = held.len();
        // `held` is non-empty, so the longest needle has at least two bytes and `edge >= 1`.
        let edge = rw.max_len.saturating_sub(1);
        if chunk.len() < edge {
            // Short chunk: the whole window fits in scratch (< 2 * max_len bytes).
            scratch.extend_from_slice(held);
            scratch.extend_from_slice(chunk);
            wipe(held);
            let res = commit_final(rw, scratch, 0, out, hits);
            if let Ok(t) = res {
                held.extend_from_slice(&scratch[t..]);
            }
            wipe(scratch);
            return res.map(drop);
        }
        // Long chunk: settle the junction J = held ++ chunk[..edge] first. Every match that
        // starts inside `held` ends within J (it is at most `max_len` long), and every longer
        // or earlier candidate lies within J too, so matches starting before `h` are final.
        scratch.extend_from_slice(held);
        scratch.extend_from_slice(&chunk[..edge]);
        wipe(held);
        let res = commit_before(rw, scratch, h, out, hits);
        wipe(scratch);
        let pos = res?;
        // `pos >= h`: carry on inside the chunk, which is now the window.
        let t = commit_final(rw, chunk, pos - h, out, hits)?;
        held.extend_from_slice(&chunk[t..]);
        Ok(())
    }
}

/// Commits the final matches of window `w` from `pos`, appends everything decided and returns
/// `t`: the start of the tail to hold (`w.len()` when nothing needs holding).
///
/// `t` is the earliest position `>= pos` (past the last committed match) where `w[t..]` is a
/// proper prefix of a needle — or, with a public hold-back, matches a needle's shape, which
/// every proper prefix does, so `t` is only ever earlier. A match `(s, e)` with `s < t` is final:
/// an earlier match would lie inside `w` or start at a proper-prefix tail before `t`; a longer
/// one at `s` would make `s` such a tail.
fn commit_final(
    rw: &Rewriter,
    w: &[u8],
    mut pos: usize,
    out: &mut Vec<u8>,
    hits: &mut Hits,
) -> Result<usize, Refused> {
    let mut tails = OpenTails::new(rw, w, pos);
    let mut t = tails.earliest_at_or_after(pos);
    let mut cursor = rw.finder.cursor(w);
    while let Some(m) = cursor.find(pos) {
        if m.start() >= t {
            break;
        }
        out.extend_from_slice(&w[pos..m.start()]);
        rw.apply(m.pattern().as_usize(), out, hits)?;
        pos = m.end();
        t = tails.earliest_at_or_after(pos);
    }
    out.extend_from_slice(&w[pos..t]);
    Ok(t)
}

/// The open tails of a window (those that may begin a needle), earliest first, under the
/// rewriter's hold-back rule.
enum OpenTails<'a> {
    /// Walks the prefix trie's failure chain of the window's longest open suffix.
    Exact {
        rw: &'a Rewriter,
        n: usize,
        open: u32,
    },
    /// Asks the public shapes again from each position.
    Public { hold: &'a PublicHold, w: &'a [u8] },
}

impl<'a> OpenTails<'a> {
    fn new(rw: &'a Rewriter, w: &'a [u8], pos: usize) -> OpenTails<'a> {
        match &rw.hold {
            Hold::Exact(trie) => {
                let n = w.len();
                // Proper prefixes are shorter than the longest needle, so only this tail can
                // hold one.
                let from = pos.max(n.saturating_sub(rw.max_len.saturating_sub(1)));
                OpenTails::Exact {
                    rw,
                    n,
                    open: trie.longest_open_suffix(&w[from..]),
                }
            }
            Hold::Public(hold) => OpenTails::Public { hold, w },
        }
    }

    /// The earliest open tail at or after `pos`; the window's length when there is none.
    /// Calls come with `pos` not decreasing.
    fn earliest_at_or_after(&mut self, pos: usize) -> usize {
        match self {
            OpenTails::Exact { rw, n, open } => {
                let Hold::Exact(trie) = &rw.hold else {
                    return *n;
                };
                // The root (depth 0) stands for "none" at `n`.
                let mut t = *n - trie.depth(*open);
                while t < pos && *open != ROOT {
                    *open = trie.next_open(*open);
                    t = *n - trie.depth(*open);
                }
                t
            }
            OpenTails::Public { hold, w } => hold.earliest_open(w, pos),
        }
    }
}

/// Commits the matches of window `w` that start before `limit`, appends everything up to
/// `limit` or the end of the last committed match, whichever is later, and returns that
/// position. The caller guarantees that every match starting before `limit` is final.
fn commit_before(
    rw: &Rewriter,
    w: &[u8],
    limit: usize,
    out: &mut Vec<u8>,
    hits: &mut Hits,
) -> Result<usize, Refused> {
    let mut pos = 0;
    let mut cursor = rw.finder.cursor(w);
    while let Some(m) = cursor.find(pos) {
        if m.start() >= limit {
            break;
        }
        out.extend_from_slice(&w[pos..m.start()]);
        rw.apply(m.pattern().as_usize(), out, hits)?;
        pos = m.end();
    }
    if pos < limit {
        out.extend_from_slice(&w[pos..limit]);
        pos = limit;
    }
    Ok(pos)
}

/// Commits every match of `w` and appends all of it: the end of the body.
fn commit_all(rw: &Rewriter, w: &[u8], out: &mut Vec<u8>, hits: &mut Hits) -> Result<(), Refused> {
    commit_before(rw, w, w.len(), out, hits).map(drop)
}

/// Zeroes the used bytes of `v` and empties it. Its spare capacity holds no old bytes: the
/// buffers only grow by appending within the capacity reserved up front, and only shrink
/// through here.
fn wipe(v: &mut Vec<u8>) {
    v.as_mut_slice().zeroize();
    v.clear();
}
