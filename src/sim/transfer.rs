//! Deterministic simulation of one download from a swarm of seeders, on virtual time.
//!
//! **Owns** virtual stream links (latency, jitter, bandwidth, loss as retransmission
//! delay), seeders with seeded faults (liars, silent and stalling peers, upload limits), a
//! downloader that drives the real [`Scheduler`], and the invariants every run must keep.
//! **May not touch** sockets, files, threads, the wall clock (beyond [`super::epoch`]) or
//! the OS RNG: everything random comes from [`SwarmConfig::seed`], so a failing run replays
//! exactly from its seed.
//!
//! Events (segment arrivals, a seeder's delayed answer, timers) sit in one queue ordered by
//! virtual time, then by insertion; `now` jumps to the next one (quinn-proto's `Pair`
//! `step`/`drive`, as the DHT simulation in `sim/mod.rs`).
//!
//! A link is a TCP-like stream: each direction serialises segments at its bandwidth, adds
//! latency plus seeded jitter, and keeps order; a lost segment arrives one retransmission
//! delay late and holds back everything behind it (head-of-line blocking), which is what
//! loss does to the peer wire. Segments carry real frames from [`wire::Encoder`], decoded
//! with [`wire::decode`], and chunk payloads are checked with the real [`chunk_hash`]
//! against the manifest.
//!
//! **What is production code and what is not.** The [`Scheduler`], [`Throttle`], the wire
//! codec and the chunk hash are the production ones. The per-connection protocol (request
//! window, response matching, bitfield refresh, verify, ban and give-up decisions) lives
//! today inline in `node/fetch.rs::conn_loop` over a glommio socket and cannot run here;
//! [`ClientConn`] and [`ServerConn`] are the one adapter that stands in for it, following
//! `conn_loop` and `serve_connection` step for step. When the sans-IO peer sessions land
//! (issue 10, item 2), these two types become thin wrappers over them.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, VecDeque};
use std::fmt;
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::config::{PEER_TIMEOUT, THROTTLE_BURST_BYTES};
use crate::crypto::{chunk_hash, ChunkHash, FileId};
use crate::manifest::FileInfo;
use crate::throttle::Throttle;
use crate::transfer::{
    Bitfield, ConnId, PeerStats, Scheduler, SchedulerConfig, SchedulerEvent, SchedulerStats,
    Strategy,
};
use crate::wire::{self, Encoder, ErrorCode, Message, FRAME_PREFIX_BYTES};

/// How often the downloader asks a peer that is still downloading for its bitfield
/// (`node/fetch.rs` `BITFIELD_REFRESH`).
pub const BITFIELD_REFRESH: Duration = Duration::from_millis(500);
/// Events one run may process before it is declared a livelock.
const EVENTS_MAX: u64 = 20_000_000;

/// One direction of a virtual stream between the downloader and a seeder (both directions
/// use the same spec, with their own queue and random draws).
#[derive(Clone, Debug, PartialEq)]
pub struct LinkSpec {
    /// Fixed one-way delay.
    pub latency: Duration,
    /// Extra one-way delay per segment, uniform in `0..=jitter`. Order is kept: a segment
    /// never overtakes the one before it.
    pub jitter: Duration,
    /// Serialisation rate of the link, bytes per second (at least 1).
    pub bandwidth_bytes_per_s: u64,
    /// Probability that a segment is lost once and retransmitted.
    pub loss_probability: f64,
    /// How late a lost segment arrives (the retransmission timeout); segments behind it
    /// wait for it.
    pub retransmit_delay: Duration,
}

impl LinkSpec {
    /// A clean link: `latency` one way, `bandwidth_bytes_per_s`, no jitter or loss.
    pub fn clean(latency: Duration, bandwidth_bytes_per_s: u64) -> Self {
        Self {
            latency,
            jitter: Duration::ZERO,
            bandwidth_bytes_per_s,
            loss_probability: 0.0,
            retransmit_delay: Duration::from_millis(200),
        }
    }

    /// The most a segment can be delayed beyond the fixed latency and its own transfer.
    pub fn delay_spread(&self) -> Duration {
        let loss = if self.loss_probability > 0.0 { self.retransmit_delay } else { Duration::ZERO };
        self.jitter + loss
    }
}

/// How a seeder misbehaves.
#[derive(Clone, Debug, PartialEq)]
pub enum Behaviour {
    /// Serves every chunk it has, correctly.
    Honest,
    /// Its copy of the file is corrupt in each chunk with this probability (drawn once per
    /// chunk from the seed): it serves those chunks with wrong bytes, every time.
    Liar {
        /// Probability that a given chunk is corrupt in its copy, 0–1.
        probability: f64,
    },
    /// Answers its first `after` requests, then never again (the connection stays open).
    Silent {
        /// Requests answered before it goes quiet.
        after: u32,
    },
    /// Answers its first `after` requests, holds the next answer for `pause`, then goes on.
    Stall {
        /// Requests answered before the pause.
        after: u32,
        /// How long it stops answering.
        pause: Duration,
    },
}

impl Behaviour {
    /// Truthful, never silent, and never quiet for half of `PEER_TIMEOUT` or more.
    pub fn is_reliable(&self) -> bool {
        match self {
            Self::Honest => true,
            Self::Stall { pause, .. } => *pause < PEER_TIMEOUT / 2,
            Self::Liar { .. } | Self::Silent { .. } => false,
        }
    }

    /// Whether every byte it sends is correct.
    pub fn is_truthful(&self) -> bool {
        match self {
            Self::Liar { probability } => *probability <= 0.0,
            _ => true,
        }
    }
}

/// One seeder of the swarm.
#[derive(Clone, Debug, PartialEq)]
pub struct SeederSpec {
    /// How it behaves.
    pub behaviour: Behaviour,
    /// Its link to the downloader.
    pub link: LinkSpec,
    /// The chunks it has; `None` means all (a full seeder).
    pub has: Option<Bitfield>,
    /// Its upload limit in bytes per second (the seeder's per-peer `Throttle`), if any.
    pub upload_rate_bytes: Option<u64>,
}

impl SeederSpec {
    /// An honest full seeder on `link`, without a limit.
    pub fn honest(link: LinkSpec) -> Self {
        Self { behaviour: Behaviour::Honest, link, has: None, upload_rate_bytes: None }
    }
}

/// A swarm to simulate. All randomness derives from `seed`.
#[derive(Clone, Debug, PartialEq)]
pub struct SwarmConfig {
    /// Seed of the file's bytes, the links' draws, the liars' copies and the scheduler.
    pub seed: u64,
    /// Size of the file in bytes (at least 1).
    pub file_size_bytes: u64,
    /// Chunk size of the manifest, in bytes (`CHUNK_SIZE_MIN_BYTES..=CHUNK_SIZE_MAX_BYTES`).
    pub chunk_size_bytes: u32,
    /// The seeders; seeder `i` is scheduler peer `ConnId(i)`.
    pub seeders: Vec<SeederSpec>,
    /// Scheduler tunables; `chunk_size_bytes` and `file_size_bytes` are set from the file.
    pub scheduler: SchedulerConfig,
    /// The downloader's limit in bytes per second over all connections, if any.
    pub download_rate_bytes: Option<u64>,
    /// Virtual time after which an unfinished download counts as failed.
    pub time_limit: Duration,
}

