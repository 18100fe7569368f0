//! Push-style streaming decompression of HTTP response bodies.
//!
//! The gateway asks every upstream for `Accept-Encoding: identity`, but a server may compress
//! anyway. A compressed body cannot be scanned for real secrets, and an unscanned body must never
//! reach the agent, so the response path decodes it first. This module owns that decoding; it knows
//! nothing about Pingora.
//!
//! The response body hook is synchronous and sees the body one chunk at a time, so the decoder
//! is *push-style*: [`Decoder::push`] takes whatever bytes arrived (any split, one byte at a time
//! too) and appends every byte the codec can already produce; [`Decoder::finish`] is called
//! at the end of the body and fails if the compressed stream was cut short.
//!
//! # Liveness
//!
//! Output is handed back as soon as the codec produces it, never held for the end of the body.
//! An event stream compressed with a sync flush after each event (what servers do for SSE)
//! decodes event by event.
//!
//! # Memory
//!
//! A compressed body is an amplifier: 127 KiB of gzip can inflate to 128 MiB, and the agent can
//! arrange for an upstream to send one (store a bomb, then download it). So the decoded output
//! is bounded *while* it is produced, by a [`Budget`]:
//!
//! - one [`Decoder::push`] of `n` compressed bytes may produce at most
//!   `max_ratio × n + STEP_SLACK` decoded bytes ([`Budget::step_limit`]; [`STEP_SLACK`] is
//!   1 MiB, so small reads of legitimately dense data pass), and [`Decoder::finish`] at most
//!   [`STEP_SLACK`];
//! - the whole body may decode to at most `max_bytes`.
//!
//! Beyond either, decoding fails with [`DecodeErrorKind::RatioExceeded`] or
//! [`DecodeErrorKind::SizeExceeded`] ([`DecodeError::is_over_budget`]). The limits are checked
//! as the codec produces output, never after the fact: every codec writes through a fixed
//! scratch buffer of at most [`CHUNK`] bytes (flate2's own buffer is 32 KiB; brotli and zstd
//! are driven through their output-bounded streaming calls), and each scratch load is counted
//! before it is appended. So a bomb is detected before `out` grows past the limit, and `out`'s
//! capacity never grows past what was in it plus the step limit.
//!
//! Stacked codings run as a pipeline, not stage by stage: each scratch load of an outer stage
//! goes straight through the inner stages, so an intermediate stage holds one scratch load, not
//! its whole output. Every stage, intermediate ones included, is held to the same step and
//! total limits, so an inner stream that decodes to a lot of nothing (zstd skippable frames,
//! brotli metadata) costs no more work than the budget allows.
//!
//! Besides the output, a body holds the codec's own state: the 32 KiB window of gzip/deflate,
//! brotli's window (at most 16 MiB: the large-window extension, which allows 1 GiB, is
//! refused), and zstd's window, capped at 8 MiB ([`ZSTD_WINDOW_LOG_MAX`], the limit RFC 9659
//! sets for `zstd` as an HTTP content coding; a frame asking for more is refused). Stacked
//! codings are limited to [`MAX_STACKED_CODINGS`] so a header cannot make the gateway allocate
//! one codec state per token. So memory per body is a constant whatever the compression ratio:
//! codec states, scratch buffers, and one step's output.
//!
//! # Example
//!
//! ```
//! use std::io::Write;
//! use slapenir::rewrite::decode::{Decoder, Encoding};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
//! gz.write_all(b"data: hello\n\n")?;
//! let body = gz.finish()?;
//!
//! let mut decoder = Decoder::new(Encoding::from_header(b"gzip")?.ok_or("no coding")?);
//! let mut plain = Vec::new();
//! for chunk in body.chunks(3) {
//!     decoder.push(chunk, &mut plain)?;
//! }
//! decoder.finish(&mut plain)?;
//! assert_eq!(plain, b"data: hello\n\n");
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::io::{self, Write};

use brotli::enc::StandardAlloc;
use brotli::{BrotliDecompressStream, BrotliResult, BrotliState};
use flate2::write::{DeflateDecoder, MultiGzDecoder, ZlibDecoder};
use zstd::stream::raw::{DParameter, InBuffer, Operation, OutBuffer};

/// The largest zstd window the decoder accepts, as a power of two (8 MiB).
///
/// RFC 9659 requires encoders of the `zstd` HTTP content coding to stay within an 8 MiB window,
/// and lets decoders refuse larger ones. Refusing them bounds the memory one response can take.
pub const ZSTD_WINDOW_LOG_MAX: u32 = 23;

/// The most content codings one body may stack (`Content-Encoding: gzip, br` is two).
///
/// Real servers apply one; each extra stage costs a codec state, so a longer list is refused.
pub const MAX_STACKED_CODINGS: usize = 4;

/// Size of the scratch buffer brotli and zstd decode into, and the most compressed bytes fed to
/// flate2 in one call (whose own output buffer is 32 KiB): the most a codec produces between
/// two budget checks.
pub const CHUNK: usize = 32 * 1024;

/// Decoded bytes every step may produce on top of `max_ratio` times its compressed bytes, so
/// that a small read of dense but legitimate data is not refused (see [`Budget::step_limit`]).
pub const STEP_SLACK: u64 = 1 << 20;

/// How far a compressed body may expand; see the module docs (# Memory).
///
/// # Example
///
/// ```
/// use std::io::Write;
/// use slapenir::rewrite::decode::{Budget, Decoder, Encoding};
///
/// // 4 MiB of zeros: about 4 KiB of gzip, a ratio of about 1000.
/// let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
/// gz.write_all(&vec![0u8; 4 << 20]).unwrap();
/// let bomb = gz.finish().unwrap();
///
/// let budget = Budget { max_ratio: 100, max_bytes: 1 << 30 };
/// let mut decoder = Decoder::new(Encoding::Gzip).with_budget(budget);
/// let mut out = Vec::new();
/// let err = decoder.push(&bomb, &mut out).unwrap_err();
/// assert!(err.is_over_budget());
/// assert!(out.len() as u64 <= budget.step_limit(bomb.len()));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// Decoded bytes allowed per compressed byte of one step (one push), on top of
    /// [`STEP_SLACK`].
    pub max_ratio: u64,
    /// Decoded bytes allowed for the whole body.
    pub max_bytes: u64,
}

impl Budget {
    /// 100 decoded bytes per compressed byte of a step, 1 GiB per body.
    pub const DEFAULT: Budget = Budget {
        max_ratio: 100,
        max_bytes: 1 << 30,
    };

    /// The most decoded bytes a step of `compressed` bytes may produce:
    /// `max_ratio × compressed + STEP_SLACK` (saturating).
    #[must_use]
    pub fn step_limit(&self, compressed: usize) -> u64 {
        self.max_ratio
            .saturating_mul(compressed as u64)
            .saturating_add(STEP_SLACK)
    }
}

impl Default for Budget {
    fn default() -> Self {
        Budget::DEFAULT
    }
}

/// A content coding the gateway can decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Encoding {
    /// `gzip` (also spelled `x-gzip`): RFC 1952, one or more members.
    Gzip,
    /// `deflate`: zlib-wrapped deflate (RFC 1950), or raw deflate (RFC 1951), which some servers
    /// send instead; the first two bytes tell them apart.
    Deflate,
    /// `br`: brotli (RFC 7932).
    Brotli,
    /// `zstd`: Zstandard frames (RFC 8878), window at most [`ZSTD_WINDOW_LOG_MAX`].
    Zstd,
}

