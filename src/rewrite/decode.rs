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

mod stages;

use stages::{feed, Limits, Stage};

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
        self.stages.iter_mut().map(Stage::scratch_capacity).sum()
    }
}

#[cfg(test)]
#[path = "decode_tests.rs"]
mod tests;

/// The budget: bombs of every codec are refused while they are being decoded, before the
/// output (or any scratch buffer) grows past the limit; legitimate data below the budget
/// passes whatever the split.
#[cfg(test)]
#[path = "decode_budget_tests.rs"]
mod budget_tests;
