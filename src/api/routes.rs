//! The API's resources (see README.md, "Control API"), the bearer-token check and the
//! request-body limit. Handlers reach the node through [`Handle`] on blocking threads.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{DefaultBodyLimit, FromRequest, FromRequestParts, Path, Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

use super::downloads::{
    self, ActionError, Cleanup, DownloadStorage, DownloadView, Downloads, Samples, Spec,
};
use super::error::ApiError;
use super::metrics;
use crate::config::{self, API_BODY_MAX_BYTES, API_DHT_QUERY_TIMEOUT};
use crate::crypto::{ContentId, Encryption, FileId, IdKind};
use crate::dht::Key;
use crate::node::{clock, DhtAnswer, DhtQuery, Handle, NodeStats, PeerAddr, Transport};
use crate::storage::{self, CatalogEntry, FileState};

/// What every handler shares.
pub(super) struct ApiState {
    handle: Handle,
    /// SHA-256 of the token: compared digest to digest, so the comparison's timing says
    /// nothing about the token.
    token_digest: [u8; 32],
    /// Bound to a loopback address: reads need no token.
    loopback: bool,
    started: Instant,
    started_unix: u64,
    downloads: Arc<Downloads>,
    /// Bytes-sent samples of the open serving connections, by (shard, connection), for
    /// their rates in `GET /api/peers` (pruned to the open ones at each call).
    conn_rates: std::sync::Mutex<HashMap<(usize, u64), Samples>>,
    /// The public HTTP gateway's address (`seed --http`), if it runs.
    http_gateway: Option<std::net::SocketAddr>,
}

impl ApiState {
    pub(super) fn new(
        handle: Handle,
        token: &str,
        loopback: bool,
        started: Instant,
        data_dir: Option<PathBuf>,
    ) -> Self {
        Self {
            handle,
            token_digest: Sha256::digest(token.as_bytes()).into(),
            loopback,
            started,
            started_unix: clock::now_unix(),
            downloads: Arc::new(Downloads::new(data_dir)),
            conn_rates: std::sync::Mutex::default(),
            http_gateway: None,
        }
    }

    /// Says where the node's HTTP gateway listens (shown by `GET /api/node`).
    pub(super) fn with_http_gateway(mut self, addr: Option<std::net::SocketAddr>) -> Self {
        self.http_gateway = addr;
        self
    }

    /// Resumes the downloads the API had started before the node last stopped.
    pub(super) fn restore_downloads(&self) {
        self.downloads.restore(&self.handle);
    }

    /// Cancels the downloads the API started and waits until their state is saved.
    pub(super) fn stop_downloads(&self) {
        self.downloads.stop_all(&self.handle);
    }

    fn authorized(&self, headers: &HeaderMap) -> bool {
        let Some(value) = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) else {
            return false;
        };
        let Some(token) = value.strip_prefix("Bearer ") else { return false };
        let digest: [u8; 32] = Sha256::digest(token.trim().as_bytes()).into();
        digest == self.token_digest
    }
}

type Shared = State<Arc<ApiState>>;

/// The router: every resource, the token check, the body limit, JSON 404/405.
pub(super) fn router(state: Arc<ApiState>) -> Router {
    // The token is checked per route, inside each route's method router: only a request
    // that names a route and one of its methods is checked. An unknown path is 404 and a
    // wrong method 405 with or without a token (ARCHITECTURE.md, "The control API": the
    // routes are public in the OpenAPI document, so the answer reveals nothing). A
    // router-wide layer would wrap the 405 answers too and turn them into 401s.
    let guard = |m: axum::routing::MethodRouter<Arc<ApiState>>| {
        m.route_layer(middleware::from_fn_with_state(state.clone(), auth))
    };
    Router::new()
        .route("/api/node", guard(get(node)))
        .route("/api/files", guard(get(list_files).post(publish)))
        .route("/api/files/{id}", guard(get(file).delete(unpublish)))
        .route("/api/catalog/sync", guard(post(sync_catalog)))
        .route("/api/downloads", guard(get(list_downloads).post(start_download)))
        .route("/api/downloads/{id}", guard(get(download).delete(cancel_download)))
        .route("/api/downloads/{id}/pause", guard(post(pause_download)))
        .route("/api/downloads/{id}/resume", guard(post(resume_download)))
        .route("/api/stats", guard(get(stats)))
        .route("/api/peers", guard(get(peers)))
        .route("/api/storage", guard(get(storage)))
        .route("/api/storage/cleanup", guard(post(cleanup)))
        .route("/api/dht/providers/{id}", guard(get(providers)))
        .route("/metrics", guard(get(metrics_text)))
        .route("/api/openapi.json", get(openapi_json))
        // Static files without node data: public (GET and HEAD only).
        .merge(super::ui::routes())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(API_BODY_MAX_BYTES))
        .with_state(state)
}

/// Mutating calls always need the token; every call does off loopback.
async fn auth(State(s): Shared, req: Request, next: Next) -> Response {
    let read_only = matches!(*req.method(), Method::GET | Method::HEAD);
    if (!read_only || !s.loopback) && !s.authorized(req.headers()) {
        return ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "send Authorization: Bearer TOKEN (the token is in DATA_DIR/api.token)",
        )
        .into_response();
    }
    next.run(req).await
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such resource")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "method not allowed here")
}

/// A JSON body whose rejections are [`ApiError`]s (400 malformed, 413 too large, 415).
struct Body<T>(T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        Json::<T>::from_request(req, state).await.map(|Json(v)| Self(v)).map_err(ApiError::from)
    }
}

