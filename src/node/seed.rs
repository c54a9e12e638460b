//! The seeder: per-shard TCP listeners and zero-copy chunk serving.
//!
//! Every shard binds its own listener on the same address with SO_REUSEPORT, so the kernel
//! spreads connections over the shards and a connection never leaves the shard that
//! accepted it. Each shard maps the files it serves itself (`OpenFiles`), and sends a chunk
//! as a small FlatBuffers header followed by a slice of the map handed straight to `send(2)`:
//! no user-space copy of the payload; with encryption on, the cipher reads the map and
//! writes the send buffer in one pass. `SeedStats::payload_bytes_from_map` and
//! `payload_bytes_sealed` count which path every payload byte took.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::net::SocketAddr;
use std::ops::Range;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_lite::future;
use glommio::net::TcpStream;
use glommio::PoolThreadHandles;
use serde::Serialize;

use super::dht::{self, DhtNodeStats, DhtServerOptions};
use super::limits::{AcceptBackoff, ShardBudget};
use super::secure::NodeSecurity;
use super::transport::{Conn, RecvError, TcpConn, TcpSide};
use super::{clock, spawn_shards, wait_until, ShardId};
use crate::config::{
    throttle_burst_bytes, CONNECTIONS_PER_SHARD_MAX, IDLE_TIMEOUT, OPEN_FILES_PER_SHARD_MAX,
    PEER_TIMEOUT, REQUEST_BODY_MAX_BYTES, THROTTLE_PIECE_MAX_BYTES,
};
use crate::crypto::record::TAG_BYTES;
use crate::crypto::{FileId, RecordAad};
use crate::peer::{ChunkFailure, Served, ServedFiles, ServerSession, ServerTransmit};
use crate::storage::{CatalogEntry, FileStamp, MappedFile};
use crate::throttle::Throttle;
use crate::transfer::SharedBitfield;
use crate::wire::frame::Deframed;

/// How often an idle shard checks for shutdown.
const STOP_POLL: Duration = Duration::from_millis(50);

/// What `furymesh seed` needs to run.
#[derive(Debug, Clone)]
pub struct SeedOptions {
    pub listen: SocketAddr,
    pub shards: usize,
    /// The DHT, run by shard 0 on the listen address (UDP). `None`: no DHT.
    pub dht: Option<DhtServerOptions>,
    /// Upload limit for the whole node, shared by all shards.
    pub upload_rate_bytes: Option<u64>,
    /// Upload limit per connection.
    pub peer_upload_rate_bytes: Option<u64>,
    /// Identity, network secret and encryption setting for every connection.
    pub security: Arc<NodeSecurity>,
}

/// Why the seeder could not start.
#[derive(Debug, thiserror::Error)]
pub enum SeedError {
    #[error("cannot listen on {addr}: {source}")]
    Listen { addr: SocketAddr, source: io::Error },
    #[error("cannot start shards: {0}")]
    Shards(io::Error),
}

/// Counters of one shard, summed over shards at shutdown.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SeedStats {
    pub connections: u64,
    pub connections_refused: u64,
    pub requests: u64,
    pub chunks_served: u64,
    /// Plaintext payload bytes: handed to the socket straight from a memory map (no
    /// user-space copy), except chunks an upload limit paces in pieces, which are pread into
    /// a buffer first (a file changed mid-chunk must not cut a chunk short).
    pub payload_bytes_from_map: u64,
    /// Payload bytes encrypted in one pass from a memory map into the send buffer
    /// (encryption on; no separate copy).
    pub payload_bytes_sealed: u64,
    /// Connections whose handshake failed (wrong network, pin, encryption setting, bad
    /// signature, replay).
    pub handshakes_failed: u64,
    /// Connections closed because a sealed record failed authentication.
    pub records_rejected: u64,
    pub manifests_served: u64,
    pub error_replies: u64,
    /// Connections closed because the peer sent something undecodable or oversized.
    pub bad_frames: u64,
    /// The DHT's counters (shard 0), when it ran.
    pub dht: Option<DhtNodeStats>,
}

