//! The swarm scheduler: which chunk to ask which peer for, as a sans-IO state machine.
//!
//! The node feeds it what happens (`handle_*`: peers come and go, announce chunks, deliver
//! good or corrupt data, refuse) and drains its decisions (`poll_request` per peer,
//! `poll_cancel`, `poll_event`), waking it at `poll_timeout`. It never fails: input about
//! unknown peers or out-of-range chunks is ignored and counted in [`SchedulerStats`].
//!
//! Every chunk is in exactly one state: **had** (verified), **pending** (in the pool, nobody
//! asked), or **in flight** at one peer or, in the endgame, a few. Requests come from the
//! pool in the strategy's order; when the pool runs dry, idle fast peers take over chunks
//! from much slower ones, and in the endgame duplicate the last chunks. The first good copy
//! wins and the others are cancelled.
//!
//! Blame is per sender: a corrupt chunk counts against exactly the peer the node says sent
//! it, and that peer is not asked for that chunk again while another peer has it. A peer
//! that sits on requests for `stall_timeout` loses them (they are cancelled and go back to
//! the pool) and rests before it gets new ones.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::str::FromStr;
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::config::{CHUNKS_PER_FILE_MAX, CHUNK_SIZE_MAX_BYTES, CHUNK_SIZE_MIN_BYTES};
use crate::transfer::peer::{Peer, WindowRule};
use crate::transfer::picker::Pending;
use crate::transfer::Bitfield;

/// Largest per-peer window [`SchedulerConfig::window_max`] may be, in chunks.
pub const WINDOW_MAX_LIMIT: u32 = 1024;
/// Peers remembered per chunk as having sent corrupt data for it (oldest forgotten first).
const BAD_SOURCES_PER_CHUNK_MAX: usize = 8;
/// Longest `stall_timeout` accepted.
const STALL_TIMEOUT_MAX: Duration = Duration::from_secs(24 * 3600);
/// Longest rest after repeated stalls, as a multiple of `stall_timeout` (2^5).
const REST_FACTOR_MAX: u32 = 32;

/// One connection of this transfer, numbered by the caller. The scheduler treats each
/// connection as a peer of its own (several connections to one node are several windows);
/// who the node behind it is (its node ID) is the node's business, not the scheduler's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u32);

/// Order in which chunks leave the pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Strategy {
    /// Chunks the fewest connected peers have go first, ties broken by a seeded random
    /// order. Keeps rare chunks alive in the swarm and spreads downloaders apart.
    #[default]
    RarestFirst,
    /// Chunks in file order, handed to peers as they ask; with equal windows and the node
    /// polling peers in turn, consecutive chunks go to consecutive peers.
    RoundRobin,
}

impl FromStr for Strategy {
    type Err = ParseStrategyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "rarest-first" => Ok(Self::RarestFirst),
            "round-robin" => Ok(Self::RoundRobin),
            _ => Err(ParseStrategyError { given: s.to_owned() }),
        }
    }
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::RarestFirst => "rarest-first",
            Self::RoundRobin => "round-robin",
        })
    }
}

/// A `--strategy` value that names no strategy.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown strategy {given:?}: expected \"rarest-first\" or \"round-robin\"")]
pub struct ParseStrategyError {
    /// What was given.
    pub given: String,
}

/// Tunables of [`Scheduler`]. `Default` gives the production values; see each field.
#[derive(Debug, Clone, PartialEq)]
pub struct SchedulerConfig {
    /// Chunk order. Default [`Strategy::RarestFirst`].
    pub strategy: Strategy,
    /// Size of every chunk but possibly the last, in bytes (from the manifest). Default
    /// 512 KiB. Used for byte counts and the bandwidth-delay product.
    pub chunk_size_bytes: u32,
    /// File size in bytes, to size the last chunk; `None` counts every chunk as
    /// `chunk_size_bytes`. Default `None`.
    pub file_size_bytes: Option<u64>,
    /// Requests in flight per peer before anything is measured, and the smallest window,
    /// in chunks. Default 2 (one being served, one queued behind it).
    pub window_min: u32,
    /// Largest per-peer window, in chunks. Default 64 (32 MiB at 512 KiB chunks: the BDP of
    /// 1 Gbit/s at 256 ms). At most [`WINDOW_MAX_LIMIT`].
    pub window_max: u32,
    /// Window = this / 100 × throughput × RTT / chunk size. Default 200: twice the
    /// bandwidth-delay product, so the window never caps the throughput it measures.
    pub window_gain_percent: u32,
    /// Corrupt chunks from one peer that ban it for the transfer. Default 3.
    pub failures_to_ban: u32,
    /// A peer with requests in flight that verifies nothing, refuses nothing and sends no
    /// byte ([`Scheduler::handle_progress`]) for this long is stalled: its requests are
    /// cancelled and reassigned. Default 10 s.
    pub stall_timeout: Duration,
    /// The endgame starts when the pool is empty and at most this many chunks are in
    /// flight: idle peers then also request chunks in flight elsewhere. Default 16.
    pub endgame_chunks: u32,
    /// Copies of one chunk in flight at once in the endgame (1 disables duplicates).
    /// Default 2.
    pub endgame_copies_max: u32,
    /// Once the pool is empty, an idle peer at least this many times faster than the peer
    /// holding a request takes the request over (0 disables). Default 4.
    pub slow_peer_factor: u32,
    /// Peers that get requests at once, the best by score (throughput over penalties).
    /// Default 16.
    pub max_peers: usize,
    /// Peers remembered (connected, or gone but kept for stats and bans). Beyond it, the
    /// record of a disconnected peer is dropped; if none, new peers are refused and counted.
    /// Default 256.
    pub peers_max: usize,
    /// Cancels queued for [`Scheduler::poll_cancel`]; beyond it they are dropped and counted
    /// (the duplicate then arrives and is ignored). Default 4,096.
    pub cancels_queued_max: usize,
    /// Events queued for [`Scheduler::poll_event`]; beyond it ban and stall events are
    /// dropped and counted (`Complete` is never dropped). Default 1,024.
    pub events_queued_max: usize,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self {
            strategy: Strategy::RarestFirst,
            chunk_size_bytes: crate::config::CHUNK_SIZE_DEFAULT_BYTES,
            file_size_bytes: None,
            window_min: 2,
            window_max: 64,
            window_gain_percent: 200,
            failures_to_ban: 3,
            stall_timeout: Duration::from_secs(10),
            endgame_chunks: 16,
            endgame_copies_max: 2,
            slow_peer_factor: 4,
            max_peers: 16,
            peers_max: 256,
            cancels_queued_max: 4_096,
            events_queued_max: 1_024,
        }
    }
}

/// A [`SchedulerConfig`] that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SchedulerConfigError {
    /// A value is out of its range.
    #[error("{field} = {value} is out of range {min}..={max}")]
    OutOfRange {
        /// Field name.
        field: &'static str,
        /// Configured value.
        value: u64,
        /// Smallest allowed value.
        min: u64,
        /// Largest allowed value.
        max: u64,
    },
    /// `stall_timeout` is zero or longer than a day.
    #[error("stall_timeout must be positive and at most a day")]
    StallTimeoutOutOfRange,
}

impl SchedulerConfig {
    /// Checks the bounds [`Scheduler::new`] relies on.
    pub fn validate(&self) -> Result<(), SchedulerConfigError> {
        let ranges: [(&'static str, u64, u64, u64); 11] = [
            (
                "chunk_size_bytes",
                self.chunk_size_bytes.into(),
                CHUNK_SIZE_MIN_BYTES.into(),
                CHUNK_SIZE_MAX_BYTES.into(),
            ),
            ("window_min", self.window_min.into(), 1, self.window_max.into()),
            ("window_max", self.window_max.into(), 1, WINDOW_MAX_LIMIT.into()),
            ("window_gain_percent", self.window_gain_percent.into(), 100, 1_000),
            ("failures_to_ban", self.failures_to_ban.into(), 1, 1_000),
            ("endgame_copies_max", self.endgame_copies_max.into(), 1, 8),
            ("slow_peer_factor", self.slow_peer_factor.into(), 0, 1_000),
            ("max_peers", self.max_peers as u64, 1, self.peers_max as u64),
            ("peers_max", self.peers_max as u64, 1, 65_536),
            ("cancels_queued_max", self.cancels_queued_max as u64, 1, 1 << 20),
            ("events_queued_max", self.events_queued_max as u64, 1, 1 << 20),
        ];
        for (field, value, min, max) in ranges {
            if value < min || value > max {
                return Err(SchedulerConfigError::OutOfRange { field, value, min, max });
            }
        }
        if self.stall_timeout.is_zero() || self.stall_timeout > STALL_TIMEOUT_MAX {
            return Err(SchedulerConfigError::StallTimeoutOutOfRange);
        }
        Ok(())
    }
}

/// Why a peer was banned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BanReason {
    /// It sent `count` chunks that failed verification (`count` = `failures_to_ban`).
    CorruptChunks {
        /// Corrupt chunks received from it.
        count: u32,
    },
}

