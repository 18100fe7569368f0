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
//! Nothing is buffered across pushes except the codec's own state: the 32 KiB window of
//! gzip/deflate, brotli's window (at most 16 MiB, the format's limit without the large-window
//! extension), and zstd's window, capped at 8 MiB ([`ZSTD_WINDOW_LOG_MAX`], the limit RFC 9659
//! sets for `zstd` as an HTTP content coding; a frame asking for more is refused). Stacked codings
//! are limited to [`MAX_STACKED_CODINGS`] so a header cannot make the gateway allocate one codec
//! state per token. The decoded size is deliberately not capped relative to the input: bodies may
//! be huge, and they are streamed, not held.
//!
//! # Example
//!
//! ```
//! use std::io::Write;
//! use slapenir::decode::{Decoder, Encoding};
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

use flate2::write::{DeflateDecoder, MultiGzDecoder, ZlibDecoder};

/// The largest zstd window the decoder accepts, as a power of two (8 MiB).
///
/// RFC 9659 requires encoders of the `zstd` HTTP content coding to stay within an 8 MiB window,
/// and lets decoders refuse larger ones. Refusing them bounds the memory one response can take.
pub const ZSTD_WINDOW_LOG_MAX: u32 = 23;

/// The most content codings one body may stack (`Content-Encoding: gzip, br` is two).
///
/// Real servers apply one; each extra stage costs a codec state, so a longer list is refused.
pub const MAX_STACKED_CODINGS: usize = 4;

/// Size of the scratch buffer the brotli decoder writes through.
const BROTLI_BUFFER: usize = 4096;

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
    /// use slapenir::decode::Encoding;
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
    /// use slapenir::decode::Encoding;
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
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.kind {
            DecodeErrorKind::Corrupt => "invalid compressed data",
            DecodeErrorKind::Truncated => "body ended before the compressed stream did",
            DecodeErrorKind::TrailingData => "bytes after the end of the compressed stream",
            DecodeErrorKind::Unusable => "decoder used after it finished or failed",
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
/// fails with [`DecodeErrorKind::Unusable`].
pub struct Decoder {
    /// Stages in the order the codings were applied; input goes through them last to first.
    stages: Vec<Stage>,
    /// Output of each stage but the last, reused between pushes (always empty between calls).
    scratch: Vec<Vec<u8>>,
    /// The last coding applied: the one the body arrives in.
    outermost: Encoding,
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
    /// use slapenir::decode::{Decoder, Encoding};
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
            scratch: Vec::new(),
            outermost: encoding,
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
    /// use slapenir::decode::{Decoder, Encoding};
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
            scratch: vec![Vec::new(); codings.len() - 1],
            outermost,
            state: State::Open,
        })
    }

    /// Feeds the next chunk of the compressed body and appends every byte the codec can
    /// produce from it to `out`. Any split of the body is fine, down to one byte per call; an
    /// empty chunk does nothing.
    ///
    /// # Errors
    ///
    /// [`DecodeError`] if the bytes are not a valid stream, if bytes follow the end of the
    /// stream, or if the decoder has already finished or failed. What was appended to `out`
    /// before the error is valid decoded output, but the body as a whole must be treated as
    /// failed.
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

    /// Ends the body: appends any remaining output to `out` and checks that every compressed
    /// stream was complete.
    ///
    /// A body of zero bytes decodes to zero bytes whatever its declared coding, since servers
    /// label empty bodies (such as `204` responses) with the coding they would have used.
    ///
    /// # Errors
    ///
    /// [`DecodeError`] with [`DecodeErrorKind::Truncated`] (or [`DecodeErrorKind::Corrupt`]
    /// when a gzip trailer is cut or wrong) if the body ended inside a compressed stream, and
    /// [`DecodeErrorKind::Unusable`] if called twice or after an error.
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
    /// first. Intermediate output lives in `scratch` only for the length of this call.
    fn run(&mut self, input: Option<&[u8]>, out: &mut Vec<u8>) -> Result<(), DecodeError> {
        let count = self.stages.len();
        let mut carried: Vec<u8> = Vec::new();
        for (done, stage) in self.stages.iter_mut().rev().enumerate() {
            let is_first_applied = done + 1 == count;
            let target = if is_first_applied {
                &mut *out
            } else {
                &mut self.scratch[done]
            };
            let result = match (input, done) {
                (Some(bytes), 0) => stage.push(bytes, target),
                (None, 0) => stage.finish(target),
                (_, _) => {
                    let pushed = stage.push(&carried, target);
                    // At the end of the body each inner stage also ends.
                    match (pushed, input) {
                        (Ok(()), None) => stage.finish(target),
                        (other, _) => other,
                    }
                }
            };
            carried.clear();
            if !is_first_applied {
                std::mem::swap(&mut carried, &mut self.scratch[done]);
            }
            result?;
        }
        Ok(())
    }
}

/// One coding's decoder, writing into a `Vec` that is swapped with the caller's output for the
/// length of each call, so decoded bytes land in place without a copy.
struct Stage {
    encoding: Encoding,
    codec: Codec,
    /// Compressed bytes accepted so far.
    consumed: u64,
}

