//! Web seeds: ordinary HTTP(S) servers (nginx, a CDN, a release mirror) as sources of a
//! download's chunks (`get --web-seed URL`, or a link's `web-seed=`).
//!
//! As in BitTorrent's BEP 19, the URL names the whole file as the mirror serves it; each
//! chunk is one `GET` with `Range: bytes=START-END` (RFC 9110 §14.2), answered by
//! `206 Partial Content` with a `Content-Range: bytes START-END/SIZE` (§14.4) that must
//! name exactly the range asked for and the manifest's file size. The manifest still comes
//! from a FuryMesh peer: a mirror is trusted for nothing, and each chunk is hashed against
//! the manifest like any peer's before it counts.
//!
//! One plain thread per web seed runs a blocking HTTP client (ureq: small, well kept,
//! rustls on ring as the record layer already uses; no async runtime of its own), so a
//! slow DNS lookup, connect or read never blocks a glommio shard. The shard side of the
//! download (`fetch.rs`, `web_loop`) treats the web seed as one more source of the swarm
//! scheduler with its own window, and talks to the thread over two flume channels:
//! [`WebRequest`]s in, [`WebAnswer`]s out.
//!
//! Hostile input is bounded: at most the chunk's length is read from any response, header
//! sizes are ureq's bounded defaults, redirects are followed at most
//! `WEB_SEED_REDIRECTS_MAX` times, and every phase (connect, response, each read) has the
//! node's peer timeout. A mirror that cannot serve (an error status, a response without
//! ranges, a redirect loop, silence) ends that source with a [`WebSeedError`]; the
//! download goes on from the others.

use std::io::{self, Read};
use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::clock;
use crate::config::{WEB_SEED_PROGRESS_BYTES, WEB_SEED_REDIRECTS_MAX};
use crate::crypto::chunk_hash;
use crate::manifest::FileInfo;

/// Checks a `--web-seed` value: an `http://` or `https://` URL with a host, at most 4,096
/// bytes, no whitespace or control characters. Returns it unchanged.
pub fn parse_web_seed(s: &str) -> Result<String, String> {
    let lower = s.get(..8).unwrap_or(s).to_ascii_lowercase();
    let rest = if lower.starts_with("http://") {
        &s[7..]
    } else if lower.starts_with("https://") {
        &s[8..]
    } else {
        return Err(format!("{s:?} is not an http:// or https:// URL"));
    };
    if s.len() > 4096 {
        return Err("URL longer than 4096 bytes".into());
    }
    if s.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(format!("{s:?} has whitespace or control characters"));
    }
    if rest.split(['/', '?', '#']).next().is_none_or(str::is_empty) {
        return Err(format!("{s:?} has no host"));
    }
    Ok(s.to_owned())
}

/// One chunk for the web seed's thread to fetch.
#[derive(Debug, Clone)]
pub(super) struct WebRequest {
    /// The chunk.
    pub(super) index: u32,
    /// Its bytes in the file (end exclusive).
    pub(super) range: Range<u64>,
    /// Not before this instant (the download's rate limit).
    pub(super) release: Instant,
}

/// What the thread reports.
#[derive(Debug)]
pub(super) enum WebAnswer {
    /// Part of a chunk arrived ([`WEB_SEED_PROGRESS_BYTES`] more): the mirror is delivering.
    Progress,
    /// A whole chunk, hashed against the manifest (`verified`); unverified bytes are never
    /// used. `latency` runs from the request's release to the last byte.
    Chunk { index: u32, bytes: Vec<u8>, verified: bool, latency: Duration },
    /// The mirror cannot serve this download; the thread ended.
    Failed(WebSeedError),
}

/// Why a web seed was given up on. Each is one line for the per-source report.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebSeedError {
    /// It answered `200 OK` with the whole file: it does not serve byte ranges.
    #[error("does not support Range requests (200 instead of 206 Partial Content)")]
    RangeIgnored,
    /// Any other status than 206 (404, 403, 500, a redirect beyond what is followed, …).
    #[error("HTTP status {status} for bytes {range}")]
    Status { status: u16, range: String },
    /// A 206 whose `Content-Range` is not the range asked for, or names another file size.
    #[error("asked for bytes {asked} of {size}, got Content-Range {got:?}")]
    WrongRange { asked: String, size: u64, got: String },
    /// The body ended before the chunk's length.
    #[error("body of {got} bytes where bytes {range} ({want} bytes) were due")]
    Short { got: u64, want: u64, range: String },
    /// Nothing arrived for the node's peer timeout while connecting, waiting for the
    /// response or reading the body (`phase`).
    #[error("stalled: nothing for {}s ({phase})", .after.as_secs_f64())]
    Stalled { after: Duration, phase: String },
    /// Transport failure: connect, TLS, too many redirects, a closed connection.
    #[error("{0}")]
    Http(String),
}