impl SwarmConfig {
    /// A file of `chunks` chunks of `chunk_size_bytes` from `seeders`, production scheduler
    /// defaults (as `get` sets them), a one-hour limit.
    pub fn new(seed: u64, chunks: u32, chunk_size_bytes: u32, seeders: Vec<SeederSpec>) -> Self {
        let scheduler = SchedulerConfig {
            peers_max: seeders.len().max(SchedulerConfig::default().max_peers),
            endgame_copies_max: if seeders.len() > 1 { 2 } else { 1 },
            ..SchedulerConfig::default()
        };
        Self {
            seed,
            file_size_bytes: u64::from(chunks) * u64::from(chunk_size_bytes),
            chunk_size_bytes,
            seeders,
            scheduler,
            download_rate_bytes: None,
            time_limit: Duration::from_secs(3600),
        }
    }

    /// Number of chunks of the file.
    pub fn chunk_count(&self) -> u32 {
        self.file_size_bytes.div_ceil(self.chunk_size_bytes.into()) as u32
    }

    /// Whether the download must complete: the seeders that are reliable (truthful, never
    /// silent, never quiet for half of `PEER_TIMEOUT`) hold every chunk between them. A
    /// longer pause may rightly end the connection (the read timeout), and nothing
    /// reconnects.
    pub fn completion_expected(&self) -> bool {
        let n = self.chunk_count();
        let mut covered = Bitfield::new(n);
        for s in &self.seeders {
            if s.behaviour.is_reliable() {
                (0..n).filter(|&c| s.has.as_ref().is_none_or(|h| h.get(c))).for_each(|c| {
                    covered.set(c);
                });
            }
        }
        covered.count_ones() == n
    }
}

/// Why the downloader closed a connection (the `conn_loop` outcomes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Closed {
    /// Every chunk is verified.
    Complete,
    /// The scheduler banned the peer.
    Banned,
    /// Nothing arrived for `PEER_TIMEOUT` while answers were awaited (the socket's read
    /// timeout).
    ReadTimeout,
    /// Nothing to ask this peer for, and no progress from anyone for `PEER_TIMEOUT`.
    Idle,
    /// An answer that breaks the protocol (undecodable, unexpected or mismatched).
    Protocol,
}

/// What happened with one seeder.
#[derive(Clone, Debug, PartialEq)]
pub struct SeederReport {
    /// The scheduler's view at the end.
    pub stats: Option<PeerStats>,
    /// Chunk payload bytes the downloader received from it (verified or not).
    pub bytes_received: u64,
    /// Corrupt chunks the downloader read from it and reported to the scheduler.
    pub corrupt_read: u32,
    /// Chunks it delivered first (the copy that was written).
    pub chunks_written: u32,
    /// `PeerStalled` events for it.
    pub stall_events: u32,
    /// Whether a `PeerBanned` event named it.
    pub banned_event: bool,
    /// Why and when its connection ended, if it did.
    pub closed: Option<(Closed, Duration)>,
    /// Virtual send time and size of every chunk payload it sent.
    pub sends: Vec<(Duration, u64)>,
}

/// A chunk taken from a stalled peer: who stalled, and who was asked for it next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reassigned {
    /// The chunk.
    pub chunk: u32,
    /// The seeder that stalled with it in flight.
    pub from: usize,
    /// The first other seeder asked for it afterwards, if any.
    pub to: Option<usize>,
}

/// The outcome of one simulated download.
#[derive(Clone, Debug, PartialEq)]
pub struct SwarmReport {
    /// Every chunk verified.
    pub complete: bool,
    /// Virtual time at completion (or when the run ended).
    pub virtual_time: Duration,
    /// The written output equals the original file byte for byte.
    pub identical: bool,
    /// Chunks whose written bytes do not hash to the manifest (must be empty).
    pub bad_written: Vec<u32>,
    /// Per seeder.
    pub seeders: Vec<SeederReport>,
    /// The scheduler's counters.
    pub stats: SchedulerStats,
    /// Chunks cancelled at a stalled peer.
    pub reassigned: Vec<Reassigned>,
    /// Virtual arrival time, seeder and size of every chunk payload received.
    pub received: Vec<(Duration, usize, u64)>,
    /// Virtual time and size of every chunk request charged to the download limit.
    pub charged: Vec<(Duration, u64)>,
    /// Events processed.
    pub events: u64,
    /// A hash of every event in order: equal seeds give equal hashes.
    pub trace_hash: u64,
}

impl SwarmReport {
    /// Payload bytes received from all seeders.
    pub fn bytes_received(&self) -> u64 {
        self.seeders.iter().map(|s| s.bytes_received).sum()
    }
}

/// A broken invariant, with the seed that replays it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// The run's seed.
    pub seed: u64,
    /// What broke.
    pub what: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "seed {}: {}", self.seed, self.what)
    }
}

/// One frame on a link (encoded by the real codec), and the raw chunk payload that follows
/// a chunk response.
#[derive(Clone, Debug)]
struct Segment {
    frame: Vec<u8>,
    payload: Vec<u8>,
}

impl Segment {
    fn new(enc: &mut Encoder, msg: &Message, payload: Vec<u8>) -> Self {
        Self { frame: enc.frame(msg).to_vec(), payload }
    }

    fn len(&self) -> u64 {
        (self.frame.len() + self.payload.len()) as u64
    }

    fn decode(&self) -> Option<Message> {
        wire::decode(self.frame.get(FRAME_PREFIX_BYTES..)?).ok()
    }
}

/// One direction of a link: FIFO, bandwidth-serialised, seeded delay.
#[derive(Debug)]
struct Pipe {
    spec: LinkSpec,
    /// When the link finishes putting the last segment on the wire.
    free_at: Duration,
    /// Arrival of the last segment (later ones never arrive before it).
    last_arrival: Duration,
}

impl Pipe {
    fn new(spec: LinkSpec) -> Self {
        Self { spec, free_at: Duration::ZERO, last_arrival: Duration::ZERO }
    }

    /// Puts `bytes` on the link at `now`; returns the arrival time.
    fn send(&mut self, now: Duration, bytes: u64, rng: &mut SmallRng) -> Duration {
        let start = now.max(self.free_at);
        let bw = self.spec.bandwidth_bytes_per_s.max(1);
        let wire_time =
            Duration::from_nanos((u128::from(bytes) * 1_000_000_000 / u128::from(bw)) as u64);
        self.free_at = start + wire_time;
        let jitter = if self.spec.jitter.is_zero() {
            Duration::ZERO
        } else {
            Duration::from_nanos(rng.random_range(0..=self.spec.jitter.as_nanos() as u64))
        };
        let mut at = self.free_at + self.spec.latency + jitter;
        if self.spec.loss_probability > 0.0 && rng.random_bool(self.spec.loss_probability.min(1.0))
        {
            at += self.spec.retransmit_delay;
        }
        self.last_arrival = at.max(self.last_arrival);
        self.last_arrival
    }
}