/// A path segment (`{id}`) whose rejection (bad percent-encoding, not UTF-8) is an
/// [`ApiError`] like every other client mistake, not axum's plain-text 400.
struct Id(String);

impl<S: Send + Sync> FromRequestParts<S> for Id {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, ApiError> {
        Path::<String>::from_request_parts(parts, state)
            .await
            .map(|Path(s)| Self(s))
            .map_err(|e| ApiError::bad_request("bad_path_parameter", e.body_text()))
    }
}

/// Runs a node call on the API's blocking pool (never on the runtime's thread).
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|_| Err(ApiError::internal("the request's worker thread panicked")))
}

fn parse_file_id(s: &str) -> Result<FileId, ApiError> {
    s.parse().map_err(|e: crate::crypto::ParseFileIdError| {
        ApiError::bad_request("bad_file_id", format!("{s:?} is not a file ID: {e}"))
    })
}

fn parse_content_id(s: &str) -> Result<ContentId, ApiError> {
    s.parse().map_err(|e: crate::crypto::ParseContentIdError| {
        ApiError::bad_request("bad_file_id", format!("{s:?} is not a file or collection ID: {e}"))
    })
}

fn parse_download_id(s: &str) -> Result<u64, ApiError> {
    s.parse().map_err(|_| {
        ApiError::bad_request("bad_download_id", format!("{s:?} is not a download ID"))
    })
}

#[derive(Serialize, ToSchema)]
struct NodeView {
    node_id: String,
    #[schema(value_type = String)]
    version: &'static str,
    uptime_seconds: f64,
    shards: usize,
    /// Where peers connect (TCP) and the DHT listens (UDP).
    listen_addresses: Vec<String>,
    /// Where WebRTC offers are answered (UDP, `seed --webrtc`); `null` when off.
    webrtc_address: Option<String>,
    /// Base URL of the public HTTP gateway (`seed --http`): published files at
    /// `{http_gateway}/files/FILE_ID`, collection entries at
    /// `{http_gateway}/c/COLLECTION_ID/PATH`. `null`: the gateway is off.
    http_gateway: Option<String>,
    /// `on` or `off`.
    #[schema(value_type = String)]
    encryption: &'static str,
    private_network: bool,
    /// Contacts in the DHT routing table (`null`: no DHT).
    dht_table_size: Option<usize>,
    /// Everything the shards serve: published files, collections' encoded lists and
    /// partial downloads.
    files_served: usize,
    /// Published files (collections not counted).
    files_published: usize,
    /// Published collections (releases).
    collections_published: usize,
    /// Published files changed or missing on disk since publish (refused to peers,
    /// withdrawn from the DHT): republish or unpublish them.
    files_changed: usize,
    downloads_active: usize,
}

#[utoipa::path(get, path = "/api/node", tag = "node",
    security((), ("bearer" = [])),
    responses(
        (status = 200, description = "The node's identity and state", body = NodeView),
        (status = 401, description = "no or wrong bearer token", body = ApiError),
        (status = 503, description = "the node is stopping or a shard is stuck", body = ApiError),
    ))]
async fn node(State(s): Shared) -> Result<Json<NodeView>, ApiError> {
    let st = s.clone();
    let (stats, counts) =
        blocking(move || Ok((st.handle.stats()?, st.handle.catalog_counts(true)))).await?;
    let sec = s.handle.security();
    Ok(Json(NodeView {
        node_id: sec.node_id().to_string(),
        version: env!("CARGO_PKG_VERSION"),
        uptime_seconds: s.started.elapsed().as_secs_f64(),
        shards: s.handle.shards(),
        listen_addresses: s.handle.addr().map(|a| a.to_string()).into_iter().collect(),
        webrtc_address: s.handle.webrtc_addr().map(|a| a.to_string()),
        http_gateway: s.http_gateway.map(|a| format!("http://{a}")),
        encryption: if sec.encryption() == Encryption::On { "on" } else { "off" },
        private_network: sec.network().is_some(),
        dht_table_size: stats.serving.dht.as_ref().map(|d| d.table_len),
        files_served: stats.files_served,
        files_published: counts.files,
        collections_published: counts.collections,
        files_changed: counts.files_changed,
        downloads_active: stats.downloads_active,
    }))
}

/// A published file or collection (the manifest's summary).
#[derive(Serialize, ToSchema)]
struct FileView {
    /// The ID as users write it: 64 lowercase hex characters for a file, `c-` and 64 for a
    /// collection (what `get` takes).
    id: String,
    /// `file` or `collection`.
    #[schema(value_type = String)]
    kind: &'static str,
    /// The 32 bytes peers know it by, as 64 hex characters (a collection's ID without its
    /// `c-`).
    file_id: String,
    /// The file's name in its manifest; a collection's: the directory it was published
    /// from.
    name: String,
    /// Where it is served from (lossy UTF-8); a collection's: its encoded list in the data
    /// directory.
    path: String,
    /// Bytes: the file's size; a collection's: the total of its files.
    size: u64,
    /// Chunk size in bytes of what is served under the ID (a collection: its encoded list).
    chunk_size: u32,
    /// Chunks of what is served under the ID.
    chunks: u32,
    /// Unix seconds when it was published.
    creation_time: i64,
    /// Payload bytes of its chunks served to peers since the node started.
    served_bytes: u64,
    /// Chunks of it served to peers since the node started.
    served_chunks: u64,
    /// `ok`; `changed` or `missing`: the file on disk is not what was published (size or
    /// modification time differ, or it is gone), so peers are refused its chunks and it is
    /// no longer announced in the DHT. A collection is `changed` when one of its files is
    /// not `ok` or no longer published (its downloads would fail).
    #[schema(value_type = String)]
    state: &'static str,
    /// What a state other than `ok` means and what to do; `null` when `ok`.
    state_detail: Option<String>,
    /// A collection's number of files; `null` for a file.
    files: Option<usize>,
    /// `GET /api/files/c-…` only: the collection's files; `null` otherwise.
    entries: Option<Vec<EntryView>>,
}