impl Encoding {
    /// The coding's name as it appears in `Content-Encoding`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Encoding::Gzip => "gzip",
            Encoding::Deflate => "deflate",
            Encoding::Brotli => "br",
            Encoding::Zstd => "zstd",
        }
    }

    /// Parses a `Content-Encoding` value that names at most one coding.
    ///
    /// Matching ignores ASCII case and surrounding whitespace. `identity` and an empty value
    /// mean the body is not encoded: `Ok(None)`. `x-gzip` is `gzip`.
    ///
    /// # Errors
    ///
    /// [`UnsupportedEncoding`] for a coding this module cannot decode, and for a list of several
    /// codings (use [`Encoding::parse_list`] and [`Decoder::stacked`] for those).
    ///
    /// # Example
    ///
    /// ```
    /// use slapenir::rewrite::decode::Encoding;
    ///
    /// assert_eq!(Encoding::from_header(b" X-GZip ").unwrap(), Some(Encoding::Gzip));
    /// assert_eq!(Encoding::from_header(b"identity").unwrap(), None);
    /// assert!(Encoding::from_header(b"compress").is_err());
    /// assert!(Encoding::from_header(b"gzip, br").is_err());
    /// ```
    pub fn from_header(value: &[u8]) -> Result<Option<Encoding>, UnsupportedEncoding> {
        let codings = Encoding::parse_list([value])?;
        match codings.as_slice() {
            [] => Ok(None),
            [one] => Ok(Some(*one)),
            more => Err(UnsupportedEncoding::Stacked { count: more.len() }),
        }
    }

    /// Parses every `Content-Encoding` field of a response into the codings in the order they
    /// were applied (the header's order; a decoder undoes them last to first).
    ///
    /// Pass each field value in the order received: several fields are one comma-separated list.
    /// Empty list members and `identity` are skipped.
    ///
    /// # Errors
    ///
    /// [`UnsupportedEncoding`] if any member is a coding this module cannot decode, or if more
    /// than [`MAX_STACKED_CODINGS`] codings are stacked.
    ///
    /// # Example
    ///
    /// ```
    /// use slapenir::rewrite::decode::Encoding;
    ///
    /// let fields: [&[u8]; 2] = [b"gzip", b"identity, br"];
    /// assert_eq!(Encoding::parse_list(fields).unwrap(), [Encoding::Gzip, Encoding::Brotli]);
    /// ```
    pub fn parse_list<'a, I>(values: I) -> Result<Vec<Encoding>, UnsupportedEncoding>
    where
        I: IntoIterator<Item = &'a [u8]>,
    {
        let mut codings = Vec::new();
        for value in values {
            for token in value.split(|&b| b == b',') {
                let token = token.trim_ascii();
                if token.is_empty() || token.eq_ignore_ascii_case(b"identity") {
                    continue;
                }
                codings.push(Encoding::from_token(token)?);
                if codings.len() > MAX_STACKED_CODINGS {
                    return Err(UnsupportedEncoding::TooMany {
                        count: codings.len(),
                    });
                }
            }
        }
        Ok(codings)
    }

    fn from_token(token: &[u8]) -> Result<Encoding, UnsupportedEncoding> {
        const CODINGS: [(&str, Encoding); 5] = [
            ("gzip", Encoding::Gzip),
            ("x-gzip", Encoding::Gzip),
            ("deflate", Encoding::Deflate),
            ("br", Encoding::Brotli),
            ("zstd", Encoding::Zstd),
        ];
        // Registered codings that are refused are named in the error; anything else came from
        // the upstream and may hold any bytes, so only its length is reported.
        const KNOWN_UNSUPPORTED: [&str; 7] = [
            "compress",
            "x-compress",
            "exi",
            "pack200-gzip",
            "aes128gcm",
            "dcb",
            "dcz",
        ];
        if let Some((_, coding)) = CODINGS
            .iter()
            .find(|(name, _)| token.eq_ignore_ascii_case(name.as_bytes()))
        {
            return Ok(*coding);
        }
        match KNOWN_UNSUPPORTED
            .iter()
            .find(|name| token.eq_ignore_ascii_case(name.as_bytes()))
        {
            Some(name) => Err(UnsupportedEncoding::Registered { name }),
            None => Err(UnsupportedEncoding::Unrecognised { len: token.len() }),
        }
    }
}

impl fmt::Display for Encoding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A `Content-Encoding` the gateway cannot decode; the body must not be passed on.
///
/// The message never repeats unrecognised header bytes: the header comes from the upstream and
/// could carry anything, including a reflected secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UnsupportedEncoding {
    /// A registered coding that is not implemented (`compress`, `aes128gcm`, ...).
    Registered {
        /// The coding's registered name.
        name: &'static str,
    },
    /// A token that is not a registered coding.
    Unrecognised {
        /// Length of the token in bytes.
        len: usize,
    },
    /// [`Encoding::from_header`] was given a list of several codings.
    Stacked {
        /// How many codings the list holds.
        count: usize,
    },
    /// More than [`MAX_STACKED_CODINGS`] codings are stacked.
    TooMany {
        /// How many codings had been read when parsing stopped.
        count: usize,
    },
}

impl fmt::Display for UnsupportedEncoding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UnsupportedEncoding::Registered { name } => write!(
                f,
                "Content-Encoding `{name}` is not supported (supported: gzip, deflate, br, zstd)"
            ),
            UnsupportedEncoding::Unrecognised { len } => write!(
                f,
                "Content-Encoding holds an unrecognised coding ({len} bytes, not shown); \
                 supported: gzip, deflate, br, zstd"
            ),
            UnsupportedEncoding::Stacked { count } => write!(
                f,
                "Content-Encoding lists {count} stacked codings where one was expected"
            ),
            UnsupportedEncoding::TooMany { count } => write!(
                f,
                "Content-Encoding stacks {count} or more codings; at most {MAX_STACKED_CODINGS} are decoded"
            ),
        }
    }
}

impl std::error::Error for UnsupportedEncoding {}

/// What went wrong while decoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeErrorKind {
    /// The bytes are not a valid stream of the declared coding (or a zstd frame wants a window
    /// larger than [`ZSTD_WINDOW_LOG_MAX`]).
    Corrupt,
    /// The body ended before the compressed stream did.
    Truncated,
    /// Bytes followed the end of the compressed stream.
    TrailingData,
    /// [`Decoder::push`] or [`Decoder::finish`] was called after the decoder had finished or
    /// failed.
    Unusable,
    /// One step decoded to more than [`Budget::step_limit`] allows: the compression ratio of
    /// this read is beyond the budget.
    RatioExceeded,
    /// The body decoded to more than [`Budget::max_bytes`].
    SizeExceeded,
}

/// A body that could not be decoded; the rest of it must not be passed on.
///
/// Says which coding failed, how, and how many compressed bytes that coding had accepted before
/// the push that failed. It never holds body bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeError {
    encoding: Encoding,
    kind: DecodeErrorKind,
    offset: u64,
}

impl DecodeError {
    /// The coding whose stream was bad (for stacked codings, the stage that failed).
    #[must_use]
    pub fn encoding(&self) -> Encoding {
        self.encoding
    }

    /// How decoding failed.
    #[must_use]
    pub fn kind(&self) -> DecodeErrorKind {
        self.kind
    }

    /// Compressed bytes of that coding accepted before the failing push or finish.
    #[must_use]
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Whether the body was refused for decoding to more than its [`Budget`] (the stream may
    /// well be valid).
    #[must_use]
    pub fn is_over_budget(&self) -> bool {
        matches!(
            self.kind,
            DecodeErrorKind::RatioExceeded | DecodeErrorKind::SizeExceeded
        )
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.kind {
            DecodeErrorKind::Corrupt => "invalid compressed data",
            DecodeErrorKind::Truncated => "body ended before the compressed stream did",
            DecodeErrorKind::TrailingData => "bytes after the end of the compressed stream",
            DecodeErrorKind::Unusable => "decoder used after it finished or failed",
            DecodeErrorKind::RatioExceeded => {
                "one read decoded to more than the decoding budget allows (max_ratio)"
            }
            DecodeErrorKind::SizeExceeded => {
                "decoded to more than the decoding budget allows (max_bytes)"
            }
        };
        write!(
            f,
            "{} body: {what} (after {} compressed bytes)",
            self.encoding, self.offset
        )
    }
}

impl std::error::Error for DecodeError {}

/// A streaming decoder for one response body.
///
/// Feed it every chunk with [`push`](Decoder::push), then call [`finish`](Decoder::finish)
/// once at the end of the body. After an error the decoder is unusable: every later call
/// fails with [`DecodeErrorKind::Unusable`]. The output is held to a [`Budget`]
/// ([`Budget::DEFAULT`] unless [`with_budget`](Decoder::with_budget) says otherwise).
pub struct Decoder {
    /// Stages in the order the codings were applied; input goes through them last to first.
    stages: Vec<Stage>,
    /// The last coding applied: the one the body arrives in.
    outermost: Encoding,
    budget: Budget,
    state: State,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Open,
    Done,
}

impl fmt::Debug for Decoder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let codings: Vec<Encoding> = self.stages.iter().map(|s| s.encoding).collect();
        f.debug_struct("Decoder")
            .field("codings", &codings)
            .field("budget", &self.budget)
            .field("state", &self.state)
            .finish()
    }
}

