//! The share page of a published file (issue 16): a browser downloads it from this node
//! over a WebRTC data channel and verifies every chunk itself.
//!
//! - `GET /f/FILE_ID`: a small page (HTML, CSS and script embedded in the binary, nothing
//!   from the internet) with the file's name, size and ID and a Download button.
//! - `GET /f/FILE_ID/manifest`: the file's canonical manifest encoding
//!   ([`FileId::manifest_encoding`]), whose SHA-256 *is* the file ID: the page checks it
//!   with WebCrypto before it trusts any chunk hash in it.
//! - `POST /f/FILE_ID/signal`: the page's SDP offer in, the seeder's SDP answer out
//!   (`application/sdp`): the session lands on a shard as a browser session
//!   ([`Handle::answer_browser`]; ARCHITECTURE.md, "Browser peers"). Bounded
//!   (`BROWSER_OFFER_MAX_BYTES`), rate-limited per client IP (an IPv6 client per /64),
//!   refused on a private network (403) and without WebRTC (503).
//! - `GET /f/FILE_ID/peers`: other providers of the file that offer WebRTC, found through
//!   this node's DHT (`{"node": ID, "peers": [ID, …]}`, at most `BROWSER_PEERS_MAX`; a
//!   lookup's answer is reused for `BROWSER_PEERS_TTL`). Charged to the client IP's
//!   signaling budget.
//! - `POST /f/FILE_ID/signal/NODE_ID`: the page's SDP offer relayed to provider NODE_ID
//!   through the DHT's signaling path, that provider's answer out
//!   ([`Handle::relay_browser_offer`]; ARCHITECTURE.md, "Browser peers"). Only to a node
//!   the last lookup for this file returned (404 otherwise: this node is no signaling
//!   relay toward arbitrary nodes); the same bounds and per-IP budget as `/signal`.
//! - `GET /share.js`, `/share.css`: the page's script and style.
//! - `GET /f/sw.js`: the page's service worker (scope `/f/`), which streams a download to
//!   disk from the page's verified chunks where the browser has no File System Access API:
//!   it answers the page's hidden iframe at `/f/FILE_ID/save/TOKEN` (a URL only the worker
//!   knows; the gateway has no such route) with a `ReadableStream` body the page feeds in
//!   file order, one chunk per pull (ARCHITECTURE.md, "Browser peers").
//!
//! Every value from the catalog is written into the page HTML-escaped, and the page is
//! served with a strict Content-Security-Policy (script, style, workers and frames only
//! from this origin, no framing of the page itself), so a hostile file name cannot run
//! script.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::body::{to_bytes, Body, Bytes};
use axum::extract::{ConnectInfo, Path as UrlPath, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use super::{lock, text, GatewayState};
use crate::config::{
    BROWSER_OFFER_MAX_BYTES, BROWSER_PEERS_FILES_MAX, BROWSER_PEERS_LOOKUP, BROWSER_PEERS_MAX,
    BROWSER_PEERS_TTL, BROWSER_RELAY_TIMEOUT, BROWSER_SIGNALS_PER_S, BROWSER_SIGNAL_BURST,
    BROWSER_SIGNAL_IPS_MAX,
};
use crate::crypto::{ContentId, FileId, IdKind};
use crate::dht::{Key, NodeId};
use crate::node::{clock, DhtQuery};
use crate::storage::CatalogEntry;
use crate::throttle::Throttle;

const PAGE: &str = include_str!("share/page.html");
const SCRIPT: &str = include_str!("share/share.js");
const STYLE: &str = include_str!("share/share.css");
const WORKER: &str = include_str!("share/sw.js");

/// The page's policy: its own script and style, fetches, its service worker and the hidden
/// iframe of a streamed download from its origin, and nothing else.
const PAGE_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     connect-src 'self'; img-src 'self'; worker-src 'self'; frame-src 'self'; \
     base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// How long a signaling request waits for shard 0's answer (a shard takes its inbox
/// between two connection events: milliseconds even when loaded).
const ANSWER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

/// The address a request came from (axum's connection info for the gateway's listener).
#[derive(Debug, Clone, Copy)]
pub(super) struct Client(SocketAddr);

impl
    axum::extract::connect_info::Connected<
        axum::serve::IncomingStream<'_, super::listener::GatewayListener>,
    > for Client
{
    fn connect_info(s: axum::serve::IncomingStream<'_, super::listener::GatewayListener>) -> Self {
        Self(*s.remote_addr())
    }
}

/// Per-client-IP budgets of the signaling endpoint (GCRA, one unit per offer), at most
/// `BROWSER_SIGNAL_IPS_MAX` IPs.
#[derive(Default)]
pub(super) struct SignalLimiter {
    ips: Mutex<HashMap<IpAddr, Throttle>>,
    /// Any instant before the first use (the throttles' epoch).
    epoch: Mutex<Option<Instant>>,
}

impl SignalLimiter {
    /// Whether `ip` may signal now (and charges it). The key of an IPv6 client is its /64.
    fn admit(&self, ip: IpAddr, now: Instant) -> bool {
        let key = match ip {
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => {
                    let s = v6.segments();
                    IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
                }
            },
            v4 => v4,
        };
        let epoch = *lock(&self.epoch).get_or_insert(now);
        let mut ips = lock(&self.ips);
        if !ips.contains_key(&key) && ips.len() >= BROWSER_SIGNAL_IPS_MAX {
            // Forget the IPs whose budget is whole again: they lose nothing.
            ips.retain(|_, t| !t.is_full(now));
            if ips.len() >= BROWSER_SIGNAL_IPS_MAX {
                return false;
            }
        }
        ips.entry(key)
            .or_insert_with(|| Throttle::new(BROWSER_SIGNALS_PER_S, BROWSER_SIGNAL_BURST, epoch))
            .try_take(now, 1)
    }
}

