//! Least privilege per credential: where its dummy is swapped (`swap_in:`) and for which
//! requests (`allow:`), checked into typed values. Each function returns what it could build and
//! the problems it found, each at its YAML path, for `validate` to report with a location.

use super::raw::{RawAllow, RawSwapIn};
use super::{AllowRule, PathPattern, SwapIn, Upstream, YamlPath};

/// A problem at a place in the file.
pub type Problems = Vec<(YamlPath, String)>;

/// Headers a dummy is never swapped into: the gateway's own (`proxy-authorization` is never
/// forwarded) and those that frame or route the request.
const NOT_SWAPPABLE: &[&str] = &[
    "proxy-authorization",
    "host",
    "connection",
    "keep-alive",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "content-length",
    "content-type",
];

/// `swap_in:` of credential at `p` (`None`: the default for the credential's kind).
pub fn swap_in(raw: Option<RawSwapIn>, p: &YamlPath, aws: bool, problems: &mut Problems) -> SwapIn {
    let p = p.key("swap_in");
    if aws {
        if raw.is_some() {
            problems.push((
                p,
                "an `aws` credential is swapped by signing the request again (docs/aws.md): \
                 its key id goes in `Authorization` and presigned URLs, its session token in \
                 `X-Amz-Security-Token`; `swap_in` does not apply"
                    .into(),
            ));
        }
        return SwapIn {
            headers: vec![
                http::header::AUTHORIZATION,
                http::HeaderName::from_static("x-amz-security-token"),
            ],
            basic: false,
            query: vec!["X-Amz-Credential".into(), "X-Amz-Security-Token".into()],
            path: false,
            body: Vec::new(),
            websocket: false,
        };
    }
    let default = SwapIn::authorization();
    let Some(raw) = raw else { return default };
    let headers = match raw.headers {
        None => default.headers,
        Some(list) => {
            let mut out: Vec<http::HeaderName> = Vec::new();
            for (i, name) in list.iter().enumerate() {
                let at = p.key("headers").index(i);
                let lower = name.trim().to_ascii_lowercase();
                match http::HeaderName::from_bytes(lower.as_bytes()) {
                    Err(_) => problems.push((at, format!("`{name}` is not a header name"))),
                    Ok(_) if NOT_SWAPPABLE.contains(&lower.as_str()) => problems.push((
                        at,
                        format!(
                            "a dummy is never swapped into `{lower}`: {}",
                            if lower == "proxy-authorization" {
                                "it authenticates to the gateway and is never forwarded"
                            } else {
                                "it frames or routes the request"
                            }
                        ),
                    )),
                    Ok(h) if out.contains(&h) => {
                        problems.push((at, format!("header `{lower}` is listed twice")))
                    }
                    Ok(h) => out.push(h),
                }
            }
            out
        }
    };
    let query = names(raw.query, &p.key("query"), "query parameter", problems);
    let mut body = Vec::new();
    for (i, ty) in raw.body.unwrap_or_default().iter().enumerate() {
        let lower = ty.trim().to_ascii_lowercase();
        let token = |s: &str| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&b))
        };
        let ok = match lower.split_once('/') {
            Some(("*", "*")) => true,
            Some((t, "*")) => token(t),
            Some((t, s)) => token(t) && token(s),
            None => false,
        };
        if ok {
            body.push(lower);
        } else {
            problems.push((
                p.key("body").index(i),
                format!("`{ty}` is not a media type; use `type/subtype`, `type/*` or `*/*` (no parameters)"),
            ));
        }
    }
    SwapIn {
        headers,
        basic: raw.basic.unwrap_or(true),
        query,
        path: raw.path.unwrap_or(false),
        body,
        websocket: raw.websocket.unwrap_or(false),
    }
}

/// Non-empty, unique names from a list (`None`: empty).
fn names(
    raw: Option<Vec<String>>,
    p: &YamlPath,
    what: &str,
    problems: &mut Problems,
) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for (i, n) in raw.unwrap_or_default().into_iter().enumerate() {
        let bad = n.is_empty()
            || n.bytes()
                .any(|b| !b.is_ascii_graphic() || b"&=#?".contains(&b));
        if bad {
            problems.push((
                p.index(i),
                format!(
                    "`{n}` is not a {what} name (printable, without spaces, `&`, `=`, `#` or `?`)"
                ),
            ));
        } else if out.contains(&n) {
            problems.push((p.index(i), format!("{what} `{n}` is listed twice")));
        } else {
            out.push(n);
        }
    }
    out
}