impl Decoder {
    /// A decoder for a body with one coding.
    ///
    /// # Example
    ///
    /// ```
    /// use slapenir::rewrite::decode::{Decoder, Encoding};
    ///
    /// let mut decoder = Decoder::new(Encoding::Zstd);
    /// let mut out = Vec::new();
    /// decoder.push(&zstd::encode_all(&b"hi"[..], 3).unwrap(), &mut out).unwrap();
    /// decoder.finish(&mut out).unwrap();
    /// assert_eq!(out, b"hi");
    /// ```
    #[must_use]
    pub fn new(encoding: Encoding) -> Decoder {
        Decoder {
            stages: vec![Stage::new(encoding)],
            outermost: encoding,
            budget: Budget::DEFAULT,
            state: State::Open,
        }
    }

    /// A decoder for stacked codings, listed in the order they were applied (the order of
    /// `Content-Encoding`, as returned by [`Encoding::parse_list`]). `None` for an empty list:
    /// the body is not encoded.
    ///
    /// # Example
    ///
    /// ```
    /// use slapenir::rewrite::decode::{Decoder, Encoding};
    ///
    /// // `Content-Encoding: zstd, br`: zstd first, then brotli over it.
    /// let zstd = zstd::encode_all(&b"stacked"[..], 3).unwrap();
    /// let mut br = Vec::new();
    /// brotli::BrotliCompress(&mut &zstd[..], &mut br, &Default::default()).unwrap();
    ///
    /// let codings = Encoding::parse_list([&b"zstd, br"[..]]).unwrap();
    /// let mut decoder = Decoder::stacked(&codings).unwrap();
    /// let mut out = Vec::new();
    /// decoder.push(&br, &mut out).unwrap();
    /// decoder.finish(&mut out).unwrap();
    /// assert_eq!(out, b"stacked");
    /// ```
    #[must_use]
    pub fn stacked(codings: &[Encoding]) -> Option<Decoder> {
        let outermost = *codings.last()?;
        Some(Decoder {
            stages: codings.iter().map(|&c| Stage::new(c)).collect(),
            outermost,
            budget: Budget::DEFAULT,
            state: State::Open,
        })
    }

    /// The same decoder, held to `budget` instead of [`Budget::DEFAULT`].
    ///
    /// # Example
    ///
    /// ```
    /// use slapenir::rewrite::decode::{Budget, DecodeErrorKind, Decoder, Encoding};
    ///
    /// let body = zstd::encode_all(&[b'a'; 64][..], 3).unwrap();
    /// let tiny = Budget { max_ratio: 100, max_bytes: 10 };
    /// let mut decoder = Decoder::new(Encoding::Zstd).with_budget(tiny);
    /// let err = decoder.push(&body, &mut Vec::new()).unwrap_err();
    /// assert_eq!(err.kind(), DecodeErrorKind::SizeExceeded);
    /// ```
    #[must_use]
    pub fn with_budget(mut self, budget: Budget) -> Decoder {
        self.budget = budget;
        self
    }

    /// Feeds the next chunk of the compressed body and appends every byte the codec can
    /// produce from it to `out`. Any split of the body is fine, down to one byte per call; an
    /// empty chunk does nothing.
    ///
    /// At most [`Budget::step_limit`]`(input.len())` bytes are appended, and `out`'s capacity
    /// grows to at most its length on entry plus that limit.
    ///
    /// # Errors
    ///
    /// [`DecodeError`] if the bytes are not a valid stream, if bytes follow the end of the
    /// stream, if the output would exceed the [`Budget`] ([`DecodeError::is_over_budget`]), or
    /// if the decoder has already finished or failed. What was appended to `out` before the
    /// error is valid decoded output, but the body as a whole must be treated as failed.
    pub fn push(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<(), DecodeError> {
        self.check_open()?;
        if input.is_empty() {
            return Ok(());
        }
        let result = self.run(Some(input), out);
        if result.is_err() {
            self.state = State::Done;
        }
        result
    }

    /// Ends the body: appends any remaining output to `out` (at most [`STEP_SLACK`] bytes) and
    /// checks that every compressed stream was complete.
    ///
    /// A body of zero bytes decodes to zero bytes whatever its declared coding, since servers
    /// label empty bodies (such as `204` responses) with the coding they would have used.
    ///
    /// # Errors
    ///
    /// [`DecodeError`] with [`DecodeErrorKind::Truncated`] (or [`DecodeErrorKind::Corrupt`]
    /// when a gzip trailer is cut or wrong) if the body ended inside a compressed stream,
    /// a budget error as for [`Decoder::push`], and [`DecodeErrorKind::Unusable`] if called
    /// twice or after an error.
    pub fn finish(&mut self, out: &mut Vec<u8>) -> Result<(), DecodeError> {
        self.check_open()?;
        let result = self.run(None, out);
        self.state = State::Done;
        result
    }

    fn check_open(&self) -> Result<(), DecodeError> {
        if self.state == State::Open {
            return Ok(());
        }
        Err(DecodeError {
            encoding: self.outermost,
            kind: DecodeErrorKind::Unusable,
            offset: self.stages.last().map_or(0, |s| s.consumed),
        })
    }

    /// Runs `input` (or the end of the body, for `None`) through every stage, last applied
    /// first, as one step of the budget.
    fn run(&mut self, input: Option<&[u8]>, out: &mut Vec<u8>) -> Result<(), DecodeError> {
        let step = self.budget.step_limit(input.map_or(0, <[u8]>::len));
        let limits = Limits {
            step,
            total: self.budget.max_bytes,
            capacity: out
                .len()
                .saturating_add(usize::try_from(step).unwrap_or(usize::MAX)),
        };
        for stage in &mut self.stages {
            stage.produced_in_step = 0;
        }
        feed(&mut self.stages, input, out, &limits)
    }
}

#[cfg(test)]
impl Decoder {
    /// Bytes allocated for the stages' scratch buffers.
    fn scratch_capacity(&mut self) -> usize {
        self.stages
            .iter_mut()
            .map(|stage| match &mut stage.codec {
                Codec::Gzip(d) => d.scratch().capacity(),
                Codec::Zlib(d) => d.scratch().capacity(),
                Codec::RawDeflate(d) => d.scratch().capacity(),
                Codec::Brotli(b) => b.buf.capacity(),
                Codec::Zstd(z) => z.buf.capacity(),
                Codec::DeflateUnsniffed(_) | Codec::ZstdUnavailable => 0,
            })
            .sum()
    }
}

/// The budget of one step, for every stage.
struct Limits {
    /// Bytes each stage may produce in this step.
    step: u64,
    /// Bytes each stage may produce in the whole body.
    total: u64,
    /// The most capacity the caller's output may grow to in this step.
    capacity: usize,
}

/// Where a stage's output goes: the next stage in, or the caller's buffer.
type Sink<'a> = dyn FnMut(&[u8]) -> Result<(), DecodeError> + 'a;

/// Passes `input` (the end of the body for `None`) through `stages` (applied first ... last;
/// the last receives `input`), appending the innermost stage's output to `out`. Each scratch
/// load an outer stage produces goes through the inner stages before the next is produced.
fn feed(
    stages: &mut [Stage],
    input: Option<&[u8]>,
    out: &mut Vec<u8>,
    limits: &Limits,
) -> Result<(), DecodeError> {
    let Some((stage, inner)) = stages.split_last_mut() else {
        if let Some(bytes) = input {
            append(out, bytes, limits.capacity);
        }
        return Ok(());
    };
    let mut next = |chunk: &[u8]| feed(inner, Some(chunk), out, limits);
    match input {
        Some(bytes) => stage.push(bytes, limits, &mut next),
        None => {
            stage.finish(limits, &mut next)?;
            // At the end of the body each inner stage also ends.
            feed(inner, None, out, limits)
        }
    }
}

/// Appends `bytes`, growing `out` geometrically as `Vec` does, but never past `ceiling` unless
/// the bytes themselves need it (the budget has already been checked by then).
fn append(out: &mut Vec<u8>, bytes: &[u8], ceiling: usize) {
    let needed = out.len().saturating_add(bytes.len());
    if needed > out.capacity() {
        let target = out.capacity().saturating_mul(2).min(ceiling).max(needed);
        out.reserve_exact(target - out.len());
    }
    out.extend_from_slice(bytes);
}

/// One coding's decoder. Each codec writes into a scratch buffer of its own, at most
/// [`CHUNK`] bytes (flate2: its 32 KiB buffer) at a time; every load is counted against the
/// budget before it is handed on.
struct Stage {
    encoding: Encoding,
    codec: Codec,
    /// Compressed bytes accepted so far.
    consumed: u64,
    /// Decoded bytes produced so far, and in the current step.
    produced: u64,
    produced_in_step: u64,
}

enum Codec {
    /// `deflate` before its first two bytes are known (holds at most one byte).
    DeflateUnsniffed(Vec<u8>),
    Gzip(MultiGzDecoder<Vec<u8>>),
    Zlib(ZlibDecoder<Vec<u8>>),
    RawDeflate(DeflateDecoder<Vec<u8>>),
    Brotli(Box<BrotliStage>),
    Zstd(Box<ZstdStage>),
    /// zstd could not set up its context: every call fails.
    ZstdUnavailable,
}

struct BrotliStage {
    state: BrotliState<StandardAlloc, StandardAlloc, StandardAlloc>,
    buf: Vec<u8>,
    /// The stream has ended; any further byte is trailing data.
    finished: bool,
}

struct ZstdStage {
    context: zstd::stream::raw::Decoder<'static>,
    buf: Vec<u8>,
    /// The last frame seen is complete (or none was started).
    frame_done: bool,
}

/// Why a codec call failed, before it is turned into a [`DecodeError`] of its stage.
enum Fail {
    /// The codec refused the bytes.
    Corrupt,
    /// Bytes followed the end of the stream.
    Trailing,
    /// The stream ended early.
    Truncated,
    /// An inner stage (or the budget) failed; passed on as is.
    Passed(DecodeError),
}

impl From<DecodeError> for Fail {
    fn from(e: DecodeError) -> Self {
        Fail::Passed(e)
    }
}

impl Stage {
    fn new(encoding: Encoding) -> Stage {
        let codec = match encoding {
            Encoding::Gzip => Codec::Gzip(MultiGzDecoder::new(Vec::new())),
            Encoding::Deflate => Codec::DeflateUnsniffed(Vec::with_capacity(1)),
            // `new_strict` refuses the large-window extension (windows up to 1 GiB).
            Encoding::Brotli => Codec::Brotli(Box::new(BrotliStage {
                state: BrotliState::new_strict(
                    StandardAlloc::default(),
                    StandardAlloc::default(),
                    StandardAlloc::default(),
                ),
                buf: vec![0; CHUNK],
                finished: false,
            })),
            Encoding::Zstd => match zstd::stream::raw::Decoder::new().and_then(|mut context| {
                context.set_parameter(DParameter::WindowLogMax(ZSTD_WINDOW_LOG_MAX))?;
                Ok(context)
            }) {
                Ok(context) => Codec::Zstd(Box::new(ZstdStage {
                    context,
                    buf: vec![0; CHUNK],
                    frame_done: true,
                })),
                Err(_) => Codec::ZstdUnavailable,
            },
        };
        Stage {
            encoding,
            codec,
            consumed: 0,
            produced: 0,
            produced_in_step: 0,
        }
    }

