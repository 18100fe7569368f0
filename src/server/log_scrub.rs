//! The process log: env_logger on standard error, behind a filter that every record from
//! another crate passes through before it is written.
//!
//! # Why a filter
//!
//! The gateway's own records (target `slapenir…`) name credentials, never values, and are
//! written as they are. Pingora's records are another matter: they quote peer bytes. Found in
//! Pingora 0.9.1 (`pingora-core`, `pingora-proxy`):
//!
//! | where | what | formatting |
//! |---|---|---|
//! | v1 client, invalid response head (bad status line `HTTP/1.1 2x0 …`, header line without a colon, bad header name byte) | the whole head read so far, in the error context, logged by `Fail to proxy: …` (error level) | `<[u8]>::escape_ascii` |
//! | v1 server, invalid request head | the head (first 1 KiB), in the error context | `escape_ascii`, or `{:?}` of a `BStr` |
//! | v1 body, invalid chunk framing | the body buffer (debug level), the bad bytes (error context) | `{:?}` of `from_utf8_lossy(..).escape_default()`, i.e. escaped twice |
//! | v1 body, partial chunk (trace level) | the chunk buffer | `escape_ascii` |
//! | v1 body, each chunk (trace level) | the body buffer | `{:?}` of `escape_default()`, which prints the `Chars` inside: `['s', 'k', '\'', …]` |
//! | v1 client, every response (debug/trace level) | the parsed head (`{:?}` of the header map: `HeaderValue`'s own escapes) and the raw head | `{:?}` of `&str` |
//! | `request_summary` in every `Fail to proxy` line | the downstream path and `Host` | `from_utf8_lossy` |
//! | debug level, request side | the upstream request head — which holds the *real* value the gateway put in | `{:?}` |
//!
//! So a real value reaches a third-party record written out, or escaped once or twice by
//! Rust's escapes: `\\`, `\"`, `\'`, `\xNN` (upper or lower hex; `HeaderValue` drops a leading
//! zero), `\u{…}`, and `\n`/`\r`/`\t`/`\0`, which a secret never holds. An upstream that
//! helps the agent chooses the bytes, so a real value may come in any of its encoded forms too.
//!
//! # The rule, and why it is enough
//!
//! A third-party record is formatted to text and then:
//! 1. the running policy's response rewriter (`Policy::response`, followed across reloads
//!    through the same `ArcSwap` the proxy uses) turns every real value and each of its
//!    encoded forms (base64, percent, JSON escapes, hex; see [`crate::rewrite::encoded`]) into the same
//!    form of its dummy — exactly what an agent would see of the same bytes;
//! 2. the result is unescaped once and twice by the Rust escapes above, once by
//!    `HeaderValue`'s (which leaves `\` unescaped, so `\t` there is two bytes), and the byte
//!    lists of `{:?}` on a `&[u8]` (`[115, 107, …]`) and the char lists of `{:?}` on a
//!    `Chars` (`['s', 'k', …]`) are read back; if the rewriter finds a real value
//!    in any of these views, the record is withheld: it is replaced by a line that names its
//!    origin and the credentials, since its escaped text cannot be scrubbed in place.
//!
//! Escaping maps each byte of the value to a fixed string whatever its neighbours, so undoing
//! it recovers the value wherever it was written whole; a value cut by lossy UTF-8 decoding
//! (`U+FFFD` in place of bytes) or truncated is not recoverable from the record either. A
//! record whose format string has no arguments holds no peer bytes and is written as it is.
//! Before the first policy exists (startup, before any listener opens) no peer has been
//! talked to, and records pass unchanged.

use std::borrow::Cow;
use std::sync::{Arc, OnceLock};

use arc_swap::ArcSwap;
use log::{Log, Metadata, Record};

use crate::policy::Policy;
use crate::rewrite::{Hits, Rewriter};

/// The policy whose real values are scrubbed from third-party records.
static POLICY: OnceLock<Arc<ArcSwap<Policy>>> = OnceLock::new();

/// Installs the process logger: env_logger configured from `RUST_LOG` (default `info`),
/// writing to standard error, behind the filter described in the module doc. Call once, before
/// anything logs; a second call does nothing.
pub fn init() {
    let inner = env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .target(env_logger::Target::Stderr)
        .build();
    let max = inner.filter();
    if log::set_boxed_logger(Box::new(ScrubbingLogger { inner })).is_ok() {
        log::set_max_level(max);
    }
}

/// From now on, scrubs the real values of whatever policy `policy` holds (the running one,
/// swapped by reloads) from third-party records. The first call wins; later calls do nothing
/// (a process runs one policy cell).
pub fn follow(policy: Arc<ArcSwap<Policy>>) {
    let _ = POLICY.set(policy);
}

