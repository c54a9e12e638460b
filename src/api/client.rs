//! A small client of the API for the CLI (`furymesh status`): one HTTP/1.1 request per
//! connection (`Connection: close`) to the address a running node wrote in its data
//! directory, with its token. Bounded: answers over `RESPONSE_MAX_BYTES` are refused.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::Duration;

/// Largest answer the client reads.
const RESPONSE_MAX_BYTES: u64 = 16 << 20;
/// Connect, read and write deadline of one request.
const TIMEOUT: Duration = Duration::from_secs(10);

/// Why a request through the API did not give an answer.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No node runs for this data directory (no address file, or nobody listens there).
    #[error("no node is running for {0} (start `furymesh seed` there, with its API on)")]
    NotRunning(String),
    #[error("the API at {addr} failed: {source}")]
    Io { addr: SocketAddr, source: std::io::Error },
    #[error("the API at {addr} answered something that is not HTTP/JSON: {what}")]
    Garbled { addr: SocketAddr, what: String },
    /// The API refused: its status and JSON error body.
    #[error("the API answered {status}: {error}: {detail}")]
    Refused { status: u16, error: String, detail: String },
}

/// A client of the API of the node running on one data directory.
#[derive(Debug, Clone)]
pub struct ApiClient {
    addr: SocketAddr,
    token: Option<String>,
}

impl ApiClient {
    /// The client of the node running for `data_dir`, if its address file names one.
    pub fn for_data_dir(data_dir: &Path) -> Result<Self, ClientError> {
        let addr = super::read_addr(data_dir)
            .ok_or_else(|| ClientError::NotRunning(data_dir.display().to_string()))?;
        Ok(Self { addr, token: super::read_token(data_dir) })
    }

    /// The API's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `GET path`, the JSON answer.
    pub fn get(&self, path: &str) -> Result<serde_json::Value, ClientError> {
        self.request("GET", path, None)
    }

    /// `method path` with an optional JSON body; the JSON answer (`null` for 204).
    pub fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<serde_json::Value, ClientError> {
        let addr = self.addr;
        let io = |source| ClientError::Io { addr, source };
        let mut s = TcpStream::connect_timeout(&addr, TIMEOUT).map_err(|e| {
            if e.kind() == std::io::ErrorKind::ConnectionRefused {
                ClientError::NotRunning(addr.to_string())
            } else {
                io(e)
            }
        })?;
        s.set_read_timeout(Some(TIMEOUT)).map_err(io)?;
        s.set_write_timeout(Some(TIMEOUT)).map_err(io)?;
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
        if let Some(t) = &self.token {
            req.push_str(&format!("Authorization: Bearer {t}\r\n"));
        }
        if !body.is_empty() {
            req.push_str("Content-Type: application/json\r\n");
        }
        req.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
        s.write_all(req.as_bytes()).map_err(io)?;
        let mut raw = Vec::new();
        s.take(RESPONSE_MAX_BYTES).read_to_end(&mut raw).map_err(io)?;
        let garbled = |what: &str| ClientError::Garbled { addr, what: what.into() };
        let split = raw
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .ok_or_else(|| garbled("no header end"))?;
        let head = std::str::from_utf8(&raw[..split]).map_err(|_| garbled("header not UTF-8"))?;
        let status: u16 = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| garbled("no status"))?;
        let chunked = head.lines().any(|l| {
            let l = l.to_ascii_lowercase();
            l.starts_with("transfer-encoding:") && l.contains("chunked")
        });
        let body = &raw[split + 4..];
        let body = if chunked {
            dechunk(body).ok_or_else(|| garbled("bad chunked body"))?
        } else {
            body.to_vec()
        };
        let value: serde_json::Value = if body.is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_slice(&body).map_err(|e| garbled(&e.to_string()))?
        };
        if (200..300).contains(&status) {
            return Ok(value);
        }
        let field = |k: &str| value.get(k).and_then(|v| v.as_str()).unwrap_or("").to_owned();
        Err(ClientError::Refused { status, error: field("error"), detail: field("detail") })
    }
}

/// The body of a `Transfer-Encoding: chunked` answer.
fn dechunk(mut b: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = b.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&b[..eol]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        b = &b[eol + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(b.get(..size)?);
        b = b.get(size + 2..)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dechunks_and_refuses_truncation() {
        assert_eq!(dechunk(b"3\r\nabc\r\n2;x=1\r\nde\r\n0\r\n\r\n").unwrap(), b"abcde");
        assert!(dechunk(b"5\r\nab").is_none());
    }
}