    fn error(&self, kind: DecodeErrorKind) -> DecodeError {
        DecodeError {
            encoding: self.encoding,
            kind,
            offset: self.consumed,
        }
    }

    fn fail(&self, fail: Fail) -> DecodeError {
        match fail {
            Fail::Corrupt => self.error(DecodeErrorKind::Corrupt),
            Fail::Trailing => self.error(DecodeErrorKind::TrailingData),
            Fail::Truncated => self.error(DecodeErrorKind::Truncated),
            Fail::Passed(e) => e,
        }
    }

    fn push(
        &mut self,
        input: &[u8],
        limits: &Limits,
        sink: &mut Sink<'_>,
    ) -> Result<(), DecodeError> {
        if input.is_empty() {
            return Ok(());
        }
        let mut input = input;
        let sniffed: Vec<u8>;
        if let Codec::DeflateUnsniffed(pending) = &mut self.codec {
            if pending.len() + input.len() < 2 {
                pending.extend_from_slice(input);
                return Ok(());
            }
            let mut head = std::mem::take(pending);
            let needed = 2 - head.len();
            head.extend_from_slice(&input[..needed]);
            self.codec = if is_zlib_header(head[0], head[1]) {
                Codec::Zlib(ZlibDecoder::new(Vec::new()))
            } else {
                Codec::RawDeflate(DeflateDecoder::new(Vec::new()))
            };
            // Feed the two sniffed bytes first, then the rest of this chunk.
            head.extend_from_slice(&input[needed..]);
            sniffed = head;
            input = &sniffed;
        }
        let (encoding, consumed) = (self.encoding, self.consumed);
        let mut meter = Meter {
            encoding,
            consumed,
            produced: &mut self.produced,
            produced_in_step: &mut self.produced_in_step,
            limits,
            sink,
        };
        let result = match &mut self.codec {
            Codec::Gzip(d) => flate_push(d, input, &mut meter),
            Codec::Zlib(d) => flate_push(d, input, &mut meter),
            Codec::RawDeflate(d) => flate_push(d, input, &mut meter),
            Codec::Brotli(b) => b.push(input, &mut meter),
            Codec::Zstd(z) => z.push(input, &mut meter),
            Codec::DeflateUnsniffed(_) | Codec::ZstdUnavailable => Err(Fail::Corrupt),
        };
        match result {
            Ok(()) => {
                self.consumed += input.len() as u64;
                Ok(())
            }
            Err(fail) => Err(self.fail(fail)),
        }
    }