/// The filtered text of a third-party record's message, or `None` when it holds no real value
/// and is written unchanged. See the module doc for the rule.
pub fn scrub(rewriter: &Rewriter, message: &str) -> Option<String> {
    let mut hits = Hits::new();
    // The response rewriter only replaces; a refusal would be a bug, and then nothing of the
    // record is written.
    let Ok(rewritten) = rewriter.rewrite(message.as_bytes(), &mut hits) else {
        return Some("[record withheld: it could not be scrubbed]".to_owned());
    };
    let once = unescape(&rewritten, Escapes::Rust);
    let views = [
        unescape(&once, Escapes::Rust),
        unescape(&rewritten, Escapes::HeaderValue),
        unescape(&once, Escapes::HeaderValue),
        byte_lists(&rewritten),
        char_lists(&rewritten),
        once,
    ];
    let mut escaped = Hits::new();
    for view in &views {
        if view.as_slice() != &*rewritten {
            // A match in a view means a real value stood there in escaped form.
            let _ = rewriter.rewrite(view, &mut escaped);
        }
    }
    if !escaped.is_empty() {
        let mut names: Vec<&str> = escaped.iter().map(|(r, _)| rewriter.rule_name(r)).collect();
        names.sort_unstable();
        names.dedup();
        return Some(format!(
            "[record withheld: it held the real value of credential(s) `{}` in an escaped form]",
            names.join("`, `")
        ));
    }
    match rewritten {
        Cow::Borrowed(_) => None,
        Cow::Owned(bytes) => Some(String::from_utf8_lossy(&bytes).into_owned()),
    }
}

/// Which escapes [`unescape`] undoes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Escapes {
    /// Rust's: `{:?}`, `escape_default`, `escape_debug`, `escape_ascii`, and the `Debug` of
    /// `BStr` and `Bytes`.
    Rust,
    /// The `Debug` of `http::HeaderValue`: only `\"` and `\xN`/`\xNN`; a backslash is written
    /// as it is, so `\t` there is a backslash and a `t`.
    HeaderValue,
}

/// Undoes one level of escapes. A backslash that starts no escape is kept.
fn unescape(input: &[u8], escapes: Escapes) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while let Some(&b) = input.get(i) {
        if b != b'\\' {
            out.push(b);
            i += 1;
            continue;
        }
        let rest = input.get(i + 1..).unwrap_or_default();
        let used = match rest.first() {
            Some(b'"') => {
                out.push(b'"');
                1
            }
            Some(b'x') => hex_escape(rest, &mut out),
            _ if escapes == Escapes::HeaderValue => 0,
            Some(&c @ (b'\\' | b'\'')) => {
                out.push(c);
                1
            }
            Some(b'n') => {
                out.push(b'\n');
                1
            }
            Some(b'r') => {
                out.push(b'\r');
                1
            }
            Some(b't') => {
                out.push(b'\t');
                1
            }
            Some(b'0') => {
                out.push(0);
                1
            }
            Some(b'u') => unicode_escape(rest, &mut out),
            _ => 0,
        };
        if used == 0 {
            out.push(b'\\');
        }
        i += 1 + used;
    }
    out
}

/// `x` and one or two hex digits (`HeaderValue` writes `\x{:x}`, without a leading zero).
/// Returns the bytes used after the backslash, 0 when this is no escape.
fn hex_escape(rest: &[u8], out: &mut Vec<u8>) -> usize {
    let digits = rest
        .iter()
        .skip(1)
        .take(2)
        .take_while(|c| c.is_ascii_hexdigit())
        .count();
    let value = rest
        .get(1..1 + digits)
        .and_then(|h| std::str::from_utf8(h).ok())
        .and_then(|h| u8::from_str_radix(h, 16).ok());
    match value {
        Some(v) => {
            out.push(v);
            1 + digits
        }
        None => 0,
    }
}

/// `u{…}` with one to six hex digits, written back as UTF-8. Returns the bytes used after the
/// backslash, 0 when this is no escape.
fn unicode_escape(rest: &[u8], out: &mut Vec<u8>) -> usize {
    if rest.get(1) != Some(&b'{') {
        return 0;
    }
    let Some(close) = rest.iter().take(10).position(|&c| c == b'}') else {
        return 0;
    };
    let ch = rest
        .get(2..close)
        .and_then(|h| std::str::from_utf8(h).ok())
        .and_then(|h| u32::from_str_radix(h, 16).ok())
        .and_then(char::from_u32);
    match ch {
        Some(c) => {
            let mut buf = [0u8; 4];
            out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            close + 1
        }
        None => 0,
    }
}

