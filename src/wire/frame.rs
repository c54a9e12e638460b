//! The peer wire's byte layout on a connection, sans-IO: one framer (outgoing) and one
//! deframer (incoming) for everything a peer-wire connection carries after TCP (or any
//! ordered byte stream) is up. Every node path and the tests use these; nothing else knows
//! the layout.
//!
//! ```text
//! handshake message   = len u16 LE ‖ message            (len ≤ HANDSHAKE_MESSAGE_BYTES_MAX)
//! refusal (responder) = len u16 LE ‖ 0x7F ‖ code u8     (2 bytes, instead of a ServerHello)
//! control record      = len u32 LE ‖ body [len] ‖ tag [16]     (AAD: control, len)
//! chunk payload       = payload [payload_len] ‖ tag [16]        (AAD: file, chunk, len)
//! ```
//!
//! `body` is a `Message` FlatBuffer (see the parent module). A chunk payload follows the
//! control record of its `ChunkResponse` and is one record however it is carried: a
//! message-based transport (a WebRTC data channel takes at most 64 KiB per message) sends
//! it as [`blocks`] and the deframer reassembles it, so the chunk is still opened and
//! hash-checked as a whole. With encryption off there are no tags and a record is its
//! plaintext. A refusal is unauthenticated: it only turns "connection closed" into a clear
//! error, and an attacker who can forge one could as well close the connection.
//!
//! The deframer is told that a payload follows ([`Deframer::expect_payload`]) by whoever
//! decoded the response header (the client session), so it never interprets a body.

use std::ops::Range;

use crate::crypto::handshake::HANDSHAKE_MESSAGE_BYTES_MAX;
use crate::crypto::record::TAG_BYTES;
use crate::crypto::{HandshakeError, Opener, RecordAad, RecordError, Sealer};

/// Bytes of the length prefix in front of every control record.
pub const FRAME_PREFIX_BYTES: usize = 4;
/// Bytes of the length prefix in front of every handshake message.
pub const HANDSHAKE_PREFIX_BYTES: usize = 2;
/// First byte of a responder's refusal (a ServerHello never starts with it: it is 2 bytes).
pub const REFUSAL_TAG: u8 = 0x7F;
/// Most bytes the deframer asks a transport to read at once when it has no better idea.
const READ_BYTES: usize = 64 * 1024;
/// Fewest: a deframer of small control records (a seeder's, reading requests of at most
/// `REQUEST_BODY_MAX_BYTES`) reads in pieces this big, so a thousand connections hold a
/// few KiB each rather than 64 (the read buffer is zero-filled, so it is resident).
const READ_BYTES_MIN: usize = 8 * 1024;

/// Why incoming bytes cannot be used. Either way the connection must close.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// A length prefix above the limit for this direction; nothing was allocated for it.
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// The length the peer announced.
        len: u32,
        /// The limit.
        max: u32,
    },
    /// A sealed record did not open: tampered with, replayed, reordered or cut short on the
    /// way. Nothing of it is used.
    #[error("{0}")]
    Record(#[from] RecordError),
}

/// Why a responder refused a handshake, as the one code byte after [`REFUSAL_TAG`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusalCode {
    /// Anything else (a bad signature, an expired certificate, garbage).
    Other,
    /// The initiator's network secret differs (or its hello was tampered with).
    WrongNetwork,
    /// One side has `--encryption off`, the other not.
    EncryptionMismatch,
    /// The initiator pinned another node ID than this responder's.
    NotPinnedNode,
    /// The initiator speaks a protocol version this responder does not.
    UnsupportedVersion,
}

impl RefusalCode {
    /// The code for a failed ClientHello.
    pub fn of(e: &HandshakeError) -> Self {
        match e {
            HandshakeError::WrongNetworkSecret => Self::WrongNetwork,
            HandshakeError::EncryptionMismatch { .. } => Self::EncryptionMismatch,
            HandshakeError::NotTheExpectedNode { .. } => Self::NotPinnedNode,
            HandshakeError::UnsupportedVersion { .. } => Self::UnsupportedVersion,
            _ => Self::Other,
        }
    }