/// Starts the thread of the web seed at `url` for the file `info`: it fetches each
/// [`WebRequest`] in turn and answers on `answers`, until `requests` closes or the mirror
/// fails. `timeout` bounds connecting, waiting for a response and each read.
pub(super) fn spawn(
    url: String,
    info: Arc<FileInfo>,
    timeout: Duration,
    requests: flume::Receiver<WebRequest>,
    answers: flume::Sender<WebAnswer>,
) -> io::Result<()> {
    std::thread::Builder::new().name("furymesh-webseed".into()).spawn(move || {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(WEB_SEED_REDIRECTS_MAX)
            .timeout_connect(Some(timeout))
            .timeout_recv_response(Some(timeout))
            .timeout_per_read(Some(timeout))
            .user_agent(concat!("furymesh/", env!("CARGO_PKG_VERSION")))
            .build()
            .into();
        while let Ok(req) = requests.recv() {
            // The download ended (its side of the channel is gone): drop what is queued.
            if answers.is_disconnected() {
                return;
            }
            let wait = req.release.saturating_duration_since(clock::now());
            if !wait.is_zero() {
                std::thread::sleep(wait);
            }
            let answer = match fetch_range(&agent, &url, &req.range, info.size, timeout, &answers) {
                Ok(bytes) => {
                    let verified = info
                        .chunk_hashes
                        .get(req.index as usize)
                        .is_some_and(|h| *h == chunk_hash(&bytes));
                    let latency = clock::now().saturating_duration_since(req.release);
                    WebAnswer::Chunk { index: req.index, bytes, verified, latency }
                }
                Err(e) => {
                    let _ = answers.send(WebAnswer::Failed(e));
                    return;
                }
            };
            if answers.send(answer).is_err() {
                return;
            }
        }
    })?;
    Ok(())
}

/// `GET url` for the bytes `range` of a file of `size` bytes: the body of a matching 206,
/// exactly `range`'s length, never more read. Reports progress on `answers` as it reads.
fn fetch_range(
    agent: &ureq::Agent,
    url: &str,
    range: &Range<u64>,
    size: u64,
    timeout: Duration,
    answers: &flume::Sender<WebAnswer>,
) -> Result<Vec<u8>, WebSeedError> {
    let stalled = |phase: String| WebSeedError::Stalled { after: timeout, phase };
    let (first, last) = (range.start, range.end.saturating_sub(1));
    let asked = format!("{first}-{last}");
    let resp =
        agent.get(url).header("Range", format!("bytes={asked}")).call().map_err(|e| match e {
            ureq::Error::Timeout(t) => stalled(format!("timeout: {t}")),
            ureq::Error::Io(io) if io.kind() == io::ErrorKind::TimedOut => stalled(io.to_string()),
            other => WebSeedError::Http(other.to_string()),
        })?;
    match resp.status().as_u16() {
        206 => {}
        200 => return Err(WebSeedError::RangeIgnored),
        status => return Err(WebSeedError::Status { status, range: asked }),
    }
    let got = resp
        .headers()
        .get("content-range")
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .unwrap_or_default();
    if !content_range_matches(&got, first, last, size) {
        let got: String = got.chars().take(120).collect();
        return Err(WebSeedError::WrongRange { asked, size, got });
    }
    let want = range.end - range.start;
    let mut body = resp.into_body().into_reader().take(want);
    let mut bytes = Vec::with_capacity(want as usize);
    loop {
        let n =
            (&mut body).take(WEB_SEED_PROGRESS_BYTES).read_to_end(&mut bytes).map_err(
                |e| match e.kind() {
                    io::ErrorKind::TimedOut => stalled(format!("reading the body: {e}")),
                    _ => WebSeedError::Http(e.to_string()),
                },
            )?;
        if n == 0 || bytes.len() as u64 == want {
            break;
        }
        let _ = answers.send(WebAnswer::Progress);
    }
    if bytes.len() as u64 != want {
        return Err(WebSeedError::Short { got: bytes.len() as u64, want, range: asked });
    }
    Ok(bytes)
}

/// Whether `value` is `bytes FIRST-LAST/SIZE` (or `/*`, size unknown) for exactly this
/// range of a file of `size` bytes (RFC 9110 §14.4).
fn content_range_matches(value: &str, first: u64, last: u64, size: u64) -> bool {
    let Some(rest) = value.trim().strip_prefix("bytes ") else { return false };
    let Some((span, total)) = rest.split_once('/') else { return false };
    let total_ok = total == "*" || total.parse::<u64>().is_ok_and(|t| t == size);
    let span_ok = span.split_once('-').is_some_and(|(a, b)| {
        a.parse::<u64>().is_ok_and(|a| a == first) && b.parse::<u64>().is_ok_and(|b| b == last)
    });
    total_ok && span_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn web_seed_urls_are_checked() {
        assert!(parse_web_seed("http://127.0.0.1:8080/f.bin").is_ok());
        assert!(parse_web_seed("HTTPS://mirror.example.org/r/app.tar.gz?x=1").is_ok());
        for bad in ["ftp://x/y", "http://", "https:///path", "http://a b/", "mirror/f", ""] {
            assert!(parse_web_seed(bad).is_err(), "{bad:?} accepted");
        }
        assert!(parse_web_seed(&format!("http://h/{}", "a".repeat(5000))).is_err());
    }

    #[test]
    fn content_range_must_name_the_range_and_the_size() {
        assert!(content_range_matches("bytes 0-99/1000", 0, 99, 1000));
        assert!(content_range_matches("bytes 900-999/*", 900, 999, 1000));
        for bad in [
            "bytes 0-98/1000",
            "bytes 1-99/1000",
            "bytes 0-99/1001",
            "bytes */1000",
            "0-99/1000",
            "bytes 0-99",
            "",
            "bytes -1-99/1000",
            "bytes 0-99/1000x",
        ] {
            assert!(!content_range_matches(bad, 0, 99, 1000), "{bad:?} accepted");
        }
    }
}
