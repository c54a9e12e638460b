//! The client side of a peer-wire connection: one download connection's requests out,
//! responses and chunk payloads in, verified chunks out.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::crypto::{chunk_hash, FileId, RecordAad};
use crate::manifest::FileInfo;
use crate::throttle::Throttle;
use crate::transfer::{Bitfield, ConnId, Scheduler};
use crate::wire::frame::FrameError;
use crate::wire::{decode_response, Encoder, ErrorCode, Request, Response};

/// How often a client asks a peer that is still downloading (a partial seeder) for its
/// bitfield.
pub const BITFIELD_REFRESH: Duration = Duration::from_millis(500);

/// Knobs of a client session.
#[derive(Debug, Clone, Copy)]
pub struct ClientConfig {
    /// How often to re-ask a partial seeder for its bitfield (default [`BITFIELD_REFRESH`]).
    pub bitfield_refresh: Duration,
    /// With nothing to ask this peer and no chunk verified by any connection for this
    /// long, give up on the peer ([`PeerError::Starved`]). Default `config::PEER_TIMEOUT`.
    pub starved_after: Duration,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self { bitfield_refresh: BITFIELD_REFRESH, starved_after: crate::config::PEER_TIMEOUT }
    }
}

/// Why a client session gave up on its peer. The pump adds which peer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PeerError {
    /// It sent something the protocol does not allow here.
    #[error("{0}")]
    Protocol(String),
    /// It refused a request we cannot do without (anything but an unavailable chunk).
    #[error("{message}")]
    Refused {
        /// Its code.
        code: ErrorCode,
        /// Its text (cut to `ERROR_MESSAGE_MAX_BYTES` at decode).
        message: String,
    },
    /// It was banned after sending chunks that failed verification; the last was this one.
    #[error("chunk {chunk_index} failed verification (hash mismatch)")]
    HashMismatch {
        /// The last corrupt chunk it sent.
        chunk_index: u32,
    },
    /// Its bytes did not deframe (oversized, or a record failed authentication).
    #[error("{0}")]
    Frame(FrameError),
    /// Nothing left to ask it for, and no progress elsewhere for `starved_after`.
    #[error("nothing left to ask this peer for, and no progress elsewhere")]
    Starved,
    /// It closed the connection.
    #[error("peer closed the connection")]
    Closed,
}

/// What a client session reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientEvent {
    /// A chunk whose hash matches the manifest: write `bytes` at `offset`. `latency` runs
    /// from the request's release to the payload's arrival.
    Verified {
        /// The chunk.
        chunk_index: u32,
        /// Its offset in the file.
        offset: u64,
        /// Its bytes.
        bytes: Vec<u8>,
        /// Request to verified.
        latency: Duration,
    },
    /// A chunk that failed verification; nothing of it may be used. The scheduler hears of
    /// it at the next [`ClientSession::drive`] and bans the peer after enough of them.
    Corrupt {
        /// The chunk.
        chunk_index: u32,
    },
    /// Every chunk of the file is verified (by any connection): this one is done.
    Done,
    /// The session gave up on its peer; close the connection.
    Failed(PeerError),
}

/// What the whole download lends a session while it decides (the scheduler is shared by
/// every connection of a download; the node holds its lock for the call).
#[derive(Debug)]
pub struct Swarm<'a> {
    /// The download's scheduler.
    pub scheduler: &'a mut Scheduler,
    /// False while too many verified bytes wait to become durable: ask for nothing new.
    pub may_request: bool,
    /// The download's rate limit, charged per chunk requested.
    pub throttle: Option<&'a Throttle>,
    /// When any connection of the download last verified a chunk (or the download began).
    pub last_progress: Instant,
}

#[derive(Debug, Clone, Copy)]
enum Pending {
    /// A chunk, and when its request was released.
    Chunk(u32, Instant),
    Bitfield,
}

#[derive(Debug)]
enum Update {
    Progress,
    Bitfield(Bitfield),
    Verified(u32),
    Corrupt(u32),
    Unavailable(u32),
}

