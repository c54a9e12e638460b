//! The downloader behind `furymesh get`.
//!
//! One control step fetches and authenticates the manifest; then the connections (one per
//! peer, or `--connections` spread over them), spread over the shards, ask the swarm
//! scheduler what to request next, keep a window of requests in flight, hash each chunk on
//! their own core and write it through io_uring (glommio `BufferedFile`). With `--listen`, a
//! seeder shard serves the verified chunks meanwhile. The calling thread is the coordinator: it makes
//! verified chunks durable (fdatasync of the data, then an atomic rewrite of the resume
//! state) at intervals, so the resume state never claims a chunk that is not on disk.

use std::cell::RefCell;
use std::fs::{self, File, OpenOptions};
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

// The download's own thread waits on these with timeouts (to look at its interrupt flag, to
// save at intervals). flume parks the thread outright; crossbeam's channels spin and call
// sched_yield(2) several times around every wait, which with a thread per download (1,000
// in the WebRTC soak, tuning.md) kept hundreds of threads runnable and starved the shards.
use flume::{Receiver, RecvTimeoutError, Sender};
use futures_lite::future;
use glommio::io::BufferedFile;
use glommio::net::TcpStream;
use glommio::sync::Semaphore;
use hdrhistogram::Histogram;
use serde::Serialize;

use super::dht::DhtControl;
use super::handle::{DownloadCounters, Handle};
use super::secure::{HandshakeFailure, NodeSecurity};
use super::seed::ServedFile;
use super::transport::{
    webrtc, Conn, RecvError, RtcStream, StreamConn, TcpConn, TcpSide, Transport,
};
use super::{clock, ShardId};
use crate::config::{
    throttle_burst_bytes, RESPONSE_BODY_MAX_BYTES, SHARD_STOP_GRACE, WRITES_INFLIGHT_MAX,
};
use crate::crypto::handshake::Blame;
use crate::crypto::signal::{SignalCandidate, SignalError, SignalInitiator, SignalPayload};
use crate::crypto::{FileId, IdKind};
use crate::dht::{NodeId, Transports};
use crate::manifest::FileInfo;
use crate::peer::{manifest_from, ClientConfig, ClientEvent, ClientSession, PeerError, Swarm};
use crate::storage::{write_atomic, CatalogEntry, DownloadClaim, FileStamp};
use crate::throttle::Throttle;
use crate::transfer::{Bitfield, SharedBitfield};
use crate::transfer::{ConnId, Scheduler, SchedulerConfig, SchedulerEvent, Strategy};
use crate::wire::frame::{Deframed, FrameError};
use crate::wire::{self, Encoder, ErrorCode, Request};

/// A peer to download from: its address and, if pinned, the node it must prove to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerAddr {
    pub addr: SocketAddr,
    pub node_id: Option<NodeId>,
}

/// `HOST:PORT` as a socket address; HOST may be a name, resolved now (its first address).
/// Errors are one line naming the input.
pub fn resolve_addr(s: &str) -> Result<SocketAddr, String> {
    use std::net::ToSocketAddrs;
    s.to_socket_addrs()
        .map_err(|e| format!("cannot resolve {s:?}: {e}"))?
        .next()
        .ok_or_else(|| format!("{s:?} resolves to no address"))
}

impl std::str::FromStr for PeerAddr {
    type Err = String;

    /// `[NODE_ID@]HOST:PORT` (the form `--peer` and the API take).
    fn from_str(s: &str) -> Result<Self, String> {
        match s.split_once('@') {
            None => Ok(resolve_addr(s)?.into()),
            Some((id, addr)) => {
                let node_id: NodeId =
                    id.parse().map_err(|e| format!("{id:?} is not a node ID: {e}"))?;
                Ok(Self { addr: resolve_addr(addr)?, node_id: Some(node_id) })
            }
        }
    }
}

impl std::fmt::Display for PeerAddr {
    /// `[NODE_ID@]HOST:PORT` with the resolved address: what [`PeerAddr::from_str`] reads.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.node_id {
            Some(id) => write!(f, "{id}@{}", self.addr),
            None => write!(f, "{}", self.addr),
        }
    }
}

impl From<SocketAddr> for PeerAddr {
    fn from(addr: SocketAddr) -> Self {
        Self { addr, node_id: None }
    }
}

/// What to download, from where, to where.
#[derive(Debug, Clone)]
pub struct GetOptions {
    pub file_id: FileId,
    /// What `file_id` must name: a file, or a collection's encoding (fetched like a file
    /// by `get c-…`). A manifest proving the other kind is refused (`GetError::WrongKind`).
    pub kind: IdKind,
    /// Peers to download from, all at once.
    pub peers: Vec<PeerAddr>,
    /// Identity, network secret and encryption setting for every connection.
    pub security: Arc<NodeSecurity>,
    pub output: PathBuf,
    /// Replace `output` if it exists.
    pub force: bool,
    /// Connections to open: one per peer, or this many spread over the peers if more.
    pub connections: usize,
    /// Largest window of chunk requests in flight per connection (the scheduler sizes each
    /// window from the measured bandwidth-delay product, up to this).
    pub window: u32,
    /// Chunk order.
    pub strategy: Strategy,
    /// Peers that get requests at once, the best by measured performance.
    pub max_peers: usize,
    /// Serve the verified chunks through the node while downloading (partial seeding;
    /// needs a node that listens).
    pub serve_partial: bool,
    /// Persist the resume state after this many verified bytes (and at least every
    /// `RESUME_SAVE_INTERVAL`).
    pub save_every_bytes: u64,
    /// Download limit, shared by all connections.
    pub download_rate_bytes: Option<u64>,
    /// How to reach the peers: TCP, WebRTC data channels, or TCP falling back to WebRTC.
    pub transport: TransportChoice,
    /// HTTP(S) mirrors of the file (`--web-seed`, a link's `web-seed=`): each URL serves
    /// the whole file and is asked for chunks with Range requests (`node::webseed`). The
    /// manifest still comes from `peers`.
    pub web_seeds: Vec<String>,
}

/// `get --transport`: how a download reaches its peers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TransportChoice {
    /// TCP first; if TCP cannot connect, a WebRTC data channel to the same address.
    #[default]
    Auto,
    /// TCP only.
    Tcp,
    /// WebRTC data channels only: each peer address is a seeder's WebRTC (UDP) address.
    Webrtc,
}

impl std::str::FromStr for TransportChoice {
    type Err = String;

    /// `auto`, `tcp` or `webrtc`.
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Self::Auto),
            "tcp" => Ok(Self::Tcp),
            "webrtc" => Ok(Self::Webrtc),
            _ => Err(format!("{s:?} is not a transport (auto, tcp or webrtc)")),
        }
    }
}

/// The outcome of a download (`--json`).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct GetReport {
    pub file_id: String,
    pub file_size: u64,
    /// Payload bytes fetched over the network by this run.
    pub bytes: u64,
    pub seconds: f64,
    pub bytes_per_sec: f64,
    pub chunks_fetched: u64,
    /// Chunks already verified by an earlier, interrupted run (recorded in its resume state).
    pub chunks_reused: u64,
    /// Chunks an earlier run wrote but had not yet recorded when it was killed, found
    /// correct on disk by hashing them at start (so not fetched again).
    pub chunks_reverified: u64,
    pub cpu_seconds: f64,
    /// What each peer delivered.
    pub peers: Vec<PeerReport>,
    /// What each web seed (HTTP mirror) delivered.
    pub web_seeds: Vec<WebSeedReport>,
    /// Seconds from the download's start (before its manifest is asked for) to the first
    /// chunk fetched and verified: the connection set-up (TCP, or signaling, ICE, DTLS and
    /// SCTP over WebRTC), the handshake, the manifest and one chunk's round trip. `null`
    /// when no chunk was fetched (every chunk was already on disk).
    pub first_chunk_seconds: Option<f64>,
    /// Request-to-verified latency of the chunks fetched, in microseconds.
    pub latency_us: LatencyReport,
    /// The whole latency distribution (for merging several downloads).
    #[serde(skip)]
    pub latency_histogram: Option<Histogram<u64>>,
    /// Payload bytes served to other downloaders while downloading (`--listen`).
    pub uploaded_bytes: u64,
    /// The manifest (for recording the file in the catalog).
    #[serde(skip)]
    pub info: Option<FileInfo>,
    /// Where the verified file now is.
    #[serde(skip)]
    pub output: Option<PathBuf>,
}

/// Percentiles of a latency distribution, in microseconds.
#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
pub struct LatencyReport {
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
    pub count: u64,
}

impl LatencyReport {
    pub fn of(h: &Histogram<u64>) -> Self {
        Self {
            p50: h.value_at_quantile(0.5),
            p90: h.value_at_quantile(0.9),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
            count: h.len(),
        }
    }
}

/// One peer's part in a download.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct PeerReport {
    /// `HOST:PORT`.
    #[schema(value_type = String)]
    pub addr: SocketAddr,
    /// The node ID the peer proved in the handshake (pin it next time with
    /// `--peer NODE_ID@HOST:PORT`).
    pub node_id: Option<String>,
    /// The transport its last connection used (`tcp` or `webrtc`), if one was made.
    pub transport: Option<Transport>,
    /// Over WebRTC: the candidate types of the ICE pair the data channel ran over,
    /// `LOCAL-REMOTE` (`host`, `srflx`, `prflx` or `relay` each, RFC 8445 §5.1.1), e.g.
    /// `srflx-srflx` through two NATs; absent over TCP.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ice: Option<String>,
    /// Verified payload bytes it sent (endgame duplicates included).
    pub bytes: u64,
    pub chunks: u64,
    /// Chunks from it that failed verification (never written).
    pub corrupt_chunks: u64,
    /// Dropped for this transfer after repeated corrupt chunks.
    pub banned: bool,
    /// Why its connection ended early, if it did.
    pub error: Option<String>,
}

impl Default for PeerReport {
    fn default() -> Self {
        Self {
            addr: SocketAddr::from(([0, 0, 0, 0], 0)),
            node_id: None,
            transport: None,
            ice: None,
            bytes: 0,
            chunks: 0,
            corrupt_chunks: 0,
            banned: false,
            error: None,
        }
    }
}

/// One web seed's part in a download.
#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
pub struct WebSeedReport {
    /// The mirror's URL, as given.
    pub url: String,
    /// Verified payload bytes it sent (endgame duplicates included).
    pub bytes: u64,
    /// Verified chunks it sent (endgame duplicates included).
    pub chunks: u64,
    /// Chunks from it that failed verification (never written).
    pub corrupt_chunks: u64,
    /// Dropped for this transfer after repeated corrupt chunks.
    pub banned: bool,
    /// Why it was given up on, if it was (no Range support, an HTTP status, a redirect
    /// loop, a timeout, a ban).
    pub error: Option<String>,
}

/// Progress reported to the caller while downloading.
#[derive(Debug, Clone)]
pub struct GetProgress {
    pub done_bytes: u64,
    pub total_bytes: u64,
    /// The manifest's chunk size in bytes (chunk counts for status reports).
    pub chunk_size: u32,
    /// What each peer delivered so far in this run (one row per address; errors only in
    /// the final report).
    pub peers: Arc<Vec<PeerReport>>,
}

/// Why a download failed. Every variant is one line a user can act on; [`GetError::blame`]
/// says whose fault it is.
#[derive(Debug, thiserror::Error)]
pub enum GetError {
    #[error("{path} already exists (use --force to replace it)")]
    OutputExists { path: PathBuf },
    /// Another process holds the lock on this output's partial file.
    #[error("another furymesh get is writing {path}; wait for it to finish or choose another -o")]
    OutputBusy { path: PathBuf },
    #[error("peer {peer} does not have file {file_id}")]
    UnknownFile { peer: SocketAddr, file_id: FileId },
    #[error("cannot connect to {peer}: {source}")]
    Connect { peer: SocketAddr, source: io::Error },
    #[error("connection to {peer} failed: {what}")]
    Connection { peer: SocketAddr, what: String },
    /// The peer said nothing for `NodeConfig::peer_timeout_ms` while an answer was due.
    #[error("connection to {peer} failed: no answer within {}s", .after.as_secs_f64())]
    Timeout { peer: SocketAddr, after: Duration },
    #[error("peer {peer} refused: {message}")]
    Refused { peer: SocketAddr, message: String },
    #[error("peer {peer} broke the protocol: {what}")]
    Protocol { peer: SocketAddr, what: String },
    #[error("handshake with {peer} failed: {source}")]
    Handshake { peer: SocketAddr, source: HandshakeFailure },
    /// The peer proved to be another node than the one pinned for its address.
    #[error("handshake with {peer} failed: {what}")]
    WrongNode { peer: SocketAddr, what: String },
    /// A sealed record failed authentication: tampered with, replayed or reordered on the
    /// way. Nothing of it was written.
    #[error("connection to {peer} closed: {source} (tampered, replayed or reordered on the way); nothing of it was written")]
    Tampered { peer: SocketAddr, source: crate::crypto::RecordError },
    #[error("chunk {chunk_index} from {peer} failed verification (hash mismatch); nothing of it was kept")]
    HashMismatch { peer: SocketAddr, chunk_index: u32 },
    /// The peer proved to be a node this download banned for corrupt chunks, reached at
    /// this or another address or over another connection: a ban follows the node ID.
    #[error(
        "peer {peer} is node {node}, banned from this download for chunks that failed verification"
    )]
    NodeBanned { peer: SocketAddr, node: NodeId },
    #[error("disk full writing {path}")]
    DiskFull { path: PathBuf },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("interrupted; run the same command again to resume")]
    Interrupted,
    /// `get -o -`: whoever read standard output went away (EPIPE) after `bytes` bytes; the
    /// download stopped. What was written was verified, but it is not the whole file.
    #[error("standard output was closed by its reader after {bytes} bytes; download stopped")]
    StdoutClosed { bytes: u64 },
    #[error("no peer to download from")]
    NoPeers,
    /// A web seed could not serve (or was banned); the download goes on without it.
    #[error("web seed {url}: {what}")]
    WebSeed { url: String, what: String },
    /// A collection that cannot be downloaded safely: too large, malformed, or an entry
    /// path that is refused (`collection::PathError`), or a file that disagrees with its
    /// entry. Nothing of it was written.
    #[error("refusing collection {id}: {what}")]
    BadCollection { id: String, what: String },
    /// Where a collection's entry would go is not safe to write: a symlink (or a file
    /// where a directory is needed) already inside the output directory.
    #[error("{path}: {why}; nothing of the collection was written")]
    UnsafeOutput { path: PathBuf, why: String },
    /// The ID names a collection where a file was asked for, or the other way round.
    #[error("{id} names a {found:?}, not a {expected:?}{}", if *.found == IdKind::Collection { format!(" (get c-{} -o DIR)", .id) } else { String::new() })]
    WrongKind { id: FileId, expected: IdKind, found: IdKind },
    #[error("cannot serve while downloading: {what}")]
    Listen { what: String },
    /// The node the download runs in failed or stopped.
    #[error(transparent)]
    Node(#[from] super::handle::NodeError),
}