/// `allow:` of credential at `p`.
pub fn allow(
    raw: Option<Vec<RawAllow>>,
    p: &YamlPath,
    aws: bool,
    problems: &mut Problems,
) -> Option<Vec<AllowRule>> {
    let raw = raw?;
    let p = p.key("allow");
    if aws {
        problems.push((
            p,
            "`allow` is not supported on `aws` credentials; use IAM policies for the real key"
                .into(),
        ));
        return None;
    }
    if raw.is_empty() {
        problems.push((
            p,
            "an empty `allow` list would refuse every use of the credential; remove the key to allow all".into(),
        ));
        return None;
    }
    let mut rules = Vec::new();
    for (i, item) in raw.into_iter().enumerate() {
        let at = p.index(i);
        let mut methods = Vec::new();
        for (j, m) in item.methods.unwrap_or_default().iter().enumerate() {
            let upper = m.trim().to_ascii_uppercase();
            if http::Method::from_bytes(upper.as_bytes()).is_ok() && !upper.is_empty() {
                methods.push(upper);
            } else {
                problems.push((
                    at.key("methods").index(j),
                    format!("`{m}` is not an HTTP method"),
                ));
            }
        }
        let mut paths = Vec::new();
        for (j, pat) in item.paths.unwrap_or_default().iter().enumerate() {
            match PathPattern::parse(pat) {
                Ok(pp) => paths.push(pp),
                Err(msg) => problems.push((at.key("paths").index(j), msg)),
            }
        }
        let query = item
            .query
            .map(|q| names(Some(q), &at.key("query"), "query parameter", problems));
        rules.push(AllowRule {
            methods,
            paths,
            query,
        });
    }
    Some(rules)
}

/// Host names of APIs that run language models: a key swapped into a body they read can be
/// echoed back transformed (reversed, spaced, translated) where no scrubber can find it.
const LLM_HOSTS: &[&str] = &[
    "openai",
    "anthropic",
    "generativelanguage.googleapis.com",
    "aiplatform.googleapis.com",
    "mistral",
    "cohere",
    "groq",
    "together",
    "deepseek",
    "perplexity",
    "x.ai",
    "fireworks",
    "openrouter",
    "huggingface",
    "replicate",
    "ollama",
];

/// Whether `upstream` looks like a language-model API, by its name or host.
pub fn looks_like_llm(upstream: &Upstream) -> bool {
    let name = upstream.name.to_ascii_lowercase();
    LLM_HOSTS
        .iter()
        .any(|h| upstream.host.contains(h) || name.contains(h))
        || ["llm", "gpt", "claude", "gemini"]
            .iter()
            .any(|w| name.contains(w))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn path_patterns() {
        let cases: &[(&str, &str, bool)] = &[
            ("/repos/acme/*", "/repos/acme/widgets", true),
            ("/repos/acme/*", "/repos/acme/widgets/issues", false),
            ("/repos/acme/*", "/repos/other/widgets", false),
            ("/repos/acme/*", "/repos/acme/w%2Fissues", false),
            ("/repos/acme/*", "/repos/acme/w%5cissues", false),
            ("/repos/acme/*/issues", "/repos/acme/widgets/issues", true),
            ("/repos/acme/*/issues", "/repos/acme/widgets/pulls", false),
            ("/repos/acme/**", "/repos/acme/widgets/issues/3", true),
            ("/repos/acme/**", "/repos/acme", false),
            ("/repos/acme/**", "/repos/acme/", false),
            ("/repos/acme/**", "/repos/acmex/y", false),
            ("/repos/*/**", "/repos/a/b", true),
            ("/v1/chat/completions", "/v1/chat/completions", true),
            ("/v1/chat/completions", "/v1/chat/completions/x", false),
            ("/v1/*.json", "/v1/a.json", true),
            ("/v1/*.json", "/v1/a/b.json", false),
            ("/**", "/anything/at/all", true),
        ];
        for (pat, path, want) in cases {
            let p = PathPattern::parse(pat).unwrap();
            assert_eq!(p.matches(path.as_bytes()), *want, "{pat} vs {path}");
        }
    }

    #[test]
    fn bad_path_patterns() {
        for bad in ["repos/*", "/a/**/b", "/a/x**", "/a/../b", "/a b", "/a?x=1"] {
            assert!(PathPattern::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn allow_rules_match_method_path_and_query() {
        let rule = AllowRule {
            methods: vec!["GET".into()],
            paths: vec![PathPattern::parse("/repos/acme/*").unwrap()],
            query: Some(vec!["page".into()]),
        };
        let cases: &[(&str, &str, &str, bool)] = &[
            ("GET", "/repos/acme/w", "", true),
            ("GET", "/repos/acme/w", "page=2", true),
            ("GET", "/repos/acme/w", "page=2&&page", true),
            ("GET", "/repos/acme/w", "page=2&token=x", false),
            ("POST", "/repos/acme/w", "", false),
            ("GET", "/repos/evil/w", "", false),
        ];
        for (m, path, q, want) in cases {
            assert_eq!(
                rule.matches(m, path.as_bytes(), q.as_bytes()),
                *want,
                "{m} {path} {q:?}"
            );
        }
    }
}
