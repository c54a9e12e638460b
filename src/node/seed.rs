//! The seeder: per-shard TCP listeners and WebRTC endpoints, and zero-copy chunk serving.
//!
//! Every shard binds its own listener on the same address with SO_REUSEPORT, so the kernel
//! spreads connections over the shards and a connection never leaves the shard that
//! accepted it; with `--webrtc` every shard also binds a UDP socket on the WebRTC address
//! (SO_REUSEPORT too) and answers the offers that reach it (`transport::webrtc`). Each shard
//! opens the files it serves itself (`OpenFile`, a cache of descriptors), and sends a
//! plaintext chunk over TCP as a small FlatBuffers header (`MSG_MORE`) followed by
//! `sendfile(2)` from the file: page-cache pages are attached to the socket, no byte is
//! copied. With encryption on, the chunk is pread once into the send buffer, sealed in place
//! and sent with its header in one gather write. Nothing is memory-mapped: no bytes of a
//! file that may change under the seeder are ever read through a map. Paced chunks and data
//! channels pread the chunk first. `SeedStats::payload_bytes_from_map` and
//! `payload_bytes_sealed` count which path every payload byte took.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::net::SocketAddr;
use std::ops::Range;
use std::rc::Rc;
use std::sync::Arc;

use futures_lite::future;
use glommio::net::TcpStream;
use hdrhistogram::Histogram;
use serde::Serialize;

use super::dht::{self, DhtNodeStats, DhtServerOptions};
use super::limits::{AcceptBackoff, ShardBudget};
use super::secure::NodeSecurity;
use super::send_buffers::SendBuffers;
use super::transport::webrtc::Endpoint;
use super::transport::{Conn, RecvError, RtcStream, StreamConn, TcpConn, TcpSide};
use super::{clock, ShardId};
use crate::config::{
    throttle_burst_bytes, FILE_CHECK_INTERVAL, REQUEST_BODY_MAX_BYTES,
    SEND_BUFFER_BUDGET_PER_SHARD_BYTES, THROTTLE_PIECE_MAX_BYTES,
};
use crate::crypto::handshake::Blame;
use crate::crypto::record::TAG_BYTES;
use crate::crypto::{FileId, RecordAad};
use crate::dht::Transports;
use crate::peer::{ChunkFailure, Served, ServedFiles, ServerSession, ServerTransmit};
use crate::storage::{CatalogEntry, FileStamp};
use crate::throttle::Throttle;
use crate::transfer::SharedBitfield;
use crate::wire::frame::Deframed;

/// Counters of the serving side of a node: one shard's, or summed over shards. Counters
/// only rise (Prometheus `_total` style); `connections_open` is a gauge. Snapshotted at
/// any time through [`super::Handle::stats`], returned in full by `shutdown`.
#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
pub struct SeedStats {
    /// Connections accepted (handshake not yet judged), TCP and WebRTC.
    pub connections: u64,
    /// Of `connections`, WebRTC data channels that opened.
    pub webrtc_connections: u64,
    /// Of `webrtc_connections`, browsers' sessions (offer over the HTTP gateway, plaintext
    /// peer wire inside DTLS, no node handshake).
    pub browser_connections: u64,
    /// WebRTC offers answered.
    pub webrtc_offers: u64,
    /// WebRTC offers dropped (malformed, unparseable SDP, shard full, unpadded).
    pub webrtc_offers_dropped: u64,
    /// WebRTC offers answered "busy": the shard already ran `webrtc_handshakes_per_shard`
    /// set-ups (admission control); the offerer offers again after a pause.
    pub webrtc_offers_busy: u64,
    /// WebRTC set-ups (answered offers) that reached ICE connected, and DTLS connected.
    pub webrtc_ice_connected: u64,
    pub webrtc_dtls_connected: u64,
    /// WebRTC set-ups whose data channel opened, and the milliseconds from answer to open
    /// summed over them (their mean: `webrtc_setup_ms_total / webrtc_setups_opened`).
    pub webrtc_setups_opened: u64,
    pub webrtc_setup_ms_total: u64,
    /// WebRTC set-ups closed at their open deadline (the peer timeout) still connecting,
    /// and set-ups that failed before it (ICE or DTLS).
    pub webrtc_setup_timeouts: u64,
    pub webrtc_setup_failures: u64,
    /// UDP datagrams the WebRTC sockets sent (ICE, DTLS, SCTP, TURN, signaling).
    pub webrtc_datagrams_sent: u64,
    /// `sendmsg(2)` calls that sent them: a run of datagrams to one peer goes in one call
    /// (UDP GSO), so `webrtc_datagrams_sent / webrtc_send_calls` is the mean run.
    pub webrtc_send_calls: u64,
    /// The largest UDP datagram the WebRTC sockets sent, in bytes: about 1,230 (`rtc`'s
    /// 1,191-byte SCTP packets in DTLS) on any path but loopback, up to
    /// `WEBRTC_LOOPBACK_SCTP_MTU` plus DTLS's overhead toward a loopback peer.
    pub webrtc_datagram_bytes_max: u64,
    /// UDP datagrams the WebRTC sockets received.
    pub webrtc_datagrams_received: u64,
    /// `recvmsg(2)` calls that took them (UDP GRO: the kernel coalesces a run into one).
    pub webrtc_receive_calls: u64,
    /// Connections open now (a gauge).
    pub connections_open: u64,
    pub connections_refused: u64,
    pub requests: u64,
    pub chunks_served: u64,
    /// Plaintext payload bytes (the name is kept from when they came from a memory map):
    /// sent over TCP straight from the file with `sendfile(2)` (no copy), except chunks an
    /// upload limit paces in pieces and chunks on a WebRTC data channel, which are pread
    /// into a buffer first (a file changed mid-chunk must not cut a paced chunk short).
    pub payload_bytes_from_map: u64,
    /// Payload bytes encrypted (encryption on): pread into the send buffer and sealed there
    /// in place, in one pass.
    pub payload_bytes_sealed: u64,
    /// Connections whose handshake failed (wrong network, pin, encryption setting, bad
    /// signature, replay, or no handshake within `NodeConfig::peer_timeout_ms`):
    /// `handshakes_failed_peer + handshakes_failed_local`.
    pub handshakes_failed: u64,
    /// Handshakes that failed by the peer's fault (or an attacker's on the path): bad or
    /// replayed messages, another network or encryption setting, silence, resets.
    pub handshakes_failed_peer: u64,
    /// Handshakes that failed by this node's fault (its own certificate expired, a weak
    /// network secret): see `crypto::handshake::Blame`.
    pub handshakes_failed_local: u64,
    /// Connections closed because a sealed record failed authentication.
    pub records_rejected: u64,
    pub manifests_served: u64,
    pub error_replies: u64,
    /// Connections closed because the peer sent something undecodable or oversized.
    pub bad_frames: u64,
    /// Incoming handshakes that failed, by reason (`HandshakeFailure::reason`, or
    /// `timeout` for a client that never finished).
    pub handshakes_failed_by_reason: std::collections::BTreeMap<String, u64>,
    /// The DHT's counters (shard 0), when it ran.
    pub dht: Option<DhtNodeStats>,
}

