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
//! loss does to the peer wire.
//!
//! **What is production code and what is not.** Each connection is the sans-IO
//! [`ClientSession`] / [`ServerSession`] behind the real [`Framer`] and [`Deframer`]
//! (plaintext), so the links carry the sessions' bytes; behind them the [`Scheduler`], the
//! [`Throttle`], the codec and the chunk hash. `ClientConn` and `SimSeeder` are the pump:
//! bytes in, drive, transmits out, the socket's read timeout, writing verified chunks,
//! reading a chunk's bytes from the seeder's copy after the upload limit's wait.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, VecDeque};
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use super::Scheduled;
use crate::config::{
    throttle_burst_bytes, IDLE_TIMEOUT, PEER_TIMEOUT, REQUEST_BODY_MAX_BYTES,
    RESPONSE_BODY_MAX_BYTES,
};
use crate::crypto::{chunk_hash, ChunkHash, FileId};
use crate::manifest::FileInfo;
use crate::peer::{
    ClientConfig, ClientEvent, ClientSession, PeerError, Served, ServedFiles, ServerSession,
    ServerTransmit, Swarm,
};
use crate::throttle::Throttle;
use crate::transfer::{
    Bitfield, ConnId, PeerStats, Scheduler, SchedulerConfig, SchedulerEvent, SchedulerStats,
    SharedBitfield, Strategy,
};
use crate::wire::frame::{Deframed, Deframer, Framer};
use crate::wire::{decode_request, Request};

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

/// Why the downloader closed a connection.
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

/// Bytes on a link: what one `write` put on the stream (records from the real framer).
#[derive(Clone, Debug)]
struct Segment {
    bytes: Vec<u8>,
}

