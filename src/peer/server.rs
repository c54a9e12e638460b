//! The server side of a peer-wire connection: requests in, responses and chunk
//! instructions out.

use std::collections::VecDeque;
use std::ops::Range;
use std::time::{Duration, Instant};

use crate::crypto::{FileId, RecordAad};
use crate::manifest::FileInfo;
use crate::transfer::SharedBitfield;
use crate::wire::frame::FrameError;
use crate::wire::{decode_request, DecodeError, Encoder, ErrorCode, Request, Response};

/// A file as the server sees it: its manifest and, for a file this node is still
/// downloading, which chunks it has (only those are served).
#[derive(Debug, Clone, Copy)]
pub struct Served<'a> {
    /// The manifest.
    pub info: &'a FileInfo,
    /// `None`: every chunk (a published file). `Some`: only the set bits.
    pub have: Option<&'a SharedBitfield>,
}

/// The files a server offers. The node implements it over its catalog; tests and
/// simulations over a map.
pub trait ServedFiles {
    /// The file with this ID, if it is served.
    fn served(&self, id: &FileId) -> Option<Served<'_>>;
}

impl ServedFiles for std::collections::HashMap<FileId, FileInfo> {
    fn served(&self, id: &FileId) -> Option<Served<'_>> {
        self.get(id).map(|info| Served { info, have: None })
    }
}

/// What the server sends next, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerTransmit {
    /// A complete frame (length prefix and body) to send as one control record.
    Frame(Vec<u8>),
    /// A chunk: `header` (a complete frame) as a control record, then bytes `range` of the
    /// file as one payload record bound to `aad`. The transport checks right before reading
    /// the bytes that the file is unchanged; if it is not (or cannot be read), it sends
    /// nothing for this transmit and calls [`ServerSession::handle_chunk_failed`], whose
    /// refusal comes out next.
    Chunk {
        /// The `ChunkResponse` frame.
        header: Vec<u8>,
        /// The file.
        file_id: FileId,
        /// The chunk.
        chunk_index: u32,
        /// Its bytes within the file.
        range: Range<u64>,
        /// The payload record's associated data.
        aad: RecordAad,
        /// The file is this node's own partial download (no size/mtime check applies; the
        /// chunk is verified and written, so it does not change).
        partial: bool,
    },
}

/// Why the transport could not send a chunk the session chose to serve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChunkFailure {
    /// The file's size or mtime differs from the catalog's: it changed since publishing.
    FileChanged,
    /// It could not be opened, mapped or read; the text says what failed.
    Io(String),
    /// The node is short of a resource (file descriptors) right now; the client may ask
    /// again later. The text says which.
    Overloaded(String),
}

/// Counters of one server session (the node sums them per shard).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServerStats {
    /// Frames received (requests and garbage).
    pub requests: u64,
    /// Manifests sent.
    pub manifests_served: u64,
    /// Refusals sent.
    pub error_replies: u64,
    /// Undecodable, oversized or wrong-direction frames (each closes the connection).
    pub bad_frames: u64,
    /// Records that failed authentication (the connection closes without an answer).
    pub records_rejected: u64,
}

/// One served connection after its handshake. Requests are answered in order, each with
/// exactly one transmit, so the queue holds at most one transmit per request handed in
/// (the pump drains it after each). See the module documentation for the driving loop.
#[derive(Debug)]
pub struct ServerSession {
    enc: Encoder,
    transmits: VecDeque<ServerTransmit>,
    idle_timeout: Duration,
    idle_deadline: Instant,
    closed: bool,
    stats: ServerStats,
}

impl ServerSession {
    /// A session that closes after `idle_timeout` without a request.
    pub fn new(now: Instant, idle_timeout: Duration) -> Self {
        Self {
            enc: Encoder::default(),
            transmits: VecDeque::new(),
            idle_timeout,
            idle_deadline: now + idle_timeout,
            closed: false,
            stats: ServerStats::default(),
        }
    }

