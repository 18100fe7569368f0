//! Retired real values: what keeps an old key scrubbed after it was rotated away.
//!
//! When a reload replaces a credential's real value (rotation) or removes the credential, the
//! old value is usually still valid upstream until the operator revokes it there. An agent that
//! parked it upstream beforehand (in a gist, an object, a chat history) could read it back, and
//! the new policy's response rules would no longer know it. So a reload *retires* every real
//! value that the old policy held and the new configuration does not: the new policy keeps
//! scrubbing it (and all its encoded forms) into the dummy of the credential it belonged to, for
//! `rotation.retired_grace` (default 24 hours; `0s` drops it at once). When the grace ends the
//! reload watcher compiles the same configuration without it and swaps that in; the value is
//! zeroized when the last policy holding it is dropped (it is an `Arc<Secret>`).
//!
//! A value that the new configuration still holds, under any credential, is never retired:
//! it is live. Nothing here prints a value; log lines and the reload plan name credentials.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crate::config::Config;
use crate::policy::{self, Policy};
use crate::secret::Secret;

/// A real value that a reload retired, kept in the response rules until `until`.
pub struct Retired {
    /// The name of the credential the value belonged to (metrics, audit and log lines).
    pub credential: String,
    /// The dummy of that credential: the value is scrubbed into it.
    pub dummy: Vec<u8>,
    /// The value, shared with the policies that held it (zeroized when the last one goes).
    pub value: Arc<Secret>,
    /// When it leaves the response rules.
    pub until: Instant,
}

impl fmt::Debug for Retired {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Retired")
            .field("credential", &self.credential)
            .field("value", &"[REDACTED]")
            .field("until", &self.until)
            .finish()
    }
}

impl Clone for Retired {
    /// Shares the value (`Arc`); the dummy is not a secret.
    fn clone(&self) -> Self {
        Retired {
            credential: self.credential.clone(),
            dummy: self.dummy.clone(),
            value: Arc::clone(&self.value),
            until: self.until,
        }
    }
}

/// The longest grace applied; a longer one means the same: until the process restarts.
const CENTURY: Duration = Duration::from_secs(100 * 365 * 24 * 60 * 60);

/// The retired list of a policy compiled from `new` to replace `old`, at `now`: `old`'s retired
/// values whose grace has not ended (cut to `new`'s grace if that is shorter), then every real
/// value of `old` that `new` no longer holds, with `until = now + grace`.
pub fn retire(old: &Policy, new: &Config, now: Instant) -> Vec<Retired> {
    let live: Vec<&Arc<Secret>> = policy::real_values(new).map(|(_, _, v)| v).collect();
    retire_values(
        old.real_values(),
        &old.retired,
        |value| live.iter().any(|l| l.ct_eq(value)),
        new.rotation.retired_grace,
        now,
    )
}

/// [`retire`] on plain parts: `old_live` are the old policy's real values (credential name,
/// dummy, value), `old_retired` its retired list, `is_live` says whether the new configuration
/// holds a value.
pub fn retire_values<'a>(
    old_live: impl Iterator<Item = (&'a str, &'a [u8], &'a Arc<Secret>)>,
    old_retired: &[Retired],
    is_live: impl Fn(&[u8]) -> bool,
    grace: Duration,
    now: Instant,
) -> Vec<Retired> {
    // A grace of a century is "until the restart"; capping it keeps `now + grace` in range.
    let limit = now.checked_add(grace.min(CENTURY)).unwrap_or(now);
    let mut out: Vec<Retired> = Vec::new();
    let keep = |r: Retired, out: &mut Vec<Retired>| {
        let held = out.iter().any(|o| o.value.ct_eq(r.value.expose()));
        if r.until > now && !held && !is_live(r.value.expose()) {
            out.push(r);
        }
    };
    for r in old_retired {
        let mut r = r.clone();
        r.until = r.until.min(limit);
        keep(r, &mut out);
    }
    for (credential, dummy, value) in old_live {
        let r = Retired {
            credential: credential.to_owned(),
            dummy: dummy.to_vec(),
            value: Arc::clone(value),
            until: limit,
        };
        keep(r, &mut out);
    }
    out
}

/// What a new policy changes in retirement against the old one, by credential name.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Changes {
    /// Values retired now, with the end of their grace.
    pub retired: Vec<(String, Instant)>,
    /// Values no longer kept: a retired value whose grace ended, was cut, or that is live
    /// again, and a value retired with a zero grace.
    pub dropped: Vec<String>,
}

