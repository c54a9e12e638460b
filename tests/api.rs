//! The control API and `/metrics` of real `furymesh seed` processes on loopback, through a
//! raw HTTP/1.1 client: every resource, the token rules, refusals with their JSON error
//! bodies, a download started through the API, and metrics parsed by the reference
//! Prometheus parser (`prometheus_client` from PyPI, installed here when missing).
// Waits for events read the wall clock (the lint confines it to node::clock in the crate).
#![allow(clippy::disallowed_methods)]

mod common;

use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{fm, node_id, publish_id, run_ok, tempdir, write_file, Seeder};
use serde_json::{json, Value};

/// One answer: status, lower-cased header block, body.
struct Answer {
    status: u16,
    head: String,
    body: Vec<u8>,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    /// A refusal: `status` with the JSON error body naming `error`.
    fn refused(&self, status: u16, error: &str) {
        assert_eq!(self.status, status, "{}", String::from_utf8_lossy(&self.body));
        assert!(self.head.contains("content-type: application/json"), "{}", self.head);
        let v = self.json();
        assert_eq!(v["error"], error, "{v}");
        assert!(v["detail"].as_str().is_some_and(|d| !d.is_empty()), "{v}");
    }
}

/// One request on its own connection (`Connection: close`).
fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<(&str, &[u8])>,
) -> Answer {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if let Some(t) = token {
        req.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    let (ctype, bytes) = body.unwrap_or(("", b""));
    if !ctype.is_empty() {
        req.push_str(&format!("Content-Type: {ctype}\r\n"));
    }
    req.push_str(&format!("Content-Length: {}\r\n\r\n", bytes.len()));
    s.write_all(req.as_bytes()).unwrap();
    // The server may answer (413) before it reads all of a large body.
    let _ = s.write_all(bytes);
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").expect("a complete header");
    let head = String::from_utf8(raw[..split].to_vec()).unwrap().to_ascii_lowercase();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    let mut body = raw[split + 4..].to_vec();
    if head.contains("transfer-encoding: chunked") {
        body = dechunk(&body);
    }
    Answer { status, head, body }
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let eol = b.windows(2).position(|w| w == b"\r\n").unwrap();
        let size =
            usize::from_str_radix(std::str::from_utf8(&b[..eol]).unwrap().trim(), 16).unwrap();
        b = &b[eol + 2..];
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&b[..size]);
        b = &b[size + 2..];
    }
}

fn post_json(addr: SocketAddr, path: &str, token: Option<&str>, v: &Value) -> Answer {
    http(addr, "POST", path, token, Some(("application/json", v.to_string().as_bytes())))
}

/// A seeder with its API on an OS-chosen loopback port (or `api`); returns it with the
/// API address (from the address file it writes) and its token.
fn seeder_with_api(dir: &Path, api: &str, extra: &[&str]) -> (Seeder, SocketAddr, String) {
    let mut args = vec!["--api", api];
    args.extend_from_slice(extra);
    let _ = fs::remove_file(dir.join("api.addr"));
    let seeder = Seeder::start_with_args(dir, 1, &args);
    let deadline = Instant::now() + Duration::from_secs(30);
    let addr: SocketAddr = loop {
        if let Some(a) =
            fs::read_to_string(dir.join("api.addr")).ok().and_then(|s| s.trim().parse().ok())
        {
            break a;
        }
        assert!(Instant::now() < deadline, "the seeder wrote no api.addr");
        std::thread::sleep(Duration::from_millis(20));
    };
    let token = fs::read_to_string(dir.join("api.token")).unwrap().trim().to_owned();
    // Connect to loopback even when bound to every address.
    let addr = SocketAddr::new("127.0.0.1".parse().unwrap(), addr.port());
    (seeder, addr, token)
}

/// Polls a download until it leaves `running`/`cancelling` (bounded wait, not a timing).
fn wait_download(api: SocketAddr, id: u64) -> Value {
    wait_for(api, id, "to end", |v| {
        !matches!(v["state"].as_str(), Some("starting" | "running" | "pausing" | "cancelling"))
    })
}