    /// Handles one control-record body (opened, prefix stripped). Anything undecodable or
    /// only a server sends gets a `MALFORMED` refusal and closes the session; a request for
    /// a file or chunk this server does not have gets a refusal and the session goes on.
    pub fn handle_frame(&mut self, now: Instant, body: &[u8], files: &impl ServedFiles) {
        if self.closed {
            return;
        }
        self.idle_deadline = now + self.idle_timeout;
        self.stats.requests += 1;
        let req = match decode_request(body) {
            Ok(r) => r,
            Err(DecodeError::WrongDirection(kind)) => {
                let text = format!("unexpected message from a client: {kind}");
                return self.refuse_and_close(ErrorCode::Malformed, text);
            }
            Err(e) => {
                let text = format!("undecodable request: {e}");
                return self.refuse_and_close(ErrorCode::Malformed, text);
            }
        };
        match req {
            Request::Chunk { file_id, chunk_index, .. } => {
                match self.chunk(files, &file_id, chunk_index) {
                    Ok(t) => self.transmits.push_back(t),
                    Err((code, text)) => self.refuse(code, text, Some(file_id), chunk_index),
                }
            }
            Request::FileInfo { file_id } => match files.served(&file_id) {
                Some(s) => {
                    let frame = self.enc.file_info_frame(s.info).to_vec();
                    self.transmits.push_back(ServerTransmit::Frame(frame));
                    self.stats.manifests_served += 1;
                }
                None => self.refuse(ErrorCode::UnknownFile, unknown(&file_id), Some(file_id), 0),
            },
            Request::Bitfield { file_id } => match files.served(&file_id) {
                Some(s) => {
                    let bits = s.have.map(|h| h.snapshot().as_bytes().to_vec());
                    let frame = self.enc.response(&Response::Bitfield { file_id, bits }).to_vec();
                    self.transmits.push_back(ServerTransmit::Frame(frame));
                }
                None => self.refuse(ErrorCode::UnknownFile, unknown(&file_id), Some(file_id), 0),
            },
        }
    }

    fn chunk(
        &mut self,
        files: &impl ServedFiles,
        id: &FileId,
        index: u32,
    ) -> Result<ServerTransmit, (ErrorCode, String)> {
        let s = files.served(id).ok_or_else(|| (ErrorCode::UnknownFile, unknown(id)))?;
        let count = s.info.chunk_count();
        if index >= count {
            let text = format!("chunk {index} out of range: file {id} has {count} chunks");
            return Err((ErrorCode::ChunkOutOfRange, text));
        }
        if s.have.is_some_and(|h| !h.get(index)) {
            let text = format!("chunk {index} of file {id} is not downloaded here yet");
            return Err((ErrorCode::ChunkNotAvailable, text));
        }
        let range = s.info.chunk_range(index);
        // A chunk is at most CHUNK_SIZE_MAX_BYTES (the manifest was checked).
        let payload_len = (range.end - range.start) as u32;
        let resp = Response::Chunk { file_id: *id, chunk_index: index, payload_len };
        Ok(ServerTransmit::Chunk {
            header: self.enc.response(&resp).to_vec(),
            file_id: *id,
            chunk_index: index,
            range,
            aad: RecordAad::chunk(id.0, index, payload_len),
            partial: s.have.is_some(),
        })
    }

    /// The transport could not send the chunk of the last [`ServerTransmit::Chunk`] it
    /// polled: the refusal takes its place (`FILE_CHANGED` or `IO`) and the session goes
    /// on (other files may be fine).
    pub fn handle_chunk_failed(
        &mut self,
        _now: Instant,
        file_id: FileId,
        chunk_index: u32,
        why: ChunkFailure,
    ) {
        let (code, text) = match why {
            ChunkFailure::FileChanged => (
                ErrorCode::FileChanged,
                format!("file {file_id} changed on disk since it was published; not serving it"),
            ),
            ChunkFailure::Io(what) => (ErrorCode::Io, what),
            ChunkFailure::Overloaded(what) => (ErrorCode::Overloaded, what),
        };
        let frame = self.error_frame(code, text, Some(file_id), chunk_index);
        self.transmits.push_front(ServerTransmit::Frame(frame));
    }

    /// The incoming bytes did not deframe: an oversized length gets a `MALFORMED` refusal,
    /// a record that failed authentication gets nothing (answering would tell an attacker
    /// something). Either way the session closes.
    pub fn handle_frame_error(&mut self, _now: Instant, e: FrameError) {
        if self.closed {
            return;
        }
        match e {
            FrameError::TooLarge { .. } => {
                self.refuse_and_close(ErrorCode::Malformed, e.to_string())
            }
            FrameError::Record(_) => {
                self.stats.records_rejected += 1;
                self.closed = true;
            }
        }
    }

    /// A chunk finished going out at `now`. A connection busy sending (a big chunk under an
    /// upload limit can take minutes) is not idle: the idle deadline counts from here.
    pub fn handle_sent(&mut self, now: Instant) {
        self.idle_deadline = self.idle_deadline.max(now + self.idle_timeout);
    }

    /// Closes the session if it idled past its deadline.
    pub fn handle_timeout(&mut self, now: Instant) {
        if now >= self.idle_deadline {
            self.closed = true;
        }
    }

    /// The next thing to send, in order. Keep sending after the session closed: a
    /// refusal that explains the close may still be queued.
    pub fn poll_transmit(&mut self) -> Option<ServerTransmit> {
        self.transmits.pop_front()
    }

    /// When to call [`ServerSession::handle_timeout`]: the idle deadline.
    pub fn poll_timeout(&self) -> Option<Instant> {
        (!self.closed).then_some(self.idle_deadline)
    }