/// One file of a collection.
#[derive(Serialize, ToSchema)]
struct EntryView {
    /// Its path inside the release (`/`-separated).
    path: String,
    /// Its file ID (64 hex characters).
    file_id: String,
    size: u64,
    executable: bool,
    /// As [`FileView`]'s: `ok`, `changed`, `missing`, or `unpublished` (no longer in the
    /// catalog).
    #[schema(value_type = String)]
    state: &'static str,
}

impl FileView {
    /// A file's view, `bad` holding the published files not as published.
    fn of(e: &CatalogEntry, bad: &HashMap<FileId, FileState>) -> Self {
        let state = bad.get(&e.info.file_id).copied().unwrap_or(FileState::Intact);
        Self {
            id: e.info.file_id.to_hex(),
            kind: "file",
            served_bytes: 0,
            served_chunks: 0,
            file_id: e.info.file_id.to_hex(),
            name: e.info.name.clone(),
            path: e.path.to_string_lossy().into_owned(),
            size: e.info.size,
            chunk_size: e.info.chunk_size,
            chunks: e.info.chunk_count(),
            creation_time: e.info.creation_time,
            state: state.as_str(),
            state_detail: state.advice().map(str::to_owned),
            files: None,
            entries: None,
        }
    }

    /// A collection's view: its files read from its encoded list and checked against what
    /// is published (`published`: by ID) and intact; `entries` adds them one by one.
    fn collection(
        e: &CatalogEntry,
        published: &HashMap<FileId, Arc<CatalogEntry>>,
        bad: &HashMap<FileId, FileState>,
        entries: bool,
    ) -> Self {
        let mut v = Self::of(e, bad);
        v.id = ContentId::collection(e.info.file_id).to_string();
        v.kind = "collection";
        let c = match storage::read_collection(e) {
            Ok(c) => c,
            Err(why) => {
                v.state = FileState::Missing.as_str();
                v.state_detail = Some(format!(
                    "its encoded list cannot be read ({why}); publish the directory again"
                ));
                return v;
            }
        };
        let state_of = |id: &FileId| match (published.contains_key(id), bad.get(id)) {
            (false, _) => "unpublished",
            (true, Some(s)) => s.as_str(),
            (true, None) => FileState::Intact.as_str(),
        };
        let broken = c.entries.iter().filter(|m| state_of(&m.file_id) != "ok").count();
        if v.state == "ok" && broken > 0 {
            v.state = FileState::Changed.as_str();
            v.state_detail = Some(format!(
                "{broken} of its {} files changed on disk since publish, went missing or \
                 were unpublished: downloads of it fail; publish the directory again",
                c.entries.len()
            ));
        }
        v.size = c.total_size();
        v.files = Some(c.entries.len());
        if entries {
            v.entries = Some(
                c.entries
                    .iter()
                    .map(|m| EntryView {
                        path: m.path.clone(),
                        file_id: m.file_id.to_hex(),
                        size: m.size,
                        executable: m.executable,
                        state: state_of(&m.file_id),
                    })
                    .collect(),
            );
        }
        v
    }
}

/// Every published file (by path) then every collection (by name), with their states
/// checked on disk now and what the shards served of each.
fn file_views(s: &ApiState) -> Result<Vec<FileView>, ApiError> {
    let served = s.handle.activity()?.files;
    let bad = s.handle.check_published();
    let published: HashMap<FileId, Arc<CatalogEntry>> =
        s.handle.published().into_iter().map(|e| (e.info.file_id, e)).collect();
    let (mut files, mut colls): (Vec<FileView>, Vec<FileView>) = (Vec::new(), Vec::new());
    for e in published.values() {
        let v = if e.is_collection() {
            FileView::collection(e, &published, &bad, false)
        } else {
            FileView::of(e, &bad)
        };
        let v = with_served(v, served.get(&e.info.file_id));
        if v.kind == "collection" {
            colls.push(v);
        } else {
            files.push(v);
        }
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    colls.sort_by(|a, b| (&a.name, &a.id).cmp(&(&b.name, &b.id)));
    files.extend(colls);
    Ok(files)
}

#[utoipa::path(get, path = "/api/files", tag = "files",
    security((), ("bearer" = [])),
    responses(
        (status = 200, description = "Published files (by path), then collections (by name)", body = [FileView]),
        (status = 401, description = "no or wrong bearer token", body = ApiError),
        (status = 503, description = "the node is stopping or a shard is stuck", body = ApiError),
    ))]
async fn list_files(State(s): Shared) -> Result<Json<Vec<FileView>>, ApiError> {
    blocking(move || Ok(Json(file_views(&s)?))).await
}

fn with_served(mut v: FileView, served: Option<&crate::node::FileServed>) -> FileView {
    if let Some(f) = served {
        v.served_bytes = f.bytes;
        v.served_chunks = f.chunks;
    }
    v
}

/// The published entry `id` names, if its kind is the one the ID was written as.
fn find_published(s: &ApiState, id: ContentId) -> Result<Arc<CatalogEntry>, ApiError> {
    let entry = s
        .handle
        .published_entry(&id.id)
        .ok_or_else(|| ApiError::not_found(format!("{id} is not published")))?;
    match (id.kind, entry.is_collection()) {
        (IdKind::File, true) => Err(ApiError::not_found(format!(
            "{id} is not a published file: it is the collection {}",
            ContentId::collection(id.id)
        ))),
        (IdKind::Collection, false) => Err(ApiError::not_found(format!(
            "{id} is not a published collection: {} is a file",
            id.id
        ))),
        _ => Ok(entry),
    }
}

