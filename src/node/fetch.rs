//! The downloader behind `furymesh get`.
//!
//! One control step fetches and authenticates the manifest; then every shard opens its own
//! connection and pulls chunks from a shared lock-free cursor over the missing ones, keeping
//! a window of requests in flight, hashing each chunk on its own core and writing it through
//! io_uring (glommio `BufferedFile`). The calling thread is the coordinator: it makes
//! verified chunks durable (fdatasync of the data, then an atomic rewrite of the resume
//! state) at intervals, so the resume state never claims a chunk that is not on disk.

use std::cell::RefCell;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use futures_lite::AsyncWriteExt;
use glommio::io::BufferedFile;
use glommio::net::{Preallocated, TcpStream};
use glommio::sync::Semaphore;
use serde::Serialize;

use super::frame::{read_frame, read_payload, FrameError};
use super::{run_local, spawn_shards};
use crate::config::{
    PEER_TIMEOUT, RESPONSE_BODY_MAX_BYTES, RESUME_SAVE_INTERVAL, THROTTLE_BURST_BYTES,
    WRITES_INFLIGHT_MAX,
};
use crate::crypto::{chunk_hash, FileId};
use crate::storage::write_atomic;
use crate::transfer::throttle::Throttle;
use crate::transfer::Bitfield;
use crate::wire::{self, Encoder, ErrorCode, FileInfo, Message};

/// What to download, from where, to where.
#[derive(Debug, Clone)]
pub struct GetOptions {
    pub file_id: FileId,
    pub peer: SocketAddr,
    pub output: PathBuf,
    /// Replace `output` if it exists.
    pub force: bool,
    /// Connections (one per shard) to open to the peer.
    pub connections: usize,
    /// Chunk requests in flight per connection.
    pub window: u32,
    /// Persist the resume state after this many verified bytes (and at least every
    /// `RESUME_SAVE_INTERVAL`).
    pub save_every_bytes: u64,
    /// Download limit, shared by all connections.
    pub download_rate_bytes: Option<u64>,
}

/// The outcome of a download (`--json`).
#[derive(Debug, Clone, Serialize)]
pub struct GetReport {
    pub file_id: String,
    pub file_size: u64,
    /// Payload bytes fetched over the network by this run.
    pub bytes: u64,
    pub seconds: f64,
    pub bytes_per_sec: f64,
    pub chunks_fetched: u64,
    /// Chunks already verified by an earlier, interrupted run.
    pub chunks_reused: u64,
    pub cpu_seconds: f64,
}

/// Progress reported to the caller while downloading.
#[derive(Debug, Clone, Copy)]
pub struct GetProgress {
    pub done_bytes: u64,
    pub total_bytes: u64,
}

/// Why a download failed. Every variant is one line a user can act on.
#[derive(Debug, thiserror::Error)]
pub enum GetError {
    #[error("{path} already exists (use --force to replace it)")]
    OutputExists { path: PathBuf },
    #[error("peer {peer} does not have file {file_id}")]
    UnknownFile { peer: SocketAddr, file_id: FileId },
    #[error("cannot connect to {peer}: {source}")]
    Connect { peer: SocketAddr, source: io::Error },
    #[error("connection to {peer} failed: {what}")]
    Connection { peer: SocketAddr, what: String },
    #[error("peer {peer} refused: {message}")]
    Refused { peer: SocketAddr, message: String },
    #[error("peer {peer} broke the protocol: {what}")]
    Protocol { peer: SocketAddr, what: String },
    #[error("chunk {chunk_index} from {peer} failed verification (hash mismatch); nothing of it was kept")]
    HashMismatch { peer: SocketAddr, chunk_index: u32 },
    #[error("disk full writing {path}")]
    DiskFull { path: PathBuf },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("interrupted; run the same command again to resume")]
    Interrupted,
    #[error("no peer to download from")]
    NoPeers,
}

impl GetError {
    fn io(path: &Path, source: io::Error) -> Self {
        if source.raw_os_error() == Some(libc::ENOSPC) {
            Self::DiskFull { path: path.into() }
        } else {
            Self::Io { path: path.into(), source }
        }
    }

    /// glommio wraps the OS error; unwrap it so ENOSPC is recognised and messages stay short.
    fn glommio<T>(path: &Path, e: glommio::GlommioError<T>) -> Self {
        match e {
            glommio::GlommioError::IoError(source)
            | glommio::GlommioError::EnhancedIoError { source, .. } => Self::io(path, source),
            other => Self::io(path, io::Error::other(other.to_string())),
        }
    }