impl GetError {
    /// Whose fault the failure is: the peer's (refusals, bad or missing data, failed
    /// handshakes, silence) or this node's (its disk, its output path, its configuration).
    /// `None` for an interruption, nobody's fault.
    pub fn blame(&self) -> Option<Blame> {
        match self {
            Self::Interrupted | Self::StdoutClosed { .. } => None,
            Self::Handshake { source, .. } => Some(source.blame()),
            Self::UnknownFile { .. }
            | Self::Connect { .. }
            | Self::Connection { .. }
            | Self::Timeout { .. }
            | Self::Refused { .. }
            | Self::Protocol { .. }
            | Self::WrongNode { .. }
            | Self::Tampered { .. }
            | Self::HashMismatch { .. }
            | Self::NodeBanned { .. }
            | Self::WebSeed { .. }
            | Self::BadCollection { .. } => Some(Blame::Peer),
            Self::OutputExists { .. }
            | Self::OutputBusy { .. }
            | Self::DiskFull { .. }
            | Self::Io { .. }
            | Self::NoPeers
            | Self::WrongKind { .. }
            | Self::UnsafeOutput { .. }
            | Self::Listen { .. }
            | Self::Node(_) => Some(Blame::Local),
        }
    }

    fn io(path: &Path, source: io::Error) -> Self {
        if source.raw_os_error() == Some(libc::ENOSPC) {
            Self::DiskFull { path: path.into() }
        } else {
            Self::Io { path: path.into(), source }
        }
    }

    /// glommio wraps the OS error; unwrap it so ENOSPC is recognised and messages stay short.
    fn glommio<T>(path: &Path, e: glommio::GlommioError<T>) -> Self {
        Self::io(path, super::glommio_io(e))
    }

    /// A transport failure on the connection to `peer`, whose reads time out `after`.
    fn recv(peer: SocketAddr, e: RecvError, after: Duration) -> Self {
        match e {
            RecvError::Frame(f) => Self::peer(peer, None, PeerError::Frame(f)),
            RecvError::Io(ref io) if io.kind() == io::ErrorKind::TimedOut => {
                Self::Timeout { peer, after }
            }
            _ => Self::Connection { peer, what: e.to_string() },
        }
    }

    /// Why a session gave up on `peer` (downloading `file_id`, if known).
    fn peer(peer: SocketAddr, file_id: Option<FileId>, e: PeerError) -> Self {
        match e {
            PeerError::Frame(FrameError::Record(source)) => Self::Tampered { peer, source },
            PeerError::Frame(f @ FrameError::TooLarge { .. }) => {
                Self::Protocol { peer, what: f.to_string() }
            }
            PeerError::Protocol(what) => Self::Protocol { peer, what },
            PeerError::Refused { code, message } => match file_id {
                Some(file_id) if code == ErrorCode::UnknownFile => {
                    Self::UnknownFile { peer, file_id }
                }
                _ => Self::Refused { peer, message },
            },
            PeerError::HashMismatch { chunk_index } => Self::HashMismatch { peer, chunk_index },
            e @ (PeerError::Starved | PeerError::Closed) => {
                Self::Connection { peer, what: e.to_string() }
            }
        }
    }
}

/// Locks the download's partial file and resume state for this process until the claim is
/// dropped (the end of `get`), or refuses at once if another `get` is writing `output`.
fn claim_output(partial: &Path, resume: &Path, output: &Path) -> Result<DownloadClaim, GetError> {
    DownloadClaim::try_new(partial, resume)
        .map_err(|e| GetError::io(partial, e))?
        .ok_or_else(|| GetError::OutputBusy { path: output.into() })
}

/// Paths of a download's partial data and resume state, next to the output.
pub(crate) fn side_paths(output: &Path) -> (PathBuf, PathBuf) {
    let mut partial = output.as_os_str().to_owned();
    partial.push(".furymesh-partial");
    let mut resume = output.as_os_str().to_owned();
    resume.push(".furymesh-resume");
    (partial.into(), resume.into())
}

/// Loads the resume state if it belongs to this file and its partial data is intact (cheap
/// checks: it decodes, the manifest authenticates against the file ID, the partial file has
/// the full size). Anything else means starting over, never trusting unverified data.
fn load_resume(file_id: &FileId, partial: &Path, resume: &Path) -> Option<(FileInfo, Bitfield)> {
    let bytes = fs::read(resume).ok()?;
    let (info, bits) = wire::decode_resume(&bytes).ok()?;
    if info.file_id != *file_id || fs::metadata(partial).ok()?.len() != info.size {
        return None;
    }
    let bits = Bitfield::from_bytes(bits, info.chunk_count())?;
    Some((info, bits))
}

/// Hashes the chunks of the partial file that `bits` does not mark (a run killed between
/// two saves of its state leaves verified chunks on disk that the state does not claim) and
/// marks those that match the manifest, the same check a received chunk passes. The
/// matches are made durable (fdatasync: they may still be only in the page cache of the
/// killed run) before the resume state that records them is written. Returns how many were
/// recovered.
fn reverify_unrecorded(
    info: &FileInfo,
    bits: &mut Bitfield,
    partial: &Path,
    resume: &Path,
) -> Result<u64, GetError> {
    let unmarked: Vec<u32> = (0..info.chunk_count()).filter(|&i| !bits.get(i)).collect();
    if unmarked.is_empty() {
        return Ok(0);
    }
    let found = crate::storage::reverify_chunks(partial, info, &unmarked)
        .map_err(|e| GetError::io(partial, e))?;
    if found.is_empty() {
        return Ok(0);
    }
    File::open(partial).and_then(|f| f.sync_data()).map_err(|e| GetError::io(partial, e))?;
    for &i in &found {
        bits.set(i);
    }
    write_atomic(resume, &wire::encode_resume(info, bits.as_bytes()))
        .map_err(|e| GetError::io(resume, e))?;
    Ok(found.len() as u64)
}

/// The node IDs peers proved, by address: a pinned `NODE_ID@HOST:PORT` from the start,
/// else the first handshake's (trust on first use within a transfer), so every later
/// connection to that address must reach the same node.
type Pins = Mutex<std::collections::HashMap<SocketAddr, NodeId>>;

fn pins_of(peers: &[PeerAddr]) -> Pins {
    Mutex::new(peers.iter().filter_map(|p| Some((p.addr, p.node_id?))).collect())
}

/// How a download reaches its peers: `get --transport`, and for the providers its node
/// found in the DHT, the transports their records advertise (with their node IDs), and the
/// node's DHT to signal WebRTC sessions through.
#[derive(Clone, Default)]
pub(super) struct Reach {
    pub(super) choice: TransportChoice,
    /// Providers found in the DHT: address → (node ID, transports).
    pub(super) found: Arc<std::collections::HashMap<SocketAddr, (NodeId, Transports)>>,
    /// The node's DHT (shard 0), if it runs one.
    pub(super) dht: Option<Sender<DhtControl>>,
    /// STUN servers a signaled WebRTC connection asks for its server-reflexive candidate.
    pub(super) stun: Arc<[SocketAddr]>,
    /// The TURN server a signaled WebRTC connection allocates its relayed candidate on.
    pub(super) turn: Option<Arc<super::TurnServer>>,
}

impl Reach {
    /// Whether a failed connect is worth trying again although it was the first: a WebRTC
    /// data channel that did not open in time (`TimedOut`) is a busy seeder — a flash crowd
    /// of offers on its shards — not a wrong address. A plain TCP connect timeout is not
    /// retried here: its SYNs were already retried by the kernel for the whole timeout,
    /// and an unreachable address should fail in one.
    fn set_up_timed_out(&self, e: &GetError) -> bool {
        self.choice != TransportChoice::Tcp
            && matches!(e, GetError::Connect { source, .. } if source.kind() == io::ErrorKind::TimedOut)
    }
}

/// A pause of `base` to twice `base`, chosen at random, so that connections that failed
/// together (a flash crowd) do not all come back at the same instant.
fn jittered(base: Duration) -> Duration {
    base.mul_f64(1.0 + clock::random::<f64>())
}

/// Connects over the chosen transport and runs the handshake; the peer must be the node
/// pinned for its address. `tcp`: TCP only. `webrtc`: a data channel, signaled through
/// the DHT to a provider whose record offers WebRTC, else (a `--peer` address) straight
/// to the seeder's WebRTC address. `auto`: TCP first, WebRTC when TCP cannot connect (or
/// at once for a provider whose record offers no TCP).
async fn connect(
    peer: SocketAddr,
    sec: &NodeSecurity,
    pins: &Pins,
    counters: &Mutex<DownloadCounters>,
    timeout: Duration,
    reach: &Reach,
) -> Result<Conn, GetError> {
    let found = reach.found.get(&peer).copied();
    let webrtc = || async {
        match (found, &reach.dht) {
            (Some((id, t)), Some(dht)) if t.webrtc => {
                let signaling = (dht, &*reach.stun, reach.turn.as_deref());
                connect_rtc_dht(peer, id, signaling, sec, pins, counters, timeout).await
            }
            (Some(_), _) => Err(GetError::Connect {
                peer,
                source: io::Error::new(
                    io::ErrorKind::Unsupported,
                    "its provider record offers no WebRTC",
                ),
            }),
            (None, _) => connect_rtc(peer, sec, pins, counters, timeout).await,
        }
    };
    match reach.choice {
        TransportChoice::Tcp => connect_tcp(peer, sec, pins, counters, timeout).await,
        TransportChoice::Webrtc => webrtc().await,
        TransportChoice::Auto if found.is_some_and(|(_, t)| !t.tcp && t.webrtc) => webrtc().await,
        TransportChoice::Auto => match connect_tcp(peer, sec, pins, counters, timeout).await {
            Err(GetError::Connect { .. }) => webrtc().await,
            other => other,
        },
    }
}

