//! WebSocket frames (RFC 6455) scanned on an upgraded connection, one direction per
//! [`WsScanner`]: frames from the agent get their dummies replaced (or are refused) before
//! they reach the upstream, and frames from the upstream get every real secret turned back
//! into its dummy before they reach the agent. No Pingora types here; the proxy feeds each
//! side's bytes in as they are read.
//!
//! # What a scanner does
//!
//! It parses frames incrementally, whatever the split of its input (down to one byte per
//! call, headers split too), and emits new frames:
//!
//! - **Data messages** (text, binary and their continuation frames): the payload of one
//!   *message* — its first data frame through the frame with FIN — runs through one
//!   [`RewriteStream`], so a needle split across two fragments or two reads is found. The
//!   bytes the rewriter releases are emitted at once as frames of their own: the first frame
//!   of a message carries its opcode, later ones are continuation frames, and the frame that
//!   ends the message (with FIN) carries what the rewriter still held (an empty FIN frame if
//!   nothing was held). No empty frame without FIN is ever emitted. An intermediary may
//!   re-fragment a message that uses no extension (RFC 6455 §5.4), and no extension is
//!   allowed here (see below).
//! - **Control frames** (close, ping, pong) may come between the fragments of a message
//!   without disturbing its stream. Their payload (at most 125 bytes) is buffered, rewritten in
//!   one go and sent on. A payload the rewrite made longer than 125 bytes is cut: a close frame
//!   keeps its 2-byte status code and its reason is cut at a UTF-8 character boundary; a ping
//!   or pong is cut at 125 bytes. Data of the open message that the rewriter has released goes
//!   out before the control frame.
//! - **After a close frame** has passed in a direction, any further frame in that direction is a
//!   protocol error (RFC 6455 §5.5.1: an endpoint sends nothing after its close frame), and the
//!   scanner refuses it rather than dropping it silently, so the connection ends.
//!
//! Text messages stay valid UTF-8 as long as every replacement is ASCII (dummies and API keys
//! are): an ASCII needle never begins or ends inside a multi-byte character, and an ASCII
//! replacement cannot break one. Emitted fragments may split a character, as the RFC allows.
//!
//! # Masking
//!
//! Frames from the agent must be masked and frames from the upstream must not be. Frames sent
//! to the upstream are masked with a fresh key per frame from the operating system's random
//! source: the agent chooses its own keys, so reusing them would let it choose the bytes on the
//! wire to the upstream, which is what masking exists to prevent.
//!
//! # Refused streams
//!
//! A scanner refuses ([`WsError::Protocol`]) whatever it cannot scan or is malformed: an RSV
//! bit set (extensions such as permessage-deflate — the proxy strips the agent's
//! `Sec-WebSocket-Extensions` offer and refuses a `101` that accepts one anyway), a reserved
//! opcode, an unmasked frame from the agent or a masked one from the upstream, a 64-bit length
//! with its top bit set, a continuation frame with no open message, a new data frame while a
//! message is open, a fragmented or oversize control frame, a close frame with a 1-byte
//! payload, a frame after a close frame, and a stream that ends inside a frame or a message. A
//! dummy that may not go to this upstream is [`WsError::Refused`]. After an error every later
//! call returns it again.
//!
//! # Memory
//!
//! Per scanner: the rewriter's hold-back (less than the longest needle, see
//! [`crate::rewrite`]), a frame header (14 bytes), one control payload (125 bytes), the
//! unmasked payload slice (at most [`SLICE`] bytes) and the released bytes not yet framed
//! (fewer than [`SLICE`], plus the rewritten output of one slice) — whatever the size of
//! frames, messages or input chunks. Nothing waits for the end of a frame or a message. The
//! scratch buffers, the control payload and the rewriter's state are zeroized when cleared;
//! output appended to the caller's `Vec` is the caller's to wipe.
//!
//! # Example
//!
//! ```
//! use std::sync::Arc;
//! use slapenir::rewrite::{Action, Rewriter, Rule};
//! use slapenir::rewrite::websocket::{Direction, WsScanner};
//! use zeroize::Zeroizing;
//!
//! let rw = Arc::new(Rewriter::new(vec![Rule {
//!     name: "openai".into(),
//!     needle: Zeroizing::new(b"sk-real-1".to_vec()),
//!     action: Action::Replace(Zeroizing::new(b"sk-dummy".to_vec())),
//! }])?);
//! let mut scanner = WsScanner::new(Direction::ToAgent, rw);
//! let mut out = Vec::new();
//! // An unmasked text frame with FIN, as an upstream sends it, in two reads.
//! scanner.push(b"\x81\x0dkey sk-r", &mut out)?;
//! scanner.push(b"eal-1", &mut out)?;
//! scanner.finish(&mut out)?;
//! // "key " went out at once (a non-FIN text frame); the end of the message with FIN.
//! assert_eq!(out, b"\x01\x04key \x80\x08sk-dummy");
//! assert_eq!(scanner.hits().total(), 1);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fmt;
use std::sync::Arc;

