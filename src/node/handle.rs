//! [`Node`] and [`Handle`]: one node owns the shards for the life of the process, and
//! every command (seed, get, dht, demo, bench, later the service API) drives it through a
//! handle.
//!
//! A handle talks to the shards only by messages: each shard has an inbox
//! ([`ShardCommand`]) that its own executor drains between connection events, so the
//! catalog a shard serves and its counters stay single-threaded and unlocked. Shard 0
//! also runs the DHT, which takes [`DhtControl`] messages at its tick. Replies come back
//! on one-shot channels. Blocking calls (`publish`, `stats`, `wait`) block only the
//! calling thread, never a shard.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use glommio::PoolThreadHandles;
use serde::Serialize;

use super::dht::{self, DhtAnswer, DhtControl, DhtError, DhtNodeStats, DhtQuery, DhtServerOptions};
use super::fetch::{self, GetError, GetOptions, GetProgress, GetReport, PeerAddr};
use super::limits::ShardBudget;
use super::secure::KnownPeers;
use super::secure::NodeSecurity;
use super::seed::{
    ConnectionInfo, FileServed, Limits, SeedStats, ServedFile, ShardCommand, ShardSetup, ShardTask,
    SHARD_ANSWER_TIMEOUT,
};
use super::spawn_shards;
use super::sys;
use crate::config::{throttle_burst_bytes, ConfigError, NodeConfig, SHARD_STOP_GRACE};
use crate::crypto::FileId;
use crate::dht::{Key, NodeId, Transports};
use crate::storage::{self, Catalog, CatalogEntry, CatalogError, PublishError, Published};
use crate::throttle::Throttle;

use super::clock;

/// How a node runs: where it listens, how many shards, its DHT, its limits and identity.
#[derive(Debug, Clone)]
pub struct NodeOptions {
    /// Address every shard accepts peer connections on (SO_REUSEPORT), and the DHT's UDP
    /// port. `None`: the node serves nothing and runs no DHT (a plain `get`).
    pub listen: Option<SocketAddr>,
    /// UDP address every shard answers WebRTC offers on (SO_REUSEPORT; port 0: one free
    /// port, chosen at start). `None`: no WebRTC.
    pub webrtc: Option<SocketAddr>,
    /// STUN servers (RFC 8489) WebRTC sockets ask for their address outside a NAT, offered
    /// as server-reflexive candidates (`--stun`, repeatable): the seeder's signaled
    /// endpoint keeps its mapping fresh, a download asks before each offer. Empty: host
    /// candidates only.
    pub stun: Vec<SocketAddr>,
    /// A TURN server (RFC 8656) and its credentials (`--turn`): the seeder's signaled
    /// endpoint keeps an allocation on it, a download allocates before each offer, and the
    /// relayed address is offered as a candidate beside the others. `None`: no relay.
    pub turn: Option<super::TurnServer>,
    /// Accept TCP connections on `listen` (the default). `false` needs `webrtc`: peers then
    /// reach the node over WebRTC only, and its provider records say so.
    pub accept_tcp: bool,
    /// Shards (pinned executors), at least 1.
    pub shards: usize,
    /// The DHT, run by shard 0 on the listen address. `None`: no DHT.
    pub dht: Option<DhtServerOptions>,
    /// Upload limit for the whole node, shared by all shards, in bytes per second.
    pub upload_rate_bytes: Option<u64>,
    /// Upload limit per connection, in bytes per second.
    pub peer_upload_rate_bytes: Option<u64>,
    /// Identity, network secret and encryption setting for every connection.
    pub security: Arc<NodeSecurity>,
    /// The data directory whose catalog [`Handle::publish`], [`Handle::unpublish`] and
    /// [`Handle::sync_catalog`] keep the shards in step with. `None`: the node serves only
    /// what it is given.
    pub data_dir: Option<PathBuf>,
    /// Prefix of the node's thread names (`NAME-N` for shards, `NAME-dl-N` for download
    /// coordinators), so per-thread CPU accounting can tell nodes of one process apart.
    /// At most 8 characters keep every name within Linux's 15.
    pub name: String,
    /// Runtime knobs (timeouts, pools, DHT timings); checked by [`Node::start`].
    pub config: NodeConfig,
}

impl NodeOptions {
    /// A node on `listen` (or none) with `shards` shards and this identity: no DHT, no
    /// limits, no data directory.
    pub fn new(listen: Option<SocketAddr>, shards: usize, security: Arc<NodeSecurity>) -> Self {
        Self {
            listen,
            webrtc: None,
            stun: Vec::new(),
            turn: None,
            accept_tcp: true,
            shards,
            dht: None,
            upload_rate_bytes: None,
            peer_upload_rate_bytes: None,
            security,
            data_dir: None,
            name: "furymesh".into(),
            config: NodeConfig::default(),
        }
    }
}

/// Why the node could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("cannot listen on {addr}: {source}")]
    Listen { addr: SocketAddr, source: io::Error },
    #[error("cannot start shards: {0}")]
    Shards(io::Error),
    #[error("invalid node configuration: {0}")]
    Config(#[from] ConfigError),
    /// The node has shut down (or a shard died): nothing can be asked of it any more.
    #[error("the node has stopped")]
    Stopped,
    /// The node was started without a DHT.
    #[error("this node runs no DHT")]
    NoDht,
    #[error("the DHT lookup did not finish within {0:?}")]
    DhtTimeout(Duration),
    /// The node was started without a data directory, so it has no catalog.
    #[error("this node has no data directory")]
    NoDataDir,
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error("no download with ID {0}")]
    UnknownDownload(DownloadId),
    /// A shard did not answer a command within `SHARD_ANSWER_TIMEOUT` (it is stuck: a bug).
    #[error("shard {0} did not answer within {ms} ms", ms = SHARD_ANSWER_TIMEOUT.as_millis())]
    ShardStuck(usize),
    #[error(transparent)]
    Dht(#[from] DhtError),
    /// Signaling a WebRTC session to another node through the DHT failed (no answer,
    /// refused, or an answer that does not open).
    #[error("signaling node {node} through the DHT failed: {why}")]
    Signaling { node: NodeId, why: String },
    /// The DHT lookup found nobody providing the file (and no peer was given).
    #[error("no provider of {0} found through the DHT")]
    NoProviders(FileId),
}