#[utoipa::path(get, path = "/api/files/{id}", tag = "files",
    security((), ("bearer" = [])),
    params(("id" = String, Path, description = "A file ID (64 lowercase hex characters) or a collection ID (`c-` and 64)", pattern = "^(c-)?[0-9a-f]{64}$")),
    responses(
        (status = 200, description = "One published file, or one collection with its files (`entries`)", body = FileView),
        (status = 400, description = "a malformed ID, body or parameter", body = ApiError),
        (status = 401, description = "no or wrong bearer token", body = ApiError),
        (status = 404, description = "unknown ID", body = ApiError),
        (status = 503, description = "the node is stopping or a shard is stuck", body = ApiError),
    ))]
async fn file(State(s): Shared, Id(id): Id) -> Result<Json<FileView>, ApiError> {
    let id = parse_content_id(&id)?;
    let entry = find_published(&s, id)?;
    blocking(move || {
        let served = s.handle.activity()?.files;
        let bad = s.handle.check_published();
        let v = if entry.is_collection() {
            let published: HashMap<FileId, Arc<CatalogEntry>> =
                s.handle.published().into_iter().map(|e| (e.info.file_id, e)).collect();
            FileView::collection(&entry, &published, &bad, true)
        } else {
            FileView::of(&entry, &bad)
        };
        Ok(Json(with_served(v, served.get(&id.id))))
    })
    .await
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct PublishRequest {
    /// A file or directory on the server, absolute.
    #[schema(value_type = String)]
    path: PathBuf,
    /// Chunk size in bytes (default: picked per file).
    #[serde(default)]
    chunk_size: Option<u32>,
}

#[derive(Serialize, ToSchema)]
struct PublishFailure {
    error: String,
}

#[derive(Serialize, ToSchema)]
struct PublishView {
    /// The files published (a directory: every regular file under it).
    published: Vec<FileView>,
    /// A directory's collection (`c-…`: the release under one ID); empty for a file.
    collections: Vec<FileView>,
    /// Files that could not be published, and why a directory got no collection.
    failed: Vec<PublishFailure>,
}

#[utoipa::path(post, path = "/api/files", tag = "files",
    security(("bearer" = [])),
    request_body = PublishRequest,
    responses(
        (status = 201, description = "Published (a directory: every regular file under it, and the directory as a collection)", body = PublishView),
        (status = 400, description = "a malformed ID, body or parameter", body = ApiError),
        (status = 401, description = "no or wrong bearer token", body = ApiError),
        (status = 409, description = "conflicts with the node's state", body = ApiError),
        (status = 413, description = "body over the size limit", body = ApiError),
        (status = 415, description = "body not sent as application/json", body = ApiError),
        (status = 500, description = "the node's own trouble (its catalog cannot be written)", body = ApiError),
        (status = 503, description = "the node is stopping or a shard is stuck", body = ApiError),
    ))]
async fn publish(
    State(s): Shared,
    Body(req): Body<PublishRequest>,
) -> Result<(StatusCode, Json<PublishView>), ApiError> {
    if !req.path.is_absolute() {
        return Err(ApiError::bad_request(
            "bad_path",
            "path must be absolute (a server-side path)",
        ));
    }
    if let Some(cs) = req.chunk_size {
        config::validate_chunk_size(u64::from(cs))
            .map_err(|e| ApiError::bad_request("bad_chunk_size", e))?;
    }
    if !req.path.exists() {
        return Err(ApiError::bad_request(
            "bad_path",
            format!("{} does not exist on the server", req.path.display()),
        ));
    }
    let view = blocking(move || {
        let outcome = s.handle.publish_tree(&[req.path], req.chunk_size, &|_| {})?;
        let mut view =
            PublishView { published: Vec::new(), collections: Vec::new(), failed: Vec::new() };
        let intact = HashMap::new();
        for r in outcome.files {
            match r {
                Ok(p) => view.published.push(FileView::of(&p.entry, &intact)),
                Err(e) => view.failed.push(PublishFailure { error: e.to_string() }),
            }
        }
        let published: HashMap<FileId, Arc<CatalogEntry>> =
            s.handle.published().into_iter().map(|e| (e.info.file_id, e)).collect();
        for c in outcome.collections {
            match c.map(|c| published.get(&c.id).cloned()) {
                Ok(Some(e)) => {
                    view.collections.push(FileView::collection(&e, &published, &intact, false))
                }
                Ok(None) => {}
                Err(why) => view.failed.push(PublishFailure { error: why }),
            }
        }
        Ok(view)
    })
    .await?;
    if view.published.is_empty() {
        let detail = match view.failed.first() {
            Some(f) => f.error.clone(),
            None => "no regular files under the path".into(),
        };
        return Err(ApiError::bad_request("publish_failed", detail));
    }
    Ok((StatusCode::CREATED, Json(view)))
}

/// `DELETE /api/files/{id}`: what was taken back.
#[derive(Serialize, ToSchema)]
struct UnpublishView {
    /// The IDs no longer served or announced, as users write them (`c-…` for a
    /// collection), the one asked for first.
    unpublished: Vec<String>,
}

/// `DELETE /api/files/{id}`'s query: `keep_files=true|false` (default false); anything
/// else is a 400.
struct KeepFiles(bool);