impl Segment {
    fn len(&self) -> u64 {
        self.bytes.len() as u64
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

/// State of the download shared by its connections (`FetchCtx` in `node/fetch.rs`).
struct Download {
    info: Arc<FileInfo>,
    sched: Scheduler,
    /// The output file.
    output: Vec<u8>,
    /// Chunks written (a later duplicate is not written again).
    written: Bitfield,
    throttle: Option<Throttle>,
    /// Last time any chunk verified.
    last_progress: Duration,
}

/// The downloader's side of one connection: the production [`ClientSession`] behind the
/// real [`Deframer`] and [`Framer`] (plaintext), and what a pump adds around them: the
/// socket's read timeout, writing verified chunks, closing.
struct ClientConn {
    id: ConnId,
    session: Option<ClientSession>,
    framer: Framer,
    deframer: Deframer,
    closed: Option<(Closed, Duration)>,
    /// Last time bytes arrived, or the session started waiting (the read timeout counts
    /// from here).
    read_since: Duration,
}

impl ClientConn {
    fn new(id: ConnId) -> Self {
        Self {
            id,
            session: None,
            framer: Framer::new(None),
            deframer: Deframer::new(None, RESPONSE_BODY_MAX_BYTES),
            closed: None,
            read_since: Duration::ZERO,
        }
    }

    fn is_open(&self) -> bool {
        self.session.is_some() && self.closed.is_none()
    }

    fn close(&mut self, now: Duration, why: Closed, dl: &mut Download, base: Instant) {
        if self.closed.is_none() {
            self.closed = Some((why, now));
            if let Some(s) = &mut self.session {
                s.detach(base + now, &mut dl.sched);
            }
        }
    }

    /// Bytes from the peer: deframe them and hand each record to the session.
    fn handle_bytes(&mut self, now: Duration, bytes: &[u8], base: Instant) {
        let Some(session) = self.session.as_mut().filter(|_| self.closed.is_none()) else {
            return;
        };
        let t = base + now;
        self.read_since = now;
        self.deframer.feed(bytes);
        loop {
            match self.deframer.poll() {
                Ok(None) => break,
                Ok(Some(Deframed::Control)) => {
                    session.handle_frame(t, self.deframer.body());
                    if let Some((len, aad)) = session.payload_expected() {
                        self.deframer.expect_payload(len, aad);
                    }
                }
                Ok(Some(Deframed::Payload(payload))) => session.handle_payload(t, payload),
                Err(e) => {
                    session.handle_frame_error(t, e);
                    break;
                }
            }
        }
    }

    /// Drives the session, then acts on its events: writes verified chunks, counts corrupt
    /// ones, closes on `Done`/`Failed`. Returns the request frames to send now.
    fn drive(
        &mut self,
        now: Duration,
        dl: &mut Download,
        base: Instant,
        report: &mut SeederReport,
        received: &mut Vec<(Duration, usize, u64)>,
    ) -> Vec<u8> {
        let mut out = Vec::new();
        if !self.is_open() {
            return out;
        }
        let t = base + now;
        let Some(session) = self.session.as_mut() else { return out };
        let waiting_before = session.in_flight() > 0;
        let mut swarm = Swarm {
            scheduler: &mut dl.sched,
            may_request: true,
            throttle: dl.throttle.as_ref(),
            last_progress: base + dl.last_progress,
        };
        session.drive(t, &mut swarm);
        while let Some(frame) = session.poll_transmit(t) {
            self.framer.push_control(&mut out, &frame);
        }
        if !waiting_before && session.in_flight() > 0 {
            self.read_since = now;
        }
        let mut ended = None;
        while let Some(event) = session.poll_event() {
            match event {
                ClientEvent::Verified { chunk_index, offset, bytes, .. } => {
                    report.bytes_received += bytes.len() as u64;
                    received.push((now, self.id.0 as usize, bytes.len() as u64));
                    if !dl.written.get(chunk_index) {
                        dl.written.set(chunk_index);
                        let at = offset as usize;
                        dl.output[at..at + bytes.len()].copy_from_slice(&bytes);
                        report.chunks_written += 1;
                    }
                    dl.last_progress = now;
                }
                ClientEvent::Corrupt { chunk_index } => {
                    let len = dl.info.chunk_len(chunk_index);
                    report.bytes_received += len;
                    received.push((now, self.id.0 as usize, len));
                    report.corrupt_read += 1;
                }
                ClientEvent::Done => ended = ended.or(Some(Closed::Complete)),
                ClientEvent::Failed(e) => {
                    ended = ended.or(Some(match e {
                        PeerError::HashMismatch { .. } => Closed::Banned,
                        PeerError::Starved => Closed::Idle,
                        _ => Closed::Protocol,
                    }));
                }
            }
        }
        if let Some(why) = ended {
            self.close(now, why, dl, base);
        } else if session_waits(self.session.as_ref()) && now >= self.read_since + PEER_TIMEOUT {
            // The socket's read timeout: the pump's job, not the session's.
            self.close(now, Closed::ReadTimeout, dl, base);
        }
        out
    }

    /// When this connection next needs driving without new input.
    fn poll_timeout(&self, now: Duration, base: Instant) -> Option<Duration> {
        let session = self.session.as_ref().filter(|_| self.closed.is_none())?;
        let own = session.poll_timeout().map(|at| at.saturating_duration_since(base));
        let read = session_waits(Some(session)).then_some(self.read_since + PEER_TIMEOUT);
        own.into_iter().chain(read).filter(|&at| at > now).min()
    }
}

fn session_waits(session: Option<&ClientSession>) -> bool {
    session.is_some_and(|s| s.in_flight() > 0)
}

/// The one file a simulated seeder serves, as the production [`ServerSession`] sees it.
struct SimFiles {
    info: FileInfo,
    have: Option<SharedBitfield>,
}

impl ServedFiles for SimFiles {
    fn served(&self, id: &FileId) -> Option<Served<'_>> {
        (*id == self.info.file_id).then_some(Served { info: &self.info, have: self.have.as_ref() })
    }
}

/// A seeder: the production [`ServerSession`] behind the real deframer and framer, its copy
/// of the file (a liar's is corrupt in places), its faults and its upload limit. It sends
/// what the session says one transmit at a time, in order, a chunk after the limit's wait,
/// as `serve_connection` does.
struct SimSeeder {
    spec: SeederSpec,
    session: ServerSession,
    files: SimFiles,
    copy: Vec<u8>,
    framer: Framer,
    deframer: Deframer,
    throttle: Option<Throttle>,
    queue: VecDeque<ServerTransmit>,
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
    queue: BinaryHeap<Reverse<Scheduled<Action>>>,
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
                    spec.upload_rate_bytes.map(|r| Throttle::new(r, throttle_burst_bytes(r), base));
                SimSeeder {
                    spec: spec.clone(),
                    session: ServerSession::new(base, IDLE_TIMEOUT),
                    files: SimFiles {
                        info: info.clone(),
                        have: spec.has.as_ref().map(SharedBitfield::new),
                    },
                    copy,
                    framer: Framer::new(None),
                    deframer: Deframer::new(None, REQUEST_BODY_MAX_BYTES),
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
                .map(|r| Throttle::new(r, throttle_burst_bytes(r), base)),
            info: Arc::new(info),
            sched,
            last_progress: Duration::ZERO,
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
        let t = self.base + now;
        match action {
            Action::Connected(i) => {
                self.trace(1, i as u64, 0);
                let (info, config) = (self.dl.info.clone(), ClientConfig::default());
                let c = &mut self.clients[i];
                c.session = Some(ClientSession::new(info, c.id, config, t));
                c.read_since = now;
            }
            Action::ToSeeder(i, seg) => {
                self.trace(2, i as u64, seg.len());
                let s = &mut self.seeders[i];
                s.session.handle_timeout(t);
                if s.session.is_closed() {
                    return;
                }
                s.deframer.feed(&seg.bytes);
                loop {
                    match s.deframer.poll() {
                        Ok(None) => break,
                        Ok(Some(Deframed::Control)) => {
                            s.session.handle_frame(t, s.deframer.body(), &s.files);
                        }
                        // A client never sends payloads; the session refuses what follows.
                        Ok(Some(Deframed::Payload(_))) => {}
                        Err(e) => {
                            s.session.handle_frame_error(t, e);
                            break;
                        }
                    }
                }
                while let Some(tx) = s.session.poll_transmit() {
                    s.queue.push_back(tx);
                }
                self.serve_next(i);
            }
            Action::SeederSend(i) => {
                let s = &mut self.seeders[i];
                let Some(tx) = s.queue.pop_front() else { return };
                s.answered += 1;
                let mut out = Vec::new();
                match tx {
                    ServerTransmit::Frame(frame) => s.framer.push_control(&mut out, &frame),
                    ServerTransmit::Chunk { header, range, aad, .. } => {
                        s.framer.push_control(&mut out, &header);
                        let mut payload = s.copy[range.start as usize..range.end as usize].to_vec();
                        // Plaintext: no tag; the payload goes out as it is.
                        if let Ok(Some(tag)) = s.framer.seal_payload(&aad, &mut payload) {
                            payload.extend_from_slice(&tag);
                        }
                        self.reports[i].sends.push((now, range.end - range.start));
                        out.extend_from_slice(&payload);
                    }
                }
                let seg = Segment { bytes: out };
                self.trace(3, i as u64, seg.len());
                let at = self.down[i].send(now, seg.len(), &mut self.rng);
                self.schedule(at, Action::ToClient(i, seg));
                self.seeders[i].busy = false;
                self.serve_next(i);
            }
            Action::ToClient(i, seg) => {
                self.trace(4, i as u64, seg.len());
                self.clients[i].handle_bytes(now, &seg.bytes, self.base);
            }
            Action::Wake => {
                self.trace(5, 0, 0);
                if self.wake_at == Some(now) {
                    self.wake_at = None;
                }
            }
        }
    }