/// The peers a download will ask, with where their pins came from.
#[derive(Debug, Clone, Default)]
pub struct ResolvedPeers {
    /// One entry per node ID and per address.
    pub peers: Vec<PeerAddr>,
    /// Plain addresses pinned to the node they proved when this data directory last used
    /// them (trust on first use): a different node there now is refused, and the error
    /// should say how to accept a deliberate change.
    pub pinned_by_known: Vec<SocketAddr>,
    /// Where those pins are kept (`known-peers` in the data directory).
    pub known_path: Option<PathBuf>,
}

/// A node's counters at one instant: the serving side summed over shards (with the
/// DHT's), and what its downloads saw. Counters only rise; gauges are marked.
#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
pub struct NodeStats {
    /// Shards of the node.
    pub shards: usize,
    /// Files served now (a gauge; published files and partial downloads).
    pub files_served: usize,
    /// Downloads running now (a gauge).
    pub downloads_active: usize,
    /// Serving counters summed over shards.
    #[serde(flatten)]
    pub serving: SeedStats,
    /// What the node's downloads saw, summed over every download it ran.
    pub downloading: DownloadCounters,
}

/// Events of the node's downloads, counted by blame (see `crypto::handshake::Blame`).
#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
pub struct DownloadCounters {
    /// Downloads started / finished verified / failed / cancelled.
    pub started: u64,
    pub completed: u64,
    pub failed: u64,
    pub cancelled: u64,
    /// Payload bytes verified and written.
    pub bytes_verified: u64,
    /// Chunks that failed verification (a peer's fault).
    pub chunks_corrupt: u64,
    /// Peers banned for corrupt chunks (a peer's fault): nodes, by the ID they proved,
    /// however many addresses or connections reached them, and web seeds.
    pub peers_banned: u64,
    /// Peers given up on for making no progress (a peer's fault, or the path's).
    pub peers_stalled: u64,
    /// Outgoing handshakes that failed by the peer's fault (wrong node, network or
    /// encryption setting, bad messages, resets).
    pub handshakes_failed_peer: u64,
    /// Outgoing handshakes that failed by this node's fault.
    pub handshakes_failed_local: u64,
}

/// A download running in (or finished by) a node: `0, 1, 2, …` in start order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct DownloadId(pub u64);

impl std::fmt::Display for DownloadId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// Where a download stands (the field's `TransferStatus`).
#[derive(Debug, Clone, Serialize)]
pub struct TransferStatus {
    pub id: DownloadId,
    pub file_id: String,
    pub output: PathBuf,
    /// Verified bytes (including chunks reused from an earlier run).
    pub done_bytes: u64,
    /// The file's size, once its manifest is known (0 before).
    pub total_bytes: u64,
    /// `running`, or `ended` once its thread is done; [`Handle::wait`] then returns the
    /// outcome (and forgets the download).
    pub state: &'static str,
}

/// The catalog in figures ([`Handle::catalog_counts`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CatalogCounts {
    /// Files published (collections not counted).
    pub files: usize,
    /// Their bytes.
    pub files_bytes: u64,
    /// Collections published.
    pub collections: usize,
    /// Published files changed or gone on disk since publish.
    pub files_changed: usize,
}

/// What the node's shards are doing now ([`Handle::activity`]).
#[derive(Debug, Clone)]
pub struct NodeActivity {
    /// Open peer connections of every shard (downloaders of this node's files).
    pub connections: Vec<ConnectionInfo>,
    /// Bytes and chunks served per file since the node started, summed over shards.
    pub files: HashMap<FileId, FileServed>,
    /// Chunk-serve times of every shard, in microseconds.
    pub serve_latency_us: hdrhistogram::Histogram<u64>,
    /// Open memory maps, per shard.
    pub open_maps: Vec<usize>,
}

/// A running node. Dropping it without [`Node::shutdown`] stops the shards too.
pub struct Node {
    handle: Handle,
    pool: Option<PoolThreadHandles<SeedStats>>,
}

/// Drives a node from any thread: `Send + Clone`, cheap to clone.
#[derive(Clone)]
pub struct Handle {
    inner: Arc<Inner>,
}

struct Inner {
    shards: Vec<flume::Sender<ShardCommand>>,
    dht: Option<flume::Sender<DhtControl>>,
    /// Providers the DHT found, with the transports their records advertise: address →
    /// (node ID, transports). A download reaches them accordingly (`fetch::Reach`).
    found: Mutex<HashMap<SocketAddr, (NodeId, Transports)>>,
    addr: Option<SocketAddr>,
    webrtc: Option<SocketAddr>,
    stun: Arc<[SocketAddr]>,
    turn: Option<Arc<super::TurnServer>>,
    security: Arc<NodeSecurity>,
    data_dir: Option<PathBuf>,
    name: String,
    config: NodeConfig,
    /// What the shards serve from the catalog (control plane only: the shards keep their
    /// own copies). Partial downloads are served too but not listed here.
    published: Mutex<HashMap<FileId, Arc<CatalogEntry>>>,
    /// Partial downloads being served (`get --listen`).
    partials: AtomicU64,
    /// What the last [`Handle::check_published`] found: published files changed (or gone)
    /// on disk since publish, each withdrawn from the DHT until it is intact again.
    changed: Mutex<HashMap<FileId, storage::FileState>>,
    downloads: Mutex<Downloads>,
    counters: Arc<Mutex<DownloadCounters>>,
}

#[derive(Default)]
struct Downloads {
    next: u64,
    all: HashMap<DownloadId, Download>,
}

/// One download as the node tracks it.
struct Download {
    file_id: FileId,
    output: PathBuf,
    interrupt: Arc<AtomicBool>,
    progress: Arc<ProgressCell>,
    /// Taken by [`Handle::wait`], which may join it long before the download ends.
    thread: Option<JoinHandle<Result<GetReport, GetError>>>,
    /// Set by the download's thread as its last act: the download ended, whoever holds
    /// the thread (a waiter takes it, so the thread's presence says nothing).
    ended: Arc<AtomicBool>,
}

impl Download {
    fn running(&self) -> bool {
        !self.ended.load(Ordering::Acquire)
    }
}

