//! The prefix trie that tells a stream which tail bytes to hold back.
//!
//! After a chunk, the stream must keep exactly the bytes that could still begin a match: the
//! longest tail `W[t..]` of the window that is a *proper* prefix of some needle (some needle is
//! strictly longer and starts with it). This module owns a trie of the needles with classic
//! Aho-Corasick failure links, built once per [`Rewriter`](super::Rewriter). Scanning the last
//! `max_len - 1` bytes of a window from the root lands in the node of the longest tail that is a
//! trie prefix; its failure chain lists every shorter one, longest first. Each node also knows
//! the nearest node in its own failure chain that has children ([`PrefixTrie::open`]), so the
//! stream can walk only the tails that are proper prefixes.
//!
//! The root has a dense 256-entry table (most bytes of ordinary text leave the root at once with
//! one lookup); other nodes keep their transitions sorted in flat arrays. The labels spell the
//! needles, so every table is zeroized on drop.

use zeroize::{Zeroize, ZeroizeOnDrop};

/// Node id of the root.
pub(crate) const ROOT: u32 = 0;

/// Past this many transitions a node's children are binary-searched instead of scanned.
const LINEAR_SCAN_MAX: usize = 8;

/// A trie of needles with failure links, answering "which tails of this window are proper
/// prefixes of a needle?".
#[derive(Zeroize, ZeroizeOnDrop)]
pub(crate) struct PrefixTrie {
    /// Transition of the root on every byte (`ROOT` when no needle starts with that byte).
    root: Vec<u32>,
    /// `trans_start[n]..trans_start[n + 1]` indexes node `n`'s transitions in `labels`/`targets`.
    trans_start: Vec<u32>,
    /// Transition bytes, sorted within each node.
    labels: Vec<u8>,
    /// Transition targets, parallel to `labels`.
    targets: Vec<u32>,
    /// Failure link: the node of the longest proper suffix of this node's string in the trie.
    fail: Vec<u32>,
    /// Nearest node in this node's failure chain (itself included) that has children.
    open: Vec<u32>,
    /// Length of the string a node spells.
    depth: Vec<u32>,
}