impl<S: Send + Sync> FromRequestParts<S> for KeepFiles {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, ApiError> {
        let mut keep = false;
        for pair in parts.uri.query().unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            keep = match pair {
                "keep_files=true" => true,
                "keep_files=false" => false,
                _ => {
                    return Err(ApiError::bad_request(
                        "bad_query",
                        format!("{pair:?}: the only parameter is keep_files=true|false"),
                    ))
                }
            };
        }
        Ok(Self(keep))
    }
}

#[utoipa::path(delete, path = "/api/files/{id}", tag = "files",
    security(("bearer" = [])),
    params(
        ("id" = String, Path, description = "A file ID (64 lowercase hex characters) or a collection ID (`c-` and 64)", pattern = "^(c-)?[0-9a-f]{64}$"),
        ("keep_files" = Option<bool>, Query, description = "A collection only: take back the collection alone and keep its files published (default false: its files go too, except those another collection lists or that are published from outside its directory)"),
    ),
    responses(
        (status = 200, description = "Unpublished: no longer served or announced", body = UnpublishView),
        (status = 400, description = "a malformed ID, body or parameter", body = ApiError),
        (status = 401, description = "no or wrong bearer token", body = ApiError),
        (status = 404, description = "unknown ID", body = ApiError),
        (status = 409, description = "conflicts with the node's state", body = ApiError),
        (status = 500, description = "the node's own trouble (its catalog cannot be written)", body = ApiError),
        (status = 503, description = "the node is stopping or a shard is stuck", body = ApiError),
    ))]
async fn unpublish(
    State(s): Shared,
    Id(id): Id,
    KeepFiles(keep_files): KeepFiles,
) -> Result<Json<UnpublishView>, ApiError> {
    let id = parse_content_id(&id)?;
    find_published(&s, id)?;
    let removed = blocking(move || Ok(s.handle.take_back(&id.id, keep_files)?)).await?;
    if removed.is_empty() {
        return Err(ApiError::not_found(format!("{id} is not published")));
    }
    let unpublished = removed
        .iter()
        .map(|e| {
            if e.is_collection() {
                ContentId::collection(e.info.file_id).to_string()
            } else {
                e.info.file_id.to_hex()
            }
        })
        .collect();
    Ok(Json(UnpublishView { unpublished }))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct DownloadRequest {
    file_id: String,
    /// `[NODE_ID@]HOST:PORT` each; empty: providers found through the node's DHT.
    #[serde(default)]
    peers: Vec<String>,
    /// Where to write the file on the server, absolute.
    #[schema(value_type = String)]
    output: PathBuf,
    /// Replace the output if it exists.
    #[serde(default)]
    force: bool,
    /// Connections (default: the available cores).
    #[serde(default)]
    connections: Option<usize>,
    /// Download limit in bytes per second.
    #[serde(default)]
    max_download_rate: Option<u64>,
    /// HTTP(S) mirrors of the file, each fetched with Range requests beside the peers
    /// (`get --web-seed`); at most 16.
    #[serde(default)]
    web_seeds: Vec<String>,
}

#[utoipa::path(post, path = "/api/downloads", tag = "downloads",
    security(("bearer" = [])),
    request_body = DownloadRequest,
    responses(
        (status = 201, description = "Started", body = DownloadView),
        (status = 400, description = "a malformed ID, body or parameter", body = ApiError),
        (status = 401, description = "no or wrong bearer token", body = ApiError),
        (status = 404, description = "unknown ID", body = ApiError),
        (status = 409, description = "conflicts with the node's state", body = ApiError),
        (status = 413, description = "body over the size limit", body = ApiError),
        (status = 415, description = "body not sent as application/json", body = ApiError),
        (status = 500, description = "the node's own trouble (its catalog cannot be written)", body = ApiError),
        (status = 502, description = "the DHT failed", body = ApiError),
        (status = 503, description = "the node is stopping or a shard is stuck", body = ApiError),
        (status = 504, description = "the DHT lookup timed out", body = ApiError),
    ))]
async fn start_download(
    State(s): Shared,
    Body(req): Body<DownloadRequest>,
) -> Result<(StatusCode, Response), ApiError> {
    let file_id = parse_file_id(&req.file_id)?;
    for p in &req.peers {
        p.parse::<PeerAddr>().map_err(|e| ApiError::bad_request("bad_peer", e))?;
    }
    if !req.output.is_absolute() || req.output.file_name().is_none() {
        return Err(ApiError::bad_request("bad_output", "output must be an absolute file path"));
    }
    if !req.output.parent().is_some_and(|d| d.is_dir()) {
        return Err(ApiError::bad_request(
            "bad_output",
            format!("the directory of {} does not exist on the server", req.output.display()),
        ));
    }
    if req.output.exists() && !req.force {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "output_exists",
            format!("{} exists (send \"force\": true to replace it)", req.output.display()),
        ));
    }
    if req.web_seeds.len() > config::WEB_SEEDS_PER_DOWNLOAD_MAX {
        return Err(ApiError::bad_request(
            "bad_web_seed",
            format!("at most {} web seeds", config::WEB_SEEDS_PER_DOWNLOAD_MAX),
        ));
    }
    for w in &req.web_seeds {
        crate::node::parse_web_seed(w).map_err(|e| ApiError::bad_request("bad_web_seed", e))?;
    }
    if req.connections == Some(0) || req.max_download_rate == Some(0) {
        return Err(ApiError::bad_request("bad_limit", "connections and rates must be above zero"));
    }
    let spec = Spec {
        id: 0,
        file_id: file_id.to_hex(),
        peers: req.peers,
        output: req.output,
        force: req.force,
        connections: req.connections,
        max_download_rate: req.max_download_rate,
        web_seeds: req.web_seeds,
        paused: false,
        started_unix: clock::now_unix(),
    };
    let st = s.clone();
    let id = blocking(move || {
        // Checked above; resolved again (through the DHT when none were given).
        let found = downloads::resolve(&st.handle, &spec)?;
        Ok(st.downloads.start(&st.handle, spec, found)?)
    })
    .await?;
    let view = s.downloads.view(&s.handle, id);
    Ok((StatusCode::CREATED, Json(view).into_response()))
}

