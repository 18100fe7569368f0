//! Credentials inside encodings.
//!
//! A plain byte search sees a secret only where it is written out literally. Two places hide it:
//!
//! - **Requests**: HTTP Basic auth (`Authorization: Basic base64(user:password)`), which `git`,
//!   `pip`/`uv` and any client with URL user info send. [`rewrite_basic`] decodes the value,
//!   runs the upstream's request rules over `user:password` (so a dummy bound elsewhere is
//!   refused like anywhere else) and encodes the result again.
//! - **Responses**: upstreams echo what they received in other encodings. [`response_forms`]
//!   lists, for one real value, the needles to scrub besides the literal and what each becomes:
//!   the same encoding of the dummy.
//!
//! The encoded forms of a real value (each replaced by the same form of the dummy):
//!
//! | form | example for `a/b+c"` |
//! |---|---|
//! | standard base64, at each of the three byte alignments | `YS9iK2Mi` and the inner characters at offsets 1 and 2 |
//! | URL-safe base64, the same three | `YS9iK2Mi` with `-` and `_` |
//! | percent-encoding of reserved bytes, upper and lower hex | `a%2Fb%2Bc%22` |
//! | percent-encoding of every byte, upper and lower hex | `%61%2F%62...` |
//! | JSON string escapes: required only, and with `\/` | `a/b+c\"`, `a\/b+c\"` |
//! | JSON `\u00XX` for every byte, and for every non-alphanumeric byte, lower and upper hex | `\u0061\u002f...` |
//! | percent-encoding keeping `/` (Python's `quote`), what `encodeURI` keeps, what `encodeURIComponent` keeps; each with upper and lower hex | `a/b%2Bc%22` |
//! | percent-encoding applied twice | `a%252Fb%252Bc%2522` |
//! | HTML character references: decimal, hex (both cases) for every non-alphanumeric byte; `&quot;`-style | `a&#47;b&#43;c&#34;` |
//! | hex, lower and upper case, and with a space between bytes | `612f622b...`, `61 2f 62 2b ...` |
//! | standard base64 wrapped at 64 or 76 columns with `\n` or `\r\n`, for each alignment and each column a break can fall at inside the value | `YS9i\nK2Mi` |
//!
//! Base64 inside a longer blob: the secret can start at any byte offset, so its characters
//! depend on the offset modulo 3. Each alignment's needle holds only the characters whose six
//! bits come from the secret alone; the one or two characters at each edge also carry bits of
//! the neighbouring bytes, so they stay. After the swap the blob no longer decodes to anything
//! that contains the real value (the edge characters keep at most 4 bits of its first and last
//! byte), and the bytes after it may decode shifted when the dummy's length differs.
//!
//! Each form carries its public [`Shape`], which decides what a response stream holds back
//! (see `rewrite::Shape`): a hold-back that depends on the value's bytes would tell an agent,
//! by timing, which guesses of the value are right.

use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use zeroize::Zeroizing;

use crate::rewrite::{Hits, Refused, Rewriter, Shape};

/// Encoded forms shorter than this are not scrubbed: they would match ordinary text by chance.
/// The literal value is always scrubbed.
pub const MIN_FORM_LEN: usize = 8;

/// One encoded form: the needle (an encoding of the real value) and its replacement (the same
/// encoding of the dummy). Both are zeroized on drop.
pub struct Form {
    /// A short name of the encoding, for tests and documentation (never a value).
    pub encoding: &'static str,
    pub needle: Zeroizing<Vec<u8>>,
    pub replacement: Zeroizing<Vec<u8>>,
    /// The needle's public shape, for the response stream's hold-back (see [`Shape`]).
    pub shape: Shape,
}

/// Line widths of wrapped base64: PEM (RFC 7468) and MIME (RFC 2045, also Python's
/// `base64.encodebytes`).
pub const WRAP_WIDTHS: [usize; 2] = [64, 76];

