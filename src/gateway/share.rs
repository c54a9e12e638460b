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
//! - `GET /share.js`, `/share.css`: the page's script and style.
//!
//! Every value from the catalog is written into the page HTML-escaped, and the page is
//! served with a strict Content-Security-Policy (script and style only from this origin,
//! no framing), so a hostile file name cannot run script.

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
    BROWSER_OFFER_MAX_BYTES, BROWSER_SIGNALS_PER_S, BROWSER_SIGNAL_BURST, BROWSER_SIGNAL_IPS_MAX,
};
use crate::crypto::{ContentId, FileId, IdKind};
use crate::node::clock;
use crate::storage::CatalogEntry;
use crate::throttle::Throttle;

const PAGE: &str = include_str!("share/page.html");
const SCRIPT: &str = include_str!("share/share.js");
const STYLE: &str = include_str!("share/share.css");

/// The page's policy: its own script and style, fetches and nothing else from its origin.
const PAGE_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; \
     frame-ancestors 'none'";

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
    if st.handle.security().network().is_some() {
        return text(
            StatusCode::FORBIDDEN,
            "this node is on a private network (--network-secret): browsers cannot prove the secret",
        );
    }
    if st.handle.webrtc_addr().is_none() {
        return text(
            StatusCode::SERVICE_UNAVAILABLE,
            "this node runs without WebRTC (seed --webrtc HOST:PORT)",
        );
    }
    if !st.signals.admit(client.ip(), clock::now()) {
        let mut r = text(StatusCode::TOO_MANY_REQUESTS, "too many offers from your address");
        r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("2"));
        return r;
    }
    let offer: Bytes = match to_bytes(body, BROWSER_OFFER_MAX_BYTES).await {
        Ok(b) => b,
        Err(_) => {
            return text(
                StatusCode::PAYLOAD_TOO_LARGE,
                &format!("an offer is at most {BROWSER_OFFER_MAX_BYTES} bytes"),
            )
        }
    };
    let Ok(offer) = String::from_utf8(offer.to_vec()) else {
        return text(StatusCode::BAD_REQUEST, "the offer is not UTF-8");
    };
    if !offer.starts_with("v=0") {
        return text(StatusCode::BAD_REQUEST, "not an SDP offer");
    }
    let asked = st.handle.answer_browser(offer, client.ip());
    match tokio::time::timeout(ANSWER_TIMEOUT, asked).await {
        Ok(Ok(Some(answer))) => {
            let mut r = with_type(answer, "application/sdp");
            r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            r
        }
        Ok(Ok(None)) => text(
            StatusCode::SERVICE_UNAVAILABLE,
            "the seeder could not take this offer (malformed, or it is full)",
        ),
        Ok(Err(e)) => text(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
        Err(_) => text(StatusCode::SERVICE_UNAVAILABLE, "the seeder did not answer in time"),
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