impl PrefixTrie {
    /// Builds the trie of `needles`; empty needles add nothing.
    ///
    /// Node ids must fit in `u32`; callers check the total needle length first
    /// ([`PrefixTrie::fits`]).
    pub(crate) fn new<'a>(needles: impl IntoIterator<Item = &'a [u8]>) -> PrefixTrie {
        // Build with per-node child lists, then flatten. The lists are wiped afterwards; the
        // old buffers left when one of them grew are not (see the module documentation of
        // `rewrite` on what cannot be wiped).
        let mut children: Vec<Vec<(u8, u32)>> = vec![Vec::new()];
        let mut depth: Vec<u32> = vec![0];
        for needle in needles {
            let mut node = ROOT;
            for &b in needle {
                let kids = &children[node as usize];
                node = match kids.iter().find(|&&(l, _)| l == b) {
                    Some(&(_, child)) => child,
                    None => {
                        let child = to_u32(children.len());
                        let d = depth[node as usize] + 1;
                        children[node as usize].push((b, child));
                        children.push(Vec::new());
                        depth.push(d);
                        child
                    }
                };
            }
        }
        let n = children.len();
        let mut trie = PrefixTrie {
            root: vec![ROOT; 256],
            trans_start: Vec::with_capacity(n + 1),
            // Every node but the root has one incoming transition: sized once, these never
            // reallocate (which would leave an unwiped copy of the labels behind).
            labels: Vec::with_capacity(n - 1),
            targets: Vec::with_capacity(n - 1),
            fail: vec![ROOT; n],
            open: vec![ROOT; n],
            depth,
        };
        for kids in &mut children {
            kids.sort_unstable_by_key(|&(l, _)| l);
        }
        for &(b, child) in &children[ROOT as usize] {
            trie.root[usize::from(b)] = child;
        }
        for kids in &children {
            trie.trans_start.push(to_u32(trie.labels.len()));
            for &(b, child) in kids {
                trie.labels.push(b);
                trie.targets.push(child);
            }
        }
        trie.trans_start.push(to_u32(trie.labels.len()));
        for kids in &mut children {
            kids.zeroize();
        }

        // Breadth-first, so a node's failure link and its `open` are set before its children's.
        let mut queue = std::collections::VecDeque::new();
        queue.push_back(ROOT);
        while let Some(node) = queue.pop_front() {
            let (lo, hi) = trie.range(node);
            for i in lo..hi {
                let (b, child) = (trie.labels[i], trie.targets[i]);
                trie.fail[child as usize] = if node == ROOT {
                    ROOT
                } else {
                    trie.next(trie.fail[node as usize], b)
                };
                queue.push_back(child);
            }
            trie.open[node as usize] = if hi > lo {
                node
            } else {
                trie.open[trie.fail[node as usize] as usize]
            };
        }
        trie
    }

    /// Whether a trie over needles of `total_len` bytes in all has node ids that fit in `u32`.
    pub(crate) fn fits(total_len: usize) -> bool {
        total_len < u32::MAX as usize
    }

    /// Index range of `node`'s transitions.
    fn range(&self, node: u32) -> (usize, usize) {
        let n = node as usize;
        (
            self.trans_start[n] as usize,
            self.trans_start[n + 1] as usize,
        )
    }

    /// The child of `node` on byte `b`, if any.
    fn child(&self, node: u32, b: u8) -> Option<u32> {
        if node == ROOT {
            let c = self.root[usize::from(b)];
            return (c != ROOT).then_some(c);
        }
        let (lo, hi) = self.range(node);
        let labels = &self.labels[lo..hi];
        let i = if labels.len() <= LINEAR_SCAN_MAX {
            labels.iter().position(|&l| l == b)?
        } else {
            labels.binary_search(&b).ok()?
        };
        Some(self.targets[lo + i])
    }

    /// The automaton's transition: the node of the longest suffix of `str(node) ++ [b]` that is
    /// in the trie.
    fn next(&self, mut node: u32, b: u8) -> u32 {
        loop {
            if let Some(c) = self.child(node, b) {
                return c;
            }
            if node == ROOT {
                return ROOT;
            }
            node = self.fail[node as usize];
        }
    }

    /// The deepest node with children among the suffixes of `tail` that are in the trie
    /// (`ROOT` if none). Its string is the longest suffix of `tail` that is a proper prefix of a
    /// needle. Cost is linear in `tail.len()`.
    pub(crate) fn longest_open_suffix(&self, tail: &[u8]) -> u32 {
        let mut node = ROOT;
        let mut i = 0;
        while i < tail.len() {
            if node == ROOT {
                // At the root, a byte no needle starts with leaves us there: skip such bytes
                // with independent lookups instead of a chain of dependent transitions.
                match tail[i..]
                    .iter()
                    .position(|&b| self.root[usize::from(b)] != ROOT)
                {
                    Some(skip) => i += skip,
                    None => break,
                }
            }
            node = self.next(node, tail[i]);
            i += 1;
        }
        self.open[node as usize]
    }

    /// The next shorter suffix after `node` (which has children) that also has children, or
    /// `ROOT`.
    pub(crate) fn next_open(&self, node: u32) -> u32 {
        self.open[self.fail[node as usize] as usize]
    }

    /// Length of the string `node` spells.
    pub(crate) fn depth(&self, node: u32) -> usize {
        self.depth[node as usize] as usize
    }

    /// Heap bytes owned by the trie.
    pub(crate) fn heap_bytes(&self) -> usize {
        4 * (self.root.capacity()
            + self.trans_start.capacity()
            + self.targets.capacity()
            + self.fail.capacity()
            + self.open.capacity()
            + self.depth.capacity())
            + self.labels.capacity()
    }
}

/// Converts a node count to a node id. [`PrefixTrie::fits`] guarantees it fits; saturating keeps
/// this panic-free regardless.
fn to_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Depths of every tail of `tail` that is a proper prefix of a needle, longest first.
    fn open_depths(trie: &PrefixTrie, tail: &[u8]) -> Vec<usize> {
        let mut out = Vec::new();
        let mut node = trie.longest_open_suffix(tail);
        while node != ROOT {
            out.push(trie.depth(node));
            node = trie.next_open(node);
        }
        out
    }

    #[test]
    fn open_suffixes_by_case() {
        let cases: &[(&str, &[&str], &str, &[usize])] = &[
            ("no needles", &[], "abc", &[]),
            ("no suffix", &["xyz"], "abc", &[]),
            ("one byte tail", &["cat"], "abc", &[1]),
            ("full needle is not open", &["abc"], "xabc", &[]),
            (
                "needle that is a prefix of another is open",
                &["ab", "abc"],
                "xab",
                &[2],
            ),
            ("nested tails", &["aaa"], "aaaa", &[2, 1]),
            (
                "tail found through failure link",
                &["abcd", "bcx"],
                "abc",
                &[3, 2],
            ),
            ("one-byte needles never open", &["a", "b"], "ab", &[]),
        ];
        for &(name, needles, tail, want) in cases {
            let trie = PrefixTrie::new(needles.iter().map(|n| n.as_bytes()));
            assert_eq!(open_depths(&trie, tail.as_bytes()), want, "case {name}");
        }
    }
}