    /// The byte on the wire.
    pub fn byte(self) -> u8 {
        match self {
            Self::Other => 0,
            Self::WrongNetwork => 1,
            Self::EncryptionMismatch => 2,
            Self::NotPinnedNode => 3,
            Self::UnsupportedVersion => 4,
        }
    }

    /// From the byte on the wire; unknown codes (from newer peers) read as `Other`.
    pub fn from_byte(b: u8) -> Self {
        match b {
            1 => Self::WrongNetwork,
            2 => Self::EncryptionMismatch,
            3 => Self::NotPinnedNode,
            4 => Self::UnsupportedVersion,
            _ => Self::Other,
        }
    }

    /// What the refusal says, from the initiator's point of view.
    pub fn text(self) -> &'static str {
        match self {
            Self::WrongNetwork => {
                "wrong network secret (or our hello was tampered with on the way)"
            }
            Self::EncryptionMismatch => {
                "encryption settings differ (both sides need the same --encryption)"
            }
            Self::NotPinnedNode => "it is not the node ID this connection pinned",
            Self::UnsupportedVersion => "unsupported protocol version",
            Self::Other => "handshake failed",
        }
    }
}

/// A handshake message as received: a message for the handshake state machine, or the
/// responder's refusal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeFrame<'a> {
    /// A ClientHello, ServerHello or ClientFinish.
    Message(&'a [u8]),
    /// The responder refused (only ever instead of a ServerHello).
    Refusal(RefusalCode),
}

impl<'a> HandshakeFrame<'a> {
    /// Classifies a received handshake message (the bytes after its prefix).
    pub fn parse(msg: &'a [u8]) -> Self {
        match msg {
            [REFUSAL_TAG, code] => Self::Refusal(RefusalCode::from_byte(*code)),
            _ => Self::Message(msg),
        }
    }
}

/// The length a handshake prefix announces, refused above `HANDSHAKE_MESSAGE_BYTES_MAX`
/// before anything is allocated.
pub fn handshake_len(prefix: [u8; HANDSHAKE_PREFIX_BYTES]) -> Result<usize, FrameError> {
    let len = u16::from_le_bytes(prefix);
    if usize::from(len) > HANDSHAKE_MESSAGE_BYTES_MAX {
        return Err(FrameError::TooLarge {
            len: u32::from(len),
            max: HANDSHAKE_MESSAGE_BYTES_MAX as u32,
        });
    }
    Ok(usize::from(len))
}

/// Appends one handshake message with its prefix. `msg` is at most
/// `HANDSHAKE_MESSAGE_BYTES_MAX` bytes (the handshake state machine never makes more).
pub fn push_handshake(out: &mut Vec<u8>, msg: &[u8]) {
    debug_assert!(msg.len() <= HANDSHAKE_MESSAGE_BYTES_MAX);
    // HANDSHAKE_MESSAGE_BYTES_MAX (2 KiB) fits a u16.
    out.extend_from_slice(&(msg.len() as u16).to_le_bytes());
    out.extend_from_slice(msg);
}

/// The 4 bytes of a refusal: prefix, [`REFUSAL_TAG`], code.
pub fn refusal(code: RefusalCode) -> [u8; 4] {
    [2, 0, REFUSAL_TAG, code.byte()]
}

/// The ranges of `len` bytes cut into blocks of at most `block_max` bytes (one empty range
/// for `len == 0`, so an empty payload is still one message). `block_max` 0 means 1.
pub fn blocks(len: usize, block_max: usize) -> impl Iterator<Item = Range<usize>> {
    let step = block_max.max(1);
    let count = len.div_ceil(step).max(1);
    (0..count).map(move |i| i * step..((i + 1) * step).min(len))
}

/// The outgoing half of a connection's records: seals with encryption on, passes through
/// with it off.
#[derive(Debug)]
pub struct Framer {
    sealer: Option<Sealer>,
}

impl Framer {
    /// A framer that seals with `sealer`, or writes plaintext records with `None`.
    pub fn new(sealer: Option<Sealer>) -> Self {
        Self { sealer }
    }

    /// Whether records are sealed.
    pub fn is_sealed(&self) -> bool {
        self.sealer.is_some()
    }

    /// Bytes of tag after each record: 16 sealed, 0 plaintext.
    pub fn tag_bytes(&self) -> usize {
        if self.is_sealed() {
            TAG_BYTES
        } else {
            0
        }
    }