#[utoipa::path(get, path = "/api/downloads", tag = "downloads",
    security((), ("bearer" = [])),
    responses(
        (status = 200, description = "Downloads started through the API, oldest first", body = [DownloadView]),
        (status = 401, description = "no or wrong bearer token", body = ApiError),
    ))]
async fn list_downloads(State(s): Shared) -> Response {
    blocking(move || Ok(s.downloads.list(&s.handle))).await.map(Json).into_response()
}

#[utoipa::path(get, path = "/api/downloads/{id}", tag = "downloads",
    security((), ("bearer" = [])),
    params(("id" = u64, Path, description = "Download ID (from POST /api/downloads)")),
    responses(
        (status = 200, description = "Where the download stands", body = DownloadView),
        (status = 400, description = "a malformed ID, body or parameter", body = ApiError),
        (status = 401, description = "no or wrong bearer token", body = ApiError),
        (status = 404, description = "unknown ID", body = ApiError),
    ))]
async fn download(State(s): Shared, Id(id): Id) -> Result<Response, ApiError> {
    let id = parse_download_id(&id)?;
    let view = blocking(move || {
        s.downloads
            .view(&s.handle, id)
            .ok_or_else(|| ApiError::not_found(format!("no download with ID {id}")))
    })
    .await?;
    Ok(Json(view).into_response())
}

#[utoipa::path(delete, path = "/api/downloads/{id}", tag = "downloads",
    security(("bearer" = [])),
    params(("id" = u64, Path, description = "Download ID (from POST /api/downloads)")),
    responses(
        (status = 202, description = "Asked to stop; verified chunks are kept for a later resume", body = DownloadView),
        (status = 400, description = "a malformed ID, body or parameter", body = ApiError),
        (status = 401, description = "no or wrong bearer token", body = ApiError),
        (status = 404, description = "unknown ID", body = ApiError),
        (status = 409, description = "conflicts with the node's state", body = ApiError),
        (status = 503, description = "the node is stopping or a shard is stuck", body = ApiError),
    ))]
async fn cancel_download(State(s): Shared, Id(id): Id) -> Result<Response, ApiError> {
    let id = parse_download_id(&id)?;
    blocking(move || {
        let r = s.downloads.cancel(&s.handle, id);
        action_answer(&s, id, r)
    })
    .await
}

/// The answer to a pause, resume or cancel: 202 with the download's view, or the refusal.
fn action_answer(s: &ApiState, id: u64, r: Result<(), ActionError>) -> Result<Response, ApiError> {
    match r {
        Ok(()) => Ok((StatusCode::ACCEPTED, Json(s.downloads.view(&s.handle, id))).into_response()),
        Err(ActionError::Unknown) => Err(ApiError::not_found(format!("no download with ID {id}"))),
        Err(ActionError::Conflict(state)) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "wrong_state",
            format!("download {id} is {state}"),
        )),
        Err(ActionError::Node(e)) => Err(e.into()),
    }
}

#[utoipa::path(post, path = "/api/downloads/{id}/pause", tag = "downloads",
    security(("bearer" = [])),
    params(("id" = u64, Path, description = "Download ID (from POST /api/downloads)")),
    responses(
        (status = 202, description = "Pausing: connections close, verified chunks are kept", body = DownloadView),
        (status = 400, description = "a malformed ID, body or parameter", body = ApiError),
        (status = 401, description = "no or wrong bearer token", body = ApiError),
        (status = 404, description = "unknown ID", body = ApiError),
        (status = 409, description = "it has ended (completed, failed or cancelled); pausing a paused download is a no-op", body = ApiError),
    ))]
async fn pause_download(State(s): Shared, Id(id): Id) -> Result<Response, ApiError> {
    let id = parse_download_id(&id)?;
    blocking(move || {
        let r = s.downloads.pause(&s.handle, id);
        action_answer(&s, id, r)
    })
    .await
}

#[utoipa::path(post, path = "/api/downloads/{id}/resume", tag = "downloads",
    security(("bearer" = [])),
    params(("id" = u64, Path, description = "Download ID (from POST /api/downloads)")),
    responses(
        (status = 202, description = "Running again from the verified chunks", body = DownloadView),
        (status = 400, description = "a malformed ID, body or parameter", body = ApiError),
        (status = 401, description = "no or wrong bearer token", body = ApiError),
        (status = 404, description = "unknown ID, or no provider found through the DHT", body = ApiError),
        (status = 409, description = "it has ended (completed, failed or cancelled); resuming a running download is a no-op", body = ApiError),
        (status = 502, description = "the DHT failed", body = ApiError),
        (status = 503, description = "the node is stopping or a shard is stuck", body = ApiError),
        (status = 504, description = "the DHT lookup timed out", body = ApiError),
    ))]
async fn resume_download(State(s): Shared, Id(id): Id) -> Result<Response, ApiError> {
    let id = parse_download_id(&id)?;
    blocking(move || {
        let r = s.downloads.resume(&s.handle, id);
        action_answer(&s, id, r)
    })
    .await
}