/// The bytes of every `[n, n, …]` list of numbers up to 255 (`{:?}` of a `&[u8]`), each
/// list followed by a NUL so that two lists do not join into one value.
fn byte_lists(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut i = 0;
    while let Some(start) = input
        .get(i..)
        .and_then(|r| r.iter().position(|&c| c == b'['))
    {
        let from = i + start + 1;
        i = from;
        let Some(len) = input
            .get(from..)
            .and_then(|r| r.iter().position(|&c| c == b']'))
        else {
            break;
        };
        let inner = input.get(from..from + len).unwrap_or_default();
        let parsed: Option<Vec<u8>> = std::str::from_utf8(inner)
            .ok()
            .and_then(|s| s.split(',').map(|n| n.trim().parse::<u8>().ok()).collect());
        if let Some(bytes) = parsed.filter(|b| !b.is_empty()) {
            out.extend_from_slice(&bytes);
            out.push(0);
            i = from + len + 1;
        }
    }
    out
}

/// The characters of every run of char literals separated by `, ` (`'s', 'k', '\\'`): the
/// `Debug` of a `Chars` iterator, which the `Debug` of `str::escape_default` prints. Each run
/// is followed by a NUL.
fn char_lists(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut i = 0;
    let mut in_run = false;
    while i < input.len() {
        match char_literal(input.get(i..).unwrap_or_default()) {
            Some((bytes, used)) => {
                out.extend_from_slice(&bytes);
                in_run = true;
                i += used;
                if input.get(i..).is_some_and(|r| r.starts_with(b", '")) {
                    i += 2;
                    continue;
                }
            }
            None => i += 1,
        }
        if in_run {
            out.push(0);
            in_run = false;
        }
    }
    out
}

/// A char literal at the start of `input` (`'a'`, `'\''`, `'\u{e9}'`, `'é'`): its character
/// as UTF-8 and the bytes it takes.
fn char_literal(input: &[u8]) -> Option<(Vec<u8>, usize)> {
    let body = input.strip_prefix(b"'")?;
    // The longest literal is `'\u{10ffff}'`; a plain character takes up to four bytes.
    let skip = if body.first() == Some(&b'\\') { 2 } else { 1 };
    let close = skip + body.iter().skip(skip).take(10).position(|&c| c == b'\'')?;
    let inner = body.get(..close)?;
    let ch = if inner.first() == Some(&b'\\') {
        let text = unescape(inner, Escapes::Rust);
        (text.as_slice() != inner).then_some(text)?
    } else {
        inner.to_vec()
    };
    let one_char = std::str::from_utf8(&ch).ok()?.chars().count() == 1;
    one_char.then_some((ch, close + 2))
}

/// Whether a record comes from the gateway itself (the library or the binary).
fn is_own(target: &str) -> bool {
    target == "slapenir" || target.starts_with("slapenir::")
}

/// env_logger behind the filter.
struct ScrubbingLogger {
    inner: env_logger::Logger,
}

