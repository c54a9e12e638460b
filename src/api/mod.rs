//! The control API and `/metrics` of a running node: HTTP/1.1 + JSON on a control-plane
//! thread of its own.
//!
//! The thread runs a current-thread tokio runtime with axum (hyper underneath): a
//! well-kept HTTP stack for a few requests a second, kept off the shards so that the data
//! path never waits on it and glommio's executors never host a second runtime. It reaches
//! the node only through [`Handle`], and every call that can block (a `stats` round trip
//! to the shards, hashing a file to publish, a DHT lookup) runs on a small pool of
//! blocking threads (`API_WORKERS_MAX`), never on the runtime's thread and never on a shard.
//!
//! Authentication: a random bearer token in `DATA_DIR/api.token` (mode 0600, kept across
//! restarts); mutating calls always need `Authorization: Bearer TOKEN`, and every call does
//! when the API is bound to a non-loopback address. The address it listens on is written
//! to `DATA_DIR/api.addr` while it runs, so local clients (`furymesh status`) find it.

mod client;
mod downloads;
mod error;
mod listener;
mod metrics;
mod routes;
mod ui;

use std::fs;
use std::io::{self, Write};
use std::net::SocketAddr;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use client::{ApiClient, ClientError};
pub use error::ApiError;

use crate::node::{clock, Handle};
use crate::server_thread::ServerThread;
use crate::storage::layout;

/// Bytes of randomness in a token (hex-encoded in the file and the header).
const TOKEN_BYTES: usize = 32;

/// Where and for which data directory the API runs.
#[derive(Debug, Clone)]
pub struct ApiOptions {
    /// Address to bind (port 0: any free port).
    pub bind: SocketAddr,
    /// The node's data directory: the token and the address file live there.
    pub data_dir: PathBuf,
    /// Where the node's public HTTP gateway listens, if it runs (`GET /api/node` says so).
    pub http_gateway: Option<SocketAddr>,
}

/// A running API server. [`ApiServer::stop`] (or dropping it) stops the thread and removes
/// the address file.
pub struct ApiServer {
    server: ServerThread,
    state: Arc<routes::ApiState>,
}

impl ApiServer {
    /// Binds `opts.bind`, makes sure the token exists, writes the address file and starts
    /// serving on a thread named `furymesh-api`. Errors: the address is taken or not
    /// bindable, or the data directory cannot hold the token or the address file.
    pub fn start(handle: Handle, opts: &ApiOptions) -> io::Result<Self> {
        let token = load_or_create_token(&opts.data_dir)?;
        let listener = std::net::TcpListener::bind(opts.bind)?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let state = Arc::new(
            routes::ApiState::new(
                handle,
                &token,
                addr.ip().is_loopback(),
                clock::now(),
                Some(opts.data_dir.clone()),
            )
            .with_http_gateway(opts.http_gateway),
        );
        state.restore_downloads();
        let state2 = state.clone();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .max_blocking_threads(crate::config::API_WORKERS_MAX)
            .thread_name("furymesh-api-w")
            .build()?;
        let addr_file = layout::api_addr_path(&opts.data_dir);
        let server =
            ServerThread::spawn("furymesh-api", addr, addr_file, runtime, |stop| async move {
                let listener = match tokio::net::TcpListener::from_std(listener) {
                    Ok(l) => listener::CappedListener::new(l),
                    Err(e) => {
                        note!("furymesh seed: the API cannot listen: {e}");
                        return;
                    }
                };
                let app = routes::router(state2);
                let stopped = async move {
                    let _ = stop.recv_async().await;
                };
                if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(stopped).await {
                    note!("furymesh seed: the API stopped: {e}");
                }
            })?;
        Ok(Self { server, state })
    }

    /// The address the API listens on (port 0 resolved).
    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// Stops accepting, lets requests in flight finish, joins the thread, removes the
    /// address file, then cancels the downloads the API started (their state saved for a
    /// later resume) and waits for them.
    pub fn stop(self) {
        // Drop does it.
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        self.server.shut();
        self.state.stop_downloads();
    }
}