/// Opens a WebRTC data channel to the seeder endpoint at `peer` (waiting while its shard
/// answers "busy" and admits others, `webrtc::connect`) and runs the handshake in it.
async fn connect_rtc(
    peer: SocketAddr,
    sec: &NodeSecurity,
    pins: &Pins,
    counters: &Mutex<DownloadCounters>,
    timeout: Duration,
) -> Result<Conn, GetError> {
    let any: SocketAddr = match peer {
        SocketAddr::V4(_) => (std::net::Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = super::sys::webrtc_socket(any, false, Some(peer))
        .map_err(|source| GetError::Connect { peer, source })?;
    let open = async {
        webrtc::connect(socket, peer, timeout)
            .await
            .map_err(|source| GetError::Connect { peer, source })
    };
    rtc_handshake(peer, open, sec, pins, counters, timeout).await
}

/// Opens a WebRTC data channel to node `id` (a provider found at `peer`), the offer and
/// answer sealed and signed end to end and carried by the node's DHT relays
/// (`crypto::signal`), each side offering its host candidate, with STUN servers its
/// server-reflexive one and with a TURN server its relayed one; then runs the handshake in
/// it, pinned to `id`.
async fn connect_rtc_dht(
    peer: SocketAddr,
    id: NodeId,
    (dht, stun, turn): (&Sender<DhtControl>, &[SocketAddr], Option<&super::TurnServer>),
    sec: &NodeSecurity,
    pins: &Pins,
    counters: &Mutex<DownloadCounters>,
    timeout: Duration,
) -> Result<Conn, GetError> {
    let fail = |source: io::Error| GetError::Connect { peer, source };
    // Our candidate: the address our traffic toward the provider leaves from.
    let ip = webrtc::route_ip(peer)
        .ok_or_else(|| fail(io::Error::other("no route toward the provider")))?;
    let socket = super::sys::webrtc_socket(SocketAddr::new(ip, 0), false, None).map_err(fail)?;
    let session = sec.session();
    let signal = |sdp: String, candidates: Vec<SignalCandidate>| async move {
        let mut random = [0u8; 48];
        clock::fill_random(&mut random);
        let (init, hello) = SignalInitiator::start(session, id, clock::now_unix(), random);
        let (relay, reply) = ask_dht(dht, id, None, hello).await?;
        let refused = |e: SignalError| io::Error::new(io::ErrorKind::PermissionDenied, e);
        let mut offerer = init.handle_reply(&reply, clock::now_unix()).map_err(refused)?;
        let offer = offerer
            .seal_offer(&SignalPayload { candidates, sdp, browser: None })
            .ok_or_else(|| io::Error::other("offer too large to signal"))?;
        let (_, answer) = ask_dht(dht, id, Some(relay), offer).await?;
        let answer = offerer.open_answer(&answer).map_err(refused)?;
        Ok((answer.sdp, answer.candidates))
    };
    let open = async {
        webrtc::connect_signaled(socket, (stun, turn), timeout, signal).await.map_err(fail)
    };
    rtc_handshake(peer, open, sec, pins, counters, timeout).await
}

/// Asks the node's DHT to carry a signaling message to node `target`.
pub(super) async fn ask_dht(
    dht: &Sender<DhtControl>,
    target: NodeId,
    relay: Option<SocketAddr>,
    message: Vec<u8>,
) -> io::Result<(SocketAddr, Vec<u8>)> {
    let (reply, answer) = flume::bounded(1);
    dht.send(DhtControl::Signal { target, relay, message, reply })
        .map_err(|_| io::Error::other("the node's DHT is gone"))?;
    answer
        .recv_async()
        .await
        .map_err(|_| io::Error::other("the node's DHT is gone"))?
        .map_err(|e| io::Error::new(io::ErrorKind::NotConnected, e.to_string()))
}

/// Waits for `open` (a data channel: it has deadlines of its own, which follow the
/// seeder's admission of the set-up, `webrtc::connect`) and runs the handshake in it,
/// within the timeout once the channel is open.
async fn rtc_handshake(
    peer: SocketAddr,
    open: impl Future<Output = Result<RtcStream, GetError>>,
    sec: &NodeSecurity,
    pins: &Pins,
    counters: &Mutex<DownloadCounters>,
    timeout: Duration,
) -> Result<Conn, GetError> {
    let expected =
        pins.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(&peer).copied();
    let stream = open.await?;
    let handshake = async {
        let side = TcpSide::Client { expected };
        // Bound to the channel's DTLS, whose encryption then replaces our records.
        let binding =
            stream.channel_binding().map_err(|e| GetError::Connect { peer, source: e })?;
        StreamConn::establish(stream, sec, side, RESPONSE_BODY_MAX_BYTES, Some(binding))
            .await
            .map_err(|e| handshake_error(peer, e, counters, timeout))
    };
    let deadline = async {
        glommio::timer::sleep(timeout).await;
        Err(GetError::Timeout { peer, after: timeout })
    };
    let conn = Conn::Rtc(future::or(handshake, deadline).await?);
    check_pin(peer, conn, pins)
}

/// Counts a failed handshake and turns it into the download's error.
fn handshake_error(
    peer: SocketAddr,
    e: HandshakeFailure,
    counters: &Mutex<DownloadCounters>,
    timeout: Duration,
) -> GetError {
    let mut c = counters.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    match e.blame() {
        Blame::Peer => c.handshakes_failed_peer += 1,
        Blame::Local => c.handshakes_failed_local += 1,
    }
    match e {
        HandshakeFailure::Io(io) if io.kind() == io::ErrorKind::TimedOut => {
            GetError::Timeout { peer, after: timeout }
        }
        other if other.is_wrong_node() => GetError::WrongNode { peer, what: other.to_string() },
        source => GetError::Handshake { peer, source },
    }
}

/// The first handshake with an address pins its node for the rest of the transfer.
fn check_pin(peer: SocketAddr, conn: Conn, pins: &Pins) -> Result<Conn, GetError> {
    let mut pins = pins.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let pinned = *pins.entry(peer).or_insert(conn.peer_id());
    if pinned != conn.peer_id() {
        return Err(GetError::WrongNode {
            peer,
            what: format!("it is node {}, not node {pinned} as before", conn.peer_id()),
        });
    }
    Ok(conn)
}

/// Connects over TCP and runs the handshake.
async fn connect_tcp(
    peer: SocketAddr,
    sec: &NodeSecurity,
    pins: &Pins,
    counters: &Mutex<DownloadCounters>,
    timeout: Duration,
) -> Result<Conn, GetError> {
    let s = TcpStream::connect_timeout(peer, timeout)
        .await
        .map_err(|e| GetError::Connect { peer, source: super::glommio_io(e) })?;
    let setup = || -> io::Result<()> {
        s.set_nodelay(true)?;
        s.set_read_timeout(Some(timeout))?;
        s.set_write_timeout(Some(timeout))?;
        Ok(())
    };
    setup().map_err(|e| GetError::Connection { peer, what: e.to_string() })?;
    let lock =
        |p: &Pins| p.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(&peer).copied();
    let expected = lock(pins);
    let side = TcpSide::Client { expected };
    // One deadline for the whole handshake, not only per read: a peer dripping a byte per
    // read timeout must not hold the download (or Ctrl-C's first step) forever. Twice the
    // timeout: a busy seeder may leave the connection in its accept queue for up to one
    // (reads time out after that), then gives its handshake one from accept.
    let handshake =
        async { Some(TcpConn::establish(s, sec, side, RESPONSE_BODY_MAX_BYTES, None).await) };
    let deadline = async {
        glommio::timer::sleep(2 * timeout).await;
        None
    };
    let raced = future::or(handshake, deadline).await;
    let whole = raced.is_none();
    let established =
        raced.unwrap_or_else(|| Err(HandshakeFailure::Io(io::ErrorKind::TimedOut.into())));
    if let Err(e) = &established {
        let mut c = counters.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        match e.blame() {
            Blame::Peer => c.handshakes_failed_peer += 1,
            Blame::Local => c.handshakes_failed_local += 1,
        }
    }
    let conn = established.map_err(|e| match e {
        HandshakeFailure::Io(io) if io.kind() == io::ErrorKind::TimedOut => {
            GetError::Timeout { peer, after: if whole { 2 * timeout } else { timeout } }
        }
        other if other.is_wrong_node() => GetError::WrongNode { peer, what: other.to_string() },
        source => GetError::Handshake { peer, source },
    })?;
    check_pin(peer, Conn::Tcp(conn), pins)
}

/// Asks `peer` for the manifest of `file_id` and checks it against the ID.
async fn fetch_manifest(
    peer: SocketAddr,
    file_id: FileId,
    sec: &NodeSecurity,
    pins: &Pins,
    counters: &Mutex<DownloadCounters>,
    timeout: Duration,
    reach: &Reach,
) -> Result<FileInfo, ManifestFailure> {
    let failed = |error| ManifestFailure { error, dropped: false };
    let mut conn = connect(peer, sec, pins, counters, timeout, reach).await.map_err(failed)?;
    let dropped = |e: io::Error| ManifestFailure {
        error: GetError::Connection { peer, what: e.to_string() },
        dropped: true,
    };
    conn.push_frame(Encoder::default().request(&Request::FileInfo { file_id }));
    // A write that fails (EPIPE, a reset) means the peer closed before reading the request.
    conn.flush().await.map_err(dropped)?;
    match conn.recv().await {
        Ok(Deframed::Control) => {}
        // The deframer yields a payload only when told one follows; nothing told it.
        Ok(Deframed::Payload(_)) => {
            return Err(failed(GetError::Protocol { peer, what: "unexpected payload".into() }))
        }
        Err(RecvError::Closed) => {
            let what = "closed before answering".into();
            return Err(failed(GetError::Connection { peer, what }));
        }
        Err(RecvError::Io(e)) if e.kind() == io::ErrorKind::ConnectionReset => {
            return Err(dropped(e))
        }
        Err(e) => return Err(failed(GetError::recv(peer, e, timeout))),
    }
    let info = manifest_from(file_id, conn.body())
        .map_err(|e| failed(GetError::peer(peer, Some(file_id), e)))?;
    if conn.transport() == Transport::Webrtc {
        park_warm(pins as *const Pins as usize, peer, conn);
    }
    Ok(info)
}

thread_local! {
    /// Data channels whose manifest request is answered, kept on their shard for the same
    /// download's first data connection to that peer: a download then sets up one session
    /// instead of two (ICE, DTLS and SCTP cost tens of milliseconds; a TCP connection costs
    /// a loopback round trip and the handshake, and stays one per phase). Keyed by the download (the address of the `Pins` both of its phases
    /// share, alive until it ends, so another download, with other pins, never gets one)
    /// and the peer.
    static WARM: RefCell<Vec<(usize, SocketAddr, Conn)>> = const { RefCell::new(Vec::new()) };
}

/// How long an unclaimed warm connection is kept before it is closed.
const WARM_CONN_HOLD: Duration = Duration::from_secs(2);

/// Keeps `conn` to `peer` for `download`'s data connections (at most `WARM_CONN_HOLD`).
fn park_warm(download: usize, peer: SocketAddr, conn: Conn) {
    WARM.with(|w| w.borrow_mut().push((download, peer, conn)));
    glommio::spawn_local(async move {
        glommio::timer::sleep(WARM_CONN_HOLD).await;
        drop(take_warm(download, peer));
    })
    .detach();
}

/// `download`'s warm connection to `peer`, if one is kept on this shard.
fn take_warm(download: usize, peer: SocketAddr) -> Option<Conn> {
    WARM.with(|w| {
        let mut w = w.borrow_mut();
        let i = w.iter().position(|(d, p, _)| *d == download && *p == peer)?;
        Some(w.swap_remove(i).2)
    })
}

/// Why a manifest could not be fetched from one peer, and whether the peer dropped the
/// connection before it could have read the request: reset, or closed under our write (a
/// seeder that gave up on our handshake while its machine was saturated, or restarted).
/// Only such a drop is asked again; a close after the request was read (a request it
/// refused), a refused or broken handshake and silence are final.
struct ManifestFailure {
    error: GetError,
    dropped: bool,
}

/// Creates the partial file at full size (so a full disk shows now, not at 90%).
async fn create_partial(partial: &Path, size: u64) -> Result<(), GetError> {
    let f = BufferedFile::create(partial).await.map_err(|e| GetError::glommio(partial, e))?;
    if size > 0 {
        f.pre_allocate(size, false).await.map_err(|e| GetError::glommio(partial, e))?;
    }
    f.close().await.map_err(|e| GetError::glommio(partial, e))
}

/// The least a connection with nothing in flight sleeps when its deadline is already past
/// (a deadline nobody moves on must not spin the shard).
const IDLE_FLOOR: Duration = Duration::from_millis(5);

/// Wakes a download's connections (and web seeds) that wait with nothing in flight, on any
/// shard, when something they could act on changed: the scheduler after another
/// connection's drive moved it (`Scheduler::generation`: a chunk verified, chunks back in
/// the pool from a peer that left, stalled or sent a corrupt chunk), the resume state saved
/// (room under `unsaved_max_bytes`), the stream's writer moving its window on, the download
/// stopping. Without a change a waiting connection sleeps until its own deadline (the
/// session's and the scheduler's `poll_timeout`); nothing polls.
#[derive(Default)]
struct IdleWaiters {
    /// Moves with every change. A connection reads it before it looks at the shared state
    /// and registers only if it did not move since, so a change between the look and the
    /// registration is never missed.
    changes: AtomicU64,
    /// The wake-up channels (bounded to one message) of the connections waiting now, by
    /// [`IdleWake::id`].
    waiting: Mutex<Vec<(u64, Sender<()>)>>,
    /// The next [`IdleWake::id`].
    next_id: AtomicU64,
}

impl std::fmt::Debug for IdleWaiters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdleWaiters").field("changes", &self.changes).finish_non_exhaustive()
    }
}

/// What wakes one waiting connection (see [`IdleWaiters`]).
struct IdleWake {
    id: u64,
    tx: Sender<()>,
    rx: Receiver<()>,
}

impl IdleWaiters {
    /// The current change count (read before looking at the shared state).
    fn seen(&self) -> u64 {
        self.changes.load(Ordering::SeqCst)
    }