    fn frame(peer: SocketAddr, e: FrameError) -> Self {
        match e {
            FrameError::TooLarge { .. } => Self::Protocol { peer, what: e.to_string() },
            FrameError::Io(ref io) if io.kind() == io::ErrorKind::TimedOut => Self::Connection {
                peer,
                what: format!("no answer within {}s", PEER_TIMEOUT.as_secs()),
            },
            _ => Self::Connection { peer, what: e.to_string() },
        }
    }

    /// Cheap ordering of errors when several shards fail at once: the first real cause wins
    /// over the "interrupted" that the others report after being told to stop.
    fn is_secondary(&self) -> bool {
        matches!(self, Self::Interrupted)
    }
}

/// Paths of a download's partial data and resume state, next to the output.
fn side_paths(output: &Path) -> (PathBuf, PathBuf) {
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

async fn connect(peer: SocketAddr) -> Result<TcpStream<Preallocated>, GetError> {
    let s = TcpStream::connect_timeout(peer, PEER_TIMEOUT)
        .await
        .map_err(|e| GetError::Connect { peer, source: io::Error::other(e.to_string()) })?;
    let setup = || -> io::Result<()> {
        s.set_nodelay(true)?;
        s.set_read_timeout(Some(PEER_TIMEOUT))?;
        s.set_write_timeout(Some(PEER_TIMEOUT))?;
        Ok(())
    };
    setup().map_err(|e| GetError::Connection { peer, what: e.to_string() })?;
    Ok(s.buffered())
}

fn refused(peer: SocketAddr, file_id: FileId, code: ErrorCode, message: String) -> GetError {
    match code {
        ErrorCode::UnknownFile => GetError::UnknownFile { peer, file_id },
        _ => GetError::Refused { peer, message },
    }
}

/// Asks `peer` for the manifest of `file_id` and checks it against the ID.
async fn fetch_manifest(peer: SocketAddr, file_id: FileId) -> Result<FileInfo, GetError> {
    let mut s = connect(peer).await?;
    let mut enc = Encoder::default();
    let io_err = |e: io::Error| GetError::Connection { peer, what: e.to_string() };
    s.write_all(enc.frame(&Message::FileInfoRequest { file_id })).await.map_err(io_err)?;
    let mut body = Vec::new();
    match read_frame(&mut s, &mut body, RESPONSE_BODY_MAX_BYTES).await {
        Ok(true) => {}
        Ok(false) => {
            return Err(GetError::Connection { peer, what: "closed before answering".into() })
        }
        Err(e) => return Err(GetError::frame(peer, e)),
    }
    match wire::decode(&body) {
        Ok(Message::FileInfo(info)) if info.file_id == file_id => Ok(info),
        Ok(Message::FileInfo(_)) => {
            Err(GetError::Protocol { peer, what: "sent the manifest of another file".into() })
        }
        Ok(Message::Error { code, message, .. }) => Err(refused(peer, file_id, code, message)),
        Ok(_) => {
            Err(GetError::Protocol { peer, what: "unexpected reply to a manifest request".into() })
        }
        Err(e) => Err(GetError::Protocol { peer, what: format!("bad manifest: {e}") }),
    }
}

/// Creates the partial file at full size (so a full disk shows now, not at 90%).
async fn create_partial(partial: &Path, size: u64) -> Result<(), GetError> {
    let f = BufferedFile::create(partial).await.map_err(|e| GetError::glommio(partial, e))?;
    if size > 0 {
        f.pre_allocate(size, false).await.map_err(|e| GetError::glommio(partial, e))?;
    }
    f.close().await.map_err(|e| GetError::glommio(partial, e))
}

/// How long a shard that may not claim more chunks waits before looking again.
const DURABILITY_WAIT: Duration = Duration::from_millis(1);

/// Shared, read-only context of the shards of one download.
struct FetchCtx {
    info: FileInfo,
    peer: SocketAddr,
    partial: PathBuf,
    window: u32,
    /// Chunks to fetch; shards claim them in order through `cursor`.
    missing: Vec<u32>,
    cursor: AtomicUsize,
    stop: AtomicBool,
    /// Verified bytes after which the coordinator makes them durable.
    save_every_bytes: u64,
    /// Download limit shared by every shard (charged when a chunk is requested).
    throttle: Option<Throttle>,
    /// Verified bytes not yet durable. Shards stop claiming chunks while this is at
    /// `unsaved_max_bytes`, so a crash never loses more than that plus the requests in flight.
    unsaved_bytes: AtomicU64,
    unsaved_max_bytes: u64,
}

enum ShardMsg {
    Verified { index: u32, len: u64 },
    Done(Result<(), GetError>),
}

async fn fetch_shard(ctx: Arc<FetchCtx>, tx: Sender<ShardMsg>) {
    let result = fetch_chunks(&ctx, &tx).await;
    if result.is_err() {
        ctx.stop.store(true, Ordering::SeqCst);
    }
    let _ = tx.send(ShardMsg::Done(result));
}

async fn fetch_chunks(ctx: &Arc<FetchCtx>, tx: &Sender<ShardMsg>) -> Result<(), GetError> {
    let peer = ctx.peer;
    if ctx.cursor.load(Ordering::Relaxed) >= ctx.missing.len() {
        return Ok(());
    }
    let mut s = connect(peer).await?;
    let writer = ChunkWriter::open(&ctx.partial).await?;
    let mut enc = Encoder::default();
    let mut requests = Vec::new();
    let mut inflight = std::collections::VecDeque::new();
    let mut body = Vec::new();
    let io_err = |e: io::Error| GetError::Connection { peer, what: e.to_string() };
    loop {
        // Top up the window with one write for all new requests.
        requests.clear();
        while inflight.len() < ctx.window as usize
            && !ctx.stop.load(Ordering::Relaxed)
            && ctx.unsaved_bytes.load(Ordering::Acquire) < ctx.unsaved_max_bytes
        {
            let k = ctx.cursor.fetch_add(1, Ordering::Relaxed);
            let Some(&index) = ctx.missing.get(k) else { break };
            if let Some(t) = &ctx.throttle {
                let r = ctx.info.chunk_range(index);
                let wait = t.reserve(Instant::now(), r.end - r.start);
                if !wait.is_zero() {
                    glommio::timer::sleep(wait).await;
                }
            }
            requests.extend_from_slice(enc.frame(&Message::ChunkRequest {
                file_id: ctx.info.file_id,
                chunk_index: index,
                priority: 0,
            }));
            inflight.push_back(index);
        }
        if !requests.is_empty() {
            s.write_all(&requests).await.map_err(io_err)?;
        }
        if ctx.stop.load(Ordering::Relaxed) {
            return Err(GetError::Interrupted);
        }
        let Some(index) = inflight.pop_front() else {
            if ctx.cursor.load(Ordering::Relaxed) >= ctx.missing.len() {
                return writer.finish().await;
            }
            // Everything claimable waits for the coordinator to make earlier chunks durable.
            glommio::timer::sleep(DURABILITY_WAIT).await;
            continue;
        };
        match read_frame(&mut s, &mut body, RESPONSE_BODY_MAX_BYTES).await {
            Ok(true) => {}
            Ok(false) => {
                return Err(GetError::Connection {
                    peer,
                    what: "peer closed the connection".into(),
                })
            }
            Err(e) => return Err(GetError::frame(peer, e)),
        }
        let range = ctx.info.chunk_range(index);
        let want = range.end - range.start;
        match wire::decode(&body) {
            Ok(Message::ChunkResponse { file_id, chunk_index, payload_len })
                if file_id == ctx.info.file_id
                    && chunk_index == index
                    && payload_len as u64 == want => {}
            Ok(Message::ChunkResponse { chunk_index, payload_len, .. }) => {
                return Err(GetError::Protocol {
                    peer,
                    what: format!(
                        "answered chunk {index} with chunk {chunk_index} of {payload_len} bytes"
                    ),
                })
            }
            Ok(Message::Error { code, message, .. }) => {
                return Err(refused(peer, ctx.info.file_id, code, message))
            }
            Ok(_) => {
                return Err(GetError::Protocol {
                    peer,
                    what: "unexpected reply to a chunk request".into(),
                })
            }
            Err(e) => {
                return Err(GetError::Protocol { peer, what: format!("bad chunk header: {e}") })
            }
        }
        let mut buf = vec![0u8; want as usize];
        read_payload(&mut s, &mut buf).await.map_err(|e| GetError::frame(peer, e))?;
        // Verify before the bytes count for anything.
        if chunk_hash(&buf) != ctx.info.chunk_hashes[index as usize] {
            return Err(GetError::HashMismatch { peer, chunk_index: index });
        }
        writer.start(ctx.clone(), tx.clone(), index, range.start, buf).await?;
    }
}

/// Writes verified chunks in the background (at most `WRITES_INFLIGHT_MAX` at once, so the
/// shard receives and hashes the next chunk while the kernel copies this one), and reports
/// each to the coordinator once it is written.
struct ChunkWriter {
    file: Rc<BufferedFile>,
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
            file: Rc::new(file),
            permits: Rc::new(Semaphore::new(WRITES_INFLIGHT_MAX)),
            failed: Rc::new(RefCell::new(None)),
        })
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
        let closed = |_| GetError::io(&ctx.partial, io::Error::other("writer closed"));
        let permit = self.permits.acquire_static_permit(1).await.map_err(closed)?;
        let (file, failed) = (self.file.clone(), self.failed.clone());
        glommio::spawn_local(async move {
            let len = buf.len() as u64;
            let fail = match file.write_at(buf, offset).await {
                Ok(n) if n as u64 == len => {
                    ctx.unsaved_bytes.fetch_add(len, Ordering::AcqRel);
                    let _ = tx.send(ShardMsg::Verified { index, len });
                    None
                }
                Ok(_) => Some(GetError::io(&ctx.partial, io::Error::other("short write"))),
                Err(e) => Some(GetError::glommio(&ctx.partial, e)),
            };
            if let Some(e) = fail {
                failed.borrow_mut().get_or_insert(e);
            }
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
}

impl Durability {
    /// Returns the number of bytes that became durable.
    fn save(&mut self) -> Result<u64, GetError> {
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

impl GetError {
    /// Whether the fault lies with the peer, so another provider may do better.
    pub fn is_peer_fault(&self) -> bool {
        matches!(
            self,
            Self::UnknownFile { .. }
                | Self::Connect { .. }
                | Self::Connection { .. }
                | Self::Refused { .. }
                | Self::Protocol { .. }
                | Self::HashMismatch { .. }
        )
    }
}

/// Downloads from the first of `peers` that works: on a peer's fault (see
/// [`GetError::is_peer_fault`]) `failover` hears why and the next peer continues where the
/// last one stopped (verified chunks are kept). `opts.peer` is ignored.
pub fn get_from_any(
    opts: &GetOptions,
    peers: &[SocketAddr],
    interrupt: &AtomicBool,
    progress: &dyn Fn(GetProgress),
    failover: &dyn Fn(&GetError),
) -> Result<GetReport, GetError> {
    let mut opts = opts.clone();
    let (last, others) = peers.split_last().ok_or(GetError::NoPeers)?;
    for &peer in others {
        opts.peer = peer;
        match get(&opts, interrupt, progress) {
            Err(e) if e.is_peer_fault() => failover(&e),
            done => return done,
        }
    }
    opts.peer = *last;
    get(&opts, interrupt, progress)
}

/// Downloads a file. `interrupt` stops the download cleanly (state saved) when it becomes
/// true; `progress` is called a few times per second.
pub fn get(
    opts: &GetOptions,
    interrupt: &AtomicBool,
    progress: &dyn Fn(GetProgress),
) -> Result<GetReport, GetError> {
    let started = Instant::now();
    let cpu_start = super::process_cpu_seconds();
    let output = &opts.output;
    if !opts.force && fs::symlink_metadata(output).is_ok() {
        return Err(GetError::OutputExists { path: output.clone() });
    }
    let (partial, resume) = side_paths(output);
    let (info, bits) = match load_resume(&opts.file_id, &partial, &resume) {
        Some(state) => state,
        None => {
            let (peer, id, p) = (opts.peer, opts.file_id, partial.clone());
            let info = run_local(async move {
                let info = fetch_manifest(peer, id).await?;
                create_partial(&p, info.size).await?;
                Ok::<_, GetError>(info)
            })
            .map_err(|e| GetError::io(&partial, e))??;
            let bits = Bitfield::new(info.chunk_count());
            write_atomic(&resume, &wire::encode_resume(&info, bits.as_bytes()))
                .map_err(|e| GetError::io(&resume, e))?;
            (info, bits)
        }
    };
    let reused = bits.count_ones() as u64;
    let missing: Vec<u32> = (0..info.chunk_count()).filter(|&i| !bits.get(i)).collect();
    let data =
        OpenOptions::new().write(true).open(&partial).map_err(|e| GetError::io(&partial, e))?;
    let mut dur = Durability {
        info: info.clone(),
        bits,
        pending: Vec::new(),
        pending_bytes: 0,
        data,
        partial: partial.clone(),
        resume: resume.clone(),
    };
    let mut fetched = 0u64;
    let mut fetched_bytes = 0u64;
    if !missing.is_empty() {
        let connections = opts.connections.clamp(1, missing.len());
        let ctx = Arc::new(FetchCtx {
            info: info.clone(),
            peer: opts.peer,
            partial: partial.clone(),
            window: opts.window.max(1),
            missing,
            cursor: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
            save_every_bytes: opts.save_every_bytes,
            throttle: opts
                .download_rate_bytes
                .map(|r| Throttle::new(r, THROTTLE_BURST_BYTES, Instant::now())),
            unsaved_bytes: AtomicU64::new(0),
            // Saving starts at save_every; the second half keeps shards busy meanwhile.
            unsaved_max_bytes: opts.save_every_bytes.saturating_mul(2),
        });
        let (tx, rx) = crossbeam_channel::unbounded();
        let ctx2 = ctx.clone();
        let handles = spawn_shards("furymesh-get", connections, move |_| fetch_shard(ctx2, tx))
            .map_err(|e| GetError::Connection {
                peer: opts.peer,
                what: format!("cannot start shards: {e}"),
            })?;
        let outcome = coordinate(&ctx, &rx, connections, &mut dur, interrupt, progress);
        ctx.stop.store(true, Ordering::SeqCst);
        handles.join_all();
        let (n, b) = outcome?;
        fetched = n;
        fetched_bytes = b;
    }
    dur.save()?;
    if dur.bits.count_ones() != info.chunk_count() {
        return Err(GetError::Io {
            path: partial,
            source: io::Error::other("download ended with chunks missing"),
        });
    }
    finish(&partial, &resume, output, opts.force)?;
    let seconds = started.elapsed().as_secs_f64();
    Ok(GetReport {
        file_id: info.file_id.to_hex(),
        file_size: info.size,
        bytes: fetched_bytes,
        seconds,
        bytes_per_sec: if seconds > 0.0 { fetched_bytes as f64 / seconds } else { 0.0 },
        chunks_fetched: fetched,
        chunks_reused: reused,
        cpu_seconds: super::process_cpu_seconds() - cpu_start,
    })
}

/// Runs on the calling thread while the shards fetch: collects verified chunks, persists
/// them at intervals, reports progress, and returns (chunks, bytes) fetched or the first
/// real error.
fn coordinate(
    ctx: &FetchCtx,
    rx: &Receiver<ShardMsg>,
    shards: usize,
    dur: &mut Durability,
    interrupt: &AtomicBool,
    progress: &dyn Fn(GetProgress),
) -> Result<(u64, u64), GetError> {
    let info = &ctx.info;
    let mut done_bytes: u64 = (0..info.chunk_count())
        .filter(|&i| dur.bits.get(i))
        .map(|i| info.chunk_range(i).end - info.chunk_range(i).start)
        .sum();
    let mut error: Option<GetError> = None;
    let (mut done, mut chunks, mut bytes) = (0, 0u64, 0u64);
    let mut last_save = Instant::now();
    while done < shards {
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(ShardMsg::Verified { index, len }) => {
                dur.pending.push(index);
                dur.pending_bytes += len;
                chunks += 1;
                bytes += len;
                done_bytes += len;
            }
            Ok(ShardMsg::Done(r)) => {
                done += 1;
                if let Err(e) = r {
                    if error.as_ref().is_none_or(GetError::is_secondary) {
                        error = Some(e);
                    }
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
        if interrupt.load(Ordering::Relaxed) {
            ctx.stop.store(true, Ordering::SeqCst);
        }
        if dur.pending_bytes >= ctx.save_every_bytes || last_save.elapsed() >= RESUME_SAVE_INTERVAL
        {
            let saved = dur.save()?;
            ctx.unsaved_bytes.fetch_sub(saved, Ordering::AcqRel);
            last_save = Instant::now();
            progress(GetProgress { done_bytes, total_bytes: dur.info.size });
        }
    }
    progress(GetProgress { done_bytes, total_bytes: dur.info.size });
    match error {
        Some(e) => {
            // Keep what verified before failing.
            dur.save()?;
            Err(e)
        }
        None => Ok((chunks, bytes)),
    }
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
