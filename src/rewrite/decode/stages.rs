//! The stages of a [`super::Decoder`]: one per coding (gzip, zlib, raw deflate, brotli,
//! zstd), each writing into a scratch buffer of its own that is counted against the budget
//! before it is handed to the next stage in (or to the caller), and the walk that pushes a
//! chunk through all of them ([`feed`]).

use std::io::{self, Write};

use brotli::enc::StandardAlloc;
use brotli::{BrotliDecompressStream, BrotliResult, BrotliState};
use flate2::write::{DeflateDecoder, MultiGzDecoder, ZlibDecoder};
use zstd::stream::raw::{DParameter, InBuffer, Operation, OutBuffer};

use super::{DecodeError, DecodeErrorKind, Encoding, CHUNK, ZSTD_WINDOW_LOG_MAX};

/// The budget of one step, for every stage.
pub(super) struct Limits {
    /// Bytes each stage may produce in this step.
    pub(super) step: u64,
    /// Bytes each stage may produce in the whole body.
    pub(super) total: u64,
    /// The most capacity the caller's output may grow to in this step.
    pub(super) capacity: usize,
}

/// Where a stage's output goes: the next stage in, or the caller's buffer.
type Sink<'a> = dyn FnMut(&[u8]) -> Result<(), DecodeError> + 'a;

/// Passes `input` (the end of the body for `None`) through `stages` (applied first ... last;
/// the last receives `input`), appending the innermost stage's output to `out`. Each scratch
/// load an outer stage produces goes through the inner stages before the next is produced.
pub(super) fn feed(
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
pub(super) struct Stage {
    pub(super) encoding: Encoding,
    codec: Codec,
    /// Compressed bytes accepted so far.
    pub(super) consumed: u64,
    /// Decoded bytes produced so far, and in the current step.
    produced: u64,
    pub(super) produced_in_step: u64,
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
    /// Bytes allocated for the stage's scratch buffer.
    #[cfg(test)]
    pub(super) fn scratch_capacity(&mut self) -> usize {
        match &mut self.codec {
            Codec::Gzip(d) => d.scratch().capacity(),
            Codec::Zlib(d) => d.scratch().capacity(),
            Codec::RawDeflate(d) => d.scratch().capacity(),
            Codec::Brotli(b) => b.buf.capacity(),
            Codec::Zstd(z) => z.buf.capacity(),
            Codec::DeflateUnsniffed(_) | Codec::ZstdUnavailable => 0,
        }
    }

    pub(super) fn new(encoding: Encoding) -> Stage {
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