/// Why a `/f/ID` path names no published file: the status and a line for the client.
pub(super) struct NotShared(StatusCode, String);

impl IntoResponse for NotShared {
    fn into_response(self) -> Response {
        text(self.0, &self.1)
    }
}

/// The published file (not a collection's blob) that a `/f/ID` path names.
fn published_file(st: &GatewayState, id: &str) -> Result<Arc<CatalogEntry>, NotShared> {
    let id: FileId = match id.parse::<ContentId>() {
        Ok(ContentId { id, kind: IdKind::File }) => id,
        Ok(_) => {
            let why = "a collection ID: share its files one by one";
            return Err(NotShared(StatusCode::BAD_REQUEST, why.to_owned()));
        }
        Err(e) => return Err(NotShared(StatusCode::BAD_REQUEST, format!("bad file ID: {e}"))),
    };
    match st.handle.published_entry(&id) {
        Some(e) if !st.is_collection(&e) => Ok(e),
        _ => Err(NotShared(StatusCode::NOT_FOUND, "no such file published here".to_owned())),
    }
}

/// `s` with the five HTML-significant characters escaped (for text and quoted attributes).
fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// `bytes` for people: `64.0 MiB (67108864 bytes)`.
fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes} bytes");
    }
    let mut v = bytes as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {} ({bytes} bytes)", UNITS[unit])
}

/// The page for `e`.
fn render_page(e: &CatalogEntry) -> String {
    let info = &e.info;
    PAGE.replace("{{NAME}}", &escape_html(&info.name))
        .replace("{{SIZE_HUMAN}}", &escape_html(&human_size(info.size)))
        .replace("{{SIZE}}", &info.size.to_string())
        .replace("{{ID}}", &info.file_id.to_hex())
}

fn with_type(body: impl Into<Body>, content_type: &'static str) -> Response {
    let mut r = Response::new(body.into());
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    r
}

/// `GET /f/FILE_ID`: the share page.
pub(super) async fn page(
    State(st): State<Arc<GatewayState>>,
    UrlPath(id): UrlPath<String>,
) -> Result<Response, NotShared> {
    let e = published_file(&st, &id)?;
    let mut r = with_type(render_page(&e), "text/html; charset=utf-8");
    let h = r.headers_mut();
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(PAGE_CSP));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Ok(r)
}