    /// Appends `frame` (a complete frame as [`super::Encoder`] makes it: prefix and body)
    /// to `out` as a control record: sealed in place with its tag after it, or as is.
    pub fn push_control(&mut self, out: &mut Vec<u8>, frame: &[u8]) {
        let start = out.len();
        out.extend_from_slice(frame);
        if let Some(sealer) = &mut self.sealer {
            let body = &mut out[start + FRAME_PREFIX_BYTES..];
            // Frame bodies are bounded by the wire's body limits, far below a record's.
            let aad = RecordAad::control(body.len() as u32);
            let tag = sealer.seal_in_place(&aad, body).expect("control record within limits");
            out.extend_from_slice(&tag);
        }
    }

    /// Seals a chunk payload that is already in `buf` (read there by the transport: never
    /// straight from a memory map) and returns its tag; `None` with encryption off, when the
    /// payload goes out as it is. `aad` names the chunk and its length.
    pub fn seal_payload(
        &mut self,
        aad: &RecordAad,
        buf: &mut [u8],
    ) -> Result<Option<[u8; TAG_BYTES]>, RecordError> {
        match &mut self.sealer {
            None => Ok(None),
            Some(sealer) => sealer.seal_in_place(aad, buf).map(Some),
        }
    }
}

/// What [`Deframer::poll`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Deframed {
    /// A control record, opened; its body is [`Deframer::body`] until the next call.
    Control,
    /// The chunk payload announced with [`Deframer::expect_payload`], opened and whole.
    Payload(Vec<u8>),
}

#[derive(Debug, Clone, Copy)]
enum State {
    /// Next comes a control record.
    Control,
    /// Next comes a payload of `len` bytes (then its tag when sealed).
    Payload { len: u32, aad: RecordAad },
}

/// The incoming half of a connection: bytes in (from any transport, in pieces of any size),
/// opened control records and whole chunk payloads out. Bounded: a control record is at
/// most `body_max` bytes (checked on the prefix, before any allocation) and a payload is as
/// long as the caller said.
///
/// Feed it with [`Deframer::feed`], or read into [`Deframer::read_buf`] and
/// [`Deframer::commit`] (a payload's bytes then land in their final buffer with no copy).
#[derive(Debug)]
pub struct Deframer {
    opener: Option<Opener>,
    body_max: u32,
    /// Bytes asked for per read when no payload is due: a record and its prefix and tag,
    /// between `READ_BYTES_MIN` and `READ_BYTES`.
    read_bytes: usize,
    buf: Vec<u8>,
    /// Unparsed bytes are `buf[start..end]`.
    start: usize,
    end: usize,
    /// The last control body handed out (consumed at the next call).
    body: Range<usize>,
    consumed: usize,
    state: State,
    payload: Vec<u8>,
    payload_filled: usize,
    /// `read_buf` handed out the payload buffer itself.
    direct: bool,
}

impl Deframer {
    /// A deframer for control bodies of at most `body_max` bytes, opening records with
    /// `opener` (`None`: plaintext). Its read buffer follows `body_max`: 8 KiB for a
    /// seeder's small requests, up to 64 KiB for a downloader's responses.
    pub fn new(opener: Option<Opener>, body_max: u32) -> Self {
        let record = body_max as usize + FRAME_PREFIX_BYTES + TAG_BYTES;
        Self {
            opener,
            body_max,
            read_bytes: record.clamp(READ_BYTES_MIN, READ_BYTES),
            buf: Vec::new(),
            start: 0,
            end: 0,
            body: 0..0,
            consumed: 0,
            state: State::Control,
            payload: Vec::new(),
            payload_filled: 0,
            direct: false,
        }
    }

    fn tag_bytes(&self) -> usize {
        if self.opener.is_some() {
            TAG_BYTES
        } else {
            0
        }
    }