/// One peer connection: a downloader this node serves (`upload`), or a peer one of the
/// API's downloads fetches from (`download`).
#[derive(Serialize, ToSchema)]
struct PeerView {
    /// `upload` (it downloads from this node) or `download` (this node downloads from it).
    #[schema(value_type = String)]
    direction: &'static str,
    /// `HOST:PORT`.
    addr: String,
    /// The node ID it proved (`null` before the handshake ends).
    node_id: Option<String>,
    /// `tcp` or `webrtc` (a data channel); `null` for a download's peer not connected yet.
    transport: Option<Transport>,
    /// The shard serving it (uploads).
    shard: Option<usize>,
    /// The API download fetching from it (downloads).
    download_id: Option<u64>,
    /// Payload bytes sent to it (uploads) or verified from it in this run (downloads).
    bytes: u64,
    /// Chunks sent to it or verified from it.
    chunks: u64,
    /// Bytes per second over the last few seconds (an upload seen for the first time: its
    /// average since it connected).
    rate_bytes_per_s: f64,
    /// Seconds since it connected (uploads).
    connected_seconds: Option<f64>,
}

#[utoipa::path(get, path = "/api/peers", tag = "node",
    security((), ("bearer" = [])),
    responses(
        (status = 200, description = "Open peer connections, both directions", body = [PeerView]),
        (status = 401, description = "no or wrong bearer token", body = ApiError),
        (status = 503, description = "the node is stopping or a shard is stuck", body = ApiError),
    ))]
async fn peers(State(s): Shared) -> Result<Json<Vec<PeerView>>, ApiError> {
    blocking(move || {
        let conns = s.handle.activity()?.connections;
        let now = clock::now();
        let mut rates = s.conn_rates.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        rates.retain(|k, _| conns.iter().any(|c| (c.shard, c.id) == *k));
        let mut out: Vec<PeerView> = conns
            .iter()
            .map(|c| {
                let samples = rates.entry((c.shard, c.id)).or_default();
                samples.push(now, c.bytes_sent);
                let mut rate = samples.rate();
                if rate == 0.0 && c.connected_seconds > 0.0 {
                    rate = c.bytes_sent as f64 / c.connected_seconds;
                }
                PeerView {
                    direction: "upload",
                    addr: c.addr.to_string(),
                    node_id: c.node_id.clone(),
                    transport: Some(c.transport),
                    shard: Some(c.shard),
                    download_id: None,
                    bytes: c.bytes_sent,
                    chunks: c.chunks_sent,
                    rate_bytes_per_s: rate,
                    connected_seconds: Some(c.connected_seconds),
                }
            })
            .collect();
        drop(rates);
        for (id, row) in s.downloads.running_peers() {
            out.push(PeerView {
                direction: "download",
                addr: row.addr,
                node_id: row.node_id,
                transport: row.transport,
                shard: None,
                download_id: Some(id),
                bytes: row.bytes,
                chunks: row.chunks,
                rate_bytes_per_s: row.rate_bytes_per_s,
                connected_seconds: None,
            });
        }
        Ok(Json(out))
    })
    .await
}

/// What the node holds on disk: the files it publishes, and what its API downloads
/// completed, left partial, or abandoned.
#[derive(Serialize, ToSchema)]
struct StorageView {
    /// Files in the catalog (collections not counted).
    published_files: u64,
    /// Their bytes (served in place, never copied).
    published_bytes: u64,
    /// Collections in the catalog (their files are counted above).
    published_collections: u64,
    #[serde(flatten)]
    downloads: DownloadStorage,
}

#[utoipa::path(get, path = "/api/storage", tag = "storage",
    security((), ("bearer" = [])),
    responses(
        (status = 200, description = "Bytes published, downloaded and partial", body = StorageView),
        (status = 401, description = "no or wrong bearer token", body = ApiError),
    ))]
async fn storage(State(s): Shared) -> Result<Json<StorageView>, ApiError> {
    blocking(move || {
        let counts = s.handle.catalog_counts(true);
        Ok(Json(StorageView {
            published_files: counts.files as u64,
            published_bytes: counts.files_bytes,
            published_collections: counts.collections as u64,
            downloads: s.downloads.storage(),
        }))
    })
    .await
}

/// `POST /api/storage/cleanup`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct CleanupRequest {
    /// Remove only leftovers last written at least this many seconds ago.
    older_than_secs: u64,
}

#[utoipa::path(post, path = "/api/storage/cleanup", tag = "storage",
    security(("bearer" = [])),
    request_body = CleanupRequest,
    responses(
        (status = 200, description = "What was removed and what was kept", body = Cleanup),
        (status = 400, description = "a malformed ID, body or parameter", body = ApiError),
        (status = 401, description = "no or wrong bearer token", body = ApiError),
        (status = 413, description = "body over the size limit", body = ApiError),
        (status = 415, description = "body not sent as application/json", body = ApiError),
    ))]
async fn cleanup(
    State(s): Shared,
    Body(req): Body<CleanupRequest>,
) -> Result<Json<Cleanup>, ApiError> {
    blocking(move || Ok(Json(s.downloads.cleanup(req.older_than_secs)))).await
}

/// `POST /api/catalog/sync`: what changed.
#[derive(Serialize, ToSchema)]
struct SyncView {
    /// Files served (and announced) anew: published, or republished from another path.
    added: usize,
    /// Files no longer served (and withdrawn from the DHT).
    removed: usize,
    /// Files published now (collections not counted).
    files: usize,
    /// Collections published now.
    collections: usize,
}