/// `GET /f/FILE_ID/manifest`: the canonical manifest encoding (its SHA-256 is the ID).
pub(super) async fn manifest(
    State(st): State<Arc<GatewayState>>,
    UrlPath(id): UrlPath<String>,
) -> Result<Response, NotShared> {
    let e = published_file(&st, &id)?;
    let i = &e.info;
    let body = FileId::manifest_encoding(i.size, i.chunk_size, &i.chunk_hashes);
    let mut r = with_type(body, "application/octet-stream");
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=31536000, immutable"),
    );
    Ok(r)
}

/// A private network's node serves no browsers (they cannot prove its secret).
fn on_private_network(st: &GatewayState) -> Option<Response> {
    st.handle.security().network().is_some().then(|| {
        text(
            StatusCode::FORBIDDEN,
            "this node is on a private network (--network-secret): browsers cannot prove the secret",
        )
    })
}

/// Charges one signaling request to `client`'s budget; the 429 when it is spent.
fn over_budget(st: &GatewayState, client: IpAddr) -> Option<Response> {
    if st.signals.admit(client, clock::now()) {
        return None;
    }
    let mut r = text(StatusCode::TOO_MANY_REQUESTS, "too many offers from your address");
    r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("2"));
    Some(r)
}

/// The page's SDP offer from a request body: bounded, UTF-8, an SDP.
async fn read_offer(body: Body) -> Result<String, Response> {
    let offer: Bytes = to_bytes(body, BROWSER_OFFER_MAX_BYTES).await.map_err(|_| {
        text(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!("an offer is at most {BROWSER_OFFER_MAX_BYTES} bytes"),
        )
    })?;
    let offer = String::from_utf8(offer.to_vec())
        .map_err(|_| text(StatusCode::BAD_REQUEST, "the offer is not UTF-8"))?;
    if !offer.starts_with("v=0") {
        return Err(text(StatusCode::BAD_REQUEST, "not an SDP offer"));
    }
    Ok(offer)
}