impl Changes {
    /// What replacing `old` by `new` changes.
    pub fn between(old: &Policy, new: &Policy) -> Changes {
        changes(
            old.real_values(),
            &old.retired,
            |v| new.real_values().any(|(_, _, l)| l.ct_eq(v)),
            &new.retired,
        )
    }

    /// Whether nothing changes.
    pub fn is_empty(&self) -> bool {
        self.retired.is_empty() && self.dropped.is_empty()
    }
}

/// [`Changes::between`] on plain parts, as [`retire_values`] takes them; `new_retired` is the
/// new policy's retired list. An entry is the same when it holds the same `Arc`.
pub fn changes<'a>(
    old_live: impl Iterator<Item = (&'a str, &'a [u8], &'a Arc<Secret>)>,
    old_retired: &[Retired],
    is_live: impl Fn(&[u8]) -> bool,
    new_retired: &[Retired],
) -> Changes {
    let held = |list: &[Retired], v: &Arc<Secret>| list.iter().any(|o| Arc::ptr_eq(&o.value, v));
    let mut dropped: Vec<String> = old_retired
        .iter()
        .filter(|r| !held(new_retired, &r.value))
        .map(|r| r.credential.clone())
        .collect();
    for (name, _, value) in old_live {
        if !is_live(value.expose()) && !held(new_retired, value) {
            dropped.push(name.to_owned());
        }
    }
    Changes {
        retired: new_retired
            .iter()
            .filter(|r| !held(old_retired, &r.value))
            .map(|r| (r.credential.clone(), r.until))
            .collect(),
        dropped,
    }
}