impl SeedStats {
    /// Adds another shard's or seeder's counters (the DHT counters of the last one that
    /// had them win).
    pub fn add(&mut self, o: &Self) {
        self.connections += o.connections;
        self.webrtc_connections += o.webrtc_connections;
        self.browser_connections += o.browser_connections;
        self.webrtc_offers += o.webrtc_offers;
        self.webrtc_offers_dropped += o.webrtc_offers_dropped;
        self.webrtc_offers_busy += o.webrtc_offers_busy;
        self.webrtc_ice_connected += o.webrtc_ice_connected;
        self.webrtc_dtls_connected += o.webrtc_dtls_connected;
        self.webrtc_setups_opened += o.webrtc_setups_opened;
        self.webrtc_setup_ms_total += o.webrtc_setup_ms_total;
        self.webrtc_setup_timeouts += o.webrtc_setup_timeouts;
        self.webrtc_setup_failures += o.webrtc_setup_failures;
        self.webrtc_datagrams_sent += o.webrtc_datagrams_sent;
        self.webrtc_send_calls += o.webrtc_send_calls;
        self.webrtc_datagram_bytes_max =
            self.webrtc_datagram_bytes_max.max(o.webrtc_datagram_bytes_max);
        self.webrtc_datagrams_received += o.webrtc_datagrams_received;
        self.webrtc_receive_calls += o.webrtc_receive_calls;
        self.connections_open += o.connections_open;
        self.connections_refused += o.connections_refused;
        self.requests += o.requests;
        self.chunks_served += o.chunks_served;
        self.payload_bytes_from_map += o.payload_bytes_from_map;
        self.payload_bytes_sealed += o.payload_bytes_sealed;
        self.handshakes_failed += o.handshakes_failed;
        self.handshakes_failed_peer += o.handshakes_failed_peer;
        self.handshakes_failed_local += o.handshakes_failed_local;
        self.records_rejected += o.records_rejected;
        self.manifests_served += o.manifests_served;
        self.error_replies += o.error_replies;
        self.bad_frames += o.bad_frames;
        for (k, v) in &o.handshakes_failed_by_reason {
            *self.handshakes_failed_by_reason.entry(k.clone()).or_default() += v;
        }
        if o.dht.is_some() {
            self.dht.clone_from(&o.dht);
        }
    }
}

/// One open peer connection of a shard (a downloader of this node's files), as
/// [`super::Handle::activity`] reports it.
#[derive(Debug, Clone, Serialize)]
pub struct ConnectionInfo {
    /// The shard serving it.
    pub shard: usize,
    /// Its number on that shard (unique per shard while the node runs).
    pub id: u64,
    /// The peer's address.
    pub addr: SocketAddr,
    /// How it reached this node: `tcp` or `webrtc` (a data channel).
    pub transport: super::Transport,
    /// The node ID it proved in the handshake (`None` until the handshake is done).
    pub node_id: Option<String>,
    /// Seconds since it was accepted.
    pub connected_seconds: f64,
    /// Payload bytes of the chunks sent to it.
    pub bytes_sent: u64,
    /// Chunks sent to it.
    pub chunks_sent: u64,
}

/// What a node served of one file since it started (all shards).
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct FileServed {
    /// Payload bytes of the chunks served.
    pub bytes: u64,
    /// Chunks served.
    pub chunks: u64,
}

/// A shard's open connections, what it served per file, how long serving chunks took,
/// and its open memory maps.
#[derive(Debug, Clone)]
pub struct ShardActivity {
    pub connections: Vec<ConnectionInfo>,
    pub files: HashMap<FileId, FileServed>,
    /// Time to send each chunk (open, freshness check, pacing and writing it to the
    /// socket), in microseconds.
    pub serve_latency_us: Histogram<u64>,
    /// Files this shard has open now (its cache of descriptors; the name is kept from when
    /// they were memory maps).
    pub open_maps: usize,
}

/// The histogram of chunk-serve times: 1 µs to 10 minutes, 2 significant digits
/// (`hdrhistogram`, a few KiB per shard). Longer times are clamped to the top.
pub(super) fn serve_latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 2).unwrap_or_else(|_| {
        Histogram::new(2).unwrap_or_else(|_| unreachable!("2 significant digits is valid"))
    })
}

/// An open connection as its shard tracks it (single-threaded: `Cell`s).
struct ConnTrack {
    addr: SocketAddr,
    transport: super::Transport,
    node_id: Cell<Option<crate::crypto::NodeId>>,
    since: std::time::Instant,
    bytes: Cell<u64>,
    chunks: Cell<u64>,
}

/// Upload limits: one bucket for the node (an atomic word every shard charges) and a rate
/// for each connection's own bucket.
#[derive(Clone)]
pub(super) struct Limits {
    /// Connections and cached maps per shard, sized from the descriptor limit.
    pub(super) budget: ShardBudget,
    pub(super) node: Option<Arc<Throttle>>,
    pub(super) peer_rate_bytes: Option<u64>,
    /// `NodeConfig::peer_timeout_ms`: the deadline of each handshake message and of a
    /// blocked write.
    pub(super) peer_timeout: std::time::Duration,
    /// `NodeConfig::idle_timeout_ms`: how long a connection may sit without a request.
    pub(super) idle_timeout: std::time::Duration,
    /// `NodeConfig::webrtc_block_bytes`: largest data-channel message sent.
    pub(super) webrtc_block_bytes: usize,
    /// `NodeConfig::webrtc_handshakes_per_shard`: set-ups at once before offers are
    /// answered "busy".
    pub(super) webrtc_handshakes: usize,
}