    fn consume(&mut self) {
        self.start += std::mem::take(&mut self.consumed);
        self.body = 0..0;
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// Where the transport should put the next bytes it reads (never empty); then call
    /// [`Deframer::commit`] with how many it put there.
    pub fn read_buf(&mut self) -> &mut [u8] {
        self.consume();
        if let State::Payload { len, .. } = self.state {
            if self.start == self.end && self.payload_filled < len as usize {
                self.direct = true;
                return &mut self.payload[self.payload_filled..];
            }
        }
        self.direct = false;
        if self.start > 0 && self.buf.len() - self.end < self.read_bytes {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.buf.len() < self.end + self.read_bytes {
            self.buf.resize(self.end + self.read_bytes, 0);
        }
        &mut self.buf[self.end..]
    }

    /// Records that `n` bytes were written into the last [`Deframer::read_buf`].
    pub fn commit(&mut self, n: usize) {
        if self.direct {
            self.payload_filled += n;
        } else {
            self.end += n;
        }
        self.direct = false;
    }

    /// Copies `bytes` in (a message from a message-based transport, or a test's bytes).
    pub fn feed(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            let dst = self.read_buf();
            let n = dst.len().min(bytes.len());
            dst[..n].copy_from_slice(&bytes[..n]);
            self.commit(n);
            bytes = &bytes[n..];
        }
    }

    /// Announces that the next `len` bytes (and a tag when sealed) are a chunk payload
    /// bound to `aad`. Call it right after the `ChunkResponse` control record.
    pub fn expect_payload(&mut self, len: u32, aad: RecordAad) {
        self.payload = vec![0; len as usize];
        self.payload_filled = 0;
        self.state = State::Payload { len, aad };
    }

    /// Whether bytes of an unfinished record are buffered (so a close now cuts a record).
    pub fn is_mid_record(&self) -> bool {
        self.end - self.start > self.consumed || matches!(self.state, State::Payload { .. })
    }

    /// The body of the control record [`Deframer::poll`] just returned.
    pub fn body(&self) -> &[u8] {
        &self.buf[self.body.clone()]
    }

    /// The next complete control record or payload, if the bytes so far hold one.
    pub fn poll(&mut self) -> Result<Option<Deframed>, FrameError> {
        self.consume();
        match self.state {
            State::Control => self.poll_control(),
            State::Payload { len, aad } => self.poll_payload(len, aad),
        }
    }

    fn poll_control(&mut self) -> Result<Option<Deframed>, FrameError> {
        let avail = self.end - self.start;
        if avail < FRAME_PREFIX_BYTES {
            return Ok(None);
        }
        let mut prefix = [0u8; FRAME_PREFIX_BYTES];
        prefix.copy_from_slice(&self.buf[self.start..self.start + FRAME_PREFIX_BYTES]);
        let len = u32::from_le_bytes(prefix);
        if len > self.body_max {
            return Err(FrameError::TooLarge { len, max: self.body_max });
        }
        let tag = self.tag_bytes();
        let need = FRAME_PREFIX_BYTES + len as usize + tag;
        if avail < need {
            return Ok(None);
        }
        let body = self.start + FRAME_PREFIX_BYTES..self.start + FRAME_PREFIX_BYTES + len as usize;
        if let Some(opener) = &mut self.opener {
            let mut t = [0u8; TAG_BYTES];
            t.copy_from_slice(&self.buf[body.end..body.end + TAG_BYTES]);
            opener.open_in_place(&RecordAad::control(len), &mut self.buf[body.clone()], &t)?;
        }
        self.body = body;
        self.consumed = need;
        Ok(Some(Deframed::Control))
    }

    fn poll_payload(&mut self, len: u32, aad: RecordAad) -> Result<Option<Deframed>, FrameError> {
        let len = len as usize;
        let take = (self.end - self.start).min(len - self.payload_filled);
        self.payload[self.payload_filled..self.payload_filled + take]
            .copy_from_slice(&self.buf[self.start..self.start + take]);
        self.payload_filled += take;
        self.start += take;
        if self.payload_filled < len {
            return Ok(None);
        }
        if let Some(opener) = &mut self.opener {
            if self.end - self.start < TAG_BYTES {
                return Ok(None);
            }
            let mut t = [0u8; TAG_BYTES];
            t.copy_from_slice(&self.buf[self.start..self.start + TAG_BYTES]);
            self.start += TAG_BYTES;
            opener.open_in_place(&aad, &mut self.payload, &t)?;
        }
        self.state = State::Control;
        self.payload_filled = 0;
        Ok(Some(Deframed::Payload(std::mem::take(&mut self.payload))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::record::test_pair;
    use crate::crypto::FileId;
    use crate::wire::{decode, Encoder, Message};

    fn frames() -> Vec<Vec<u8>> {
        let mut enc = Encoder::default();
        let id = FileId([3; 32]);
        vec![
            enc.frame(&Message::BitfieldRequest { file_id: id }).to_vec(),
            enc.frame(&Message::ChunkResponse {
                file_id: id,
                chunk_index: 1,
                payload_len: 100_000,
            })
            .to_vec(),
        ]
    }

    /// One stream: a bitfield request, a chunk header and its payload, sealed or not.
    fn stream(sealed: bool, payload: &[u8]) -> (Vec<u8>, Option<Opener>) {
        let (sealer, opener) = if sealed {
            let (s, o) = test_pair([5; 32]);
            (Some(s), Some(o))
        } else {
            (None, None)
        };
        let mut framer = Framer::new(sealer);
        let mut out = Vec::new();
        for f in frames() {
            framer.push_control(&mut out, &f);
        }
        let mut p = payload.to_vec();
        let aad = RecordAad::chunk([3; 32], 1, p.len() as u32);
        let tag = framer.seal_payload(&aad, &mut p).unwrap();
        out.extend_from_slice(&p);
        if let Some(t) = tag {
            out.extend_from_slice(&t);
        }
        (out, opener)
    }

    fn drain(d: &mut Deframer, got: &mut Vec<Result<Message, Vec<u8>>>) {
        while let Some(x) = d.poll().unwrap() {
            match x {
                Deframed::Control => {
                    let m = decode(d.body()).unwrap();
                    if let Message::ChunkResponse { payload_len, .. } = m {
                        d.expect_payload(payload_len, RecordAad::chunk([3; 32], 1, payload_len));
                    }
                    got.push(Ok(m));
                }
                Deframed::Payload(p) => got.push(Err(p)),
            }
        }
    }

    #[test]
    fn records_survive_any_cut_into_blocks_sealed_or_not() {
        let payload: Vec<u8> = (0..100_000u32).map(|i| (i * 7) as u8).collect();
        for sealed in [false, true] {
            for block in [1, 7, 1000, 64 * 1024, 1 << 20] {
                let (bytes, opener) = stream(sealed, &payload);
                let mut d = Deframer::new(opener, 1024);
                let mut got = Vec::new();
                for r in blocks(bytes.len(), block) {
                    d.feed(&bytes[r]);
                    drain(&mut d, &mut got);
                }
                assert_eq!(got.len(), 3, "sealed {sealed} block {block}");
                assert!(matches!(got[0], Ok(Message::BitfieldRequest { .. })));
                assert!(matches!(got[1], Ok(Message::ChunkResponse { chunk_index: 1, .. })));
                assert!(got[2].as_ref().err() == Some(&payload));
                assert!(!d.is_mid_record());
            }
        }
    }

    #[test]
    fn read_buf_puts_payload_bytes_straight_into_the_chunk() {
        let payload = vec![0xab; 100_000];
        let (bytes, _) = stream(false, &payload);
        let mut d = Deframer::new(None, 1024);
        let mut got = Vec::new();
        let mut at = 0;
        let mut direct_reads = 0;
        while at < bytes.len() {
            let n = {
                let dst = d.read_buf();
                let n = dst.len().min(bytes.len() - at).min(10_000);
                dst[..n].copy_from_slice(&bytes[at..at + n]);
                n
            };
            direct_reads += usize::from(d.direct);
            d.commit(n);
            at += n;
            drain(&mut d, &mut got);
        }
        assert_eq!(got.len(), 3);
        assert!(got[2].as_ref().err() == Some(&payload));
        assert!(direct_reads > 0, "payload bytes went through the frame buffer");
    }

    /// A seeder's deframer (small request bodies) keeps a small read buffer, and still
    /// takes a record as large as its limit arriving through short reads.
    #[test]
    fn small_body_limit_small_read_buffer() {
        let big = Deframer::new(None, crate::config::RESPONSE_BODY_MAX_BYTES);
        assert_eq!(big.read_bytes, READ_BYTES);
        let (sealer, opener) = test_pair([9; 32]);
        let mut d = Deframer::new(Some(opener), crate::config::REQUEST_BODY_MAX_BYTES);
        assert_eq!(d.read_bytes, READ_BYTES_MIN);
        let mut framer = Framer::new(Some(sealer));
        let body = vec![0x5a; crate::config::REQUEST_BODY_MAX_BYTES as usize];
        let frame = [&(body.len() as u32).to_le_bytes()[..], &body].concat();
        let mut wire = Vec::new();
        for _ in 0..3 {
            framer.push_control(&mut wire, &frame);
        }
        let mut seen = 0;
        let mut at = 0;
        while at < wire.len() {
            let room = d.read_buf();
            assert!(room.len() <= 2 * READ_BYTES_MIN, "read buffer of {}", room.len());
            let n = room.len().min(wire.len() - at).min(1500);
            room[..n].copy_from_slice(&wire[at..at + n]);
            d.commit(n);
            at += n;
            while let Some(Deframed::Control) = d.poll().unwrap() {
                assert_eq!(d.body(), &body[..]);
                seen += 1;
            }
        }
        assert_eq!(seen, 3);
        assert!(d.buf.len() <= 2 * READ_BYTES_MIN + FRAME_PREFIX_BYTES, "{}", d.buf.len());
    }

    #[test]
    fn oversized_prefix_is_refused_before_allocating() {
        let mut d = Deframer::new(None, 4096);
        d.feed(&u32::MAX.to_le_bytes());
        assert_eq!(d.poll(), Err(FrameError::TooLarge { len: u32::MAX, max: 4096 }));
        assert!(d.buf.len() <= READ_BYTES + 4);
    }

    #[test]
    fn a_flipped_bit_fails_the_record_and_yields_nothing() {
        let payload = vec![1u8; 5000];
        let (clean, _) = stream(true, &payload);
        for i in [0, 5, clean.len() / 2, clean.len() - 1] {
            let mut bytes = clean.clone();
            bytes[i] ^= 0x10;
            let (_, opener) = stream(true, &payload);
            let mut d = Deframer::new(opener, 1024);
            d.feed(&bytes);
            let mut got = Vec::new();
            let failed = loop {
                match d.poll() {
                    Ok(Some(Deframed::Control)) => {
                        let m = decode(d.body());
                        if let Ok(Message::ChunkResponse { payload_len, .. }) = m {
                            d.expect_payload(payload_len, RecordAad::chunk([3; 32], 1, 5000));
                        }
                        got.push(m.is_ok());
                    }
                    Ok(Some(Deframed::Payload(_))) => got.push(true),
                    Ok(None) => break false,
                    // A flipped length prefix may also read as too large.
                    Err(FrameError::Record(_) | FrameError::TooLarge { .. }) => break true,
                }
            };
            assert!(failed || got.len() < 3, "flip at {i} went unnoticed");
        }
    }

    #[test]
    fn handshake_frames_and_refusals() {
        let mut out = Vec::new();
        push_handshake(&mut out, b"hello");
        assert_eq!(handshake_len([out[0], out[1]]), Ok(5));
        assert_eq!(HandshakeFrame::parse(&out[2..]), HandshakeFrame::Message(b"hello"));
        let r = refusal(RefusalCode::NotPinnedNode);
        assert_eq!(handshake_len([r[0], r[1]]), Ok(2));
        assert_eq!(
            HandshakeFrame::parse(&r[2..]),
            HandshakeFrame::Refusal(RefusalCode::NotPinnedNode)
        );
        assert!(handshake_len(u16::MAX.to_le_bytes()).is_err());
        for b in 0..=255u8 {
            let c = RefusalCode::from_byte(b);
            assert!(b > 4 || c.byte() == b);
        }
    }

    #[test]
    fn blocks_cover_the_payload_exactly() {
        assert_eq!(blocks(0, 64).collect::<Vec<_>>(), vec![0..0]);
        assert_eq!(blocks(130, 64).collect::<Vec<_>>(), vec![0..64, 64..128, 128..130]);
        assert_eq!(blocks(128, 64).count(), 2);
    }
}