impl SeedStats {
    /// Adds another shard's or seeder's counters (the DHT counters of the last one that
    /// had them win).
    pub fn add(&mut self, o: &Self) {
        self.connections += o.connections;
        self.connections_refused += o.connections_refused;
        self.requests += o.requests;
        self.chunks_served += o.chunks_served;
        self.payload_bytes_from_map += o.payload_bytes_from_map;
        self.payload_bytes_sealed += o.payload_bytes_sealed;
        self.handshakes_failed += o.handshakes_failed;
        self.records_rejected += o.records_rejected;
        self.manifests_served += o.manifests_served;
        self.error_replies += o.error_replies;
        self.bad_frames += o.bad_frames;
        if o.dht.is_some() {
            self.dht.clone_from(&o.dht);
        }
    }
}

/// A running seeder. Stop it with [`Seeder::stop`] (or let `stop_flag` go true).
pub struct Seeder {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    handles: PoolThreadHandles<SeedStats>,
}

impl Seeder {
    /// Binds every shard's listener and starts serving `files`. Returns once all shards
    /// listen. `stop` ends the seeder when it becomes true (e.g. from a signal handler).
    pub fn start(
        files: Vec<ServedFile>,
        opts: &SeedOptions,
        stop: Arc<AtomicBool>,
    ) -> Result<Self, SeedError> {
        // Bind once without SO_REUSEPORT: this fails if anyone else holds the port (shards
        // bind with SO_REUSEPORT and would otherwise silently share it with a stranger), and
        // resolves port 0 to a real port for all shards (and the DHT's UDP socket).
        let addr = dht::resolve_listen_addr(opts.listen, opts.dht.is_some())
            .map_err(|source| SeedError::Listen { addr: opts.listen, source })?;
        let catalog: Arc<HashMap<FileId, ServedFile>> =
            Arc::new(files.into_iter().map(|f| (f.entry.info.file_id, f)).collect());
        let (ready_tx, ready_rx) = crossbeam_channel::bounded::<io::Result<()>>(opts.shards);
        let stop2 = stop.clone();
        let limits = Limits {
            budget: ShardBudget::new(
                super::open_files_limit(),
                opts.shards,
                CONNECTIONS_PER_SHARD_MAX,
                OPEN_FILES_PER_SHARD_MAX,
            ),
            node: opts
                .upload_rate_bytes
                .map(|r| Arc::new(Throttle::new(r, throttle_burst_bytes(r), clock::now()))),
            peer_rate_bytes: opts.peer_upload_rate_bytes,
        };
        let dht = opts.dht.clone();
        let security = opts.security.clone();
        let handles = spawn_shards("furymesh-seed", opts.shards, move |id| {
            run_shard(id, addr, catalog, dht, limits, security, stop2, ready_tx)
        })
        .map_err(SeedError::Shards)?;
        let mut failure = None;
        for _ in 0..opts.shards {
            match ready_rx.recv() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => failure = Some(e),
                Err(_) => failure = Some(io::Error::other("a shard exited during start-up")),
            }
        }
        let seeder = Self { addr, stop, handles };
        if let Some(source) = failure {
            seeder.stop();
            return Err(SeedError::Listen { addr, source });
        }
        Ok(seeder)
    }

    /// The address every shard listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops all shards and returns the summed counters.
    pub fn stop(self) -> SeedStats {
        self.stop.store(true, Ordering::SeqCst);
        self.wait()
    }

    /// Waits until the shards stop (after the stop flag is set) and returns the counters.
    pub fn wait(self) -> SeedStats {
        let mut total = SeedStats::default();
        for s in self.handles.join_all().into_iter().flatten() {
            total.add(&s);
        }
        total
    }
}

