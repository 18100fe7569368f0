//! Rewriting header values with a [`Rewriter`], shared by both directions. Only names whose
//! values change are returned, so a request or response with nothing to swap costs one scan
//! and no allocation.

use std::borrow::Cow;

use http::header::{HeaderMap, HeaderName, HeaderValue};

use crate::rewrite::{Hits, Refused, Rewriter};

/// The headers a rewrite changes: each name with all its values, in order.
pub type HeaderChanges = Vec<(HeaderName, Vec<HeaderValue>)>;

/// Why headers could not be rewritten.
#[derive(Debug)]
pub enum HeaderError {
    /// A refusing rule matched a value of this header.
    Refused(HeaderName, Refused),
    /// A rewritten value is not a valid header value (names the header, never the value).
    Invalid(HeaderName),
}

/// Rewrites every header value; returns only the names that changed. `sensitive` marks new
/// values as never to be indexed by HTTP/2 HPACK (for values that now hold a secret).
///
/// # Errors
/// See [`HeaderError`].
pub fn rewrite_values(
    headers: &HeaderMap,
    rw: &Rewriter,
    hits: &mut Hits,
    sensitive: bool,
) -> Result<HeaderChanges, HeaderError> {
    rewrite_values_by(headers, |_| rw, hits, sensitive)
}

/// As [`rewrite_values`], with the rewriter of each header chosen by its name.
///
/// # Errors
/// See [`HeaderError`].
pub fn rewrite_values_by<'r>(
    headers: &HeaderMap,
    rewriter_for: impl Fn(&HeaderName) -> &'r Rewriter,
    hits: &mut Hits,
    sensitive: bool,
) -> Result<HeaderChanges, HeaderError> {
    let mut changes = HeaderChanges::new();
    for name in headers.keys() {
        let rw = rewriter_for(name);
        let values = headers.get_all(name);
        let mut changed: Option<Vec<HeaderValue>> = None;
        for (i, v) in values.iter().enumerate() {
            match rw
                .rewrite(v.as_bytes(), hits)
                .map_err(|r| HeaderError::Refused(name.clone(), r))?
            {
                Cow::Borrowed(_) => {
                    if let Some(list) = changed.as_mut() {
                        list.push(v.clone());
                    }
                }
                Cow::Owned(bytes) => {
                    let mut hv = HeaderValue::from_bytes(&bytes)
                        .map_err(|_| HeaderError::Invalid(name.clone()))?;
                    hv.set_sensitive(sensitive);
                    changed
                        .get_or_insert_with(|| values.iter().take(i).cloned().collect())
                        .push(hv);
                }
            }
        }
        if let Some(list) = changed {
            changes.push((name.clone(), list));
        }
    }
    Ok(changes)
}

/// Whether a header name holds a needle of `rw`, in any ASCII case (names cannot be rewritten,
/// and an HTTP/1 name keeps the case it was written in); a match is counted in `hits`.
pub fn name_matches(rw: &Rewriter, name: &HeaderName, hits: &mut Hits) -> bool {
    match rw.find_ignoring_case(name.as_str().as_bytes()) {
        Some(rule) => {
            hits.add(rule);
            true
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::rewrite::{Action, Rule};
    use zeroize::Zeroizing;

    /// regression: names were lower-cased (as `HeaderName` stores them) and then matched
    /// against needles in their own case, so a needle with upper-case letters never matched a
    /// name: a dummy such as `sk-Dummy-X` passed the request guard as a header name, and a real
    /// key with upper-case letters left as a response header name (written in its original
    /// case to an HTTP/1.1 agent).
    #[test]
    fn header_names_match_needles_in_any_case() {
        let rw = Rewriter::new(vec![Rule {
            name: "openai".into(),
            needle: Zeroizing::new(b"sk-Live-7fQ3a9Zc".to_vec()),
            action: Action::Replace(Zeroizing::new(b"sk-dummy-openai".to_vec())),
        }])
        .unwrap();
        let cases: &[(&str, &str, bool)] = &[
            ("as written", "sk-Live-7fQ3a9Zc", true),
            ("lower case", "sk-live-7fq3a9zc", true),
            (
                "upper case, inside a longer name",
                "X-SK-LIVE-7FQ3A9ZC-Y",
                true,
            ),
            ("another key", "sk-live-7fq3a9zd", false),
        ];
        for &(name, header, want) in cases {
            let mut hits = Hits::new();
            let header = HeaderName::from_bytes(header.as_bytes()).unwrap();
            assert_eq!(name_matches(&rw, &header, &mut hits), want, "case {name}");
            assert_eq!(hits.get(0), u64::from(want), "case {name}");
        }
    }
}