/// Polls a download's status until `ok` holds (bounded wait, not a timing).
fn wait_for(api: SocketAddr, id: u64, what: &str, ok: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let a = http(api, "GET", &format!("/api/downloads/{id}"), None, None);
        assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.body));
        let v = a.json();
        if ok(&v) {
            return v;
        }
        assert!(Instant::now() < deadline, "download {id} did not get {what}: {v}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn every_resource_answers_and_client_mistakes_are_4xx_with_a_json_body() {
    let tmp = tempdir();
    let dir = tmp.path().join("node");
    let file = tmp.path().join("a.bin");
    write_file(&file, 300_000, 1);
    let id = publish_id(&dir, &file, &[]);
    let (seeder, api, token) = seeder_with_api(&dir, "127.0.0.1:0", &[]);
    let t = Some(token.as_str());
    let mode = fs::metadata(dir.join("api.token")).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "the token is private");

    // Node.
    let a = http(api, "GET", "/api/node", None, None);
    assert_eq!(a.status, 200);
    let n = a.json();
    assert_eq!(n["node_id"], node_id(&dir));
    assert_eq!(n["shards"], 1);
    assert_eq!(n["encryption"], "on");
    assert_eq!(n["listen_addresses"][0], seeder.peer());
    assert!(n["dht_table_size"].is_u64(), "{n}");
    assert!(n["uptime_seconds"].as_f64().unwrap() >= 0.0);
    assert_eq!(n["version"], env!("CARGO_PKG_VERSION"));

    // Files: list, one, unknown, malformed ID.
    let files = http(api, "GET", "/api/files", None, None).json();
    assert_eq!(files.as_array().unwrap().len(), 1);
    assert_eq!(files[0]["file_id"], id.as_str());
    assert_eq!(files[0]["id"], id.as_str());
    assert_eq!(files[0]["kind"], "file");
    assert_eq!(files[0]["state"], "ok");
    assert!(files[0]["state_detail"].is_null() && files[0]["files"].is_null(), "{files}");
    let f = http(api, "GET", &format!("/api/files/{id}"), None, None);
    assert_eq!(f.status, 200);
    assert_eq!(f.json()["size"], 300_000);
    assert_eq!(f.json()["name"], "a.bin");
    http(api, "GET", &format!("/api/files/{}", "ab".repeat(32)), None, None)
        .refused(404, "not_found");
    http(api, "GET", "/api/files/nothex", None, None).refused(400, "bad_file_id");

    // Publish: refused without the token (and with a wrong one), then done with it.
    let other = tmp.path().join("b.bin");
    write_file(&other, 100_000, 2);
    let body = json!({ "path": other });
    post_json(api, "/api/files", None, &body).refused(401, "unauthorized");
    post_json(api, "/api/files", Some(&"00".repeat(32)), &body).refused(401, "unauthorized");
    let p = post_json(api, "/api/files", t, &body);
    assert_eq!(p.status, 201, "{}", String::from_utf8_lossy(&p.body));
    let new_id = p.json()["published"][0]["file_id"].as_str().unwrap().to_owned();
    let files = http(api, "GET", "/api/files", None, None).json();
    assert_eq!(files.as_array().unwrap().len(), 2);
    // The CLI sees the same catalog.
    let ls = common::json(&run_ok(fm(&dir).args(["--json", "ls"])));
    assert!(ls.as_array().unwrap().iter().any(|e| e["file_id"] == new_id.as_str()));

    // Bad bodies.
    http(api, "POST", "/api/files", t, Some(("application/json", b"{\"path\":")))
        .refused(400, "malformed_json");
    post_json(api, "/api/files", t, &json!({ "path": 5 })).refused(400, "invalid_body");
    post_json(api, "/api/files", t, &json!({ "path": "/x", "extra": 1 }))
        .refused(400, "invalid_body");
    post_json(api, "/api/files", t, &json!({ "path": "relative/x" })).refused(400, "bad_path");
    post_json(api, "/api/files", t, &json!({ "path": tmp.path().join("missing") }))
        .refused(400, "bad_path");
    http(api, "POST", "/api/files", t, Some(("text/plain", b"{}")))
        .refused(415, "unsupported_media_type");
    let big = format!("{{\"path\":\"{}\"}}", "x".repeat(200_000));
    http(api, "POST", "/api/files", t, Some(("application/json", big.as_bytes())))
        .refused(413, "body_too_large");

    // Unpublish: token, then gone, then unknown.
    let del = format!("/api/files/{new_id}");
    http(api, "DELETE", &del, None, None).refused(401, "unauthorized");
    http(api, "DELETE", &format!("{del}?keep=1"), t, None).refused(400, "bad_query");
    let gone = http(api, "DELETE", &del, t, None);
    assert_eq!(gone.status, 200, "{}", String::from_utf8_lossy(&gone.body));
    assert_eq!(gone.json(), json!({ "unpublished": [new_id] }));
    http(api, "DELETE", &del, t, None).refused(404, "not_found");
    http(api, "GET", &del, None, None).refused(404, "not_found");

    // Downloads: empty list, unknown IDs, bad requests.
    let d = http(api, "GET", "/api/downloads", None, None);
    assert_eq!(d.status, 200);
    assert_eq!(d.json(), json!([]));
    http(api, "GET", "/api/downloads/7", None, None).refused(404, "not_found");
    http(api, "GET", "/api/downloads/x", None, None).refused(400, "bad_download_id");
    http(api, "DELETE", "/api/downloads/7", None, None).refused(401, "unauthorized");
    http(api, "DELETE", "/api/downloads/7", t, None).refused(404, "not_found");
    let out = tmp.path().join("out.bin");
    let req = |file_id: &str, peers: Value, output: &Path| json!({ "file_id": file_id, "peers": peers, "output": output });
    post_json(api, "/api/downloads", None, &req(&id, json!([seeder.peer()]), &out))
        .refused(401, "unauthorized");
    post_json(api, "/api/downloads", t, &req("zz", json!([seeder.peer()]), &out))
        .refused(400, "bad_file_id");
    post_json(api, "/api/downloads", t, &req(&id, json!(["nowhere"]), &out))
        .refused(400, "bad_peer");
    post_json(api, "/api/downloads", t, &req(&id, json!([seeder.peer()]), Path::new("rel.bin")))
        .refused(400, "bad_output");
    post_json(api, "/api/downloads", t, &req(&id, json!([seeder.peer()]), &file))
        .refused(409, "output_exists");
    post_json(api, "/api/downloads", t, &json!({ "file_id": id })).refused(400, "invalid_body");

    // Stats and the DHT.
    let s = http(api, "GET", "/api/stats", None, None);
    assert_eq!(s.status, 200);
    assert_eq!(s.json()["shards"], 1);
    assert_eq!(s.json()["files_served"], 1);
    let prov = http(api, "GET", &format!("/api/dht/providers/{id}"), None, None);
    assert_eq!(prov.status, 200, "{}", String::from_utf8_lossy(&prov.body));
    assert!(prov.json()["contacts"].is_array());
    http(api, "GET", "/api/dht/providers/zz", None, None).refused(400, "bad_file_id");

    // Unknown resources and methods.
    http(api, "GET", "/api/nothing", None, None).refused(404, "not_found");
    http(api, "PUT", "/api/node", t, None).refused(405, "method_not_allowed");
    http(api, "PUT", "/api/node", None, None).refused(405, "method_not_allowed");
    http(api, "DELETE", "/api/nothing", None, None).refused(404, "not_found");

    // The CLI as a client: status and downloads through the address and token files.
    let st = common::json(&run_ok(fm(&dir).args(["--json", "status"])));
    assert_eq!(st["node"]["node_id"], node_id(&dir));
    assert_eq!(st["stats"]["files_served"], 1);
    assert_eq!(st["api"], api.to_string());
    let human = run_ok(fm(&dir).arg("status"));
    assert!(String::from_utf8_lossy(&human.stdout).contains(&node_id(&dir)));
    let dl = common::json(&run_ok(fm(&dir).args(["--json", "downloads"])));
    assert_eq!(dl, json!([]));

    seeder.stop();
    assert!(!dir.join("api.addr").exists(), "the address file is removed at stop");
    let down = fm(&dir).arg("status").output().unwrap();
    assert!(!down.status.success());
    assert!(
        common::stderr_of(&down).contains("no node is running"),
        "{}",
        common::stderr_of(&down)
    );
}

#[test]
fn off_loopback_every_call_needs_the_token_and_api_off_serves_none() {
    let tmp = tempdir();
    let dir = tmp.path().join("node");
    let (seeder, api, token) = seeder_with_api(&dir, "0.0.0.0:0", &[]);
    http(api, "GET", "/api/node", None, None).refused(401, "unauthorized");
    http(api, "GET", "/metrics", None, None).refused(401, "unauthorized");
    // Routes and methods are public (the OpenAPI document lists them): an unknown one is
    // 404 or 405 with or without the token, never 401.
    http(api, "GET", "/api/nothing", None, None).refused(404, "not_found");
    http(api, "PUT", "/api/node", None, None).refused(405, "method_not_allowed");
    http(api, "PATCH", "/api/files", None, None).refused(405, "method_not_allowed");
    http(api, "GET", "/api/nothing", Some(&token), None).refused(404, "not_found");
    assert_eq!(http(api, "GET", "/api/node", Some(&token), None).status, 200);
    assert_eq!(http(api, "GET", "/metrics", Some(&token), None).status, 200);
    seeder.stop();
    // The token stays the same across restarts; `--api off` writes no address.
    let again = Seeder::start_with_args(&dir, 1, &["--api", "off"]);
    assert!(!dir.join("api.addr").exists());
    assert_eq!(fs::read_to_string(dir.join("api.token")).unwrap().trim(), token);
    again.stop();
}

/// `prometheus_client` (PyPI), installed for this user when missing.
fn ensure_prometheus_parser() {
    let have = |py: &str| {
        Command::new(py)
            .args(["-c", "import prometheus_client.parser"])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if have("python3") {
        return;
    }
    let ok = Command::new("python3")
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "prometheus_client",
        ])
        .status()
        .expect("python3 runs");
    assert!(ok.success() && have("python3"), "cannot install prometheus_client (pip)");
}

const PARSE: &str = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
out = {}
for fam in text_string_to_metric_families(sys.stdin.read()):
    out["TYPE " + fam.name] = fam.type
    for s in fam.samples:
        labels = ",".join('%s="%s"' % kv for kv in sorted(s.labels.items()))
        out[s.name + ("{" + labels + "}" if labels else "")] = s.value
print(json.dumps(out))
"#;

/// `/metrics` of `api`, parsed by the reference parser: sample (with sorted labels) → value,
/// and `TYPE family` → type.
fn scrape(api: SocketAddr) -> serde_json::Map<String, Value> {
    let a = http(api, "GET", "/metrics", None, None);
    assert_eq!(a.status, 200);
    assert!(a.head.contains("content-type: text/plain; version=0.0.4"), "{}", a.head);
    let mut py = Command::new("python3")
        .args(["-c", PARSE])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    py.stdin.take().unwrap().write_all(&a.body).unwrap();
    let out = py.wait_with_output().unwrap();
    assert!(out.status.success(), "the parser refused:\n{}", String::from_utf8_lossy(&a.body));
    serde_json::from_slice::<Value>(&out.stdout).unwrap().as_object().unwrap().clone()
}

fn metric(m: &serde_json::Map<String, Value>, key: &str) -> f64 {
    m.get(key).and_then(Value::as_f64).unwrap_or_else(|| panic!("no sample {key}"))
}

