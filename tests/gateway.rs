//! The HTTP gateway (`seed --http`, issue 15 item 4) of a real `furymesh seed` process on
//! loopback, fetched with Debian's `curl` (scripts/test installs it) and a raw socket:
//! whole files and single ranges byte-identical, HEAD, 206/304/400/404/416, collection
//! entries by their manifest path only (traversal attempts refused, nothing outside served),
//! files published while the node runs, and files truncated under the node (a clean 503,
//! or a body cut short, while the node keeps answering).

// Real processes on real time: the waits read the clock directly.
#![allow(clippy::disallowed_methods)]

mod common;

use std::collections::HashMap;
use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

/// A seeder with the gateway on an OS-chosen port (and the control API on `api`), and the
/// gateway's address (from `DATA_DIR/http.addr`).
fn seed_with_gateway(data: &Path, api: &str) -> (Seeder, SocketAddr) {
    let seeder = Seeder::start_with_args(data, 1, &["--api", api, "--http", "127.0.0.1:0"]);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        // The API (when on) starts after the gateway: wait for its address file too.
        let api_up = api == "off" || furymesh::api::read_addr(data).is_some();
        if let Some(a) = furymesh::gateway::read_addr(data).filter(|_| api_up) {
            return (seeder, a);
        }
        assert!(
            Instant::now() < deadline,
            "the gateway wrote no http.addr (or the API no api.addr)"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One curl answer.
struct Got {
    status: u16,
    /// Header names lower-cased.
    headers: HashMap<String, String>,
    body: Vec<u8>,
    /// curl's exit code (0: complete; 18: body shorter than announced).
    exit: i32,
}

/// `curl -s` `url` with `extra` arguments (`--path-as-is` is always given, so curl sends
/// `..` as written).
fn curl(dir: &Path, url: &str, extra: &[&str]) -> Got {
    let (h, b) = (dir.join("curl.h"), dir.join("curl.b"));
    let _ = fs::remove_file(&b);
    let out = Command::new("curl")
        .args(["-s", "--path-as-is", "-D"])
        .arg(&h)
        .arg("-o")
        .arg(&b)
        .args(["-w", "%{http_code}"])
        .args(extra)
        .arg(url)
        .output()
        .expect("curl (apt-get install curl; scripts/test does)");
    let head = fs::read_to_string(&h).unwrap_or_default();
    let headers = head
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Got {
        status: String::from_utf8_lossy(&out.stdout).trim().parse().unwrap_or(0),
        headers,
        body: fs::read(&b).unwrap_or_default(),
        exit: out.status.code().unwrap_or(-1),
    }
}

impl Got {
    fn header(&self, name: &str) -> &str {
        self.headers.get(name).map(String::as_str).unwrap_or_else(|| {
            panic!("no {name} header (status {}): {:?}", self.status, self.headers)
        })
    }
}

/// A raw request with `Connection: close`; returns everything the server sent.
fn raw(addr: SocketAddr, method: &str, path: &str) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    out
}

#[test]
fn curl_gets_files_ranges_and_collection_entries_byte_identical() {
    let t = tempdir();
    let (data, rel) = (t.path().join("data"), t.path().join("release"));
    let big = write_file(&rel.join("big.bin"), (3 << 20) + 12_345, 1);
    let small = b"a small text file\n".to_vec();
    fs::create_dir_all(rel.join("docs")).unwrap();
    fs::write(rel.join("docs/r\u{e9}sum\u{e9}.txt"), &small).unwrap();
    // Published on its own, outside the release: no /c/ path may reach it.
    let secret = b"SECRET-OUTSIDE-THE-RELEASE".to_vec();
    fs::write(t.path().join("secret.txt"), &secret).unwrap();
    let secret_id = publish_id(&data, &t.path().join("secret.txt"), &[]);
    let rows = publish_rows(&data, &[&rel], &[]);
    let big_id = rows.iter().find(|r| r["path"].as_str().unwrap().ends_with("big.bin")).unwrap()
        ["file_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let cid = rows.iter().find_map(|r| r["collection_id"].as_str()).unwrap().to_owned();
    let (mut seeder, addr) = seed_with_gateway(&data, "off");
    let url = format!("http://{addr}/files/{big_id}");
    let len = big.len();

    // The whole file, with its headers.
    let g = curl(t.path(), &url, &[]);
    assert_eq!((g.status, g.exit), (200, 0));
    assert!(g.body == big, "whole file differs ({} bytes)", g.body.len());
    assert_eq!(g.header("content-length"), len.to_string());
    assert_eq!(g.header("etag"), format!("\"{big_id}\""));
    assert_eq!(g.header("accept-ranges"), "bytes");
    assert_eq!(g.header("content-type"), "application/octet-stream");
    assert_eq!(g.header("content-disposition"), "inline; filename=\"big.bin\"");
    let mtime = fs::metadata(rel.join("big.bin")).unwrap().modified().unwrap();
    assert_eq!(g.header("last-modified"), httpdate::fmt_http_date(mtime));

    // HEAD: the same headers, no body (read to the end of a closed connection).
    let head = raw(addr, "HEAD", &format!("/files/{big_id}"));
    let text = String::from_utf8_lossy(&head).to_ascii_lowercase();
    assert!(text.starts_with("http/1.1 200"), "{text}");
    assert!(text.contains(&format!("content-length: {len}\r\n")), "{text}");
    assert!(text.contains(&format!("etag: \"{big_id}\"")), "{text}");
    assert!(text.ends_with("\r\n\r\n"), "HEAD sent a body: {text}");

    // Single ranges: first byte, middle, last bytes, a suffix, an open end.
    let cases: [(String, usize, usize); 5] = [
        ("0-0".into(), 0, 1),
        ("1000000-1999999".into(), 1_000_000, 2_000_000),
        (format!("{}-{}", len - 7, len - 1), len - 7, len),
        ("-4096".into(), len - 4096, len),
        (format!("{}-", len - 300_000), len - 300_000, len),
    ];
    for (spec, from, to) in &cases {
        let g = curl(t.path(), &url, &["-H", &format!("Range: bytes={spec}")]);
        assert_eq!((g.status, g.exit), (206, 0), "bytes={spec}");
        assert!(g.body == big[*from..*to], "bytes={spec}: {} bytes differ", g.body.len());
        assert_eq!(g.header("content-range"), format!("bytes {from}-{}/{len}", to - 1));
        assert_eq!(g.header("content-length"), (to - from).to_string());
    }
    // Unsatisfiable: 416 with the length.
    for spec in [format!("{len}-"), format!("{}-{}", len + 5, len + 9), "-0".into()] {
        let g = curl(t.path(), &url, &["-H", &format!("Range: bytes={spec}")]);
        assert_eq!(g.status, 416, "bytes={spec}");
        assert_eq!(g.header("content-range"), format!("bytes */{len}"));
    }
    // Several ranges: the whole file with 200 (documented choice).
    let g = curl(t.path(), &url, &["-H", "Range: bytes=0-9,100-109"]);
    assert_eq!(g.status, 200);
    assert!(g.body == big);
    // If-None-Match with the ETag: 304, no body. If-Range with another tag: the whole file.
    let g = curl(t.path(), &url, &["-H", &format!("If-None-Match: \"{big_id}\"")]);
    assert_eq!((g.status, g.body.len()), (304, 0));
    let g = curl(t.path(), &url, &["-H", "Range: bytes=0-9", "-H", "If-Range: \"other\""]);
    assert_eq!((g.status, g.body.len()), (200, len));

    // Unknown and malformed IDs; methods other than GET/HEAD.
    let g = curl(t.path(), &format!("http://{addr}/files/{}", "ab".repeat(32)), &[]);
    assert_eq!(g.status, 404);
    for bad in ["xyz", "AB", &"AB".repeat(32)] {
        assert_eq!(curl(t.path(), &format!("http://{addr}/files/{bad}"), &[]).status, 400);
    }
    assert_eq!(curl(t.path(), &format!("http://{addr}/files/{cid}"), &[]).status, 400);
    assert_eq!(curl(t.path(), &url, &["-X", "POST"]).status, 405);

    // A collection entry by its path, byte-identical, its non-ASCII name per RFC 8187.
    let g = curl(t.path(), &format!("http://{addr}/c/{cid}/docs/r%C3%A9sum%C3%A9.txt"), &[]);
    assert_eq!((g.status, g.exit), (200, 0));
    assert_eq!(g.body, small);
    assert_eq!(
        g.header("content-disposition"),
        "inline; filename=\"r_sum_.txt\"; filename*=UTF-8''r%C3%A9sum%C3%A9.txt"
    );
    assert_eq!(g.header("content-type"), "text/plain; charset=utf-8");
    let g = curl(t.path(), &format!("http://{addr}/c/{cid}/big.bin"), &["-r", "5-9"]);
    assert_eq!((g.status, &g.body[..]), (206, &big[5..10]));
    // Paths no manifest can list are 400, paths this one does not list 404; nothing from
    // outside the release, whatever the path spells.
    for (path, status) in [
        ("../secret.txt", 400),
        ("docs/../../secret.txt", 400),
        ("%2e%2e/secret.txt", 400),
        ("/etc/passwd", 400),
        ("docs//r%C3%A9sum%C3%A9.txt", 400),
        ("./big.bin", 400),
        ("docs%5c..%5csecret.txt", 400),
        ("secret.txt", 404),
        ("docs", 404),
        ("BIG.BIN", 404),
    ] {
        let g = curl(t.path(), &format!("http://{addr}/c/{cid}/{path}"), &[]);
        assert_eq!(g.status, status, "/c/ID/{path}: {}", String::from_utf8_lossy(&g.body));
        assert!(!g.body.windows(secret.len()).any(|w| w == secret), "/c/ID/{path} leaked");
    }
    for path in [format!("/c/{cid}/../../files/{secret_id}"), "/../../etc/passwd".into()] {
        let answer = raw(addr, "GET", &path);
        let text = String::from_utf8_lossy(&answer);
        assert!(text.starts_with("HTTP/1.1 4"), "{path}: {text}");
        assert!(!text.contains("SECRET-OUTSIDE"), "{path} leaked");
    }
    let g = curl(t.path(), &format!("http://{addr}/c/c-{}/big.bin", "ab".repeat(32)), &[]);
    assert_eq!(g.status, 404);
    assert_eq!(curl(t.path(), &format!("http://{addr}/c/{big_id}/big.bin"), &[]).status, 400);

    // Published while the node runs: served once the node picks the catalog up.
    let late = write_file(&t.path().join("late.iso"), 70_000, 9);
    let late_id = publish_id(&data, &t.path().join("late.iso"), &[]);
    let late_url = format!("http://{addr}/files/{late_id}");
    let deadline = Instant::now() + Duration::from_secs(10);
    let g = loop {
        let g = curl(t.path(), &late_url, &[]);
        if g.status != 404 || Instant::now() > deadline {
            break g;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!((g.status, g.body == late), (200, true));
    assert_eq!(g.header("content-type"), "application/x-iso9660-image");
    assert!(seeder.is_running());
}

#[test]
fn a_file_truncated_under_the_gateway_is_a_clean_error_and_the_node_keeps_serving() {
    let t = tempdir();
    let data = t.path().join("data");
    let path = t.path().join("shrinks.bin");
    let orig = write_file(&path, 12 << 20, 2);
    let other = write_file(&t.path().join("other.bin"), 100_000, 3);
    let id = publish_id(&data, &path, &[]);
    let other_id = publish_id(&data, &t.path().join("other.bin"), &[]);
    let (mut seeder, addr) = seed_with_gateway(&data, "127.0.0.1:0");
    // The API and `status` say where the gateway is.
    let v = json(&run_ok(fm(&data).args(["--json", "status"])));
    assert_eq!(v["node"]["http_gateway"], format!("http://{addr}"), "{v}");
    let human = String::from_utf8(run_ok(fm(&data).arg("status")).stdout).unwrap();
    assert!(human.contains(&format!("HTTP gateway http://{addr}/files/")), "{human}");

    // A client with a small receive buffer that reads nothing at first: the gateway has
    // sent what the socket buffers hold (a few MiB at most) when the file shrinks.
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    sock.connect(&addr.into()).unwrap();
    let mut s: TcpStream = sock.into();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(s, "GET /files/{id} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").unwrap();
    let mut first = [0u8; 1024];
    let n = s.read(&mut first).unwrap();
    assert!(first[..n].starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&first[..n]));
    std::thread::sleep(Duration::from_millis(300));
    fs::OpenOptions::new().write(true).open(&path).unwrap().set_len(1 << 20).unwrap();
    let mut rest = first[..n].to_vec();
    let _ = s.read_to_end(&mut rest); // EOF or a reset: either way the body ends early
    let split = rest.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let body = &rest[split..];
    assert!(body.len() < orig.len(), "the whole file was sent after it shrank");
    assert!(body == &orig[..body.len()], "bytes that are not the published file were sent");

    // Now the file is not as published: 503 with a short body, HEAD too; the node still
    // serves its other files.
    let g = curl(t.path(), &format!("http://{addr}/files/{id}"), &[]);
    assert_eq!(g.status, 503, "{}", String::from_utf8_lossy(&g.body));
    assert!(g.body.len() < 1000);
    assert_eq!(curl(t.path(), &format!("http://{addr}/files/{id}"), &["-I"]).status, 503);
    let g = curl(t.path(), &format!("http://{addr}/files/{other_id}"), &[]);
    assert_eq!((g.status, g.body == other), (200, true));
    assert!(seeder.is_running());
    seeder.stop();
    assert!(furymesh::gateway::read_addr(&data).is_none(), "http.addr outlived the seeder");
}

#[test]
fn the_share_pages_peers_and_relay_endpoints_refuse_unknown_nodes_and_bound_each_client() {
    let t = tempdir();
    let data = t.path().join("seed");
    let file = t.path().join("f.bin");
    write_file(&file, 300_000, 21);
    let id = publish_id(&data, &file, &[]);
    let args = ["--api", "off", "--http", "127.0.0.1:0", "--webrtc", "127.0.0.1:0"];
    let _seeder = Seeder::start_with_args(&data, 1, &args);
    let deadline = Instant::now() + Duration::from_secs(20);
    let http = loop {
        if let Some(a) = furymesh::gateway::read_addr(&data) {
            break a;
        }
        assert!(Instant::now() < deadline, "the gateway wrote no http.addr");
        std::thread::sleep(Duration::from_millis(20));
    };

    // Alone in its DHT: the node names itself and no other provider.
    let got = curl(t.path(), &format!("http://{http}/f/{id}/peers"), &[]);
    assert_eq!(got.status, 200);
    assert_eq!(got.header("content-type"), "application/json");
    let peers: serde_json::Value = serde_json::from_slice(&got.body).unwrap();
    assert_eq!(peers["node"], node_id(&data), "{peers}");
    assert_eq!(peers["peers"], serde_json::json!([]), "{peers}");

    // Offers are relayed only to providers a lookup for this file found: not to any node.
    let offer = ["-X", "POST", "-H", "content-type: application/sdp", "--data-binary", "v=0\r\n"];
    let other = "ab".repeat(20);
    let relay = |file: &str, node: &str| {
        curl(t.path(), &format!("http://{http}/f/{file}/signal/{node}"), &offer)
    };
    let got = relay(&id, &other);
    assert_eq!(got.status, 404, "{}", String::from_utf8_lossy(&got.body));
    assert!(String::from_utf8_lossy(&got.body).contains("/peers"));
    assert_eq!(relay(&id, "not-a-node").status, 400);
    assert_eq!(relay(&id, &node_id(&data)).status, 404, "not to itself either");
    assert_eq!(relay(&"0".repeat(64), &other).status, 404, "an unpublished file");

    // Each lookup is charged to the client's signaling budget: a burst, then 429.
    let mut statuses = Vec::new();
    for _ in 0..40 {
        let s = curl(t.path(), &format!("http://{http}/f/{id}/peers"), &[]).status;
        statuses.push(s);
        if s == 429 {
            break;
        }
    }
    assert_eq!(statuses.last(), Some(&429), "{statuses:?}");
    assert!(statuses.iter().all(|s| *s == 200 || *s == 429), "{statuses:?}");
}