/// Something the node should act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SchedulerEvent {
    /// The peer is dropped for this transfer: it gets no more requests, its requests went
    /// back to the pool (no cancels are queued for it), and its chunks no longer count as
    /// available. The node should close the connection. Re-adding the id keeps it banned.
    PeerBanned {
        /// The culprit.
        peer: ConnId,
        /// Why.
        reason: BanReason,
    },
    /// The peer had requests in flight and answered nothing for `stall_timeout`. Its
    /// requests are reassigned (cancels are queued for them), its window is back at
    /// `window_min`, and it rests (no requests) for `stall_timeout` × 2^(stalls − 1), at
    /// most ×32, or until it delivers a good chunk after all. Informational: the node may
    /// keep or close the connection.
    PeerStalled {
        /// The slow peer.
        peer: ConnId,
    },
    /// Every chunk is verified. Emitted exactly once (at once by `new` if nothing was
    /// missing).
    Complete,
}

/// What the scheduler knows about one peer.
#[derive(Debug, Clone, PartialEq)]
pub struct PeerStats {
    /// Bytes of verified chunks it sent (duplicates included).
    pub bytes_verified: u64,
    /// Verified chunks it sent (duplicates included).
    pub chunks_verified: u64,
    /// Chunks from it that failed verification.
    pub corrupt_chunks: u32,
    /// Requests it refused or could not serve.
    pub refused_requests: u32,
    /// Times it was declared stalled.
    pub stalls: u32,
    /// Banned for this transfer.
    pub banned: bool,
    /// Currently added (not removed).
    pub connected: bool,
    /// Requests in flight at it now.
    pub in_flight: u32,
    /// Its current window, in chunks.
    pub window: u32,
    /// Estimated delivery rate, bytes per second, once measured.
    pub throughput_bytes_per_s: Option<u64>,
    /// Estimated time for one request to an idle peer, once measured.
    pub rtt: Option<Duration>,
}

/// Counters of the whole transfer, mostly of input that was ignored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SchedulerStats {
    /// Requests handed out (endgame duplicates and takeovers included).
    pub requests: u64,
    /// Endgame duplicates among them.
    pub endgame_requests: u64,
    /// Requests taken over from much slower peers.
    pub takeovers: u64,
    /// Verified chunks we already had (endgame races, late answers).
    pub duplicate_chunks: u64,
    /// Calls naming a peer that was never added, or is gone.
    pub unknown_peer_events: u64,
    /// Calls naming a chunk beyond the file.
    pub out_of_range_events: u64,
    /// Bitfields of the wrong length.
    pub malformed_bitfields: u64,
    /// Peers refused because `peers_max` records are all connected.
    pub peers_refused: u64,
    /// Cancels dropped because the queue was full.
    pub cancels_dropped: u64,
    /// Events dropped because the queue was full.
    pub events_dropped: u64,
}

/// The swarm scheduler of one download. See the module documentation.
#[derive(Debug)]
pub struct Scheduler {
    config: SchedulerConfig,
    chunk_count: u32,
    have: Bitfield,
    missing: u32,
    /// Per chunk: connected, non-banned peers that have it.
    avail: Vec<u32>,
    pending: Pending,
    /// Chunks in flight → the peers asked (1, or up to `endgame_copies_max`).
    holders: BTreeMap<u32, Vec<ConnId>>,
    /// Chunks → peers that sent corrupt data for them (cleared when the chunk verifies).
    /// Bounded: a peer enters at most once per chunk and is banned after
    /// `failures_to_ban` entries.
    bad_sources: BTreeMap<u32, Vec<ConnId>>,
    peers: BTreeMap<ConnId, Peer>,
    /// Peers allowed to get requests (best `max_peers` usable ones), cached for `ranked_at`.
    ranked: Vec<ConnId>,
    ranked_at: Option<Instant>,
    /// Bumped by every state change; a peer that found nothing to fetch sits out of the
    /// ranking until the next one (so it does not hold one of the `max_peers` slots).
    generation: u64,
    cancels: VecDeque<(ConnId, u32)>,
    events: VecDeque<SchedulerEvent>,
    complete_emitted: bool,
    stats: SchedulerStats,
    /// Chunks at or past this index are not requested ([`Scheduler::set_request_limit`]).
    request_limit: u32,
}

impl Scheduler {
    /// A scheduler for a file of `chunk_count` chunks of which `have` are already verified.
    /// `seed` drives the random tie-break.
    ///
    /// # Panics
    /// If the config does not validate, `chunk_count` exceeds `CHUNKS_PER_FILE_MAX`,
    /// `have` is not `chunk_count` long, or `file_size_bytes` does not match `chunk_count`:
    /// all caller bugs, never peer input.
    pub fn new(config: SchedulerConfig, chunk_count: u32, have: &Bitfield, seed: u64) -> Self {
        if let Err(e) = config.validate() {
            panic!("invalid scheduler config: {e}");
        }
        assert!(chunk_count <= CHUNKS_PER_FILE_MAX, "{chunk_count} chunks is too many");
        assert_eq!(have.len(), chunk_count, "bitfield length differs from the chunk count");
        if let Some(size) = config.file_size_bytes {
            let chunks = size.div_ceil(config.chunk_size_bytes.into());
            assert_eq!(chunks, u64::from(chunk_count), "file size does not match chunk count");
        }
        let salt = SmallRng::seed_from_u64(seed).random::<u64>();
        let mut pending = Pending::new(config.strategy, salt);
        for c in 0..chunk_count {
            if !have.get(c) {
                pending.insert(c, 0);
            }
        }
        let missing = chunk_count - have.count_ones();
        let mut s = Self {
            config,
            chunk_count,
            have: have.clone(),
            missing,
            avail: vec![0; chunk_count as usize],
            pending,
            holders: BTreeMap::new(),
            bad_sources: BTreeMap::new(),
            peers: BTreeMap::new(),
            ranked: Vec::new(),
            ranked_at: None,
            generation: 0,
            cancels: VecDeque::new(),
            events: VecDeque::new(),
            complete_emitted: false,
            stats: SchedulerStats::default(),
            request_limit: u32::MAX,
        };
        s.check_complete();
        s
    }

    /// A peer connected. Re-adding a removed peer keeps its history (and its ban); adding a
    /// connected one is ignored.
    pub fn handle_peer_added(&mut self, _now: Instant, peer: ConnId) {
        if let Some(p) = self.peers.get_mut(&peer) {
            if !p.connected {
                p.connected = true;
                if !p.banned {
                    p.has = Bitfield::new(self.chunk_count);
                }
            }
            self.invalidate();
            return;
        }
        if self.peers.len() >= self.config.peers_max && !self.evict_one() {
            self.stats.peers_refused += 1;
            return;
        }
        self.peers.insert(peer, Peer::new(self.chunk_count, self.config.window_min));
        self.invalidate();
    }

    /// A peer disconnected: its requests go back to the pool (no cancels: the connection is
    /// gone) and its chunks stop counting. Its stats stay until `peers_max` needs the room.
    pub fn handle_peer_removed(&mut self, _now: Instant, peer: ConnId) {
        if !self.peers.get(&peer).is_some_and(|p| p.connected) {
            self.stats.unknown_peer_events += 1;
            return;
        }
        self.detach(peer);
        if let Some(p) = self.peers.get_mut(&peer) {
            p.connected = false;
            p.rest_until = None;
        }
    }