/// What the downloader waits for on a connection, in the order the peer answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Waiting {
    Chunk(u32),
    Bitfield,
}

/// State of the download shared by its connections (`FetchCtx` in `node/fetch.rs`).
struct Download {
    info: FileInfo,
    sched: Scheduler,
    /// The output file.
    output: Vec<u8>,
    /// Chunks written (a later duplicate is not written again).
    written: Bitfield,
    throttle: Option<Throttle>,
    /// Last time any chunk verified.
    last_progress: Duration,
    enc: Encoder,
}

/// The downloader's side of one connection: the stand-in for `node/fetch.rs::conn_loop`
/// until the sans-IO `ClientSession` exists. It only moves what `conn_loop` moves between
/// the wire and the scheduler; every decision is the scheduler's.
struct ClientConn {
    id: ConnId,
    connected: bool,
    closed: Option<(Closed, Duration)>,
    waiting: VecDeque<Waiting>,
    /// The peer may still be downloading: refresh its bitfield.
    partial: bool,
    bitfield_due: Duration,
    /// Start of the current wait for an answer (the read timeout counts from here).
    read_since: Duration,
    /// Asleep on the download limit until then.
    asleep_until: Duration,
    /// It just read an answer (or connected): its next step may ask for more.
    turn: bool,
    /// Requests written and waiting for their link slot.
    outbox: Vec<(Duration, Segment)>,
    /// Answers arrived and not read yet.
    inbox: VecDeque<Segment>,
}

impl ClientConn {
    fn new(id: ConnId) -> Self {
        Self {
            id,
            connected: false,
            closed: None,
            waiting: VecDeque::new(),
            partial: true,
            bitfield_due: Duration::ZERO,
            read_since: Duration::ZERO,
            asleep_until: Duration::ZERO,
            turn: true,
            outbox: Vec::new(),
            inbox: VecDeque::new(),
        }
    }

    fn is_open(&self) -> bool {
        self.connected && self.closed.is_none()
    }

    fn close(&mut self, now: Duration, why: Closed, dl: &mut Download, base: Instant) {
        if self.closed.is_none() {
            self.closed = Some((why, now));
            if why != Closed::Complete {
                dl.sched.handle_peer_removed(base + now, self.id);
            }
        }
    }

    fn push(&mut self, at: Duration, msg: &Message, enc: &mut Encoder, waiting: Waiting) {
        if self.waiting.is_empty() {
            self.read_since = at;
        }
        self.waiting.push_back(waiting);
        self.outbox.push((at, Segment::new(enc, msg, Vec::new())));
    }

    /// `conn_loop`'s top half: close if banned or done, refresh the bitfield, fill the
    /// window (sleeping on the download limit per request). Like `conn_loop`, a connection
    /// that waits for an answer gets a turn only once it has read one; an idle one looks
    /// every time (`conn_loop` polls every 5 ms). The read timeout runs meanwhile.
    fn step(
        &mut self,
        now: Duration,
        dl: &mut Download,
        base: Instant,
        charged: &mut Vec<(Duration, u64)>,
    ) {
        if !self.is_open() || now < self.asleep_until {
            return;
        }
        if !self.waiting.is_empty() && !self.turn {
            if self.inbox.is_empty() && now >= self.read_since + PEER_TIMEOUT {
                self.close(now, Closed::ReadTimeout, dl, base);
            }
            return;
        }
        self.turn = false;
        let t = base + now;
        let file_id = dl.info.file_id;
        if dl.sched.peer_stats(self.id).is_some_and(|p| p.banned) {
            return self.close(now, Closed::Banned, dl, base);
        }
        if dl.sched.is_complete() {
            return self.close(now, Closed::Complete, dl, base);
        }
        if self.partial && now >= self.bitfield_due && !self.waiting.contains(&Waiting::Bitfield) {
            self.push(now, &Message::BitfieldRequest { file_id }, &mut dl.enc, Waiting::Bitfield);
            self.bitfield_due = now + BITFIELD_REFRESH;
        }
        let in_flight = self.waiting.iter().filter(|w| matches!(w, Waiting::Chunk(_))).count();
        let window = dl.sched.window(self.id) as usize;
        let mut asked = Vec::new();
        while in_flight + asked.len() < window {
            match dl.sched.poll_request(t, self.id) {
                Some(chunk) => asked.push(chunk),
                None => break,
            }
        }
        // `conn_loop` sleeps on the limit before each request, then writes them in one go.
        let mut send_at = now;
        for &chunk in &asked {
            if let Some(limit) = &dl.throttle {
                let len = dl.info.chunk_len(chunk);
                send_at += limit.reserve(base + send_at, len);
                charged.push((send_at, len));
            }
        }
        for &chunk in &asked {
            let msg = Message::ChunkRequest { file_id, chunk_index: chunk, priority: 0 };
            self.push(send_at, &msg, &mut dl.enc, Waiting::Chunk(chunk));
        }
        self.asleep_until = send_at;
        if self.waiting.is_empty() && now.saturating_sub(dl.last_progress) > PEER_TIMEOUT {
            self.close(now, Closed::Idle, dl, base);
        }
    }

    /// `conn_loop`'s bottom half: one answer, matched against the oldest request.
    fn handle_segment(
        &mut self,
        now: Duration,
        seg: &Segment,
        dl: &mut Download,
        base: Instant,
        report: &mut SeederReport,
        received: &mut Vec<(Duration, usize, u64)>,
    ) {
        if !self.is_open() {
            return;
        }
        let t = base + now;
        self.read_since = now;
        self.turn = true;
        let file_id = dl.info.file_id;
        let n = dl.info.chunk_count();
        let (Some(waiting), Some(msg)) = (self.waiting.pop_front(), seg.decode()) else {
            return self.close(now, Closed::Protocol, dl, base);
        };
        match (waiting, msg) {
            (Waiting::Bitfield, Message::Bitfield { file_id: f, bits }) if f == file_id => {
                let bits = match bits {
                    None => {
                        self.partial = false;
                        let mut all = Bitfield::new(n);
                        (0..n).for_each(|c| all.set(c));
                        all
                    }
                    Some(v) => match Bitfield::from_bytes(v, n) {
                        Some(b) => b,
                        None => return self.close(now, Closed::Protocol, dl, base),
                    },
                };
                dl.sched.handle_bitfield(t, self.id, &bits);
            }
            (
                Waiting::Chunk(index),
                Message::ChunkResponse { file_id: f, chunk_index, payload_len },
            ) if f == file_id
                && chunk_index == index
                && u64::from(payload_len) == dl.info.chunk_len(index)
                && seg.payload.len() == payload_len as usize =>
            {
                report.bytes_received += seg.payload.len() as u64;
                received.push((now, self.id.0 as usize, seg.payload.len() as u64));
                if chunk_hash(&seg.payload) != dl.info.chunk_hashes[index as usize] {
                    report.corrupt_read += 1;
                    dl.sched.handle_chunk_corrupt(t, self.id, index);
                    return;
                }
                if !dl.written.get(index) {
                    dl.written.set(index);
                    let r = dl.info.chunk_range(index);
                    dl.output[r.start as usize..r.end as usize].copy_from_slice(&seg.payload);
                    report.chunks_written += 1;
                }
                dl.last_progress = now;
                dl.sched.handle_chunk_verified(t, self.id, index);
            }
            (
                Waiting::Chunk(index),
                Message::Error {
                    code:
                        ErrorCode::ChunkNotAvailable
                        | ErrorCode::ChunkOutOfRange
                        | ErrorCode::Overloaded,
                    ..
                },
            ) => dl.sched.handle_request_failed(t, self.id, index),
            // Any other refusal or answer ends the connection.
            _ => self.close(now, Closed::Protocol, dl, base),
        }
    }