    fn finish(&mut self, limits: &Limits, sink: &mut Sink<'_>) -> Result<(), DecodeError> {
        if self.consumed == 0 {
            return match &self.codec {
                // A lone byte of deflate is not a stream.
                Codec::DeflateUnsniffed(pending) if !pending.is_empty() => {
                    Err(self.error(DecodeErrorKind::Truncated))
                }
                // Nothing at all: an empty body.
                _ => Ok(()),
            };
        }
        let (encoding, consumed) = (self.encoding, self.consumed);
        let mut meter = Meter {
            encoding,
            consumed,
            produced: &mut self.produced,
            produced_in_step: &mut self.produced_in_step,
            limits,
            sink,
        };
        let result = match &mut self.codec {
            Codec::Gzip(d) => flate_finish(d, &mut meter, MultiGzDecoder::try_finish),
            Codec::Zlib(d) => flate_finish(d, &mut meter, ZlibDecoder::try_finish),
            Codec::RawDeflate(d) => flate_finish(d, &mut meter, DeflateDecoder::try_finish),
            // Brotli and zstd hand out everything they can at each push.
            Codec::Brotli(b) if b.finished => Ok(()),
            Codec::Zstd(z) if z.frame_done => Ok(()),
            Codec::Brotli(_) | Codec::Zstd(_) => Err(Fail::Truncated),
            Codec::DeflateUnsniffed(_) | Codec::ZstdUnavailable => Err(Fail::Corrupt),
        };
        result.map_err(|fail| self.fail(fail))
    }
}

/// Counts a stage's output against the budget, then hands it on.
struct Meter<'m, 's> {
    encoding: Encoding,
    consumed: u64,
    produced: &'m mut u64,
    produced_in_step: &'m mut u64,
    limits: &'m Limits,
    sink: &'m mut Sink<'s>,
}

impl Meter<'_, '_> {
    fn emit(&mut self, bytes: &[u8]) -> Result<(), Fail> {
        if bytes.is_empty() {
            return Ok(());
        }
        let len = bytes.len() as u64;
        let over = if *self.produced_in_step + len > self.limits.step {
            Some(DecodeErrorKind::RatioExceeded)
        } else if *self.produced + len > self.limits.total {
            Some(DecodeErrorKind::SizeExceeded)
        } else {
            None
        };
        if let Some(kind) = over {
            return Err(Fail::Passed(DecodeError {
                encoding: self.encoding,
                kind,
                offset: self.consumed,
            }));
        }
        *self.produced_in_step += len;
        *self.produced += len;
        (self.sink)(bytes).map_err(Fail::Passed)
    }
}

/// A flate2 write-side decoder whose output `Vec` is its scratch buffer.
trait FlateWriter: Write {
    fn scratch(&mut self) -> &mut Vec<u8>;
}

impl FlateWriter for MultiGzDecoder<Vec<u8>> {
    fn scratch(&mut self) -> &mut Vec<u8> {
        self.get_mut()
    }
}

impl FlateWriter for ZlibDecoder<Vec<u8>> {
    fn scratch(&mut self) -> &mut Vec<u8> {
        self.get_mut()
    }
}

impl FlateWriter for DeflateDecoder<Vec<u8>> {
    fn scratch(&mut self) -> &mut Vec<u8> {
        self.get_mut()
    }
}

/// Moves what the codec wrote into its scratch `Vec` on to the meter.
fn drain(scratch: &mut Vec<u8>, meter: &mut Meter<'_, '_>) -> Result<(), Fail> {
    let result = meter.emit(scratch);
    scratch.clear();
    result
}

/// Feeds `input` to a flate2 decoder at most [`CHUNK`] bytes per call (each call also stops
/// once flate2's 32 KiB output buffer is full), passing its output on after every call, then
/// sync-flushes so that output the codec holds is handed back now (liveness).
fn flate_push<W: FlateWriter>(
    decoder: &mut W,
    input: &[u8],
    meter: &mut Meter<'_, '_>,
) -> Result<(), Fail> {
    let mut rest = input;
    while !rest.is_empty() {
        let n = decoder
            .write(&rest[..rest.len().min(CHUNK)])
            .map_err(|_| Fail::Corrupt)?;
        if n == 0 {
            // flate2 accepts nothing once its stream has ended.
            return Err(Fail::Trailing);
        }
        rest = &rest[n..];
        drain(decoder.scratch(), meter)?;
    }
    decoder.flush().map_err(|_| Fail::Corrupt)?;
    drain(decoder.scratch(), meter)
}

fn flate_finish<W: FlateWriter>(
    decoder: &mut W,
    meter: &mut Meter<'_, '_>,
    try_finish: fn(&mut W) -> io::Result<()>,
) -> Result<(), Fail> {
    let result = try_finish(decoder);
    drain(decoder.scratch(), meter)?;
    match result {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::InvalidInput => Err(Fail::Corrupt),
        Err(_) => Err(Fail::Truncated),
    }
}

impl BrotliStage {
    fn push(&mut self, input: &[u8], meter: &mut Meter<'_, '_>) -> Result<(), Fail> {
        if self.finished {
            return Err(Fail::Trailing);
        }
        let mut available_in = input.len();
        let mut input_offset = 0;
        let mut total_out = 0;
        loop {
            let mut available_out = self.buf.len();
            let mut output_offset = 0;
            let result = BrotliDecompressStream(
                &mut available_in,
                &mut input_offset,
                input,
                &mut available_out,
                &mut output_offset,
                &mut self.buf,
                &mut total_out,
                &mut self.state,
            );
            meter.emit(&self.buf[..output_offset])?;
            match result {
                BrotliResult::NeedsMoreOutput => continue,
                BrotliResult::NeedsMoreInput => return Ok(()),
                BrotliResult::ResultSuccess => {
                    self.finished = true;
                    return if available_in > 0 {
                        Err(Fail::Trailing)
                    } else {
                        Ok(())
                    };
                }
                BrotliResult::ResultFailure => return Err(Fail::Corrupt),
            }
        }
    }
}

impl ZstdStage {
    fn push(&mut self, input: &[u8], meter: &mut Meter<'_, '_>) -> Result<(), Fail> {
        let mut source = InBuffer::around(input);
        loop {
            let before = source.pos();
            let mut target = OutBuffer::around(&mut self.buf[..]);
            let hint = self
                .context
                .run(&mut source, &mut target)
                .map_err(|_| Fail::Corrupt)?;
            let produced = target.pos();
            let progress = produced > 0 || source.pos() > before;
            // A call that moved nothing does not start a frame: after a frame's end, zstd
            // answers it with the size of the next frame's header.
            if progress || hint == 0 {
                self.frame_done = hint == 0;
            }
            meter.emit(&self.buf[..produced])?;
            let input_left = source.pos() < input.len();
            if !input_left && produced < self.buf.len() {
                // All input taken and the output not full: nothing more is pending.
                return Ok(());
            }
            if input_left && !progress {
                // No progress with input left: never spin.
                return Err(Fail::Corrupt);
            }
        }
    }
}

/// A zlib header (RFC 1950 section 2.2): deflate method, window of at most 32 KiB, and a check
/// value making the first two bytes a multiple of 31. Raw deflate rarely starts like this (a
/// stored block whose length happens to fit); browsers use the same test.
fn is_zlib_header(cmf: u8, flg: u8) -> bool {
    cmf & 0x0f == 8 && cmf >> 4 <= 7 && (u16::from(cmf) << 8 | u16::from(flg)) % 31 == 0
}

#[cfg(test)]
#[allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::io::Write;