/// One download connection after its handshake. Requests go out in order and the peer
/// answers in order, so the session matches each response to the oldest request it sent.
/// Bounded: requests in flight are at most the scheduler's window (≤ `WINDOW_MAX_LIMIT`),
/// and each handled frame or payload adds at most one event.
#[derive(Debug)]
pub struct ClientSession {
    info: Arc<FileInfo>,
    conn: ConnId,
    config: ClientConfig,
    enc: Encoder,
    /// Every request not yet answered, oldest first; the last `queue.len()` are not sent.
    pending: VecDeque<Pending>,
    /// Encoded requests not yet handed out, with the time each may go (rate limit).
    queue: VecDeque<(Instant, Vec<u8>)>,
    /// The header of this chunk arrived; its payload is next.
    expecting: Option<(u32, Instant)>,
    peer_is_partial: bool,
    bitfield_due: Instant,
    updates: Vec<(Instant, Update)>,
    last_corrupt: Option<u32>,
    last_progress: Instant,
    events: VecDeque<ClientEvent>,
    added: bool,
    finished: bool,
}

impl ClientSession {
    /// A session for connection `conn` of a download of `info`. It starts by asking for
    /// the peer's bitfield.
    pub fn new(info: Arc<FileInfo>, conn: ConnId, config: ClientConfig, now: Instant) -> Self {
        Self {
            info,
            conn,
            config,
            enc: Encoder::default(),
            pending: VecDeque::new(),
            queue: VecDeque::new(),
            expecting: None,
            peer_is_partial: true,
            bitfield_due: now,
            updates: Vec::new(),
            last_corrupt: None,
            last_progress: now,
            events: VecDeque::new(),
            added: false,
            finished: false,
        }
    }

    /// The connection this session speaks for.
    pub fn conn(&self) -> ConnId {
        self.conn
    }

    /// Brings the scheduler up to date with what this connection saw, checks for a ban or
    /// the end of the download, re-asks a partial seeder for its bitfield when due, and
    /// fills the window with new requests (sent by [`ClientSession::poll_transmit`]).
    pub fn drive(&mut self, now: Instant, swarm: &mut Swarm<'_>) {
        if self.finished {
            return;
        }
        let sched = &mut *swarm.scheduler;
        if !self.added {
            sched.handle_peer_added(now, self.conn);
            self.added = true;
        }
        for (at, u) in self.updates.drain(..) {
            match u {
                Update::Progress => sched.handle_progress(at, self.conn),
                Update::Bitfield(bits) => sched.handle_bitfield(at, self.conn, &bits),
                Update::Verified(i) => sched.handle_chunk_verified(at, self.conn, i),
                Update::Corrupt(i) => sched.handle_chunk_corrupt(at, self.conn, i),
                Update::Unavailable(i) => sched.handle_request_failed(at, self.conn, i),
            }
        }
        if !self.queue.is_empty() {
            // Requests held back by our own download limit: the wait is ours, not the
            // peer's, so its stall clock starts when they go out.
            sched.handle_progress(now, self.conn);
        }
        sched.handle_timeout(now);
        // Requests are answered in order; a cancelled request's answer is read and dropped
        // as a duplicate, so cancels need no message.
        while sched.poll_cancel().is_some() {}
        if sched.peer_stats(self.conn).is_some_and(|p| p.banned) {
            let chunk_index = self.last_corrupt.unwrap_or(0);
            return self.fail(PeerError::HashMismatch { chunk_index });
        }
        if sched.is_complete() {
            // Answers still in flight are endgame duplicates, not worth waiting for.
            self.finished = true;
            self.events.push_back(ClientEvent::Done);
            return;
        }
        self.last_progress = self.last_progress.max(swarm.last_progress);
        let mut release = self.queue.back().map_or(now, |(t, _)| (*t).max(now));
        if self.peer_is_partial
            && now >= self.bitfield_due
            && !self.pending.iter().any(|p| matches!(p, Pending::Bitfield))
        {
            let frame = self.enc.request(&Request::Bitfield { file_id: self.info.file_id });
            self.queue.push_back((release, frame.to_vec()));
            self.pending.push_back(Pending::Bitfield);
            self.bitfield_due = now + self.config.bitfield_refresh;
        }
        let in_flight = self.pending.iter().filter(|p| matches!(p, Pending::Chunk(..))).count();
        let window = sched.window(self.conn) as usize;
        let mut asked = 0;
        while swarm.may_request && in_flight + asked < window {
            let Some(chunk) = sched.poll_request(now, self.conn) else { break };
            asked += 1;
            if let Some(t) = swarm.throttle {
                release = release.max(now + t.reserve(now, self.info.chunk_len(chunk)));
            }
            let req =
                Request::Chunk { file_id: self.info.file_id, chunk_index: chunk, priority: 0 };
            self.queue.push_back((release, self.enc.request(&req).to_vec()));
            self.pending.push_back(Pending::Chunk(chunk, release));
        }
        if self.pending.is_empty()
            && self.expecting.is_none()
            && now.saturating_duration_since(self.last_progress) > self.config.starved_after
        {
            self.fail(PeerError::Starved);
        }
    }