/// Upload limits: one bucket for the node (an atomic word every shard charges) and a rate
/// for each connection's own bucket.
#[derive(Clone)]
struct Limits {
    /// Connections and cached maps per shard, sized from the descriptor limit.
    budget: ShardBudget,
    node: Option<Arc<Throttle>>,
    peer_rate_bytes: Option<u64>,
}

/// A file the seeder serves: a published one, or one this node is still downloading (then
/// `have` says which chunks are verified and written, and only those are served).
#[derive(Debug, Clone)]
pub struct ServedFile {
    pub entry: CatalogEntry,
    pub have: Option<Arc<SharedBitfield>>,
}

impl From<CatalogEntry> for ServedFile {
    fn from(entry: CatalogEntry) -> Self {
        Self { entry, have: None }
    }
}

/// A file one shard has mapped.
struct OpenFile {
    map: MappedFile,
    stamp: FileStamp,
}

/// State owned by one shard.
struct Shard {
    id: ShardId,
    catalog: Arc<HashMap<FileId, ServedFile>>,
    open: RefCell<HashMap<FileId, Rc<OpenFile>>>,
    stats: RefCell<SeedStats>,
    connections: Cell<usize>,
    limits: Limits,
    security: Arc<NodeSecurity>,
}

fn changed() -> ChunkFailure {
    ChunkFailure::FileChanged
}

impl ServedFiles for Shard {
    fn served(&self, id: &FileId) -> Option<Served<'_>> {
        self.catalog.get(id).map(|f| Served { info: &f.entry.info, have: f.have.as_deref() })
    }
}

impl Shard {
    /// The shard's map of `id`, opened on first use.
    fn open_file(&self, id: &FileId) -> Result<Rc<OpenFile>, ChunkFailure> {
        if let Some(f) = self.open.borrow().get(id) {
            return Ok(f.clone());
        }
        let Some(served) = self.catalog.get(id) else {
            return Err(ChunkFailure::Io(format!("file {id} is not served here")));
        };
        let entry = &served.entry;
        let f = self.open_descriptor(id, &entry.path)?;
        // SAFETY: the shard keeps the map's contract: map slices only reach send(2) (the
        // plaintext path in `send_chunk`); the sealed path preads the chunk from the file
        // instead of reading the map (`read_chunk`), and nothing else looks at the bytes.
        #[allow(unsafe_code)]
        let map = unsafe { MappedFile::open(f) }
            .map_err(|e| ChunkFailure::Io(format!("cannot map file {id}: {}", e.kind())))?;
        let f = Rc::new(OpenFile { map, stamp: entry.stamp });
        self.cache(*id, f.clone());
        Ok(f)
    }

    /// Keeps `file` open for later requests, within the shard's budget of cached maps:
    /// when full, maps no connection is using are dropped; if all are in use, `file` is
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
    /// maps no connection is using and tries once more; if that fails too the request is
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
    /// was published (one fstat), and forgets its map. Runs right before the chunk's bytes
    /// are read (after any throttle wait), so the window in which a change goes unnoticed
    /// is as small as it can be without a lease. Our own partial downloads change as chunks
    /// land and are not checked: only their verified chunks are served.
    fn check_fresh(&self, id: &FileId, file: &OpenFile, partial: bool) -> Result<(), ChunkFailure> {
        if partial {
            return Ok(());
        }
        let now = file.map.file().metadata().map(|m| FileStamp::of(&m));
        if now.ok() != Some(file.stamp) || file.map.len() as u64 != file.stamp.size {
            self.open.borrow_mut().remove(id);
            return Err(changed());
        }
        Ok(())
    }