/// The encoded forms of `real` to scrub from responses (without the literal itself), each with
/// the same encoding of `dummy`. Forms equal to the literal, to an earlier form, or shorter
/// than [`MIN_FORM_LEN`] are left out.
pub fn response_forms(real: &[u8], dummy: &[u8]) -> Vec<Form> {
    type Encode = fn(&[u8]) -> Zeroizing<Vec<u8>>;
    let encodings: [(&'static str, Encode); 31] = [
        ("base64", |v| base64_inner(v, 0, false)),
        ("base64+1", |v| base64_inner(v, 1, false)),
        ("base64+2", |v| base64_inner(v, 2, false)),
        ("base64url", |v| base64_inner(v, 0, true)),
        ("base64url+1", |v| base64_inner(v, 1, true)),
        ("base64url+2", |v| base64_inner(v, 2, true)),
        ("percent", |v| percent(v, UNRESERVED, UPPER)),
        ("percent-lower", |v| percent(v, UNRESERVED, LOWER)),
        ("percent-all", |v| percent(v, b"", UPPER)),
        ("percent-all-lower", |v| percent(v, b"", LOWER)),
        ("percent-keep-slash", |v| percent(v, KEEP_SLASH, UPPER)),
        ("percent-keep-slash-lower", |v| {
            percent(v, KEEP_SLASH, LOWER)
        }),
        ("percent-uri", |v| percent(v, ENCODE_URI, UPPER)),
        ("percent-uri-lower", |v| percent(v, ENCODE_URI, LOWER)),
        ("percent-component", |v| {
            percent(v, ENCODE_URI_COMPONENT, UPPER)
        }),
        ("percent-component-lower", |v| {
            percent(v, ENCODE_URI_COMPONENT, LOWER)
        }),
        ("percent-twice", |v| {
            percent(&percent(v, UNRESERVED, UPPER), UNRESERVED, UPPER)
        }),
        ("json", |v| json(v, false, Unicode::ControlOnly)),
        ("json-slash", |v| json(v, true, Unicode::ControlOnly)),
        ("json-u-all", |v| json(v, false, Unicode::All(LOWER))),
        ("json-u-all-upper", |v| json(v, false, Unicode::All(UPPER))),
        ("json-u-punct", |v| json(v, false, Unicode::NonAlnum(LOWER))),
        ("json-u-punct-upper", |v| {
            json(v, false, Unicode::NonAlnum(UPPER))
        }),
        ("html-dec", |v| html(v, Entity::Decimal)),
        ("html-hex", |v| html(v, Entity::Hex(LOWER))),
        ("html-hex-upper", |v| html(v, Entity::Hex(UPPER))),
        ("html-escape", |v| html(v, Entity::Minimal)),
        ("hex", |v| hex(v, LOWER, false)),
        ("hex-upper", |v| hex(v, UPPER, false)),
        ("hex-spaced", |v| hex(v, LOWER, true)),
        ("hex-spaced-upper", |v| hex(v, UPPER, true)),
    ];
    let mut forms: Vec<Form> = Vec::new();
    let add = |forms: &mut Vec<Form>, form: Form| {
        if form.needle.len() >= MIN_FORM_LEN
            && form.needle.as_slice() != real
            && !forms.iter().any(|f| f.needle == form.needle)
        {
            forms.push(form);
        }
    };
    for (encoding, encode) in encodings {
        let shape = if encoding.starts_with("hex-spaced") {
            Shape::HexSpaced
        } else {
            Shape::Token
        };
        add(
            &mut forms,
            Form {
                encoding,
                needle: encode(real),
                replacement: encode(dummy),
                shape,
            },
        );
    }
    // Line-wrapped base64 (standard alphabet): the value's characters can start at any column,
    // so one needle per column at which a line break falls inside them.
    for align in 0..3 {
        let inner = base64_inner(real, align, false);
        let inner_dummy = base64_inner(dummy, align, false);
        for width in WRAP_WIDTHS {
            for crlf in [false, true] {
                for column in 0..width {
                    let Some(needle) = wrap(&inner, column, width, crlf) else {
                        continue;
                    };
                    let replacement = wrap(&inner_dummy, column, width, crlf)
                        .unwrap_or_else(|| inner_dummy.clone());
                    add(
                        &mut forms,
                        Form {
                            encoding: "base64-wrapped",
                            needle,
                            replacement,
                            shape: Shape::Wrapped { width, crlf },
                        },
                    );
                }
            }
        }
    }
    forms
}

/// `chars` with a line break before each character that falls at the start of a line, when the
/// first character stands at `column` of a line `width` wide; `None` when no break falls inside.
fn wrap(chars: &[u8], column: usize, width: usize, crlf: bool) -> Option<Zeroizing<Vec<u8>>> {
    let breaks = (1..chars.len())
        .filter(|i| (column + i).is_multiple_of(width))
        .count();
    if breaks == 0 {
        return None;
    }
    let mut out = Zeroizing::new(Vec::with_capacity(chars.len() + 2 * breaks));
    for (i, &c) in chars.iter().enumerate() {
        if i > 0 && (column + i).is_multiple_of(width) {
            if crlf {
                out.push(b'\r');
            }
            out.push(b'\n');
        }
        out.push(c);
    }
    Some(out)
}

/// Bytes RFC 3986 never needs to encode.
const UNRESERVED: &[u8] = b"-._~";
/// What Python's `urllib.parse.quote` keeps by default besides the unreserved bytes.
const KEEP_SLASH: &[u8] = b"-._~/";
/// What JavaScript's `encodeURI` keeps besides letters and digits.
const ENCODE_URI: &[u8] = b"-._~;,/?:@&=+$!*'()#";
/// What JavaScript's `encodeURIComponent` keeps besides letters and digits.
const ENCODE_URI_COMPONENT: &[u8] = b"-._~!*'()";

/// Which bytes an HTML encoder writes as character references.
#[derive(Clone, Copy)]
enum Entity {
    /// `&amp; &lt; &gt; &quot; &#39;`, what template engines escape.
    Minimal,
    /// `&#NN;` for every ASCII byte that is not a letter or digit.
    Decimal,
    /// `&#xNN;` for every ASCII byte that is not a letter or digit.
    Hex(&'static [u8; 16]),
}

fn html(value: &[u8], entity: Entity) -> Zeroizing<Vec<u8>> {
    let mut out = Zeroizing::new(Vec::with_capacity(value.len() * 6));
    for &b in value {
        let plain = b.is_ascii_alphanumeric() || !b.is_ascii();
        match entity {
            Entity::Minimal => match b {
                b'&' => out.extend_from_slice(b"&amp;"),
                b'<' => out.extend_from_slice(b"&lt;"),
                b'>' => out.extend_from_slice(b"&gt;"),
                b'"' => out.extend_from_slice(b"&quot;"),
                b'\'' => out.extend_from_slice(b"&#39;"),
                _ => out.push(b),
            },
            _ if plain => out.push(b),
            Entity::Decimal => {
                out.extend_from_slice(b"&#");
                if b >= 100 {
                    out.push(b'0' + b / 100);
                }
                if b >= 10 {
                    out.push(b'0' + (b / 10) % 10);
                }
                out.push(b'0' + b % 10);
                out.push(b';');
            }
            Entity::Hex(digits) => {
                out.extend_from_slice(b"&#x");
                push_hex(&mut out, b, digits);
                out.push(b';');
            }
        }
    }
    out
}

const UPPER: &[u8; 16] = b"0123456789ABCDEF";
const LOWER: &[u8; 16] = b"0123456789abcdef";

/// The base64 characters of `value` placed at byte offset `align` (0, 1 or 2) of a longer
/// stream that depend on `value` alone.
fn base64_inner(value: &[u8], align: usize, url_safe: bool) -> Zeroizing<Vec<u8>> {
    let mut padded = Zeroizing::new(vec![0u8; align]);
    padded.extend_from_slice(value);
    let mut encoded = Zeroizing::new(Vec::new());
    let engine = if url_safe {
        &URL_SAFE_NO_PAD
    } else {
        &STANDARD_NO_PAD
    };
    encoded.resize(padded.len().div_ceil(3) * 4, 0);
    let n = engine
        .encode_slice(padded.as_slice(), encoded.as_mut_slice())
        .unwrap_or(0);
    encoded.truncate(n);
    // Character i covers bits [6i, 6i + 6) of the padded bytes; keep those inside the value.
    let first = (8 * align).div_ceil(6);
    let end = (8 * padded.len()) / 6;
    Zeroizing::new(encoded.get(first..end).unwrap_or_default().to_vec())
}

fn push_hex(out: &mut Vec<u8>, b: u8, digits: &[u8; 16]) {
    out.push(digits[usize::from(b >> 4)]);
    out.push(digits[usize::from(b & 0x0f)]);
}

/// Hex digits of every byte, optionally separated by spaces (the form AWS error bodies use for
/// the canonical request they echo, `CanonicalRequestBytes`).
fn hex(value: &[u8], digits: &[u8; 16], spaced: bool) -> Zeroizing<Vec<u8>> {
    let mut out = Zeroizing::new(Vec::with_capacity(value.len() * 3));
    for (i, &b) in value.iter().enumerate() {
        if spaced && i > 0 {
            out.push(b' ');
        }
        push_hex(&mut out, b, digits);
    }
    out
}

/// Percent-encoding of every byte except ASCII letters, digits and the bytes in `keep`.
fn percent(value: &[u8], keep: &[u8], digits: &[u8; 16]) -> Zeroizing<Vec<u8>> {
    let mut out = Zeroizing::new(Vec::with_capacity(value.len() * 3));
    for &b in value {
        if !keep.is_empty() && (b.is_ascii_alphanumeric() || keep.contains(&b)) {
            out.push(b);
        } else {
            out.push(b'%');
            push_hex(&mut out, b, digits);
        }
    }
    out
}

/// Which bytes a JSON encoder writes as `\u00XX`.
#[derive(Clone, Copy)]
enum Unicode {
    /// Only what JSON requires (control bytes).
    ControlOnly,
    /// Every byte below 0x80.
    All(&'static [u8; 16]),
    /// Every ASCII byte that is not a letter or digit.
    NonAlnum(&'static [u8; 16]),
}

/// JSON string escaping of an ASCII value. Bytes of 0x80 and above stay as they are (a JSON
/// encoder that escapes them works on characters, not bytes).
fn json(value: &[u8], escape_slash: bool, unicode: Unicode) -> Zeroizing<Vec<u8>> {
    let mut out = Zeroizing::new(Vec::with_capacity(value.len() * 6));
    for &b in value {
        let u = match unicode {
            Unicode::ControlOnly => (b < 0x20).then_some(LOWER),
            Unicode::All(d) => (b < 0x80).then_some(d),
            Unicode::NonAlnum(d) => (b < 0x80 && !b.is_ascii_alphanumeric()).then_some(d),
        };
        match (u, b) {
            (Some(digits), _) => {
                out.extend_from_slice(b"\\u00");
                push_hex(&mut out, b, digits);
            }
            (None, b'"') => out.extend_from_slice(b"\\\""),
            (None, b'\\') => out.extend_from_slice(b"\\\\"),
            (None, b'/') if escape_slash => out.extend_from_slice(b"\\/"),
            (None, _) => out.push(b),
        }
    }
    out
}

/// Rewrites the credentials of an `Authorization: Basic` value with the upstream's request
/// rules. `Ok(None)` when the value is not Basic, does not decode, or holds no dummy.
///
/// # Errors
/// The refusal of a rule that matched inside the decoded `user:password`.
///
/// # Example
///
/// ```
/// use slapenir::rewrite::encoded::rewrite_basic;
/// use slapenir::rewrite::{Action, Hits, Rewriter, Rule};
/// use zeroize::Zeroizing;
///
/// let rw = Rewriter::new(vec![Rule {
///     name: "github".into(),
///     needle: Zeroizing::new(b"ghp-dummy-github".to_vec()),
///     action: Action::Replace(Zeroizing::new(b"ghp_REAL".to_vec())),
/// }])
/// .unwrap();
/// // base64("x-access-token:ghp-dummy-github")
/// let value = b"Basic eC1hY2Nlc3MtdG9rZW46Z2hwLWR1bW15LWdpdGh1Yg==";
/// let new = rewrite_basic(value, &rw, &mut Hits::new()).unwrap().unwrap();
/// // base64("x-access-token:ghp_REAL")
/// assert_eq!(new.as_slice(), b"Basic eC1hY2Nlc3MtdG9rZW46Z2hwX1JFQUw=");
/// ```
pub fn rewrite_basic(
    value: &[u8],
    rw: &Rewriter,
    hits: &mut Hits,
) -> Result<Option<Zeroizing<Vec<u8>>>, Refused> {
    let Some((scheme, rest)) = split_basic(value) else {
        return Ok(None);
    };
    let token = rest.trim_ascii();
    let Ok(decoded) = STANDARD.decode(token).map(Zeroizing::new) else {
        return Ok(None);
    };
    let rewritten = match rw.rewrite(&decoded, hits)? {
        std::borrow::Cow::Borrowed(_) => return Ok(None),
        std::borrow::Cow::Owned(v) => Zeroizing::new(v),
    };
    let mut out = Zeroizing::new(Vec::with_capacity(scheme.len() + 1 + rewritten.len() * 2));
    out.extend_from_slice(scheme);
    out.push(b' ');
    let start = out.len();
    out.resize(start + rewritten.len().div_ceil(3) * 4, 0);
    let n = STANDARD
        .encode_slice(rewritten.as_slice(), &mut out[start..])
        .unwrap_or(0);
    out.truncate(start + n);
    Ok(Some(out))
}

/// Whether an `Authorization` value uses the Basic scheme.
pub fn is_basic(value: &[u8]) -> bool {
    split_basic(value).is_some()
}

/// A Basic `Authorization` value cut into its scheme (as written) and credentials.
fn split_basic(value: &[u8]) -> Option<(&[u8], &[u8])> {
    let value = value.trim_ascii_start();
    let space = value.iter().position(|&b| b == b' ')?;
    let scheme = &value[..space];
    scheme
        .eq_ignore_ascii_case(b"basic")
        .then(|| (scheme, &value[space + 1..]))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::type_complexity)]
    use super::*;
    use crate::rewrite::{Action, Rule};
    use proptest::prelude::*;

    fn form<'a>(forms: &'a [Form], encoding: &str) -> Option<&'a Form> {
        forms.iter().find(|f| f.encoding == encoding)
    }

    #[test]
    fn named_forms() {
        let forms = response_forms(b"a/b+c\"defgh", b"dummy-value");
        let cases: &[(&str, Option<&[u8]>)] = &[
            // base64("a/b+c\"defgh") = YS9iK2MiZGVmZ2g= ; the last char mixes padding bits.
            ("base64", Some(b"YS9iK2MiZGVmZ2")),
            ("base64url", Some(b"YS9iK2MiZGVmZ2")),
            ("percent", Some(b"a%2Fb%2Bc%22defgh")),
            ("percent-lower", Some(b"a%2fb%2bc%22defgh")),
            ("json", Some(b"a/b+c\\\"defgh")),
            ("json-slash", Some(b"a\\/b+c\\\"defgh")),
            ("json-u-punct", Some(b"a\\u002fb\\u002bc\\u0022defgh")),
        ];
        for (encoding, want) in cases {
            let got = form(&forms, encoding).map(|f| f.needle.as_slice());
            if *encoding == "base64url" {
                // Identical to standard base64 for this value, so left out.
                assert_eq!(got, None, "{encoding}");
            } else {
                assert_eq!(got, *want, "{encoding}");
            }
        }
    }

    #[test]
    fn a_value_without_special_bytes_has_no_percent_or_json_form() {
        let forms = response_forms(b"sk-live-0123456789", b"sk-dummy-openai00");
        for absent in [
            "percent",
            "percent-lower",
            "json",
            "json-slash",
            "base64url",
        ] {
            assert!(form(&forms, absent).is_none(), "{absent}");
        }
        for present in [
            "base64",
            "base64+1",
            "base64+2",
            "percent-all",
            "json-u-all",
        ] {
            assert!(form(&forms, present).is_some(), "{present}");
        }
    }

    proptest! {
        /// Wherever the secret sits in a base64 blob, one of the three alignment needles is in
        /// the blob's encoding, and replacing it leaves no decoding that holds the secret.
        #[test]
        fn base64_alignment_needles_are_found_and_scrubbed(
            secret in proptest::collection::vec(any::<u8>(), 8..40),
            before in proptest::collection::vec(any::<u8>(), 0..10),
            after in proptest::collection::vec(any::<u8>(), 0..10),
            url_safe in any::<bool>(),
        ) {
            let mut blob = before.clone();
            blob.extend_from_slice(&secret);
            blob.extend_from_slice(&after);
            let engine = if url_safe { &URL_SAFE_NO_PAD } else { &STANDARD_NO_PAD };
            let encoded = engine.encode(&blob);
            prop_assert!(engine
                .decode(&encoded)
                .is_ok_and(|b| b.windows(secret.len()).any(|w| w == secret.as_slice())));
            let needle = base64_inner(&secret, before.len() % 3, url_safe);
            let pos = encoded.as_bytes().windows(needle.len()).position(|w| w == needle.as_slice());
            prop_assert!(pos.is_some());
            let rw = Rewriter::new(vec![Rule {
                name: "s".into(),
                needle: needle.clone(),
                action: Action::Replace(base64_inner(b"dummy-dummy-dummy", before.len() % 3, url_safe)),
            }]).unwrap();
            let out = rw.rewrite(encoded.as_bytes(), &mut Hits::new()).unwrap().into_owned();
            // Decode at every start offset and with each tail trimmed: no decoding holds it.
            for skip in 0..4.min(out.len()) {
                for trim in 0..4.min(out.len() - skip) {
                    let part = &out[skip..out.len() - trim];
                    if let Ok(bytes) = engine.decode(part) {
                        prop_assert!(!bytes.windows(secret.len()).any(|w| w == secret.as_slice()));
                    }
                }
            }
        }
    }

    #[test]
    fn basic_auth_cases() {
        let rw = Rewriter::new(vec![
            Rule {
                name: "github".into(),
                needle: Zeroizing::new(b"ghp-dummy-github".to_vec()),
                action: Action::Replace(Zeroizing::new(b"ghp_realrealreal".to_vec())),
            },
            Rule {
                name: "openai".into(),
                needle: Zeroizing::new(b"sk-dummy-openai".to_vec()),
                action: Action::Refuse,
            },
        ])
        .unwrap();
        let b64 = |s: &str| STANDARD.encode(s);
        let cases: Vec<(&str, String, Result<Option<String>, ()>)> = vec![
            (
                "password",
                format!("Basic {}", b64("x-access-token:ghp-dummy-github")),
                Ok(Some(format!(
                    "Basic {}",
                    b64("x-access-token:ghp_realrealreal")
                ))),
            ),
            (
                "user, lower-case scheme",
                format!("basic {}", b64("ghp-dummy-github:x-oauth-basic")),
                Ok(Some(format!(
                    "basic {}",
                    b64("ghp_realrealreal:x-oauth-basic")
                ))),
            ),
            ("no dummy", format!("Basic {}", b64("u:p")), Ok(None)),
            ("bearer", "Bearer ghp-dummy-github".into(), Ok(None)),
            ("not base64", "Basic !!!".into(), Ok(None)),
            ("no token", "Basic".into(), Ok(None)),
            (
                "foreign dummy",
                format!("Basic {}", b64("u:sk-dummy-openai")),
                Err(()),
            ),
        ];
        for (name, value, want) in cases {
            let got = rewrite_basic(value.as_bytes(), &rw, &mut Hits::new())
                .map(|o| o.map(|v| String::from_utf8(v.to_vec()).unwrap()))
                .map_err(|_| ());
            assert_eq!(got, want, "{name}");
        }
    }
}