    /// When this connection next needs a turn without new input.
    fn poll_timeout(&self, now: Duration, last_progress: Duration) -> Option<Duration> {
        if !self.is_open() {
            return None;
        }
        let mut next = Vec::new();
        if self.asleep_until > now {
            next.push(self.asleep_until);
        }
        if self.partial {
            next.push(self.bitfield_due);
        }
        if self.waiting.is_empty() {
            next.push(last_progress + PEER_TIMEOUT + Duration::from_nanos(1));
        } else {
            next.push(self.read_since + PEER_TIMEOUT);
        }
        next.into_iter().filter(|&at| at > now).min()
    }
}

/// The seeder's side of one connection: the stand-in for `node/seed.rs::serve_connection`
/// (answers in order; a chunk it lacks is refused with `CHUNK_NOT_AVAILABLE`). Faults and
/// the upload limit sit around it, in [`SimSeeder`].
struct ServerConn {
    info: FileInfo,
    /// Its copy of the file (a liar's is corrupt in places).
    copy: Vec<u8>,
    has: Option<Bitfield>,
    enc: Encoder,
}

impl ServerConn {
    /// The answer to one request frame, and the payload bytes it carries.
    fn answer(&mut self, seg: &Segment) -> Segment {
        let file_id = self.info.file_id;
        let refuse = |code, chunk_index| Message::Error {
            code,
            message: String::new(),
            file_id: Some(file_id),
            chunk_index,
        };
        let msg = match seg.decode() {
            Some(Message::ChunkRequest { file_id: f, chunk_index, .. }) if f == file_id => {
                if chunk_index >= self.info.chunk_count() {
                    refuse(ErrorCode::ChunkOutOfRange, chunk_index)
                } else if self.has.as_ref().is_some_and(|h| !h.get(chunk_index)) {
                    refuse(ErrorCode::ChunkNotAvailable, chunk_index)
                } else {
                    let r = self.info.chunk_range(chunk_index);
                    let payload = self.copy[r.start as usize..r.end as usize].to_vec();
                    let payload_len = payload.len() as u32;
                    let header = Message::ChunkResponse { file_id, chunk_index, payload_len };
                    return Segment::new(&mut self.enc, &header, payload);
                }
            }
            Some(Message::BitfieldRequest { file_id: f }) if f == file_id => {
                let bits = self.has.as_ref().map(|h| h.as_bytes().to_vec());
                Message::Bitfield { file_id, bits }
            }
            Some(Message::ChunkRequest { chunk_index, .. }) => {
                refuse(ErrorCode::UnknownFile, chunk_index)
            }
            _ => refuse(ErrorCode::Malformed, 0),
        };
        Segment::new(&mut self.enc, &msg, Vec::new())
    }
}

/// A seeder: its connection, its faults and its upload limit. Requests are served one at
/// a time in order, each after the limit's wait, as `serve_connection` does.
struct SimSeeder {
    spec: SeederSpec,
    conn: ServerConn,
    throttle: Option<Throttle>,
    queue: VecDeque<Segment>,
    busy: bool,
    answered: u32,
    paused: bool,
}

enum Action {
    /// The handshake finished: the downloader adds the peer.
    Connected(usize),
    /// A segment reaches seeder `i`.
    ToSeeder(usize, Segment),
    /// Seeder `i` writes the answer to the head of its queue.
    SeederSend(usize),
    /// A segment reaches the downloader from seeder `i`.
    ToClient(usize, Segment),
    /// A timer: the scheduler's or a connection's.
    Wake,
}

struct Scheduled {
    at: Duration,
    seq: u64,
    action: Action,
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}

impl Eq for Scheduled {}

impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Scheduled {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

/// The original file of a run: seeded bytes.
pub fn file_bytes(config: &SwarmConfig) -> Vec<u8> {
    let mut rng = SmallRng::seed_from_u64(config.seed ^ 0xf11e);
    let mut bytes = vec![0u8; config.file_size_bytes as usize];
    rng.fill(&mut bytes[..]);
    bytes
}

/// The manifest of `bytes` in chunks of `chunk_size_bytes`.
fn manifest(bytes: &[u8], chunk_size_bytes: u32) -> FileInfo {
    let chunk_hashes: Vec<ChunkHash> =
        bytes.chunks(chunk_size_bytes as usize).map(chunk_hash).collect();
    let size = bytes.len() as u64;
    FileInfo {
        file_id: FileId::from_manifest(size, chunk_size_bytes, &chunk_hashes),
        name: "sim.bin".into(),
        size,
        chunk_size: chunk_size_bytes,
        creation_time: 0,
        chunk_hashes,
    }
}

/// A running simulation of one download.
pub struct TransferSim {
    config: SwarmConfig,
    base: Instant,
    now: Duration,
    rng: SmallRng,
    queue: BinaryHeap<Reverse<Scheduled>>,
    seq: u64,
    wake_at: Option<Duration>,
    dl: Download,
    original: Vec<u8>,
    seeders: Vec<SimSeeder>,
    up: Vec<Pipe>,
    down: Vec<Pipe>,
    clients: Vec<ClientConn>,
    reports: Vec<SeederReport>,
    reassigned: Vec<Reassigned>,
    received: Vec<(Duration, usize, u64)>,
    charged: Vec<(Duration, u64)>,
    complete_at: Option<Duration>,
    events: u64,
    trace: u64,
    verbose: bool,
}

impl TransferSim {
    /// Builds the swarm: the file, each seeder's copy, the links and the scheduler.
    ///
    /// # Panics
    /// If the scheduler config does not validate (a caller bug).
    pub fn new(config: SwarmConfig) -> Self {
        let original = file_bytes(&config);
        let info = manifest(&original, config.chunk_size_bytes);
        let n = info.chunk_count();
        let mut rng = SmallRng::seed_from_u64(config.seed);
        let base = super::epoch();
        let sched_config = SchedulerConfig {
            chunk_size_bytes: config.chunk_size_bytes,
            file_size_bytes: Some(config.file_size_bytes),
            ..config.scheduler.clone()
        };
        let sched = Scheduler::new(sched_config, n, &Bitfield::new(n), rng.random());
        let seeders = config
            .seeders
            .iter()
            .map(|spec| {
                let mut copy = original.clone();
                if let Behaviour::Liar { probability } = spec.behaviour {
                    for c in 0..n {
                        if rng.random_bool(probability.clamp(0.0, 1.0)) {
                            let r = info.chunk_range(c);
                            let at = rng.random_range(r.start..r.end) as usize;
                            copy[at] ^= 1 << rng.random_range(0..8);
                        }
                    }
                }
                let throttle =
                    spec.upload_rate_bytes.map(|r| Throttle::new(r, THROTTLE_BURST_BYTES, base));
                let conn = ServerConn {
                    info: info.clone(),
                    copy,
                    has: spec.has.clone(),
                    enc: Encoder::default(),
                };
                SimSeeder {
                    spec: spec.clone(),
                    conn,
                    throttle,
                    queue: VecDeque::new(),
                    busy: false,
                    answered: 0,
                    paused: false,
                }
            })
            .collect::<Vec<_>>();
        let k = seeders.len();
        let dl = Download {
            output: vec![0; info.size as usize],
            written: Bitfield::new(n),
            throttle: config
                .download_rate_bytes
                .map(|r| Throttle::new(r, THROTTLE_BURST_BYTES, base)),
            info,
            sched,
            last_progress: Duration::ZERO,
            enc: Encoder::default(),
        };
        let mut sim = Self {
            base,
            now: Duration::ZERO,
            queue: BinaryHeap::new(),
            seq: 0,
            wake_at: None,
            dl,
            original,
            up: config.seeders.iter().map(|s| Pipe::new(s.link.clone())).collect(),
            down: config.seeders.iter().map(|s| Pipe::new(s.link.clone())).collect(),
            clients: (0..k).map(|i| ClientConn::new(ConnId(i as u32))).collect(),
            reports: (0..k)
                .map(|_| SeederReport {
                    stats: None,
                    bytes_received: 0,
                    corrupt_read: 0,
                    chunks_written: 0,
                    stall_events: 0,
                    banned_event: false,
                    closed: None,
                    sends: Vec::new(),
                })
                .collect(),
            seeders,
            reassigned: Vec::new(),
            received: Vec::new(),
            charged: Vec::new(),
            complete_at: None,
            events: 0,
            trace: 0xcbf2_9ce4_8422_2325,
            verbose: false,
            rng,
            config,
        };
        // Connect: SYN, SYN-ACK, then the handshake's round trip (1.5 RTT).
        for i in 0..k {
            let at = sim.config.seeders[i].link.latency * 3;
            sim.schedule(at, Action::Connected(i));
        }
        if n == 0 {
            sim.complete_at = Some(Duration::ZERO);
        }
        sim
    }

    /// The current virtual time since the start.
    pub fn now(&self) -> Duration {
        self.now
    }

    /// Runs until the download completes, every connection is closed with nothing left to
    /// happen, or `time_limit` passes; then reports.
    pub fn run(mut self) -> SwarmReport {
        while self.complete_at.is_none() && self.events < EVENTS_MAX {
            let Some(Reverse(next)) = self.queue.pop() else { break };
            if next.at > self.config.time_limit {
                self.now = self.config.time_limit;
                break;
            }
            self.now = self.now.max(next.at);
            self.events += 1;
            self.handle(next.action);
            self.pump();
        }
        self.report()
    }

    /// Prints every event to stderr as it happens (for replaying one seed by hand).
    pub fn verbose(mut self) -> Self {
        self.verbose = true;
        self
    }

    fn trace(&mut self, kind: u64, a: u64, b: u64) {
        if self.verbose {
            const KINDS: [&str; 10] = [
                "",
                "connected",
                "to-seeder",
                "seeder-send",
                "to-client",
                "wake",
                "complete",
                "stalled",
                "banned",
                "request",
            ];
            let kind_name = KINDS.get(kind as usize).copied().unwrap_or("?");
            let closed: Vec<_> = self.clients.iter().map(|c| c.closed.map(|x| x.0)).collect();
            eprintln!(
                "{:>12.6} {kind_name:<12} {a:>3} {b:>8}  missing {} closed {closed:?}",
                self.now.as_secs_f64(),
                self.dl.sched.missing()
            );
        }
        for word in [self.now.as_nanos() as u64, kind, a, b] {
            self.trace = (self.trace ^ word).wrapping_mul(0x0100_0000_01b3);
        }
    }

    fn schedule(&mut self, at: Duration, action: Action) {
        self.seq += 1;
        self.queue.push(Reverse(Scheduled { at, seq: self.seq, action }));
    }

    fn handle(&mut self, action: Action) {
        let now = self.now;
        match action {
            Action::Connected(i) => {
                self.trace(1, i as u64, 0);
                self.clients[i].connected = true;
                self.dl.sched.handle_peer_added(self.base + now, ConnId(i as u32));
            }
            Action::ToSeeder(i, seg) => {
                self.trace(2, i as u64, seg.len());
                let s = &mut self.seeders[i];
                s.queue.push_back(seg);
                if !s.busy {
                    self.serve_next(i);
                }
            }
            Action::SeederSend(i) => {
                let s = &mut self.seeders[i];
                let Some(request) = s.queue.pop_front() else { return };
                let answer = s.conn.answer(&request);
                s.answered += 1;
                let len = answer.len();
                if !answer.payload.is_empty() {
                    self.reports[i].sends.push((now, answer.payload.len() as u64));
                }
                self.trace(3, i as u64, len);
                let at = self.down[i].send(now, len, &mut self.rng);
                self.schedule(at, Action::ToClient(i, answer));
                self.seeders[i].busy = false;
                self.serve_next(i);
            }
            Action::ToClient(i, seg) => {
                self.trace(4, i as u64, seg.len());
                self.clients[i].inbox.push_back(seg);
            }
            Action::Wake => {
                self.trace(5, 0, 0);
                if self.wake_at == Some(now) {
                    self.wake_at = None;
                }
            }
        }
    }

    /// Seeder `i` takes the next request if it is free: a silent seeder drops it, a
    /// stalling one waits first, the upload limit delays it.
    fn serve_next(&mut self, i: usize) {
        let now = self.now;
        let s = &mut self.seeders[i];
        if s.busy || s.queue.is_empty() {
            return;
        }
        let mut at = now;
        match s.spec.behaviour {
            Behaviour::Silent { after } if s.answered >= after => {
                s.queue.clear();
                return;
            }
            Behaviour::Stall { after, pause } if s.answered >= after && !s.paused => {
                s.paused = true;
                at += pause;
            }
            _ => {}
        }
        let Some(head) = s.queue.front() else { return };
        if let Some(limit) = &s.throttle {
            // Only chunk answers are charged, as in `serve_connection`.
            if let Some(Message::ChunkRequest { chunk_index, .. }) = head.decode() {
                let has = s.spec.has.as_ref().is_none_or(|h| h.get(chunk_index));
                if has && chunk_index < s.conn.info.chunk_count() {
                    at += limit.reserve(self.base + at, s.conn.info.chunk_len(chunk_index));
                }
            }
        }
        s.busy = true;
        self.schedule(at, Action::SeederSend(i));
    }

    /// After every event: the scheduler's timers and events, then a turn for every
    /// connection, their writes onto the links, and the next wake-up.
    fn pump(&mut self) {
        let now = self.now;
        let t = self.base + now;
        self.dl.sched.handle_timeout(t);
        if let Some(next) = self.dl.sched.poll_timeout() {
            assert!(next > t, "the scheduler wants to spin at {now:?}");
        }
        self.drain_scheduler();
        // A close can change what the others may do (a removed peer's chunks go back to
        // the pool): go round until a round closes nobody.
        loop {
            let closed_before = self.clients.iter().filter(|c| c.closed.is_some()).count();
            for i in 0..self.clients.len() {
                let c = &mut self.clients[i];
                // As `conn_loop`: a turn, then one answer, then a turn... A connection asleep
                // on the download limit reads nothing meanwhile.
                loop {
                    c.step(now, &mut self.dl, self.base, &mut self.charged);
                    if !c.is_open() || now < c.asleep_until {
                        break;
                    }
                    let Some(seg) = c.inbox.pop_front() else { break };
                    let report = &mut self.reports[i];
                    c.handle_segment(
                        now,
                        &seg,
                        &mut self.dl,
                        self.base,
                        report,
                        &mut self.received,
                    );
                }
                for (at, seg) in std::mem::take(&mut c.outbox) {
                    if let Some(Message::ChunkRequest { chunk_index, .. }) = seg.decode() {
                        self.note_request(i, chunk_index);
                    }
                    let arrive = self.up[i].send(at, seg.len(), &mut self.rng);
                    self.schedule(arrive, Action::ToSeeder(i, seg));
                }
            }
            let banned = self.drain_scheduler();
            let closed_after = self.clients.iter().filter(|c| c.closed.is_some()).count();
            if !banned && closed_after == closed_before {
                break;
            }
        }
        if self.dl.sched.is_complete() && self.complete_at.is_none() {
            self.complete_at = Some(now);
            self.trace(6, 0, 0);
        }
        self.dl.sched.assert_invariants();
        let last = self.dl.last_progress;
        let next = self
            .clients
            .iter()
            .filter_map(|c| c.poll_timeout(now, last))
            .chain(self.dl.sched.poll_timeout().map(|at| at - self.base))
            .min();
        if let Some(at) = next {
            if self.wake_at.is_none_or(|w| at < w || w <= now) {
                self.wake_at = Some(at);
                self.schedule(at, Action::Wake);
            }
        }
    }

    /// Reads the scheduler's events and cancels; says whether a peer was removed.
    fn drain_scheduler(&mut self) -> bool {
        let mut stalled = Vec::new();
        let mut changed = false;
        while let Some(event) = self.dl.sched.poll_event() {
            match event {
                SchedulerEvent::PeerStalled { peer } => {
                    self.reports[peer.0 as usize].stall_events += 1;
                    stalled.push(peer);
                    self.trace(7, u64::from(peer.0), 0);
                }
                SchedulerEvent::PeerBanned { peer, .. } => {
                    self.reports[peer.0 as usize].banned_event = true;
                    self.trace(8, u64::from(peer.0), 0);
                    changed = true;
                }
                SchedulerEvent::Complete => {}
            }
        }
        // `conn_loop` sends no cancel message (the late answer is read and dropped as a
        // duplicate); the sim records which chunks a stall took away.
        while let Some((peer, chunk)) = self.dl.sched.poll_cancel() {
            if stalled.contains(&peer) {
                self.reassigned.push(Reassigned { chunk, from: peer.0 as usize, to: None });
            }
        }
        changed
    }

    fn note_request(&mut self, seeder: usize, chunk: u32) {
        self.trace(9, seeder as u64, u64::from(chunk));
        for r in self.reassigned.iter_mut() {
            if r.chunk == chunk && r.to.is_none() && r.from != seeder {
                r.to = Some(seeder);
            }
        }
    }

    fn report(mut self) -> SwarmReport {
        let n = self.dl.info.chunk_count();
        let bad_written: Vec<u32> = (0..n)
            .filter(|&c| self.dl.written.get(c))
            .filter(|&c| {
                let r = self.dl.info.chunk_range(c);
                chunk_hash(&self.dl.output[r.start as usize..r.end as usize])
                    != self.dl.info.chunk_hashes[c as usize]
            })
            .collect();
        for (i, r) in self.reports.iter_mut().enumerate() {
            r.stats = self.dl.sched.peer_stats(ConnId(i as u32));
            r.closed = self.clients[i].closed;
        }
        let complete = self.dl.sched.is_complete();
        SwarmReport {
            complete,
            virtual_time: self.complete_at.unwrap_or(self.now),
            identical: complete && self.dl.output == self.original,
            bad_written,
            seeders: self.reports,
            stats: self.dl.sched.stats().clone(),
            reassigned: self.reassigned,
            received: self.received,
            charged: self.charged,
            events: self.events,
            trace_hash: self.trace,
        }
    }
}

/// Runs one swarm to the end.
pub fn run_swarm(config: SwarmConfig) -> SwarmReport {
    TransferSim::new(config).run()
}

/// Most bytes a GCRA limit of `rate` with `burst` lets through between the first and last
/// of `sends` (inclusive, any sub-window): `rate × span + burst`, plus a byte of rounding
/// per send. Returns the worst window that exceeds it.
pub fn limit_excess(sends: &[(Duration, u64)], rate: u64, burst: u64) -> Option<String> {
    for i in 0..sends.len() {
        let mut sum = 0u64;
        for (j, &(at, bytes)) in sends.iter().enumerate().skip(i) {
            sum += bytes;
            let span = at.saturating_sub(sends[i].0).as_secs_f64();
            let allowed = rate as f64 * span + burst as f64 + (j - i + 1) as f64;
            if sum as f64 > allowed {
                return Some(format!(
                    "{sum} bytes in {span:.6} s from {:?} (limit {rate} B/s, burst {burst})",
                    sends[i].0
                ));
            }
        }
    }
    None
}

/// Checks every invariant of a finished run against its config.
pub fn check(config: &SwarmConfig, report: &SwarmReport) -> Result<(), Violation> {
    let fail = |what: String| Err(Violation { seed: config.seed, what });
    if !report.bad_written.is_empty() {
        return fail(format!("chunks written with wrong bytes: {:?}", report.bad_written));
    }
    if config.completion_expected() && !report.complete {
        return fail(format!(
            "download incomplete after {:?} ({} events); closes: {:?}",
            report.virtual_time,
            report.events,
            report.seeders.iter().map(|s| s.closed).collect::<Vec<_>>()
        ));
    }
    if report.complete && !report.identical {
        return fail("complete but the output differs from the original".into());
    }
    let ban_at = config.scheduler.failures_to_ban;
    for (i, (spec, s)) in config.seeders.iter().zip(&report.seeders).enumerate() {
        let Some(stats) = &s.stats else {
            if s.bytes_received > 0 {
                return fail(format!("seeder {i} sent data but the scheduler forgot it"));
            }
            continue;
        };
        if spec.behaviour.is_truthful() && (stats.corrupt_chunks > 0 || stats.banned) {
            return fail(format!("honest seeder {i} blamed: {stats:?}"));
        }
        if stats.corrupt_chunks != s.corrupt_read {
            return fail(format!(
                "seeder {i}: {} corrupt chunks read, scheduler counts {}",
                s.corrupt_read, stats.corrupt_chunks
            ));
        }
        if stats.banned != (s.corrupt_read >= ban_at) || stats.banned != s.banned_event {
            return fail(format!(
                "seeder {i}: banned={} banned_event={} after {} corrupt chunks (ban at {ban_at})",
                stats.banned, s.banned_event, s.corrupt_read
            ));
        }
        if stats.banned && s.closed.is_none_or(|(why, _)| why != Closed::Banned) {
            return fail(format!("seeder {i} banned but its connection stayed: {:?}", s.closed));
        }
        if let Some(rate) = spec.upload_rate_bytes {
            if let Some(e) = limit_excess(&s.sends, rate, THROTTLE_BURST_BYTES) {
                return fail(format!("seeder {i} upload limit broken: {e}"));
            }
        }
        if matches!(spec.behaviour, Behaviour::Silent { .. }) && stats.chunks_verified > 0 {
            if let Behaviour::Silent { after } = spec.behaviour {
                if stats.chunks_verified > u64::from(after) {
                    return fail(format!("silent seeder {i} delivered {stats:?}"));
                }
            }
        }
    }
    if let Some(rate) = config.download_rate_bytes {
        if let Some(e) = limit_excess(&report.charged, rate, THROTTLE_BURST_BYTES) {
            return fail(format!("download limit broken at request time: {e}"));
        }
        let first = report.charged.first().map_or(Duration::ZERO, |c| c.0);
        let span = report.virtual_time.saturating_sub(first).as_secs_f64();
        let requested: u64 = report.charged.iter().map(|c| c.1).sum();
        if requested as f64 > rate as f64 * span + (THROTTLE_BURST_BYTES + 1) as f64 * 2.0 {
            return fail(format!("{requested} bytes requested in {span:.3} s at {rate} B/s"));
        }
    }
    let written: u32 = report.seeders.iter().map(|s| s.chunks_written).sum();
    if report.complete && written != config.chunk_count() {
        return fail(format!("{written} chunks written for {} chunks", config.chunk_count()));
    }
    Ok(())
}

/// A random swarm from `seed`: 1–8 seeders with random links, holdings, faults and limits,
/// random scheduler tunables, and always at least one full seeder that is reliable
/// ([`Behaviour::is_reliable`]), so the download must complete.
pub fn random_swarm(seed: u64) -> SwarmConfig {
    let mut rng = SmallRng::seed_from_u64(seed ^ 0x5a4d);
    let chunk_size = [4096u32, 8192, 16384, 65536][rng.random_range(0..4)];
    let chunks =
        if rng.random_bool(0.2) { rng.random_range(1..=8) } else { rng.random_range(8..=160) };
    let count = rng.random_range(1..=8usize);
    let anchor = rng.random_range(0..count);
    let log_uniform = |rng: &mut SmallRng, lo: f64, hi: f64| {
        (lo.ln() + rng.random::<f64>() * (hi / lo).ln()).exp()
    };
    let seeders = (0..count)
        .map(|i| {
            let link = LinkSpec {
                latency: Duration::from_micros(log_uniform(&mut rng, 100.0, 150_000.0) as u64),
                jitter: Duration::from_micros(rng.random_range(0..=20_000)),
                bandwidth_bytes_per_s: log_uniform(&mut rng, 200e3, 200e6) as u64,
                loss_probability: if rng.random_bool(0.5) {
                    0.0
                } else {
                    rng.random_range(0.0..0.03)
                },
                retransmit_delay: Duration::from_millis(rng.random_range(200..=1000)),
            };
            let behaviour = if i == anchor {
                if rng.random_bool(0.7) {
                    Behaviour::Honest
                } else {
                    let quiet_max = PEER_TIMEOUT.as_millis() as u64 / 2;
                    Behaviour::Stall {
                        after: rng.random_range(0..10),
                        pause: Duration::from_millis(rng.random_range(500..quiet_max)),
                    }
                }
            } else {
                match rng.random_range(0..100) {
                    0..45 => Behaviour::Honest,
                    45..65 => Behaviour::Liar { probability: rng.random_range(0.05..=1.0) },
                    65..80 => Behaviour::Silent { after: rng.random_range(0..10) },
                    _ => Behaviour::Stall {
                        after: rng.random_range(0..10),
                        pause: Duration::from_millis(rng.random_range(500..30_000)),
                    },
                }
            };
            let has = if i == anchor || rng.random_bool(0.6) {
                None
            } else {
                let p = rng.random_range(0.2..0.9);
                let mut b = Bitfield::new(chunks);
                for c in 0..chunks {
                    if rng.random_bool(p) {
                        b.set(c);
                    }
                }
                Some(b)
            };
            let upload_rate_bytes =
                rng.random_bool(0.25).then(|| log_uniform(&mut rng, 100e3, 10e6) as u64);
            SeederSpec { behaviour, link, has, upload_rate_bytes }
        })
        .collect();
    let mut config = SwarmConfig::new(seed, chunks, chunk_size, seeders);
    config.file_size_bytes -= rng.random_range(0..u64::from(chunk_size));
    let s = &mut config.scheduler;
    s.strategy = if rng.random_bool(0.7) { Strategy::RarestFirst } else { Strategy::RoundRobin };
    s.window_max = rng.random_range(2..=64);
    s.window_min = rng.random_range(1..=s.window_max.min(4));
    s.endgame_chunks = rng.random_range(0..=32);
    s.endgame_copies_max = rng.random_range(1..=3);
    s.failures_to_ban = rng.random_range(1..=5);
    // Up to `PEER_TIMEOUT` (the production value equals it): beyond it, connections with
    // nothing to ask give up (no progress for `PEER_TIMEOUT`) before the stall frees the
    // chunks a silent peer holds, and the download fails; see ARCHITECTURE.md.
    s.stall_timeout =
        Duration::from_millis(rng.random_range(2_000..=PEER_TIMEOUT.as_millis() as u64));
    s.slow_peer_factor = [0, 2, 4, 8][rng.random_range(0..4)];
    // At least one slot per seeder: with fewer, a slot can go to a peer whose connection
    // never asks (blocked on a bitfield answer from a silent peer) and the download starves;
    // see ARCHITECTURE.md (testing) for this finding.
    s.max_peers = rng.random_range(count..=8.max(count));
    s.peers_max = s.max_peers.max(count);
    config.download_rate_bytes =
        rng.random_bool(0.15).then(|| log_uniform(&mut rng, 200e3, 20e6) as u64);
    config
}

/// Runs `count` random swarms with seeds `first_seed..first_seed + count`, checking every
/// invariant; stops at the first violation (a panic inside a run is one too).
pub fn run_many(first_seed: u64, count: u64) -> Result<RunSummary, Violation> {
    let mut summary = RunSummary::default();
    for seed in first_seed..first_seed.saturating_add(count) {
        let config = random_swarm(seed);
        let run = std::panic::catch_unwind(|| run_swarm(config.clone()));
        let report = run.map_err(|p| {
            let what = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_else(|| "panic".into());
            Violation { seed, what: format!("panicked: {what}") }
        })?;
        check(&config, &report)?;
        summary.add(&config, &report);
    }
    Ok(summary)
}

/// Totals over many runs.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RunSummary {
    /// Swarms run.
    pub swarms: u64,
    /// Downloads that completed.
    pub completed: u64,
    /// Seeders banned.
    pub bans: u64,
    /// Stall events.
    pub stalls: u64,
    /// Chunks taken from a stalled peer and asked of another.
    pub reassigned: u64,
    /// Endgame duplicates requested.
    pub endgame_requests: u64,
    /// Takeovers from slow peers.
    pub takeovers: u64,
    /// Connections closed for a read timeout or idleness.
    pub gave_up: u64,
    /// Events processed.
    pub events: u64,
    /// Virtual time simulated.
    pub virtual_time: Duration,
}