    /// Something changed: wakes every waiting connection. Returns the count before it.
    fn changed(&self) -> u64 {
        let before = self.changes.fetch_add(1, Ordering::SeqCst);
        let waiting = std::mem::take(
            &mut *self.waiting.lock().unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        for (_, w) in waiting {
            let _ = w.try_send(());
        }
        before
    }

    /// A wake-up channel for one connection.
    fn waker(&self) -> IdleWake {
        let (tx, rx) = flume::bounded(1);
        IdleWake { id: self.next_id.fetch_add(1, Ordering::Relaxed), tx, rx }
    }

    /// Registers `wake` unless something changed since `seen`; `false`: look again now.
    fn register(&self, seen: u64, wake: &IdleWake) -> bool {
        let mut waiting = self.waiting.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if self.changes.load(Ordering::SeqCst) != seen {
            return false;
        }
        if !waiting.iter().any(|(id, _)| *id == wake.id) {
            waiting.push((wake.id, wake.tx.clone()));
        }
        true
    }
}
/// Tries to connect to a peer before giving up on it (it may not listen yet).
const CONNECT_TRIES: u32 = 4;
/// Times a connection that dropped is connected again without the peer delivering a
/// verified chunk in between; each success resets the count. With the pauses below, a
/// peer that is gone for good is given up after about 12 s of trying.
const RECONNECTS_MAX: u32 = 6;
/// Pause before the first reconnection; it doubles with each one, up to
/// `RECONNECT_BACKOFF_MAX`.
const RECONNECT_BACKOFF_MIN: Duration = Duration::from_millis(250);
/// Longest pause between reconnections.
const RECONNECT_BACKOFF_MAX: Duration = Duration::from_secs(4);

/// One connection of a download: which peer, and its id in the scheduler. Several
/// connections to one peer are several scheduler peers (each with its own window).
#[derive(Debug, Clone, Copy)]
struct ConnSlot {
    id: ConnId,
    addr: SocketAddr,
}

/// Corrupt chunks per node over a whole download, whatever address or connection brought
/// them: the scheduler counts per connection, but one node reached at several addresses
/// (a provider record and a `--peer`, IPv4 and IPv6, `--connections` above the peer
/// count) is one peer, and `failures_to_ban` corrupt chunks from it in all ban it
/// everywhere. A connection that proves a banned node ends (`GetError::NodeBanned`).
#[derive(Debug)]
struct NodeStrikes {
    failures_to_ban: u32,
    /// Corrupt chunks by node ID.
    strikes: Mutex<std::collections::HashMap<NodeId, u32>>,
    /// Nodes banned so far; lets the per-iteration check skip the lock while none is.
    banned: AtomicU64,
}

impl NodeStrikes {
    fn new(failures_to_ban: u32) -> Self {
        Self { failures_to_ban, strikes: Mutex::default(), banned: AtomicU64::new(0) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<NodeId, u32>> {
        self.strikes.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Counts a corrupt chunk from `node`; true if this one banned it.
    fn strike(&self, node: NodeId) -> bool {
        let mut strikes = self.lock();
        let n = strikes.entry(node).or_insert(0);
        *n += 1;
        let now_banned = *n == self.failures_to_ban;
        if now_banned {
            self.banned.fetch_add(1, Ordering::Release);
        }
        now_banned
    }

    /// Whether `node` is banned from the download.
    fn is_banned(&self, node: NodeId) -> bool {
        self.banned.load(Ordering::Acquire) > 0
            && self.lock().get(&node).is_some_and(|&n| n >= self.failures_to_ban)
    }
}

/// One web seed of a download: its URL and its id in the scheduler.
#[derive(Debug, Clone)]
struct WebSlot {
    id: ConnId,
    url: String,
}

/// State shared by the shards of one download. The scheduler is the one decision point of
/// the transfer: connections lock it for a few microseconds per chunk (see ARCHITECTURE.md).
struct FetchCtx {
    info: Arc<FileInfo>,
    security: Arc<NodeSecurity>,
    pins: Arc<Pins>,
    partial: PathBuf,
    conns: Vec<ConnSlot>,
    /// The web seeds, scheduler peers numbered after the connections.
    web: Vec<WebSlot>,
    sched: Mutex<Scheduler>,
    /// Chunks verified and written (what partial seeding serves).
    have: Arc<SharedBitfield>,
    /// Chunks some connection has started writing (so an endgame duplicate is not written
    /// or counted twice).
    claimed: SharedBitfield,
    stop: AtomicBool,
    /// Dropped when the download stops ([`FetchCtx::stop_all`]): every wait on
    /// `stopped` ends at once (a read blocked on a slow peer, an idle connection).
    stop_tx: Mutex<Option<Sender<()>>>,
    stopped: Receiver<()>,
    /// Connections waiting with nothing in flight, and what wakes them.
    idle: Arc<IdleWaiters>,
    /// Verified bytes after which the coordinator makes them durable.
    save_every_bytes: u64,
    /// Download limit shared by every shard (charged when a chunk is requested).
    throttle: Option<Throttle>,
    /// Verified bytes not yet durable. Connections stop asking for chunks while this is at
    /// `unsaved_max_bytes`, so a crash never loses more than that plus the requests in flight.
    unsaved_bytes: AtomicU64,
    /// Verified chunks handed to the writer and not yet written. While there are any, the
    /// download is making progress: a shard busy writing (a 16 MiB chunk on a loaded
    /// machine or a slow disk) is not a stuck shard.
    writes_in_flight: AtomicU64,
    unsaved_max_bytes: u64,
    /// Milliseconds since `epoch` of the last verified chunk (for giving up on idle peers).
    last_progress_ms: AtomicU64,
    epoch: Instant,
    /// Request-to-verified latency of every chunk, merged from the connections at their end.
    latency: Mutex<Histogram<u64>>,
    /// The node's download counters (handshake failures, bans, stalls, corrupt chunks).
    counters: Arc<Mutex<DownloadCounters>>,
    /// `NodeConfig::peer_timeout_ms`: connect, handshake and read deadline.
    peer_timeout: Duration,
    /// How connections reach the peers (`get --transport`, DHT providers' transports).
    reach: Reach,
    /// Peers by who they are, not where: corrupt chunks counted per node ID over all its
    /// connections and addresses, and the nodes banned for them.
    nodes: NodeStrikes,
    /// Each peer's last connection: its transport and, over WebRTC, the ICE pair's types.
    used: Mutex<std::collections::HashMap<SocketAddr, (Transport, Option<String>)>>,
    /// `NodeConfig::resume_save_interval_ms`: longest time between two resume saves.
    save_interval: Duration,
    /// `get -o -`: verified chunks go to the coordinator (and out in file order), not to a
    /// partial file; the scheduler requests only inside the stream's reorder window.
    stream: Option<Arc<StreamShared>>,
}

/// What the shards of a streaming download and its stdout writer share.
#[derive(Debug)]
struct StreamShared {
    /// Chunks written out so far: the stream's position, in chunks.
    written: std::sync::atomic::AtomicU32,
    /// The reorder window, in chunks (`config::stream_window_chunks`).
    window: u32,
    /// Chunks handed to the writer. While it has not written them all (a slow or paused
    /// reader), the connections wait for it, which is not the swarm starving.
    sent: std::sync::atomic::AtomicU32,
    /// The writer gave up (the reader went away, or another write error).
    failed: AtomicBool,
    /// The download's idle connections, woken when the window moves on.
    idle: Arc<IdleWaiters>,
}

impl StreamShared {
    /// Chunks below this index may be requested.
    fn limit(&self) -> u32 {
        self.written.load(Ordering::Acquire).saturating_add(self.window)
    }

    /// The writer holds chunks it has not written yet.
    fn busy(&self) -> bool {
        self.sent.load(Ordering::Acquire) > self.written.load(Ordering::Acquire)
    }
}

impl FetchCtx {
    fn sched(&self) -> std::sync::MutexGuard<'_, Scheduler> {
        // A panic while holding the lock is a bug that already aborts the download.
        self.sched.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Stops the download: the flag every loop checks, and the wake-up of every wait.
    fn stop_all(&self) {
        self.stop.store(true, Ordering::SeqCst);
        self.stop_tx.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
        self.idle.changed();
    }

    /// Sleeps until `until` (never, if `None`), a change since `seen` (`IdleWaiters`) or
    /// the stop; returns at once if a change already came.
    async fn wait_idle(&self, seen: u64, wake: &IdleWake, until: Option<Instant>) {
        if !self.idle.register(seen, wake) {
            return;
        }
        let sleep = async {
            match until {
                Some(t) => {
                    let left = t.saturating_duration_since(clock::now()).max(IDLE_FLOOR);
                    glommio::timer::sleep(left).await;
                }
                None => future::pending().await,
            }
        };
        let woken = async {
            let _ = wake.rx.recv_async().await;
        };
        let stopped = async {
            let _ = self.stopped.recv_async().await;
        };
        future::or(future::or(woken, stopped), sleep).await;
    }
}

enum ShardMsg {
    /// A chunk verified and written to the partial file, or (streaming) verified and handed
    /// over with its bytes.
    Verified {
        index: u32,
        len: u64,
        bytes: Option<Vec<u8>>,
    },
    ConnDone {
        conn: usize,
        result: Result<(), GetError>,
    },
    /// The shard (its index) ended: every connection of it ended and its writes completed.
    ShardDone(usize, Result<(), GetError>),
}

async fn fetch_shard(ctx: Arc<FetchCtx>, shard: ShardId, shards: usize, tx: Sender<ShardMsg>) {
    let writer = if ctx.stream.is_some() {
        Ok(ChunkWriter::to_coordinator())
    } else {
        ChunkWriter::open(&ctx.partial).await
    };
    let writer = match writer {
        Ok(w) => Rc::new(w),
        Err(e) => {
            ctx.stop_all();
            let _ = tx.send(ShardMsg::ShardDone(shard.0, Err(e)));
            return;
        }
    };
    let tasks: Vec<_> = (0..ctx.conns.len())
        .filter(|i| i % shards == shard.0)
        .map(|i| {
            let (ctx, writer, tx) = (ctx.clone(), writer.clone(), tx.clone());
            glommio::spawn_local(async move {
                // The session takes its connection out of the scheduler when it ends.
                let result = run_conn(&ctx, ctx.conns[i], &writer, &tx).await;
                let _ = tx.send(ShardMsg::ConnDone { conn: i, result });
            })
        })
        .collect();
    let web: Vec<_> = (0..ctx.web.len())
        .filter(|j| (ctx.conns.len() + j) % shards == shard.0)
        .map(|j| {
            let (ctx, writer, tx) = (ctx.clone(), writer.clone(), tx.clone());
            glommio::spawn_local(async move {
                let w = ctx.web[j].clone();
                let result = web_loop(&ctx, &w, &writer, &tx).await;
                if let Err(e @ GetError::WebSeed { .. }) = &result {
                    if !ctx.sched().is_complete() {
                        note!("furymesh get: {e}; going on with the other sources");
                    }
                }
                let _ = tx.send(ShardMsg::ConnDone { conn: ctx.conns.len() + j, result });
            })
        })
        .collect();
    for t in tasks.into_iter().chain(web) {
        t.await;
    }
    let _ = tx.send(ShardMsg::ShardDone(shard.0, writer.finish().await));
}

/// A set-up that timed out over WebRTC (a busy seeder, [`Reach::set_up_timed_out`]) is
/// tried `CONNECT_TRIES` times even when `tries` is 1. The download's manifest connection
/// to `peer`, if it is kept on this shard (`take_warm`), is taken instead.
async fn connect_retrying(ctx: &FetchCtx, peer: SocketAddr, tries: u32) -> Result<Conn, GetError> {
    if let Some(conn) = take_warm(Arc::as_ptr(&ctx.pins) as usize, peer) {
        return Ok(conn);
    }
    let mut wait = Duration::from_millis(250);
    let mut attempt = 1;
    loop {
        let conn =
            connect(peer, &ctx.security, &ctx.pins, &ctx.counters, ctx.peer_timeout, &ctx.reach)
                .await;
        let again = match &conn {
            Err(e @ GetError::Connect { .. }) => {
                attempt < tries || (attempt < CONNECT_TRIES && ctx.reach.set_up_timed_out(e))
            }
            _ => false,
        };
        if !again {
            return conn;
        }
        glommio::timer::sleep(jittered(wait)).await;
        wait *= 2;
        attempt += 1;
    }
}

/// Drives one connection until the download completes, the peer fails or is banned, or
/// the download stops.
async fn run_conn(
    ctx: &Arc<FetchCtx>,
    c: ConnSlot,
    writer: &ChunkWriter,
    tx: &Sender<ShardMsg>,
) -> Result<(), GetError> {
    let mut latency = new_latency_histogram();
    let result = conn_loop(ctx, c, writer, tx, &mut latency).await;
    if let Ok(mut all) = ctx.latency.lock() {
        let _ = all.add(&latency);
    }
    result
}

/// How often the manifest step, left behind by an interrupted caller, looks whether to
/// stop (nobody waits for it: slower polling only saves wake-ups of busy processes).
const ABORT_POLL: Duration = Duration::from_millis(250);
/// How often a thread that waits for part of a `get` (the manifest step's answer, the
/// stream writer's end) looks at the caller's interrupt flag. Only while a `get` runs.
const INTERRUPT_POLL: Duration = Duration::from_millis(50);
/// How often a connection in the middle of a record reports the bytes that arrived as
/// progress (well below the scheduler's stall timeout and `PEER_TIMEOUT`). Abandoning the
/// read to do so loses nothing: glommio reads on readiness, and the deframer keeps what was
/// read.
const PROGRESS_TICK: Duration = Duration::from_secs(1);

/// Runs `read` unless the download stops first (Ctrl-C, or another connection's fatal
/// error): a slow or dripping peer must not keep the whole download from ending. A read
/// abandoned half-way leaves the connection unusable, which is fine: it ends here. The
/// stop wakes the wait (`FetchCtx::stopped`); nothing polls the flag.
async fn until_stopped<T>(ctx: &FetchCtx, read: impl Future<Output = T>) -> Result<T, GetError> {
    let stopped = async {
        let _ = ctx.stopped.recv_async().await;
        None
    };
    future::or(async { Some(read.await) }, stopped).await.ok_or(GetError::Interrupted)
}

/// Runs `work` unless `flag` becomes true first (checked `every`, so the wait always has a
/// timer armed): `None` then.
async fn until_flag<T>(
    flag: &AtomicBool,
    every: Duration,
    work: impl Future<Output = T>,
) -> Option<T> {
    let stopped = async {
        super::wait_until(every, || flag.load(Ordering::Relaxed)).await;
        None
    };
    future::or(async { Some(work.await) }, stopped).await
}

/// Request-to-verified latency of chunks, in microseconds (1 µs to 10 min, 3 digits).
fn new_latency_histogram() -> Histogram<u64> {
    // The bounds are constants that hdrhistogram accepts.
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds")
}

async fn conn_loop(
    ctx: &Arc<FetchCtx>,
    c: ConnSlot,
    writer: &ChunkWriter,
    tx: &Sender<ShardMsg>,
    latency: &mut Histogram<u64>,
) -> Result<(), GetError> {
    let peer = c.addr;
    let tries = if ctx.conns.iter().any(|o| o.addr != peer) { CONNECT_TRIES } else { 1 };
    let (mut unknown, mut wait) = (0, Duration::from_millis(250));
    // Reconnections since this peer last delivered a verified chunk, and the pause before
    // the next one.
    let (mut reconnects, mut backoff) = (0, RECONNECT_BACKOFF_MIN);
    let mut first = true;
    loop {
        // The first connection to a peer that is the only one fails fast on a refused
        // connect (a wrong address); any later one waits for a restarting seeder.
        let connecting = async {
            if first {
                connect_retrying(ctx, peer, tries).await
            } else {
                let (sec, pins, counters) = (&ctx.security, &ctx.pins, &ctx.counters);
                connect(peer, sec, pins, counters, ctx.peer_timeout, &ctx.reach).await
            }
        };
        // The download may complete (the other connections fetched the rest) or stop while
        // this one still sets up: it ends then, instead of finishing a set-up for nothing
        // (which the download would wait for).
        let connected = until_stopped(ctx, connecting).await?;
        let refused_counts = !first;
        first = false;
        let result = match connected {
            // The node was banned at another address or over another connection.
            Ok(conn) if ctx.nodes.is_banned(conn.peer_id()) => {
                Err(GetError::NodeBanned { peer, node: conn.peer_id() })
            }
            Ok(mut conn) => {
                ctx.used
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .insert(peer, (conn.transport(), conn.ice_pair()));
                let verified = || ctx.sched().peer_stats(c.id).map_or(0, |p| p.chunks_verified);
                let before = verified();
                let mut session =
                    ClientSession::new(ctx.info.clone(), c.id, client_config(ctx), clock::now());
                let result = pump(ctx, &mut conn, &mut session, writer, tx, latency).await;
                session.detach(clock::now(), &mut ctx.sched());
                // Its requests went back to the pool: the idle connections look at them.
                ctx.idle.changed();
                if verified() > before {
                    (reconnects, backoff) = (0, RECONNECT_BACKOFF_MIN);
                }
                result
            }
            Err(e) => Err(e),
        };
        match result {
            // A peer that does not have the file *yet* (another downloader whose node
            // listens before its own download has the manifest): like a peer that does
            // not listen yet, asked again a few times while other peers serve.
            Err(GetError::UnknownFile { .. }) if unknown + 1 < tries => {
                unknown += 1;
                glommio::timer::sleep(wait).await;
                wait *= 2;
            }
            // The connection dropped (the seeder restarted, a reset, a stall) or could not
            // be made again yet: connect again while the download goes on, with a growing
            // pause, as long as the peer keeps delivering in between. What a peer did
            // wrong (refusals, protocol errors, bad chunks, bans) ends it for good.
            Err(e) if dropped(&e, refused_counts) => {
                if reconnects >= RECONNECTS_MAX || ctx.sched().is_complete() {
                    return Err(e);
                }
                reconnects += 1;
                until_stopped(ctx, glommio::timer::sleep(jittered(backoff))).await?;
                backoff = (backoff * 2).min(RECONNECT_BACKOFF_MAX);
            }
            other => return other,
        }
    }
}

/// Whether `e` ended a connection the way an overloaded, restarting or briefly unreachable
/// peer does — worth connecting again — rather than by anything the peer did wrong. A
/// refused connect counts only when `refused_counts` (the peer was reached before: a first
/// connect that is refused is a wrong address, reported at once).
fn dropped(e: &GetError, refused_counts: bool) -> bool {
    match e {
        GetError::Connect { .. } => refused_counts,
        // Broken during the handshake or later (closed, reset, silent).
        GetError::Connection { .. } | GetError::Timeout { .. } => true,
        _ => false,
    }
}

/// The session's knobs: a peer that sends nothing useful for the node's peer timeout is
/// given up on.
fn client_config(ctx: &FetchCtx) -> ClientConfig {
    ClientConfig { starved_after: ctx.peer_timeout, ..ClientConfig::default() }
}

/// Moves one client session's bytes: drives it with the scheduler, writes its requests,
/// hands verified chunks to the writer, reads the peer's records into it, and sleeps until
/// its deadline when it has nothing in flight. Every protocol decision is the session's.
async fn pump(
    ctx: &Arc<FetchCtx>,
    conn: &mut Conn,
    session: &mut ClientSession,
    writer: &ChunkWriter,
    tx: &Sender<ShardMsg>,
    latency: &mut Histogram<u64>,
) -> Result<(), GetError> {
    let peer = session_peer(ctx, session);
    let node = conn.peer_id();
    let file_id = ctx.info.file_id;
    let io_err = |e: io::Error| GetError::Connection { peer, what: e.to_string() };
    // What wakes this connection while it waits with nothing in flight.
    let wake = ctx.idle.waker();
    loop {
        if ctx.stop.load(Ordering::Relaxed) {
            return Err(GetError::Interrupted);
        }
        if ctx.nodes.is_banned(node) {
            // Banned over another connection: what is in flight here is dropped unread.
            return Err(GetError::NodeBanned { peer, node });
        }
        // Read before the scheduler is: see `IdleWaiters`.
        let mut seen = ctx.idle.seen();
        let now = clock::now();
        let moved = {
            let mut sched = ctx.sched();
            let generation = sched.generation();
            let mut last_progress =
                ctx.epoch + Duration::from_millis(ctx.last_progress_ms.load(Ordering::Relaxed));
            if let Some(stream) = &ctx.stream {
                sched.set_request_limit(Some(stream.limit()));
                if stream.busy() {
                    // Waiting for the reader of stdout, not for the swarm.
                    last_progress = now;
                }
            }
            let mut swarm = Swarm {
                scheduler: &mut sched,
                may_request: ctx.unsaved_bytes.load(Ordering::Acquire) < ctx.unsaved_max_bytes,
                throttle: ctx.throttle.as_ref(),
                last_progress,
            };
            session.drive(now, &mut swarm);
            sched.generation() != generation
        };
        if moved && ctx.idle.changed() == seen {
            // This connection's own change is not news to it.
            seen += 1;
        }
        while let Some(ev) = session.poll_event() {
            match ev {
                ClientEvent::Verified { chunk_index, offset, bytes, latency: l } => {
                    // Endgame duplicates are verified but written (and counted) once.
                    if !ctx.claimed.test_and_set(chunk_index) {
                        writer.start(ctx.clone(), tx.clone(), chunk_index, offset, bytes).await?;
                    }
                    ctx.last_progress_ms.store(ctx.now_ms(), Ordering::Relaxed);
                    latency.saturating_record(l.as_micros() as u64);
                }
                ClientEvent::Corrupt { chunk_index } => {
                    let mut c =
                        ctx.counters.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                    c.chunks_corrupt += 1;
                    let banned = ctx.nodes.strike(node);
                    c.peers_banned += u64::from(banned);
                    drop(c);
                    if banned {
                        // The node's other connections end at their next look.
                        ctx.idle.changed();
                        return Err(GetError::HashMismatch { peer, chunk_index });
                    }
                }
                ClientEvent::Done => return Ok(()),
                ClientEvent::Failed(e) => return Err(GetError::peer(peer, Some(file_id), e)),
            }
        }
        while let Some(frame) = session.poll_transmit(now) {
            conn.push_frame(&frame);
        }
        conn.flush().await.map_err(io_err)?;
        if session.in_flight() == 0 {
            // Nothing to read: sleep until the session's deadline (a rate-limited request's
            // release, a bitfield refresh, starvation), the scheduler's (a stall elsewhere,
            // the end of a rest), or a wake-up: chunks back in the pool, room to request,
            // the stop.
            let sched_at = ctx.sched().poll_timeout();
            let until = [session.poll_timeout(), sched_at].into_iter().flatten().min();
            ctx.wait_idle(seen, &wake, until).await;
            continue;
        }
        // Read until a record is whole, but look up every PROGRESS_TICK: bytes that arrived
        // meanwhile (the middle of a big, slowly paced chunk) are progress, so neither the
        // scheduler's stall clock nor starvation fires on a peer that is delivering.
        let before = conn.bytes_received();
        let tick = async {
            glommio::timer::sleep(PROGRESS_TICK).await;
            None
        };
        let received = until_stopped(ctx, future::or(async { Some(conn.recv().await) }, tick));
        let Some(received) = received.await? else {
            if conn.bytes_received() != before {
                session.handle_progress(clock::now());
                ctx.last_progress_ms.store(ctx.now_ms(), Ordering::Relaxed);
            }
            continue;
        };
        match received {
            Ok(Deframed::Control) => {
                session.handle_frame(clock::now(), conn.body());
                if let Some((len, aad)) = session.payload_expected() {
                    conn.expect_payload(len, aad);
                }
            }
            Ok(Deframed::Payload(bytes)) => session.handle_payload(clock::now(), bytes),
            Err(RecvError::Frame(e)) => session.handle_frame_error(clock::now(), e),
            Err(e) => return Err(GetError::recv(peer, e, ctx.peer_timeout)),
        }
    }
}

fn session_peer(ctx: &FetchCtx, session: &ClientSession) -> SocketAddr {
    ctx.conns[session.conn().0 as usize].addr
}

/// Drives one web seed: a source of the scheduler like a connection (a peer that has every
/// chunk, with its own window), whose requests go to the web seed's HTTP thread
/// (`webseed::spawn`) and whose answers come back over a channel, so the shard never
/// blocks on HTTP. Each chunk is hashed against the manifest (on the HTTP thread) before
/// the scheduler hears of it; a corrupt one is never written and counts toward a ban like a
/// peer's. Ends when the download completes or stops, or with `GetError::WebSeed` when the
/// mirror fails or is banned.
async fn web_loop(
    ctx: &Arc<FetchCtx>,
    w: &WebSlot,
    writer: &ChunkWriter,
    tx: &Sender<ShardMsg>,
) -> Result<(), GetError> {
    use super::webseed::{self, WebAnswer, WebRequest};
    let fail = |what: String| GetError::WebSeed { url: w.url.clone(), what };
    let (req_tx, req_rx) = flume::unbounded::<WebRequest>();
    let (ans_tx, ans_rx) = flume::unbounded::<WebAnswer>();
    webseed::spawn(w.url.clone(), ctx.info.clone(), ctx.peer_timeout, req_rx, ans_tx)
        .map_err(|e| fail(format!("cannot start its thread: {e}")))?;
    let n = ctx.info.chunk_count();
    {
        let mut all = Bitfield::new(n);
        (0..n).for_each(|i| all.set(i));
        let mut sched = ctx.sched();
        let now = clock::now();
        sched.handle_peer_added(now, w.id);
        sched.handle_bitfield(now, w.id, &all);
    }
    let mut latency = new_latency_histogram();
    // Chunks handed to the thread and not answered yet, oldest first.
    let mut asked: std::collections::VecDeque<u32> = std::collections::VecDeque::new();
    let mut last_corrupt = None;
    let wake = ctx.idle.waker();
    let result = loop {
        if ctx.stop.load(Ordering::Relaxed) {
            break Err(GetError::Interrupted);
        }
        let mut seen = ctx.idle.seen();
        let now = clock::now();
        let (sched_at, moved) = {
            let mut sched = ctx.sched();
            let generation = sched.generation();
            if let Some(stream) = &ctx.stream {
                sched.set_request_limit(Some(stream.limit()));
            }
            sched.handle_timeout(now);
            if sched.peer_stats(w.id).is_some_and(|p| p.banned) {
                let chunk = last_corrupt.unwrap_or(0);
                break Err(fail(format!(
                    "banned: chunk {chunk} and others failed verification (hash mismatch); \
                     nothing of them was kept"
                )));
            }
            if sched.is_complete() {
                break Ok(());
            }
            let window = sched.window(w.id).min(crate::config::WEB_SEED_REQUESTS_INFLIGHT_MAX);
            let may_request = ctx.unsaved_bytes.load(Ordering::Acquire) < ctx.unsaved_max_bytes;
            let mut release = now;
            while may_request && (asked.len() as u32) < window {
                let Some(chunk) = sched.poll_request(now, w.id) else { break };
                if let Some(t) = &ctx.throttle {
                    release = release.max(now + t.reserve(now, ctx.info.chunk_len(chunk)));
                }
                let range = ctx.info.chunk_range(chunk);
                if req_tx.send(WebRequest { index: chunk, range, release }).is_err() {
                    break;
                }
                asked.push_back(chunk);
            }
            (sched.poll_timeout(), sched.generation() != generation)
        };
        if moved && ctx.idle.changed() == seen {
            seen += 1;
        }
        if asked.is_empty() {
            // Nothing asked: sleep like an idle connection (see `pump`).
            ctx.wait_idle(seen, &wake, sched_at).await;
            continue;
        }
        let tick = async {
            glommio::timer::sleep(PROGRESS_TICK).await;
            None
        };
        let Some(answer) =
            until_stopped(ctx, future::or(async { Some(ans_rx.recv_async().await) }, tick)).await?
        else {
            continue;
        };
        let now = clock::now();
        match answer {
            Err(_) => break Err(fail("its HTTP thread ended".into())),
            Ok(WebAnswer::Progress) => {
                ctx.sched().handle_progress(now, w.id);
                ctx.last_progress_ms.store(ctx.now_ms(), Ordering::Relaxed);
            }
            Ok(WebAnswer::Chunk { index, bytes, verified, latency: l }) => {
                asked.retain(|&c| c != index);
                if !verified {
                    last_corrupt = Some(index);
                    ctx.sched().handle_chunk_corrupt(now, w.id, index);
                    ctx.idle.changed();
                    let mut c =
                        ctx.counters.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                    c.chunks_corrupt += 1;
                    continue;
                }
                ctx.sched().handle_chunk_verified(now, w.id, index);
                ctx.idle.changed();
                // Endgame duplicates are verified but written (and counted) once.
                if !ctx.claimed.test_and_set(index) {
                    let offset = ctx.info.chunk_range(index).start;
                    writer.start(ctx.clone(), tx.clone(), index, offset, bytes).await?;
                }
                ctx.last_progress_ms.store(ctx.now_ms(), Ordering::Relaxed);
                latency.saturating_record(l.as_micros() as u64);
            }
            Ok(WebAnswer::Failed(e)) => break Err(fail(e.to_string())),
        }
    };
    {
        let mut sched = ctx.sched();
        if !sched.is_complete() && !sched.peer_stats(w.id).is_some_and(|p| p.banned) {
            sched.handle_peer_removed(clock::now(), w.id);
        }
    }
    ctx.idle.changed();
    if let Ok(mut all) = ctx.latency.lock() {
        let _ = all.add(&latency);
    }
    // Closing the request channel ends the thread after the request it is on.
    drop(req_tx);
    result
}

/// Per-web-seed figures for the report (`errors` by source index: web seed `j` is
/// `conns.len() + j`).
fn web_reports(ctx: &FetchCtx, errors: &[(usize, String)]) -> Vec<WebSeedReport> {
    let sched = ctx.sched();
    ctx.web
        .iter()
        .enumerate()
        .map(|(j, w)| {
            let mut r = WebSeedReport { url: w.url.clone(), ..WebSeedReport::default() };
            if let Some(st) = sched.peer_stats(w.id) {
                r.bytes = st.bytes_verified;
                r.chunks = st.chunks_verified;
                r.corrupt_chunks = u64::from(st.corrupt_chunks);
                r.banned = st.banned;
            }
            let me = ctx.conns.len() + j;
            let prefix = format!("web seed {}: ", w.url);
            r.error = errors
                .iter()
                .find(|(i, _)| *i == me)
                .map(|(_, e)| e.strip_prefix(&prefix).unwrap_or(e).to_owned());
            r
        })
        .collect()
}

/// Writes verified chunks in the background (at most `WRITES_INFLIGHT_MAX` at once, so the
/// shard receives and hashes the next chunk while the kernel copies this one), and reports
/// each to the coordinator once it is written.
/// Streaming (`get -o -`), there is no file: verified chunks go to the coordinator with
/// their bytes, which writes them out in order.
struct ChunkWriter {
    file: Option<Rc<BufferedFile>>,
    permits: Rc<Semaphore>,
    failed: Rc<RefCell<Option<GetError>>>,
}

impl ChunkWriter {
    async fn open(path: &Path) -> Result<Self, GetError> {
        let file = glommio::io::OpenOptions::new()
            .write(true)
            .buffered_open(path)
            .await
            .map_err(|e| GetError::glommio(path, e))?;
        Ok(Self {
            file: Some(Rc::new(file)),
            permits: Rc::new(Semaphore::new(WRITES_INFLIGHT_MAX)),
            failed: Rc::new(RefCell::new(None)),
        })
    }

    /// A writer that hands verified chunks to the coordinator (streaming).
    fn to_coordinator() -> Self {
        Self {
            file: None,
            permits: Rc::new(Semaphore::new(WRITES_INFLIGHT_MAX)),
            failed: Rc::new(RefCell::new(None)),
        }
    }

    fn check(&self) -> Result<(), GetError> {
        self.failed.borrow_mut().take().map_or(Ok(()), Err)
    }

    async fn start(
        &self,
        ctx: Arc<FetchCtx>,
        tx: Sender<ShardMsg>,
        index: u32,
        offset: u64,
        buf: Vec<u8>,
    ) -> Result<(), GetError> {
        self.check()?;
        let Some(file) = self.file.clone() else {
            // The coordinator holds it until its turn; the reorder window bounds how many.
            let len = buf.len() as u64;
            let _ = tx.send(ShardMsg::Verified { index, len, bytes: Some(buf) });
            return Ok(());
        };
        let closed = |_| GetError::io(&ctx.partial, io::Error::other("writer closed"));
        ctx.writes_in_flight.fetch_add(1, Ordering::AcqRel);
        let permit = match self.permits.acquire_static_permit(1).await {
            Ok(p) => p,
            Err(e) => {
                ctx.writes_in_flight.fetch_sub(1, Ordering::AcqRel);
                return Err(closed(e));
            }
        };
        let failed = self.failed.clone();
        glommio::spawn_local(async move {
            let len = buf.len() as u64;
            let fail = match file.write_at(buf, offset).await {
                Ok(n) if n as u64 == len => {
                    ctx.unsaved_bytes.fetch_add(len, Ordering::AcqRel);
                    // Written: partial seeding may serve it from now on.
                    ctx.have.set(index);
                    let _ = tx.send(ShardMsg::Verified { index, len, bytes: None });
                    None
                }
                Ok(_) => Some(GetError::io(&ctx.partial, io::Error::other("short write"))),
                Err(e) => Some(GetError::glommio(&ctx.partial, e)),
            };
            if let Some(e) = fail {
                failed.borrow_mut().get_or_insert(e);
            }
            ctx.writes_in_flight.fetch_sub(1, Ordering::AcqRel);
            drop(permit);
        })
        .detach();
        Ok(())
    }

    /// Waits for every started write and reports the first failure.
    async fn finish(&self) -> Result<(), GetError> {
        // The semaphore is never closed while we hold the writer.
        let _ = self.permits.acquire(WRITES_INFLIGHT_MAX).await;
        self.check()
    }
}

/// Makes everything verified so far durable: data first, then the state that claims it.
struct Durability {
    info: FileInfo,
    bits: Bitfield,
    pending: Vec<u32>,
    pending_bytes: u64,
    data: File,
    partial: PathBuf,
    resume: PathBuf,
    /// The first resume state, still being written: finished before any other save.
    first_save: Option<std::thread::JoinHandle<io::Result<()>>>,
}

impl Durability {
    /// Waits for the first resume state to be written.
    fn first_saved(&mut self) -> Result<(), GetError> {
        match self.first_save.take().map(std::thread::JoinHandle::join) {
            None => Ok(()),
            Some(Ok(written)) => written.map_err(|e| GetError::io(&self.resume, e)),
            Some(Err(_)) => {
                Err(GetError::io(&self.resume, io::Error::other("resume writer panicked")))
            }
        }
    }

    /// Returns the number of bytes that became durable.
    fn save(&mut self) -> Result<u64, GetError> {
        self.first_saved()?;
        if self.pending.is_empty() {
            return Ok(0);
        }
        self.data.sync_data().map_err(|e| GetError::io(&self.partial, e))?;
        for i in self.pending.drain(..) {
            self.bits.set(i);
        }
        write_atomic(&self.resume, &wire::encode_resume(&self.info, self.bits.as_bytes()))
            .map_err(|e| GetError::io(&self.resume, e))?;
        Ok(std::mem::take(&mut self.pending_bytes))
    }
}

impl Drop for Durability {
    fn drop(&mut self) {
        // Never leave the first save's temporary file behind on a download that failed.
        let _ = self.first_saved();
    }
}

/// Where a download's verified chunks end up.
enum Keep {
    /// In the partial file, made durable at intervals and recorded for resuming (`-o PATH`).
    File(Durability),
    /// Out to a writer in file order (`-o -`): nothing on disk, nothing to resume.
    Stream(StreamOut),
}

impl Keep {
    /// Bytes of the file already verified when the transfer starts.
    fn done_bytes(&self, info: &FileInfo) -> u64 {
        match self {
            Self::File(dur) => (0..info.chunk_count())
                .filter(|&i| dur.bits.get(i))
                .map(|i| info.chunk_len(i))
                .sum(),
            Self::Stream(_) => 0,
        }
    }

    /// A verified chunk: recorded for the next save, or queued for its turn on the stream.
    fn take(&mut self, index: u32, len: u64, bytes: Option<Vec<u8>>) {
        match (self, bytes) {
            (Self::File(dur), _) => {
                dur.pending.push(index);
                dur.pending_bytes += len;
            }
            (Self::Stream(out), Some(bytes)) => out.take(index, bytes),
            // Shards of a stream always send the bytes.
            (Self::Stream(_), None) => {}
        }
    }

    /// Whether a save is due after `since` (streams have nothing to save).
    fn save_due(&self, save_every_bytes: u64, since: Instant, interval: Duration) -> bool {
        match self {
            Self::File(dur) => dur.pending_bytes >= save_every_bytes || since.elapsed() >= interval,
            Self::Stream(_) => since.elapsed() >= interval,
        }
    }

    /// Makes what verified durable; the bytes that became so.
    fn save(&mut self) -> Result<u64, GetError> {
        match self {
            Self::File(dur) => dur.save(),
            Self::Stream(_) => Ok(0),
        }
    }

    /// Why the output cannot take more, if it cannot.
    fn failed(&self) -> Option<GetError> {
        match self {
            Self::File(_) => None,
            Self::Stream(out) => out.error(),
        }
    }
}

/// The in-order writer of a streaming download. Verified chunks arrive in any order; those
/// past the next one wait in `held` (at most the reorder window: nothing beyond it is
/// requested), and each contiguous run goes to a thread of its own that writes it out,
/// so a blocked reader never blocks the coordinator (Ctrl-C and errors still end `get`).
struct StreamOut {
    shared: Arc<StreamShared>,
    /// Verified chunks waiting for an earlier one, by index.
    held: std::collections::BTreeMap<u32, Vec<u8>>,
    /// The next chunk to hand to the writer thread.
    next: u32,
    tx: Option<Sender<Vec<u8>>>,
    /// Bytes written, and the writer's error if it failed.
    result: Arc<Mutex<(u64, Option<io::Error>)>>,
    /// Tells when the writer thread ended (its sender drops).
    ended: Receiver<()>,
}

impl StreamOut {
    /// Starts the writer thread on `out`, for a reorder window of `window` chunks.
    fn start(mut out: Box<dyn io::Write + Send>, window: u32) -> Result<Self, GetError> {
        let shared = Arc::new(StreamShared {
            written: std::sync::atomic::AtomicU32::new(0),
            window: window.max(1),
            sent: std::sync::atomic::AtomicU32::new(0),
            failed: AtomicBool::new(false),
            idle: Arc::default(),
        });
        let (tx, rx) = flume::unbounded::<Vec<u8>>();
        let (ended_tx, ended) = flume::bounded::<()>(0);
        let result = Arc::new(Mutex::new((0u64, None)));
        let (shared2, result2) = (shared.clone(), result.clone());
        std::thread::Builder::new()
            .name("furymesh-stdout".into())
            .spawn(move || {
                let _ended = ended_tx;
                let fail = |e: io::Error| {
                    let mut g = result2.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                    g.1 = Some(e);
                    shared2.failed.store(true, Ordering::Release);
                };
                let count = |n: usize| {
                    result2.lock().unwrap_or_else(std::sync::PoisonError::into_inner).0 += n as u64;
                };
                while let Ok(chunk) = rx.recv() {
                    // write_all by hand, so the bytes count is exact when the reader quits.
                    let mut rest = &chunk[..];
                    while !rest.is_empty() {
                        match out.write(rest) {
                            Ok(0) => return fail(io::ErrorKind::WriteZero.into()),
                            Ok(n) => {
                                count(n);
                                rest = &rest[n..];
                            }
                            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                            Err(e) => return fail(e),
                        }
                    }
                    if let Err(e) = out.flush() {
                        return fail(e);
                    }
                    drop(chunk);
                    shared2.written.fetch_add(1, Ordering::AcqRel);
                    // The window moved on: connections waiting for it may request.
                    shared2.idle.changed();
                }
            })
            .map_err(|e| GetError::Io { path: "-".into(), source: e })?;
        Ok(Self {
            shared,
            held: std::collections::BTreeMap::new(),
            next: 0,
            tx: Some(tx),
            result,
            ended,
        })
    }

    /// A verified chunk; it and any that were waiting for it go out if it is the next one.
    fn take(&mut self, index: u32, bytes: Vec<u8>) {
        if index < self.next {
            return;
        }
        self.held.insert(index, bytes);
        while let Some(bytes) = self.held.remove(&self.next) {
            self.shared.sent.fetch_add(1, Ordering::AcqRel);
            if let Some(tx) = &self.tx {
                let _ = tx.send(bytes);
            }
            self.next += 1;
        }
    }

    /// The writer's failure, as the download's error.
    fn error(&self) -> Option<GetError> {
        if !self.shared.failed.load(Ordering::Acquire) {
            return None;
        }
        let g = self.result.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        Some(match &g.1 {
            Some(e) if e.kind() == io::ErrorKind::BrokenPipe => {
                GetError::StdoutClosed { bytes: g.0 }
            }
            Some(e) => {
                GetError::Io { path: "-".into(), source: io::Error::new(e.kind(), e.to_string()) }
            }
            None => GetError::Io { path: "-".into(), source: io::Error::other("write failed") },
        })
    }

    /// Lets the writer finish what it holds and waits for it (the reader must read it all),
    /// or for `interrupt`. Returns the bytes written.
    fn finish(&mut self, interrupt: &AtomicBool) -> Result<u64, GetError> {
        drop(self.tx.take());
        loop {
            match self.ended.recv_timeout(INTERRUPT_POLL) {
                Err(RecvTimeoutError::Timeout) if interrupt.load(Ordering::Relaxed) => {
                    return Err(GetError::Interrupted)
                }
                Err(RecvTimeoutError::Timeout) => {}
                _ => break,
            }
        }
        if let Some(e) = self.error() {
            return Err(e);
        }
        Ok(self.result.lock().unwrap_or_else(std::sync::PoisonError::into_inner).0)
    }
}

/// Runs `task` on shard `shard` of the node and waits for its result, or for `interrupt`:
/// then the task is told to stop (the flag it was given) and `Interrupted` is returned at
/// once, without waiting for it (a stuck shard cannot hold the command).
fn run_on_until<T, F, Fut>(
    node: &Handle,
    shard: usize,
    interrupt: &AtomicBool,
    task: F,
) -> Result<Result<T, GetError>, super::handle::NodeError>
where
    T: Send + 'static,
    F: FnOnce(Arc<AtomicBool>) -> Fut + Send + 'static,
    Fut: Future<Output = Result<T, GetError>> + 'static,
{
    let abort = Arc::new(AtomicBool::new(false));
    let (reply, answer) = flume::bounded(1);
    let flag = abort.clone();
    node.spawn_on(
        shard,
        Box::new(move || {
            Box::pin(async move {
                let _ = reply.send(task(flag).await);
            })
        }),
    )?;
    loop {
        match answer.recv_timeout(INTERRUPT_POLL) {
            Ok(result) => return Ok(result),
            Err(RecvTimeoutError::Timeout) if interrupt.load(Ordering::Relaxed) => {
                abort.store(true, Ordering::SeqCst);
                return Ok(Err(GetError::Interrupted));
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return Err(super::handle::NodeError::Stopped),
        }
    }
}

/// Refuses a manifest whose ID is of another kind than asked for (a collection fetched as
/// a file, or the other way round), and a collection's encoding larger than
/// `COLLECTION_BYTES_MAX`.
fn check_kind(info: &FileInfo, expected: IdKind) -> Result<(), GetError> {
    let found = info.kind().unwrap_or(IdKind::File);
    if found != expected {
        return Err(GetError::WrongKind { id: info.file_id, expected, found });
    }
    if found == IdKind::Collection && info.size > crate::config::COLLECTION_BYTES_MAX {
        return Err(GetError::BadCollection {
            id: format!("c-{}", info.file_id),
            what: format!("{} bytes, more than COLLECTION_BYTES_MAX", info.size),
        });
    }
    Ok(())
}

/// Fetches the manifest from the first of `peers` that has it; a peer that drops the
/// connection before reading the request is asked again (`ManifestFailure`).
async fn fetch_manifest_any(
    peers: &[PeerAddr],
    file_id: FileId,
    sec: &NodeSecurity,
    pins: &Pins,
    counters: &Mutex<DownloadCounters>,
    timeout: Duration,
    reach: &Reach,
) -> Result<FileInfo, GetError> {
    let mut last = GetError::NoPeers;
    for peer in peers {
        // A peer that dropped the connection unread is connected again, with the pauses of
        // a data connection's reconnections (`RECONNECTS_MAX`, from `RECONNECT_BACKOFF_MIN`).
        // A WebRTC set-up that timed out is tried `CONNECT_TRIES` times in all: a busy
        // seeder and an answer whose DTLS fingerprint does not match look alike to rtc 0.21
        // (neither fails, both time out), so the bound is small.
        // `timeouts`: set-ups that timed out so far.
        let (mut reconnects, mut timeouts, mut backoff) = (0, 0, RECONNECT_BACKOFF_MIN);
        loop {
            match fetch_manifest(peer.addr, file_id, sec, pins, counters, timeout, reach).await {
                Ok(info) => return Ok(info),
                Err(f) => {
                    let timed_out = reach.set_up_timed_out(&f.error);
                    timeouts += u32::from(timed_out);
                    let again = f.dropped || (timed_out && timeouts < CONNECT_TRIES);
                    if !again || reconnects >= RECONNECTS_MAX {
                        last = f.error;
                        break;
                    }
                    reconnects += 1;
                    glommio::timer::sleep(jittered(backoff)).await;
                    backoff = (backoff * 2).min(RECONNECT_BACKOFF_MAX);
                }
            }
        }
    }
    Err(last)
}

/// Fetches and checks the manifest on shard 0 (and, for a file download, creates the
/// partial file at full size before anything is written for it). SIGINT/SIGTERM end this
/// step too: connects, handshakes and the manifest's reads each have their own deadline,
/// but several peers' worth can add up.
fn fetch_info(
    node: &Handle,
    opts: &GetOptions,
    pins: &Arc<Pins>,
    interrupt: &AtomicBool,
    partial: Option<PathBuf>,
) -> Result<FileInfo, GetError> {
    let (peers, id, kind) = (opts.peers.clone(), opts.file_id, opts.kind);
    let (sec, pins2, counters2) = (opts.security.clone(), pins.clone(), node.download_counters());
    let timeout = node.config().peer_timeout();
    let reach = node.reach(opts.transport);
    let shown = partial.clone().unwrap_or_else(|| PathBuf::from("-"));
    run_on_until(node, 0, interrupt, move |abort| async move {
        // The caller returns at once on an interrupt; this only ends the task.
        until_flag(&abort, ABORT_POLL, async {
            let (s, p2, c2) = (&sec, &pins2, &counters2);
            let info = fetch_manifest_any(&peers, id, s, p2, c2, timeout, &reach).await?;
            // Before anything is written for it.
            check_kind(&info, kind)?;
            if let Some(p) = &partial {
                create_partial(p, info.size).await?;
            }
            Ok::<_, GetError>(info)
        })
        .await
        .unwrap_or(Err(GetError::Interrupted))
    })
    .map_err(|e| GetError::Io { path: shown, source: io::Error::other(e) })?
}

/// Downloads a file from `opts.peers` at once, its connections on `node`'s shards; runs
/// on the download's own thread ([`Handle::download`]), which makes verified chunks
/// durable. `interrupt` stops the download cleanly (state saved) when it becomes true;
/// `progress` is called a few times per second.
pub(super) fn get(
    node: &Handle,
    opts: &GetOptions,
    interrupt: &AtomicBool,
    progress: &dyn Fn(GetProgress),
) -> Result<GetReport, GetError> {
    let started = clock::now();
    let cpu_start = super::process_cpu_seconds();
    let output = &opts.output;
    if !opts.force && fs::symlink_metadata(output).is_ok() {
        return Err(GetError::OutputExists { path: output.clone() });
    }
    if opts.peers.is_empty() {
        return Err(GetError::NoPeers);
    }
    let (partial, resume) = side_paths(output);
    let _claim = claim_output(&partial, &resume, output)?;
    let pins = Arc::new(pins_of(&opts.peers));
    let mut first_save = None;
    let (info, bits, reverified) = match load_resume(&opts.file_id, &partial, &resume) {
        Some((info, mut bits)) => {
            let reverified = reverify_unrecorded(&info, &mut bits, &partial, &resume)?;
            (info, bits, reverified)
        }
        None => {
            let info = fetch_info(node, opts, &pins, interrupt, Some(partial.clone()))?;
            let bits = Bitfield::new(info.chunk_count());
            // The first resume state (nothing verified yet) is written while the transfer
            // connects: its two fsyncs (tens of milliseconds on a busy disk) need not come
            // before the first request. Every later save waits for it first.
            let (path, state) = (resume.clone(), wire::encode_resume(&info, bits.as_bytes()));
            first_save = Some(std::thread::spawn(move || write_atomic(&path, &state)));
            (info, bits, 0)
        }
    };
    check_kind(&info, opts.kind)?;
    let reused = u64::from(bits.count_ones()) - reverified;
    let data =
        OpenOptions::new().write(true).open(&partial).map_err(|e| GetError::io(&partial, e))?;
    let mut keep = Keep::File(Durability {
        info: info.clone(),
        bits,
        pending: Vec::new(),
        pending_bytes: 0,
        data,
        partial: partial.clone(),
        resume: resume.clone(),
        first_save,
    });
    let mut ran = transfer(node, opts, &info, pins, &partial, &mut keep, interrupt, progress)?;
    let Keep::File(mut dur) = keep else { unreachable!("a file download keeps a file") };
    let (fetched, fetched_bytes) = std::mem::replace(&mut ran.result, Ok((0, 0)))?;
    dur.save()?;
    if dur.bits.count_ones() != info.chunk_count() {
        return Err(GetError::Io {
            path: partial,
            source: io::Error::other("download ended with chunks missing"),
        });
    }
    finish(&partial, &resume, output, opts.force)?;
    Ok(ran.report(
        info,
        Some(output.clone()),
        started,
        cpu_start,
        (fetched, fetched_bytes),
        (reused, reverified),
    ))
}

/// Downloads a file like [`get`] but writes it to `out` (standard output for `get -o -`)
/// in file order as chunks verify: chunks are requested in file order, only inside the
/// reorder window (`config::stream_window_chunks`), so memory stays bounded by it; nothing
/// unverified is ever written. Nothing goes to disk and there is no resume: an interrupted
/// stream starts over. Errors: those of [`get`], and [`GetError::StdoutClosed`] when the
/// reader of `out` goes away (EPIPE). The report has no `output`. Runs on the calling thread.
pub(super) fn stream(
    node: &Handle,
    opts: &GetOptions,
    out: Box<dyn io::Write + Send>,
    interrupt: &AtomicBool,
    progress: &dyn Fn(GetProgress),
) -> Result<GetReport, GetError> {
    let started = clock::now();
    let cpu_start = super::process_cpu_seconds();
    if opts.peers.is_empty() {
        return Err(GetError::NoPeers);
    }
    let pins = Arc::new(pins_of(&opts.peers));
    let info = fetch_info(node, opts, &pins, interrupt, None)?;
    check_kind(&info, opts.kind)?;
    let window = crate::config::stream_window_chunks(info.chunk_size);
    let mut keep = Keep::Stream(StreamOut::start(out, window)?);
    // File order: the chunk the reader needs next is always the one asked for first.
    let opts = GetOptions { strategy: Strategy::RoundRobin, serve_partial: false, ..opts.clone() };
    let mut ran =
        transfer(node, &opts, &info, pins, Path::new("-"), &mut keep, interrupt, progress)?;
    let Keep::Stream(mut out) = keep else { unreachable!("a stream keeps a stream") };
    if let Some(e) = out.error() {
        return Err(e);
    }
    let (fetched, fetched_bytes) = std::mem::replace(&mut ran.result, Ok((0, 0)))?;
    let written = out.finish(interrupt)?;
    if written != info.size {
        return Err(GetError::Io {
            path: "-".into(),
            source: io::Error::other(format!(
                "stream ended after {written} of {} bytes",
                info.size
            )),
        });
    }
    // Nothing was served meanwhile (`serve_partial` is off): uploaded_bytes is 0.
    Ok(ran.report(info, None, started, cpu_start, (fetched, fetched_bytes), (0, 0)))
}

/// What one transfer did: its outcome (chunks, bytes fetched), per-peer figures, latency
/// and what it served meanwhile.
struct Ran {
    result: Result<(u64, u64), GetError>,
    /// When the coordinator heard of the first verified chunk.
    first_chunk_at: Option<Instant>,
    peers: Vec<PeerReport>,
    web_seeds: Vec<WebSeedReport>,
    latency: Histogram<u64>,
    uploaded_bytes: u64,
}

impl Ran {
    /// The report of a download that ended well: `(fetched, fetched_bytes)` from
    /// `result`, `(reused, reverified)` chunks found on disk, timed from `started` with
    /// the process CPU counted from `cpu_start`.
    fn report(
        self,
        info: FileInfo,
        output: Option<PathBuf>,
        started: Instant,
        cpu_start: f64,
        (fetched, fetched_bytes): (u64, u64),
        (reused, reverified): (u64, u64),
    ) -> GetReport {
        let seconds = started.elapsed().as_secs_f64();
        GetReport {
            file_id: info.file_id.to_hex(),
            file_size: info.size,
            bytes: fetched_bytes,
            seconds,
            bytes_per_sec: if seconds > 0.0 { fetched_bytes as f64 / seconds } else { 0.0 },
            chunks_fetched: fetched,
            chunks_reused: reused,
            chunks_reverified: reverified,
            cpu_seconds: super::process_cpu_seconds() - cpu_start,
            peers: self.peers,
            web_seeds: self.web_seeds,
            first_chunk_seconds: self
                .first_chunk_at
                .map(|at| at.saturating_duration_since(started).as_secs_f64()),
            latency_us: LatencyReport::of(&self.latency),
            latency_histogram: Some(self.latency),
            uploaded_bytes: self.uploaded_bytes,
            info: Some(info),
            output,
        }
    }
}

/// Moves the missing chunks of `info` from the peers into `keep`: the connections on the
/// node's shards, the coordinator on this thread. `partial` is the file the shards write
/// (and partial seeding serves); unused when streaming.
#[allow(clippy::too_many_arguments)]
fn transfer(
    node: &Handle,
    opts: &GetOptions,
    info: &FileInfo,
    pins: Arc<Pins>,
    partial: &Path,
    keep: &mut Keep,
    interrupt: &AtomicBool,
    progress: &dyn Fn(GetProgress),
) -> Result<Ran, GetError> {
    let (bits, stream) = match keep {
        Keep::File(dur) => (dur.bits.clone(), None),
        Keep::Stream(out) => (Bitfield::new(info.chunk_count()), Some(out.shared.clone())),
    };
    let idle = stream.as_ref().map_or_else(Arc::default, |s| s.idle.clone());
    let (stop_tx, stopped) = flume::bounded(1);
    // One connection per peer, or `connections` spread over the peers if that is more, but
    // no more connections than chunks to fetch: a session set up for nothing costs both
    // ends a handshake (over WebRTC, ICE, DTLS and SCTP too) and the download its wait.
    let missing = (info.chunk_count() - bits.count_ones()).max(1) as usize;
    let total = opts.connections.min(missing).max(opts.peers.len());
    let conns: Vec<ConnSlot> = (0..total)
        .map(|i| ConnSlot { id: ConnId(i as u32), addr: opts.peers[i % opts.peers.len()].addr })
        .collect();
    let web: Vec<WebSlot> = opts
        .web_seeds
        .iter()
        .enumerate()
        .map(|(j, url)| WebSlot { id: ConnId((total + j) as u32), url: url.clone() })
        .collect();
    let sources = conns.len() + web.len();
    let sched_config = SchedulerConfig {
        strategy: opts.strategy,
        chunk_size_bytes: info.chunk_size,
        file_size_bytes: Some(info.size),
        max_peers: opts.max_peers.max(1),
        window_max: opts.window.max(2),
        peers_max: sources.max(opts.max_peers).max(1),
        // Duplicates only help when they can come from another host.
        endgame_copies_max: if opts.peers.len() + web.len() > 1 { 2 } else { 1 },
        ..SchedulerConfig::default()
    };
    let failures_to_ban = sched_config.failures_to_ban;
    let mut scheduler = Scheduler::new(sched_config, info.chunk_count(), &bits, clock::random());
    if let Some(s) = &stream {
        scheduler.set_request_limit(Some(s.limit()));
    }
    let have = Arc::new(SharedBitfield::new(&bits));
    let ctx = Arc::new(FetchCtx {
        info: Arc::new(info.clone()),
        security: opts.security.clone(),
        pins,
        partial: partial.to_owned(),
        conns,
        web,
        sched: Mutex::new(scheduler),
        have: have.clone(),
        claimed: SharedBitfield::new(&bits),
        stop: AtomicBool::new(false),
        stop_tx: Mutex::new(Some(stop_tx)),
        stopped,
        idle,
        save_every_bytes: opts.save_every_bytes,
        throttle: opts
            .download_rate_bytes
            .map(|r| Throttle::new(r, throttle_burst_bytes(r), clock::now())),
        unsaved_bytes: AtomicU64::new(0),
        writes_in_flight: AtomicU64::new(0),
        // Saving starts at save_every; the second half keeps connections busy meanwhile.
        unsaved_max_bytes: opts.save_every_bytes.saturating_mul(2),
        last_progress_ms: AtomicU64::new(0),
        epoch: clock::now(),
        latency: Mutex::new(new_latency_histogram()),
        counters: node.download_counters(),
        peer_timeout: node.config().peer_timeout(),
        reach: node.reach(opts.transport),
        used: Mutex::default(),
        nodes: NodeStrikes::new(failures_to_ban),
        save_interval: node.config().resume_save_interval(),
        stream,
    });
    // Partial seeding: the node serves what is verified while downloading.
    let serving = opts.serve_partial && node.addr().is_some() && ctx.stream.is_none();
    let uploaded_before = if serving { uploaded(node) } else { 0 };
    if serving {
        let entry = CatalogEntry {
            info: info.clone(),
            path: partial.to_owned(),
            stamp: FileStamp { size: info.size, mtime_ns: 0 },
        };
        node.serve(ServedFile { entry: Arc::new(entry), have: Some(have.clone()) })
            .map_err(|e| GetError::Listen { what: e.to_string() })?;
    }
    let shards = (ctx.conns.len() + ctx.web.len()).min(node.shards()).max(1);
    let (tx, rx) = flume::unbounded();
    for i in 0..shards {
        let (ctx2, tx2) = (ctx.clone(), tx.clone());
        node.spawn_on(i, Box::new(move || Box::pin(fetch_shard(ctx2, ShardId(i), shards, tx2))))
            .map_err(|e| GetError::Listen { what: e.to_string() })?;
    }
    drop(tx);
    let outcome = coordinate(&ctx, &rx, shards, keep, interrupt, progress);
    ctx.stop_all();
    // Wait for every shard's part to end (a shard that stopped drops its sender), with a
    // deadline: a shard that does not end is a bug (a lost wake-up); the download's state
    // is saved, so say so and let the command end instead of hanging on it.
    let mut shards_done = outcome.shards_done;
    while !outcome.gave_up && shards_done.contains(&false) {
        match rx.recv_timeout(SHARD_STOP_GRACE) {
            Ok(ShardMsg::ShardDone(i, _)) => {
                if let Some(d) = shards_done.get_mut(i) {
                    *d = true;
                }
            }
            Ok(_) => {}
            // Writes still in flight: the shards are busy, not stuck.
            Err(RecvTimeoutError::Timeout) if ctx.writes_in_flight.load(Ordering::Acquire) > 0 => {}
            Err(_) => break,
        }
    }
    let stuck: Vec<usize> = (0..shards).filter(|&i| !shards_done[i]).collect();
    if !stuck.is_empty() {
        note!(
            "furymesh get: download shard(s) {stuck:?} did not stop within {} ms; left behind",
            SHARD_STOP_GRACE.as_millis()
        );
    }
    let peers = peer_reports(&ctx, &outcome.conn_errors);
    let web_seeds = web_reports(&ctx, &outcome.conn_errors);
    let uploaded_bytes = if serving {
        let n = uploaded(node).saturating_sub(uploaded_before);
        // The final file is served from the catalog once recorded; the partial no longer.
        let _ = node.unserve_partial(info.file_id);
        n
    } else {
        0
    };
    let latency = ctx.latency.lock().map(|h| h.clone()).unwrap_or_else(|_| new_latency_histogram());
    let first_chunk_at = outcome.first_chunk_at;
    Ok(Ran { result: outcome.result, first_chunk_at, peers, web_seeds, latency, uploaded_bytes })
}

/// Payload bytes the node has served so far.
fn uploaded(node: &Handle) -> u64 {
    node.stats().map_or(0, |s| s.serving.payload_bytes_from_map + s.serving.payload_bytes_sealed)
}

/// Per-peer figures for the report, summed over the connections to each address.
fn peer_reports(ctx: &FetchCtx, errors: &[(usize, String)]) -> Vec<PeerReport> {
    let sched = ctx.sched();
    let mut out: Vec<PeerReport> = Vec::new();
    for (i, c) in ctx.conns.iter().enumerate() {
        let idx = match out.iter().position(|p| p.addr == c.addr) {
            Some(idx) => idx,
            None => {
                let pins = ctx.pins.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                let node_id = pins.get(&c.addr).map(ToString::to_string);
                let used = ctx.used.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                let (transport, ice) = used.get(&c.addr).cloned().unzip();
                let ice = ice.flatten();
                out.push(PeerReport {
                    addr: c.addr,
                    node_id,
                    transport,
                    ice,
                    ..PeerReport::default()
                });
                out.len() - 1
            }
        };
        let r = &mut out[idx];
        if let Some(st) = sched.peer_stats(c.id) {
            r.bytes += st.bytes_verified;
            r.chunks += st.chunks_verified;
            r.corrupt_chunks += u64::from(st.corrupt_chunks);
            r.banned |= st.banned;
        }
        let node = r.node_id.as_deref().and_then(|id| id.parse().ok());
        r.banned |= node.is_some_and(|n| ctx.nodes.is_banned(n));
        if let Some((_, e)) = errors.iter().find(|(conn, _)| *conn == i) {
            r.error.get_or_insert_with(|| e.clone());
        }
    }
    out
}

/// What the coordinator saw: the outcome, each connection's error, and which shards
/// reported their end (the others had not within `SHARD_STOP_GRACE` of the download
/// stopping, or the coordinator stopped watching early on an error).
struct Outcome {
    result: Result<(u64, u64), GetError>,
    conn_errors: Vec<(usize, String)>,
    /// Which shards reported the end of their part of the download.
    shards_done: Vec<bool>,
    /// The coordinator already waited `SHARD_STOP_GRACE` for the others after the stop.
    gave_up: bool,
    /// When the first verified chunk arrived.
    first_chunk_at: Option<Instant>,
}

/// Runs on the calling thread while the shards fetch: collects verified chunks, persists
/// them at intervals, reports progress, and returns (chunks, bytes) fetched or the error
/// that best explains why the download could not finish.
fn coordinate(
    ctx: &FetchCtx,
    rx: &Receiver<ShardMsg>,
    shards: usize,
    keep: &mut Keep,
    interrupt: &AtomicBool,
    progress: &dyn Fn(GetProgress),
) -> Outcome {
    let info = &ctx.info;
    let mut done_bytes: u64 = keep.done_bytes(info);
    let mut errors: Vec<(usize, GetError)> = Vec::new();
    let mut fatal: Option<GetError> = None;
    let (mut done, mut chunks, mut bytes) = (0, 0u64, 0u64);
    let mut last_save = clock::now();
    let mut shard_done = vec![false; shards];
    // When the download stopped (complete, failed or interrupted), and when a shard last
    // said anything: a shard silent for SHARD_STOP_GRACE after both is stuck.
    let mut stopped_at: Option<Instant> = None;
    let mut last_message = clock::now();
    let mut gave_up = false;
    let mut first_chunk_at = None;
    let result = loop {
        if done >= shards {
            break Ok(());
        }
        let message = rx.recv_timeout(Duration::from_millis(100));
        if message.is_ok() {
            last_message = clock::now();
        }
        match message {
            Ok(ShardMsg::Verified { index, len, bytes: data }) => {
                first_chunk_at.get_or_insert_with(clock::now);
                keep.take(index, len, data);
                chunks += 1;
                bytes += len;
                done_bytes += len;
            }
            // Connections stopped because the download completed did not fail.
            Ok(ShardMsg::ConnDone { result: Err(GetError::Interrupted), .. })
                if ctx.sched().is_complete() => {}
            Ok(ShardMsg::ConnDone { conn, result: Err(e) }) => errors.push((conn, e)),
            Ok(ShardMsg::ConnDone { result: Ok(()), .. }) => {}
            Ok(ShardMsg::ShardDone(shard, r)) => {
                if let Some(d) = shard_done.get_mut(shard).filter(|d| !**d) {
                    *d = true;
                    done += 1;
                }
                if let Err(e) = r {
                    fatal.get_or_insert(e);
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break Ok(()),
        }
        if interrupt.load(Ordering::Relaxed) {
            ctx.stop_all();
            fatal.get_or_insert(GetError::Interrupted);
        }
        if let Some(e) = keep.failed() {
            // The output cannot take more (a stream's reader went away): nothing to go on for.
            ctx.stop_all();
            fatal.get_or_insert(e);
        }
        if ctx.sched().is_complete() {
            // Nothing left to wait for from any peer: connections still blocked on a read
            // (an endgame duplicate, a slow answer) stop now instead of at their timeout.
            ctx.stop_all();
        }
        if ctx.writes_in_flight.load(Ordering::Acquire) > 0 {
            // A chunk still being written is progress, not a stuck shard.
            last_message = clock::now();
        }
        if ctx.stop.load(Ordering::Relaxed) {
            let now = clock::now();
            let since = *stopped_at.get_or_insert(now);
            if now.saturating_duration_since(since.max(last_message)) >= SHARD_STOP_GRACE {
                // The shards not done are stuck; the caller reports them.
                gave_up = true;
                break Ok(());
            }
        }
        // Bans and stalls are in the per-peer report and the node's counters.
        count_events(ctx);
        if keep.save_due(ctx.save_every_bytes, last_save, ctx.save_interval) {
            match keep.save() {
                Ok(saved) => {
                    ctx.unsaved_bytes.fetch_sub(saved, Ordering::AcqRel);
                    // Room under `unsaved_max_bytes` again: connections waiting for it ask.
                    ctx.idle.changed();
                }
                Err(e) => {
                    ctx.stop_all();
                    break Err(e);
                }
            }
            last_save = clock::now();
            progress(GetProgress {
                done_bytes,
                total_bytes: info.size,
                chunk_size: info.chunk_size,
                peers: Arc::new(peer_reports(ctx, &[])),
            });
        }
    };
    let conn_errors: Vec<(usize, String)> =
        errors.iter().map(|(c, e)| (*c, e.to_string())).collect();
    progress(GetProgress {
        done_bytes,
        total_bytes: info.size,
        chunk_size: info.chunk_size,
        peers: Arc::new(peer_reports(ctx, &conn_errors)),
    });
    let complete = ctx.sched().is_complete();
    let result = match (result, fatal) {
        (Err(e), _) => Err(e),
        (Ok(()), Some(e)) if !complete || matches!(e, GetError::Interrupted) => Err(e),
        (Ok(()), _) if complete => Ok((chunks, bytes)),
        // Every connection ended and chunks are still missing: the most telling peer error.
        (Ok(()), _) => Err(pick_error(errors)),
    };
    count_events(ctx);
    ctx.counters.lock().unwrap_or_else(std::sync::PoisonError::into_inner).bytes_verified += bytes;
    if result.is_err() {
        // Keep what verified before failing.
        if let Err(e) = keep.save() {
            return Outcome {
                result: Err(e),
                conn_errors,
                shards_done: shard_done,
                gave_up,
                first_chunk_at,
            };
        }
    }
    Outcome { result, conn_errors, shards_done: shard_done, gave_up, first_chunk_at }
}

/// Moves the scheduler's events into the node's counters.
fn count_events(ctx: &FetchCtx) {
    let mut sched = ctx.sched();
    let mut c = ctx.counters.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    while let Some(ev) = sched.poll_event() {
        match ev {
            // A connection's ban is its node's (`NodeStrikes`, counted there); a web
            // seed's is its own.
            SchedulerEvent::PeerBanned { peer, .. } if peer.0 as usize >= ctx.conns.len() => {
                c.peers_banned += 1;
            }
            SchedulerEvent::PeerBanned { .. } => {}
            SchedulerEvent::PeerStalled { .. } => c.peers_stalled += 1,
            SchedulerEvent::Complete => {}
        }
    }
}

/// Of the connections' errors, the one that explains a failed download best: bad data
/// first (the chunk that failed before the ban it caused, which the node's other
/// connections report in whatever order their shards answer), then refusals, then
/// anything but an interruption.
fn pick_error(errors: Vec<(usize, GetError)>) -> GetError {
    let rank = |e: &GetError| match e {
        GetError::HashMismatch { .. } => 0,
        GetError::NodeBanned { .. } => 1,
        GetError::UnknownFile { .. } | GetError::Refused { .. } => 2,
        GetError::Interrupted => 4,
        _ => 3,
    };
    errors.into_iter().map(|(_, e)| e).min_by_key(rank).unwrap_or(GetError::NoPeers)
}

/// Gives the verified file its final name and removes the resume state. Without `force`
/// the final name is claimed with link(2), which fails rather than replace a file that
/// appeared meanwhile.
fn finish(partial: &Path, resume: &Path, output: &Path, force: bool) -> Result<(), GetError> {
    if force {
        fs::rename(partial, output).map_err(|e| GetError::io(output, e))?;
    } else {
        fs::hard_link(partial, output).map_err(|e| {
            if e.kind() == io::ErrorKind::AlreadyExists {
                GetError::OutputExists { path: output.into() }
            } else {
                GetError::io(output, e)
            }
        })?;
        fs::remove_file(partial).map_err(|e| GetError::io(partial, e))?;
    }
    let dir = output.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    File::open(dir).and_then(|d| d.sync_all()).map_err(|e| GetError::io(dir, e))?;
    fs::remove_file(resume).map_err(|e| GetError::io(resume, e))
}