/// A file the seeder serves: a published one, or one this node is still downloading (then
/// `have` says which chunks are verified and written, and only those are served).
#[derive(Debug, Clone)]
pub struct ServedFile {
    /// Shared by every shard that serves it and the handle's list: a manifest holds up to
    /// 32 MiB of chunk hashes, so it is never copied per shard.
    pub entry: Arc<CatalogEntry>,
    pub have: Option<Arc<SharedBitfield>>,
}

impl From<CatalogEntry> for ServedFile {
    fn from(entry: CatalogEntry) -> Self {
        Self { entry: Arc::new(entry), have: None }
    }
}

/// A file one shard has open. Never memory-mapped: plaintext chunks leave by `sendfile(2)`,
/// everything else is pread.
struct OpenFile {
    file: File,
    /// Size and mtime recorded when the file was published.
    stamp: FileStamp,
    /// When an `fstat` last found the file unchanged (`None`: not yet since it was opened).
    checked: Cell<Option<std::time::Instant>>,
}

/// State owned by one shard.
struct Shard {
    id: ShardId,
    /// The files this shard serves; changed only by its inbox.
    catalog: RefCell<HashMap<FileId, ServedFile>>,
    open: RefCell<HashMap<FileId, Rc<OpenFile>>>,
    stats: RefCell<SeedStats>,
    connections: Cell<usize>,
    /// The open connections by number, and the next number.
    tracked: RefCell<HashMap<u64, Rc<ConnTrack>>>,
    next_conn: Cell<u64>,
    /// Served bytes and chunks per file since the shard started (a file unpublished and
    /// published again keeps counting).
    by_file: RefCell<HashMap<FileId, FileServed>>,
    serve_latency: RefCell<Histogram<u64>>,
    /// Buffers chunks are pread (and sealed) into, lent per chunk within a byte budget.
    send_buffers: SendBuffers,
    limits: Limits,
    security: Arc<NodeSecurity>,
}

fn changed() -> ChunkFailure {
    ChunkFailure::FileChanged
}

/// The shard's catalog, borrowed for one synchronous session step (the inbox cannot change
/// it meanwhile: both run on the shard's thread and the borrow never spans an await).
struct CatalogView<'a>(std::cell::Ref<'a, HashMap<FileId, ServedFile>>);

impl ServedFiles for CatalogView<'_> {
    fn served(&self, id: &FileId) -> Option<Served<'_>> {
        self.0.get(id).map(|f| Served { info: &f.entry.info, have: f.have.as_deref() })
    }
}

impl Shard {
    /// Registers a connection just accepted (TCP or a data channel): counted open and
    /// tracked for `/api/peers` until [`Shard::close_connection`]. Returns its ID and its
    /// tracking row.
    fn open_connection(
        &self,
        addr: SocketAddr,
        transport: super::Transport,
    ) -> (u64, Rc<ConnTrack>) {
        self.connections.set(self.connections.get() + 1);
        let conn_id = self.next_conn.get();
        self.next_conn.set(conn_id + 1);
        let track = Rc::new(ConnTrack {
            addr,
            transport,
            node_id: Cell::new(None),
            since: clock::now(),
            bytes: Cell::new(0),
            chunks: Cell::new(0),
        });
        self.tracked.borrow_mut().insert(conn_id, track.clone());
        (conn_id, track)
    }

    /// Forgets a connection that ended. The last one to go frees the idle send buffers.
    fn close_connection(&self, conn_id: u64) {
        self.tracked.borrow_mut().remove(&conn_id);
        self.connections.set(self.connections.get() - 1);
        if self.connections.get() == 0 {
            self.send_buffers.trim();
        }
    }

    /// The shard's counters now, with its open connections.
    fn snapshot(&self) -> SeedStats {
        let mut st = self.stats.borrow().clone();
        st.connections_open = self.connections.get() as u64;
        st
    }

    /// The shard's open connections and per-file figures now.
    fn activity(&self) -> ShardActivity {
        let now = clock::now();
        let connections = self
            .tracked
            .borrow()
            .iter()
            .map(|(id, t)| ConnectionInfo {
                shard: self.id.0,
                id: *id,
                addr: t.addr,
                transport: t.transport,
                node_id: t.node_id.get().map(|n| n.to_string()),
                connected_seconds: now.saturating_duration_since(t.since).as_secs_f64(),
                bytes_sent: t.bytes.get(),
                chunks_sent: t.chunks.get(),
            })
            .collect();
        ShardActivity {
            connections,
            files: self.by_file.borrow().clone(),
            serve_latency_us: self.serve_latency.borrow().clone(),
            open_maps: self.open.borrow().len(),
        }
    }

    /// The shard's open descriptor of `id`, opened on first use.
    fn open_file(&self, id: &FileId) -> Result<Rc<OpenFile>, ChunkFailure> {
        if let Some(f) = self.open.borrow().get(id) {
            return Ok(f.clone());
        }
        let (path, stamp) = match self.catalog.borrow().get(id) {
            Some(served) => (served.entry.path.clone(), served.entry.stamp),
            // Unpublished while the request waited: refused like any unknown file.
            None => return Err(ChunkFailure::Io(format!("file {id} is not served here"))),
        };
        let file = self.open_descriptor(id, &path)?;
        // Readahead is decided once per file, not advised per chunk.
        super::sys::advise_sequential(&file);
        let f = Rc::new(OpenFile { file, stamp, checked: Cell::new(None) });
        self.cache(*id, f.clone());
        Ok(f)
    }

    /// Keeps `file` open for later requests, within the shard's budget of cached files:
    /// when full, files no connection is using are closed; if all are in use, `file` is
    /// served uncached and closed after its request.
    fn cache(&self, id: FileId, file: Rc<OpenFile>) {
        let mut open = self.open.borrow_mut();
        if open.len() >= self.limits.budget.open_files_max {
            open.retain(|_, f| Rc::strong_count(f) > 1);
        }
        if open.len() < self.limits.budget.open_files_max {
            open.insert(id, file);
        }
    }

