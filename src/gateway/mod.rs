//! The HTTP gateway of a running node (`seed --http HOST:PORT`): its published files and
//! collections to plain HTTP clients (curl, wget, browsers, package managers), public and
//! unauthenticated, separate from the token-protected control API.
//!
//! - `GET`/`HEAD /files/FILE_ID`: a published file (64 lowercase hex characters).
//! - `GET`/`HEAD /c/COLLECTION_ID/PATH`: the file a published collection (`c-` + 64 hex)
//!   lists at entry path PATH. PATH is looked up in the collection's manifest, never on a
//!   filesystem: a path the manifest does not list is 404 whatever it spells, and one no
//!   manifest could list (absolute, `..`, `.`, empty components, backslashes, controls)
//!   is 400 before any lookup.
//!
//! Answers: single `Range` requests (206 with `Content-Range`; 416 with
//! `Content-Range: bytes */LEN` when unsatisfiable; several ranges or an unparsable header:
//! the whole file with 200, see [`range`]), `Content-Length`, `ETag` (the file ID, quoted),
//! `If-None-Match` / `If-Modified-Since` → 304, `If-Range`, `Last-Modified` (the mtime
//! published), `Content-Type` from the name, `Content-Disposition` with the published name,
//! `Cache-Control: immutable` (an ID names its bytes forever). Client mistakes are 4xx with
//! a one-line text body; a file that changed on disk since it was published is 503 (or,
//! if it changes mid-body, a body cut short, which every client sees as an error).
//!
//! It runs like the API: a current-thread tokio runtime with axum on a thread of its own
//! (`furymesh-http`), reaching the node only through [`Handle`] (the live catalog). Bytes
//! are `pread` from the published file in `GATEWAY_READ_BYTES` pieces (from the page cache
//! with `RWF_NOWAIT` on the runtime thread, else on a small blocking pool), each piece
//! followed by an `fstat` against the catalog's size and mtime; never
//! read from a memory map in user space (ARCHITECTURE.md, "The HTTP gateway").