    /// Seeder `i` starts its next transmit if it is free: a silent seeder drops it, a
    /// pausing one waits first, the upload limit delays a chunk.
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
        if let (Some(limit), Some(ServerTransmit::Chunk { range, .. })) =
            (&s.throttle, s.queue.front())
        {
            at += limit.reserve(self.base + at, range.end - range.start);
        }
        s.busy = true;
        self.schedule(at, Action::SeederSend(i));
    }

    /// After every event: the scheduler's timers (the sim reads stalls and their cancels
    /// before the sessions drain them), then every session is driven, its requests go onto
    /// its link, and the next wake-up is set.
    fn pump(&mut self) {
        let now = self.now;
        let t = self.base + now;
        self.dl.sched.handle_timeout(t);
        if let Some(next) = self.dl.sched.poll_timeout() {
            assert!(next > t, "the scheduler wants to spin at {now:?}");
        }
        self.drain_scheduler();
        // A close or a verified chunk can change what the others may do (a removed peer's
        // chunks go back to the pool): go round until a round changes nothing.
        loop {
            let before =
                (self.dl.sched.missing(), self.closed_count(), self.dl.sched.stats().requests);
            for i in 0..self.clients.len() {
                let (c, report) = (&mut self.clients[i], &mut self.reports[i]);
                let out = c.drive(now, &mut self.dl, self.base, report, &mut self.received);
                if out.is_empty() {
                    continue;
                }
                self.note_requests(i, &out);
                let seg = Segment { bytes: out };
                let arrive = self.up[i].send(now, seg.len(), &mut self.rng);
                self.schedule(arrive, Action::ToSeeder(i, seg));
            }
            let banned = self.drain_scheduler();
            let after =
                (self.dl.sched.missing(), self.closed_count(), self.dl.sched.stats().requests);
            if !banned && after == before {
                break;
            }
        }
        if self.dl.sched.is_complete() && self.complete_at.is_none() {
            self.complete_at = Some(now);
            self.trace(6, 0, 0);
        }
        self.dl.sched.assert_invariants();
        let base = self.base;
        let next = self
            .clients
            .iter()
            .filter_map(|c| c.poll_timeout(now, base))
            .chain(self.dl.sched.poll_timeout().map(|at| at - base))
            .min();
        if let Some(at) = next {
            if self.wake_at.is_none_or(|w| at < w || w <= now) {
                self.wake_at = Some(at);
                self.schedule(at, Action::Wake);
            }
        }
    }