/// An SDP answer for the page.
fn sdp_answer(answer: String) -> Response {
    let mut r = with_type(answer, "application/sdp");
    r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// `POST /f/FILE_ID/signal`: the page's SDP offer in, the seeder's answer out.
pub(super) async fn signal(
    State(st): State<Arc<GatewayState>>,
    UrlPath(id): UrlPath<String>,
    ConnectInfo(Client(client)): ConnectInfo<Client>,
    body: Body,
) -> Response {
    if let Err(n) = published_file(&st, &id) {
        return n.into_response();
    }
    if let Some(r) = on_private_network(&st) {
        return r;
    }
    if st.handle.webrtc_addr().is_none() {
        return text(
            StatusCode::SERVICE_UNAVAILABLE,
            "this node runs without WebRTC (seed --webrtc HOST:PORT)",
        );
    }
    if let Some(r) = over_budget(&st, client.ip()) {
        return r;
    }
    let offer = match read_offer(body).await {
        Ok(o) => o,
        Err(r) => return r,
    };
    let asked = st.handle.answer_browser(offer, client.ip());
    match tokio::time::timeout(ANSWER_TIMEOUT, asked).await {
        Ok(Ok(Some(answer))) => sdp_answer(answer),
        Ok(Ok(None)) => text(
            StatusCode::SERVICE_UNAVAILABLE,
            "the seeder could not take this offer (malformed, or it is full)",
        ),
        Ok(Err(e)) => text(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
        Err(_) => text(StatusCode::SERVICE_UNAVAILABLE, "the seeder did not answer in time"),
    }
}

/// Other providers of each shared file that offer WebRTC, as the last DHT lookup for it
/// found them (this node left out), at most `BROWSER_PEERS_FILES_MAX` files.
#[derive(Default)]
pub(super) struct Providers {
    files: Mutex<HashMap<FileId, (Instant, Vec<NodeId>)>>,
}

impl Providers {
    /// The providers of `id` found at most `BROWSER_PEERS_TTL` before `now`.
    fn fresh(&self, id: &FileId, now: Instant) -> Option<Vec<NodeId>> {
        let files = lock(&self.files);
        let (at, nodes) = files.get(id)?;
        (now.saturating_duration_since(*at) < BROWSER_PEERS_TTL).then(|| nodes.clone())
    }

    fn put(&self, id: FileId, now: Instant, nodes: Vec<NodeId>) {
        let mut files = lock(&self.files);
        if files.len() >= BROWSER_PEERS_FILES_MAX && !files.contains_key(&id) {
            files.clear();
        }
        files.insert(id, (now, nodes));
    }

    /// Whether the last lookup for `id` returned `node`.
    fn provides(&self, id: &FileId, node: &NodeId) -> bool {
        lock(&self.files).get(id).is_some_and(|(_, nodes)| nodes.contains(node))
    }
}

/// `GET /f/FILE_ID/peers`: other providers of the file that offer WebRTC (node IDs).
pub(super) async fn peers(
    State(st): State<Arc<GatewayState>>,
    UrlPath(id): UrlPath<String>,
    ConnectInfo(Client(client)): ConnectInfo<Client>,
) -> Response {
    let e = match published_file(&st, &id) {
        Ok(e) => e,
        Err(n) => return n.into_response(),
    };
    if let Some(r) = on_private_network(&st).or_else(|| over_budget(&st, client.ip())) {
        return r;
    }
    let file = e.info.file_id;
    let me = st.handle.security().node_id();
    let nodes = match st.providers.fresh(&file, clock::now()) {
        Some(nodes) => nodes,
        None => {
            let handle = st.handle.clone();
            let key = Key::from_file_id(&file);
            // One lookup, no waiting for a forming network: the page is downloading from
            // this node meanwhile.
            let found = tokio::task::spawn_blocking(move || {
                handle.dht_query(DhtQuery::FindProviders(key), BROWSER_PEERS_LOOKUP)
            })
            .await;
            let contacts = match found {
                Ok(Ok(answer)) => answer.contacts,
                Ok(Err(crate::node::NodeError::NoDht)) => Vec::new(),
                Ok(Err(e)) => return text(StatusCode::BAD_GATEWAY, &e.to_string()),
                Err(e) => return text(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
            };
            let mut nodes: Vec<NodeId> = Vec::new();
            for c in contacts.iter().filter(|c| c.webrtc) {
                match c.node_id.parse::<NodeId>() {
                    Ok(n) if n != me && !nodes.contains(&n) => nodes.push(n),
                    _ => {}
                }
            }
            nodes.truncate(BROWSER_PEERS_MAX);
            // An empty answer is not kept: providers announcing a moment later are found
            // by the next page.
            if !nodes.is_empty() {
                st.providers.put(file, clock::now(), nodes.clone());
            }
            nodes
        }
    };
    let body = serde_json::json!({
        "node": me.to_string(),
        "peers": nodes.iter().map(ToString::to_string).collect::<Vec<_>>(),
    });
    let mut r = with_type(body.to_string(), "application/json");
    r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// `POST /f/FILE_ID/signal/NODE_ID`: the page's SDP offer relayed to another provider
/// through the DHT, its answer out.
pub(super) async fn relay(
    State(st): State<Arc<GatewayState>>,
    UrlPath((id, node)): UrlPath<(String, String)>,
    ConnectInfo(Client(client)): ConnectInfo<Client>,
    body: Body,
) -> Response {
    let e = match published_file(&st, &id) {
        Ok(e) => e,
        Err(n) => return n.into_response(),
    };
    let Ok(node) = node.parse::<NodeId>() else {
        return text(StatusCode::BAD_REQUEST, "bad node ID (40 hex characters)");
    };
    if !st.providers.provides(&e.info.file_id, &node) {
        return text(
            StatusCode::NOT_FOUND,
            "not a provider of this file that this node found (GET /f/FILE_ID/peers first)",
        );
    }
    if let Some(r) = on_private_network(&st).or_else(|| over_budget(&st, client.ip())) {
        return r;
    }
    let offer = match read_offer(body).await {
        Ok(o) => o,
        Err(r) => return r,
    };
    let asked = st.handle.relay_browser_offer(node, &offer, client.ip());
    match tokio::time::timeout(BROWSER_RELAY_TIMEOUT, asked).await {
        Ok(Ok(answer)) => sdp_answer(answer),
        Ok(Err(e)) => text(StatusCode::BAD_GATEWAY, &e.to_string()),
        Err(_) => text(StatusCode::GATEWAY_TIMEOUT, "the other seeder did not answer in time"),
    }
}

/// `GET /share.js`.
pub(super) async fn script() -> Response {
    with_type(SCRIPT, "text/javascript; charset=utf-8")
}

/// `GET /share.css`.
pub(super) async fn style() -> Response {
    with_type(STYLE, "text/css; charset=utf-8")
}

/// `GET /f/sw.js`: the share page's service worker. Its scope is `/f/` (its own directory,
/// so no `Service-Worker-Allowed` header), and `no-cache` lets a new binary's worker replace
/// an old one on the next visit.
pub(super) async fn worker() -> Response {
    let mut r = with_type(WORKER, "text/javascript; charset=utf-8");
    r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_escaped_and_sizes_readable() {
        assert_eq!(
            escape_html(r#"<img src=x onerror="a('b')">&"#),
            "&lt;img src=x onerror=&quot;a(&#39;b&#39;)&quot;&gt;&amp;"
        );
        assert_eq!(human_size(5), "5 bytes");
        assert_eq!(human_size(64 << 20), "64.0 MiB (67108864 bytes)");
    }

    #[test]
    fn providers_are_remembered_per_file_for_a_while_and_bounded() {
        let p = Providers::default();
        let now = clock::now();
        let (f, g) = (FileId([1; 32]), FileId([2; 32]));
        let (a, b) = (NodeId::from_bytes([3; 20]), NodeId::from_bytes([4; 20]));
        p.put(f, now, vec![a]);
        assert_eq!(p.fresh(&f, now), Some(vec![a]));
        assert!(p.provides(&f, &a) && !p.provides(&f, &b) && !p.provides(&g, &a));
        // Stale for the page after the TTL, still the only nodes offers may go to.
        assert_eq!(p.fresh(&f, now + BROWSER_PEERS_TTL), None);
        assert!(p.provides(&f, &a));
        // Full: cleared before a new file goes in.
        for i in 0..BROWSER_PEERS_FILES_MAX {
            let mut id = [9; 32];
            id[..8].copy_from_slice(&(i as u64).to_le_bytes());
            p.put(FileId(id), now, vec![b]);
        }
        assert!(lock(&p.files).len() <= BROWSER_PEERS_FILES_MAX);
        assert!(!p.provides(&f, &a));
    }

    #[test]
    fn signaling_is_limited_per_ip_and_per_ipv6_prefix() {
        let l = SignalLimiter::default();
        let now = clock::now();
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        for _ in 0..BROWSER_SIGNAL_BURST {
            assert!(l.admit(a, now));
        }
        assert!(!l.admit(a, now), "beyond the burst");
        assert!(l.admit("192.0.2.2".parse().unwrap(), now), "another IP has its own budget");
        // One /64 is one client.
        let v6: Vec<IpAddr> = (0..=BROWSER_SIGNAL_BURST)
            .map(|i| format!("2001:db8::{i:x}").parse().unwrap())
            .collect();
        let admitted = v6.iter().filter(|ip| l.admit(**ip, now)).count() as u64;
        assert_eq!(admitted, BROWSER_SIGNAL_BURST);
        // The budget comes back with time.
        assert!(l.admit(a, now + std::time::Duration::from_secs(1)));
    }
}