    /// Opens a published file. Out of descriptors (EMFILE/ENFILE), it closes the cached
    /// files no connection is using and tries once more; if that fails too the request is
    /// refused as `OVERLOADED` (the downloader asks again later) and the shard carries on.
    fn open_descriptor(&self, id: &FileId, path: &std::path::Path) -> Result<File, ChunkFailure> {
        let first = File::open(path);
        let retried = match first {
            Err(e) if super::limits::is_out_of_descriptors(&e) => {
                self.open.borrow_mut().retain(|_, f| Rc::strong_count(f) > 1);
                File::open(path)
            }
            other => other,
        };
        retried.map_err(|e| {
            if super::limits::is_out_of_descriptors(&e) {
                ChunkFailure::Overloaded(format!(
                    "seeder is out of file descriptors ({e}); try again shortly"
                ))
            } else {
                ChunkFailure::Io(format!("cannot open file {id}: {e}"))
            }
        })
    }

    /// Refuses a published file whose size or mtime differs from what was recorded when it
    /// was published (one fstat), and forgets its descriptor. Runs right before the chunk's
    /// bytes are sent or read (after any throttle wait), but the fstat itself at most once
    /// per `FILE_CHECK_INTERVAL` per open file, not per chunk: a truncation shows at once
    /// anyway (`sendfile`/`pread` come up short, and the descriptor is forgotten, so the
    /// next request checks afresh); a rewrite that keeps or grows the size is refused
    /// within the interval, and chunks served meanwhile fail the downloader's hash check.
    /// Our own partial downloads change as chunks land and are not checked: only their
    /// verified chunks are served.
    fn check_fresh(&self, id: &FileId, file: &OpenFile, partial: bool) -> Result<(), ChunkFailure> {
        if partial {
            return Ok(());
        }
        let now = clock::now();
        let recent = file
            .checked
            .get()
            .is_some_and(|at| now.saturating_duration_since(at) < FILE_CHECK_INTERVAL);
        if recent {
            return Ok(());
        }
        let stamp = file.file.metadata().map(|m| FileStamp::of(&m));
        if stamp.ok() != Some(file.stamp) {
            self.forget(id);
            return Err(changed());
        }
        file.checked.set(Some(now));
        Ok(())
    }

    /// Closes the shard's cached descriptor of a file that changed (connections still
    /// sending from it keep theirs until their chunk ends), so the next request opens and
    /// checks it afresh.
    fn forget(&self, id: &FileId) {
        self.open.borrow_mut().remove(id);
    }

    /// Reads chunk bytes `range` of `file` into `buf` with pread(2) and checks the file did
    /// not change while they were read. A file that shrank is a short read, refused like
    /// any other change.
    fn read_chunk(
        &self,
        id: &FileId,
        file: &OpenFile,
        partial: bool,
        range: Range<usize>,
        buf: &mut [u8],
    ) -> Result<(), ChunkFailure> {
        use std::os::unix::fs::FileExt;
        let read = file.file.read_exact_at(buf, range.start as u64);
        self.after_read(id, file, partial, read)
    }

    /// As [`Shard::read_chunk`], into a buffer of its own (`sys::pread_exact`): for a chunk
    /// handed over whole to a data channel.
    fn read_chunk_owned(
        &self,
        id: &FileId,
        file: &OpenFile,
        partial: bool,
        range: Range<usize>,
    ) -> Result<bytes::BytesMut, ChunkFailure> {
        let read = super::sys::pread_exact(&file.file, range.start as u64, range.len());
        self.after_read(id, file, partial, read)
    }

    /// What a read of a chunk of `file` comes to: its bytes if the file is still the one
    /// published ([`Shard::check_fresh`]); `FILE_CHANGED` if it ended early (shrunk: the
    /// shard forgets it); else an I/O failure.
    fn after_read<T>(
        &self,
        id: &FileId,
        file: &OpenFile,
        partial: bool,
        read: io::Result<T>,
    ) -> Result<T, ChunkFailure> {
        match read {
            Ok(bytes) => self.check_fresh(id, file, partial).map(|()| bytes),
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                self.forget(id);
                Err(changed())
            }
            Err(e) => Err(ChunkFailure::Io(format!("cannot read file {id}: {}", e.kind()))),
        }
    }
}

/// A command to one shard, sent to its inbox by the node's [`super::Handle`]. The shard
/// handles commands between connection events, on its own thread: the catalog it serves
/// and its counters are never shared or locked.
pub(super) enum ShardCommand {
    /// Serve this file, or replace the version served under its ID (the shard drops its
    /// cached map of the old one). Replies once the shard serves it.
    Serve(ServedFile, flume::Sender<()>),
    /// Stop serving this file: later requests for it are refused with `UNKNOWN_FILE`; a
    /// chunk already being sent finishes. Replies once done.
    Unserve(FileId, flume::Sender<()>),
    /// A snapshot of the shard's counters.
    Stats(flume::Sender<SeedStats>),
    /// The shard's open connections and per-file served figures.
    Activity(flume::Sender<ShardActivity>),
    /// Runs a task on this shard (a download's connections). The task owns what it needs
    /// and ends on its own or when the shard stops.
    Spawn(ShardTask),
    /// A browser's SDP offer, from the HTTP gateway's client at this IP: answered (the
    /// answer's SDP) by the shard's signaled endpoint as a browser session, or `None`
    /// (no such endpoint here, malformed offer, shard full).
    BrowserOffer { sdp: String, client: std::net::IpAddr, reply: flume::Sender<Option<String>> },
    /// Closes the listener and ends the shard; its open connections are dropped.
    Stop,
}

/// A task for a shard: built on the shard's thread from a `Send` closure, so the future
/// itself may hold `Rc`s.
pub(super) type ShardTask =
    Box<dyn FnOnce() -> std::pin::Pin<Box<dyn std::future::Future<Output = ()>>> + Send>;

/// What one shard starts with.
pub(super) struct ShardSetup {
    /// The address to accept connections on (SO_REUSEPORT, shared by all shards), if any.
    pub(super) listen: Option<SocketAddr>,
    /// Accept TCP connections on `listen` (else only the DHT uses its port, over UDP).
    pub(super) accept_tcp: bool,
    /// The UDP address to answer WebRTC offers on (SO_REUSEPORT, shared by all shards), if any.
    pub(super) webrtc: Option<SocketAddr>,
    /// STUN servers the signaled endpoint (shard 0) learns its mapped address from.
    pub(super) stun: Vec<SocketAddr>,
    /// The TURN server the signaled endpoint (shard 0) keeps an allocation on.
    pub(super) turn: Option<super::TurnServer>,
    /// The files served from the start.
    pub(super) catalog: HashMap<FileId, ServedFile>,
    /// The DHT, if this shard runs it (shard 0 of a node that has one).
    pub(super) dht:
        Option<(DhtServerOptions, flume::Receiver<dht::DhtControl>, crate::config::NodeConfig)>,
    pub(super) limits: Limits,
    pub(super) security: Arc<NodeSecurity>,
    pub(super) inbox: flume::Receiver<ShardCommand>,
}