/// The token in `DATA_DIR/api.token`, created (64 hex characters, mode 0600) if missing or
/// unusable. A token readable by others is refused, like the identity key.
pub fn load_or_create_token(data_dir: &Path) -> io::Result<String> {
    let path = layout::api_token_path(data_dir);
    match fs::read_to_string(&path) {
        Ok(s) if valid_token(s.trim()) => {
            let mode = fs::metadata(&path)?.permissions().mode();
            if mode & 0o077 != 0 {
                return Err(io::Error::new(
                    io::ErrorKind::PermissionDenied,
                    format!(
                        "{} is readable by others (mode {:o}); chmod 600 it or delete it",
                        path.display(),
                        mode & 0o777
                    ),
                ));
            }
            return Ok(s.trim().to_owned());
        }
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    fs::create_dir_all(data_dir)?;
    let mut raw = [0u8; TOKEN_BYTES];
    clock::fill_random(&mut raw);
    let token = hex::encode(raw);
    // Written aside, then linked into place: link(2) fails if a token appeared meanwhile
    // (two first starts at once), and then both use the one that won.
    let tmp = path.with_extension(format!("new{}", std::process::id()));
    write_atomically(&tmp, format!("{token}\n").as_bytes(), 0o600)?;
    let linked = fs::hard_link(&tmp, &path);
    let _ = fs::remove_file(&tmp);
    match linked {
        Ok(()) => Ok(token),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => read_token(data_dir)
            .ok_or_else(|| io::Error::other(format!("{} is not a token", path.display()))),
        Err(e) => Err(e),
    }
}

/// The API's OpenAPI 3.1 document as pretty-printed JSON with a final newline: what
/// `GET /api/openapi.json` serves and `docs/openapi.json` holds (`scripts/gen-openapi`
/// writes it; a test fails when the committed one differs).
pub fn openapi_json() -> String {
    use utoipa::OpenApi;
    let mut doc = routes::ApiDoc::openapi();
    // The crate's version would make the file stale at every release for no API change.
    doc.info.version = "1".into();
    let mut text = doc.to_pretty_json().unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"));
    text.push('\n');
    text
}

/// Reads the token of `data_dir`, if there is one.
pub fn read_token(data_dir: &Path) -> Option<String> {
    let s = fs::read_to_string(layout::api_token_path(data_dir)).ok()?;
    valid_token(s.trim()).then(|| s.trim().to_owned())
}

/// The API address a running node on `data_dir` wrote, if any.
pub fn read_addr(data_dir: &Path) -> Option<SocketAddr> {
    fs::read_to_string(layout::api_addr_path(data_dir)).ok()?.trim().parse().ok()
}

fn valid_token(s: &str) -> bool {
    s.len() == TOKEN_BYTES * 2 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Writes `bytes` to a temporary file created with `mode`, then renames it over `path`.
fn write_atomically(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let _ = fs::remove_file(&tmp);
    let mut f = fs::OpenOptions::new().write(true).create_new(true).mode(mode).open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn committed_openapi_is_current() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/openapi.json");
        let committed = fs::read_to_string(&path).unwrap_or_default();
        assert!(
            committed == openapi_json(),
            "{} is stale (or missing): the API changed. Run scripts/gen-openapi and commit it.",
            path.display()
        );
        let doc: serde_json::Value = serde_json::from_str(&committed).unwrap();
        assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")), "{}", doc["openapi"]);
        assert!(doc["paths"]["/api/downloads/{id}"]["delete"].is_object());
    }

    #[test]
    fn token_is_created_private_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let t = load_or_create_token(dir.path()).unwrap();
        assert!(valid_token(&t));
        let mode = fs::metadata(layout::api_token_path(dir.path())).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(load_or_create_token(dir.path()).unwrap(), t);
        assert_eq!(read_token(dir.path()).as_deref(), Some(t.as_str()));
        fs::set_permissions(layout::api_token_path(dir.path()), fs::Permissions::from_mode(0o644))
            .unwrap();
        assert!(load_or_create_token(dir.path()).is_err());
    }
}
