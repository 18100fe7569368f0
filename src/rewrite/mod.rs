//! Credential rewriting: find every needle (a dummy or a real secret) in bytes and replace it,
//! one-shot for header values and URLs, or streamed chunk by chunk for bodies.
//!
//! This module owns matching and replacing only; it knows nothing about HTTP or Pingora. A
//! [`Rewriter`] is compiled once per configuration from [`Rule`]s and shared through an `Arc`;
//! each request or response body gets a cheap [`RewriteStream`].
//!
//! # Semantics
//!
//! Matches are **leftmost-longest and non-overlapping**, exactly as one-shot replacement over the
//! whole body would find them: scanning from the left, the earliest position where some needle
//! starts wins, and among needles starting there the longest wins. A replacement is never
//! scanned again. However a body is cut into chunks — down to one byte per chunk, with empty
//! chunks in between — a stream emits the same bytes as [`Rewriter::rewrite`] over the whole
//! body. The property tests (`tests/offline/rewrite_properties.rs`) and the fuzz target
//! (`fuzz/fuzz_targets/rewrite_stream.rs`) check this against both aho-corasick's own one-shot
//! replacement and a naive reference.
//!
//! A rule whose action is [`Action::Refuse`] takes part in matching like any other; when one of
//! its matches is committed the call returns [`Refused`] and a stream stays refused.
//!
//! # Streaming: what is held back, and why it is bounded
//!
//! A stream keeps a window `W = held ++ chunk`. It commits the leftmost-longest matches that are
//! already final, emits the bytes before them, and holds back only the tail `W[t..]` that is a
//! *proper prefix* of some needle (the earliest such tail past the last committed match) —
//! those are the only bytes whose fate the next chunk can change. A chunk with no such tail goes
//! out whole, at once, so server-sent events are never delayed. The held tail is shorter than the
//! longest needle, so **memory per stream is bounded by about three times the longest needle**
//! (the held tail plus a scratch window for the junction of held bytes and the next chunk),
//! whatever the size of the body or of its chunks. See [`RewriteStream::state_bytes`].
//!
//! Why a match `(s, e)` found inside `W` before `t` is final: a match starting earlier than `s`
//! would lie inside `W` (and the search would have found it) or run past the end of `W` (then
//! its start would be a proper-prefix tail before `t`); a longer needle starting at `s` would
//! make `s` itself such a tail. The tails come from a small trie of the needles with failure
//! links, scanned over the last `max_len - 1` bytes only, so each push costs the search of its
//! chunk plus `O(max_len)`, and one-byte chunks stay linear.
//!
//! aho-corasick's own `stream_replace_all` is not used: it pulls from a reader, supports only
//! the standard match kind and scans byte by byte.
//!
//! # Public hold-back
//!
//! Holding exactly the tails that are prefixes of a needle is a timing oracle when the needles
//! are secrets: an agent that makes an upstream stream chosen text would see a right guess of a
//! key's first bytes delayed and a wrong one not. [`Rewriter::new_public`] compiles rules whose
//! streams hold every tail that matches a needle's public [`Shape`] instead (any run of
//! non-blank bytes shorter than the longest needle, and the hex-pair and wrapped-base64
//! shapes): a superset of the exact tails, so the output bytes are the same, and a function of
//! byte classes and needle lengths only (property-tested in `tests/offline/rewrite_properties.rs`).
//! Response rewriters use it; request rewriters, whose needles are dummies the agent knows,
//! keep the exact rule.
//!
//! # Speed
//!
//! Matches are found by an aho-corasick leftmost-longest automaton behind a prefilter chosen for
//! credential-shaped needles (a few short shared prefixes such as `sk-`, `ghp_`, `AKIA`), where
//! aho-corasick's own prefilter gives up; see the `search` submodule. `benches/rewrite.rs`
//! (`cargo bench --bench rewrite`) prints throughput as ratios to `memcpy` and to one-shot
//! aho-corasick replacement measured in the same run.
//!
//! # Secrets in memory
//!
//! Needles and replacements the rewriter owns live in [`Zeroizing`] buffers; the trie's tables,
//! the held tail and the scratch window are zeroized when dropped or cleared. Some copies are
//! out of reach, and the caller should know about them:
//!
//! - the aho-corasick automaton's internal tables, its packed prefilter and the `memmem`
//!   finder (and any transient copies they made while building) encode the needles or their
//!   prefixes; those crates expose no way to wipe them. Building the prefix trie likewise
//!   leaves behind the small buffers its per-node child lists outgrew;
//! - output written into the caller's `Vec<u8>` (and the old buffers left behind when that
//!   `Vec` grows) belongs to the caller, who must wipe it if it holds secrets;
//! - the caller's input chunks, likewise.
//!
//! # Example
//!
//! ```
//! use std::sync::Arc;
//! use slapenir::rewrite::{Action, Hits, Rewriter, Rule};
//! use zeroize::Zeroizing;
//!
//! let rw = Arc::new(Rewriter::new(vec![Rule {
//!     name: "openai".into(),
//!     needle: Zeroizing::new(b"sk-dummy-openai".to_vec()),
//!     action: Action::Replace(Zeroizing::new(b"sk-real-0123".to_vec())),
//! }])?);
//!
//! let mut stream = rw.stream();
//! let mut out = Vec::new();
//! stream.push(b"Authorization: Bearer sk-dum", &mut out)?;
//! assert_eq!(out, b"Authorization: Bearer "); // "sk-dum" may begin a match: held back
//! stream.push(b"my-openai\n", &mut out)?;
//! stream.finish(&mut out)?;
//! assert_eq!(out, b"Authorization: Bearer sk-real-0123\n");
//! assert_eq!(stream.hits().get(0), 1);
//!
//! let mut hits = Hits::new();
//! assert_eq!(&*rw.rewrite(b"no secret here", &mut hits)?, b"no secret here");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Fuzzing
//!
//! From the crate root, with a stable toolchain:
//!
//! ```text
//! RUSTC_BOOTSTRAP=1 cargo fuzz run rewrite_stream -- -max_total_time=600
//! ```
//!
//! (add `-s none` where the address sanitizer is unavailable).