use ring::rand::{SecureRandom, SystemRandom};
use zeroize::{Zeroize, Zeroizing};

use crate::rewrite::{Hits, Refused, RewriteStream, Rewriter};

/// Largest payload slice handled at once, and the size past which released bytes are sent as
/// a frame without waiting for the end of the input chunk: bounds the scratch buffers.
pub const SLICE: usize = 16 * 1024;

/// Longest control frame payload (RFC 6455 §5.5).
const MAX_CONTROL: usize = 125;

const OP_CONTINUATION: u8 = 0x0;
const OP_TEXT: u8 = 0x1;
const OP_BINARY: u8 = 0x2;
const OP_CLOSE: u8 = 0x8;
const OP_PING: u8 = 0x9;
const OP_PONG: u8 = 0xA;

/// Which way the frames go; decides the masking rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Frames from the agent to the upstream: they must arrive masked, and go out masked with
    /// a fresh key. Use the upstream's request rewriter (dummy → real; foreign dummy refused).
    ToUpstream,
    /// Frames from the upstream to the agent: they must arrive unmasked, and go out unmasked.
    /// Use the response rewriter (real → dummy).
    ToAgent,
}

/// Why a scanner stopped. Names credentials, never values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WsError {
    /// A dummy that may not be used here was found in a frame.
    Refused(Refused),
    /// The frames are malformed or use something the gateway cannot scan; says which rule.
    Protocol(&'static str),
    /// The operating system's random source failed to give a masking key.
    Random,
}

impl fmt::Display for WsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WsError::Refused(r) => write!(f, "{r}"),
            WsError::Protocol(what) => write!(f, "WebSocket protocol error: {what}"),
            WsError::Random => f.write_str("no random masking key available"),
        }
    }
}

impl std::error::Error for WsError {}

/// The frame whose payload is being read.
#[derive(Debug, Clone, Copy)]
struct Frame {
    fin: bool,
    opcode: u8,
    key: Option<[u8; 4]>,
    /// Payload bytes still to read.
    remaining: u64,
    /// Position in the masking key of the next payload byte.
    key_pos: usize,
}

/// The data message between its first frame and its frame with FIN.
#[derive(Debug, Clone, Copy)]
struct Message {
    opcode: u8,
    /// A frame of it has been emitted, so later ones are continuation frames.
    started: bool,
}

/// Scans the frames of one direction of an upgraded connection; see the
/// [module documentation](self).
pub struct WsScanner {
    direction: Direction,
    rw: Arc<Rewriter>,
    /// The rewriter state of the open message; finished (and so emptied) at each message end.
    stream: RewriteStream,
    /// Replacements in control frames.
    control_hits: Hits,
    header: [u8; 14],
    header_len: usize,
    frame: Option<Frame>,
    message: Option<Message>,
    /// Unmasked payload of the control frame being read.
    control: Zeroizing<Vec<u8>>,
    /// Bytes of the open message the rewriter released and no frame carries yet.
    pending: Zeroizing<Vec<u8>>,
    /// Unmasked payload slice (frames from the agent).
    unmasked: Zeroizing<Vec<u8>>,
    /// A close frame has passed.
    closed: bool,
    failed: Option<WsError>,
    rng: SystemRandom,
}

impl fmt::Debug for WsScanner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WsScanner")
            .field("direction", &self.direction)
            .field("frame", &self.frame.map(|fr| (fr.opcode, fr.remaining)))
            .field("message_open", &self.message.is_some())
            .field("closed", &self.closed)
            .field("failed", &self.failed)
            .finish_non_exhaustive()
    }
}