/// Runs one shard: accepts connections (if it listens) and handles its inbox until
/// [`ShardCommand::Stop`] (or until every sender is gone). Reports on `ready` once it
/// listens, or why it could not.
pub(super) async fn run_shard(
    id: ShardId,
    setup: ShardSetup,
    ready: crossbeam_channel::Sender<io::Result<()>>,
) -> SeedStats {
    let ShardSetup {
        listen,
        accept_tcp,
        webrtc,
        stun,
        turn,
        catalog,
        dht,
        limits,
        security,
        inbox,
    } = setup;
    let tcp = listen.filter(|_| accept_tcp);
    let listener = match tcp.map(super::sys::tcp_listener).transpose() {
        Ok(l) => l,
        Err(e) => {
            let _ = ready.send(Err(e));
            return SeedStats::default();
        }
    };
    let rtc_socket = webrtc.map(|a| super::sys::webrtc_socket(a, true, None)).transpose();
    let endpoint = match rtc_socket.and_then(|s| {
        let (max, timeout, block) =
            (limits.budget.connections_max, limits.peer_timeout, limits.webrtc_block_bytes);
        let sessions = (max, limits.webrtc_handshakes);
        s.map(|s| Endpoint::server(s, sessions, timeout, block)).transpose()
    }) {
        Ok(e) => e,
        Err(e) => {
            let _ = ready.send(Err(e));
            return SeedStats::default();
        }
    };
    // Sessions signaled through the DHT get an endpoint of their own on shard 0 (the DHT's
    // shard answers their offers), on a socket of its own: on the shared SO_REUSEPORT
    // socket the kernel could hash the peer's datagrams to another shard.
    let signaled = match (id.0, webrtc, &dht) {
        (0, Some(a), Some(_)) if listen.is_some() => {
            let (max, timeout, block) =
                (limits.budget.connections_max, limits.peer_timeout, limits.webrtc_block_bytes);
            let socket = super::sys::webrtc_socket(SocketAddr::new(a.ip(), 0), false, None);
            let sessions = (max, limits.webrtc_handshakes);
            match socket.and_then(|s| Endpoint::server(s, sessions, timeout, block)) {
                Ok(ep) => {
                    // Behind a NAT, peers reach it at the address its STUN servers see.
                    ep.set_stun(&stun);
                    // Behind a NAT that lets no peer in, they reach it through its relay.
                    if let Some(turn) = &turn {
                        ep.set_turn(turn);
                    }
                    Some((ep, a.port()))
                }
                Err(e) => {
                    let _ = ready.send(Err(e));
                    return SeedStats::default();
                }
            }
        }
        _ => None,
    };
    // Shard 0 owns the DHT: the control plane is small, one owner keeps it lock-free.
    // Dropping the sender stops it (and wakes it).
    let (dht_stop_tx, dht_stop) = flume::bounded::<()>(1);
    // A node that listens serves the DHT on its port; one that does not is a read-only
    // client on an ephemeral port.
    let dht_task = match dht {
        Some((mut opts, control, config)) => {
            let socket = match listen {
                Some(addr) => dht::bind_server(addr),
                None => {
                    opts.read_only = true;
                    dht::bind_client(opts.bootstrap.first().copied())
                }
            };
            match socket {
                Ok(socket) => {
                    let addr =
                        socket.local_addr().ok().or(listen).unwrap_or(super::UNSPECIFIED_ADDR);
                    let (sec, stop) = (security.clone(), dht_stop);
                    let signal = signaled.as_ref().map(|(ep, port)| dht::SignalSetup {
                        endpoint: ep.clone(),
                        transports: Transports {
                            tcp: accept_tcp,
                            webrtc: true,
                            webrtc_port: *port,
                        },
                    });
                    let task = dht::serve(socket, addr, opts, sec, control, config, stop, signal);
                    Some(glommio::spawn_local(task))
                }
                Err(e) => {
                    let _ = ready.send(Err(io::Error::other(e.to_string())));
                    return SeedStats::default();
                }
            }
        }
        None => None,
    };
    let _ = ready.send(Ok(()));
    drop(ready);
    let shard = Rc::new(Shard {
        id,
        catalog: RefCell::new(catalog),
        open: RefCell::new(HashMap::new()),
        stats: RefCell::new(SeedStats::default()),
        connections: Cell::new(0),
        tracked: RefCell::new(HashMap::new()),
        next_conn: Cell::new(0),
        by_file: RefCell::new(HashMap::new()),
        serve_latency: RefCell::new(serve_latency_histogram()),
        send_buffers: SendBuffers::new(SEND_BUFFER_BUDGET_PER_SHARD_BYTES),
        limits,
        security,
    });
    // Every loop that waits on a socket is a task of its own, polled only when something it
    // waits for happened. glommio's socket futures keep one more clone of the polling task's
    // waker on every poll while they wait (`Source::collect_rw`), so an idle listener's accept
    // inside the task of the WebRTC drivers, which is polled on every datagram, piled up
    // clones until that task's reference count (an `i16`) overflowed and the shard panicked
    // (tuning.md, "Browsers over WebRTC from the share page"). Dropping a task's handle here
    // cancels the task, as dropping the future did.
    let accepting = {
        let shard = shard.clone();
        async move {
            match listener {
                Some(l) => glommio::spawn_local(async move { accept_loop(&shard, &l).await }).await,
                None => future::pending().await,
            }
        }
    };
    let rtc_task = |ep: Option<Rc<Endpoint>>| {
        let shard = shard.clone();
        async move {
            match ep {
                Some(ep) => {
                    glommio::spawn_local(async move { accept_rtc_loop(&shard, &ep).await }).await
                }
                None => future::pending().await,
            }
        }
    };
    let accepting_rtc = rtc_task(endpoint.clone());
    let accepting_signaled = rtc_task(signaled.as_ref().map(|(ep, _)| ep.clone()));
    let accepting_rtc = future::or(accepting_rtc, accepting_signaled);
    let browser = signaled.as_ref().map(|(ep, _)| ep);
    future::or(future::or(accepting, accepting_rtc), handle_inbox(&shard, &inbox, browser)).await;
    drop(dht_stop_tx);
    let mut stats = shard.snapshot();
    for ep in endpoint.iter().chain(signaled.iter().map(|(ep, _)| ep)) {
        let e = ep.stats();
        stats.webrtc_offers += e.offers;
        stats.webrtc_offers_dropped += e.offers_dropped;
        stats.webrtc_offers_busy += e.offers_busy;
        stats.webrtc_ice_connected += e.ice_connected;
        stats.webrtc_dtls_connected += e.dtls_connected;
        stats.webrtc_setups_opened += e.opened;
        stats.webrtc_setup_ms_total += e.open_ms_total;
        stats.webrtc_setup_timeouts += e.open_timeouts;
        stats.webrtc_setup_failures += e.open_failures;
        stats.webrtc_datagrams_sent += e.datagrams_sent;
        stats.webrtc_send_calls += e.send_calls;
        stats.webrtc_datagram_bytes_max = stats.webrtc_datagram_bytes_max.max(e.datagram_bytes_max);
        stats.webrtc_datagrams_received += e.datagrams_received;
        stats.webrtc_receive_calls += e.receive_calls;
    }
    if let Some(task) = dht_task {
        stats.dht = Some(task.await);
    }
    stats
}