impl Log for ScrubbingLogger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        self.inner.enabled(metadata)
    }

    fn log(&self, record: &Record<'_>) {
        if !self.inner.matches(record) {
            return;
        }
        // Cheap paths: the gateway's own records, messages without arguments, and the time
        // before the first policy exists.
        let policy = match POLICY.get() {
            Some(p) if !is_own(record.target()) && record.args().as_str().is_none() => p,
            _ => return self.inner.log(record),
        };
        let message = record.args().to_string();
        match scrub(&policy.load().response, &message) {
            None => self.inner.log(record),
            Some(clean) => self.inner.log(
                &Record::builder()
                    .args(format_args!("{clean}"))
                    .metadata(record.metadata().clone())
                    .module_path(record.module_path())
                    .file(record.file())
                    .line(record.line())
                    .build(),
            ),
        }
    }

    fn flush(&self) {
        self.inner.flush();
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::rewrite::{Action, Rule};
    use zeroize::Zeroizing;

    const REAL: &str = "sk-live-q\"u'o\\te-é-0123456789";
    const DUMMY: &str = "sk-dummy-openai-012345";

    fn rewriter() -> Rewriter {
        let mut rules = vec![Rule {
            name: "openai".into(),
            needle: Zeroizing::new(REAL.as_bytes().to_vec()),
            action: Action::Replace(Zeroizing::new(DUMMY.as_bytes().to_vec())),
        }];
        for form in crate::rewrite::encoded::response_forms(REAL.as_bytes(), DUMMY.as_bytes()) {
            rules.push(Rule {
                name: "openai".into(),
                needle: form.needle,
                action: Action::Replace(form.replacement),
            });
        }
        Rewriter::new(rules).unwrap()
    }

    /// Each way a Pingora record formats peer bytes, with the real value inside: the filtered
    /// record holds no form of it.
    #[test]
    fn every_formatting_of_a_real_value_is_scrubbed_or_withheld() {
        let real = REAL.as_bytes();
        let rw = rewriter();
        let header = http::HeaderValue::from_bytes(real).unwrap();
        // (case, record text, withheld: whether the escaped value is beyond the rewriter's
        // forms, so that only withholding the record removes it)
        let cases: Vec<(&str, String, bool)> = vec![
            ("written out", format!("Fail to proxy: {REAL}"), false),
            // `\"` and `\\` are also JSON's escapes, one of the rewriter's forms.
            ("str Debug", format!("{REAL:?}"), false),
            (
                "escape_ascii",
                format!("buf: {}", real.escape_ascii()),
                true,
            ),
            (
                "escape_default, then Debug",
                format!(
                    "{:?}",
                    String::from_utf8_lossy(real).escape_default().to_string()
                ),
                true,
            ),
            ("HeaderValue Debug", format!("{header:?}"), true),
            ("byte slice Debug", format!("{real:?}"), true),
            (
                "escape_default Debug (the chars inside)",
                format!(
                    "chunk: {:?}",
                    String::from_utf8_lossy(real).escape_default()
                ),
                true,
            ),
            (
                "chars Debug",
                format!("{:?}", REAL.chars().collect::<Vec<_>>()),
                true,
            ),
            (
                "base64 (an encoded form the rewriter knows)",
                format!(
                    "x {}",
                    base64::Engine::encode(&base64::engine::general_purpose::STANDARD, real)
                ),
                false,
            ),
        ];
        for (name, message, withheld) in cases {
            let out = scrub(&rw, &message).unwrap_or_else(|| panic!("{name}: passed unchanged"));
            let once = unescape(out.as_bytes(), Escapes::Rust);
            let twice = unescape(&once, Escapes::Rust);
            let header = unescape(out.as_bytes(), Escapes::HeaderValue);
            for view in [out.as_bytes(), &once, &twice, &header] {
                assert!(
                    !view.windows(real.len()).any(|w| w == real),
                    "{name}: {out}"
                );
            }
            assert!(!out.contains("0123456789"), "{name}: {out}");
            assert_eq!(out.contains("withheld"), withheld, "{name}: {out}");
            if withheld {
                assert!(out.contains("`openai`"), "{name}: {out}");
            }
        }
    }

    #[test]
    fn records_without_a_real_value_pass_unchanged() {
        let rw = rewriter();
        for message in [
            "Fail to proxy: Upstream ConnectionClosed context: Peer: addr: 127.0.0.1:1",
            "buf: HTTP/1.1 2x0 OK\\r\\n\\xff\\\\ [1, 2, 300] [a, b] \\u{zz} \\",
            "",
        ] {
            assert_eq!(scrub(&rw, message), None, "{message}");
        }
    }

    #[test]
    fn unescape_cases() {
        let cases: &[(&str, &[u8], &[u8])] = &[
            ("simple", br#"a\\b\"c\'d\n\r\t\0"#, b"a\\b\"c'd\n\r\t\0"),
            (
                "hex two digits, either case",
                br"\x41\xc3\xA9",
                b"A\xc3\xa9",
            ),
            ("hex one digit (HeaderValue)", br"\x9z", b"\x09z"),
            ("unicode", br"\u{e9}\u{1F600}", "é😀".as_bytes()),
            (
                "not escapes",
                br"\q \x \u{} \u{110000} \",
                br"\q \x \u{} \u{110000} \",
            ),
        ];
        for (name, input, want) in cases {
            assert_eq!(unescape(input, Escapes::Rust), *want, "{name}");
        }
        assert_eq!(
            unescape(br#"a\t\"\x9\xc3\\"#, Escapes::HeaderValue),
            b"a\\t\"\x09\xc3\\\\"
        );
        assert_eq!(
            char_lists(br"x ['a', '\'', '\u{e9}', '\\', 'b'] 'c' don't"),
            "a'\u{e9}\\b\0c\0".as_bytes()
        );
        assert_eq!(byte_lists(b"x [104, 105] [7] [a] [256]"), b"hi\0\x07\0");
    }

    #[test]
    fn own_targets() {
        assert!(is_own("slapenir"));
        assert!(is_own("slapenir::proxy"));
        assert!(!is_own("slapenirx"));
        assert!(!is_own("pingora_proxy"));
    }
}