impl WsScanner {
    /// A scanner for one direction of one connection, rewriting with `rewriter`.
    pub fn new(direction: Direction, rewriter: Arc<Rewriter>) -> Self {
        WsScanner {
            direction,
            stream: rewriter.stream(),
            rw: rewriter,
            control_hits: Hits::new(),
            header: [0; 14],
            header_len: 0,
            frame: None,
            message: None,
            control: Zeroizing::new(Vec::with_capacity(MAX_CONTROL)),
            pending: Zeroizing::new(Vec::new()),
            unmasked: Zeroizing::new(Vec::new()),
            closed: false,
            failed: None,
            rng: SystemRandom::new(),
        }
    }

    /// Feeds bytes read from one side (any split, one byte at a time too) and appends the
    /// frames to send on to `out`.
    ///
    /// # Errors
    ///
    /// A [`WsError`] as described in the [module documentation](self); frames before the
    /// faulty one may already be in `out` (send them or not: they were scanned). The scanner
    /// stays failed.
    pub fn push(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<(), WsError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let res = self.push_inner(input, out);
        self.fail_on(res)
    }

    /// The side's stream ended: nothing more will come.
    ///
    /// # Errors
    ///
    /// [`WsError::Protocol`] when it ended inside a frame or a message; whatever of that
    /// message the rewriter still held is dropped, never sent.
    pub fn finish(&mut self, _out: &mut Vec<u8>) -> Result<(), WsError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let res = if self.header_len > 0 || self.frame.is_some() {
            Err(WsError::Protocol("the stream ended inside a frame"))
        } else if self.message.is_some() {
            Err(WsError::Protocol(
                "the stream ended inside a fragmented message",
            ))
        } else {
            Ok(())
        };
        self.fail_on(res)
    }

    /// Replacements made so far, per rule index of the rewriter (data and control frames).
    pub fn hits(&self) -> Hits {
        let mut hits = self.stream.hits().clone();
        hits.merge(&self.control_hits);
        hits
    }

    /// Whether a close frame has passed in this direction.
    pub fn closed(&self) -> bool {
        self.closed
    }

    /// Records a failure so later calls repeat it, and wipes the buffers.
    fn fail_on(&mut self, res: Result<(), WsError>) -> Result<(), WsError> {
        if let Err(e) = &res {
            self.failed = Some(e.clone());
            wipe(&mut self.pending);
            wipe(&mut self.unmasked);
            wipe(&mut self.control);
            self.stream = self.rw.stream();
        }
        res
    }

    fn push_inner(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<(), WsError> {
        let mut rest = input;
        while !rest.is_empty() {
            match self.frame {
                None => {
                    let used = self.take_header(rest)?;
                    rest = &rest[used..];
                }
                Some(frame) => {
                    let n = usize::try_from(frame.remaining)
                        .unwrap_or(usize::MAX)
                        .min(rest.len())
                        .min(SLICE);
                    let (slice, tail) = rest.split_at(n);
                    self.payload(slice, out)?;
                    rest = tail;
                }
            }
            if self.frame.is_some_and(|f| f.remaining == 0) {
                self.end_frame(out)?;
            }
        }
        self.flush(out)
    }

    /// Takes header bytes from `input`; once the header is whole, validates it and starts its
    /// frame. Returns the number of bytes taken.
    fn take_header(&mut self, input: &[u8]) -> Result<usize, WsError> {
        let mut used = 0;
        if self.header_len < 2 {
            used = self.fill_header(2, input);
            if self.header_len < 2 {
                return Ok(used);
            }
            self.check_start()?;
        }
        let size = header_size(self.header[1]);
        used += self.fill_header(size, &input[used..]);
        if self.header_len < size {
            return Ok(used);
        }
        self.start_frame(size)?;
        self.header_len = 0;
        Ok(used)
    }

    /// Copies header bytes from `input` until the header holds `size` bytes; returns how many.
    fn fill_header(&mut self, size: usize, input: &[u8]) -> usize {
        let n = size.saturating_sub(self.header_len).min(input.len());
        self.header[self.header_len..self.header_len + n].copy_from_slice(&input[..n]);
        self.header_len += n;
        n
    }

    /// Checks the first two header bytes against the protocol and the state.
    fn check_start(&self) -> Result<(), WsError> {
        let (b0, b1) = (self.header[0], self.header[1]);
        let fin = b0 & 0x80 != 0;
        let opcode = b0 & 0x0F;
        let masked = b1 & 0x80 != 0;
        let len7 = b1 & 0x7F;
        if self.closed {
            return Err(WsError::Protocol("a frame after the close frame"));
        }
        if b0 & 0x70 != 0 {
            return Err(WsError::Protocol(
                "an RSV bit is set (an extension such as compression, which cannot be scanned)",
            ));
        }
        match (self.direction, masked) {
            (Direction::ToUpstream, false) => {
                return Err(WsError::Protocol("an unmasked frame from the client"))
            }
            (Direction::ToAgent, true) => {
                return Err(WsError::Protocol("a masked frame from the server"))
            }
            _ => {}
        }
        match opcode {
            OP_CONTINUATION if self.message.is_none() => Err(WsError::Protocol(
                "a continuation frame without a message to continue",
            )),
            OP_TEXT | OP_BINARY if self.message.is_some() => Err(WsError::Protocol(
                "a new data message before the previous one ended",
            )),
            OP_CONTINUATION | OP_TEXT | OP_BINARY => Ok(()),
            OP_CLOSE | OP_PING | OP_PONG if !fin => {
                Err(WsError::Protocol("a fragmented control frame"))
            }
            OP_CLOSE | OP_PING | OP_PONG if usize::from(len7) > MAX_CONTROL => {
                Err(WsError::Protocol("a control frame longer than 125 bytes"))
            }
            OP_CLOSE if len7 == 1 => Err(WsError::Protocol("a close frame with a 1-byte payload")),
            OP_CLOSE | OP_PING | OP_PONG => Ok(()),
            _ => Err(WsError::Protocol("a reserved opcode")),
        }
    }

    /// Parses the whole header (`size` bytes, already checked by `check_start`) and starts
    /// its frame.
    fn start_frame(&mut self, size: usize) -> Result<(), WsError> {
        let h = &self.header[..size];
        let len7 = h[1] & 0x7F;
        let (len, at) = match len7 {
            126 => (u64::from(u16::from_be_bytes([h[2], h[3]])), 4),
            127 => {
                let mut b = [0u8; 8];
                b.copy_from_slice(&h[2..10]);
                let len = u64::from_be_bytes(b);
                if len >> 63 != 0 {
                    return Err(WsError::Protocol("a 64-bit length with its top bit set"));
                }
                (len, 10)
            }
            n => (u64::from(n), 2),
        };
        let key = (h[1] & 0x80 != 0).then(|| [h[at], h[at + 1], h[at + 2], h[at + 3]]);
        let frame = Frame {
            fin: h[0] & 0x80 != 0,
            opcode: h[0] & 0x0F,
            key,
            remaining: len,
            key_pos: 0,
        };
        if matches!(frame.opcode, OP_TEXT | OP_BINARY) {
            self.message = Some(Message {
                opcode: frame.opcode,
                started: false,
            });
        }
        self.frame = Some(frame);
        Ok(())
    }

    /// Takes one slice of the current frame's payload (at most [`SLICE`] bytes).
    fn payload(&mut self, slice: &[u8], out: &mut Vec<u8>) -> Result<(), WsError> {
        let Some(frame) = self.frame.as_mut() else {
            return Ok(());
        };
        frame.remaining -= slice.len() as u64;
        let data: &[u8] = match frame.key {
            Some(key) => {
                self.unmasked.clear();
                self.unmasked.extend_from_slice(slice);
                apply_mask(&mut self.unmasked, key, frame.key_pos);
                frame.key_pos = (frame.key_pos + slice.len()) % 4;
                &self.unmasked
            }
            None => slice,
        };
        if is_control(frame.opcode) {
            self.control.extend_from_slice(data);
        } else {
            self.stream
                .push(data, &mut self.pending)
                .map_err(WsError::Refused)?;
        }
        wipe(&mut self.unmasked);
        if self.pending.len() >= SLICE {
            self.flush(out)?;
        }
        Ok(())
    }

    /// The current frame's payload is complete.
    fn end_frame(&mut self, out: &mut Vec<u8>) -> Result<(), WsError> {
        let Some(frame) = self.frame.take() else {
            return Ok(());
        };
        if is_control(frame.opcode) {
            self.flush(out)?;
            return self.control_frame(frame.opcode, out);
        }
        if !frame.fin {
            return Ok(());
        }
        self.stream
            .finish(&mut self.pending)
            .map_err(WsError::Refused)?;
        let Some(msg) = self.message.take() else {
            return Err(WsError::Protocol("a data frame outside a message"));
        };
        let opcode = if msg.started {
            OP_CONTINUATION
        } else {
            msg.opcode
        };
        let pending = std::mem::take(&mut *self.pending);
        let res = self.emit(true, opcode, &pending, out);
        self.pending = Zeroizing::new(pending);
        wipe(&mut self.pending);
        res
    }

    /// Sends what the rewriter released for the open message as a frame without FIN.
    fn flush(&mut self, out: &mut Vec<u8>) -> Result<(), WsError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let Some(msg) = self.message.as_mut() else {
            wipe(&mut self.pending);
            return Err(WsError::Protocol("data outside a message"));
        };
        let opcode = if msg.started {
            OP_CONTINUATION
        } else {
            msg.opcode
        };
        msg.started = true;
        let pending = std::mem::take(&mut *self.pending);
        let res = self.emit(false, opcode, &pending, out);
        self.pending = Zeroizing::new(pending);
        wipe(&mut self.pending);
        res
    }

    /// Rewrites a whole control frame's payload and sends it on.
    fn control_frame(&mut self, opcode: u8, out: &mut Vec<u8>) -> Result<(), WsError> {
        let payload = std::mem::take(&mut *self.control);
        let res = self
            .rw
            .rewrite(&payload, &mut self.control_hits)
            .map(|c| Zeroizing::new(c.into_owned()));
        self.control = Zeroizing::new(payload);
        wipe(&mut self.control);
        let mut scrubbed = res.map_err(WsError::Refused)?;
        let keep = fit_control(opcode, &scrubbed);
        scrubbed.truncate(keep);
        self.emit(true, opcode, &scrubbed, out)?;
        if opcode == OP_CLOSE {
            self.closed = true;
        }
        Ok(())
    }

    /// Appends one frame: masked with a fresh key towards the upstream, unmasked towards the
    /// agent; the length in its shortest form.
    fn emit(
        &self,
        fin: bool,
        opcode: u8,
        payload: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), WsError> {
        let mask_bit = match self.direction {
            Direction::ToUpstream => 0x80,
            Direction::ToAgent => 0,
        };
        out.reserve(payload.len() + 14);
        out.push(if fin { 0x80 } else { 0 } | opcode);
        match payload.len() {
            n @ 0..=125 => out.push(mask_bit | n as u8),
            n @ 126..=0xFFFF => {
                out.push(mask_bit | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(mask_bit | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        match self.direction {
            Direction::ToAgent => out.extend_from_slice(payload),
            Direction::ToUpstream => {
                let mut key = [0u8; 4];
                self.rng.fill(&mut key).map_err(|_| WsError::Random)?;
                out.extend_from_slice(&key);
                let start = out.len();
                out.extend_from_slice(payload);
                apply_mask(&mut out[start..], key, 0);
            }
        }
        Ok(())
    }
}

/// Header size given its second byte: 2, plus the extended length, plus the masking key.
fn header_size(b1: u8) -> usize {
    let ext = match b1 & 0x7F {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    2 + ext + if b1 & 0x80 != 0 { 4 } else { 0 }
}

fn is_control(opcode: u8) -> bool {
    opcode & 0x08 != 0
}

/// How many bytes of a rewritten control payload fit in a control frame: all of them when
/// they fit; for a close frame its 2-byte code and as much of the reason as fits, cut at a
/// UTF-8 character boundary; otherwise the first 125 bytes.
fn fit_control(opcode: u8, payload: &[u8]) -> usize {
    if payload.len() <= MAX_CONTROL {
        return payload.len();
    }
    if opcode != OP_CLOSE {
        return MAX_CONTROL;
    }
    let mut end = MAX_CONTROL;
    // `payload[end]` is the first byte cut off; back up while it continues a character.
    while end > 2 && payload[end] & 0xC0 == 0x80 {
        end -= 1;
    }
    end
}

/// XORs `data` with `key`, starting at position `pos` of the key (RFC 6455 §5.3).
fn apply_mask(data: &mut [u8], key: [u8; 4], pos: usize) {
    for (i, b) in data.iter_mut().enumerate() {
        *b ^= key[(pos + i) % 4];
    }
}

/// Zeroes the used bytes of `v` and empties it.
fn wipe(v: &mut Vec<u8>) {
    v.as_mut_slice().zeroize();
    v.clear();
}

#[cfg(test)]
#[path = "websocket_tests.rs"]
mod tests;