    /// The next request frame (length prefix and body) whose time has come.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<Vec<u8>> {
        match self.queue.front() {
            Some((at, _)) if *at <= now => self.queue.pop_front().map(|(_, f)| f),
            _ => None,
        }
    }

    /// When to call [`ClientSession::drive`] again if nothing arrives before: a rate-limited
    /// request's release, the next bitfield refresh, or the starvation deadline while idle.
    /// Another connection's progress can make requests available sooner; the pump may also
    /// drive on its own wake-ups.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.finished {
            return None;
        }
        let release = self.queue.front().map(|(t, _)| *t);
        let refresh = (self.peer_is_partial
            && !self.pending.iter().any(|p| matches!(p, Pending::Bitfield)))
        .then_some(self.bitfield_due);
        let starved = (self.pending.is_empty() && self.expecting.is_none())
            .then(|| self.last_progress + self.config.starved_after);
        [release, refresh, starved].into_iter().flatten().min()
    }

    /// Handles one control-record body from the peer (opened, prefix stripped): the answer
    /// to the oldest request sent.
    pub fn handle_frame(&mut self, now: Instant, body: &[u8]) {
        if self.finished {
            return;
        }
        if self.expecting.is_some() {
            return self.fail(PeerError::Protocol("a frame where a chunk payload was due".into()));
        }
        let resp = match decode_response(body) {
            Ok(r) => r,
            Err(e) => return self.fail(PeerError::Protocol(format!("undecodable reply: {e}"))),
        };
        if self.pending.len() == self.queue.len() {
            return self.fail(PeerError::Protocol("unexpected reply".into()));
        }
        let Some(waiting) = self.pending.pop_front() else {
            return self.fail(PeerError::Protocol("unexpected reply".into()));
        };
        let file_id = self.info.file_id;
        let n = self.info.chunk_count();
        match (waiting, resp) {
            (Pending::Bitfield, Response::Bitfield { file_id: f, bits }) if f == file_id => {
                let bits = match bits {
                    None => {
                        self.peer_is_partial = false;
                        let mut all = Bitfield::new(n);
                        (0..n).for_each(|i| all.set(i));
                        all
                    }
                    Some(v) => match Bitfield::from_bytes(v, n) {
                        Some(b) => b,
                        None => {
                            let what = "bitfield of the wrong length".into();
                            return self.fail(PeerError::Protocol(what));
                        }
                    },
                };
                self.updates.push((now, Update::Bitfield(bits)));
            }
            (
                Pending::Chunk(index, sent),
                Response::Chunk { file_id: f, chunk_index, payload_len },
            ) if f == file_id
                && chunk_index == index
                && u64::from(payload_len) == self.info.chunk_len(index) =>
            {
                self.expecting = Some((index, sent));
            }
            (Pending::Chunk(index, _), Response::Error { code, message, .. }) => match code {
                ErrorCode::ChunkNotAvailable
                | ErrorCode::ChunkOutOfRange
                | ErrorCode::Overloaded => {
                    self.updates.push((now, Update::Unavailable(index)));
                }
                _ => self.fail(PeerError::Refused { code, message }),
            },
            (Pending::Bitfield, Response::Error { code, message, .. }) => {
                self.fail(PeerError::Refused { code, message });
            }
            (Pending::Chunk(index, _), Response::Chunk { chunk_index, payload_len, .. }) => {
                self.fail(PeerError::Protocol(format!(
                    "answered chunk {index} with chunk {chunk_index} of {payload_len} bytes"
                )));
            }
            _ => self.fail(PeerError::Protocol("unexpected reply".into())),
        }
    }

    /// The payload the transport must read next, if the last frame announced one: its
    /// length (checked against the manifest) and the associated data of its record.
    pub fn payload_expected(&self) -> Option<(u32, RecordAad)> {
        let (index, _) = self.expecting?;
        // Checked against the manifest in handle_frame: at most CHUNK_SIZE_MAX_BYTES.
        let len = self.info.chunk_len(index) as u32;
        Some((len, RecordAad::chunk(self.info.file_id.0, index, len)))
    }

    /// Handles a whole chunk payload (its record already opened): the verify decision.
    /// A chunk counts only if its SHA-256 is the manifest's.
    pub fn handle_payload(&mut self, now: Instant, bytes: Vec<u8>) {
        if self.finished {
            return;
        }
        let Some((index, sent)) = self.expecting.take() else {
            return self.fail(PeerError::Protocol("a chunk payload nobody asked for".into()));
        };
        let want = self.info.chunk_len(index);
        if bytes.len() as u64 != want {
            let what = format!("payload of {} bytes for chunk {index} of {want}", bytes.len());
            return self.fail(PeerError::Protocol(what));
        }
        // Verify before the bytes count for anything.
        if chunk_hash(&bytes) != self.info.chunk_hashes[index as usize] {
            self.last_corrupt = Some(index);
            self.updates.push((now, Update::Corrupt(index)));
            self.events.push_back(ClientEvent::Corrupt { chunk_index: index });
            return;
        }
        self.last_progress = now;
        self.updates.push((now, Update::Verified(index)));
        self.events.push_back(ClientEvent::Verified {
            chunk_index: index,
            offset: self.info.chunk_range(index).start,
            bytes,
            latency: now.saturating_duration_since(sent),
        });
    }

    /// Bytes from the peer arrived that do not complete a record yet (the middle of a big
    /// chunk): the peer is delivering, so it is neither stalled nor starving.
    pub fn handle_progress(&mut self, now: Instant) {
        if self.finished {
            return;
        }
        self.last_progress = self.last_progress.max(now);
        // One pending progress update is enough: keep the latest time.
        match self.updates.last_mut() {
            Some((at, Update::Progress)) => *at = now,
            _ => self.updates.push((now, Update::Progress)),
        }
    }

    /// The incoming bytes did not deframe: give up on the peer.
    pub fn handle_frame_error(&mut self, _now: Instant, e: FrameError) {
        self.fail(PeerError::Frame(e));
    }

    /// The peer closed the connection.
    pub fn handle_closed(&mut self, _now: Instant) {
        self.fail(PeerError::Closed);
    }

    /// Takes the connection out of the scheduler (its requests go back to the pool) unless
    /// the download completed. Call once, when the connection ends.
    pub fn detach(&mut self, now: Instant, scheduler: &mut Scheduler) {
        if self.added && !scheduler.is_complete() {
            scheduler.handle_peer_removed(now, self.conn);
        }
        self.added = false;
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<ClientEvent> {
        self.events.pop_front()
    }

    /// True once the session ended ([`ClientEvent::Done`] or [`ClientEvent::Failed`]).
    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// Requests sent and not answered yet (a chunk whose header came but whose payload
    /// did not counts): while this is above zero the pump must keep reading.
    pub fn in_flight(&self) -> usize {
        self.pending.len() - self.queue.len() + usize::from(self.expecting.is_some())
    }

    fn fail(&mut self, e: PeerError) {
        if !self.finished {
            self.finished = true;
            self.events.push_back(ClientEvent::Failed(e));
        }
    }
}