pub mod decode;
pub mod encoded;
mod error;
mod hits;
mod search;
mod shape;
mod stream;
mod trie;
pub mod websocket;

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use zeroize::Zeroizing;

pub use error::{CompileError, Problem, Refused};
pub use hits::Hits;
pub use shape::Shape;
pub use stream::RewriteStream;

use search::Finder;
use shape::PublicHold;
use trie::PrefixTrie;

/// One credential to find, and what to do when it is found.
pub struct Rule {
    /// Name of the credential, used in errors, logs and metrics instead of any value.
    pub name: Arc<str>,
    /// The bytes to find. Must not be empty.
    pub needle: Zeroizing<Vec<u8>>,
    /// What to do with each match.
    pub action: Action,
}

impl fmt::Debug for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Rule")
            .field("name", &self.name)
            .field("needle", &"[REDACTED]")
            .field("action", &self.action)
            .finish()
    }
}

/// What a [`Rule`] does with a match.
pub enum Action {
    /// Replace the needle with these bytes.
    Replace(Zeroizing<Vec<u8>>),
    /// Forward the needle unchanged, counting it: a dummy found where its credential is not
    /// swapped in (see `policy`), which the upstream may see but never as the real value.
    Keep,
    /// Finding this needle is a policy violation (a dummy of a credential bound to another
    /// upstream, or of a credential whose real value is unavailable): the caller must refuse.
    Refuse,
}

impl fmt::Debug for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::Replace(_) => f.write_str("Replace([REDACTED])"),
            Action::Keep => f.write_str("Keep"),
            Action::Refuse => f.write_str("Refuse"),
        }
    }
}

/// Which tail bytes a stream holds back (see the module documentation of `shape`).
enum Hold {
    /// Exactly the tails that are proper prefixes of a needle: for needles the agent knows
    /// (dummies), where holding reveals nothing.
    Exact(PrefixTrie),
    /// Every tail that matches a needle's public shape: for real secrets, so that when bytes
    /// arrive never depends on the secret's bytes.
    Public(PublicHold),
}

