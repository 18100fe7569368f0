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
    /// A refusing rule matched a value.
    Refused(Refused),
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
    let mut changes = HeaderChanges::new();
    for name in headers.keys() {
        let values = headers.get_all(name);
        let mut changed: Option<Vec<HeaderValue>> = None;
        for (i, v) in values.iter().enumerate() {
            match rw
                .rewrite(v.as_bytes(), hits)
                .map_err(HeaderError::Refused)?
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