    const TEXT: &[u8] = b"data: {\"token\":\"sk-real-0123456789\"}\n\n\
        The quick brown fox jumps over the lazy dog. The quick brown fox jumps again.\n";

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn zlib(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn raw_deflate(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn brotli(data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        brotli::BrotliCompress(&mut &data[..], &mut out, &Default::default()).unwrap();
        out
    }

    fn zstd(data: &[u8]) -> Vec<u8> {
        zstd::encode_all(data, 3).unwrap()
    }

    fn compress(encoding: Encoding, data: &[u8]) -> Vec<u8> {
        match encoding {
            Encoding::Gzip => gzip(data),
            Encoding::Deflate => zlib(data),
            Encoding::Brotli => brotli(data),
            Encoding::Zstd => zstd(data),
        }
    }

    /// Decodes `body` pushed in chunks of `chunk` bytes (all at once for 0).
    fn decode(decoder: &mut Decoder, body: &[u8], chunk: usize) -> Result<Vec<u8>, DecodeError> {
        let mut out = Vec::new();
        let size = if chunk == 0 { body.len().max(1) } else { chunk };
        for piece in body.chunks(size) {
            decoder.push(piece, &mut out)?;
        }
        decoder.finish(&mut out)?;
        Ok(out)
    }

    const ALL: [Encoding; 4] = [
        Encoding::Gzip,
        Encoding::Deflate,
        Encoding::Brotli,
        Encoding::Zstd,
    ];

    #[test]
    fn header_values_parse_to_codings() {
        type Case = (
            &'static str,
            &'static [u8],
            Result<Option<Encoding>, UnsupportedEncoding>,
        );
        let cases: &[Case] = &[
            ("gzip", b"gzip", Ok(Some(Encoding::Gzip))),
            ("x-gzip alias", b"x-gzip", Ok(Some(Encoding::Gzip))),
            ("upper case", b"GZIP", Ok(Some(Encoding::Gzip))),
            ("mixed case br", b"Br", Ok(Some(Encoding::Brotli))),
            ("deflate", b"deflate", Ok(Some(Encoding::Deflate))),
            ("zstd with spaces", b"  zstd\t", Ok(Some(Encoding::Zstd))),
            ("identity", b"identity", Ok(None)),
            ("empty", b"", Ok(None)),
            (
                "identity around gzip",
                b"identity, gzip",
                Ok(Some(Encoding::Gzip)),
            ),
            (
                "registered but unsupported",
                b"compress",
                Err(UnsupportedEncoding::Registered { name: "compress" }),
            ),
            (
                "unknown token",
                b"sk-real-secret",
                Err(UnsupportedEncoding::Unrecognised { len: 14 }),
            ),
            (
                "two codings",
                b"gzip, br",
                Err(UnsupportedEncoding::Stacked { count: 2 }),
            ),
        ];
        for (name, value, want) in cases {
            assert_eq!(&Encoding::from_header(value), want, "case {name}");
        }
    }

    #[test]
    fn lists_parse_in_applied_order_and_are_bounded() {
        type Case = (
            &'static str,
            &'static [&'static [u8]],
            Result<Vec<Encoding>, UnsupportedEncoding>,
        );
        let cases: &[Case] = &[
            ("none", &[], Ok(vec![])),
            (
                "one field",
                &[b"gzip, br"],
                Ok(vec![Encoding::Gzip, Encoding::Brotli]),
            ),
            (
                "two fields",
                &[b"zstd", b"deflate"],
                Ok(vec![Encoding::Zstd, Encoding::Deflate]),
            ),
            ("empty members", &[b" , gzip,,"], Ok(vec![Encoding::Gzip])),
            (
                "four is the limit",
                &[b"gzip, gzip, gzip, gzip"],
                Ok(vec![Encoding::Gzip; 4]),
            ),
            (
                "five is refused",
                &[b"gzip, gzip, gzip, gzip, gzip"],
                Err(UnsupportedEncoding::TooMany { count: 5 }),
            ),
            (
                "one bad member",
                &[b"gzip", b"aes128gcm"],
                Err(UnsupportedEncoding::Registered { name: "aes128gcm" }),
            ),
        ];
        for (name, fields, want) in cases {
            let got = Encoding::parse_list(fields.iter().copied());
            assert_eq!(&got, want, "case {name}");
        }
    }

    #[test]
    fn unrecognised_coding_is_never_echoed() {
        let err = Encoding::from_header(b"sk-real-do-not-print").unwrap_err();
        let message = err.to_string();
        assert!(!message.contains("sk-real"), "{message}");
        assert!(message.contains("20 bytes"), "{message}");
    }

    #[test]
    fn named_cases_decode_or_fail_as_expected() {
        let mut two_members = gzip(b"first member, ");
        two_members.extend(gzip(b"second member"));
        let mut gzip_then_junk = gzip(TEXT);
        // Longer than a gzip header, so it is read as a bad second member.
        gzip_then_junk.extend_from_slice(b"junk after the end of the stream");
        let mut zlib_then_junk = zlib(TEXT);
        zlib_then_junk.extend_from_slice(b"junk");
        let mut zstd_two_frames = zstd(b"frame one, ");
        zstd_two_frames.extend(zstd(b"frame two"));
        let gz = gzip(TEXT);
        let gz_cut_in_data = gz[..gz.len() / 2].to_vec();
        let gz_cut_in_trailer = gz[..gz.len() - 3].to_vec();

        type Want = Result<&'static [u8], DecodeErrorKind>;
        let cases: Vec<(&str, Encoding, Vec<u8>, Want)> = vec![
            ("gzip empty body", Encoding::Gzip, vec![], Ok(b"")),
            ("gzip of nothing", Encoding::Gzip, gzip(b""), Ok(b"")),
            ("gzip text", Encoding::Gzip, gzip(TEXT), Ok(TEXT)),
            (
                "gzip two members",
                Encoding::Gzip,
                two_members,
                Ok(b"first member, second member"),
            ),
            (
                "gzip cut in data",
                Encoding::Gzip,
                gz_cut_in_data,
                Err(DecodeErrorKind::Truncated),
            ),
            (
                "gzip cut in trailer",
                Encoding::Gzip,
                gz_cut_in_trailer,
                Err(DecodeErrorKind::Corrupt),
            ),
            (
                "gzip garbage",
                Encoding::Gzip,
                b"not gzip at all".to_vec(),
                Err(DecodeErrorKind::Corrupt),
            ),
            (
                "gzip trailing junk",
                Encoding::Gzip,
                gzip_then_junk,
                Err(DecodeErrorKind::Corrupt),
            ),
            ("deflate empty body", Encoding::Deflate, vec![], Ok(b"")),
            ("deflate zlib", Encoding::Deflate, zlib(TEXT), Ok(TEXT)),
            (
                "deflate raw",
                Encoding::Deflate,
                raw_deflate(TEXT),
                Ok(TEXT),
            ),
            (
                "deflate raw of nothing",
                Encoding::Deflate,
                raw_deflate(b""),
                Ok(b""),
            ),
            (
                "deflate one byte",
                Encoding::Deflate,
                vec![0x78],
                Err(DecodeErrorKind::Truncated),
            ),
            (
                "deflate zlib truncated",
                Encoding::Deflate,
                zlib(TEXT)[..20].to_vec(),
                Err(DecodeErrorKind::Truncated),
            ),
            (
                "deflate garbage",
                Encoding::Deflate,
                vec![0xff; 32],
                Err(DecodeErrorKind::Corrupt),
            ),
            (
                "deflate zlib trailing junk",
                Encoding::Deflate,
                zlib_then_junk,
                Err(DecodeErrorKind::TrailingData),
            ),
            ("br empty body", Encoding::Brotli, vec![], Ok(b"")),
            ("br of nothing", Encoding::Brotli, brotli(b""), Ok(b"")),
            ("br text", Encoding::Brotli, brotli(TEXT), Ok(TEXT)),
            (
                "br truncated",
                Encoding::Brotli,
                brotli(TEXT)[..10].to_vec(),
                Err(DecodeErrorKind::Truncated),
            ),
            (
                "br garbage",
                Encoding::Brotli,
                vec![0xff; 32],
                Err(DecodeErrorKind::Corrupt),
            ),
            ("zstd empty body", Encoding::Zstd, vec![], Ok(b"")),
            ("zstd of nothing", Encoding::Zstd, zstd(b""), Ok(b"")),
            ("zstd text", Encoding::Zstd, zstd(TEXT), Ok(TEXT)),
            (
                "zstd two frames",
                Encoding::Zstd,
                zstd_two_frames,
                Ok(b"frame one, frame two"),
            ),
            (
                "zstd truncated",
                Encoding::Zstd,
                zstd(TEXT)[..12].to_vec(),
                Err(DecodeErrorKind::Truncated),
            ),
            (
                "zstd garbage",
                Encoding::Zstd,
                b"not zstd data".to_vec(),
                Err(DecodeErrorKind::Corrupt),
            ),
        ];
        for (name, encoding, body, want) in &cases {
            for chunk in [0, 1, 2, 7] {
                let got = decode(&mut Decoder::new(*encoding), body, chunk);
                match (got, want) {
                    (Ok(bytes), Ok(expected)) => {
                        assert_eq!(bytes, *expected, "case {name}, chunk {chunk}");
                    }
                    (Err(e), Err(kind)) => {
                        assert_eq!(e.kind(), *kind, "case {name}, chunk {chunk}: {e}");
                        assert_eq!(e.encoding(), *encoding, "case {name}");
                    }
                    (got, _) => panic!("case {name}, chunk {chunk}: got {got:?}, want {want:?}"),
                }
            }
        }
    }

    #[test]
    fn decoder_is_unusable_after_finish_or_error() {
        let mut d = Decoder::new(Encoding::Gzip);
        let mut out = Vec::new();
        d.push(&gzip(b"x"), &mut out).unwrap();
        d.finish(&mut out).unwrap();
        let err = d.push(b"more", &mut out).unwrap_err();
        assert_eq!(err.kind(), DecodeErrorKind::Unusable);
        assert_eq!(
            d.finish(&mut out).unwrap_err().kind(),
            DecodeErrorKind::Unusable
        );

        let mut d = Decoder::new(Encoding::Zstd);
        assert_eq!(
            d.push(b"garbage!", &mut out).unwrap_err().kind(),
            DecodeErrorKind::Corrupt
        );
        assert_eq!(
            d.push(&zstd(b"x"), &mut out).unwrap_err().kind(),
            DecodeErrorKind::Unusable
        );
    }

    #[test]
    fn error_messages_name_the_coding_and_offset() {
        let mut d = Decoder::new(Encoding::Brotli);
        let mut out = Vec::new();
        d.push(&brotli(TEXT)[..5], &mut out).unwrap();
        let err = d.finish(&mut out).unwrap_err();
        assert_eq!(
            err.to_string(),
            "br body: body ended before the compressed stream did (after 5 compressed bytes)"
        );
    }

    /// Output must appear as soon as the encoder flushed, before the stream ends: an SSE stream
    /// compressed with a flush after each event stays live through the decoder.
    #[test]
    fn flushed_events_decode_before_the_stream_ends() {
        let events: [&[u8]; 3] = [b"data: one\n\n", b"data: two\n\n", b"data: three\n\n"];
        for encoding in ALL {
            let mut encoder = FlushingEncoder::new(encoding);
            let mut decoder = Decoder::new(encoding);
            let mut out = Vec::new();
            for event in events {
                let bytes = encoder.write_and_flush(event);
                out.clear();
                for byte in bytes.chunks(1) {
                    decoder.push(byte, &mut out).unwrap();
                }
                assert_eq!(out, event, "{encoding}: event decoded before the end");
            }
            out.clear();
            decoder.push(&encoder.finish(), &mut out).unwrap();
            decoder.finish(&mut out).unwrap();
            assert_eq!(out, b"", "{encoding}: nothing left at the end");
        }
    }

    /// An encoder that can sync-flush mid-stream, as a server does after each SSE event.
    enum FlushingEncoder {
        Gzip(flate2::write::GzEncoder<Vec<u8>>),
        Zlib(flate2::write::ZlibEncoder<Vec<u8>>),
        Brotli(Box<brotli::CompressorWriter<Vec<u8>>>),
        Zstd(zstd::stream::write::Encoder<'static, Vec<u8>>),
    }

    impl FlushingEncoder {
        fn new(encoding: Encoding) -> Self {
            let level = flate2::Compression::default();
            match encoding {
                Encoding::Gzip => Self::Gzip(flate2::write::GzEncoder::new(Vec::new(), level)),
                Encoding::Deflate => Self::Zlib(flate2::write::ZlibEncoder::new(Vec::new(), level)),
                Encoding::Brotli => Self::Brotli(Box::new(brotli::CompressorWriter::new(
                    Vec::new(),
                    4096,
                    5,
                    22,
                ))),
                Encoding::Zstd => {
                    Self::Zstd(zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap())
                }
            }
        }

        fn write_and_flush(&mut self, data: &[u8]) -> Vec<u8> {
            fn step<W: Write>(
                w: &mut W,
                data: &[u8],
                inner: impl FnOnce(&mut W) -> &mut Vec<u8>,
            ) -> Vec<u8> {
                w.write_all(data).unwrap();
                w.flush().unwrap();
                std::mem::take(inner(w))
            }
            match self {
                Self::Gzip(e) => step(e, data, |e| e.get_mut()),
                Self::Zlib(e) => step(e, data, |e| e.get_mut()),
                Self::Brotli(e) => step(e.as_mut(), data, |e| e.get_mut()),
                Self::Zstd(e) => step(e, data, |e| e.get_mut()),
            }
        }

        fn finish(self) -> Vec<u8> {
            match self {
                Self::Gzip(e) => e.finish().unwrap(),
                Self::Zlib(e) => e.finish().unwrap(),
                Self::Brotli(e) => e.into_inner(),
                Self::Zstd(e) => e.finish().unwrap(),
            }
        }
    }

    #[test]
    fn stacked_codings_decode_last_applied_first() {
        // `Content-Encoding: gzip, br`: gzip was applied first, brotli over it.
        let body = brotli(&gzip(TEXT));
        let codings = Encoding::parse_list([&b"gzip, br"[..]]).unwrap();
        for chunk in [0, 1, 5] {
            let mut d = Decoder::stacked(&codings).unwrap();
            assert_eq!(decode(&mut d, &body, chunk).unwrap(), TEXT, "chunk {chunk}");
        }
        assert!(Decoder::stacked(&[]).is_none());

        // The inner stream is cut: the inner stage reports it at finish.
        let body = brotli(&gzip(TEXT)[..20]);
        let err = decode(&mut Decoder::stacked(&codings).unwrap(), &body, 3).unwrap_err();
        assert_eq!(
            (err.encoding(), err.kind()),
            (Encoding::Gzip, DecodeErrorKind::Truncated)
        );
    }

    #[test]
    fn oversized_zstd_window_is_refused() {
        let data = vec![7u8; 1 << 16];
        let mut encoder = zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap();
        encoder.window_log(ZSTD_WINDOW_LOG_MAX + 2).unwrap();
        // Without a known content size the frame header must declare the big window.
        encoder.include_contentsize(false).unwrap();
        encoder.write_all(&data).unwrap();
        let body = encoder.finish().unwrap();
        let err = decode(&mut Decoder::new(Encoding::Zstd), &body, 0).unwrap_err();
        assert_eq!(err.kind(), DecodeErrorKind::Corrupt);
    }

    fn arb_stack() -> impl Strategy<Value = Vec<Encoding>> {
        let one = prop::sample::select(ALL.to_vec());
        prop::collection::vec(one, 1..=2)
    }

    fn arb_body() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            prop::collection::vec(any::<u8>(), 0..2048),
            // Repetitive input exercises back-references across chunk splits.
            (prop::collection::vec(any::<u8>(), 1..16), 0usize..400)
                .prop_map(|(unit, times)| unit.repeat(times)),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Any body, any stack of codings, any split of the compressed stream: the decoded
        /// output is the original body.
        #[test]
        fn any_chunking_decodes_to_the_original(
            body in arb_body(),
            codings in arb_stack(),
            raw in any::<bool>(),
            splits in prop::collection::vec(1usize..64, 1..32),
        ) {
            let mut compressed = body.clone();
            for &coding in &codings {
                compressed = match (coding, raw) {
                    (Encoding::Deflate, true) => raw_deflate(&compressed),
                    (coding, _) => compress(coding, &compressed),
                };
            }
            let mut decoder = Decoder::stacked(&codings).unwrap();
            let mut out = Vec::new();
            let mut rest = &compressed[..];
            for size in splits.iter().cycle() {
                if rest.is_empty() {
                    break;
                }
                let (piece, tail) = rest.split_at((*size).min(rest.len()));
                decoder.push(piece, &mut out).unwrap();
                rest = tail;
            }
            decoder.finish(&mut out).unwrap();
            prop_assert_eq!(out, body);
        }
    }
}

/// The budget: bombs of every codec are refused while they are being decoded, before the
/// output (or any scratch buffer) grows past the limit; legitimate data below the budget
/// passes whatever the split.
#[cfg(test)]
#[allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]
mod budget_tests {
    use super::*;
    use std::io::Write;