/// How long the node's handle waits for a shard's answer to a command before calling the
/// shard stuck (`NodeError::ShardStuck`, a bug): a shard takes its inbox between two
/// connection events, so even a loaded one answers within milliseconds.
pub(super) const SHARD_ANSWER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

/// Handles the shard's commands until `Stop` or until the handle is gone. The wait for the
/// next command has no timer: the sending thread's wake-up reaches the parked executor
/// (glommio queues the foreign waker, then writes the executor's eventfd if it announced
/// it sleeps; the executor announces it, issues a `membarrier` and looks at the queue once
/// more before it sleeps, so one of the two always sees the other). An idle shard sleeps
/// until a command or a connection comes. (Until 2026-11-30 a 1 s timer, `INBOX_POLL`,
/// guarded against a lost wake-up; none was ever seen, and it woke every idle shard of
/// every process once a second.)
async fn handle_inbox(
    shard: &Shard,
    inbox: &flume::Receiver<ShardCommand>,
    browser: Option<&Rc<Endpoint>>,
) {
    loop {
        let Ok(cmd) = inbox.recv_async().await else { return };
        match cmd {
            ShardCommand::Serve(file, done) => {
                let id = file.entry.info.file_id;
                shard.open.borrow_mut().remove(&id);
                shard.catalog.borrow_mut().insert(id, file);
                let _ = done.send(());
            }
            ShardCommand::Unserve(id, done) => {
                shard.open.borrow_mut().remove(&id);
                shard.catalog.borrow_mut().remove(&id);
                let _ = done.send(());
            }
            ShardCommand::Stats(reply) => {
                let _ = reply.send(shard.snapshot());
            }
            ShardCommand::Activity(reply) => {
                let _ = reply.send(shard.activity());
            }
            ShardCommand::Spawn(task) => {
                glommio::spawn_local(task()).detach();
            }
            ShardCommand::BrowserOffer { sdp, client, reply } => {
                let answer = browser.and_then(|ep| ep.answer_browser(&sdp, client));
                let _ = reply.send(answer.map(|(sdp, _)| sdp));
            }
            ShardCommand::Stop => return,
        }
    }
}

/// Accepts connections forever, each served by its own task on this shard.
async fn accept_loop(shard: &Rc<Shard>, listener: &glommio::net::TcpListener) {
    let mut backoff = AcceptBackoff::default();
    loop {
        let stream = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning; the listener stays up.
                backoff.failed(shard.id.0, &super::glommio_io(e)).await;
                continue;
            }
        };
        backoff.succeeded(shard.id.0);
        if shard.connections.get() >= shard.limits.budget.connections_max {
            shard.stats.borrow_mut().connections_refused += 1;
            continue;
        }
        shard.stats.borrow_mut().connections += 1;
        let (conn_id, track) = shard.open_connection(
            stream.peer_addr().unwrap_or(super::UNSPECIFIED_ADDR),
            super::Transport::Tcp,
        );
        let shard2 = shard.clone();
        glommio::spawn_local(async move {
            // Per-connection failures (resets, timeouts) end that connection only.
            let _ = serve_connection(&shard2, stream, &track).await;
            shard2.close_connection(conn_id);
        })
        .detach();
    }
}

/// Runs the shard's WebRTC endpoint and serves every data channel that opens on it, each by
/// its own task on this shard, like a TCP connection.
async fn accept_rtc_loop(shard: &Rc<Shard>, ep: &Rc<Endpoint>) {
    let run = ep.clone().run();
    let accept = async {
        loop {
            let stream = ep.accept().await;
            {
                let mut st = shard.stats.borrow_mut();
                st.connections += 1;
                st.webrtc_connections += 1;
            }
            let (conn_id, track) =
                shard.open_connection(stream.peer_addr(), super::Transport::Webrtc);
            let shard2 = shard.clone();
            glommio::spawn_local(async move {
                let _ = serve_rtc(&shard2, stream, &track).await;
                shard2.close_connection(conn_id);
            })
            .detach();
        }
    };
    future::or(run, accept).await;
}

/// Serves one WebRTC data channel: the same handshake and session as over TCP, inside the
/// channel; a browser's session (its offer came over the HTTP gateway) the same session
/// with plaintext records and no handshake (ARCHITECTURE.md, "Browser peers").
async fn serve_rtc(shard: &Shard, stream: RtcStream, track: &ConnTrack) -> io::Result<()> {
    if stream.is_browser() {
        shard.stats.borrow_mut().browser_connections += 1;
        let conn = StreamConn::browser(stream, REQUEST_BODY_MAX_BYTES);
        return serve_session(shard, Conn::Rtc(conn), track).await;
    }
    let received = Rc::new(Cell::new(0));
    let side = TcpSide::Server { received: received.clone() };
    // Bound to the channel's DTLS, whose encryption then replaces our records
    // (ARCHITECTURE.md, "WebRTC data channels").
    let binding = Some(stream.channel_binding()?);
    let handshake = async {
        StreamConn::establish(stream, &shard.security, side, REQUEST_BODY_MAX_BYTES, binding)
            .await
            .map_err(|e| (e.blame(), e.reason()))
    };
    let Some(conn) = handshake_within(shard, &received, handshake).await else { return Ok(()) };
    serve_session(shard, Conn::Rtc(conn), track).await
}