/// Brings the node in step with its data directory's catalog at once, as the catalog
/// watch would within its interval: `furymesh publish` and `unpublish` (which write the
/// catalog themselves) call it so that they return only once the node serves the change.
#[utoipa::path(post, path = "/api/catalog/sync", tag = "files",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The node serves exactly the catalog on disk now", body = SyncView),
        (status = 401, description = "no or wrong bearer token", body = ApiError),
        (status = 500, description = "the node's own trouble (its catalog cannot be read)", body = ApiError),
        (status = 503, description = "the node is stopping or a shard is stuck", body = ApiError),
    ))]
async fn sync_catalog(State(s): Shared) -> Result<Json<SyncView>, ApiError> {
    blocking(move || {
        let (added, removed) = s.handle.sync_catalog()?;
        if added + removed > 0 {
            tracing::info!(
                "furymesh seed: catalog synced through the API: {added} served anew, {removed} no longer"
            );
        }
        let counts = s.handle.catalog_counts(true);
        Ok(Json(SyncView { added, removed, files: counts.files, collections: counts.collections }))
    })
    .await
}

#[utoipa::path(get, path = "/api/stats", tag = "node",
    security((), ("bearer" = [])),
    responses(
        (status = 200, description = "The node's counters now", body = NodeStats),
        (status = 401, description = "no or wrong bearer token", body = ApiError),
        (status = 503, description = "the node is stopping or a shard is stuck", body = ApiError),
    ))]
async fn stats(State(s): Shared) -> Result<Response, ApiError> {
    let stats = blocking(move || Ok(s.handle.stats()?)).await?;
    Ok(Json(stats).into_response())
}

#[utoipa::path(get, path = "/api/dht/providers/{id}", tag = "dht",
    security((), ("bearer" = [])),
    params(("id" = String, Path, description = "File ID: 64 lowercase hex characters", pattern = "^[0-9a-f]{64}$")),
    responses(
        (status = 200, description = "Providers of the file found through the node's DHT", body = DhtAnswer),
        (status = 400, description = "a malformed ID, body or parameter", body = ApiError),
        (status = 401, description = "no or wrong bearer token", body = ApiError),
        (status = 409, description = "conflicts with the node's state", body = ApiError),
        (status = 502, description = "the DHT failed", body = ApiError),
        (status = 503, description = "the node is stopping or a shard is stuck", body = ApiError),
        (status = 504, description = "the DHT lookup timed out", body = ApiError),
    ))]
async fn providers(State(s): Shared, Id(id): Id) -> Result<Response, ApiError> {
    let id = parse_file_id(&id)?;
    let answer = blocking(move || {
        Ok(s.handle
            .dht_query(DhtQuery::FindProviders(Key::from_file_id(&id)), API_DHT_QUERY_TIMEOUT)?)
    })
    .await?;
    Ok(Json(answer).into_response())
}

#[utoipa::path(get, path = "/metrics", tag = "metrics",
    security((), ("bearer" = [])),
    responses(
        (status = 200, description = "Prometheus text exposition format 0.0.4", body = String, content_type = "text/plain; version=0.0.4; charset=utf-8"),
        (status = 401, description = "no or wrong bearer token", body = ApiError),
        (status = 503, description = "the node is stopping or a shard is stuck", body = ApiError),
    ))]
async fn metrics_text(State(s): Shared) -> Result<Response, ApiError> {
    let text = blocking(move || {
        let stats = s.handle.stats()?;
        let shards = s.handle.shard_stats()?;
        let activity = s.handle.activity()?;
        let process = metrics::ProcessFigures::read(s.started_unix);
        // Scraped often: the changed files as the last periodic check found them.
        let counts = s.handle.catalog_counts(false);
        Ok(metrics::render(&stats, &shards, &activity, &process, &counts))
    })
    .await?;
    Ok(([(header::CONTENT_TYPE, metrics::CONTENT_TYPE)], text).into_response())
}

#[utoipa::path(get, path = "/api/openapi.json", tag = "meta",
    security(()),
    responses((status = 200, description = "This document (OpenAPI 3.1)", content_type = "application/json")))]
async fn openapi_json() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], super::openapi_json()).into_response()
}

/// Adds the bearer-token scheme the paths name (`bearer`).
struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, api: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = api.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "The token in DATA_DIR/api.token. Changes always need it; reads need it \
                         only when the API is bound to a non-loopback address.",
                    ))
                    .build(),
            ),
        );
    }
}

/// The API's OpenAPI document, generated from the handlers' annotations and the types'
/// `ToSchema` derives (`docs/openapi.json` is this, committed; `scripts/gen-openapi`).
#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "FuryMesh control API",
        description = "The control API of a running `furymesh seed`: node, files, downloads, \
                       DHT, counters and Prometheus metrics. Every error is a JSON body \
                       `{\"error\": KIND, \"detail\": TEXT}`; a client mistake is always a 4xx.",
        license(name = "MIT"),
    ),
    paths(
        node, stats, list_files, publish, file, unpublish, sync_catalog, list_downloads, start_download,
        download, cancel_download, pause_download, resume_download, peers, storage, cleanup,
        providers, metrics_text, openapi_json
    ),
    components(schemas(ApiError)),
    modifiers(&BearerAuth),
    tags(
        (name = "node", description = "The node's identity, state and counters"),
        (name = "files", description = "The catalog of published files"),
        (name = "downloads", description = "Downloads run inside the node"),
        (name = "dht", description = "Lookups through the node's DHT"),
        (name = "storage", description = "Disk used by published, downloaded and partial files"),
        (name = "metrics", description = "Prometheus exposition"),
        (name = "meta", description = "This description"),
    )
)]
pub(super) struct ApiDoc;
