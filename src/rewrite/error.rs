//! Errors of the rewriter: problems found when compiling rules, and refusals while rewriting.
//!
//! Both name credentials by rule name and index, never by needle or replacement bytes.

use std::fmt;
use std::sync::Arc;

/// Every problem found in a rule set, in rule order.
///
/// # Example
///
/// ```
/// use slapenir::rewrite::{Action, Rewriter, Rule};
/// use zeroize::Zeroizing;
///
/// let rule = |name: &str, needle: &str, with: &str| Rule {
///     name: name.into(),
///     needle: Zeroizing::new(needle.as_bytes().to_vec()),
///     action: Action::Replace(Zeroizing::new(with.as_bytes().to_vec())),
/// };
/// let err = Rewriter::new(vec![
///     rule("openai", "", "sk-real"),
///     rule("github", "ghp-dummy", "ghp-real"),
///     rule("github2", "ghp-dummy", "ghp-other"),
/// ])
/// .unwrap_err();
/// assert_eq!(err.problems().len(), 2);
/// let text = err.to_string();
/// assert!(text.contains("`openai`") && text.contains("`github2`"));
/// assert!(!text.contains("ghp-dummy") && !text.contains("sk-real"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompileError {
    problems: Vec<Problem>,
}

impl CompileError {
    pub(crate) fn new(problems: Vec<Problem>) -> CompileError {
        CompileError { problems }
    }

    /// The problems, at least one.
    pub fn problems(&self) -> &[Problem] {
        &self.problems
    }
}

impl fmt::Display for CompileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.problems.len();
        write!(
            f,
            "{n} problem{} in credential rewrite rules:",
            if n == 1 { "" } else { "s" }
        )?;
        for p in &self.problems {
            write!(f, "\n  - {p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for CompileError {}

/// One problem in a rule set. Rules are named by name and index; values never appear.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// The rule's needle is empty: it would match everywhere.
    EmptyNeedle {
        /// Index of the rule.
        rule: usize,
        /// Name of the rule.
        name: Arc<str>,
    },
    /// Two rules have the same needle, so which one applies would be arbitrary.
    DuplicateNeedle {
        /// Index and name of the earlier rule.
        first: (usize, Arc<str>),
        /// Index and name of the later rule.
        second: (usize, Arc<str>),
    },
    /// A rule's needle equals a replacement (possibly its own), so rewriting would not be
    /// reversible and one direction would turn the other's output back.
    NeedleIsReplacement {
        /// Index and name of the rule whose needle it is.
        needle_of: (usize, Arc<str>),
        /// Index and name of the rule whose replacement it is.
        replacement_of: (usize, Arc<str>),
    },
    /// A needle does not have the public shape declared for it (see
    /// [`Rewriter::new_public`](super::Rewriter::new_public)), or has none.
    Shape {
        /// Index of the rule.
        rule: usize,
        /// Name of the rule.
        name: Arc<str>,
    },
    /// The matcher could not be built (too many or too long needles).
    Automaton {
        /// What the matcher library reported; it names pattern indexes and lengths, not bytes.
        reason: String,
    },
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::EmptyNeedle { rule, name } => {
                write!(f, "rule `{name}` (#{rule}): the value to find is empty")
            }
            Problem::DuplicateNeedle { first, second } => write!(
                f,
                "rule `{}` (#{}) has the same value to find as rule `{}` (#{})",
                second.1, second.0, first.1, first.0
            ),
            Problem::NeedleIsReplacement {
                needle_of,
                replacement_of,
            } if needle_of.0 == replacement_of.0 => write!(
                f,
                "rule `{}` (#{}): the value to find equals its own replacement",
                needle_of.1, needle_of.0
            ),
            Problem::NeedleIsReplacement {
                needle_of,
                replacement_of,
            } => write!(
                f,
                "rule `{}` (#{}): the value to find equals the replacement of rule `{}` (#{})",
                needle_of.1, needle_of.0, replacement_of.1, replacement_of.0
            ),
            Problem::Shape { rule, name } => write!(
                f,
                "rule `{name}` (#{rule}): the value to find does not have its declared shape"
            ),
            Problem::Automaton { reason } => write!(f, "the matcher could not be built: {reason}"),
        }
    }
}

/// A rule whose action is [`Action::Refuse`](super::Action::Refuse) matched: the caller must
/// refuse the request or response.
///
/// `Display` names the credential, never a value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// Index of the rule that matched.
    pub rule: usize,
    /// Name of the rule that matched.
    pub name: Arc<str>,
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "found the dummy of credential `{}` (rule #{}) where it may not be used",
            self.name, self.rule
        )
    }
}

impl std::error::Error for Refused {}