enum Codec {
    /// `deflate` before its first two bytes are known (holds at most one byte).
    DeflateUnsniffed(Vec<u8>),
    Gzip(MultiGzDecoder<Vec<u8>>),
    Zlib(ZlibDecoder<Vec<u8>>),
    RawDeflate(DeflateDecoder<Vec<u8>>),
    Brotli(Box<brotli::DecompressorWriter<Vec<u8>>>),
    Zstd(zstd::stream::write::Decoder<'static, Vec<u8>>),
    /// zstd could not set up its context: every call fails.
    ZstdUnavailable,
}

impl Stage {
    fn new(encoding: Encoding) -> Stage {
        let codec = match encoding {
            Encoding::Gzip => Codec::Gzip(MultiGzDecoder::new(Vec::new())),
            Encoding::Deflate => Codec::DeflateUnsniffed(Vec::with_capacity(1)),
            Encoding::Brotli => Codec::Brotli(Box::new(brotli::DecompressorWriter::new(
                Vec::new(),
                BROTLI_BUFFER,
            ))),
            Encoding::Zstd => match zstd::stream::write::Decoder::new(Vec::new()) {
                Ok(mut decoder) => match decoder.window_log_max(ZSTD_WINDOW_LOG_MAX) {
                    Ok(()) => Codec::Zstd(decoder),
                    Err(_) => Codec::ZstdUnavailable,
                },
                Err(_) => Codec::ZstdUnavailable,
            },
        };
        Stage {
            encoding,
            codec,
            consumed: 0,
        }
    }

    fn error(&self, kind: DecodeErrorKind) -> DecodeError {
        DecodeError {
            encoding: self.encoding,
            kind,
            offset: self.consumed,
        }
    }

    fn push(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<(), DecodeError> {
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
        let result = with_output(&mut self.codec, out, |codec| match codec {
            Codec::Gzip(d) => write_and_flush(d, input),
            Codec::Zlib(d) => write_and_flush(d, input),
            Codec::RawDeflate(d) => write_and_flush(d, input),
            Codec::Brotli(d) => write_and_flush(d.as_mut(), input),
            Codec::Zstd(d) => write_and_flush(d, input),
            Codec::DeflateUnsniffed(_) | Codec::ZstdUnavailable => {
                Err(io::Error::other("codec unavailable"))
            }
        });
        match result {
            Ok(()) => {
                self.consumed += input.len() as u64;
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::WriteZero => {
                Err(self.error(DecodeErrorKind::TrailingData))
            }
            Err(_) => Err(self.error(DecodeErrorKind::Corrupt)),
        }
    }

    fn finish(&mut self, out: &mut Vec<u8>) -> Result<(), DecodeError> {
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
        let result = with_output(&mut self.codec, out, |codec| match codec {
            Codec::Gzip(d) => d.try_finish(),
            Codec::Zlib(d) => d.try_finish(),
            Codec::RawDeflate(d) => d.try_finish(),
            Codec::Brotli(d) => d.close(),
            Codec::Zstd(d) => d.do_finish(),
            Codec::DeflateUnsniffed(_) | Codec::ZstdUnavailable => {
                Err(io::Error::other("codec unavailable"))
            }
        });
        match result {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::InvalidInput => {
                Err(self.error(DecodeErrorKind::Corrupt))
            }
            Err(_) => Err(self.error(DecodeErrorKind::Truncated)),
        }
    }
}

/// A zlib header (RFC 1950 section 2.2): deflate method, window of at most 32 KiB, and a check
/// value making the first two bytes a multiple of 31. Raw deflate rarely starts like this (a
/// stored block whose length happens to fit); browsers use the same test.
fn is_zlib_header(cmf: u8, flg: u8) -> bool {
    cmf & 0x0f == 8 && cmf >> 4 <= 7 && (u16::from(cmf) << 8 | u16::from(flg)) % 31 == 0
}

/// Swaps `out` in as the codec's output `Vec` for the length of `f`, then swaps it back (on
/// error too), so the codec appends straight to the caller's buffer.
fn with_output(
    codec: &mut Codec,
    out: &mut Vec<u8>,
    f: impl FnOnce(&mut Codec) -> io::Result<()>,
) -> io::Result<()> {
    swap_output(codec, out);
    let result = f(codec);
    swap_output(codec, out);
    result
}

fn swap_output(codec: &mut Codec, out: &mut Vec<u8>) {
    let inner = match codec {
        Codec::Gzip(d) => d.get_mut(),
        Codec::Zlib(d) => d.get_mut(),
        Codec::RawDeflate(d) => d.get_mut(),
        Codec::Brotli(d) => d.get_mut(),
        Codec::Zstd(d) => d.get_mut(),
        Codec::DeflateUnsniffed(_) | Codec::ZstdUnavailable => return,
    };
    std::mem::swap(inner, out);
}

/// Writes all of `input`, then flushes so that output the codec holds in its own buffer is
/// written out now rather than at the next call (flate2 and zstd buffer internally).
fn write_and_flush(writer: &mut impl Write, input: &[u8]) -> io::Result<()> {
    writer.write_all(input)?;
    writer.flush()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
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