    fn closed_count(&self) -> usize {
        self.clients.iter().filter(|c| c.closed.is_some()).count()
    }

    /// Reads the scheduler's events and cancels; says whether a peer was banned.
    fn drain_scheduler(&mut self) -> bool {
        let mut stalled = Vec::new();
        let mut banned = false;
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
                    banned = true;
                }
                SchedulerEvent::Complete => {}
            }
        }
        // The sessions send no cancel message (the late answer is read and dropped as a
        // duplicate); the sim records which chunks a stall took away.
        while let Some((peer, chunk)) = self.dl.sched.poll_cancel() {
            if stalled.contains(&peer) {
                self.reassigned.push(Reassigned { chunk, from: peer.0 as usize, to: None });
            }
        }
        banned
    }

    /// Notes the chunk requests in the records `out` (plaintext frames) seeder `seeder` is
    /// sent: for the stall bookkeeping and the download limit.
    fn note_requests(&mut self, seeder: usize, out: &[u8]) {
        let mut d = Deframer::new(None, REQUEST_BODY_MAX_BYTES);
        d.feed(out);
        while let Ok(Some(Deframed::Control)) = d.poll() {
            if let Ok(Request::Chunk { chunk_index, .. }) = decode_request(d.body()) {
                self.trace(9, seeder as u64, u64::from(chunk_index));
                if self.dl.throttle.is_some() {
                    self.charged.push((self.now, self.dl.info.chunk_len(chunk_index)));
                }
                for r in self.reassigned.iter_mut() {
                    if r.chunk == chunk_index && r.to.is_none() && r.from != seeder {
                        r.to = Some(seeder);
                    }
                }
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
    // The simulated seeder and downloader charge whole chunks (the node's seeder charges
    // pieces), so a chunk bigger than the burst goes out in one send after its wait.
    let sim_burst = |rate: u64| throttle_burst_bytes(rate).max(config.chunk_size_bytes.into());
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
            if let Some(e) = limit_excess(&s.sends, rate, sim_burst(rate)) {
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
        if let Some(e) = limit_excess(&report.charged, rate, sim_burst(rate)) {
            return fail(format!("download limit broken at request time: {e}"));
        }
        let first = report.charged.first().map_or(Duration::ZERO, |c| c.0);
        let span = report.virtual_time.saturating_sub(first).as_secs_f64();
        let requested: u64 = report.charged.iter().map(|c| c.1).sum();
        if requested as f64 > rate as f64 * span + (sim_burst(rate) + 1) as f64 * 2.0 {
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