mod listener;
pub mod meta;
pub mod range;
mod share;

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::net::SocketAddr;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use axum::body::Body;
use axum::extract::{Path as UrlPath, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use bytes::Bytes;

use crate::collection::{check_entry_path, Collection};
use crate::config::{
    COLLECTION_BYTES_MAX, GATEWAY_COLLECTIONS_CACHED, GATEWAY_CONNECTIONS_MAX, GATEWAY_READERS_MAX,
    GATEWAY_READ_BYTES, GATEWAY_STALL_TIMEOUT,
};
use crate::crypto::{ContentId, FileId, IdKind};
use crate::node::Handle;
use crate::server_thread::ServerThread;
use crate::storage::{layout, CatalogEntry, FileStamp};
use range::RangeAnswer;

/// Where the gateway listens and for which data directory.
#[derive(Debug, Clone)]
pub struct GatewayOptions {
    /// Address to bind (port 0: any free port).
    pub bind: SocketAddr,
    /// The node's data directory: the address file is written there, and collections are
    /// read from its `collections/`.
    pub data_dir: PathBuf,
}

/// A running gateway. [`GatewayServer::stop`] (or dropping it) closes the listener and
/// every connection (a download in progress is cut), joins the thread and removes the
/// address file.
pub struct GatewayServer {
    server: ServerThread,
}

impl GatewayServer {
    /// Binds `opts.bind`, writes `DATA_DIR/http.addr` and starts serving on a thread named
    /// `furymesh-http`. Errors: the address is taken or not bindable, the address file
    /// cannot be written, or the thread cannot start.
    pub fn start(handle: Handle, opts: &GatewayOptions) -> io::Result<Self> {
        let listener = std::net::TcpListener::bind(opts.bind)?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let state = Arc::new(GatewayState {
            handle,
            collections_dir: layout::collections_dir(&opts.data_dir),
            collections: Mutex::default(),
            signals: share::SignalLimiter::default(),
            providers: share::Providers::default(),
        });
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .max_blocking_threads(GATEWAY_READERS_MAX)
            .thread_name("furymesh-http-r")
            .build()?;
        let addr_file = layout::http_addr_path(&opts.data_dir);
        let server =
            ServerThread::spawn("furymesh-http", addr, addr_file, runtime, |stop| async move {
                let listener = match tokio::net::TcpListener::from_std(listener) {
                    Ok(l) => listener::GatewayListener::new(
                        l,
                        GATEWAY_CONNECTIONS_MAX,
                        GATEWAY_STALL_TIMEOUT,
                    ),
                    Err(e) => {
                        note!("furymesh seed: the HTTP gateway cannot listen: {e}");
                        return;
                    }
                };
                let serve = async move {
                    let app = router(state).into_make_service_with_connect_info::<share::Client>();
                    if let Err(e) = axum::serve(listener, app).await {
                        note!("furymesh seed: the HTTP gateway stopped: {e}");
                    }
                };
                // Not a graceful shutdown: a download of a large file would hold `seed`'s exit
                // for as long as the client likes. Connections end with the runtime, dropped
                // when the thread returns.
                let stopped = async move {
                    let _ = stop.recv_async().await;
                };
                futures_lite::future::or(serve, stopped).await;
            })?;
        Ok(Self { server })
    }

    /// The address the gateway listens on (port 0 resolved).
    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// Stops serving (connections in progress are closed), joins the thread and removes
    /// the address file.
    pub fn stop(self) {
        // Dropping the server thread does it.
    }
}

/// The gateway address a running node on `data_dir` wrote, if any.
pub fn read_addr(data_dir: &Path) -> Option<SocketAddr> {
    std::fs::read_to_string(layout::http_addr_path(data_dir)).ok()?.trim().parse().ok()
}

/// The gateway URL of a published file (`http://ADDR/files/ID`).
pub fn file_url(addr: SocketAddr, id: &FileId) -> String {
    format!("http://{addr}/files/{id}")
}

/// The share page of a published file (`http://ADDR/f/ID`): a browser downloads it over
/// WebRTC from there, verifying every chunk (needs `seed --webrtc`).
pub fn share_url(addr: SocketAddr, id: &FileId) -> String {
    format!("http://{addr}/f/{id}")
}

/// What every handler shares.
struct GatewayState {
    handle: Handle,
    /// `DATA_DIR/collections`: a catalog entry whose file lives there is a collection's
    /// encoding, served under `/c/` only.
    collections_dir: PathBuf,
    /// Decoded collections by ID (at most `GATEWAY_COLLECTIONS_CACHED`).
    collections: Mutex<HashMap<FileId, Arc<Collection>>>,
    /// The share page's signaling budgets per client IP.
    signals: share::SignalLimiter,
    /// Other providers of each shared file, as the last DHT lookup found them: the only
    /// nodes the page's offers are relayed to.
    providers: share::Providers,
}

impl GatewayState {
    fn is_collection(&self, e: &CatalogEntry) -> bool {
        e.path.starts_with(&self.collections_dir)
    }
}

fn router(state: Arc<GatewayState>) -> Router {
    Router::new()
        .route("/files/{id}", get(file))
        .route("/c/{id}/{*path}", get(collection_entry))
        .route("/f/sw.js", get(share::worker))
        .route("/f/{id}", get(share::page))
        .route("/f/{id}/manifest", get(share::manifest))
        .route("/f/{id}/signal", axum::routing::post(share::signal))
        .route("/f/{id}/peers", get(share::peers))
        .route("/f/{id}/signal/{node}", axum::routing::post(share::relay))
        .route("/share.js", get(share::script))
        .route("/share.css", get(share::style))
        .fallback(|| async {
            text(
                StatusCode::NOT_FOUND,
                "not found: the gateway serves /files/FILE_ID, /c/COLLECTION_ID/PATH and the share page /f/FILE_ID",
            )
        })
        .with_state(state)
}

/// A short plain-text answer (errors, 416).
fn text(status: StatusCode, msg: &str) -> Response {
    let mut r = Response::new(Body::from(format!("{msg}\n")));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    r
}

/// `GET`/`HEAD /files/FILE_ID`.
async fn file(
    State(st): State<Arc<GatewayState>>,
    UrlPath(id): UrlPath<String>,
    method: Method,
    headers: HeaderMap,
) -> Response {
    let id: FileId = match id.parse::<ContentId>() {
        Ok(ContentId { id, kind: IdKind::File }) => id,
        Ok(_) => {
            return text(
                StatusCode::BAD_REQUEST,
                "a collection ID: its files are at /c/COLLECTION_ID/PATH",
            )
        }
        Err(e) => return text(StatusCode::BAD_REQUEST, &format!("bad file ID: {e}")),
    };
    match st.handle.published_entry(&id) {
        Some(e) if !st.is_collection(&e) => {
            let name = e.info.name.clone();
            serve(e, &name, &method, &headers).await
        }
        _ => text(StatusCode::NOT_FOUND, "no such file published here"),
    }
}

/// `GET`/`HEAD /c/COLLECTION_ID/PATH`.
async fn collection_entry(
    State(st): State<Arc<GatewayState>>,
    UrlPath((id, path)): UrlPath<(String, String)>,
    method: Method,
    headers: HeaderMap,
) -> Response {
    let id = match id.parse::<ContentId>() {
        Ok(ContentId { id, kind: IdKind::Collection }) => id,
        Ok(_) => {
            return text(
                StatusCode::BAD_REQUEST,
                "not a collection ID (`c-` and 64 hex characters)",
            )
        }
        Err(e) => return text(StatusCode::BAD_REQUEST, &format!("bad collection ID: {e}")),
    };
    if let Err(e) = check_entry_path(&path) {
        return text(StatusCode::BAD_REQUEST, &format!("bad entry path: {e}"));
    }
    let blob = match st.handle.published_entry(&id) {
        Some(e) if st.is_collection(&e) => e,
        _ => return text(StatusCode::NOT_FOUND, "no such collection published here"),
    };
    let collection = match load_collection(&st, blob).await {
        Ok(c) => c,
        Err(e) => {
            return text(StatusCode::SERVICE_UNAVAILABLE, &format!("collection unreadable: {e}"))
        }
    };
    let Ok(i) = collection.entries.binary_search_by(|e| e.path.as_bytes().cmp(path.as_bytes()))
    else {
        return text(StatusCode::NOT_FOUND, "no such path in this collection");
    };
    let want = &collection.entries[i];
    match st.handle.published_entry(&want.file_id) {
        Some(e) if !st.is_collection(&e) => serve(e, &want.path, &method, &headers).await,
        _ => text(StatusCode::NOT_FOUND, "this entry's file is not published here any more"),
    }
}

/// The decoded collection of catalog entry `blob` (its encoding, published by this node),
/// from the cache or read now (at most `COLLECTION_BYTES_MAX` bytes, size and mtime as
/// published, decoded and checked like a peer's).
async fn load_collection(
    st: &GatewayState,
    blob: Arc<CatalogEntry>,
) -> io::Result<Arc<Collection>> {
    let id = blob.info.file_id;
    if let Some(c) = lock(&st.collections).get(&id) {
        return Ok(c.clone());
    }
    let c = blocking(move || {
        if blob.stamp.size > COLLECTION_BYTES_MAX {
            return Err(io::Error::other("larger than COLLECTION_BYTES_MAX"));
        }
        let f = open_checked(&blob)?;
        let mut buf = vec![0u8; blob.stamp.size as usize];
        f.read_exact_at(&mut buf, 0)?;
        check_stamp(&f, blob.stamp)?;
        crate::wire::decode_collection(&buf).map_err(io::Error::other)
    })
    .await?;
    let c = Arc::new(c);
    let mut cache = lock(&st.collections);
    if cache.len() >= GATEWAY_COLLECTIONS_CACHED {
        cache.clear();
    }
    cache.insert(id, c.clone());
    Ok(c)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Runs `f` on the gateway's blocking pool (reads that may wait for the disk never run on
/// its runtime thread).
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    tokio::task::spawn_blocking(f).await.unwrap_or_else(|e| Err(io::Error::other(e.to_string())))
}

/// The error of a file that is not as published.
fn changed() -> io::Error {
    io::Error::other("the file changed on disk since it was published")
}

/// Fails unless `f`'s size and mtime are still `stamp`.
fn check_stamp(f: &File, stamp: FileStamp) -> io::Result<()> {
    let meta = f.metadata()?;
    if !meta.is_file() || FileStamp::of(&meta) != stamp {
        return Err(changed());
    }
    Ok(())
}

/// Opens a published file and checks it is still a regular file with the size and mtime
/// the catalog recorded. `O_NONBLOCK`: a FIFO put in its place must not block the open.
fn open_checked(e: &CatalogEntry) -> io::Result<File> {
    let f = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK).open(&e.path)?;
    check_stamp(&f, e.stamp)?;
    Ok(f)
}