    /// What the peer has, replacing what it said before. Ignored (and counted) if the
    /// length is not the chunk count.
    pub fn handle_bitfield(&mut self, _now: Instant, peer: ConnId, bits: &Bitfield) {
        if bits.len() != self.chunk_count {
            self.stats.malformed_bitfields += 1;
            return;
        }
        let Some(p) = self.live_peer(peer) else { return };
        if p.has == *bits {
            // A partial peer's bitfield is re-sent every half second, mostly unchanged.
            return;
        }
        let old = std::mem::replace(&mut p.has, bits.clone());
        self.apply_bits(peer, &old, bits);
        self.invalidate();
    }

    /// The peer now has `chunk`.
    pub fn handle_have(&mut self, _now: Instant, peer: ConnId, chunk: u32) {
        if !self.in_range(chunk) {
            return;
        }
        let Some(p) = self.live_peer(peer) else { return };
        if !p.has.get(chunk) {
            p.has.set(chunk);
            self.change_avail(peer, chunk, true, true);
            self.invalidate();
        }
    }

    /// `peer` is delivering: bytes of an answer arrived (in the middle of a chunk, say), or
    /// a request the node held back under its own download limit just went out. Its stall
    /// clock restarts; nothing else changes. A peer sending a big chunk slowly is not
    /// stalled, a silent one still is.
    pub fn handle_progress(&mut self, now: Instant, peer: ConnId) {
        let Some(p) = self.live_peer(peer) else { return };
        if !p.inflight.is_empty() {
            p.progress_at = Some(now);
        }
    }

    /// `peer` delivered `chunk` and it verified. The first copy wins: other requests for it
    /// are cancelled. A chunk from an unknown peer still counts as had (the data is good),
    /// but the call is counted as unknown.
    pub fn handle_chunk_verified(&mut self, now: Instant, peer: ConnId, chunk: u32) {
        if !self.in_range(chunk) {
            return;
        }
        let bytes = self.chunk_bytes(chunk);
        let rule = self.window_rule();
        match self.peers.get_mut(&peer) {
            Some(p) if p.connected => {
                let req = p.inflight.remove(&chunk);
                p.record_delivery(now, req, bytes, rule);
            }
            _ => self.stats.unknown_peer_events += 1,
        }
        self.invalidate();
        if self.have.get(chunk) {
            // Had chunks are never in flight, so nothing to release.
            self.stats.duplicate_chunks += 1;
            return;
        }
        if let Some(holders) = self.holders.remove(&chunk) {
            for q in holders.into_iter().filter(|&q| q != peer) {
                if let Some(qp) = self.peers.get_mut(&q) {
                    qp.inflight.remove(&chunk);
                }
                self.queue_cancel(q, chunk);
            }
        } else {
            self.pending.remove(chunk, self.avail[chunk as usize]);
        }
        self.have.set(chunk);
        self.missing -= 1;
        self.bad_sources.remove(&chunk);
        for p in self.peers.values_mut() {
            if p.has.get(chunk) {
                p.useful -= 1;
            }
        }
        self.check_complete();
    }

    /// `peer` sent `chunk` and it failed verification: exactly that peer is penalised, the
    /// chunk goes back to the pool, and the peer is not asked for it again while another
    /// peer has it. The `failures_to_ban`-th corrupt chunk bans the peer.
    pub fn handle_chunk_corrupt(&mut self, _now: Instant, peer: ConnId, chunk: u32) {
        if !self.in_range(chunk) {
            return;
        }
        let have = self.have.get(chunk);
        let Some(p) = self.live_peer(peer) else { return };
        let was_requested = p.inflight.remove(&chunk).is_some();
        p.corrupt += 1;
        let count = p.corrupt;
        if was_requested {
            self.unhold(chunk, peer);
        }
        if !have {
            let list = self.bad_sources.entry(chunk).or_default();
            if !list.contains(&peer) {
                if list.len() >= BAD_SOURCES_PER_CHUNK_MAX {
                    list.remove(0);
                }
                list.push(peer);
            }
        }
        if count >= self.config.failures_to_ban {
            self.detach(peer);
            if let Some(p) = self.peers.get_mut(&peer) {
                p.banned = true;
            }
            let reason = BanReason::CorruptChunks { count };
            self.queue_event(SchedulerEvent::PeerBanned { peer, reason });
        }
        self.invalidate();
    }

    /// `peer` refused `chunk` or does not have it: the chunk goes back to the pool and the
    /// peer no longer counts as having it (until it announces it again).
    pub fn handle_request_failed(&mut self, now: Instant, peer: ConnId, chunk: u32) {
        if !self.in_range(chunk) {
            return;
        }
        let Some(p) = self.live_peer(peer) else { return };
        let was_requested = p.inflight.remove(&chunk).is_some();
        p.refused += 1;
        p.progress_at = Some(now);
        let had = p.has.get(chunk);
        if had {
            p.has.clear(chunk);
        }
        if was_requested {
            self.unhold(chunk, peer);
        }
        if had {
            self.change_avail(peer, chunk, false, true);
        }
        self.invalidate();
    }

    /// Declares stalled every peer with requests in flight and no progress for
    /// `stall_timeout`.
    pub fn handle_timeout(&mut self, now: Instant) {
        let timeout = self.config.stall_timeout;
        for p in self.peers.values_mut() {
            if p.rest_until.is_some_and(|t| now >= t) {
                p.rest_until = None;
            }
        }
        let stalled: Vec<ConnId> = self
            .peers
            .iter()
            .filter(|(_, p)| {
                !p.inflight.is_empty()
                    && p.progress_at
                        .is_none_or(|t| t.checked_add(timeout).is_some_and(|d| now >= d))
            })
            .map(|(&id, _)| id)
            .collect();
        for id in stalled {
            let Some(p) = self.peers.get_mut(&id) else { continue };
            p.stalls += 1;
            p.window = self.config.window_min;
            let factor = 1u32 << (p.stalls - 1).min(REST_FACTOR_MAX.trailing_zeros());
            p.rest_until = now.checked_add(timeout * factor);
            let chunks: Vec<u32> = std::mem::take(&mut p.inflight).into_keys().collect();
            for c in chunks {
                self.unhold(c, id);
                self.queue_cancel(id, c);
            }
            self.queue_event(SchedulerEvent::PeerStalled { peer: id });
            self.invalidate();
        }
    }

    /// The next chunk to request from `peer`, if it may get one now: it is usable (added,
    /// not banned, not resting), among the best `max_peers`, below its window, and has a
    /// chunk we need that nobody else is fetching (or, once the pool is dry, one it can
    /// take over from a much slower peer or duplicate in the endgame). The caller sends the
    /// request; calling again gives the next one.
    ///
    /// `None` is not final: after any `handle_*` call, or once `poll_timeout` passes, poll
    /// every connected peer again until each says `None`. A peer that came away empty sits
    /// out of the `max_peers` ranking until the next `handle_*` call, so the slot goes to a
    /// peer that can use it.
    pub fn poll_request(&mut self, now: Instant, peer: ConnId) -> Option<u32> {
        if self.missing == 0 {
            return None;
        }
        let Some(p) = self.peers.get(&peer) else {
            self.stats.unknown_peer_events += 1;
            return None;
        };
        if !p.is_usable(now) || p.inflight.len() as u32 >= p.window || p.useful == 0 {
            return None;
        }
        let busy = !p.inflight.is_empty();
        self.rank(now);
        if !self.ranked.contains(&peer) {
            return None;
        }
        if !busy {
            let busy_peers = self.peers.values().filter(|q| !q.inflight.is_empty()).count();
            if busy_peers >= self.config.max_peers {
                return None;
            }
        }
        let chunk = self.pick_pending(peer).or_else(|| {
            if self.pending.requestable_below(self.request_limit).next().is_some() {
                None
            } else {
                self.pick_takeover(now, peer).or_else(|| self.pick_endgame(peer))
            }
        });
        let Some(chunk) = chunk else {
            if let Some(p) = self.peers.get_mut(&peer) {
                p.starved_at = Some(self.generation);
            }
            self.ranked_at = None;
            return None;
        };
        if let Some(p) = self.peers.get_mut(&peer) {
            p.add_request(now, chunk);
        }
        self.stats.requests += 1;
        Some(chunk)
    }