impl RunSummary {
    fn add(&mut self, _config: &SwarmConfig, r: &SwarmReport) {
        self.swarms += 1;
        self.completed += u64::from(r.complete);
        self.bans += r.seeders.iter().filter(|s| s.banned_event).count() as u64;
        self.stalls += r.seeders.iter().map(|s| u64::from(s.stall_events)).sum::<u64>();
        self.reassigned += r.reassigned.iter().filter(|x| x.to.is_some()).count() as u64;
        self.endgame_requests += r.stats.endgame_requests;
        self.takeovers += r.stats.takeovers;
        self.gave_up += r
            .seeders
            .iter()
            .filter(|s| matches!(s.closed, Some((Closed::ReadTimeout | Closed::Idle, _))))
            .count() as u64;
        self.events += r.events;
        self.virtual_time += r.virtual_time;
    }
}

/// Per-seeder bytes per map key: a helper for tests that bucket arrivals by virtual second.
pub fn bytes_per_second(received: &[(Duration, usize, u64)], seeder: usize) -> BTreeMap<u64, u64> {
    let mut out = BTreeMap::new();
    for &(at, s, bytes) in received {
        if s == seeder {
            *out.entry(at.as_secs()).or_insert(0) += bytes;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_pipe_serialises_at_its_bandwidth_and_keeps_order_under_jitter() {
        let mut rng = SmallRng::seed_from_u64(1);
        let mut p = Pipe::new(LinkSpec::clean(ms(10), 1_000_000));
        // 1,000 bytes take 1 ms on the wire; the second waits for the first.
        assert_eq!(p.send(Duration::ZERO, 1_000, &mut rng), ms(11));
        assert_eq!(p.send(Duration::ZERO, 1_000, &mut rng), ms(12));
        let spec = LinkSpec {
            jitter: ms(50),
            loss_probability: 0.3,
            ..LinkSpec::clean(ms(1), 1_000_000_000)
        };
        let mut p = Pipe::new(spec.clone());
        let mut last = Duration::ZERO;
        for i in 0..1_000u64 {
            let sent = Duration::from_micros(i * 10);
            let at = p.send(sent, 100, &mut rng);
            assert!(at >= last, "segment {i} overtook the one before it");
            assert!(at <= sent + ms(1) + spec.delay_spread() + ms(1), "{at:?}");
            last = at;
        }
    }

    #[test]
    fn limit_excess_finds_a_burst_beyond_the_bucket() {
        let ok = [(ms(0), 1_000), (ms(0), 1_000), (ms(1_000), 1_000)];
        assert_eq!(limit_excess(&ok, 1_000, 2_000), None);
        let over = [(ms(0), 1_000), (ms(0), 1_000), (ms(500), 1_000)];
        assert!(limit_excess(&over, 1_000, 2_000).is_some());
    }

    fn small_swarm(seed: u64) -> SwarmConfig {
        let mut liar = SeederSpec::honest(LinkSpec::clean(ms(1), 10_000_000));
        liar.behaviour = Behaviour::Liar { probability: 1.0 };
        let honest = SeederSpec::honest(LinkSpec::clean(ms(5), 1_000_000));
        SwarmConfig::new(seed, 20, 4096, vec![honest, liar])
    }

    #[test]
    fn the_checker_accepts_a_good_run_and_rejects_each_broken_invariant() {
        let config = small_swarm(3);
        let good = run_swarm(config.clone());
        assert_eq!(check(&config, &good), Ok(()));
        assert!(good.complete && good.identical && good.seeders[1].banned_event);

        let mut r = good.clone();
        r.bad_written = vec![0];
        assert!(check(&config, &r).is_err(), "a chunk written with wrong bytes");
        let mut r = good.clone();
        r.complete = false;
        assert!(check(&config, &r).is_err(), "an incomplete download");
        let mut r = good.clone();
        r.identical = false;
        assert!(check(&config, &r).is_err(), "output differs");
        let mut r = good.clone();
        r.seeders[0].stats.as_mut().unwrap().corrupt_chunks = 1;
        assert!(check(&config, &r).is_err(), "an honest peer blamed");
        let mut r = good.clone();
        r.seeders[1].corrupt_read += 1;
        assert!(check(&config, &r).is_err(), "blame differs from what was read");
        let mut r = good.clone();
        r.seeders[1].closed = None;
        assert!(check(&config, &r).is_err(), "a banned peer kept its connection");
        let mut limited = config.clone();
        limited.seeders[0].upload_rate_bytes = Some(1);
        let mut r = good;
        r.seeders[0].sends = vec![(ms(0), 4096); 1_000];
        assert!(check(&limited, &r).is_err(), "an upload limit broken");
    }

    #[test]
    fn no_reliable_seeder_means_no_completion_is_expected() {
        let mut config = small_swarm(1);
        assert!(config.completion_expected());
        config.seeders[0].behaviour = Behaviour::Silent { after: 2 };
        assert!(!config.completion_expected());
        let r = run_swarm(config.clone());
        assert!(!r.complete && r.bad_written.is_empty());
        assert_eq!(check(&config, &r), Ok(()));
    }

    #[test]
    fn random_swarms_replay_from_their_seed() {
        assert_eq!(random_swarm(42), random_swarm(42));
        assert_ne!(random_swarm(42), random_swarm(43));
        for seed in 0..20 {
            assert!(random_swarm(seed).completion_expected(), "seed {seed}");
        }
    }
}