/// Fills `buf[done..]` from `pos + done` (a short read is a file that shrank), then checks
/// the stamp again, so no byte of a file changed meanwhile is sent as this ID's.
fn read_piece(
    f: &File,
    mut buf: Vec<u8>,
    done: usize,
    pos: u64,
    stamp: FileStamp,
) -> io::Result<Bytes> {
    f.read_exact_at(&mut buf[done..], pos + done as u64).map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => changed(),
        _ => e,
    })?;
    check_stamp(f, stamp)?;
    Ok(Bytes::from(buf))
}

/// Reads into `buf` from `pos` only what the page cache holds (`preadv2` with
/// `RWF_NOWAIT`: it never waits for the disk), returning how many bytes it got. Cheap
/// enough for the runtime thread: the common case of a cached file then costs no hop to
/// the blocking pool. Any error (not cached, a kernel or filesystem without `RWF_NOWAIT`)
/// or end of file stops it; the pool reads the rest and reports real errors.
fn read_cached(f: &File, buf: &mut [u8], pos: u64) -> usize {
    use rustix::io::{preadv2, ReadWriteFlags};
    let mut done = 0;
    while done < buf.len() {
        let mut slice = [io::IoSliceMut::new(&mut buf[done..])];
        match preadv2(f, &mut slice, pos + done as u64, ReadWriteFlags::NOWAIT) {
            Ok(n) if n > 0 => done += n,
            _ => break,
        }
    }
    done
}