    /// Requests only chunks whose index is below `limit` (`None`: any chunk), until changed.
    /// A streaming download (`get -o -`, chunks written out in file order) keeps `limit` at
    /// the first chunk not yet written plus its reorder window, so what it must hold in
    /// memory stays bounded however far ahead a fast peer could run. Requests already in
    /// flight are kept; takeovers and endgame duplicates only concern chunks in flight, so
    /// they stay below the limit too. Peers that came away empty are polled again.
    pub fn set_request_limit(&mut self, limit: Option<u32>) {
        let limit = limit.unwrap_or(u32::MAX);
        if limit != self.request_limit {
            self.request_limit = limit;
            self.invalidate();
        }
    }

    /// A request to cancel: `chunk` arrived from another peer, or the peer stalled, or a
    /// faster peer took the request over.
    pub fn poll_cancel(&mut self) -> Option<(ConnId, u32)> {
        self.cancels.pop_front()
    }

    /// The next event; see [`SchedulerEvent`].
    pub fn poll_event(&mut self) -> Option<SchedulerEvent> {
        self.events.pop_front()
    }

    /// When to call [`Self::handle_timeout`] (a stall deadline) or poll again (a rest ends).
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.missing == 0 {
            return None;
        }
        let timeout = self.config.stall_timeout;
        self.peers
            .values()
            .filter_map(|p| {
                let stall = p.progress_at.filter(|_| !p.inflight.is_empty());
                let stall = stall.and_then(|t| t.checked_add(timeout));
                let rest = p.rest_until.filter(|_| p.connected && !p.banned);
                match (stall, rest) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                }
            })
            .min()
    }

    /// A counter that moves with every change that may give a peer a request again (a
    /// chunk verified or back in the pool, a peer added, removed, stalled or banned, a new
    /// request limit). A caller whose peers all said `None` from
    /// [`Self::poll_request`] need not poll again before it moves or
    /// [`Self::poll_timeout`] passes.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The peer's window in chunks (0 if unknown).
    pub fn window(&self, peer: ConnId) -> u32 {
        self.peers.get(&peer).map_or(0, |p| p.window)
    }

    /// What we know about `peer`, `None` if unknown.
    pub fn peer_stats(&self, peer: ConnId) -> Option<PeerStats> {
        let p = self.peers.get(&peer)?;
        Some(PeerStats {
            bytes_verified: p.bytes_verified,
            chunks_verified: p.chunks_verified,
            corrupt_chunks: p.corrupt,
            refused_requests: p.refused,
            stalls: p.stalls,
            banned: p.banned,
            connected: p.connected,
            in_flight: p.inflight.len() as u32,
            window: p.window,
            throughput_bytes_per_s: p.throughput.map(|t| t as u64),
            rtt: p.rtt.map(Duration::from_secs_f64),
        })
    }

    /// Known peers (connected or remembered), ascending.
    pub fn peers(&self) -> impl Iterator<Item = ConnId> + '_ {
        self.peers.keys().copied()
    }

    /// Transfer-wide counters.
    pub fn stats(&self) -> &SchedulerStats {
        &self.stats
    }

    /// Every chunk is verified.
    pub fn is_complete(&self) -> bool {
        self.missing == 0
    }

    /// Chunks still missing.
    pub fn missing(&self) -> u32 {
        self.missing
    }

    /// Checks every internal invariant; panics on a violation. O(chunks × peers): for tests
    /// and simulations.
    pub fn assert_invariants(&self) {
        let mut inflight_total = 0;
        for (&id, p) in &self.peers {
            assert!(p.inflight.len() as u32 <= self.config.window_max.max(p.window));
            assert!(p.window >= self.config.window_min && p.window <= self.config.window_max);
            if !p.connected || p.banned {
                assert!(p.inflight.is_empty(), "{id:?} gone or banned with requests");
            }
            for &c in p.inflight.keys() {
                assert!(self.holders.get(&c).is_some_and(|h| h.contains(&id)));
                assert!(!self.have.get(c));
            }
            inflight_total += p.inflight.len();
            let useful = p.has.ones().filter(|&c| !self.have.get(c)).count() as u32;
            assert_eq!(p.useful, useful, "{id:?} useful count");
        }
        assert_eq!(inflight_total, self.holders.values().map(Vec::len).sum::<usize>());
        let mut pending = 0;
        for c in 0..self.chunk_count {
            let avail =
                self.peers.values().filter(|p| p.connected && !p.banned && p.has.get(c)).count()
                    as u32;
            assert_eq!(self.avail[c as usize], avail, "availability of chunk {c}");
            let held = self.holders.get(&c).is_some_and(|h| !h.is_empty());
            assert!(!(held && self.have.get(c)), "chunk {c} had and in flight");
            if !held && !self.have.get(c) {
                pending += 1;
                assert!(self.pending.contains(c, avail), "chunk {c} lost from the pool");
            }
        }
        assert_eq!(self.pending.len(), pending);
        assert_eq!(self.missing, self.chunk_count - self.have.count_ones());
        assert!(self.cancels.len() <= self.config.cancels_queued_max);
        assert!(self.events.len() <= self.config.events_queued_max + 1);
    }

    // ---- internals ----

    fn in_range(&mut self, chunk: u32) -> bool {
        let ok = chunk < self.chunk_count;
        if !ok {
            self.stats.out_of_range_events += 1;
        }
        ok
    }

    /// The peer if it is connected and not banned; counts the call otherwise.
    fn live_peer(&mut self, peer: ConnId) -> Option<&mut Peer> {
        match self.peers.get_mut(&peer) {
            Some(p) if p.connected && !p.banned => Some(p),
            _ => {
                self.stats.unknown_peer_events += 1;
                None
            }
        }
    }

    fn chunk_bytes(&self, chunk: u32) -> u32 {
        let size = u64::from(self.config.chunk_size_bytes);
        match self.config.file_size_bytes {
            Some(file) if chunk + 1 == self.chunk_count => {
                // `new` checked file = (chunk_count − 1) × size + (1..=size).
                (file - u64::from(chunk) * size) as u32
            }
            _ => self.config.chunk_size_bytes,
        }
    }

    fn window_rule(&self) -> WindowRule {
        WindowRule {
            chunk_bytes: self.config.chunk_size_bytes,
            gain: f64::from(self.config.window_gain_percent) / 100.0,
            min: self.config.window_min,
            max: self.config.window_max,
        }
    }

    /// `peer` (connected, not banned) gained or lost `chunk`; its `has` is already updated.
    /// Without `rekey` the pool is left stale and the caller must rebuild it.
    fn change_avail(&mut self, peer: ConnId, chunk: u32, gained: bool, rekey: bool) {
        let old = self.avail[chunk as usize];
        let new = if gained { old + 1 } else { old - 1 };
        self.avail[chunk as usize] = new;
        if !self.have.get(chunk) {
            if rekey && !self.holders.contains_key(&chunk) {
                self.pending.rekey(chunk, old, new);
            }
            if let Some(p) = self.peers.get_mut(&peer) {
                if gained {
                    p.useful += 1;
                } else {
                    p.useful -= 1;
                }
            }
        }
    }

    /// `peer`'s chunks went from `old` to `new` (its `has` is already `new` or dropped). A
    /// big change (a seeder's full bitfield) re-sorts the pool in one pass instead of moving
    /// each chunk: several times faster at a million chunks.
    fn apply_bits(&mut self, peer: ConnId, old: &Bitfield, new: &Bitfield) {
        let bulk = old.count_ones() + new.count_ones() > (self.chunk_count / 16).max(16);
        for c in old.ones().filter(|&c| !new.get(c)) {
            self.change_avail(peer, c, false, !bulk);
        }
        for c in new.ones().filter(|&c| !old.get(c)) {
            self.change_avail(peer, c, true, !bulk);
        }
        if bulk {
            let pending = (0..self.chunk_count)
                .filter(|&c| !self.have.get(c) && !self.holders.contains_key(&c))
                .map(|c| (c, self.avail[c as usize]));
            self.pending.rebuild(pending);
        }
    }

    /// Removes `peer` as a holder of `chunk`; the chunk returns to the pool if nobody else
    /// holds it.
    fn unhold(&mut self, chunk: u32, peer: ConnId) {
        let Some(list) = self.holders.get_mut(&chunk) else { return };
        list.retain(|&q| q != peer);
        if list.is_empty() {
            self.holders.remove(&chunk);
            if !self.have.get(chunk) {
                self.pending.insert(chunk, self.avail[chunk as usize]);
            }
        }
    }

    /// Takes a peer out of the swarm (removed or banned): its requests return to the pool
    /// and its chunks stop counting.
    fn detach(&mut self, peer: ConnId) {
        let Some(p) = self.peers.get_mut(&peer) else { return };
        let chunks: Vec<u32> = std::mem::take(&mut p.inflight).into_keys().collect();
        let has = std::mem::replace(&mut p.has, Bitfield::new(0));
        for c in chunks {
            self.unhold(c, peer);
        }
        self.apply_bits(peer, &has, &Bitfield::new(self.chunk_count));
        self.invalidate();
    }

    /// Drops the record of one disconnected peer (non-banned first) to make room.
    fn evict_one(&mut self) -> bool {
        let victim = self
            .peers
            .iter()
            .filter(|(_, p)| !p.connected)
            .min_by_key(|(&id, p)| (p.banned, id))
            .map(|(&id, _)| id);
        victim.is_some_and(|id| self.peers.remove(&id).is_some())
    }

    /// Refreshes `ranked`: the best `max_peers` usable peers with something we need (and
    /// that did not just come away empty-handed), by
    /// score (unmeasured peers get the best measured throughput: every newcomer is tried),
    /// ties to peers already busy, then to the lower id.
    fn invalidate(&mut self) {
        self.generation += 1;
        self.ranked_at = None;
    }

    fn rank(&mut self, now: Instant) {
        if self.ranked_at == Some(now) {
            return;
        }
        let prior = self.peers.values().filter_map(|p| p.throughput).fold(1.0, f64::max);
        let mut scored: Vec<(f64, bool, ConnId)> = self
            .peers
            .iter()
            .filter(|(_, p)| p.is_usable(now) && p.useful > 0)
            .filter(|(_, p)| p.starved_at != Some(self.generation))
            .map(|(&id, p)| (p.score(prior), !p.inflight.is_empty(), id))
            .collect();
        scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(b.1.cmp(&a.1)).then(a.2.cmp(&b.2)));
        scored.truncate(self.config.max_peers);
        self.ranked = scored.into_iter().map(|(_, _, id)| id).collect();
        self.ranked_at = Some(now);
    }

    /// Whether `peer` should not be asked for `chunk`: it sent corrupt data for it and some
    /// other usable peer that has not has it.
    fn shunned(&self, peer: ConnId, chunk: u32) -> bool {
        let Some(bad) = self.bad_sources.get(&chunk) else { return false };
        if !bad.contains(&peer) {
            return false;
        }
        let bad_holders = bad
            .iter()
            .filter(|q| {
                self.peers.get(q).is_some_and(|p| p.connected && !p.banned && p.has.get(chunk))
            })
            .count() as u32;
        self.avail[chunk as usize] > bad_holders
    }

    fn pick_pending(&mut self, peer: ConnId) -> Option<u32> {
        let p = self.peers.get(&peer)?;
        let chunk = self
            .pending
            .requestable_below(self.request_limit)
            .find(|&c| p.has.get(c) && !self.shunned(peer, c))?;
        self.pending.remove(chunk, self.avail[chunk as usize]);
        self.holders.insert(chunk, vec![peer]);
        Some(chunk)
    }

    /// With the pool dry: a request at a peer `slow_peer_factor` times slower than `peer`,
    /// outstanding longer than `peer` needs for a chunk, moves to `peer` (the slowest
    /// holder's oldest request first). The slow peer gets a cancel.
    fn pick_takeover(&mut self, now: Instant, peer: ConnId) -> Option<u32> {
        let factor = f64::from(self.config.slow_peer_factor);
        let fast = self.peers.get(&peer)?;
        let tp = fast.throughput.filter(|_| factor > 0.0)?;
        let own_time = f64::from(self.config.chunk_size_bytes) / tp;
        let mut best: Option<(f64, Instant, u32, ConnId)> = None;
        for (&c, list) in &self.holders {
            if list.contains(&peer) || !fast.has.get(c) || self.shunned(peer, c) {
                continue;
            }
            for q in list {
                let Some(qp) = self.peers.get(q) else { continue };
                let (Some(qtp), Some(req)) = (qp.throughput, qp.inflight.get(&c)) else {
                    continue;
                };
                let waited = now.saturating_duration_since(req.sent_at).as_secs_f64();
                if qtp * factor > tp || waited < own_time {
                    continue;
                }
                let cand = (qtp, req.sent_at, c, *q);
                if best.is_none_or(|b| (cand.0, cand.1) < (b.0, b.1)) {
                    best = Some(cand);
                }
            }
        }
        let (_, _, chunk, slow) = best?;
        if let Some(sp) = self.peers.get_mut(&slow) {
            sp.inflight.remove(&chunk);
        }
        if let Some(list) = self.holders.get_mut(&chunk) {
            for q in list.iter_mut().filter(|q| **q == slow) {
                *q = peer;
            }
        }
        self.queue_cancel(slow, chunk);
        self.stats.takeovers += 1;
        Some(chunk)
    }

    /// In the endgame (pool dry, at most `endgame_chunks` in flight): a chunk in flight
    /// elsewhere with fewest copies (oldest request first), if `peer` has it and is not
    /// slower than its fastest measured holder (a slower copy would rarely win the race).
    fn pick_endgame(&mut self, peer: ConnId) -> Option<u32> {
        if self.holders.len() as u64 > u64::from(self.config.endgame_chunks) {
            return None;
        }
        let me = self.peers.get(&peer)?;
        let mut best: Option<(usize, Instant, u32)> = None;
        for (&c, list) in &self.holders {
            if list.contains(&peer)
                || list.len() as u32 >= self.config.endgame_copies_max
                || !me.has.get(c)
                || self.shunned(peer, c)
            {
                continue;
            }
            // Prefer faster peers: a copy must have a chance to beat the fastest holder.
            let fastest =
                list.iter().filter_map(|q| self.peers.get(q)?.throughput).reduce(f64::max);
            if let (Some(mine), Some(fastest)) = (me.throughput, fastest) {
                if mine < fastest {
                    continue;
                }
            }
            let Some(oldest) = list
                .iter()
                .filter_map(|q| self.peers.get(q)?.inflight.get(&c).map(|r| r.sent_at))
                .min()
            else {
                continue;
            };
            let cand = (list.len(), oldest, c);
            if best.is_none_or(|b| (cand.0, cand.1) < (b.0, b.1)) {
                best = Some(cand);
            }
        }
        let (_, _, chunk) = best?;
        if let Some(list) = self.holders.get_mut(&chunk) {
            list.push(peer);
        }
        self.stats.endgame_requests += 1;
        Some(chunk)
    }

    fn queue_cancel(&mut self, peer: ConnId, chunk: u32) {
        if self.cancels.len() >= self.config.cancels_queued_max {
            self.stats.cancels_dropped += 1;
        } else {
            self.cancels.push_back((peer, chunk));
        }
    }

    fn queue_event(&mut self, event: SchedulerEvent) {
        if self.events.len() >= self.config.events_queued_max {
            self.stats.events_dropped += 1;
        } else {
            self.events.push_back(event);
        }
    }

    fn check_complete(&mut self) {
        if self.missing == 0 && !self.complete_emitted {
            self.complete_emitted = true;
            self.events.push_back(SchedulerEvent::Complete);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: ConnId = ConnId(1);
    const B: ConnId = ConnId(2);
    const C: ConnId = ConnId(3);

    fn cfg(window: u32) -> SchedulerConfig {
        SchedulerConfig {
            chunk_size_bytes: 4096,
            window_min: window,
            window_max: window,
            endgame_chunks: 0,
            ..SchedulerConfig::default()
        }
    }

    fn bits(n: u32, set: impl IntoIterator<Item = u32>) -> Bitfield {
        let mut b = Bitfield::new(n);
        set.into_iter().for_each(|i| b.set(i));
        b
    }

    fn ms(t0: Instant, ms: u64) -> Instant {
        t0 + Duration::from_millis(ms)
    }

    /// A scheduler with `peers`, each with the given chunks.
    fn swarm(config: SchedulerConfig, n: u32, peers: &[(ConnId, Bitfield)]) -> Scheduler {
        let now = crate::sim::epoch();
        let mut s = Scheduler::new(config, n, &Bitfield::new(n), 42);
        for (id, b) in peers {
            s.handle_peer_added(now, *id);
            s.handle_bitfield(now, *id, b);
        }
        s.assert_invariants();
        s
    }

    fn drain_requests(s: &mut Scheduler, now: Instant, peer: ConnId) -> Vec<u32> {
        std::iter::from_fn(|| s.poll_request(now, peer)).collect()
    }

    fn events(s: &mut Scheduler) -> Vec<SchedulerEvent> {
        std::iter::from_fn(|| s.poll_event()).collect()
    }

    fn cancels(s: &mut Scheduler) -> Vec<(ConnId, u32)> {
        std::iter::from_fn(|| s.poll_cancel()).collect()
    }

    #[test]
    fn strategy_parses_and_default_config_validates() {
        assert_eq!("rarest-first".parse(), Ok(Strategy::RarestFirst));
        assert_eq!("round-robin".parse(), Ok(Strategy::RoundRobin));
        assert!("fastest".parse::<Strategy>().is_err());
        assert_eq!(Strategy::default().to_string(), "rarest-first");
        assert_eq!(SchedulerConfig::default().validate(), Ok(()));
        let bad = SchedulerConfig { window_min: 9, window_max: 8, ..SchedulerConfig::default() };
        assert!(matches!(bad.validate(), Err(SchedulerConfigError::OutOfRange { .. })));
        let bad = SchedulerConfig { stall_timeout: Duration::ZERO, ..SchedulerConfig::default() };
        assert_eq!(bad.validate(), Err(SchedulerConfigError::StallTimeoutOutOfRange));
    }

    #[test]
    fn rarest_first_takes_rare_chunks_first_with_seeded_ties() {
        // Availability: chunks 0-2 at three peers, 3-5 at two, 6-9 at one (A only).
        let peers = [(A, bits(10, 0..10)), (B, bits(10, 0..6)), (C, bits(10, 0..3))];
        let mut s = swarm(cfg(16), 10, &peers);
        let now = crate::sim::epoch();
        let got = drain_requests(&mut s, now, A);
        let mut groups = [got[0..4].to_vec(), got[4..7].to_vec(), got[7..10].to_vec()];
        groups.iter_mut().for_each(|g| g.sort_unstable());
        assert_eq!(groups, [vec![6, 7, 8, 9], vec![3, 4, 5], vec![0, 1, 2]]);
        assert!(drain_requests(&mut s, now, B).is_empty(), "all in flight, no endgame dups yet");
        s.assert_invariants();

        // The tie-break is random but replayable: same seed, same order; seeds differ.
        let order = |seed| {
            let mut s = Scheduler::new(cfg(16), 64, &Bitfield::new(64), seed);
            s.handle_peer_added(now, A);
            s.handle_bitfield(now, A, &bits(64, 0..64));
            drain_requests(&mut s, now, A)
        };
        assert_eq!(order(1), order(1));
        assert_ne!(order(1), order(2));
        assert_ne!(order(1), (0..16).collect::<Vec<_>>());
    }

    #[test]
    fn only_chunks_the_peer_has_are_requested() {
        let mut s = swarm(cfg(16), 10, &[(A, bits(10, [2, 5])), (B, bits(10, 0..10))]);
        let now = crate::sim::epoch();
        let mut got = drain_requests(&mut s, now, A);
        got.sort_unstable();
        assert_eq!(got, vec![2, 5]);
        assert_eq!(drain_requests(&mut s, now, B).len(), 8);
    }

    #[test]
    fn round_robin_spreads_chunks_in_order() {
        let config = SchedulerConfig { strategy: Strategy::RoundRobin, ..cfg(2) };
        let peers = [(A, bits(12, 0..12)), (B, bits(12, 0..12)), (C, bits(12, 0..12))];
        let mut s = swarm(config, 12, &peers);
        let t0 = crate::sim::epoch();
        let mut given: BTreeMap<ConnId, Vec<u32>> = BTreeMap::new();
        let mut step = 0;
        while !s.is_complete() {
            step += 1;
            let now = ms(t0, step);
            for _ in 0..2 {
                for id in [A, B, C] {
                    if let Some(c) = s.poll_request(now, id) {
                        given.entry(id).or_default().push(c);
                    }
                }
            }
            for id in [A, B, C] {
                let inflight: Vec<u32> = s.peers[&id].inflight.keys().copied().collect();
                inflight.into_iter().for_each(|c| s.handle_chunk_verified(now, id, c));
            }
            s.assert_invariants();
        }
        assert_eq!(given[&A], vec![0, 3, 6, 9]);
        assert_eq!(given[&B], vec![1, 4, 7, 10]);
        assert_eq!(given[&C], vec![2, 5, 8, 11]);
        assert_eq!(events(&mut s), vec![SchedulerEvent::Complete]);
    }

    #[test]
    fn the_request_limit_bounds_what_is_asked_and_moves_with_the_stream() {
        let config = SchedulerConfig { strategy: Strategy::RoundRobin, ..cfg(8) };
        let mut s = swarm(config, 20, &[(A, bits(20, 0..20)), (B, bits(20, 0..20))]);
        let t0 = crate::sim::epoch();
        s.set_request_limit(Some(3));
        let mut asked = drain_requests(&mut s, t0, A);
        asked.extend(drain_requests(&mut s, t0, B));
        assert_eq!(asked, vec![0, 1, 2], "nothing at or past the limit");
        s.assert_invariants();
        // Chunk 0 was written out: the window slides by one, and only chunk 3 joins.
        s.handle_chunk_verified(ms(t0, 1), A, 0);
        s.set_request_limit(Some(4));
        assert_eq!(drain_requests(&mut s, ms(t0, 1), B), vec![3]);
        assert!(drain_requests(&mut s, ms(t0, 1), A).is_empty());
        s.set_request_limit(None);
        assert_eq!(drain_requests(&mut s, ms(t0, 2), A).len(), 6, "A's window of 8 refills");
        s.assert_invariants();
    }

    /// One peer behind a path of `rtt` and a server sending `rate` bytes per second, serving
    /// requests in order. Returns the scheduler after the transfer and the finish time.
    fn run_single_link(chunks: u32, rtt: Duration, rate: f64) -> (Scheduler, Duration) {
        let config = SchedulerConfig {
            chunk_size_bytes: 64 * 1024,
            window_min: 2,
            window_max: 64,
            ..SchedulerConfig::default()
        };
        let chunk_time = Duration::from_secs_f64(64.0 * 1024.0 / rate);
        let mut s = swarm(config, chunks, &[(A, bits(chunks, 0..chunks))]);
        let t0 = crate::sim::epoch();
        let mut now = t0;
        let mut server_free = t0;
        let mut arrivals: BTreeMap<Instant, u32> = BTreeMap::new();
        while !s.is_complete() {
            while let Some(c) = s.poll_request(now, A) {
                assert!(s.peers[&A].inflight.len() as u32 <= s.window(A));
                let start = (now + rtt / 2).max(server_free);
                server_free = start + chunk_time;
                arrivals.insert(server_free + rtt / 2, c);
            }
            let (at, c) = arrivals.pop_first().expect("a request is in flight");
            now = at;
            s.handle_chunk_verified(now, A, c);
        }
        (s, now - t0)
    }

    #[test]
    fn window_grows_to_the_bandwidth_delay_product() {
        let rtt = Duration::from_millis(100);
        let rate = 10e6;
        let (s, took) = run_single_link(400, rtt, rate);
        let st = s.peer_stats(A).unwrap();
        // One request to an idle peer takes the RTT plus one chunk's transfer time.
        let unit = rtt.as_secs_f64() + 65536.0 / rate;
        let bdp = rate * unit / 65536.0; // ~16.3 chunks
        assert!(st.window as f64 >= bdp && st.window as f64 <= 2.5 * bdp, "{st:?}");
        let tp = st.throughput_bytes_per_s.unwrap() as f64;
        assert!((tp - rate).abs() < 0.1 * rate, "{st:?}");
        let measured_rtt = st.rtt.unwrap().as_secs_f64();
        assert!((measured_rtt - unit).abs() < 0.01, "{st:?}");
        // Ramp-up included, the link stays busy: within 25% of the ideal time.
        let ideal = 400.0 * 65536.0 / rate + unit;
        assert!(took.as_secs_f64() < 1.25 * ideal, "took {took:?}, ideal {ideal}");

        // A short path needs only a small window.
        let (s, _) = run_single_link(100, Duration::from_micros(200), rate);
        assert!(s.window(A) <= 4, "{:?}", s.peer_stats(A));
    }

    #[test]
    fn endgame_duplicates_the_last_chunks_and_cancels_the_loser() {
        let config = SchedulerConfig { endgame_chunks: 4, ..cfg(2) };
        let mut s = swarm(config, 4, &[(A, bits(4, 0..4)), (B, bits(4, 0..4))]);
        let t0 = crate::sim::epoch();
        let at_a = drain_requests(&mut s, t0, A);
        let at_b = drain_requests(&mut s, t0, B);
        assert_eq!((at_a.len(), at_b.len()), (2, 2));
        // A delivers its two; the pool is dry, so A duplicates B's chunks (endgame).
        for &c in &at_a {
            s.handle_chunk_verified(ms(t0, 10), A, c);
        }
        let dups = drain_requests(&mut s, ms(t0, 10), A);
        let (mut d, mut b) = (dups.clone(), at_b.clone());
        d.sort_unstable();
        b.sort_unstable();
        assert_eq!(d, b);
        assert_eq!(s.stats().endgame_requests, 2);
        assert!(drain_requests(&mut s, ms(t0, 10), B).is_empty(), "B's window is full");
        s.assert_invariants();
        // A wins the race for the first one: B gets a cancel for it.
        s.handle_chunk_verified(ms(t0, 20), A, dups[0]);
        assert_eq!(cancels(&mut s), vec![(B, dups[0])]);
        // B wins the second: A gets the cancel.
        s.handle_chunk_verified(ms(t0, 21), B, dups[1]);
        assert_eq!(cancels(&mut s), vec![(A, dups[1])]);
        // B's copy of the first arrives late: counted as a duplicate, nothing else.
        s.handle_chunk_verified(ms(t0, 22), B, dups[0]);
        assert_eq!(s.stats().duplicate_chunks, 1);
        assert_eq!(events(&mut s), vec![SchedulerEvent::Complete]);
        assert!(s.is_complete() && s.poll_timeout().is_none());
        s.assert_invariants();
    }

    #[test]
    fn endgame_duplicates_go_to_peers_at_least_as_fast_as_the_holder() {
        let config = SchedulerConfig { endgame_chunks: 8, ..cfg(1) };
        let all = bits(3, 0..3);
        let mut s = swarm(config, 3, &[(A, all.clone()), (B, all.clone()), (C, all)]);
        let t0 = crate::sim::epoch();
        // Measure: A 1 chunk in 10 ms, B in 100 ms; C holds the last chunk, unanswered.
        let (a, b) = (s.poll_request(t0, A).unwrap(), s.poll_request(t0, B).unwrap());
        let c = s.poll_request(t0, C).unwrap();
        s.handle_chunk_verified(ms(t0, 10), A, a);
        s.handle_chunk_verified(ms(t0, 100), B, b);
        // C is unmeasured: both may duplicate; the faster A asks first and takes the copy.
        assert_eq!(s.poll_request(ms(t0, 100), A), Some(c));
        assert_eq!(s.poll_request(ms(t0, 100), B), None, "endgame_copies_max = 2");
        // Now A holds it: B, ten times slower, gets no third copy even with room for it.
        s.config.endgame_copies_max = 3;
        s.invalidate(); // as any event would: B's empty-handed poll no longer counts
        assert_eq!(s.poll_request(ms(t0, 101), B), None, "slower than the holder A");
        assert_eq!(s.stats().endgame_requests, 1);
        s.assert_invariants();
    }

    #[test]
    fn peers_max_evicts_gone_peers_and_refuses_beyond() {
        let config = SchedulerConfig { peers_max: 2, max_peers: 2, ..cfg(1) };
        let mut s = swarm(config, 4, &[(A, bits(4, 0..4)), (B, bits(4, 0..4))]);
        let now = crate::sim::epoch();
        s.handle_peer_added(now, C);
        assert!(s.peer_stats(C).is_none());
        assert_eq!(s.stats().peers_refused, 1);
        s.handle_peer_removed(now, A);
        s.handle_peer_added(now, C);
        assert!(s.peer_stats(C).is_some() && s.peer_stats(A).is_none());
        assert_eq!(s.peers().collect::<Vec<_>>(), vec![B, C]);
        s.assert_invariants();
    }

    #[test]
    fn a_much_slower_peer_loses_its_requests_to_a_fast_idle_one() {
        let all = bits(400, 0..400);
        let mut s = swarm(cfg(2), 400, &[(A, all.clone()), (B, all)]);
        let t0 = crate::sim::epoch();
        let mut t = 0;
        // Measure both: A delivers a chunk every 1 ms, B every 100 ms.
        while s.pending.has_requestable() {
            for (id, every) in [(A, 1), (B, 100)] {
                drain_requests(&mut s, ms(t0, t), id);
                if t % every == 0 {
                    if let Some(&c) = s.peers[&id].inflight.keys().next() {
                        s.handle_chunk_verified(ms(t0, t), id, c);
                    }
                }
            }
            t += 1;
        }
        let slow: Vec<u32> = s.peers[&B].inflight.keys().copied().collect();
        assert!(!slow.is_empty());
        while !s.peers[&A].inflight.is_empty() {
            let c = *s.peers[&A].inflight.keys().next().unwrap();
            s.handle_chunk_verified(ms(t0, t), A, c);
        }
        let taken = drain_requests(&mut s, ms(t0, t + 5), A);
        assert_eq!(taken.len(), slow.len(), "A takes over B's chunks");
        assert!(taken.iter().all(|c| slow.contains(c)));
        let mut cancelled: Vec<u32> = cancels(&mut s)
            .into_iter()
            .map(|(p, c)| {
                assert_eq!(p, B);
                c
            })
            .collect();
        cancelled.sort_unstable();
        assert_eq!(cancelled, slow);
        assert!(s.peers[&B].inflight.is_empty());
        assert_eq!(s.stats().takeovers, slow.len() as u64);
        s.assert_invariants();
    }

    #[test]
    fn corrupt_chunks_ban_exactly_the_sender() {
        let config = SchedulerConfig { failures_to_ban: 3, ..cfg(1) };
        let mut s = swarm(config, 10, &[(A, bits(10, 0..10)), (B, bits(10, 0..10))]);
        let t0 = crate::sim::epoch();
        for round in 0..3u64 {
            let now = ms(t0, round * 10);
            let bad = s.poll_request(now, A).unwrap();
            let good = s.poll_request(now, B).unwrap();
            s.handle_chunk_corrupt(now, A, bad);
            s.handle_chunk_verified(now, B, good);
            s.assert_invariants();
            if round < 2 {
                // A is not asked for the chunk it corrupted while B has it; B gets it.
                let next_a = s.poll_request(now, A).unwrap();
                assert_ne!(next_a, bad);
                s.handle_request_failed(now, A, next_a); // keep A's window free
                s.handle_have(now, A, next_a);
                assert_eq!(s.poll_request(now, B), Some(bad));
                s.handle_chunk_verified(now, B, bad);
            }
        }
        let reason = BanReason::CorruptChunks { count: 3 };
        assert_eq!(events(&mut s), vec![SchedulerEvent::PeerBanned { peer: A, reason }]);
        let (a, b) = (s.peer_stats(A).unwrap(), s.peer_stats(B).unwrap());
        assert!(a.banned && a.corrupt_chunks == 3 && a.in_flight == 0);
        assert!(!b.banned && b.corrupt_chunks == 0);
        assert_eq!(s.poll_request(ms(t0, 100), A), None, "banned peers get nothing");
        // Re-adding a banned peer keeps it banned.
        s.handle_peer_removed(ms(t0, 100), A);
        s.handle_peer_added(ms(t0, 100), A);
        s.handle_bitfield(ms(t0, 100), A, &bits(10, 0..10));
        assert_eq!(s.poll_request(ms(t0, 100), A), None);
        // B finishes alone.
        let mut t = 100;
        while let Some(c) = s.poll_request(ms(t0, t), B) {
            s.handle_chunk_verified(ms(t0, t), B, c);
            t += 1;
        }
        assert!(s.is_complete());
        s.assert_invariants();
    }

    #[test]
    fn a_corrupt_chunk_is_retried_from_its_only_source() {
        let config = SchedulerConfig { failures_to_ban: 3, ..cfg(1) };
        let mut s = swarm(config, 2, &[(A, bits(2, [0])), (B, bits(2, [1]))]);
        let now = crate::sim::epoch();
        assert_eq!(s.poll_request(now, A), Some(0));
        s.handle_chunk_corrupt(now, A, 0);
        assert_eq!(s.poll_request(now, A), Some(0), "nobody else has it");
    }

    #[test]
    fn a_stalled_peer_loses_its_requests_and_rests() {
        let timeout = Duration::from_secs(5);
        let config = SchedulerConfig { stall_timeout: timeout, ..cfg(2) };
        let mut s = swarm(config, 10, &[(A, bits(10, 0..10)), (B, bits(10, 0..10))]);
        let t0 = crate::sim::epoch();
        let stuck = drain_requests(&mut s, t0, A);
        assert_eq!(stuck.len(), 2);
        assert_eq!(s.poll_timeout(), Some(t0 + timeout));
        // B works; A says nothing.
        let mut now = t0;
        for _ in 0..6 {
            for c in drain_requests(&mut s, now, B) {
                s.handle_chunk_verified(now, B, c);
            }
            now += Duration::from_millis(100);
        }
        assert_eq!(s.missing(), 2);
        s.handle_timeout(t0 + timeout - Duration::from_millis(1));
        assert!(events(&mut s).is_empty());
        now = t0 + timeout;
        s.handle_timeout(now);
        assert_eq!(events(&mut s), vec![SchedulerEvent::PeerStalled { peer: A }]);
        let mut c = cancels(&mut s);
        c.sort_unstable();
        assert_eq!(c, stuck.iter().map(|&x| (A, x)).collect::<Vec<_>>());
        assert_eq!(s.poll_request(now, A), None, "resting");
        assert_eq!(s.poll_timeout(), Some(now + timeout), "the rest ends");
        let mut again = drain_requests(&mut s, now, B);
        again.sort_unstable();
        assert_eq!(again, stuck, "B gets the stalled chunks");
        s.assert_invariants();
        // After its rest, A is asked again (here nothing is left for it but B's requests,
        // which the endgame would duplicate if enabled).
        assert_eq!(s.peer_stats(A).unwrap().stalls, 1);
        assert!(s.peer_stats(A).unwrap().in_flight == 0);
    }

    #[test]
    fn a_peer_delivering_bytes_slowly_is_not_stalled_and_a_silent_one_is() {
        let timeout = Duration::from_secs(5);
        let config = SchedulerConfig { stall_timeout: timeout, ..cfg(2) };
        let mut s = swarm(config, 10, &[(A, bits(10, 0..10)), (B, bits(10, 0..10))]);
        let t0 = crate::sim::epoch();
        assert_eq!(drain_requests(&mut s, t0, A).len(), 2);
        assert_eq!(drain_requests(&mut s, t0, B).len(), 2);
        // A's first chunk trickles in for three stall timeouts; B says nothing.
        let mut now = t0;
        while now < t0 + 3 * timeout {
            now += Duration::from_secs(1);
            s.handle_progress(now, A);
            s.handle_timeout(now);
        }
        assert_eq!(events(&mut s), vec![SchedulerEvent::PeerStalled { peer: B }]);
        assert_eq!(s.peer_stats(A).unwrap().stalls, 0);
        assert_eq!(s.peer_stats(A).unwrap().in_flight, 2);
        // Then A goes quiet too.
        s.handle_timeout(now + timeout);
        assert_eq!(events(&mut s), vec![SchedulerEvent::PeerStalled { peer: A }]);
        s.assert_invariants();
    }

    #[test]
    fn max_peers_bounds_the_peers_with_requests() {
        let config = SchedulerConfig { max_peers: 2, ..cfg(2) };
        let all = bits(20, 0..20);
        let mut s = swarm(config, 20, &[(A, all.clone()), (B, all.clone()), (C, all)]);
        let now = crate::sim::epoch();
        assert_eq!(drain_requests(&mut s, now, A).len(), 2);
        assert_eq!(drain_requests(&mut s, now, B).len(), 2);
        assert!(drain_requests(&mut s, now, C).is_empty());
        // A goes away: C may start.
        s.handle_peer_removed(now, A);
        assert_eq!(drain_requests(&mut s, now, C).len(), 2);
        s.assert_invariants();
    }

    #[test]
    fn refusals_clear_the_bit_and_return_the_chunk() {
        let mut s = swarm(cfg(4), 4, &[(A, bits(4, 0..4)), (B, bits(4, 0..4))]);
        let now = crate::sim::epoch();
        let got = drain_requests(&mut s, now, A);
        s.handle_request_failed(now, A, got[0]);
        assert!(!s.peers[&A].has.get(got[0]));
        assert_eq!(s.poll_request(now, A), None, "A lacks the refused chunk");
        assert_eq!(s.poll_request(now, B), Some(got[0]));
        assert_eq!(s.peer_stats(A).unwrap().refused_requests, 1);
        s.assert_invariants();
    }

    #[test]
    fn bad_input_is_ignored_and_counted() {
        let mut s = swarm(cfg(2), 4, &[(A, bits(4, 0..4))]);
        let now = crate::sim::epoch();
        let ghost = ConnId(99);
        s.handle_have(now, ghost, 1);
        s.handle_chunk_corrupt(now, ghost, 1);
        s.handle_request_failed(now, ghost, 1);
        s.handle_peer_removed(now, ghost);
        assert_eq!(s.poll_request(now, ghost), None);
        assert_eq!(s.stats().unknown_peer_events, 5);
        s.handle_have(now, A, 4);
        s.handle_chunk_verified(now, A, u32::MAX);
        s.handle_chunk_corrupt(now, A, 7);
        assert_eq!(s.stats().out_of_range_events, 3);
        s.handle_bitfield(now, A, &Bitfield::new(5));
        assert_eq!(s.stats().malformed_bitfields, 1);
        assert_eq!(s.window(ghost), 0);
        assert!(s.peer_stats(ghost).is_none());
        s.assert_invariants();
    }

    #[test]
    fn complete_is_emitted_exactly_once() {
        let now = crate::sim::epoch();
        let mut done = Scheduler::new(cfg(2), 3, &bits(3, 0..3), 1);
        assert_eq!(events(&mut done), vec![SchedulerEvent::Complete]);
        let mut empty = Scheduler::new(cfg(2), 0, &Bitfield::new(0), 1);
        assert_eq!(events(&mut empty), vec![SchedulerEvent::Complete]);
        let mut s = swarm(cfg(2), 1, &[(A, bits(1, [0]))]);
        assert_eq!(s.poll_request(now, A), Some(0));
        s.handle_chunk_verified(now, A, 0);
        s.handle_chunk_verified(now, A, 0);
        assert_eq!(events(&mut s), vec![SchedulerEvent::Complete]);
        assert_eq!(s.poll_request(now, A), None);
    }

    #[test]
    fn the_last_chunk_counts_its_real_length() {
        let config = SchedulerConfig { file_size_bytes: Some(4096 + 100), ..cfg(2) };
        let mut s = swarm(config, 2, &[(A, bits(2, 0..2))]);
        let now = crate::sim::epoch();
        for c in drain_requests(&mut s, now, A) {
            s.handle_chunk_verified(now, A, c);
        }
        assert_eq!(s.peer_stats(A).unwrap().bytes_verified, 4196);
    }
}