/// A compiled set of rules: leftmost-longest matcher, hold-back rule and actions.
///
/// Compiled once per configuration; `Send + Sync`, shared through an `Arc` by every stream.
pub struct Rewriter {
    finder: Finder,
    /// The needles that could be a header name (no blank byte), matched ignoring ASCII case:
    /// HTTP/1 header names keep the case they were written in but compare without it.
    name_finder: Option<aho_corasick::AhoCorasick>,
    /// Rule index of each `name_finder` pattern.
    name_rules: Vec<usize>,
    hold: Hold,
    names: Vec<Arc<str>>,
    /// A kept needle is stored as a replacement by itself, marked in `kept`.
    actions: Vec<Action>,
    kept: Vec<bool>,
    max_len: usize,
}

impl fmt::Debug for Rewriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Rewriter")
            .field("rules", &self.names)
            .field("max_needle_len", &self.max_len)
            .finish_non_exhaustive()
    }
}

impl Rewriter {
    /// Compiles `rules`. A rewriter with no rules passes everything through.
    ///
    /// The needles are dropped (and so wiped) once compiled; replacements are kept, zeroizing.
    ///
    /// # Errors
    ///
    /// A [`CompileError`] listing every problem, by rule name: an empty needle, the same needle
    /// in two rules, a needle equal to a replacement (another rule's or its own), or a rule set
    /// too large for the matcher.
    pub fn new(rules: Vec<Rule>) -> Result<Rewriter, CompileError> {
        Rewriter::build(rules, None)
    }