/// The answer for published file `entry` named `name`, for a `GET` or `HEAD` with
/// `headers`.
async fn serve(
    entry: Arc<CatalogEntry>,
    name: &str,
    method: &Method,
    headers: &HeaderMap,
) -> Response {
    let stamp = entry.stamp;
    let e2 = entry.clone();
    let file = match blocking(move || open_checked(&e2)).await {
        Ok(f) => Arc::new(f),
        Err(e) => {
            note!("furymesh seed: HTTP gateway: {}: {e}", entry.path.display());
            return text(
                StatusCode::SERVICE_UNAVAILABLE,
                "this file changed or vanished on disk since it was published; the node serves it again once it is republished",
            );
        }
    };
    let len = stamp.size;
    let etag = format!("\"{}\"", entry.info.file_id);
    let mtime = SystemTime::UNIX_EPOCH
        + Duration::from_secs(stamp.mtime_ns.div_euclid(1_000_000_000).max(0) as u64);
    let last_modified = httpdate::fmt_http_date(mtime);

    let mut h = HeaderMap::new();
    let mut put = |k: header::HeaderName, v: &str| {
        if let Ok(v) = HeaderValue::from_str(v) {
            h.insert(k, v);
        }
    };
    put(header::ETAG, &etag);
    put(header::LAST_MODIFIED, &last_modified);
    put(header::CACHE_CONTROL, "public, max-age=31536000, immutable");
    put(header::ACCEPT_RANGES, "bytes");

    // Conditional requests (RFC 9110 §13.2.2): If-None-Match first, If-Modified-Since only
    // without it.
    let not_modified = match headers.get(header::IF_NONE_MATCH) {
        Some(v) => meta::none_match(v.as_bytes(), &etag),
        None => headers
            .get(header::IF_MODIFIED_SINCE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| httpdate::parse_http_date(v).ok())
            .is_some_and(|since| mtime <= since),
    };
    if not_modified {
        return with(StatusCode::NOT_MODIFIED, h, Body::empty());
    }

    put(header::CONTENT_TYPE, meta::content_type(name));
    put(header::CONTENT_DISPOSITION, &meta::content_disposition(name));
    put(header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    // If-Range: the range holds only for this very representation.
    let range_ok = headers
        .get(header::IF_RANGE)
        .is_none_or(|v| v.to_str().is_ok_and(|v| v == etag || v == last_modified));
    let ranged = if range_ok {
        range::answer(headers.get(header::RANGE).map(|v| v.as_bytes()), len)
    } else {
        RangeAnswer::Whole
    };
    let (status, span) = match ranged {
        RangeAnswer::Whole => (StatusCode::OK, 0..len),
        RangeAnswer::Part(r) => {
            put(header::CONTENT_RANGE, &format!("bytes {}-{}/{len}", r.start, r.end - 1));
            (StatusCode::PARTIAL_CONTENT, r)
        }
        RangeAnswer::Unsatisfiable => {
            let mut r = text(StatusCode::RANGE_NOT_SATISFIABLE, "range not satisfiable");
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{len}")) {
                r.headers_mut().insert(header::CONTENT_RANGE, v);
            }
            return r;
        }
    };
    put(header::CONTENT_LENGTH, &(span.end - span.start).to_string());
    if *method == Method::HEAD {
        return with(status, h, Body::empty());
    }
    with(status, h, body(file, span, stamp))
}