/// Runs `handshake` as long as the peer keeps it moving, counting a failure (`None`) by
/// blame and by reason (`HandshakeFailure::reason`, or `timeout`). The deadline follows
/// progress, counted in whole handshake messages (`received`), not bytes: a peer gets the
/// peer timeout for its next message again each time one arrives, so an honest client that
/// an overloaded machine slows down is not cut off at a fixed time from accept, while one
/// that drips bytes (no message whole within a timeout) or goes silent is given up on; an
/// unauthenticated connection holds its slot for at most two timeouts (its two messages).
async fn handshake_within<T>(
    shard: &Shard,
    received: &Cell<u32>,
    handshake: impl std::future::Future<Output = Result<T, (Blame, &'static str)>>,
) -> Option<T> {
    let deadline = async {
        let mut seen = received.get();
        loop {
            glommio::timer::sleep(shard.limits.peer_timeout).await;
            if received.get() == seen {
                // No message whole for a whole timeout: silent, dripping or gone.
                break Err((Blame::Peer, "timeout"));
            }
            seen = received.get();
        }
    };
    match future::or(handshake, deadline).await {
        Ok(c) => Some(c),
        Err((blame, reason)) => {
            let mut st = shard.stats.borrow_mut();
            st.handshakes_failed += 1;
            *st.handshakes_failed_by_reason.entry(reason.to_owned()).or_default() += 1;
            match blame {
                Blame::Peer => st.handshakes_failed_peer += 1,
                Blame::Local => st.handshakes_failed_local += 1,
            }
            None
        }
    }
}

/// Serves one connection until the peer closes it, sends something malformed, or idles out.
/// The handshake comes first; nothing is read as a request before it succeeds. The
/// protocol decisions are the `peer::ServerSession`'s; this pump moves its frames, reads
/// the chunks it names (after the throttle wait, checking the file right before the bytes
/// are read) and arms its idle deadline. Requests are answered in order; the client
/// pipelines as many as it likes, and the pump reads ahead at most one receive buffer of
/// them (the rest waits in the kernel's socket buffer: TCP back-pressure is the
/// per-connection bound).
async fn serve_connection(shard: &Shard, stream: TcpStream, track: &ConnTrack) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let peer_timeout = shard.limits.peer_timeout;
    stream.set_read_timeout(Some(peer_timeout))?;
    stream.set_write_timeout(Some(peer_timeout))?;
    // The handshake's deadline follows whole messages, not reads: a client dripping a byte
    // per read timeout must not hold a connection slot unauthenticated.
    let received = Rc::new(Cell::new(0));
    let side = TcpSide::Server { received: received.clone() };
    let handshake = async {
        TcpConn::establish(stream, &shard.security, side, REQUEST_BODY_MAX_BYTES, None)
            .await
            .map_err(|e| (e.blame(), e.reason()))
    };
    let Some(tcp) = handshake_within(shard, &received, handshake).await else { return Ok(()) };
    // From here the session's idle deadline decides how long a quiet client may stay.
    tcp.stream().set_read_timeout(None)?;
    serve_session(shard, Conn::Tcp(tcp), track).await
}

/// Runs the server session on an established connection and adds its counters.
async fn serve_session(shard: &Shard, mut conn: Conn, track: &ConnTrack) -> io::Result<()> {
    track.node_id.set(conn.node_id());
    let mut session = ServerSession::new(clock::now(), shard.limits.idle_timeout);
    let result = serve(shard, &mut conn, &mut session, track).await;
    let s = session.stats();
    let mut st = shard.stats.borrow_mut();
    st.requests += s.requests;
    st.manifests_served += s.manifests_served;
    st.error_replies += s.error_replies;
    st.bad_frames += s.bad_frames;
    st.records_rejected += s.records_rejected;
    result
}

async fn serve(
    shard: &Shard,
    conn: &mut Conn,
    session: &mut ServerSession,
    track: &ConnTrack,
) -> io::Result<()> {
    let peer_limit = shard
        .limits
        .peer_rate_bytes
        .map(|r| Throttle::new(r, throttle_burst_bytes(r), clock::now()));
    loop {
        while let Some(t) = session.poll_transmit() {
            match t {
                ServerTransmit::Frame(frame) => conn.push_frame(&frame),
                ServerTransmit::Chunk { header, file_id, chunk_index, range, aad, partial } => {
                    conn.flush().await?;
                    let len = range.end.saturating_sub(range.start);
                    let chunk = ChunkSend { header, file_id, range, aad, partial };
                    let began = clock::now();
                    let sent = send_chunk(shard, conn, peer_limit.as_ref(), chunk);
                    match sent.await? {
                        Ok(()) => {
                            let us = clock::now().saturating_duration_since(began).as_micros();
                            shard.serve_latency.borrow_mut().saturating_record(us as u64);
                            track.bytes.set(track.bytes.get() + len);
                            track.chunks.set(track.chunks.get() + 1);
                            let mut by_file = shard.by_file.borrow_mut();
                            let f = by_file.entry(file_id).or_default();
                            f.bytes += len;
                            f.chunks += 1;
                            drop(by_file);
                            session.handle_sent(clock::now());
                        }
                        Err(why) => {
                            session.handle_chunk_failed(clock::now(), file_id, chunk_index, why);
                        }
                    }
                }
            }
        }
        conn.flush().await?;
        if session.is_closed() {
            return Ok(());
        }
        let Some(deadline) = session.poll_timeout() else { return Ok(()) };
        let received = {
            // A client that pipelines has its next request buffered already: only a receive
            // that must wait arms the idle timer (a timer armed and cancelled around every
            // request was two io_uring submissions per chunk).
            let mut recv = std::pin::pin!(conn.recv());
            match future::poll_once(&mut recv).await {
                Some(r) => Some(r),
                None => {
                    let timer = async {
                        let wait = deadline.saturating_duration_since(clock::now());
                        glommio::timer::sleep(wait).await;
                        None
                    };
                    future::or(async { Some(recv.await) }, timer).await
                }
            }
        };
        let now = clock::now();
        match received {
            None => session.handle_timeout(now),
            Some(Ok(Deframed::Control)) => {
                let files = CatalogView(shard.catalog.borrow());
                session.handle_frame(now, conn.body(), &files);
            }
            Some(Err(RecvError::Frame(e))) => session.handle_frame_error(now, e),
            // A server never announces a payload, so none can arrive; resets, timeouts
            // and closes end the connection.
            Some(Ok(Deframed::Payload(_)) | Err(_)) => return Ok(()),
        }
    }
}