    /// Reads chunk bytes `range` of `file` into `buf` with pread(2), never through the map
    /// (see `storage::mmap`), and checks the file did not change while they were read. A
    /// file that shrank is a short read, refused like any other change.
    fn read_chunk(
        &self,
        id: &FileId,
        file: &OpenFile,
        partial: bool,
        range: Range<usize>,
        buf: &mut [u8],
    ) -> Result<(), ChunkFailure> {
        use std::os::unix::fs::FileExt;
        match file.map.file().read_exact_at(buf, range.start as u64) {
            Ok(()) => self.check_fresh(id, file, partial),
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                self.open.borrow_mut().remove(id);
                Err(changed())
            }
            Err(e) => Err(ChunkFailure::Io(format!("cannot read file {id}: {}", e.kind()))),
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn run_shard(
    id: ShardId,
    addr: SocketAddr,
    catalog: Arc<HashMap<FileId, ServedFile>>,
    dht: Option<DhtServerOptions>,
    limits: Limits,
    security: Arc<NodeSecurity>,
    stop: Arc<AtomicBool>,
    ready: crossbeam_channel::Sender<io::Result<()>>,
) -> SeedStats {
    let listener = match super::sys::tcp_listener(addr) {
        Ok(l) => l,
        Err(e) => {
            let _ = ready.send(Err(e));
            return SeedStats::default();
        }
    };
    // Shard 0 owns the DHT: the control plane is small, one owner keeps it lock-free.
    let dht_task = match dht.filter(|_| id.0 == 0) {
        None => None,
        Some(opts) => match dht::bind_server(addr) {
            Ok(socket) => {
                let task = dht::serve(socket, addr, opts, security.clone(), stop.clone());
                Some(glommio::spawn_local(task))
            }
            Err(e) => {
                let _ = ready.send(Err(io::Error::other(e.to_string())));
                return SeedStats::default();
            }
        },
    };
    let _ = ready.send(Ok(()));
    drop(ready);
    let shard = Rc::new(Shard {
        id,
        catalog,
        open: RefCell::new(HashMap::new()),
        stats: RefCell::new(SeedStats::default()),
        connections: Cell::new(0),
        limits,
        security,
    });
    let mut backoff = AcceptBackoff::default();
    loop {
        let accepted = future::or(async { Some(listener.accept().await) }, async {
            wait_until(STOP_POLL, || stop.load(Ordering::Relaxed)).await;
            None
        })
        .await;
        let stream = match accepted {
            None => break,
            Some(Ok(s)) => s,
            Some(Err(e)) => {
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
        shard.connections.set(shard.connections.get() + 1);
        let shard2 = shard.clone();
        glommio::spawn_local(async move {
            // Per-connection failures (resets, timeouts) end that connection only.
            let _ = serve_connection(&shard2, stream).await;
            shard2.connections.set(shard2.connections.get() - 1);
        })
        .detach();
    }
    let mut stats = shard.stats.take();
    if let Some(task) = dht_task {
        stats.dht = Some(task.await);
    }
    stats
}

/// Serves one connection until the peer closes it, sends something malformed, or idles out.
/// The handshake comes first; nothing is read as a request before it succeeds. The
/// protocol decisions are the `peer::ServerSession`'s; this pump moves its frames, reads
/// the chunks it names (after the throttle wait, checking the file right before the bytes
/// are read) and arms its idle deadline. Requests are answered in order; the client
/// pipelines as many as it likes, and the pump reads ahead at most one receive buffer of
/// them (the rest waits in the kernel's socket buffer: TCP back-pressure is the
/// per-connection bound).
async fn serve_connection(shard: &Shard, stream: TcpStream) -> io::Result<()> {
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(PEER_TIMEOUT))?;
    stream.set_write_timeout(Some(PEER_TIMEOUT))?;
    // One deadline for the whole handshake, not per read: a client dripping a byte per
    // read timeout must not hold a connection slot unauthenticated.
    let handshake = async {
        TcpConn::establish(stream, &shard.security, TcpSide::Server, REQUEST_BODY_MAX_BYTES)
            .await
            .ok()
    };
    let deadline = async {
        glommio::timer::sleep(PEER_TIMEOUT).await;
        None
    };
    let Some(tcp) = future::or(handshake, deadline).await else {
        shard.stats.borrow_mut().handshakes_failed += 1;
        return Ok(());
    };
    // From here the session's idle deadline decides how long a quiet client may stay.
    tcp.stream().set_read_timeout(None)?;
    let mut conn = Conn::Tcp(tcp);
    let mut session = ServerSession::new(clock::now(), IDLE_TIMEOUT);
    let result = serve(shard, &mut conn, &mut session).await;
    let s = session.stats();
    let mut st = shard.stats.borrow_mut();
    st.requests += s.requests;
    st.manifests_served += s.manifests_served;
    st.error_replies += s.error_replies;
    st.bad_frames += s.bad_frames;
    st.records_rejected += s.records_rejected;
    result
}

async fn serve(shard: &Shard, conn: &mut Conn, session: &mut ServerSession) -> io::Result<()> {
    let mut scratch = Vec::new();
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
                    let chunk = ChunkSend { header, file_id, range, aad, partial };
                    let sent = send_chunk(shard, conn, peer_limit.as_ref(), &mut scratch, chunk);
                    match sent.await? {
                        Ok(()) => session.handle_sent(clock::now()),
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
        let timer = async {
            glommio::timer::sleep(deadline.saturating_duration_since(clock::now())).await;
            None
        };
        let received = future::or(async { Some(conn.recv().await) }, timer).await;
        let now = clock::now();
        match received {
            None => session.handle_timeout(now),
            Some(Ok(Deframed::Control)) => session.handle_frame(now, conn.body(), shard),
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
/// bytes arrive. The file is checked and its bytes read (pread and sealed once, or a map
/// slice handed to send(2); a buffer pread then when paced) after the first piece's wait,
/// right before anything is sent.
/// `Ok(Err(_))`: nothing was sent, the session refuses instead.
async fn send_chunk(
    shard: &Shard,
    conn: &mut Conn,
    peer_limit: Option<&Throttle>,
    scratch: &mut Vec<u8>,
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
    let payload: &[u8] = if sealed || paced {
        // Encrypted, or paced in pieces: pread the chunk into the buffer (and seal it in
        // place, once). Mapped pages are never read in user space, where a truncated file
        // would raise SIGBUS (storage::mmap); and a plaintext chunk that goes out over many
        // waits is read whole now, so a file changed meanwhile cannot cut it short: the
        // change is refused cleanly at the next chunk.
        if scratch.len() < len {
            // Grows to the largest chunk once; never shrinks.
            scratch.resize(len, 0);
        }
        if let Err(why) =
            shard.read_chunk(&c.file_id, &file, c.partial, range.clone(), &mut scratch[..n])
        {
            return Ok(Err(why));
        }
        if sealed {
            conn.seal_chunk(&c.header, c.aad, &mut scratch[..len])?;
        } else {
            conn.begin_plain_chunk(&c.header)?;
        }
        &scratch[..len]
    } else {
        if let Err(why) = shard.check_fresh(&c.file_id, &file, c.partial) {
            return Ok(Err(why));
        }
        conn.begin_plain_chunk(&c.header)?;
        // Plaintext in one write: zero copy, the slice points into the shard's map and
        // glommio hands it to send(2), where a page lost to truncation since the check is
        // EFAULT: this connection closes, the seeder lives.
        &file.map.bytes()[range.clone()]
    };
    conn.write_payload(&payload[first]).await?;
    for p in pieces {
        pace(&limits, p.len()).await;
        conn.write_payload(&payload[p]).await?;
    }
    let mut st = shard.stats.borrow_mut();
    st.chunks_served += 1;
    if sealed {
        st.payload_bytes_sealed += n as u64;
    } else {
        st.payload_bytes_from_map += n as u64;
    }
    drop(st);
    // Start reading the next chunk from disk while this one drains.
    file.map.prefetch(range.end..range.end + n);
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