/// `until` as a wall-clock time for log lines (`2026-12-06T10:00:00Z`).
pub fn wall_clock(until: Instant, now: Instant) -> String {
    let at = SystemTime::now() + until.saturating_duration_since(now);
    humantime::format_rfc3339_seconds(at).to_string()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::type_complexity)]
    use super::*;

    fn secret(v: &str) -> Arc<Secret> {
        Arc::new(Secret::new(v.as_bytes().to_vec()))
    }

    /// One case: the old policy's live values (name, value), its retired values (name, value,
    /// seconds left), the new configuration's live values, the grace in seconds, and the
    /// expected list (name, value, seconds left).
    struct Case {
        name: &'static str,
        old_live: &'static [(&'static str, &'static str)],
        old_retired: &'static [(&'static str, &'static str, u64)],
        new_live: &'static [&'static str],
        grace: u64,
        want: &'static [(&'static str, &'static str, u64)],
    }

    #[test]
    fn retired_lists() {
        let cases = [
            Case {
                name: "nothing changed",
                old_live: &[("a", "real-a-1"), ("b", "real-b-1")],
                old_retired: &[],
                new_live: &["real-a-1", "real-b-1"],
                grace: 100,
                want: &[],
            },
            Case {
                name: "rotated",
                old_live: &[("a", "real-a-1"), ("b", "real-b-1")],
                old_retired: &[],
                new_live: &["real-a-2", "real-b-1"],
                grace: 100,
                want: &[("a", "real-a-1", 100)],
            },
            Case {
                name: "credential removed",
                old_live: &[("a", "real-a-1"), ("b", "real-b-1")],
                old_retired: &[],
                new_live: &["real-a-1"],
                grace: 100,
                want: &[("b", "real-b-1", 100)],
            },
            Case {
                name: "value moved to another credential is live, not retired",
                old_live: &[("a", "real-a-1")],
                old_retired: &[],
                new_live: &["real-b-9", "real-a-1"],
                grace: 100,
                want: &[],
            },
            Case {
                name: "zero grace retires nothing and drops what was retired",
                old_live: &[("a", "real-a-2")],
                old_retired: &[("a", "real-a-1", 50)],
                new_live: &["real-a-3"],
                grace: 0,
                want: &[],
            },
            Case {
                name: "earlier retirements are kept with their own end",
                old_live: &[("a", "real-a-2")],
                old_retired: &[("a", "real-a-1", 50)],
                new_live: &["real-a-3"],
                grace: 100,
                want: &[("a", "real-a-1", 50), ("a", "real-a-2", 100)],
            },
            Case {
                name: "a shorter grace cuts earlier retirements",
                old_live: &[("a", "real-a-2")],
                old_retired: &[("a", "real-a-1", 50)],
                new_live: &["real-a-2"],
                grace: 10,
                want: &[("a", "real-a-1", 10)],
            },
            Case {
                name: "expired retirements are dropped",
                old_live: &[("a", "real-a-2")],
                old_retired: &[("a", "real-a-1", 0)],
                new_live: &["real-a-2"],
                grace: 100,
                want: &[],
            },
            Case {
                name: "a retired value that is live again is no longer retired",
                old_live: &[("a", "real-a-2")],
                old_retired: &[("a", "real-a-1", 50)],
                new_live: &["real-a-1"],
                grace: 100,
                want: &[("a", "real-a-2", 100)],
            },
            Case {
                name: "a value retired twice is kept once",
                old_live: &[("b", "real-x")],
                old_retired: &[("a", "real-x", 50)],
                new_live: &[],
                grace: 100,
                want: &[("a", "real-x", 50)],
            },
        ];
        let now = Instant::now();
        for case in cases {
            let live: Vec<(String, Vec<u8>, Arc<Secret>)> = case
                .old_live
                .iter()
                .map(|(n, v)| (n.to_string(), format!("dummy-{n}").into_bytes(), secret(v)))
                .collect();
            let retired: Vec<Retired> = case
                .old_retired
                .iter()
                .map(|(n, v, left)| Retired {
                    credential: n.to_string(),
                    dummy: format!("dummy-{n}").into_bytes(),
                    value: secret(v),
                    until: now + Duration::from_secs(*left),
                })
                .collect();
            let got = retire_values(
                live.iter().map(|(n, d, v)| (n.as_str(), d.as_slice(), v)),
                &retired,
                |v| case.new_live.iter().any(|l| l.as_bytes() == v),
                Duration::from_secs(case.grace),
                now,
            );
            let got: Vec<(String, Vec<u8>, u64)> = got
                .iter()
                .map(|r| {
                    assert_eq!(r.dummy, format!("dummy-{}", r.credential).into_bytes());
                    (
                        r.credential.clone(),
                        r.value.expose().to_vec(),
                        (r.until - now).as_secs(),
                    )
                })
                .collect();
            let want: Vec<(String, Vec<u8>, u64)> = case
                .want
                .iter()
                .map(|(n, v, left)| (n.to_string(), v.as_bytes().to_vec(), *left))
                .collect();
            assert_eq!(got, want, "case {}", case.name);
        }
    }

    #[test]
    fn changes_name_credentials_and_debug_hides_values() {
        let now = Instant::now();
        let entry = |n: &str, v: &Arc<Secret>| Retired {
            credential: n.into(),
            dummy: b"dummy-value".to_vec(),
            value: Arc::clone(v),
            until: now,
        };
        let (one, two, three) = (secret("real-one-1"), secret("real-two-2"), secret("real-3"));
        let dummy = b"dummy-value".to_vec();
        // (case, old live, old retired, new live, new retired, retired now, dropped)
        let cases: Vec<(
            &str,
            Vec<(&str, &Arc<Secret>)>,
            Vec<Retired>,
            Vec<&str>,
            Vec<Retired>,
            Vec<&str>,
            Vec<&str>,
        )> = vec![
            (
                "no change",
                vec![("c", &three)],
                vec![entry("a", &one)],
                vec!["real-3"],
                vec![entry("a", &one)],
                vec![],
                vec![],
            ),
            (
                "rotated",
                vec![("c", &three)],
                vec![],
                vec!["real-4"],
                vec![entry("c", &three)],
                vec!["c"],
                vec![],
            ),
            (
                "rotated, zero grace",
                vec![("c", &three)],
                vec![],
                vec!["real-4"],
                vec![],
                vec![],
                vec!["c"],
            ),
            (
                "grace ended",
                vec![],
                vec![entry("a", &one)],
                vec![],
                vec![],
                vec![],
                vec!["a"],
            ),
            (
                "one kept, one new",
                vec![("b", &two)],
                vec![entry("a", &one)],
                vec![],
                vec![entry("a", &one), entry("b", &two)],
                vec!["b"],
                vec![],
            ),
        ];
        for (name, old_live, old_retired, new_live, new_retired, want_retired, want_dropped) in
            cases
        {
            let c = changes(
                old_live.iter().map(|(n, v)| (*n, dummy.as_slice(), *v)),
                &old_retired,
                |v| new_live.iter().any(|l| l.as_bytes() == v),
                &new_retired,
            );
            let retired: Vec<&str> = c.retired.iter().map(|(n, _)| n.as_str()).collect();
            assert_eq!(retired, want_retired, "case {name}");
            assert_eq!(c.dropped, want_dropped, "case {name}");
        }
        let shown = format!("{:?}", entry("b", &two));
        assert!(
            !shown.contains("real-two-2") && shown.contains("REDACTED"),
            "{shown}"
        );
    }

    /// Through `Policy`: a rotated value and a removed credential's value are scrubbed into
    /// their dummies (literal and encoded), named after their credentials, and a zero grace
    /// keeps nothing.
    #[test]
    fn a_compiled_policy_scrubs_retired_values() {
        use crate::rewrite::Hits;
        let dir = tempfile::tempdir().unwrap();
        let config = |keys: &[(&str, &str)], grace: &str| {
            let mut text = format!(
                "listeners:\n  - name: l\n    address: 127.0.0.1:1\n\
                 upstreams:\n  u:\n    url: http://127.0.0.1:1\n\
                 rotation:\n  retired_grace: {grace}\ncredentials:\n"
            );
            for (name, value) in keys {
                let file = dir.path().join(name);
                std::fs::write(&file, value).unwrap();
                text.push_str(&format!(
                    "  {name}:\n    dummy: dummy-{name}-0000\n    real: {{ file: {} }}\n    upstreams: [u]\n",
                    file.display()
                ));
            }
            Config::from_source(&text, "test.yaml", std::path::Path::new("."))
                .unwrap()
                .config
        };
        let now = Instant::now();
        let old = Policy::compile(config(
            &[("a", "real-a-11111"), ("b", "real-b-11111")],
            "1h",
        ))
        .unwrap();
        let new_config = config(&[("a", "real-a-22222")], "1h");
        let list = retire(&old, &new_config, now);
        let names: Vec<&str> = list.iter().map(|r| r.credential.as_str()).collect();
        assert_eq!(names, ["a", "b"]);
        let new = Policy::compile_with_retired(new_config, list).unwrap();
        let changes = Changes::between(&old, &new);
        assert_eq!(changes.retired.len(), 2);
        assert!(changes.dropped.is_empty());
        let cases: &[(&str, String, &str, &str)] = &[
            (
                "live value",
                "x real-a-22222 x".into(),
                "x dummy-a-0000 x",
                "a",
            ),
            (
                "rotated value",
                "x real-a-11111 x".into(),
                "x dummy-a-0000 x",
                "a",
            ),
            (
                "removed credential",
                "x real-b-11111 x".into(),
                "x dummy-b-0000 x",
                "b",
            ),
            (
                "rotated value in base64",
                format!("x {} x", base64_of(b"real-a-11111")),
                &format!("x {} x", base64_of(b"dummy-a-0000")),
                "a",
            ),
        ];
        for (name, input, want, credential) in cases {
            let mut hits = Hits::new();
            let out = new.response.rewrite(input.as_bytes(), &mut hits).unwrap();
            assert_eq!(String::from_utf8_lossy(&out), *want, "case {name}");
            let (rule, _) = hits.iter().next().unwrap();
            assert_eq!(
                new.response_credential_name(rule),
                Some(*credential),
                "case {name}"
            );
        }
        // A retired value handed back with a live one equal to it is dropped from the list.
        let back = config(&[("a", "real-a-11111")], "1h");
        let kept = Policy::compile_with_retired(back, new.retired.clone()).unwrap();
        let names: Vec<&str> = kept.retired.iter().map(|r| r.credential.as_str()).collect();
        assert_eq!(names, ["b"]);
        // A zero grace: nothing is retired, the old values pass through unchanged.
        let zero = config(&[("a", "real-a-22222")], "0s");
        let list = retire(&new, &zero, Instant::now());
        assert!(list.is_empty());
        let dropped = Policy::compile_with_retired(zero, list).unwrap();
        let changes = Changes::between(&new, &dropped);
        assert_eq!(changes.dropped, ["a", "b"]);
        let mut hits = Hits::new();
        let out = dropped
            .response
            .rewrite(b"real-a-11111", &mut hits)
            .unwrap();
        assert_eq!(&*out, b"real-a-11111");
    }

    fn base64_of(v: &[u8]) -> String {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(v)
    }
}