/// The latest progress of a download, written by its coordinator.
#[derive(Default)]
pub(super) struct ProgressCell {
    done: AtomicU64,
    total: AtomicU64,
}

impl ProgressCell {
    pub(super) fn set(&self, p: &GetProgress) {
        self.total.store(p.total_bytes, Ordering::Relaxed);
        self.done.store(p.done_bytes, Ordering::Relaxed);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Node {
    /// Starts the shards (and, with a listen address and `opts.dht`, the DHT on shard 0)
    /// serving `files`. Returns once every shard listens, or why one could not.
    pub fn start(files: Vec<ServedFile>, opts: &NodeOptions) -> Result<Self, NodeError> {
        opts.config.validate()?;
        sys::tune_allocator();
        if !opts.accept_tcp && opts.webrtc.is_none() {
            return Err(NodeError::Shards(io::Error::other(
                "a node that takes no TCP connections needs WebRTC (--webrtc)",
            )));
        }
        let shards = opts.shards.max(1);
        let with_dht = opts.dht.is_some();
        // Bind once without SO_REUSEPORT: this fails if anyone else holds the port (shards
        // bind with SO_REUSEPORT and would otherwise silently share it with a stranger), and
        // resolves port 0 to a real port for all shards (and the DHT's UDP socket).
        let addr = match opts.listen {
            Some(listen) => Some(
                dht::resolve_listen_addr(listen, with_dht)
                    .map_err(|source| NodeError::Listen { addr: listen, source })?,
            ),
            None => None,
        };
        // Port 0 resolved once, like the TCP port: the shards bind with SO_REUSEPORT.
        let webrtc = match opts.webrtc {
            Some(a) => Some(
                std::net::UdpSocket::bind(a)
                    .and_then(|s| s.local_addr())
                    .map_err(|source| NodeError::Listen { addr: a, source })?,
            ),
            None => None,
        };
        let limits = Limits {
            budget: ShardBudget::new(
                super::open_files_limit(),
                shards,
                opts.config.connections_per_shard_max,
                opts.config.open_files_per_shard_max,
            ),
            node: opts
                .upload_rate_bytes
                .map(|r| Arc::new(Throttle::new(r, throttle_burst_bytes(r), clock::now()))),
            peer_rate_bytes: opts.peer_upload_rate_bytes,
            peer_timeout: opts.config.peer_timeout(),
            idle_timeout: opts.config.idle_timeout(),
            webrtc_block_bytes: opts.config.webrtc_block_bytes,
            webrtc_handshakes: opts.config.webrtc_handshakes_per_shard,
        };
        let catalog: HashMap<FileId, ServedFile> =
            files.into_iter().map(|f| (f.entry.info.file_id, f)).collect();
        let published = catalog
            .values()
            .filter(|f| f.have.is_none())
            .map(|f| (f.entry.info.file_id, f.entry.clone()))
            .collect();
        let partials = catalog.values().filter(|f| f.have.is_some()).count() as u64;
        let (dht_tx, dht_rx) = flume::unbounded();
        let mut setups: Vec<Option<ShardSetup>> = Vec::with_capacity(shards);
        let mut senders = Vec::with_capacity(shards);
        for i in 0..shards {
            let (tx, rx) = flume::unbounded();
            senders.push(tx);
            let dht = match (&opts.dht, i) {
                (Some(d), 0) if with_dht => Some((d.clone(), dht_rx.clone(), opts.config.clone())),
                _ => None,
            };
            setups.push(Some(ShardSetup {
                listen: addr,
                accept_tcp: opts.accept_tcp,
                webrtc,
                stun: opts.stun.clone(),
                turn: opts.turn.clone(),
                catalog: catalog.clone(),
                dht,
                limits: limits.clone(),
                security: opts.security.clone(),
                inbox: rx,
            }));
        }
        let setups = Arc::new(Mutex::new(setups));
        let (ready_tx, ready_rx) = crossbeam_channel::bounded::<io::Result<()>>(shards);
        let pool = spawn_shards(&opts.name, shards, move |id| {
            let setup = lock(&setups)[id.0].take();
            async move {
                match setup {
                    Some(setup) => super::seed::run_shard(id, setup, ready_tx).await,
                    None => SeedStats::default(),
                }
            }
        })
        .map_err(NodeError::Shards)?;
        let handle = Handle {
            inner: Arc::new(Inner {
                shards: senders,
                dht: with_dht.then_some(dht_tx),
                found: Mutex::default(),
                addr,
                webrtc,
                stun: opts.stun.clone().into(),
                turn: opts.turn.clone().map(Arc::new),
                security: opts.security.clone(),
                data_dir: opts.data_dir.clone(),
                name: opts.name.clone(),
                config: opts.config.clone(),
                published: Mutex::new(published),
                partials: AtomicU64::new(partials),
                changed: Mutex::default(),
                downloads: Mutex::new(Downloads::default()),
                counters: Arc::new(Mutex::new(DownloadCounters::default())),
            }),
        };
        let node = Self { handle, pool: Some(pool) };
        let mut failure = None;
        for _ in 0..shards {
            match ready_rx.recv() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => failure = Some(e),
                Err(_) => failure = Some(io::Error::other("a shard exited during start-up")),
            }
        }
        if let Some(source) = failure {
            node.shutdown();
            return Err(NodeError::Listen {
                addr: addr.or(opts.listen).unwrap_or(super::UNSPECIFIED_ADDR),
                source,
            });
        }
        Ok(node)
    }

    /// A handle to drive this node from any thread.
    pub fn handle(&self) -> Handle {
        self.handle.clone()
    }

    /// The address every shard listens on (port 0 resolved), if the node listens.
    pub fn addr(&self) -> Option<SocketAddr> {
        self.handle.inner.addr
    }

    /// Cancels the running downloads (their state saved for resuming), stops every shard
    /// (the DHT saves its routing table) and returns the final counters.
    pub fn shutdown(mut self) -> NodeStats {
        self.stop_all()
    }

    fn stop_all(&mut self) -> NodeStats {
        let inner = &self.handle.inner;
        let ids: Vec<DownloadId> = lock(&inner.downloads).all.keys().copied().collect();
        for id in &ids {
            let _ = self.handle.cancel(*id);
        }
        for id in ids {
            let _ = self.handle.wait(id);
        }
        // A snapshot first, through the inboxes: if tearing a shard down takes longer than
        // the join's deadline below (the kernel cancelling its io_uring work under load),
        // the counters are not lost with it.
        let snapshot = self.handle.stats().map(|s| s.serving).ok();
        for tx in &inner.shards {
            let _ = tx.send(ShardCommand::Stop);
        }
        let mut serving = SeedStats::default();
        if let Some(pool) = self.pool.take() {
            // Joined with a deadline (shard 0 saves the DHT table on its way out): a shard
            // that does not stop is reported and left behind, so SIGTERM still ends the
            // command.
            let (tx, rx) = crossbeam_channel::bounded(1);
            let joiner = std::thread::Builder::new()
                .name("furymesh-stop".into())
                .spawn(move || drop(tx.send(pool.join_all())));
            match joiner.ok().and_then(|_| rx.recv_timeout(2 * SHARD_STOP_GRACE).ok()) {
                Some(all) => all.into_iter().flatten().for_each(|s| serving.add(&s)),
                None => {
                    note!(
                        "furymesh: shards did not stop within {} ms; left behind",
                        (2 * SHARD_STOP_GRACE).as_millis()
                    );
                    serving = snapshot.unwrap_or_default();
                }
            }
        }
        NodeStats {
            shards: inner.shards.len(),
            files_served: lock(&inner.published).len()
                + inner.partials.load(Ordering::Relaxed) as usize,
            downloads_active: 0,
            serving,
            downloading: lock(&inner.counters).clone(),
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if self.pool.is_some() {
            self.stop_all();
        }
    }
}

impl Handle {
    /// The address the node listens on, if any.
    pub fn addr(&self) -> Option<SocketAddr> {
        self.inner.addr
    }

    /// The UDP address the node answers WebRTC offers on (port 0 resolved), if any.
    pub fn webrtc_addr(&self) -> Option<SocketAddr> {
        self.inner.webrtc
    }

    /// The node's identity, network secret and encryption setting.
    pub fn security(&self) -> &Arc<NodeSecurity> {
        &self.inner.security
    }

    /// The node's runtime configuration.
    pub fn config(&self) -> &NodeConfig {
        &self.inner.config
    }

    /// Number of shards.
    pub fn shards(&self) -> usize {
        self.inner.shards.len()
    }

    /// Sends `cmd(reply)` to every shard and waits for each to answer.
    fn on_every_shard<R>(
        &self,
        cmd: impl Fn(flume::Sender<R>) -> ShardCommand,
    ) -> Result<Vec<R>, NodeError> {
        let mut waiting = Vec::with_capacity(self.inner.shards.len());
        for tx in &self.inner.shards {
            let (reply, answer) = flume::bounded(1);
            tx.send(cmd(reply)).map_err(|_| NodeError::Stopped)?;
            waiting.push(answer);
        }
        // A shard that does not answer in time is stuck, and the caller hears so instead of
        // hanging.
        let answer = |(i, a): (usize, flume::Receiver<R>)| {
            a.recv_timeout(SHARD_ANSWER_TIMEOUT).map_err(|e| match e {
                flume::RecvTimeoutError::Timeout => NodeError::ShardStuck(i),
                flume::RecvTimeoutError::Disconnected => NodeError::Stopped,
            })
        };
        waiting.into_iter().enumerate().map(answer).collect()
    }

    /// Answers a browser's SDP offer that came over the HTTP gateway from `client`: shard 0
    /// opens a browser session (plaintext peer wire inside DTLS, no node handshake;
    /// ARCHITECTURE.md, "Browser peers") on its signaled WebRTC endpoint and returns the
    /// answer's SDP. `Ok(None)`: no WebRTC on this node, a malformed offer or a full shard.
    /// The caller bounds the offer, limits callers per IP and bounds the wait.
    pub async fn answer_browser(
        &self,
        sdp: String,
        client: std::net::IpAddr,
    ) -> Result<Option<String>, NodeError> {
        let (reply, answer) = flume::bounded(1);
        let tx = self.inner.shards.first().ok_or(NodeError::Stopped)?;
        tx.send(ShardCommand::BrowserOffer { sdp, client, reply })
            .map_err(|_| NodeError::Stopped)?;
        answer.recv_async().await.map_err(|_| NodeError::Stopped)
    }

    /// Relays a browser's SDP offer (from `client`, over this node's HTTP gateway) to
    /// node `target`, another provider of the file whose record offers WebRTC, through the
    /// DHT's signaling path (`crypto::signal`: sealed and signed end to end, this node's
    /// signature on the statement that the offer is a browser's), and returns `target`'s
    /// SDP answer for the page. `target` answers with a browser session on its own
    /// signaled endpoint; the browser then talks to it directly. The browser's mDNS host
    /// candidates are dropped (and all of its candidates when the offer would not fit a
    /// datagram otherwise: `target` then routes the browser's checks by their ICE username
    /// fragment). The caller checks that `target` provides the file, limits callers per
    /// IP and bounds the wait (two DHT round trips after a lookup of `target`).
    pub async fn relay_browser_offer(
        &self,
        target: NodeId,
        sdp: &str,
        client: std::net::IpAddr,
    ) -> Result<String, NodeError> {
        use crate::crypto::signal::{SignalInitiator, SignalPayload, SIGNAL_SDP_BYTES_MAX};
        let dht = self.inner.dht.as_ref().ok_or(NodeError::NoDht)?;
        let failed = |why: String| NodeError::Signaling { node: target, why };
        let mut sdp = super::transport::webrtc::without_mdns_candidates(sdp);
        if sdp.len() > SIGNAL_SDP_BYTES_MAX {
            sdp = super::transport::webrtc::without_candidates(&sdp);
        }
        if sdp.len() > SIGNAL_SDP_BYTES_MAX {
            let why = format!("the offer is over {SIGNAL_SDP_BYTES_MAX} bytes without candidates");
            return Err(failed(why));
        }
        let session = self.security().session();
        let random: [u8; 48] = clock::random();
        let (init, hello) = SignalInitiator::start(session, target, clock::now_unix(), random);
        let io = |e: io::Error| failed(e.to_string());
        let (relay, reply) = fetch::ask_dht(dht, target, None, hello).await.map_err(io)?;
        let mut offerer =
            init.handle_reply(&reply, clock::now_unix()).map_err(|e| failed(e.to_string()))?;
        let payload = SignalPayload { candidates: Vec::new(), sdp, browser: Some(client) };
        let offer = offerer.seal_offer(&payload).ok_or_else(|| failed("offer too large".into()))?;
        let (_, answer) = fetch::ask_dht(dht, target, Some(relay), offer).await.map_err(io)?;
        let answer = offerer.open_answer(&answer).map_err(|e| failed(e.to_string()))?;
        Ok(answer.sdp)
    }

    /// Runs `task()` on shard `shard % shards` (a download's connections).
    pub(super) fn spawn_on(&self, shard: usize, task: ShardTask) -> Result<(), NodeError> {
        let tx = &self.inner.shards[shard % self.inner.shards.len()];
        tx.send(ShardCommand::Spawn(task)).map_err(|_| NodeError::Stopped)
    }

    /// Stops serving a partial download (served by [`Handle::serve`] with `have`), unless
    /// the catalog serves the same file.
    pub(super) fn unserve_partial(&self, id: FileId) -> Result<(), NodeError> {
        self.inner.partials.fetch_sub(1, Ordering::Relaxed);
        if lock(&self.inner.published).contains_key(&id) {
            return Ok(());
        }
        self.unserve(id)
    }

    /// Serves `file` on every shard (replacing what is served under its ID); returns once
    /// every shard serves it.
    pub fn serve(&self, file: ServedFile) -> Result<(), NodeError> {
        if file.have.is_some() {
            self.inner.partials.fetch_add(1, Ordering::Relaxed);
        }
        self.on_every_shard(|done| ShardCommand::Serve(file.clone(), done))?;
        Ok(())
    }

    /// Stops serving `id` on every shard (later requests get `UNKNOWN_FILE`); returns once
    /// every shard has stopped.
    pub fn unserve(&self, id: FileId) -> Result<(), NodeError> {
        self.on_every_shard(|done| ShardCommand::Unserve(id, done))?;
        Ok(())
    }

    fn dht(&self, c: DhtControl) {
        if let Some(tx) = &self.inner.dht {
            let _ = tx.send(c);
        }
    }

    /// Hashes and publishes `paths` into the node's catalog (see [`storage::publish`]),
    /// then serves and announces what changed. One result per file.
    pub fn publish(
        &self,
        paths: &[PathBuf],
        chunk_size: Option<u32>,
        progress: &(dyn Fn(u64) + Sync),
    ) -> Result<Vec<Result<Published, PublishError>>, NodeError> {
        Ok(self.publish_tree(paths, chunk_size, progress)?.files)
    }

    /// [`Handle::publish`], returning all that [`storage::publish_tree`] did: also each
    /// directory's collection, or why none was recorded (entries a release cannot carry
    /// are refused, as `furymesh publish` does without `--skip-unsafe`).
    pub fn publish_tree(
        &self,
        paths: &[PathBuf],
        chunk_size: Option<u32>,
        progress: &(dyn Fn(u64) + Sync),
    ) -> Result<storage::TreeOutcome, NodeError> {
        let dir = self.inner.data_dir.as_deref().ok_or(NodeError::NoDataDir)?;
        let mut catalog = Catalog::load(dir)?;
        let policy = storage::UnsafePolicy::Refuse;
        let outcome = storage::publish_tree(&mut catalog, paths, chunk_size, policy, progress);
        // `publish_tree` reloaded the catalog under its lock before writing: it is current.
        self.sync_with(&catalog)?;
        Ok(outcome)
    }

    /// Removes `id` from the catalog, stops serving it and withdraws it from the DHT.
    /// Returns false if it was not published.
    pub fn unpublish(&self, id: &FileId) -> Result<bool, NodeError> {
        let dir = self.inner.data_dir.as_deref().ok_or(NodeError::NoDataDir)?;
        let (mut catalog, _lock) = Catalog::load_for_update(dir)?;
        let removed = catalog.remove(id)?;
        self.sync_with(&catalog)?;
        Ok(removed)
    }

    /// Takes back `id` as `furymesh unpublish` does ([`Catalog::takeback`]: a file; or a
    /// collection and, unless `keep_files`, the files only it brought), stops serving them
    /// and withdraws them from the DHT. Returns the catalog entries removed, `id`'s first
    /// (empty: it was not published).
    pub fn take_back(&self, id: &FileId, keep_files: bool) -> Result<Vec<CatalogEntry>, NodeError> {
        let dir = self.inner.data_dir.as_deref().ok_or(NodeError::NoDataDir)?;
        let (mut catalog, _lock) = Catalog::load_for_update(dir)?;
        let mut removed = Vec::new();
        for i in catalog.takeback(id, keep_files) {
            let entry = catalog.get(&i).cloned();
            if catalog.remove(&i)? {
                removed.extend(entry);
            }
        }
        self.sync_with(&catalog)?;
        Ok(removed)
    }

    /// Checks every published file on disk (one `stat` each) and returns those that are
    /// not as published, with their state. A seed should not announce what it refuses to
    /// serve: each such file is withdrawn from the DHT (the shards keep refusing its chunks
    /// with a clear error), and announced again if it is ever intact again. Called by the
    /// catalog watch every `PUBLISHED_CHECK_INTERVAL` and by the API whenever it lists
    /// files, so what the API shows is current.
    pub fn check_published(&self) -> HashMap<FileId, storage::FileState> {
        let entries = self.published();
        let bad: HashMap<FileId, storage::FileState> = entries
            .iter()
            .map(|e| (e.info.file_id, e.state()))
            .filter(|(_, s)| *s != storage::FileState::Intact)
            .collect();
        let mut changed = lock(&self.inner.changed);
        for id in bad.keys().filter(|id| !changed.contains_key(id)) {
            self.dht(DhtControl::Withdraw(Key::from_file_id(id)));
        }
        // Intact again (put back as it was): announced again. No longer published: nothing
        // to announce.
        for id in changed.keys().filter(|id| !bad.contains_key(id)) {
            if entries.iter().any(|e| e.info.file_id == *id) {
                self.dht(DhtControl::Announce(Key::from_file_id(id)));
            }
        }
        changed.clone_from(&bad);
        bad
    }

    /// The catalog in figures: files and collections published, and files not as
    /// published — checked on disk now (`fresh`: [`Handle::check_published`], one `stat`
    /// per file) or as the last check found them (no I/O; at most
    /// `PUBLISHED_CHECK_INTERVAL` old in a running `seed`), for callers as frequent as a
    /// metrics scrape.
    pub fn catalog_counts(&self, fresh: bool) -> CatalogCounts {
        let bad = if fresh { self.check_published() } else { lock(&self.inner.changed).clone() };
        let mut c = CatalogCounts::default();
        for e in self.published() {
            if e.is_collection() {
                c.collections += 1;
            } else {
                c.files += 1;
                c.files_bytes += e.info.size;
                c.files_changed += usize::from(bad.contains_key(&e.info.file_id));
            }
        }
        c
    }

    /// Brings the shards in step with the catalog on disk (published or unpublished by
    /// this node or by another command on the same data directory): serves and announces
    /// new and changed files, stops serving and withdraws removed ones. Returns the number
    /// of files added and removed.
    pub fn sync_catalog(&self) -> Result<(usize, usize), NodeError> {
        let dir = self.inner.data_dir.as_deref().ok_or(NodeError::NoDataDir)?;
        self.sync_with(&Catalog::load(dir)?)
    }

    /// [`Handle::sync_catalog`] with the catalog as the caller just read or wrote it.
    fn sync_with(&self, catalog: &Catalog) -> Result<(usize, usize), NodeError> {
        let mut published = lock(&self.inner.published);
        let gone: Vec<FileId> =
            published.keys().filter(|id| catalog.get(id).is_none()).copied().collect();
        let fresh: Vec<Arc<CatalogEntry>> = catalog
            .entries()
            .filter(|e| published.get(&e.info.file_id).is_none_or(|old| old.path != e.path))
            .map(|e| Arc::new(e.clone()))
            .collect();
        for e in &fresh {
            self.serve(ServedFile { entry: e.clone(), have: None })?;
            self.dht(DhtControl::Announce(Key::from_file_id(&e.info.file_id)));
            published.insert(e.info.file_id, e.clone());
        }
        for id in &gone {
            self.unserve(*id)?;
            self.dht(DhtControl::Withdraw(Key::from_file_id(id)));
            published.remove(id);
        }
        Ok((fresh.len(), gone.len()))
    }

    /// The entries the node serves from its catalog (shared, not copied).
    pub fn published(&self) -> Vec<Arc<CatalogEntry>> {
        lock(&self.inner.published).values().cloned().collect()
    }

    /// The catalog entry the node serves under `id`, if it is published (partial
    /// downloads are not).
    pub fn published_entry(&self, id: &FileId) -> Option<Arc<CatalogEntry>> {
        lock(&self.inner.published).get(id).cloned()
    }

    /// Each shard's serving counters now, in shard order ([`Handle::stats`] sums them;
    /// the DHT's counters are only there).
    pub fn shard_stats(&self) -> Result<Vec<SeedStats>, NodeError> {
        self.on_every_shard(ShardCommand::Stats)
    }

    /// Every shard's open peer connections (downloaders of this node's files, with what
    /// was sent to each), what the node served per file (summed over shards), its
    /// chunk-serve times and open maps, now.
    pub fn activity(&self) -> Result<NodeActivity, NodeError> {
        let mut conns = Vec::new();
        let mut files: HashMap<FileId, FileServed> = HashMap::new();
        let mut latency = super::seed::serve_latency_histogram();
        let mut open_maps = Vec::new();
        for a in self.on_every_shard(ShardCommand::Activity)? {
            let _ = latency.add(&a.serve_latency_us);
            open_maps.push(a.open_maps);
            conns.extend(a.connections);
            for (id, f) in a.files {
                let sum = files.entry(id).or_default();
                sum.bytes += f.bytes;
                sum.chunks += f.chunks;
            }
        }
        conns.sort_by_key(|c| (c.shard, c.id));
        Ok(NodeActivity { connections: conns, files, serve_latency_us: latency, open_maps })
    }

    /// A snapshot of the node's counters, taken from every shard now.
    pub fn stats(&self) -> Result<NodeStats, NodeError> {
        let mut serving = SeedStats::default();
        for s in self.shard_stats()? {
            serving.add(&s);
        }
        serving.dht = self.dht_stats();
        let downloads = lock(&self.inner.downloads);
        Ok(NodeStats {
            shards: self.inner.shards.len(),
            files_served: lock(&self.inner.published).len()
                + self.inner.partials.load(Ordering::Relaxed) as usize,
            downloads_active: downloads.all.values().filter(|d| d.running()).count(),
            serving,
            downloading: lock(&self.inner.counters).clone(),
        })
    }

    fn dht_stats(&self) -> Option<DhtNodeStats> {
        let tx = self.inner.dht.as_ref()?;
        let (reply, answer) = flume::bounded(1);
        tx.send(DhtControl::Stats(reply)).ok()?;
        answer.recv_timeout(Duration::from_secs(1)).ok()
    }

    /// Runs a lookup through the node's own DHT (its routing table, its network secret).
    pub fn dht_query(&self, q: DhtQuery, limit: Duration) -> Result<DhtAnswer, NodeError> {
        let tx = self.inner.dht.as_ref().ok_or(NodeError::NoDht)?;
        let (reply, answer) = flume::bounded(1);
        tx.send(DhtControl::Query(q, reply)).map_err(|_| NodeError::Stopped)?;
        let answer = answer.recv_timeout(limit).map_err(|e| match e {
            flume::RecvTimeoutError::Timeout => NodeError::DhtTimeout(limit),
            flume::RecvTimeoutError::Disconnected => NodeError::Stopped,
        })?;
        Ok(answer?)
    }

    /// Like [`Handle::dht_query`] for providers, but while none is found it joins again
    /// through its bootstrap nodes and asks again (a network still forming: a node that
    /// started a moment ago, an announcement still in its paced queue), after
    /// `DHT_PROVIDER_RETRY_MIN`, doubling up to `DHT_PROVIDER_RETRY_MAX`, until `limit`.
    /// Returns the last (possibly empty) answer.
    /// The providers' transports are remembered, so a download (also one the control API
    /// starts) reaches each one the way its record says.
    pub fn find_providers(&self, key: Key, limit: Duration) -> Result<DhtAnswer, NodeError> {
        let deadline = clock::now() + limit;
        let mut pause = crate::config::DHT_PROVIDER_RETRY_MIN;
        loop {
            let left = deadline.saturating_duration_since(clock::now());
            let answer = match self.dht_query(DhtQuery::FindProviders(key), left) {
                Err(NodeError::DhtTimeout(_)) => return Err(NodeError::DhtTimeout(limit)),
                other => other?,
            };
            if !answer.contacts.is_empty() || clock::now() + pause >= deadline {
                // Remembered for downloads (`reach`): how each provider can be reached.
                let mut known = lock(&self.inner.found);
                for c in &answer.contacts {
                    if let Ok(id) = c.node_id.parse() {
                        known.insert(c.addr, (id, c.transports()));
                    }
                }
                return Ok(answer);
            }
            std::thread::sleep(pause);
            self.dht(DhtControl::Rejoin);
            pause = (pause * 2).min(crate::config::DHT_PROVIDER_RETRY_MAX);
        }
    }

    /// Starts downloading `opts.file_id` in this node (its connections on the node's
    /// shards, its durability on a thread of its own) and returns at once. The download
    /// stops cleanly, its state saved, when `interrupt` turns true (a signal handler's
    /// flag) or on [`Handle::cancel`]. `progress` is called a few times per second. With
    /// `opts.serve_partial`, the node serves the chunks verified so far while it downloads.
    pub fn download(
        &self,
        opts: GetOptions,
        interrupt: Arc<AtomicBool>,
        progress: Box<dyn Fn(GetProgress) + Send>,
    ) -> Result<DownloadId, NodeError> {
        let cell = Arc::new(ProgressCell::default());
        let mut downloads = lock(&self.inner.downloads);
        let id = DownloadId(downloads.next);
        downloads.next += 1;
        let (handle, stop, cell2) = (self.clone(), interrupt.clone(), cell.clone());
        let (file_id, output) = (opts.file_id, opts.output.clone());
        let ended = Arc::new(AtomicBool::new(false));
        let ended2 = ended.clone();
        let thread = std::thread::Builder::new()
            .name(format!("{}-dl-{id}", self.inner.name))
            .spawn(move || {
                let outcome = fetch::get(&handle, &opts, &stop, &|p| {
                    cell2.set(&p);
                    progress(p);
                });
                ended2.store(true, Ordering::Release);
                outcome
            })
            .map_err(NodeError::Shards)?;
        lock(&self.inner.counters).started += 1;
        downloads.all.insert(
            id,
            Download { file_id, output, interrupt, progress: cell, thread: Some(thread), ended },
        );
        Ok(id)
    }

    /// Downloads `opts.file_id` in this node and waits for the outcome ([`Handle::download`]
    /// then [`Handle::wait`]).
    pub fn get(
        &self,
        opts: GetOptions,
        interrupt: Arc<AtomicBool>,
        progress: Box<dyn Fn(GetProgress) + Send>,
    ) -> Result<GetReport, GetError> {
        let id = self.download(opts, interrupt, progress)?;
        self.wait(id)?
    }

    /// Downloads `opts.file_id` in this node and writes it to `out` in file order as its
    /// chunks verify (`get -o -`), on the calling thread: see `fetch::stream` for the
    /// reorder window and what is never written. `opts.output`, `force`, `strategy` (file
    /// order is used), `serve_partial` and `save_every_bytes` do not apply; there is no
    /// resume state. Errors: as [`Handle::get`], plus `GetError::StdoutClosed` when the
    /// reader of `out` goes away.
    pub fn stream(
        &self,
        opts: &GetOptions,
        out: Box<dyn io::Write + Send>,
        interrupt: &AtomicBool,
        progress: &dyn Fn(GetProgress),
    ) -> Result<GetReport, GetError> {
        lock(&self.inner.counters).started += 1;
        let result = fetch::stream(self, opts, out, interrupt, progress);
        let mut c = lock(&self.inner.counters);
        match &result {
            Ok(_) => c.completed += 1,
            Err(GetError::Interrupted | GetError::StdoutClosed { .. }) => c.cancelled += 1,
            Err(_) => c.failed += 1,
        }
        result
    }

    /// The peers to download `file_id` from: the `given` ones, a plain `HOST:PORT` pinned
    /// to the node it proved the last time this data directory used it (trust on first
    /// use, `known-peers`), plus — if the node runs a DHT — the providers it finds within
    /// `DHT_PROVIDERS_SEARCH_TIMEOUT`, each pinned to the node ID its signed record names.
    /// One entry per node ID (a given one wins) and per address (a pinned one wins); never
    /// the node's own listen address.
    /// Errors: `NoProviders` when the DHT was asked, nothing was given and nobody provides
    /// the file; DHT failures.
    pub fn resolve_peers(
        &self,
        file_id: FileId,
        given: &[PeerAddr],
    ) -> Result<ResolvedPeers, NodeError> {
        let known = self.inner.data_dir.as_deref().map(KnownPeers::load);
        let mut out = ResolvedPeers {
            peers: given.to_vec(),
            known_path: known.as_ref().map(|k| k.path().to_owned()),
            ..ResolvedPeers::default()
        };
        if let Some(known) = &known {
            for p in out.peers.iter_mut().filter(|p| p.node_id.is_none()) {
                p.node_id = known.get(p.addr);
                if p.node_id.is_some() {
                    out.pinned_by_known.push(p.addr);
                }
            }
        }
        if self.inner.dht.is_some() {
            let limit = crate::config::DHT_PROVIDERS_SEARCH_TIMEOUT;
            let found = self.find_providers(Key::from_file_id(&file_id), limit)?;
            out.peers.extend(
                found
                    .contacts
                    .iter()
                    .filter(|c| Some(c.addr) != self.inner.addr)
                    .map(|c| PeerAddr { addr: c.addr, node_id: c.node_id.parse().ok() }),
            );
            if out.peers.is_empty() {
                return Err(NodeError::NoProviders(file_id));
            }
        }
        // One entry per node: a node is who proved an ID, its address only how to reach
        // it; the first entry wins (given before found, so the user's address is used).
        let mut nodes = std::collections::HashSet::new();
        out.peers.retain(|p| p.node_id.is_none_or(|id| nodes.insert(id)));
        out.peers.sort_by_key(|p| (p.addr, p.node_id.is_none()));
        out.peers.dedup_by_key(|p| p.addr);
        Ok(out)
    }

    /// How a download with `--transport choice` reaches its peers: the providers found in
    /// the DHT so far, with their transports, and the DHT to signal WebRTC through.
    pub(super) fn reach(&self, choice: fetch::TransportChoice) -> fetch::Reach {
        fetch::Reach {
            choice,
            found: Arc::new(lock(&self.inner.found).clone()),
            dht: self.inner.dht.clone(),
            stun: self.inner.stun.clone(),
            turn: self.inner.turn.clone(),
        }
    }

    /// After a download: pins each peer that was `given` as a plain address to the node it
    /// proved (trust on first use; DHT providers are pinned by their records) in the data
    /// directory's `known-peers`, and records the file in the catalog so the node serves
    /// it. Returns the problems as warnings: the download itself succeeded.
    pub fn finish_download(&self, given: &[PeerAddr], report: &GetReport) -> Vec<String> {
        let mut warnings = Vec::new();
        let Some(dir) = self.inner.data_dir.as_deref() else { return warnings };
        let mut known = KnownPeers::load(dir);
        for p in &report.peers {
            let Some(g) = given.iter().find(|g| g.addr == p.addr) else { continue };
            if let Some(id) = p.node_id.as_deref().and_then(|s| s.parse().ok()) {
                known.remember(p.addr, id, g.node_id.is_some());
            }
        }
        if let Err(e) = known.save() {
            warnings.push(format!("cannot save {}: {e}", known.path().display()));
        }
        if let (Some(info), Some(output)) = (report.info.clone(), report.output.as_deref()) {
            if let Err(e) = self.record_download(info, output) {
                warnings.push(format!("not recorded in the catalog of {}: {e}", dir.display()));
            }
        }
        warnings
    }

    /// Asks a download to stop; its verified chunks are kept for resuming. [`Handle::wait`]
    /// then returns `GetError::Interrupted`.
    pub fn cancel(&self, id: DownloadId) -> Result<(), NodeError> {
        let downloads = lock(&self.inner.downloads);
        let d = downloads.all.get(&id).ok_or(NodeError::UnknownDownload(id))?;
        d.interrupt.store(true, Ordering::SeqCst);
        Ok(())
    }

    /// Where a download stands.
    pub fn status(&self, id: DownloadId) -> Result<TransferStatus, NodeError> {
        let downloads = lock(&self.inner.downloads);
        let d = downloads.all.get(&id).ok_or(NodeError::UnknownDownload(id))?;
        Ok(TransferStatus {
            id,
            file_id: d.file_id.to_hex(),
            output: d.output.clone(),
            done_bytes: d.progress.done.load(Ordering::Relaxed),
            total_bytes: d.progress.total.load(Ordering::Relaxed),
            state: if d.running() { "running" } else { "ended" },
        })
    }

    /// Waits for a download to end and returns its report (only once: later calls for the
    /// same ID answer `UnknownDownload`).
    pub fn wait(&self, id: DownloadId) -> Result<Result<GetReport, GetError>, NodeError> {
        let thread = {
            let mut downloads = lock(&self.inner.downloads);
            let d = downloads.all.get_mut(&id).ok_or(NodeError::UnknownDownload(id))?;
            d.thread.take().ok_or(NodeError::UnknownDownload(id))?
        };
        let result = thread.join().unwrap_or_else(|_| {
            Err(GetError::Io {
                path: PathBuf::new(),
                source: io::Error::other("the download's thread panicked"),
            })
        });
        let state = match &result {
            Ok(_) => "completed",
            Err(GetError::Interrupted) => "cancelled",
            Err(_) => "failed",
        };
        {
            let mut c = lock(&self.inner.counters);
            match state {
                "completed" => c.completed += 1,
                "cancelled" => c.cancelled += 1,
                _ => c.failed += 1,
            }
        }
        lock(&self.inner.downloads).all.remove(&id);
        Ok(result)
    }

    /// The counters a download adds to (its coordinator counts bans, stalls, corrupt
    /// chunks and handshake failures as they happen).
    pub(super) fn download_counters(&self) -> Arc<Mutex<DownloadCounters>> {
        self.inner.counters.clone()
    }

    /// Records a finished download in the catalog (so the node and later `seed`s serve
    /// it) and serves it from its final path. Best effort: the download itself succeeded,
    /// so a catalog problem is returned for the caller to warn about.
    pub fn record_download(
        &self,
        info: crate::manifest::FileInfo,
        output: &Path,
    ) -> Result<(), NodeError> {
        let dir = self.inner.data_dir.as_deref().ok_or(NodeError::NoDataDir)?;
        let path = std::fs::canonicalize(output)
            .map_err(|source| CatalogError::Write { path: output.into(), source })?;
        let meta = std::fs::metadata(&path)
            .map_err(|source| CatalogError::Write { path: path.clone(), source })?;
        let stamp = storage::FileStamp::of(&meta);
        // A read-modify-write under the catalog's lock: concurrent gets and publishes
        // each keep their entries.
        let (mut catalog, lock) = Catalog::load_for_update(dir)?;
        // Already published from an intact file elsewhere (a node downloading what it
        // seeds): keep serving that one; the catalog has one path per file ID, and the
        // download's copy may be moved or deleted by its user.
        let intact = |e: &CatalogEntry| {
            std::fs::metadata(&e.path).is_ok_and(|m| storage::FileStamp::of(&m) == e.stamp)
        };
        if !catalog.get(&info.file_id).is_some_and(intact) {
            catalog.insert(CatalogEntry { info, path, stamp })?;
        }
        drop(lock);
        self.sync_with(&catalog)?;
        Ok(())
    }
}
