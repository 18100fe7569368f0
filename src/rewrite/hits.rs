//! Per-rule counts of committed matches.

/// How many matches of each rule were committed, by rule index.
///
/// Only rules that matched take space (sorted `(rule, count)` pairs), so a stream of a rewriter
/// with thousands of rules and no match allocates nothing here.
///
/// # Example
///
/// ```
/// use slapenir::rewrite::Hits;
///
/// let mut hits = Hits::new();
/// hits.add(3);
/// hits.add(3);
/// hits.add(1);
/// assert_eq!(hits.get(3), 2);
/// assert_eq!(hits.total(), 3);
/// assert_eq!(hits.iter().collect::<Vec<_>>(), vec![(1, 1), (3, 2)]);
///
/// let mut all = Hits::new();
/// all.add(1);
/// all.merge(&hits);
/// assert_eq!(all.iter().collect::<Vec<_>>(), vec![(1, 2), (3, 2)]);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Hits {
    counts: Vec<(usize, u64)>,
    /// Matches of [`Action::Keep`](super::Action::Keep) rules: needles forwarded unchanged.
    kept: Vec<(usize, u64)>,
}

/// Adds `n` to `rule`'s count in a sorted list.
fn bump(counts: &mut Vec<(usize, u64)>, rule: usize, n: u64) {
    match counts.binary_search_by_key(&rule, |&(r, _)| r) {
        Ok(i) => counts[i].1 = counts[i].1.saturating_add(n),
        Err(i) => counts.insert(i, (rule, n)),
    }
}

impl Hits {
    /// No hits.
    pub fn new() -> Hits {
        Hits::default()
    }

    /// Counts one match of `rule`.
    pub fn add(&mut self, rule: usize) {
        bump(&mut self.counts, rule, 1);
    }

    /// Counts one match of `rule` whose needle was kept (not replaced).
    pub fn add_kept(&mut self, rule: usize) {
        bump(&mut self.kept, rule, 1);
    }

    /// The kept matches, by rule, in rule order.
    pub fn kept(&self) -> impl Iterator<Item = (usize, u64)> + '_ {
        self.kept.iter().copied()
    }

    /// Adds every count of `other` (for example a stream's hits into a request's).
    pub fn merge(&mut self, other: &Hits) {
        for &(rule, n) in &other.counts {
            bump(&mut self.counts, rule, n);
        }
        for &(rule, n) in &other.kept {
            bump(&mut self.kept, rule, n);
        }
    }

    /// Matches of `rule` so far.
    pub fn get(&self, rule: usize) -> u64 {
        self.counts
            .binary_search_by_key(&rule, |&(r, _)| r)
            .map_or(0, |i| self.counts[i].1)
    }

    /// Matches of all rules so far.
    pub fn total(&self) -> u64 {
        self.counts
            .iter()
            .fold(0u64, |acc, &(_, c)| acc.saturating_add(c))
    }

    /// Whether nothing matched.
    pub fn is_empty(&self) -> bool {
        self.counts.is_empty()
    }

    /// `(rule index, count)` for every rule that matched, by rule index.
    pub fn iter(&self) -> impl Iterator<Item = (usize, u64)> + '_ {
        self.counts.iter().copied()
    }

    /// Forgets every count, keeping the allocation.
    pub fn clear(&mut self) {
        self.counts.clear();
        self.kept.clear();
    }

    /// Heap bytes owned.
    pub(crate) fn heap_bytes(&self) -> usize {
        (self.counts.capacity() + self.kept.capacity()) * std::mem::size_of::<(usize, u64)>()
    }
}