    const MIB: usize = 1 << 20;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn zlib(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn raw_deflate(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn brotli_with(data: &[u8], large_window: bool) -> Vec<u8> {
        let params = brotli::enc::BrotliEncoderParams {
            quality: 5,
            lgwin: if large_window { 26 } else { 22 },
            large_window,
            ..Default::default()
        };
        let mut out = Vec::new();
        brotli::BrotliCompress(&mut &data[..], &mut out, &params).unwrap();
        out
    }

    fn brotli(data: &[u8]) -> Vec<u8> {
        brotli_with(data, false)
    }

    fn zstd(data: &[u8]) -> Vec<u8> {
        zstd::encode_all(data, 19).unwrap()
    }

    /// A zstd skippable frame: valid, and decodes to nothing.
    fn zstd_skippable(len: usize) -> Vec<u8> {
        let mut frame = 0x184D_2A50_u32.to_le_bytes().to_vec();
        frame.extend(u32::try_from(len).unwrap().to_le_bytes());
        frame.resize(8 + len, 0);
        frame
    }

    /// Text that compresses about 5:1, like JSON or logs.
    fn text(len: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(len + 64);
        let mut x: u32 = 12345;
        while out.len() < len {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            let line = format!(
                "{{\"id\":{},\"user\":\"u{}\",\"ok\":{}}}\n",
                x % 100_000,
                (x >> 8) % 977,
                x.is_multiple_of(3)
            );
            out.extend_from_slice(line.as_bytes());
        }
        out.truncate(len);
        out
    }

    struct Case {
        name: &'static str,
        /// Applied first to last, as in `Content-Encoding`.
        codings: &'static [Encoding],
        body: Vec<u8>,
        /// Decoded size of the body.
        decoded: usize,
    }

    fn bombs() -> Vec<Case> {
        let zeros = vec![0u8; 16 * MIB];
        vec![
            Case {
                name: "gzip bomb",
                codings: &[Encoding::Gzip],
                body: gzip(&zeros),
                decoded: zeros.len(),
            },
            Case {
                name: "deflate (zlib) bomb",
                codings: &[Encoding::Deflate],
                body: zlib(&zeros),
                decoded: zeros.len(),
            },
            Case {
                name: "deflate (raw) bomb",
                codings: &[Encoding::Deflate],
                body: raw_deflate(&zeros),
                decoded: zeros.len(),
            },
            Case {
                name: "br bomb",
                codings: &[Encoding::Brotli],
                body: brotli(&zeros),
                decoded: zeros.len(),
            },
            Case {
                name: "zstd bomb",
                codings: &[Encoding::Zstd],
                body: zstd(&zeros),
                decoded: zeros.len(),
            },
            Case {
                name: "gzip bomb inside br",
                codings: &[Encoding::Gzip, Encoding::Brotli],
                body: brotli(&gzip(&zeros)),
                decoded: zeros.len(),
            },
            Case {
                name: "gzip bomb inside gzip",
                codings: &[Encoding::Gzip, Encoding::Gzip],
                body: gzip(&gzip(&zeros)),
                decoded: zeros.len(),
            },
            Case {
                name: "zstd bomb inside deflate",
                codings: &[Encoding::Zstd, Encoding::Deflate],
                body: zlib(&zstd(&zeros)),
                decoded: zeros.len(),
            },
            // The intermediate stage expands, the final output is empty: the intermediate
            // stage is held to the budget too.
            Case {
                name: "zstd skippable frame inside gzip",
                codings: &[Encoding::Zstd, Encoding::Gzip],
                body: gzip(&zstd_skippable(16 * MIB)),
                decoded: 0,
            },
        ]
    }

    /// Pushes `body` in pieces of `size` bytes (all at once for 0) into a fresh `Vec` each,
    /// checking that no push appends more than its step allows and that the buffer's capacity
    /// (the allocation) stays within the step limit too.
    fn decode_checked(
        decoder: &mut Decoder,
        budget: Budget,
        body: &[u8],
        size: usize,
    ) -> Result<u64, DecodeError> {
        let size = if size == 0 { body.len().max(1) } else { size };
        let mut total = 0u64;
        let mut check = |out: &Vec<u8>, limit: u64| {
            assert!(out.len() as u64 <= limit, "{} > {limit}", out.len());
            assert!(
                out.capacity() as u64 <= limit,
                "capacity {} > {limit}",
                out.capacity()
            );
            total += out.len() as u64;
        };
        for piece in body.chunks(size) {
            let mut out = Vec::new();
            let result = decoder.push(piece, &mut out);
            check(&out, budget.step_limit(piece.len()));
            assert!(decoder.scratch_capacity() <= 2 * CHUNK * decoder.stages.len());
            result?;
        }
        let mut out = Vec::new();
        let result = decoder.finish(&mut out);
        check(&out, STEP_SLACK);
        result?;
        Ok(total)
    }

    #[test]
    fn bombs_are_refused_while_decoding_whatever_the_split() {
        // Ratio 10: a whole-body push of a bomb exceeds its step; small pushes stay within
        // their steps and hit the 4 MiB total instead.
        let budget = Budget {
            max_ratio: 10,
            max_bytes: 4 * MIB as u64,
        };
        for case in bombs() {
            for size in [0, 64 * 1024, 1024, 7] {
                let mut decoder = Decoder::stacked(case.codings).unwrap().with_budget(budget);
                let err = decode_checked(&mut decoder, budget, &case.body, size).unwrap_err();
                assert!(
                    err.is_over_budget(),
                    "{}, pieces of {size}: {err}",
                    case.name
                );
                if size == 0 {
                    assert_eq!(err.kind(), DecodeErrorKind::RatioExceeded, "{}", case.name);
                }
                if case.decoded == 0 {
                    // Only the intermediate stage can have been over budget.
                    assert_eq!(err.encoding(), Encoding::Gzip, "{}", case.name);
                }
            }
        }
    }

    #[test]
    fn bombs_pass_a_budget_that_allows_them() {
        // Deflate's ratio is at most about 1032:1, but brotli and zstd encode 16 MiB of zeros
        // in a few dozen bytes: the ratio is effectively unlimited here, and every stage's output
        // (16 MiB and a few headers) fits in the total.
        let budget = Budget {
            max_ratio: 1 << 32,
            max_bytes: 17 * MIB as u64,
        };
        for case in bombs() {
            for size in [0, 1024] {
                let mut decoder = Decoder::stacked(case.codings).unwrap().with_budget(budget);
                let total = decode_checked(&mut decoder, budget, &case.body, size)
                    .unwrap_or_else(|e| panic!("{}, pieces of {size}: {e}", case.name));
                assert_eq!(total, case.decoded as u64, "{}", case.name);
            }
        }
    }

    #[test]
    fn legitimate_data_below_the_budget_decodes_whatever_the_split() {
        let plain = text(2 * MIB);
        let cases = [
            ("gzip", vec![Encoding::Gzip], gzip(&plain)),
            ("deflate", vec![Encoding::Deflate], zlib(&plain)),
            ("deflate raw", vec![Encoding::Deflate], raw_deflate(&plain)),
            ("br", vec![Encoding::Brotli], brotli(&plain)),
            ("zstd", vec![Encoding::Zstd], zstd(&plain)),
            (
                "gzip, br",
                vec![Encoding::Gzip, Encoding::Brotli],
                brotli(&gzip(&plain)),
            ),
        ];
        let budget = Budget::DEFAULT;
        for (name, codings, body) in &cases {
            assert!(
                body.len() * 2 < plain.len(),
                "{name}: the data should compress"
            );
            for size in [0, 64 * 1024, 16 * 1024, 1000, 1] {
                let mut decoder = Decoder::stacked(codings).unwrap().with_budget(budget);
                let mut out = Vec::new();
                let pieces = if size == 0 { body.len() } else { size };
                for piece in body.chunks(pieces) {
                    decoder.push(piece, &mut out).unwrap();
                }
                decoder.finish(&mut out).unwrap();
                assert!(out == plain, "{name}, pieces of {size}");
            }
        }
    }

    #[test]
    fn the_total_is_counted_across_pushes() {
        let plain = text(3 * MIB);
        let budget = Budget {
            max_ratio: 100,
            max_bytes: 2 * MIB as u64,
        };
        let mut decoder = Decoder::new(Encoding::Gzip).with_budget(budget);
        let err = decode_checked(&mut decoder, budget, &gzip(&plain), 4096).unwrap_err();
        assert_eq!(err.kind(), DecodeErrorKind::SizeExceeded);
        assert_eq!(
            err.to_string(),
            format!(
                "gzip body: decoded to more than the decoding budget allows (max_bytes) \
                 (after {} compressed bytes)",
                err.offset()
            )
        );
        // Exactly the limit is fine.
        let exact = Budget {
            max_ratio: 100,
            max_bytes: plain.len() as u64,
        };
        let mut decoder = Decoder::new(Encoding::Gzip).with_budget(exact);
        assert_eq!(
            decode_checked(&mut decoder, exact, &gzip(&plain), 4096).unwrap(),
            plain.len() as u64
        );
    }

    #[test]
    fn large_window_brotli_is_refused() {
        let data = vec![7u8; 1 << 16];
        let body = brotli_with(&data, true);
        let mut decoder = Decoder::new(Encoding::Brotli);
        let mut out = Vec::new();
        let err = decoder
            .push(&body, &mut out)
            .and_then(|()| decoder.finish(&mut out))
            .unwrap_err();
        assert_eq!(err.kind(), DecodeErrorKind::Corrupt);
    }

    #[test]
    fn brotli_trailing_bytes_are_refused() {
        let mut body = brotli(b"hello");
        body.extend_from_slice(b"junk");
        for size in [0, 1] {
            let mut decoder = Decoder::new(Encoding::Brotli);
            let err = decode_checked(&mut decoder, Budget::DEFAULT, &body, size).unwrap_err();
            assert_eq!(
                err.kind(),
                DecodeErrorKind::TrailingData,
                "pieces of {size}"
            );
        }
    }
}