    /// True once the session takes no more input: close the connection after sending what
    /// [`ServerSession::poll_transmit`] still has.
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// This session's counters.
    pub fn stats(&self) -> &ServerStats {
        &self.stats
    }

    fn error_frame(
        &mut self,
        code: ErrorCode,
        message: String,
        file_id: Option<FileId>,
        chunk_index: u32,
    ) -> Vec<u8> {
        self.stats.error_replies += 1;
        self.enc.response(&Response::Error { code, message, file_id, chunk_index }).to_vec()
    }

    fn refuse(&mut self, code: ErrorCode, text: String, file_id: Option<FileId>, chunk: u32) {
        let frame = self.error_frame(code, text, file_id, chunk);
        self.transmits.push_back(ServerTransmit::Frame(frame));
    }

    fn refuse_and_close(&mut self, code: ErrorCode, text: String) {
        self.stats.bad_frames += 1;
        self.refuse(code, text, None, 0);
        self.closed = true;
    }
}

fn unknown(id: &FileId) -> String {
    format!("file {id} is not served here")
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::transfer::Bitfield;
    use crate::wire::{decode_response, Message};

    fn info(chunks: u32) -> FileInfo {
        crate::manifest::tests::sample(chunks, 4096)
    }

    fn files(i: &FileInfo) -> HashMap<FileId, FileInfo> {
        HashMap::from([(i.file_id, i.clone())])
    }

    fn frame(m: Message) -> Vec<u8> {
        Encoder::default().frame(&m)[4..].to_vec()
    }

    fn reply(s: &mut ServerSession) -> Response {
        match s.poll_transmit() {
            Some(ServerTransmit::Frame(f)) => decode_response(&f[4..]).unwrap(),
            other => panic!("expected a frame, got {other:?}"),
        }
    }

    fn code(r: Response) -> ErrorCode {
        match r {
            Response::Error { code, .. } => code,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn serves_chunks_manifests_and_bitfields_in_order() {
        let (i, now) = (info(3), crate::sim::epoch());
        let (files, id) = (files(&i), i.file_id);
        let mut s = ServerSession::new(now, Duration::from_secs(5));
        s.handle_frame(now, &frame(Message::FileInfoRequest { file_id: id }), &files);
        s.handle_frame(
            now,
            &frame(Message::ChunkRequest { file_id: id, chunk_index: 2, priority: 0 }),
            &files,
        );
        s.handle_frame(now, &frame(Message::BitfieldRequest { file_id: id }), &files);
        assert_eq!(reply(&mut s), Response::FileInfo(i.clone()));
        match s.poll_transmit() {
            Some(ServerTransmit::Chunk {
                header, chunk_index: 2, range, partial: false, ..
            }) => {
                assert_eq!(range, i.chunk_range(2));
                let len = (range.end - range.start) as u32;
                let want = Response::Chunk { file_id: id, chunk_index: 2, payload_len: len };
                assert_eq!(decode_response(&header[4..]), Ok(want));
            }
            other => panic!("expected chunk 2, got {other:?}"),
        }
        assert_eq!(reply(&mut s), Response::Bitfield { file_id: id, bits: None });
        assert!(s.poll_transmit().is_none() && !s.is_closed());
        assert_eq!(s.stats().requests, 3);
    }

    #[test]
    fn refusals_keep_the_session_open() {
        let (i, now) = (info(3), crate::sim::epoch());
        let (files, id) = (files(&i), i.file_id);
        let mut s = ServerSession::new(now, Duration::from_secs(5));
        let other = FileId([7; 32]);
        s.handle_frame(now, &frame(Message::FileInfoRequest { file_id: other }), &files);
        assert_eq!(code(reply(&mut s)), ErrorCode::UnknownFile);
        s.handle_frame(
            now,
            &frame(Message::ChunkRequest { file_id: id, chunk_index: 3, priority: 0 }),
            &files,
        );
        assert_eq!(code(reply(&mut s)), ErrorCode::ChunkOutOfRange);
        s.handle_frame(
            now,
            &frame(Message::ChunkRequest { file_id: other, chunk_index: 0, priority: 0 }),
            &files,
        );
        assert_eq!(code(reply(&mut s)), ErrorCode::UnknownFile);
        s.handle_frame(now, &frame(Message::BitfieldRequest { file_id: other }), &files);
        assert_eq!(code(reply(&mut s)), ErrorCode::UnknownFile);
        // The transport found the file changed: the refusal replaces the chunk, in place.
        s.handle_frame(
            now,
            &frame(Message::ChunkRequest { file_id: id, chunk_index: 0, priority: 0 }),
            &files,
        );
        s.handle_frame(now, &frame(Message::BitfieldRequest { file_id: id }), &files);
        assert!(matches!(s.poll_transmit(), Some(ServerTransmit::Chunk { chunk_index: 0, .. })));
        s.handle_chunk_failed(now, id, 0, ChunkFailure::FileChanged);
        assert_eq!(code(reply(&mut s)), ErrorCode::FileChanged);
        assert!(matches!(reply(&mut s), Response::Bitfield { .. }));
        s.handle_frame(
            now,
            &frame(Message::ChunkRequest { file_id: id, chunk_index: 1, priority: 0 }),
            &files,
        );
        assert!(s.poll_transmit().is_some());
        s.handle_chunk_failed(now, id, 1, ChunkFailure::Io("cannot open".into()));
        assert_eq!(code(reply(&mut s)), ErrorCode::Io);
        assert!(!s.is_closed());
        assert_eq!(s.stats().error_replies, 6);
        assert_eq!(s.stats().bad_frames, 0);
    }

    #[test]
    fn a_partial_file_serves_only_what_it_has() {
        let (i, now) = (info(4), crate::sim::epoch());
        let mut bits = Bitfield::new(4);
        bits.set(1);
        let have = SharedBitfield::new(&bits);
        struct Partial<'a>(&'a FileInfo, &'a SharedBitfield);
        impl ServedFiles for Partial<'_> {
            fn served(&self, id: &FileId) -> Option<Served<'_>> {
                (*id == self.0.file_id).then_some(Served { info: self.0, have: Some(self.1) })
            }
        }
        let files = Partial(&i, &have);
        let id = i.file_id;
        let mut s = ServerSession::new(now, Duration::from_secs(5));
        s.handle_frame(
            now,
            &frame(Message::ChunkRequest { file_id: id, chunk_index: 0, priority: 0 }),
            &files,
        );
        assert_eq!(code(reply(&mut s)), ErrorCode::ChunkNotAvailable);
        s.handle_frame(
            now,
            &frame(Message::ChunkRequest { file_id: id, chunk_index: 1, priority: 0 }),
            &files,
        );
        assert!(matches!(s.poll_transmit(), Some(ServerTransmit::Chunk { partial: true, .. })));
        s.handle_frame(now, &frame(Message::BitfieldRequest { file_id: id }), &files);
        assert_eq!(reply(&mut s), Response::Bitfield { file_id: id, bits: Some(vec![0b10]) });
    }

    #[test]
    fn hostile_frames_get_malformed_and_close() {
        let (i, now) = (info(2), crate::sim::epoch());
        let (files, id) = (files(&i), i.file_id);
        let hostile: Vec<Vec<u8>> = vec![
            vec![],
            vec![0xde; 16],
            frame(Message::ChunkResponse { file_id: id, chunk_index: 0, payload_len: 0 }),
            frame(Message::Bitfield { file_id: id, bits: None }),
            frame(Message::FileInfo(i.clone())),
        ];
        for body in hostile {
            let mut s = ServerSession::new(now, Duration::from_secs(5));
            s.handle_frame(now, &body, &files);
            assert_eq!(code(reply(&mut s)), ErrorCode::Malformed);
            assert!(s.is_closed());
            // Nothing more is answered once closed.
            s.handle_frame(now, &frame(Message::FileInfoRequest { file_id: id }), &files);
            assert!(s.poll_transmit().is_none());
            assert_eq!(s.stats().bad_frames, 1);
        }
        let mut s = ServerSession::new(now, Duration::from_secs(5));
        s.handle_frame_error(now, FrameError::TooLarge { len: u32::MAX, max: 4096 });
        assert_eq!(code(reply(&mut s)), ErrorCode::Malformed);
        assert!(s.is_closed());
        let mut s = ServerSession::new(now, Duration::from_secs(5));
        s.handle_frame_error(now, FrameError::Record(crate::crypto::RecordError::Poisoned));
        assert!(s.poll_transmit().is_none() && s.is_closed());
        assert_eq!(s.stats().records_rejected, 1);
    }

    #[test]
    fn idles_out_at_its_deadline_and_requests_push_it_back() {
        let (i, t0) = (info(2), crate::sim::epoch());
        let files = files(&i);
        let idle = Duration::from_secs(5);
        let mut s = ServerSession::new(t0, idle);
        assert_eq!(s.poll_timeout(), Some(t0 + idle));
        let t1 = t0 + Duration::from_secs(3);
        s.handle_frame(t1, &frame(Message::FileInfoRequest { file_id: i.file_id }), &files);
        s.handle_timeout(t0 + idle);
        assert!(!s.is_closed());
        assert_eq!(s.poll_timeout(), Some(t1 + idle));
        s.handle_timeout(t1 + idle);
        assert!(s.is_closed() && s.poll_timeout().is_none());
    }
}