/// Checks the answer to a manifest request for `file_id` (a control-record body): the
/// manifest, authenticated against the ID at decode, or why not.
pub fn manifest_from(file_id: FileId, body: &[u8]) -> Result<FileInfo, PeerError> {
    match decode_response(body) {
        Ok(Response::FileInfo(info)) if info.file_id == file_id => Ok(info),
        Ok(Response::FileInfo(_)) => {
            Err(PeerError::Protocol("sent the manifest of another file".into()))
        }
        Ok(Response::Error { code, message, .. }) => Err(PeerError::Refused { code, message }),
        Ok(_) => Err(PeerError::Protocol("unexpected reply to a manifest request".into())),
        Err(e) => Err(PeerError::Protocol(format!("bad manifest: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transfer::SchedulerConfig;
    use crate::wire::Message;

    const CHUNK: u32 = 4096;

    /// A file of `n` chunks whose bytes are `content(i)`, the last chunk 10 bytes short.
    fn file(n: u32) -> (Arc<FileInfo>, Vec<Vec<u8>>) {
        let size = n as u64 * CHUNK as u64 - 10;
        let chunks: Vec<Vec<u8>> = (0..n)
            .map(|i| {
                let len = (size - i as u64 * CHUNK as u64).min(CHUNK as u64) as usize;
                (0..len).map(|k| (k as u32 ^ i.wrapping_mul(77)) as u8).collect()
            })
            .collect();
        let chunk_hashes: Vec<_> = chunks.iter().map(|c| chunk_hash(c)).collect();
        let info = FileInfo {
            file_id: FileId::from_manifest(size, CHUNK, &chunk_hashes),
            name: "f".into(),
            size,
            chunk_size: CHUNK,
            creation_time: 0,
            chunk_hashes,
        };
        (Arc::new(info), chunks)
    }

    fn scheduler(info: &FileInfo, window: u32) -> Scheduler {
        let config = SchedulerConfig {
            chunk_size_bytes: info.chunk_size,
            file_size_bytes: Some(info.size),
            window_min: window,
            window_max: window,
            ..SchedulerConfig::default()
        };
        Scheduler::new(config, info.chunk_count(), &Bitfield::new(info.chunk_count()), 1)
    }

    fn drive(s: &mut ClientSession, sched: &mut Scheduler, now: Instant) {
        let mut swarm =
            Swarm { scheduler: sched, may_request: true, throttle: None, last_progress: now };
        s.drive(now, &mut swarm);
    }

    /// A fresh session, and a swarm whose requests `throttle` releases.
    fn throttled<'a>(
        info: &Arc<FileInfo>,
        sched: &'a mut Scheduler,
        throttle: &'a Throttle,
        now: Instant,
    ) -> (ClientSession, Swarm<'a>) {
        let s = ClientSession::new(info.clone(), ConnId(0), ClientConfig::default(), now);
        let swarm = Swarm {
            scheduler: sched,
            may_request: true,
            throttle: Some(throttle),
            last_progress: now,
        };
        (s, swarm)
    }

    fn sent(s: &mut ClientSession, now: Instant) -> Vec<Request> {
        std::iter::from_fn(|| s.poll_transmit(now))
            .map(|f| crate::wire::decode_request(&f[4..]).unwrap())
            .collect()
    }

    fn body(r: Response) -> Vec<u8> {
        Encoder::default().response(&r)[4..].to_vec()
    }

    fn chunk_header(info: &FileInfo, i: u32) -> Vec<u8> {
        let payload_len = info.chunk_len(i) as u32;
        body(Response::Chunk { file_id: info.file_id, chunk_index: i, payload_len })
    }

    fn events(s: &mut ClientSession) -> Vec<ClientEvent> {
        std::iter::from_fn(|| s.poll_event()).collect()
    }

    /// A session past its bitfield exchange with a complete seeder, and its first requests.
    fn started(
        n: u32,
        window: u32,
    ) -> (Arc<FileInfo>, Vec<Vec<u8>>, Scheduler, ClientSession, Vec<u32>) {
        let (info, chunks) = file(n);
        let mut sched = scheduler(&info, window);
        let now = crate::sim::epoch();
        let mut s = ClientSession::new(info.clone(), ConnId(0), ClientConfig::default(), now);
        drive(&mut s, &mut sched, now);
        assert_eq!(sent(&mut s, now), vec![Request::Bitfield { file_id: info.file_id }]);
        s.handle_frame(now, &body(Response::Bitfield { file_id: info.file_id, bits: None }));
        drive(&mut s, &mut sched, now);
        let asked: Vec<u32> = sent(&mut s, now)
            .into_iter()
            .map(|r| match r {
                Request::Chunk { chunk_index, .. } => chunk_index,
                other => panic!("expected chunk requests, got {other:?}"),
            })
            .collect();
        (info, chunks, sched, s, asked)
    }

    #[test]
    fn downloads_every_chunk_through_windows_and_ends() {
        let (info, chunks, mut sched, mut s, mut asked) = started(10, 3);
        assert_eq!(asked.len(), 3);
        let now = crate::sim::epoch();
        let mut got = [false; 10];
        while let Some(i) = asked.first().copied() {
            asked.remove(0);
            s.handle_frame(now, &chunk_header(&info, i));
            assert!(s.in_flight() >= 1, "a header without its payload is still in flight");
            let (len, aad) = s.payload_expected().unwrap();
            assert_eq!(
                (len as u64, aad),
                (info.chunk_len(i), RecordAad::chunk(info.file_id.0, i, len))
            );
            s.handle_payload(now, chunks[i as usize].clone());
            for e in events(&mut s) {
                match e {
                    ClientEvent::Verified { chunk_index, offset, bytes, .. } => {
                        assert_eq!(offset, info.chunk_range(chunk_index).start);
                        assert!(bytes == chunks[chunk_index as usize]);
                        got[chunk_index as usize] = true;
                    }
                    other => panic!("unexpected {other:?}"),
                }
            }
            drive(&mut s, &mut sched, now);
            for r in sent(&mut s, now) {
                if let Request::Chunk { chunk_index, .. } = r {
                    asked.push(chunk_index);
                }
            }
            assert!(s.in_flight() <= 3);
        }
        assert!(got.iter().all(|g| *g));
        assert_eq!(events(&mut s), vec![ClientEvent::Done]);
        assert!(s.is_finished() && s.poll_timeout().is_none());
    }

    #[test]
    fn corrupt_chunks_are_never_used_and_get_the_peer_banned() {
        let (info, chunks, mut sched, mut s, asked) = started(10, 3);
        let now = crate::sim::epoch();
        for &i in &asked {
            s.handle_frame(now, &chunk_header(&info, i));
            let mut bad = chunks[i as usize].clone();
            bad[0] ^= 1;
            s.handle_payload(now, bad);
            assert_eq!(events(&mut s), vec![ClientEvent::Corrupt { chunk_index: i }]);
        }
        // The scheduler bans after `failures_to_ban` (3) corrupt chunks.
        drive(&mut s, &mut sched, now);
        let last = *asked.last().unwrap();
        assert_eq!(
            events(&mut s),
            vec![ClientEvent::Failed(PeerError::HashMismatch { chunk_index: last })]
        );
        assert!(sched.peer_stats(ConnId(0)).unwrap().banned);
        assert!(s.poll_transmit(now).is_none());
    }

    #[test]
    fn hostile_responses_end_the_session_with_a_protocol_error() {
        type Case = (&'static str, Box<dyn Fn(&FileInfo, &[u32]) -> Vec<u8>>);
        let cases: Vec<Case> = vec![
            ("undecodable", Box::new(|_, _| vec![0xde; 16])),
            ("empty", Box::new(|_, _| vec![])),
            (
                "a request",
                Box::new(|i, _| {
                    Encoder::default().frame(&Message::FileInfoRequest { file_id: i.file_id })[4..]
                        .to_vec()
                }),
            ),
            ("another chunk", Box::new(|i, a| chunk_header(i, a[1]))),
            (
                "a wrong payload length",
                Box::new(|i, a| {
                    body(Response::Chunk { file_id: i.file_id, chunk_index: a[0], payload_len: 1 })
                }),
            ),
            (
                "another file",
                Box::new(|i, a| {
                    let len = i.chunk_len(a[0]) as u32;
                    body(Response::Chunk {
                        file_id: FileId([1; 32]),
                        chunk_index: a[0],
                        payload_len: len,
                    })
                }),
            ),
            ("a manifest", Box::new(|i, _| body(Response::FileInfo((*i).clone())))),
        ];
        for (what, make) in cases {
            let (info, _, _, mut s, asked) = started(10, 3);
            s.handle_frame(crate::sim::epoch(), &make(&info, &asked));
            match events(&mut s).as_slice() {
                [ClientEvent::Failed(PeerError::Protocol(_))] => {}
                other => panic!("{what}: expected a protocol error, got {other:?}"),
            }
            assert!(s.is_finished(), "{what}");
        }
    }

    #[test]
    fn payloads_and_replies_nobody_asked_for_are_protocol_errors() {
        let (info, chunks, _, mut s, asked) = started(4, 1);
        let now = crate::sim::epoch();
        s.handle_payload(now, chunks[0].clone());
        assert!(matches!(events(&mut s)[..], [ClientEvent::Failed(PeerError::Protocol(_))]));

        let (_, chunks, _, mut s, _) = started(4, 1);
        s.handle_frame(now, &chunk_header(&info, asked[0]));
        s.handle_payload(now, chunks[asked[0] as usize][1..].to_vec());
        assert!(matches!(events(&mut s)[..], [ClientEvent::Failed(PeerError::Protocol(_))]));

        // A reply before any request was sent.
        let (info, _) = file(4);
        let mut s = ClientSession::new(info.clone(), ConnId(0), ClientConfig::default(), now);
        s.handle_frame(now, &body(Response::Bitfield { file_id: info.file_id, bits: None }));
        assert!(matches!(events(&mut s)[..], [ClientEvent::Failed(PeerError::Protocol(_))]));

        // A bitfield of the wrong length.
        let mut sched = scheduler(&info, 2);
        let mut s = ClientSession::new(info.clone(), ConnId(0), ClientConfig::default(), now);
        drive(&mut s, &mut sched, now);
        assert_eq!(sent(&mut s, now).len(), 1);
        s.handle_frame(
            now,
            &body(Response::Bitfield { file_id: info.file_id, bits: Some(vec![0; 9]) }),
        );
        assert!(matches!(events(&mut s)[..], [ClientEvent::Failed(PeerError::Protocol(_))]));
    }

    #[test]
    fn refusals_of_unavailable_chunks_are_retried_others_end_the_session() {
        let (info, _, mut sched, mut s, asked) = started(6, 2);
        let now = crate::sim::epoch();
        let refusal = |code, i| {
            body(Response::Error {
                code,
                message: "no".into(),
                file_id: Some(info.file_id),
                chunk_index: i,
            })
        };
        s.handle_frame(now, &refusal(ErrorCode::ChunkNotAvailable, asked[0]));
        assert!(events(&mut s).is_empty() && !s.is_finished());
        drive(&mut s, &mut sched, now);
        assert_eq!(sched.peer_stats(ConnId(0)).unwrap().refused_requests, 1);
        s.handle_frame(now, &refusal(ErrorCode::FileChanged, asked[1]));
        assert!(matches!(
            events(&mut s)[..],
            [ClientEvent::Failed(PeerError::Refused { code: ErrorCode::FileChanged, .. })]
        ));
    }

    #[test]
    fn a_partial_seeder_is_asked_for_its_bitfield_again_on_time() {
        let (info, _) = file(8);
        let mut sched = scheduler(&info, 2);
        let t0 = crate::sim::epoch();
        let mut s = ClientSession::new(info.clone(), ConnId(0), ClientConfig::default(), t0);
        drive(&mut s, &mut sched, t0);
        assert_eq!(sent(&mut s, t0).len(), 1);
        // It has chunk 3 only.
        s.handle_frame(
            t0,
            &body(Response::Bitfield { file_id: info.file_id, bits: Some(vec![0b1000]) }),
        );
        drive(&mut s, &mut sched, t0);
        assert_eq!(
            sent(&mut s, t0),
            vec![Request::Chunk { file_id: info.file_id, chunk_index: 3, priority: 0 }]
        );
        assert_eq!(s.poll_timeout(), Some(t0 + BITFIELD_REFRESH));
        let t1 = t0 + BITFIELD_REFRESH;
        drive(&mut s, &mut sched, t1);
        assert_eq!(sent(&mut s, t1), vec![Request::Bitfield { file_id: info.file_id }]);
    }

    #[test]
    fn a_rate_limit_delays_requests_until_their_release() {
        let (info, _) = file(8);
        let mut sched = scheduler(&info, 4);
        let t0 = crate::sim::epoch();
        // 4096 B/s with a burst of one chunk: the second request waits about a second.
        let throttle = Throttle::new(4096, 4096, t0);
        let (mut s, mut swarm) = throttled(&info, &mut sched, &throttle, t0);
        s.drive(t0, &mut swarm);
        assert_eq!(sent(&mut s, t0).len(), 1);
        s.handle_frame(t0, &body(Response::Bitfield { file_id: info.file_id, bits: None }));
        s.drive(t0, &mut swarm);
        let now_sent = sent(&mut s, t0).len();
        assert!(now_sent < 4, "all {now_sent} requests went out at once");
        let next = s.poll_timeout().unwrap();
        assert!(next > t0);
        assert!(s.poll_transmit(next).is_some());
    }

    #[test]
    fn a_chunk_trickling_in_keeps_its_peer_from_stalling_and_silence_does_not() {
        let (info, _, mut sched, mut s, asked) = started(4, 2);
        let t0 = crate::sim::epoch();
        s.handle_frame(t0, &chunk_header(&info, asked[0]));
        // Its payload arrives a little every second, for three stall timeouts (10 s each).
        for sec in 1..=30 {
            let now = t0 + Duration::from_secs(sec);
            s.handle_progress(now);
            drive(&mut s, &mut sched, now);
        }
        assert_eq!(sched.peer_stats(ConnId(0)).unwrap().stalls, 0);
        assert!(!s.is_finished());
        // Then nothing for the stall timeout: the peer stalls.
        drive(&mut s, &mut sched, t0 + Duration::from_secs(40));
        assert_eq!(sched.peer_stats(ConnId(0)).unwrap().stalls, 1);
    }

    #[test]
    fn requests_held_back_by_our_download_limit_do_not_stall_the_peer() {
        let (info, _) = file(8);
        let mut sched = scheduler(&info, 4);
        let t0 = crate::sim::epoch();
        // 100 B/s: each 4 KiB request is released ~41 s after the one before.
        let throttle = Throttle::new(100, 100, t0);
        let (mut s, mut swarm) = throttled(&info, &mut sched, &throttle, t0);
        s.drive(t0, &mut swarm);
        sent(&mut s, t0);
        s.handle_frame(t0, &body(Response::Bitfield { file_id: info.file_id, bits: None }));
        for sec in 0..=60 {
            let now = t0 + Duration::from_secs(sec);
            swarm.last_progress = now;
            s.drive(now, &mut swarm);
            sent(&mut s, now);
        }
        assert_eq!(swarm.scheduler.peer_stats(ConnId(0)).unwrap().stalls, 0);
    }

    #[test]
    fn an_idle_connection_starves_only_without_progress_anywhere() {
        let (info, _) = file(4);
        let config = SchedulerConfig {
            chunk_size_bytes: info.chunk_size,
            file_size_bytes: Some(info.size),
            window_min: 4,
            window_max: 4,
            endgame_copies_max: 1,
            // Connection 1 never answers; it must not be declared stalled in this test.
            stall_timeout: Duration::from_secs(3600),
            ..SchedulerConfig::default()
        };
        let mut sched = Scheduler::new(config, 4, &Bitfield::new(4), 1);
        let t0 = crate::sim::epoch();
        let config =
            ClientConfig { starved_after: Duration::from_secs(10), ..ClientConfig::default() };
        let all = body(Response::Bitfield { file_id: info.file_id, bits: None });
        // Connection 1 is asked for every chunk; connection 0 then has nothing to ask.
        let mut busy = ClientSession::new(info.clone(), ConnId(1), config, t0);
        drive(&mut busy, &mut sched, t0);
        sent(&mut busy, t0);
        busy.handle_frame(t0, &all);
        drive(&mut busy, &mut sched, t0);
        assert_eq!(sent(&mut busy, t0).len(), 4);
        let mut s = ClientSession::new(info.clone(), ConnId(0), config, t0);
        drive(&mut s, &mut sched, t0);
        assert_eq!(sent(&mut s, t0).len(), 1);
        s.handle_frame(t0, &all);
        drive(&mut s, &mut sched, t0);
        assert!(sent(&mut s, t0).is_empty());
        assert_eq!(s.poll_timeout(), Some(t0 + Duration::from_secs(10)));
        let t1 = t0 + Duration::from_secs(8);
        let mut swarm =
            Swarm { scheduler: &mut sched, may_request: true, throttle: None, last_progress: t1 };
        s.drive(t0 + Duration::from_secs(11), &mut swarm);
        assert!(!s.is_finished(), "progress elsewhere 3 s ago");
        assert_eq!(s.poll_timeout(), Some(t1 + Duration::from_secs(10)));
        s.drive(t1 + Duration::from_secs(11), &mut swarm);
        assert_eq!(events(&mut s), vec![ClientEvent::Failed(PeerError::Starved)]);
    }

    #[test]
    fn manifest_answers_are_checked() {
        let (info, _) = file(3);
        let id = info.file_id;
        assert_eq!(
            manifest_from(id, &body(Response::FileInfo((*info).clone()))),
            Ok((*info).clone())
        );
        assert!(matches!(
            manifest_from(FileId([1; 32]), &body(Response::FileInfo((*info).clone()))),
            Err(PeerError::Protocol(_))
        ));
        let refused = body(Response::Error {
            code: ErrorCode::UnknownFile,
            message: "no".into(),
            file_id: None,
            chunk_index: 0,
        });
        assert!(matches!(
            manifest_from(id, &refused),
            Err(PeerError::Refused { code: ErrorCode::UnknownFile, .. })
        ));
        assert!(matches!(manifest_from(id, &[1, 2, 3]), Err(PeerError::Protocol(_))));
    }
}