#[test]
fn api_download_completes_byte_identical_and_metrics_rise_during_it() {
    ensure_prometheus_parser();
    let tmp = tempdir();
    let (src_dir, dst_dir) = (tmp.path().join("src"), tmp.path().join("dst"));
    let file = tmp.path().join("big.bin");
    let data = write_file(&file, 24 << 20, 3);
    let id = publish_id(&src_dir, &file, &[]);
    let slow = tmp.path().join("slow.bin");
    write_file(&slow, 16 << 20, 4);
    let slow_id = publish_id(&src_dir, &slow, &[]);
    // Paced uploads, so scrapes land while chunks flow.
    let (src, src_api, _) =
        seeder_with_api(&src_dir, "127.0.0.1:0", &["--max-upload-rate", "12MiB"]);
    let (dst, dst_api, token) = seeder_with_api(&dst_dir, "127.0.0.1:0", &[]);
    let peer = format!("{}@{}", node_id(&src_dir), src.peer());

    let before = scrape(src_api);
    assert_eq!(before["TYPE furymesh_served_payload_bytes"], "counter");
    assert_eq!(before["TYPE furymesh_connections_open"], "gauge");
    assert_eq!(metric(&before, "furymesh_served_payload_bytes_total"), 0.0);
    assert_eq!(metric(&before, "furymesh_chunks_served_total"), 0.0);
    assert!(metric(&before, "process_resident_memory_bytes") > 0.0);
    assert!(before.contains_key("furymesh_dht_routing_table_contacts"));
    assert!(before
        .contains_key(r#"furymesh_handshake_failures_total{blame="peer",direction="incoming"}"#));

    let out = tmp.path().join("got.bin");
    let started = post_json(
        dst_api,
        "/api/downloads",
        Some(&token),
        &json!({ "file_id": id, "peers": [peer], "output": out }),
    );
    assert_eq!(started.status, 201, "{}", String::from_utf8_lossy(&started.body));
    let did = started.json()["id"].as_u64().unwrap();
    assert_eq!(started.json()["file_id"], id.as_str());

    // Scrape the seeder while the download runs: every scrape parses, counters never fall.
    let mut served = vec![0.0];
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        let m = scrape(src_api);
        let bytes = metric(&m, "furymesh_served_payload_bytes_total");
        assert!(bytes >= *served.last().unwrap(), "a counter fell: {served:?} then {bytes}");
        served.push(bytes);
        let s = http(dst_api, "GET", &format!("/api/downloads/{did}"), None, None).json();
        if s["state"] != "running" {
            break s;
        }
        assert!(s["total_bytes"] == 0 || s["total_bytes"] == data.len(), "{s}");
        assert!(Instant::now() < deadline, "the download did not end: {s}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(status["state"], "completed", "{status}");
    assert_eq!(status["done_bytes"], data.len());
    assert_eq!(status["total_bytes"], data.len());
    assert_eq!(status["chunks_done"], status["chunks_total"]);
    assert!(status["chunks_total"].as_u64().unwrap() > 1);
    assert_eq!(status["report"]["file_id"], id.as_str());
    assert_eq!(fs::read(&out).unwrap(), data, "the API's download is byte-identical");
    // The paced upload takes seconds: some scrape caught it midway.
    assert!(
        served.iter().any(|&b| b > 0.0 && b < data.len() as f64),
        "no scrape saw the transfer in progress: {served:?}"
    );

    let after = scrape(src_api);
    assert!(metric(&after, "furymesh_served_payload_bytes_total") >= data.len() as f64);
    assert!(
        metric(&after, "furymesh_chunks_served_total") >= status["chunks_total"].as_f64().unwrap()
    );
    assert!(metric(&after, "furymesh_connections_accepted_total") >= 1.0);
    assert!(metric(&after, "furymesh_requests_total") > 0.0);
    // One shard: its series is the node's total (the transfer is over, nothing moves).
    assert_eq!(
        metric(&after, r#"furymesh_shard_served_payload_bytes_total{shard="0"}"#),
        metric(&after, "furymesh_served_payload_bytes_total")
    );
    assert_eq!(
        metric(&after, r#"furymesh_shard_chunks_served_total{shard="0"}"#),
        metric(&after, "furymesh_chunks_served_total")
    );
    // The chunk-serve histogram counted every chunk served, in cumulative buckets.
    assert_eq!(after["TYPE furymesh_chunk_serve_seconds"], "histogram");
    let count = metric(&after, "furymesh_chunk_serve_seconds_count");
    assert_eq!(count, metric(&after, "furymesh_chunks_served_total"));
    assert_eq!(metric(&after, r#"furymesh_chunk_serve_seconds_bucket{le="+Inf"}"#), count);
    let mut buckets: Vec<(f64, f64)> = after
        .iter()
        .filter_map(|(k, v)| {
            let le = k.strip_prefix("furymesh_chunk_serve_seconds_bucket{le=\"")?;
            Some((le.trim_end_matches("\"}").parse().ok()?, v.as_f64()?))
        })
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    assert!(buckets.len() > 10, "{buckets:?}");
    assert!(buckets.windows(2).all(|w| w[0].1 <= w[1].1), "not cumulative: {buckets:?}");
    assert!(metric(&after, "furymesh_chunk_serve_seconds_sum") > 0.0);
    assert!(metric(&after, "furymesh_open_memory_maps") >= 1.0, "the served file is mapped");
    assert!(metric(&after, r#"furymesh_shard_open_memory_maps{shard="0"}"#) >= 1.0);
    for key in [
        r#"furymesh_dht_rpcs_total{direction="sent",type="find_node"}"#,
        r#"furymesh_dht_rpcs_total{direction="answered",type="ping"}"#,
        "furymesh_dht_rpc_failures_total",
        "furymesh_dht_lookups_total",
        "furymesh_dht_lookup_failures_total",
        "furymesh_dht_announcement_backlog",
    ] {
        metric(&after, key);
    }
    // A client that sends garbage instead of a handshake: counted by reason, and the
    // reasons add up to the incoming failures by blame.
    let incoming = |m: &serde_json::Map<String, Value>| -> (f64, f64) {
        let by_reason: f64 = m
            .iter()
            .filter(|(k, _)| k.starts_with("furymesh_incoming_handshake_failures_total{"))
            .filter_map(|(_, v)| v.as_f64())
            .sum();
        let by_blame =
            metric(m, r#"furymesh_handshake_failures_total{blame="peer",direction="incoming"}"#)
                + metric(
                    m,
                    r#"furymesh_handshake_failures_total{blame="local",direction="incoming"}"#,
                );
        (by_reason, by_blame)
    };
    assert_eq!(incoming(&after).0, 0.0);
    metric(&after, r#"furymesh_incoming_handshake_failures_total{reason="timeout"}"#);
    let mut garbage = TcpStream::connect(src.addr).unwrap();
    garbage.write_all(&[0xff; 64]).unwrap();
    drop(garbage);
    let deadline = Instant::now() + Duration::from_secs(60);
    let (by_reason, by_blame) = loop {
        let m = scrape(src_api);
        let (r, b) = incoming(&m);
        if r >= 1.0 {
            break (r, b);
        }
        assert!(Instant::now() < deadline, "the failed handshake was not counted by reason");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(by_reason, by_blame);
    // A lookup through the downloader's DHT (which knows nobody): counted, and failed.
    let before_lookups = metric(&scrape(dst_api), "furymesh_dht_lookups_total");
    let prov = http(dst_api, "GET", &format!("/api/dht/providers/{id}"), None, None);
    assert_eq!(prov.status, 200, "{}", String::from_utf8_lossy(&prov.body));
    let dst_m = scrape(dst_api);
    assert!(metric(&dst_m, "furymesh_dht_lookups_total") > before_lookups);
    assert!(metric(&dst_m, "furymesh_dht_lookup_failures_total") >= 1.0);
    assert_eq!(metric(&dst_m, "furymesh_downloads_started_total"), 1.0);
    assert_eq!(metric(&dst_m, r#"furymesh_downloads_finished_total{outcome="completed"}"#), 1.0);
    assert_eq!(metric(&dst_m, "furymesh_downloaded_bytes_total"), data.len() as f64);

    // The finished file is in the downloading node's catalog, and listed.
    let files = http(dst_api, "GET", "/api/files", None, None).json();
    assert!(files.as_array().unwrap().iter().any(|f| f["file_id"] == id.as_str()), "{files}");
    let list = http(dst_api, "GET", "/api/downloads", None, None).json();
    assert_eq!(list[0]["state"], "completed");
    let cli = common::json(&run_ok(fm(&dst_dir).args(["--json", "downloads"])));
    assert_eq!(cli[0]["state"], "completed");
    assert_eq!(cli[0]["file_id"], id.as_str());

    // A slow second download, cancelled: the verified part stays for a resume.
    let out2 = tmp.path().join("slow-got.bin");
    let started = post_json(
        dst_api,
        "/api/downloads",
        Some(&token),
        &json!({ "file_id": slow_id, "peers": [src.peer()], "output": out2, "max_download_rate": 1 << 20 }),
    );
    assert_eq!(started.status, 201, "{}", String::from_utf8_lossy(&started.body));
    let sid = started.json()["id"].as_u64().unwrap();
    assert_ne!(sid, did);
    let path = format!("/api/downloads/{sid}");
    let c = http(dst_api, "DELETE", &path, Some(&token), None);
    assert_eq!(c.status, 202, "{}", String::from_utf8_lossy(&c.body));
    let end = wait_download(dst_api, sid);
    assert_eq!(end["state"], "cancelled", "{end}");
    assert!(!out2.exists(), "a cancelled download leaves no output");
    http(dst_api, "DELETE", &path, Some(&token), None).refused(409, "wrong_state");

    dst.stop();
    src.stop();
}

/// A download started through the API with no peers: the node finds the providers through
/// its own DHT (joined through the source), as `GET /api/dht/providers/{id}` shows them.
#[test]
fn api_download_without_peers_finds_providers_through_the_nodes_dht() {
    let tmp = tempdir();
    let (src_dir, dst_dir) = (tmp.path().join("src"), tmp.path().join("dst"));
    let file = tmp.path().join("f.bin");
    let data = write_file(&file, 2 << 20, 5);
    let id = publish_id(&src_dir, &file, &[]);
    let (src, _, _) = seeder_with_api(&src_dir, "127.0.0.1:0", &[]);
    let (dst, dst_api, token) =
        seeder_with_api(&dst_dir, "127.0.0.1:0", &["--bootstrap", &src.peer()]);
    let out = tmp.path().join("got.bin");
    let started = post_json(
        dst_api,
        "/api/downloads",
        Some(&token),
        &json!({ "file_id": id, "output": out }),
    );
    assert_eq!(started.status, 201, "{}", String::from_utf8_lossy(&started.body));
    let did = started.json()["id"].as_u64().unwrap();
    let src_node = node_id(&src_dir);
    assert_eq!(started.json()["peers"][0], format!("{src_node}@{}", src.peer()));
    let end = wait_download(dst_api, did);
    assert_eq!(end["state"], "completed", "{end}");
    assert_eq!(fs::read(&out).unwrap(), data);
    let prov = http(dst_api, "GET", &format!("/api/dht/providers/{id}"), None, None);
    assert_eq!(prov.status, 200);
    let contacts = prov.json()["contacts"].clone();
    assert!(
        contacts.as_array().unwrap().iter().any(|c| c["node_id"] == src_node.as_str()),
        "{contacts}"
    );
    dst.stop();
    src.stop();
}

/// Idle HTTP clients can fill the API's connection cap (64), not the process: the next
/// connection is closed at once, the node keeps serving peers meanwhile, and the API
/// answers again once they leave.
#[test]
fn idle_api_clients_are_capped_and_never_stop_the_data_path() {
    let tmp = tempdir();
    let dir = tmp.path().join("src");
    let file = tmp.path().join("f.bin");
    let data = write_file(&file, 1 << 20, 6);
    let id = publish_id(&dir, &file, &[]);
    let (seeder, api, _) = seeder_with_api(&dir, "127.0.0.1:0", &[]);
    // Each sends half a request line and waits (the server waits for the rest).
    let mut idle = Vec::new();
    for _ in 0..64 {
        let mut s = TcpStream::connect(api).unwrap();
        s.write_all(b"GET /api/node HTTP/1.1\r\n").unwrap();
        idle.push(s);
    }
    // Over the cap: accepted and closed without an answer (bounded wait for the close).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut s = TcpStream::connect(api).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let _ = s.write_all(b"GET /api/node HTTP/1.1\r\nConnection: close\r\n\r\n");
        let mut buf = Vec::new();
        let closed = matches!(s.read_to_end(&mut buf), Ok(0)) || buf.is_empty();
        if closed {
            break;
        }
        // The 64 idle connections may not all be accepted yet.
        assert!(Instant::now() < deadline, "the API answered beyond its cap");
        std::thread::sleep(Duration::from_millis(50));
    }
    // The data path does not notice.
    let out = tmp.path().join("got.bin");
    run_ok(&mut common::get_cmd(&tmp.path().join("dl"), &id, &seeder.peer(), &out));
    assert_eq!(fs::read(&out).unwrap(), data);
    drop(idle);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ok = TcpStream::connect(api).is_ok_and(|mut s| {
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let _ = s.write_all(b"GET /api/node HTTP/1.1\r\nConnection: close\r\n\r\n");
            let mut buf = Vec::new();
            let _ = s.read_to_end(&mut buf);
            buf.starts_with(b"HTTP/1.1 200")
        });
        if ok {
            break;
        }
        assert!(Instant::now() < deadline, "the API did not recover");
        std::thread::sleep(Duration::from_millis(50));
    }
    seeder.stop();
}

/// `schemathesis` (PyPI) in a virtualenv under the target directory, created and installed
/// when missing (`scripts/test` does the same up front). Returns its executable.
fn ensure_schemathesis() -> std::path::PathBuf {
    let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).join("schemathesis-venv");
    let exe = venv.join("bin/schemathesis");
    let works =
        |e: &Path| Command::new(e).arg("--version").output().is_ok_and(|o| o.status.success());
    if works(&exe) {
        return exe;
    }
    let ok = Command::new("python3").arg("-m").arg("venv").arg(&venv).status().expect("python3");
    assert!(ok.success(), "cannot create a virtualenv at {}", venv.display());
    let ok = Command::new(venv.join("bin/pip"))
        .args(["install", "--quiet", "--disable-pip-version-check", "schemathesis"])
        .status()
        .expect("pip runs");
    assert!(ok.success() && works(&exe), "cannot install schemathesis (pip)");
    exe
}

/// Runs schemathesis against the running API at `api`; `extra` selects operations.
fn schemathesis(exe: &Path, api: SocketAddr, token: Option<&str>, extra: &[&str]) {
    let mut cmd = Command::new(exe);
    // Its cache (.schemathesis/) goes under target/, never into the source tree.
    cmd.current_dir(env!("CARGO_TARGET_TMPDIR"));
    cmd.args(["run", &format!("http://{api}/api/openapi.json")])
        .args(["--url", &format!("http://{api}")])
        .args([
            "--checks",
            "not_a_server_error,response_schema_conformance,status_code_conformance,\
             content_type_conformance",
        ])
        .args(["--max-examples", "25", "--workers", "1", "--seed", "7", "--request-timeout", "30"])
        .args(["--phases", "examples,coverage,fuzzing"])
        .args(["--suppress-health-check", "all", "--no-color"]);
    if let Some(t) = token {
        cmd.args(["-H", &format!("Authorization: Bearer {t}")]);
    }
    cmd.args(extra);
    let out = cmd.output().expect("schemathesis runs");
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "schemathesis found failures:\n{text}");
    assert!(text.contains("passed"), "schemathesis ran nothing:\n{text}");
}

/// The committed OpenAPI document is served without a token, and schemathesis, driving a
/// real node from it, finds no 5xx and no answer outside the document (status, content
/// type, body schema). The two calls that act on server-side paths (publish a path,
/// download to a path) are fuzzed without the token — random paths must never reach a
/// root filesystem — so they check the refusal; their accepted forms are tested above.
#[test]
fn schemathesis_finds_no_server_errors_and_answers_match_the_openapi_document() {
    let exe = ensure_schemathesis();
    let tmp = tempdir();
    let dir = tmp.path().join("node");
    let file = tmp.path().join("a.bin");
    write_file(&file, 200_000, 8);
    publish_id(&dir, &file, &[]);
    let (seeder, api, token) = seeder_with_api(&dir, "127.0.0.1:0", &[]);
    let doc = http(api, "GET", "/api/openapi.json", None, None);
    assert_eq!(doc.status, 200);
    let committed = fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/openapi.json"));
    assert_eq!(doc.body, committed.unwrap(), "the node serves the committed document");
    let on_paths = ["publish", "start_download"];
    let mut exclude = Vec::new();
    let mut include = Vec::new();
    for op in on_paths {
        exclude.extend(["--exclude-operation-id", op]);
        include.extend(["--include-operation-id", op]);
    }
    schemathesis(&exe, api, Some(&token), &exclude);
    schemathesis(&exe, api, None, &include);
    // The node still serves after the fuzzing.
    assert_eq!(http(api, "GET", "/api/node", None, None).status, 200);
    seeder.stop();
}

/// The source's open peer connections, from its API.
fn connections_open(api: SocketAddr) -> u64 {
    http(api, "GET", "/api/stats", None, None).json()["connections_open"].as_u64().unwrap()
}

/// Pause closes the download's connections and keeps its verified chunks; resume goes on
/// from them to a byte-identical file. The status has per-peer rows while it runs.
#[test]
fn api_download_pauses_and_resumes_with_per_peer_rows() {
    let tmp = tempdir();
    let (src_dir, dst_dir) = (tmp.path().join("src"), tmp.path().join("dst"));
    let file = tmp.path().join("f.bin");
    let data = write_file(&file, 16 << 20, 9);
    let id = publish_id(&src_dir, &file, &[]);
    let (src, src_api, _) =
        seeder_with_api(&src_dir, "127.0.0.1:0", &["--max-upload-rate", "4MiB"]);
    let (dst, api, token) = seeder_with_api(&dst_dir, "127.0.0.1:0", &[]);
    let t = Some(token.as_str());
    let out = tmp.path().join("got.bin");
    let started = post_json(
        api,
        "/api/downloads",
        t,
        &json!({ "file_id": id, "peers": [src.peer()], "output": out, "connections": 1 }),
    );
    assert_eq!(started.status, 201, "{}", String::from_utf8_lossy(&started.body));
    let did = started.json()["id"].as_u64().unwrap();
    let base = format!("/api/downloads/{did}");

    // Refusals first: no token, unknown ID, malformed ID. Resuming a running download is
    // a no-op (202), so scripts can repeat it.
    http(api, "POST", &format!("{base}/pause"), None, None).refused(401, "unauthorized");
    http(api, "POST", "/api/downloads/99/pause", t, None).refused(404, "not_found");
    http(api, "POST", "/api/downloads/x/resume", t, None).refused(400, "bad_download_id");
    assert_eq!(http(api, "POST", &format!("{base}/resume"), t, None).status, 202);

    let running = wait_for(api, did, "a peer row with bytes", |v| {
        v["peer_rows"][0]["bytes"].as_u64().is_some_and(|b| b > 0)
    });
    let row = &running["peer_rows"][0];
    assert_eq!(row["addr"], src.peer(), "{running}");
    assert_eq!(row["transport"], "tcp");
    assert_eq!(row["node_id"], node_id(&src_dir));
    assert!(row["chunks"].as_u64().unwrap() > 0, "{running}");

    let p = http(api, "POST", &format!("{base}/pause"), t, None);
    assert_eq!(p.status, 202, "{}", String::from_utf8_lossy(&p.body));
    let paused = wait_for(api, did, "paused", |v| v["state"] == "paused");
    let kept = paused["done_bytes"].as_u64().unwrap();
    assert!(kept > 0 && kept < data.len() as u64, "{paused}");
    assert!(!out.exists());
    // Paused: the source sees its connection closed (bounded wait for the close).
    let deadline = Instant::now() + Duration::from_secs(60);
    while connections_open(src_api) > 0 {
        assert!(Instant::now() < deadline, "the paused download kept its connection");
        std::thread::sleep(Duration::from_millis(50));
    }
    // Pausing again changes nothing.
    assert_eq!(http(api, "POST", &format!("{base}/pause"), t, None).status, 202);
    assert_eq!(http(api, "GET", &base, None, None).json()["state"], "paused");

    // Restarted, the node shows the paused download's real progress (from its resume
    // state), not 0 of 0, before anything runs again.
    dst.stop();
    let (dst, api, token) = seeder_with_api(&dst_dir, "127.0.0.1:0", &[]);
    let t = Some(token.as_str());
    let after = http(api, "GET", &base, None, None).json();
    assert_eq!(after["state"], "paused", "{after}");
    assert_eq!(after["total_bytes"], data.len() as u64, "{after}");
    let shown = after["done_bytes"].as_u64().unwrap();
    assert!(shown >= kept && shown < data.len() as u64, "kept {kept}: {after}");
    assert!(after["chunks_done"].as_u64().unwrap() > 0, "{after}");
    let human = String::from_utf8(run_ok(fm(&dst_dir).arg("downloads")).stdout).unwrap();
    assert!(
        human.contains("paused") && human.contains(&format!("{shown}/{} bytes", data.len())),
        "{human}"
    );

    // A download that fails says why, in the human list too.
    let missing = "ab".repeat(32);
    let bad = post_json(
        api,
        "/api/downloads",
        t,
        &json!({ "file_id": missing, "peers": [src.peer()], "output": tmp.path().join("no.bin") }),
    );
    assert_eq!(bad.status, 201, "{}", String::from_utf8_lossy(&bad.body));
    let failed = wait_download(api, bad.json()["id"].as_u64().unwrap());
    assert_eq!(failed["state"], "failed", "{failed}");
    let why = failed["error"].as_str().unwrap().to_owned();
    let human = String::from_utf8(run_ok(fm(&dst_dir).arg("downloads")).stdout).unwrap();
    assert!(human.contains(&format!("failed: {why}")), "{human}");

    let r = http(api, "POST", &format!("{base}/resume"), t, None);
    assert_eq!(r.status, 202, "{}", String::from_utf8_lossy(&r.body));
    let end = wait_download(api, did);
    assert_eq!(end["state"], "completed", "{end}");
    assert_eq!(fs::read(&out).unwrap(), data, "paused and resumed, byte-identical");
    let reused = end["report"]["chunks_reused"].as_u64().unwrap();
    assert!(reused > 0, "the resumed run fetched everything again: {end}");
    http(api, "POST", &format!("{base}/resume"), t, None).refused(409, "wrong_state");
    dst.stop();
    src.stop();
}

/// A download started through the API survives `kill -9` of its node: the restarted
/// `seed` resumes it from the list in its data directory, reusing the verified chunks,
/// and it completes byte-identical under the same API ID.
#[test]
fn api_download_resumes_after_the_node_is_killed() {
    let tmp = tempdir();
    let (src_dir, dst_dir) = (tmp.path().join("src"), tmp.path().join("dst"));
    let file = tmp.path().join("f.bin");
    let data = write_file(&file, 24 << 20, 10);
    let id = publish_id(&src_dir, &file, &[]);
    let (src, _, _) = seeder_with_api(&src_dir, "127.0.0.1:0", &["--max-upload-rate", "4MiB"]);
    let peer = format!("{}@{}", node_id(&src_dir), src.peer());
    let (dst, api, token) = seeder_with_api(&dst_dir, "127.0.0.1:0", &[]);
    let out = tmp.path().join("got.bin");
    let started = post_json(
        api,
        "/api/downloads",
        Some(&token),
        &json!({ "file_id": id, "peers": [peer], "output": out }),
    );
    assert_eq!(started.status, 201, "{}", String::from_utf8_lossy(&started.body));
    let did = started.json()["id"].as_u64().unwrap();
    // Midway: some chunks verified (and saved), most still to come.
    let mid = wait_for(api, did, "some verified chunks", |v| {
        v["chunks_done"].as_u64().is_some_and(|c| c >= 2)
    });
    assert!(mid["done_bytes"].as_u64().unwrap() < data.len() as u64, "{mid}");
    dst.kill9();
    let list: Value =
        serde_json::from_slice(&fs::read(dst_dir.join("api-downloads.json")).unwrap()).unwrap();
    assert_eq!(list["downloads"][0]["id"], did, "{list}");

    let (dst, api, _) = seeder_with_api(&dst_dir, "127.0.0.1:0", &[]);
    let end = wait_download(api, did);
    assert_eq!(end["state"], "completed", "{end}");
    assert_eq!(fs::read(&out).unwrap(), data, "resumed after kill -9, byte-identical");
    let r = &end["report"];
    let kept = r["chunks_reused"].as_u64().unwrap() + r["chunks_reverified"].as_u64().unwrap();
    assert!(kept > 0, "the restarted node fetched everything again: {end}");
    // Done: the list no longer names it, so a later start does not resume it again.
    let list: Value =
        serde_json::from_slice(&fs::read(dst_dir.join("api-downloads.json")).unwrap()).unwrap();
    assert_eq!(list["downloads"], json!([]), "{list}");
    dst.stop();
    src.stop();
}

/// Peers in both directions, per-file served figures, and storage: an abandoned
/// (cancelled) download's partial file is counted and removed by a cleanup old enough,
/// while a running download's is never touched.
#[test]
fn peers_served_files_storage_and_cleanup() {
    let tmp = tempdir();
    let (src_dir, dst_dir) = (tmp.path().join("src"), tmp.path().join("dst"));
    let (fa, fb) = (tmp.path().join("a.bin"), tmp.path().join("b.bin"));
    write_file(&fa, 16 << 20, 11);
    write_file(&fb, 16 << 20, 12);
    let (ida, idb) = (publish_id(&src_dir, &fa, &[]), publish_id(&src_dir, &fb, &[]));
    let (src, src_api, _) =
        seeder_with_api(&src_dir, "127.0.0.1:0", &["--max-upload-rate", "4MiB"]);
    let (dst, api, token) = seeder_with_api(&dst_dir, "127.0.0.1:0", &[]);
    let t = Some(token.as_str());
    let start = |id: &str, out: &Path, rate: u64| {
        let body = json!({ "file_id": id, "peers": [src.peer()], "output": out,
                           "connections": 1, "max_download_rate": rate });
        let a = post_json(api, "/api/downloads", t, &body);
        assert_eq!(a.status, 201, "{}", String::from_utf8_lossy(&a.body));
        a.json()["id"].as_u64().unwrap()
    };
    let (outa, outb) = (tmp.path().join("got-a.bin"), tmp.path().join("got-b.bin"));
    let da = start(&ida, &outa, 4 << 20);
    wait_for(api, da, "bytes from its peer", |v| {
        v["peer_rows"][0]["bytes"].as_u64().is_some_and(|b| b > 0)
    });

    // Both ends see the connection: the source uploads to dst, dst downloads from it.
    let up = http(src_api, "GET", "/api/peers", None, None).json();
    let row = up
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["node_id"] == node_id(&dst_dir).as_str())
        .unwrap_or_else(|| panic!("no row for the downloader: {up}"))
        .clone();
    assert_eq!(row["direction"], "upload");
    assert_eq!(row["transport"], "tcp");
    assert_eq!(row["shard"], 0);
    let down = http(api, "GET", "/api/peers", None, None).json();
    let row = down
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["direction"] == "download")
        .unwrap_or_else(|| panic!("no download row: {down}"))
        .clone();
    assert_eq!(row["download_id"], da);
    assert_eq!(row["addr"], src.peer());
    assert_eq!(row["node_id"], node_id(&src_dir));
    assert!(row["bytes"].as_u64().unwrap() > 0, "{row}");

    // Abandon a: cancelled midway, its partial file and resume state stay.
    assert_eq!(http(api, "DELETE", &format!("/api/downloads/{da}"), t, None).status, 202);
    assert_eq!(wait_download(api, da)["state"], "cancelled");
    let (partial_a, resume_a) = (
        tmp.path().join("got-a.bin.furymesh-partial"),
        tmp.path().join("got-a.bin.furymesh-resume"),
    );
    assert!(partial_a.exists() && resume_a.exists());
    // The source served a's chunks, per file.
    let f = http(src_api, "GET", &format!("/api/files/{ida}"), None, None).json();
    assert!(f["served_bytes"].as_u64().unwrap() > 0, "{f}");
    assert!(f["served_chunks"].as_u64().unwrap() > 0, "{f}");
    let list = http(src_api, "GET", "/api/files", None, None).json();
    let b_row = list.as_array().unwrap().iter().find(|f| f["file_id"] == idb.as_str()).unwrap();
    assert_eq!(b_row["served_bytes"], 0, "{list}");

    // b runs slowly while storage is measured and cleaned.
    let db = start(&idb, &outb, 1 << 20);
    wait_for(api, db, "some bytes", |v| v["done_bytes"].as_u64().is_some_and(|b| b > 0));
    let st = http(api, "GET", "/api/storage", None, None).json();
    assert_eq!(st["partial_downloads"], 2, "{st}");
    assert_eq!(st["abandoned_downloads"], 1, "{st}");
    assert!(st["abandoned_bytes"].as_u64().unwrap() > 0, "{st}");
    assert!(st["partial_bytes"].as_u64().unwrap() > st["abandoned_bytes"].as_u64().unwrap());
    let srcst = http(src_api, "GET", "/api/storage", None, None).json();
    assert_eq!(srcst["published_files"], 2);
    assert_eq!(srcst["published_bytes"], 32 << 20);

    // Refusals.
    let c = "/api/storage/cleanup";
    post_json(api, c, None, &json!({ "older_than_secs": 0 })).refused(401, "unauthorized");
    http(api, "POST", c, t, Some(("application/json", b"{\"older_than_secs\"")))
        .refused(400, "malformed_json");
    post_json(api, c, t, &json!({ "older_than_secs": -1 })).refused(400, "invalid_body");
    post_json(api, c, t, &json!({ "older_than_secs": "1" })).refused(400, "invalid_body");
    post_json(api, c, t, &json!({ "older_than_secs": 1, "all": true }))
        .refused(400, "invalid_body");
    post_json(api, c, t, &json!({})).refused(400, "invalid_body");

    // Too young: kept. Old enough (any age): a's leftovers go, b's (running) stay.
    let young = post_json(api, c, t, &json!({ "older_than_secs": 86_400 }));
    assert_eq!(young.status, 200, "{}", String::from_utf8_lossy(&young.body));
    assert_eq!(young.json()["removed"], json!([]));
    assert_eq!(young.json()["kept_young"], 1);
    assert!(partial_a.exists());
    let done = post_json(api, c, t, &json!({ "older_than_secs": 0 })).json();
    assert_eq!(done["removed"][0]["id"], da, "{done}");
    assert_eq!(done["removed"][0]["files"].as_array().unwrap().len(), 2, "{done}");
    assert!(done["bytes_freed"].as_u64().unwrap() > 0);
    assert!(!partial_a.exists() && !resume_a.exists());
    assert!(tmp.path().join("got-b.bin.furymesh-partial").exists(), "a running download's partial");
    assert_eq!(
        http(api, "GET", &format!("/api/downloads/{db}"), None, None).json()["state"],
        "running"
    );
    let st = http(api, "GET", "/api/storage", None, None).json();
    assert_eq!(st["abandoned_downloads"], 0, "{st}");
    assert_eq!(st["partial_downloads"], 1, "{st}");

    dst.stop();
    src.stop();
}

/// The CLI as the running node's client: `publish` and `unpublish` return once the node
/// serves (or refuses) the change, while a paced download of another file from the same
/// node runs on undisturbed; `ls` shows what the node served of each file, `get
/// --detach` hands a download to the node and `downloads` follows it; with no node running
/// `--detach` says so.
#[test]
fn cli_publish_unpublish_ls_and_get_detach_go_through_the_running_node() {
    let tmp = tempdir();
    let (src_dir, dst_dir) = (tmp.path().join("src"), tmp.path().join("dst"));
    let (a, b) = (tmp.path().join("a.bin"), tmp.path().join("b.bin"));
    let data_a = write_file(&a, 6 << 20, 31);
    let data_b = write_file(&b, 3 << 19, 32);
    let id_a = publish_id(&src_dir, &a, &[]);
    // Paced, so the download of A below is still running while B is published.
    let (src, _, _) = seeder_with_api(&src_dir, "127.0.0.1:0", &["--max-upload-rate", "2MiB"]);
    let got_a = tmp.path().join("got-a.bin");
    let mut long = common::get_cmd(&tmp.path().join("g0"), &id_a, &src.peer(), &got_a)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();

    // Published while seeding: served the moment `publish` returns (no watch interval).
    let out = run_ok(fm(&src_dir).args(["--json", "publish"]).arg(&b));
    let id_b = common::json(&out)[0]["file_id"].as_str().unwrap().to_owned();
    assert!(long.try_wait().unwrap().is_none(), "the paced download ended before the publish");
    let said = common::stderr_of(&out);
    assert!(said.contains("the node running here") && said.contains("serves 2 files"), "{said}");
    let got_b = tmp.path().join("got-b.bin");
    run_ok(&mut common::get_cmd(&tmp.path().join("g1"), &id_b, &src.peer(), &got_b));
    assert_eq!(fs::read(&got_b).unwrap(), data_b);
    // The download that ran meanwhile was not disturbed: complete, no peer error.
    let long = long.wait_with_output().unwrap();
    assert!(long.status.success(), "{}", common::stderr_of(&long));
    let report = common::json(&long);
    assert!(report["peers"].as_array().unwrap().iter().all(|p| p["error"].is_null()), "{report}");
    assert_eq!(fs::read(&got_a).unwrap(), data_a);

    // `ls` merges the node's per-file counters into the catalog's rows.
    let rows = common::json(&run_ok(fm(&src_dir).args(["--json", "ls"])));
    let row =
        |id: &str| rows.as_array().unwrap().iter().find(|r| r["file_id"] == id).cloned().unwrap();
    // At least the file (an end-game duplicate may be served twice).
    assert!(row(&id_b)["served_bytes"].as_u64().unwrap() >= data_b.len() as u64, "{rows}");
    assert!(row(&id_a)["served_bytes"].as_u64().unwrap() >= data_a.len() as u64, "{rows}");

    // Unpublished: refused the moment `unpublish` returns.
    let out = run_ok(fm(&src_dir).args(["unpublish", &id_b]));
    assert!(common::stderr_of(&out).contains("serves 1 file now"), "{}", common::stderr_of(&out));
    let refused =
        common::get_cmd(&tmp.path().join("g2"), &id_b, &src.peer(), &tmp.path().join("x"))
            .output()
            .unwrap();
    assert!(!refused.status.success());
    assert!(
        common::stderr_of(&refused).contains("does not have file"),
        "{}",
        common::stderr_of(&refused)
    );

    // `get --detach` on a data directory with no node: a clear refusal, nothing started.
    let none = fm(&dst_dir)
        .args(["get", &id_a, "--peer", &src.peer(), "-o", "a-out.bin", "--detach"])
        .current_dir(tmp.path())
        .output()
        .unwrap();
    assert!(!none.status.success());
    assert!(
        common::stderr_of(&none).contains("no node is running"),
        "{}",
        common::stderr_of(&none)
    );

    // With a node: the download runs inside it; a relative -o is the caller's.
    let (dst, _, _) = seeder_with_api(&dst_dir, "127.0.0.1:0", &[]);
    let started = common::json(&run_ok(
        fm(&dst_dir)
            .args(["--json", "get", &id_a, "--peer", &src.peer(), "-o", "a-out.bin", "--detach"])
            .current_dir(tmp.path()),
    ));
    let did = started["id"].as_u64().unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let list = common::json(&run_ok(fm(&dst_dir).args(["--json", "downloads"])));
        let d = list.as_array().unwrap().iter().find(|d| d["id"] == did).cloned().unwrap();
        if d["state"] == "completed" {
            break;
        }
        assert!(d["state"] != "failed", "{d}");
        assert!(Instant::now() < deadline, "detached download did not complete: {d}");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(fs::read(tmp.path().join("a-out.bin")).unwrap(), data_a);
    let human = run_ok(fm(&dst_dir).arg("downloads"));
    assert!(String::from_utf8_lossy(&human.stdout).contains("completed"));
    let unknown = fm(&dst_dir).args(["downloads", "cancel", "999"]).output().unwrap();
    assert!(!unknown.status.success());
    assert!(common::stderr_of(&unknown).contains("404"), "{}", common::stderr_of(&unknown));
    dst.stop();
    src.stop();
}

/// `GET /api/node` names the WebRTC address and `GET /api/peers` the transport of each
/// upload: a download over a data channel shows as `webrtc`.
#[test]
fn peers_name_each_uploads_transport() {
    let tmp = tempdir();
    let src_dir = tmp.path().join("src");
    let file = tmp.path().join("f.bin");
    write_file(&file, 2 << 20, 41);
    let id = publish_id(&src_dir, &file, &["--chunk-size", "256KiB"]);
    // Paced so the download is still open when /api/peers is read.
    let (src, api, _) = seeder_with_api(
        &src_dir,
        "127.0.0.1:0",
        &["--webrtc", "127.0.0.1:0", "--max-upload-rate", "512KiB"],
    );
    let node = http(api, "GET", "/api/node", None, None).json();
    let udp = node["webrtc_address"].as_str().unwrap_or_else(|| panic!("{node}")).to_owned();
    let mut get = common::get_cmd(&tmp.path().join("dl"), &id, &udp, &tmp.path().join("o"))
        .args(["--transport", "webrtc"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let row = loop {
        let peers = http(api, "GET", "/api/peers", None, None).json();
        if let Some(r) = peers.as_array().unwrap().iter().find(|r| r["direction"] == "upload") {
            break r.clone();
        }
        assert!(Instant::now() < deadline, "no upload row: {peers}");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(row["transport"], "webrtc", "{row}");
    let _ = get.kill();
    let _ = get.wait();
    src.stop();
}

/// A published file changed on disk is shown as such (API, `ls`, `status`, metrics) instead
/// of healthy; collections are listed as collections (`c-…`, their file count and total
/// size, counted apart from files), `GET /api/files/c-…` lists their files, and taking a
/// collection back takes the files it brought, except one another release also lists, or
/// only the collection with `keep_files`.
#[test]
fn changed_files_and_collections_are_first_class_in_the_api_and_cli() {
    let tmp = tempdir();
    let dir = tmp.path().join("node");
    let rel = tmp.path().join("rel");
    write_file(&rel.join("a.bin"), 1000, 41);
    let shared = write_file(&rel.join("sub/b.bin"), 2000, 42);
    let single = tmp.path().join("c.bin");
    write_file(&single, 3000, 43);
    let rows = common::json(&run_ok(fm(&dir).arg("--json").arg("publish").arg(&rel).arg(&single)));
    let cid = rows
        .as_array()
        .unwrap()
        .iter()
        .find_map(|r| r["collection_id"].as_str())
        .expect("a collection")
        .to_owned();
    let id_of = |name: &str| {
        rows.as_array()
            .unwrap()
            .iter()
            .find(|r| r["path"].as_str().is_some_and(|p| p.ends_with(name)))
            .and_then(|r| r["file_id"].as_str())
            .unwrap()
            .to_owned()
    };
    let (id_a, id_b, id_c) = (id_of("a.bin"), id_of("b.bin"), id_of("c.bin"));
    let (seeder, api, token) = seeder_with_api(&dir, "127.0.0.1:0", &[]);
    let t = Some(token.as_str());

    // Three files, then the collection with its ID, kind, file count and total size.
    let files = http(api, "GET", "/api/files", None, None).json();
    let files = files.as_array().unwrap();
    assert_eq!(files.len(), 4, "{files:?}");
    assert!(files[..3].iter().all(|f| f["kind"] == "file" && f["state"] == "ok"), "{files:?}");
    let c = &files[3];
    assert_eq!((&c["id"], &c["kind"]), (&json!(cid), &json!("collection")), "{c}");
    assert_eq!((&c["files"], &c["size"], &c["name"]), (&json!(2), &json!(3000), &json!("rel")));
    assert_eq!(c["file_id"], cid.trim_start_matches("c-"), "{c}");
    let n = http(api, "GET", "/api/node", None, None).json();
    assert_eq!(
        (&n["files_published"], &n["collections_published"], &n["files_changed"]),
        (&json!(3), &json!(1), &json!(0)),
        "{n}"
    );
    let st = http(api, "GET", "/api/storage", None, None).json();
    assert_eq!((&st["published_files"], &st["published_collections"]), (&json!(3), &json!(1)));
    assert_eq!(st["published_bytes"], 6000, "{st}");
    // One collection with its files; an ID written as the other kind is not found.
    let one = http(api, "GET", &format!("/api/files/{cid}"), None, None);
    assert_eq!(one.status, 200, "{}", String::from_utf8_lossy(&one.body));
    let one = one.json();
    let paths: Vec<&str> =
        one["entries"].as_array().unwrap().iter().map(|e| e["path"].as_str().unwrap()).collect();
    assert_eq!(paths, ["a.bin", "sub/b.bin"], "{one}");
    assert_eq!(one["entries"][1]["file_id"], id_b.as_str());
    http(api, "GET", &format!("/api/files/{}", cid.trim_start_matches("c-")), None, None)
        .refused(404, "not_found");
    http(api, "GET", &format!("/api/files/c-{id_c}"), None, None).refused(404, "not_found");
    http(api, "GET", "/api/files/c-zz", None, None).refused(400, "bad_file_id");

    // c.bin changes on disk: shown as changed everywhere, with what to do.
    fs::OpenOptions::new().append(true).open(&single).unwrap().write_all(b"more").unwrap();
    let f = http(api, "GET", &format!("/api/files/{id_c}"), None, None).json();
    assert_eq!(f["state"], "changed", "{f}");
    assert!(f["state_detail"].as_str().unwrap().contains("republish"), "{f}");
    assert_eq!(http(api, "GET", "/api/node", None, None).json()["files_changed"], 1);
    let m = String::from_utf8(http(api, "GET", "/metrics", None, None).body).unwrap();
    assert!(m.contains("\nfurymesh_published_files_changed 1\n"), "{m}");
    assert!(m.contains("\nfurymesh_published_files 3\n"), "{m}");
    assert!(m.contains("\nfurymesh_published_collections 1\n"), "{m}");
    let ls = run_ok(fm(&dir).arg("ls"));
    let human = String::from_utf8(ls.stdout.clone()).unwrap();
    assert!(human.contains("CHANGED: changed on disk since publish"), "{human}");
    assert!(
        common::stderr_of(&ls).contains("1 file changed on disk"),
        "{}",
        common::stderr_of(&ls)
    );
    let ls = common::json(&run_ok(fm(&dir).args(["--json", "ls"])));
    let row = ls.as_array().unwrap().iter().find(|r| r["file_id"] == id_c.as_str()).unwrap();
    assert_eq!(row["state"], "changed", "{row}");
    let status = String::from_utf8(run_ok(fm(&dir).arg("status")).stdout).unwrap();
    assert!(status.contains("3 files published, 1 collection (1 file changed on disk"), "{status}");
    // A file of the release changes: the collection says its downloads would fail.
    fs::OpenOptions::new().append(true).open(rel.join("a.bin")).unwrap().write_all(b"x").unwrap();
    let c = http(api, "GET", &format!("/api/files/{cid}"), None, None).json();
    assert_eq!(c["state"], "changed", "{c}");
    assert_eq!(c["entries"][0]["state"], "changed", "{c}");
    assert_eq!(c["entries"][1]["state"], "ok", "{c}");

    // A second release lists b.bin's content too: taking the first one back takes the
    // collection and a.bin, and keeps b.bin (still in the other release) and c.bin.
    let rel2 = tmp.path().join("rel2");
    fs::create_dir_all(&rel2).unwrap();
    fs::write(rel2.join("b-copy.bin"), &shared).unwrap();
    // Through the API this time: the directory's collection is in the answer.
    let p = post_json(api, "/api/files", t, &json!({ "path": rel2 }));
    assert_eq!(p.status, 201, "{}", String::from_utf8_lossy(&p.body));
    let p = p.json();
    assert_eq!(p["published"][0]["file_id"], id_b.as_str(), "{p}");
    assert_eq!(
        (&p["collections"][0]["kind"], &p["collections"][0]["files"]),
        (&json!("collection"), &json!(1))
    );
    let cid2 = p["collections"][0]["id"].as_str().unwrap().to_owned();
    assert!(cid2.starts_with("c-"), "{p}");
    let cid2 = cid2.as_str();
    let del = format!("/api/files/{cid}");
    http(api, "DELETE", &del, None, None).refused(401, "unauthorized");
    let gone = http(api, "DELETE", &del, t, None);
    assert_eq!(gone.status, 200, "{}", String::from_utf8_lossy(&gone.body));
    assert_eq!(gone.json(), json!({ "unpublished": [cid, id_a] }));
    let left: Vec<String> = http(api, "GET", "/api/files", None, None)
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(left.len(), 3, "{left:?}");
    assert!(left.contains(&id_b) && left.contains(&id_c) && left.contains(&cid2.to_owned()));
    http(api, "DELETE", &del, t, None).refused(404, "not_found");
    // keep_files: the collection alone.
    let kept = http(api, "DELETE", &format!("/api/files/{cid2}?keep_files=true"), t, None);
    assert_eq!(kept.json(), json!({ "unpublished": [cid2] }));
    let n = http(api, "GET", "/api/node", None, None).json();
    assert_eq!((&n["files_published"], &n["collections_published"]), (&json!(2), &json!(0)));
    seeder.stop();
}