    /// Compiles `rules` for a stream whose held-back bytes must not depend on the needles'
    /// bytes: `shapes[i]` is the public [`Shape`] of rule `i`'s needle, and a stream holds every
    /// tail that matches a shape, not only real prefixes (see [`Shape`]). For real secrets
    /// scrubbed from responses.
    ///
    /// # Errors
    ///
    /// As [`Rewriter::new`], and [`Problem::Shape`] for a needle that does not have its declared
    /// shape (or a missing shape).
    ///
    /// # Example
    ///
    /// ```
    /// use std::sync::Arc;
    /// use slapenir::rewrite::{Action, Rewriter, Rule, Shape};
    /// use zeroize::Zeroizing;
    ///
    /// let rw = Arc::new(Rewriter::new_public(
    ///     vec![Rule {
    ///         name: "openai".into(),
    ///         needle: Zeroizing::new(b"sk-live-0123".to_vec()),
    ///         action: Action::Replace(Zeroizing::new(b"sk-dummy-xx".to_vec())),
    ///     }],
    ///     &[Shape::Token],
    /// )?);
    /// // A right guess and a wrong guess of the key's start are held alike.
    /// for guess in [&b"say sk-li"[..], &b"say xq-zz"[..]] {
    ///     let mut stream = rw.stream();
    ///     let mut out = Vec::new();
    ///     stream.push(guess, &mut out)?;
    ///     assert_eq!(out, b"say ");
    /// }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn new_public(rules: Vec<Rule>, shapes: &[Shape]) -> Result<Rewriter, CompileError> {
        Rewriter::build(rules, Some(shapes))
    }

    fn build(rules: Vec<Rule>, shapes: Option<&[Shape]>) -> Result<Rewriter, CompileError> {
        let mut problems = validate(&rules);
        let needles: Vec<&[u8]> = rules.iter().map(|r| r.needle.as_slice()).collect();
        let public = match shapes {
            None => None,
            Some(shapes) => match PublicHold::new(&needles, shapes) {
                Ok(hold) => Some(hold),
                Err(bad) => {
                    problems.extend(bad.into_iter().map(|i| {
                        Problem::Shape {
                            rule: i,
                            name: rules
                                .get(i)
                                .map_or_else(|| "".into(), |r| Arc::clone(&r.name)),
                        }
                    }));
                    None
                }
            },
        };
        if !problems.is_empty() {
            return Err(CompileError::new(problems));
        }
        let total_len: usize = rules.iter().map(|r| r.needle.len()).sum();
        if !PrefixTrie::fits(total_len) {
            return Err(CompileError::new(vec![Problem::Automaton {
                reason: format!("needles total {total_len} bytes, more than the trie can index"),
            }]));
        }
        let finder = Finder::new(&needles).map_err(|e| {
            CompileError::new(vec![Problem::Automaton {
                reason: e.to_string(),
            }])
        })?;
        let name_rules: Vec<usize> = (0..needles.len())
            .filter(|&i| !needles[i].iter().any(|&b| shape::is_blank(b)))
            .collect();
        let name_finder = if name_rules.is_empty() {
            None
        } else {
            let patterns = name_rules.iter().map(|&i| needles[i]);
            Some(
                aho_corasick::AhoCorasick::builder()
                    .ascii_case_insensitive(true)
                    .build(patterns)
                    .map_err(|e| {
                        CompileError::new(vec![Problem::Automaton {
                            reason: e.to_string(),
                        }])
                    })?,
            )
        };
        let hold = match public {
            Some(p) => Hold::Public(p),
            None => Hold::Exact(PrefixTrie::new(needles.iter().copied())),
        };
        let max_len = rules.iter().map(|r| r.needle.len()).max().unwrap_or(0);
        drop(needles);
        let kept = rules
            .iter()
            .map(|r| matches!(r.action, Action::Keep))
            .collect();
        // A kept needle is written back as it was found.
        let (names, actions) = rules
            .into_iter()
            .map(|r| match r.action {
                Action::Keep => (r.name, Action::Replace(r.needle)),
                action => (r.name, action),
            })
            .unzip();
        Ok(Rewriter {
            finder,
            name_finder,
            name_rules,
            hold,
            names,
            actions,
            kept,
            max_len,
        })
    }

    /// Length of the longest needle; a stream holds back fewer bytes than this.
    pub fn max_needle_len(&self) -> usize {
        self.max_len
    }

    /// Number of rules.
    pub fn rule_count(&self) -> usize {
        self.names.len()
    }

    /// Name of rule `idx`, or `"<no such rule>"` for an index out of range.
    pub fn rule_name(&self, idx: usize) -> &str {
        self.names.get(idx).map_or("<no such rule>", |n| n)
    }

    /// Heap bytes of the compiled tables: the automaton and prefilter (as aho-corasick reports
    /// them), the prefix trie, the names' index and the replacements.
    pub fn heap_bytes(&self) -> usize {
        let replacements: usize = self
            .actions
            .iter()
            .map(|a| match a {
                Action::Replace(r) => r.capacity(),
                Action::Keep | Action::Refuse => 0,
            })
            .sum();
        let hold = match &self.hold {
            Hold::Exact(trie) => trie.heap_bytes(),
            Hold::Public(_) => 0,
        };
        self.finder.memory_usage()
            + self.name_finder.as_ref().map_or(0, |f| f.memory_usage())
            + self.name_rules.capacity() * std::mem::size_of::<usize>()
            + hold
            + self.names.capacity() * std::mem::size_of::<Arc<str>>()
            + self.actions.capacity() * std::mem::size_of::<Action>()
            + replacements
    }

    /// Rewrites `input` in one go, for header values and URLs. Counts matches into `hits`.
    ///
    /// Returns `Cow::Borrowed(input)` when nothing matched.
    ///
    /// # Errors
    ///
    /// [`Refused`] when a match of a [`Action::Refuse`] rule is committed.
    ///
    /// # Example
    ///
    /// ```
    /// use std::borrow::Cow;
    /// use slapenir::rewrite::{Action, Hits, Rewriter, Rule};
    /// use zeroize::Zeroizing;
    ///
    /// let rw = Rewriter::new(vec![
    ///     Rule {
    ///         name: "github".into(),
    ///         needle: Zeroizing::new(b"ghp-dummy".to_vec()),
    ///         action: Action::Replace(Zeroizing::new(b"ghp_real".to_vec())),
    ///     },
    ///     Rule {
    ///         name: "openai".into(),
    ///         needle: Zeroizing::new(b"sk-dummy".to_vec()),
    ///         action: Action::Refuse,
    ///     },
    /// ])?;
    /// let mut hits = Hits::new();
    /// assert_eq!(&*rw.rewrite(b"token ghp-dummy", &mut hits)?, b"token ghp_real");
    /// assert!(matches!(rw.rewrite(b"plain", &mut hits)?, Cow::Borrowed(_)));
    /// let refused = rw.rewrite(b"key=sk-dummy", &mut hits).unwrap_err();
    /// assert_eq!(&*refused.name, "openai");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn rewrite<'a>(&self, input: &'a [u8], hits: &mut Hits) -> Result<Cow<'a, [u8]>, Refused> {
        let mut cursor = self.finder.cursor(input);
        let Some(first) = cursor.find(0) else {
            return Ok(Cow::Borrowed(input));
        };
        let mut out = Vec::with_capacity(input.len());
        let mut pos = 0;
        let mut next = Some(first);
        while let Some(m) = next {
            out.extend_from_slice(&input[pos..m.start()]);
            self.apply(m.pattern().as_usize(), &mut out, hits)?;
            pos = m.end();
            next = cursor.find(pos);
        }
        out.extend_from_slice(&input[pos..]);
        Ok(Cow::Owned(out))
    }

    /// The rule of the first needle found in `name` when ASCII case is ignored, for header names:
    /// they are compared without case, and a name may keep the case it was written in on its
    /// way to the other side. Needles holding blank bytes never fit a name and are not searched.
    pub fn find_ignoring_case(&self, name: &[u8]) -> Option<usize> {
        let m = self.name_finder.as_ref()?.find(name)?;
        self.name_rules.get(m.pattern().as_usize()).copied()
    }

    /// A new stream state for one body, sharing this rewriter.
    pub fn stream(self: &Arc<Self>) -> RewriteStream {
        RewriteStream::new(Arc::clone(self))
    }

    /// Applies rule `rule` to a committed match: appends its replacement and counts it, or
    /// refuses.
    fn apply(&self, rule: usize, out: &mut Vec<u8>, hits: &mut Hits) -> Result<(), Refused> {
        match self.actions.get(rule) {
            Some(Action::Replace(with)) => {
                out.extend_from_slice(with);
                if self.kept.get(rule).copied().unwrap_or(false) {
                    hits.add_kept(rule);
                } else {
                    hits.add(rule);
                }
                Ok(())
            }
            // The matcher only reports patterns it was built from, one per rule; an unknown
            // index cannot happen, and refusing is the safe answer if it ever did.
            Some(Action::Refuse | Action::Keep) | None => Err(Refused {
                rule,
                name: self.names.get(rule).cloned().unwrap_or_else(|| "".into()),
            }),
        }
    }
}