fn with(status: StatusCode, headers: HeaderMap, body: Body) -> Response {
    let mut r = Response::new(body);
    *r.status_mut() = status;
    *r.headers_mut() = headers;
    r
}

/// The bytes `span` of `file`, read one `GATEWAY_READ_BYTES` piece at a time as hyper
/// asks for them: a slow client holds one piece, not the file. An error (the file shrank
/// or changed) ends the stream, and hyper closes the connection with the body short of its
/// `Content-Length`.
fn body(file: Arc<File>, span: std::ops::Range<u64>, stamp: FileStamp) -> Body {
    let stream = futures_lite::stream::unfold(span, move |span| {
        let file = file.clone();
        async move {
            if span.start >= span.end {
                return None;
            }
            let pos = span.start;
            let n = (span.end - pos).min(GATEWAY_READ_BYTES as u64) as usize;
            let mut buf = vec![0u8; n];
            let got = read_cached(&file, &mut buf, pos);
            let piece = if got == n && check_stamp(&file, stamp).is_ok() {
                Ok(Bytes::from(buf))
            } else {
                blocking(move || read_piece(&file, buf, got, pos, stamp)).await
            };
            match piece {
                Ok(b) => Some((Ok(b), pos + n as u64..span.end)),
                Err(e) => {
                    note!("furymesh seed: HTTP gateway: a response was cut at byte {pos}: {e}");
                    Some((Err(e), span.end..span.end))
                }
            }
        }
    });
    Body::from_stream(stream)
}