/// A chunk the session chose to send.
struct ChunkSend {
    header: Vec<u8>,
    file_id: FileId,
    range: Range<u64>,
    aad: RecordAad,
    partial: bool,
}

/// Sends one chunk, paced by the upload limits: the payload goes out in pieces no bigger
/// than the tightest limit's burst (at most `THROTTLE_PIECE_MAX_BYTES`; the whole chunk in
/// one write when unlimited), each written once the limits allow it, so a chunk that takes
/// longer than `PEER_TIMEOUT` at the configured rate still flows and a downloader sees its
/// bytes arrive. The file is checked (`Shard::check_fresh`) after the first piece's wait,
/// right before anything is sent. An unpaced plaintext chunk over TCP then leaves by
/// `sendfile(2)` straight from the file; every other chunk is pread whole into a buffer
/// lent by the shard's pool (`Shard::send_buffers`, waiting for one when its budget is lent
/// out) and sealed there in place, once, when encrypted; the buffer goes back to the pool
/// once the chunk is written.
/// `Ok(Err(_))`: nothing was sent, the session refuses instead. `Err(_)`: the connection
/// must end (a socket error, or a file that shrank under `sendfile` after part of the
/// chunk was on the wire).
async fn send_chunk(
    shard: &Shard,
    conn: &mut Conn,
    peer_limit: Option<&Throttle>,
    c: ChunkSend,
) -> io::Result<Result<(), ChunkFailure>> {
    let file = match shard.open_file(&c.file_id) {
        Ok(f) => f,
        Err(why) => return Ok(Err(why)),
    };
    // The session checked the range against the manifest; chunks are at most
    // CHUNK_SIZE_MAX_BYTES, so these fit.
    let range = c.range.start as usize..c.range.end as usize;
    let n = range.len();
    let sealed = conn.seals();
    // Bytes on the wire after the header: the payload, and its tag when sealed.
    let len = if sealed { n + TAG_BYTES } else { n };
    let limits = [shard.limits.node.as_deref(), peer_limit];
    let piece = limits
        .iter()
        .flatten()
        .map(|t| t.burst_bytes().min(THROTTLE_PIECE_MAX_BYTES) as usize)
        .min()
        .unwrap_or(len)
        .max(1);
    let mut pieces = (0..len).step_by(piece).map(|start| start..(start + piece).min(len));
    let first = pieces.next().unwrap_or(0..0);
    pace(&limits, first.len()).await;
    // The freshness check runs after the first wait, right before the bytes are read.
    let paced = first.len() < len;
    if !sealed && !paced && conn.sends_files() {
        if let Err(why) = shard.check_fresh(&c.file_id, &file, c.partial) {
            return Ok(Err(why));
        }
        // Zero copy: the kernel attaches the file's page-cache pages to the socket.
        let sent = conn.send_file_chunk(&c.header, &file.file, c.range.start, n).await;
        if let Err(e) = sent {
            if e.kind() == io::ErrorKind::UnexpectedEof {
                // Truncated under sendfile: part of the chunk may be on the wire, so the
                // connection ends (the downloader sees a cut record, never a short chunk
                // passed off as whole); the next request opens and checks the file afresh
                // and is refused as FILE_CHANGED.
                shard.forget(&c.file_id);
            }
            return Err(e);
        }
    } else if !sealed && conn.takes_owned_payloads() {
        // A data channel: the chunk is pread into memory of its own and handed over in
        // pieces that become its messages, with no copy into them. A lease of the
        // send-buffer budget stands for it, as a lent buffer would, until the last piece is
        // handed over; from then on `rtc` holds it until acknowledged, within the channel's
        // own back-pressure (`WEBRTC_SEND_BUFFER_BYTES` unacknowledged at most).
        let lease = shard.send_buffers.lease(n).await;
        let mut data = match shard.read_chunk_owned(&c.file_id, &file, c.partial, range) {
            Ok(data) => data,
            Err(why) => return Ok(Err(why)),
        };
        conn.begin_plain_chunk(&c.header)?;
        conn.write_payload_owned(data.split_to(first.len())).await?;
        for p in pieces {
            pace(&limits, p.len()).await;
            conn.write_payload_owned(data.split_to(p.len())).await?;
        }
        drop(lease);
    } else {
        // Encrypted, or plaintext over TCP paced in pieces: pread the chunk into the buffer
        // (and seal it in place, once). A plaintext chunk that goes out over many waits is
        // read whole now, so a file changed meanwhile cannot cut it short: the change is
        // refused cleanly at the next chunk.
        // The buffer is held from the read to the last byte written (a sealed record is
        // sealed whole), then goes back to the pool on every path out of here.
        let mut buf = shard.send_buffers.take(len).await;
        if let Err(why) =
            shard.read_chunk(&c.file_id, &file, c.partial, range.clone(), &mut buf[..n])
        {
            return Ok(Err(why));
        }
        if sealed {
            conn.seal_chunk(&c.header, c.aad, &mut buf[..len])?;
        } else {
            conn.begin_plain_chunk(&c.header)?;
        }
        conn.write_payload(&buf[first]).await?;
        for p in pieces {
            pace(&limits, p.len()).await;
            conn.write_payload(&buf[p]).await?;
        }
    }
    let mut st = shard.stats.borrow_mut();
    st.chunks_served += 1;
    if sealed {
        st.payload_bytes_sealed += n as u64;
    } else {
        st.payload_bytes_from_map += n as u64;
    }
    Ok(Ok(()))
}

/// Charges `bytes` to every upload limit and waits as long as the tightest one says.
async fn pace(limits: &[Option<&Throttle>], bytes: usize) {
    let now = clock::now();
    let wait =
        limits.iter().flatten().map(|t| t.reserve(now, bytes as u64)).max().unwrap_or_default();
    if !wait.is_zero() {
        glommio::timer::sleep(wait).await;
    }
}