/// Every problem in `rules`, in rule order.
fn validate(rules: &[Rule]) -> Vec<Problem> {
    let id = |i: usize| (i, Arc::clone(&rules[i].name));
    let mut problems = Vec::new();
    // Every rule index with a given needle, in rule order.
    let mut by_needle: HashMap<&[u8], Vec<usize>> = HashMap::with_capacity(rules.len());
    for (i, rule) in rules.iter().enumerate() {
        if rule.needle.is_empty() {
            problems.push(Problem::EmptyNeedle {
                rule: i,
                name: Arc::clone(&rule.name),
            });
            continue;
        }
        let same = by_needle.entry(rule.needle.as_slice()).or_default();
        if let Some(&first) = same.first() {
            problems.push(Problem::DuplicateNeedle {
                first: id(first),
                second: id(i),
            });
        }
        same.push(i);
    }
    for (i, rule) in rules.iter().enumerate() {
        if let Action::Replace(with) = &rule.action {
            // A replacement that another rule refuses is fine: output is never scanned again
            // (a request rewriter swaps a dummy for the real value and refuses the real value
            // when the agent sends it). One that another rule rewrites would make the result
            // depend on how often the text went through.
            let rewritten = |j: &&usize| !matches!(rules[**j].action, Action::Refuse);
            for &j in by_needle
                .get(with.as_slice())
                .into_iter()
                .flatten()
                .filter(rewritten)
            {
                problems.push(Problem::NeedleIsReplacement {
                    needle_of: id(j),
                    replacement_of: id(i),
                });
            }
        }
    }
    problems
}
