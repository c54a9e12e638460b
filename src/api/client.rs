//! A small client of the API for the CLI (`status`, `downloads`, `get --detach`, the
//! catalog sync of `publish`/`unpublish`): one request per call to the address a running
//! node wrote in its data directory, with its token, through `ureq`. Bounded: answers over
//! `RESPONSE_MAX_BYTES` are refused, and every phase has a deadline.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

/// Largest answer the client reads.
const RESPONSE_MAX_BYTES: u64 = 16 << 20;
/// Connect, response and per-read deadline of one request.
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

    /// `method path` with an optional JSON body; the JSON answer (`null` for an empty one,
    /// as 204 has). A 4xx or 5xx is [`ClientError::Refused`] with the API's error body.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<serde_json::Value, ClientError> {
        let addr = self.addr;
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .timeout_connect(Some(TIMEOUT))
            .timeout_recv_response(Some(TIMEOUT))
            .timeout_per_read(Some(TIMEOUT))
            .timeout_send_body(Some(TIMEOUT))
            .user_agent(concat!("furymesh/", env!("CARGO_PKG_VERSION")))
            .build()
            .into();
        let url = format!("http://{addr}{path}");
        let mut req = ureq::http::Request::builder().method(method).uri(&url);
        if let Some(t) = &self.token {
            req = req.header("Authorization", format!("Bearer {t}"));
        }
        let garbled = |what: String| ClientError::Garbled { addr, what };
        let sent = match body {
            Some(b) => {
                let req = req
                    .header("Content-Type", "application/json")
                    .body(b.to_string())
                    .map_err(|e| garbled(e.to_string()))?;
                agent.run(req)
            }
            None => agent.run(req.body(()).map_err(|e| garbled(e.to_string()))?),
        };
        let resp = sent.map_err(|e| match e {
            ureq::Error::Io(io) if io.kind() == std::io::ErrorKind::ConnectionRefused => {
                ClientError::NotRunning(addr.to_string())
            }
            ureq::Error::Io(source) => ClientError::Io { addr, source },
            ureq::Error::ConnectionFailed => ClientError::NotRunning(addr.to_string()),
            other => ClientError::Io { addr, source: std::io::Error::other(other.to_string()) },
        })?;
        let status = resp.status().as_u16();
        let text = resp
            .into_body()
            .with_config()
            .limit(RESPONSE_MAX_BYTES)
            .read_to_string()
            .map_err(|e| garbled(e.to_string()))?;
        let value: serde_json::Value = if text.is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_str(&text).map_err(|e| garbled(e.to_string()))?
        };
        if (200..300).contains(&status) {
            return Ok(value);
        }
        let field = |k: &str| value.get(k).and_then(|v| v.as_str()).unwrap_or("").to_owned();
        Err(ClientError::Refused { status, error: field("error"), detail: field("detail") })
    }
}
