//! Connection security end to end, through real processes on loopback: a man in the middle
//! flipping single bits or cutting the stream, a replayed handshake, pinned and remembered
//! node IDs, private networks, mismatched encryption settings, and a packet capture that
//! must not show the plaintext.

mod common;

use std::fs;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;

const CHUNK: usize = 64 << 10;

/// What the proxy does to the `n`-th connection it forwards.
#[derive(Clone, Copy, Default)]
struct Tamper {
    /// Flip the highest bit of this byte of the seeder→client stream…
    to_client: Option<u64>,
    /// …or of the client→seeder stream.
    to_seeder: Option<u64>,
    /// Cut the seeder→client stream after this many bytes (then close both ways).
    cut_to_client: Option<u64>,
}

/// Bytes one forwarded connection carried each way.
#[derive(Clone, Default, Debug)]
struct Carried {
    to_client: Vec<u8>,
    to_seeder: Vec<u8>,
}

/// A TCP proxy in front of `upstream` that can flip one bit per connection and records
/// what it forwarded.
struct Proxy {
    addr: SocketAddr,
    log: Arc<Mutex<Vec<Arc<Mutex<Carried>>>>>,
}

impl Proxy {
    fn start(upstream: SocketAddr, tamper: Vec<Tamper>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let log: Arc<Mutex<Vec<Arc<Mutex<Carried>>>>> = Arc::default();
        let log2 = log.clone();
        std::thread::spawn(move || {
            for (n, client) in listener.incoming().enumerate() {
                let Ok(client) = client else { return };
                let Ok(seeder) = TcpStream::connect(upstream) else { return };
                let t = tamper.get(n).copied().unwrap_or_default();
                let carried = Arc::new(Mutex::new(Carried::default()));
                log2.lock().unwrap().push(carried.clone());
                let (c2, s2, k2) =
                    (client.try_clone().unwrap(), seeder.try_clone().unwrap(), carried.clone());
                std::thread::spawn(move || pump(c2, s2, t.to_seeder, None, k2, false));
                std::thread::spawn(move || {
                    pump(seeder, client, t.to_client, t.cut_to_client, carried, true)
                });
            }
        });
        Self { addr, log }
    }

    fn carried(&self) -> Vec<Carried> {
        self.log.lock().unwrap().iter().map(|c| c.lock().unwrap().clone()).collect()
    }
}

fn pump(
    mut from: TcpStream,
    mut to: TcpStream,
    flip: Option<u64>,
    cut: Option<u64>,
    log: Arc<Mutex<Carried>>,
    to_client: bool,
) {
    let mut buf = vec![0u8; 64 << 10];
    let mut at = 0u64;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let n = match cut {
            Some(c) if at + n as u64 >= c => {
                // Deliver up to the cut, then end the stream both ways.
                let _ = to.write_all(&buf[..(c - at) as usize]);
                let _ = from.shutdown(Shutdown::Both);
                break;
            }
            _ => n,
        };
        if let Some(f) = flip {
            if (at..at + n as u64).contains(&f) {
                buf[(f - at) as usize] ^= 0x80;
            }
        }
        at += n as u64;
        {
            let mut l = log.lock().unwrap();
            let side = if to_client { &mut l.to_client } else { &mut l.to_seeder };
            // Keep the first 4 MiB: whole streams of the test files, bounded all the same.
            let room = (4usize << 20).saturating_sub(side.len());
            side.extend_from_slice(&buf[..n.min(room)]);
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Write);
    let _ = from.shutdown(Shutdown::Read);
}

/// Every chunk of the partial download is either untouched (zeros) or the original's: a
/// tampered record never reaches the disk.
fn assert_nothing_bad_written(out: &Path, original: &[u8]) {
    assert!(!out.exists(), "the final name must not appear");
    let mut partial = out.as_os_str().to_owned();
    partial.push(".furymesh-partial");
    let Ok(disk) = fs::read(&partial) else { return };
    for (i, (d, o)) in disk.chunks(CHUNK).zip(original.chunks(CHUNK)).enumerate() {
        assert!(
            d == o || d.iter().all(|&b| b == 0),
            "chunk {i} on disk is neither empty nor right"
        );
    }
}

struct Setup {
    _t: tempfile::TempDir,
    dir: std::path::PathBuf,
    data: std::path::PathBuf,
    client: std::path::PathBuf,
    id: String,
    original: Vec<u8>,
}

fn setup(size: usize) -> Setup {
    let t = tempdir();
    let dir = t.path().to_owned();
    let data = dir.join("seeder");
    let client = dir.join("client");
    let f = dir.join("file.bin");
    let original = write_file(&f, size, 42);
    let id = publish_id(&data, &f, &["--chunk-size", "64KiB"]);
    Setup { _t: t, dir, data, client, id, original }
}

fn get_via(s: &Setup, peer: &str, out: &Path, extra: &[&str]) -> std::process::Output {
    get_cmd(&s.client, &s.id, peer, out)
        .args(["--connections", "1", "--window", "4"])
        .args(extra)
        .output()
        .unwrap()
}

/// How a download through a tampering proxy must end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// With a clear error and nothing bad written.
    Refused,
    /// Byte-identical, over a new connection.
    Recovered,
}

#[test]
fn a_flipped_bit_or_a_cut_anywhere_closes_the_connection_and_nothing_bad_is_written() {
    let s = setup(1 << 20);
    let seeder = Seeder::start(&s.data, 1);
    // A clean run through the proxy first: how many bytes each connection carries.
    let clean = Proxy::start(seeder.addr, vec![]);
    let out = s.dir.join("clean.bin");
    let r = get_via(&s, &clean.addr.to_string(), &out, &[]);
    assert!(r.status.success(), "{}", stderr_of(&r));
    let carried = clean.carried();
    // Connection 0 fetches the manifest, connection 1 the chunks.
    assert_eq!(carried.len(), 2, "{} connections", carried.len());
    let (m, d) = (&carried[0], &carried[1]);
    assert!(d.to_client.len() > 1 << 20, "the data connection was recorded whole");
    // The ServerHello is the first handshake message the seeder sends.
    let sh = 2 + u16::from_le_bytes([m.to_client[0], m.to_client[1]]) as u64;
    // What the client sees decides the outcome. A record it cannot open, a handshake that
    // does not verify or a length it refuses ends the download (`Refused`). A connection
    // the seeder closed (it refused a tampered request) or that was cut looks like a
    // dropped connection: the client connects again, the proxy leaves that connection
    // alone, and the download completes byte-identical (`Recovered`). The manifest's
    // connection is not retried.
    use Outcome::{Recovered, Refused};
    let cases = [
        // In the ServerHello: its ephemeral key, certificate, signature, finished MAC.
        (0, Tamper { to_client: Some(5), ..Tamper::default() }, Refused),
        (0, Tamper { to_client: Some(400), ..Tamper::default() }, Refused),
        (0, Tamper { to_client: Some(sh - 40), ..Tamper::default() }, Refused),
        (0, Tamper { to_client: Some(sh - 1), ..Tamper::default() }, Refused),
        // In the ClientHello and the ClientFinish.
        (0, Tamper { to_seeder: Some(10), ..Tamper::default() }, Refused),
        (0, Tamper { to_seeder: Some(m.to_seeder.len() as u64 - 1), ..Tamper::default() }, Refused),
        // The manifest record: its body, its tag.
        (0, Tamper { to_client: Some(sh + 50), ..Tamper::default() }, Refused),
        (0, Tamper { to_client: Some(m.to_client.len() as u64 - 1), ..Tamper::default() }, Refused),
        // A chunk request: the seeder refuses the record and closes.
        (
            1,
            Tamper { to_seeder: Some(d.to_seeder.len() as u64 - 20), ..Tamper::default() },
            Recovered,
        ),
        // A chunk header, the middle of a chunk's payload, the last payload tag.
        (1, Tamper { to_client: Some(sh + 30), ..Tamper::default() }, Refused),
        (1, Tamper { to_client: Some(sh + 300 + 5 * CHUNK as u64), ..Tamper::default() }, Refused),
        (1, Tamper { to_client: Some((1 << 20) + 2 * sh), ..Tamper::default() }, Refused),
        // A length prefix's high bit: refused as oversized, not waited for.
        (1, Tamper { to_client: Some(sh + 3), ..Tamper::default() }, Refused),
        // Truncated: the stream ends inside the ServerHello, inside a chunk's payload, and
        // inside the last tag.
        (0, Tamper { cut_to_client: Some(sh - 10), ..Tamper::default() }, Refused),
        (
            1,
            Tamper { cut_to_client: Some(sh + 300 + 5 * CHUNK as u64), ..Tamper::default() },
            Recovered,
        ),
        (
            1,
            Tamper { cut_to_client: Some(d.to_client.len() as u64 - 3), ..Tamper::default() },
            Recovered,
        ),
    ];
    for (n, (conn, tamper, outcome)) in cases.into_iter().enumerate() {
        let mut plan = vec![Tamper::default(); 2];
        plan[conn] = tamper;
        let proxy = Proxy::start(seeder.addr, plan);
        let out = s.dir.join(format!("tampered-{n}.bin"));
        let r = get_via(&s, &proxy.addr.to_string(), &out, &[]);
        let err = stderr_of(&r);
        if outcome == Recovered {
            assert!(r.status.success(), "case {n}: not recovered: {err}");
            assert!(fs::read(&out).unwrap() == s.original, "case {n}: wrong bytes");
            assert!(proxy.carried().len() > 2, "case {n}: recovered without a new connection");
            continue;
        }
        assert!(!r.status.success(), "case {n} succeeded despite a flipped bit");
        assert!(
            // (A cut may reach the client as a reset rather than a clean close.)
            [
                "handshake",
                "failed authentication",
                "closed",
                "broke the protocol",
                "exceeds",
                "reset"
            ]
            .iter()
            .any(|w| err.contains(w)),
            "case {n}: unclear error: {err}"
        );
        eprintln!("case {n}: {}", err.trim());
        assert_nothing_bad_written(&out, &s.original);
    }
    let stats = seeder.stop();
    assert!(stats["handshakes_failed"].as_u64().unwrap() >= 2, "{stats}");
    assert!(stats["records_rejected"].as_u64().unwrap() >= 1, "{stats}");
}

#[test]
fn a_recorded_handshake_replayed_gets_nothing() {
    let s = setup(256 << 10);
    let seeder = Seeder::start(&s.data, 1);
    let proxy = Proxy::start(seeder.addr, vec![]);
    let r = get_via(&s, &proxy.addr.to_string(), &s.dir.join("o.bin"), &[]);
    assert!(r.status.success(), "{}", stderr_of(&r));
    let recorded = proxy.carried()[1].to_seeder.clone();
    // Replay everything the client sent on its data connection: ClientHello, ClientFinish
    // and the sealed chunk requests.
    let mut c = TcpStream::connect(seeder.addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    c.write_all(&recorded).unwrap();
    let mut got = Vec::new();
    let _ = c.read_to_end(&mut got);
    // A fresh ServerHello (new ephemeral key and nonce), then the close: the recorded
    // ClientFinish does not verify against it, so no request is read.
    let sh = 2 + u16::from_le_bytes([got[0], got[1]]) as usize;
    assert_eq!(got.len(), sh, "the seeder sent more than its ServerHello");
    let stats = seeder.stop();
    assert_eq!(stats["handshakes_failed"], 1, "{stats}");
    assert_eq!(stats["chunks_served"], 4, "only the real download's chunks: {stats}");
}

#[test]
fn a_pinned_node_id_must_match_the_peers_key() {
    let s = setup(200_000);
    let seeder = Seeder::start(&s.data, 1);
    let seeder_id = node_id(&s.data);
    let other = s.dir.join("other");
    let other_id = node_id(&other);
    assert_ne!(seeder_id, other_id);
    // Pinned to another node: refused, nothing written.
    let out = s.dir.join("wrong.bin");
    let r = get_via(&s, &format!("{other_id}@{}", seeder.addr), &out, &[]);
    assert!(!r.status.success());
    assert!(stderr_of(&r).contains("not the node ID this connection pinned"), "{}", stderr_of(&r));
    assert!(!out.exists() && !s.dir.join("wrong.bin.furymesh-partial").exists());
    // A proxy cannot pass itself off as the seeder either: the client sees the seeder's
    // real key through it, so a pin on the right ID works through a (faithful) proxy…
    let proxy = Proxy::start(seeder.addr, vec![]);
    let out = s.dir.join("right.bin");
    let r = get_via(&s, &format!("{seeder_id}@{}", proxy.addr), &out, &[]);
    assert!(r.status.success(), "{}", stderr_of(&r));
    assert!(fs::read(&out).unwrap() == s.original);
    let report = json(&r);
    assert_eq!(report["peers"][0]["node_id"], seeder_id.as_str());
    // …and a different node behind that address is refused even if it serves the file.
    let impostor = Seeder::start(&s.dir.join("impostor"), 1);
    let r = get_via(&s, &format!("{seeder_id}@{}", impostor.addr), &s.dir.join("x.bin"), &[]);
    assert!(!r.status.success());
    assert!(stderr_of(&r).contains("pinned"), "{}", stderr_of(&r));
    drop(impostor);
    // A malformed pin is a usage error.
    let r = get_via(&s, &format!("xyz@{}", seeder.addr), &s.dir.join("y.bin"), &[]);
    assert!(!r.status.success());
    assert!(stderr_of(&r).contains("is not a node ID"), "{}", stderr_of(&r));
    seeder.stop();
}

#[test]
fn private_networks_and_encryption_settings_must_match() {
    let s = setup(300_000);
    let secret = s.dir.join("net.secret");
    let wrong = s.dir.join("wrong.secret");
    fs::write(&secret, "0123456789abcdef0123456789abcdef\n").unwrap();
    fs::write(&wrong, "fedcba9876543210fedcba9876543210\n").unwrap();
    let secret_str = secret.display().to_string();
    let seeder = Seeder::start_with_args(&s.data, 1, &["--network-secret", &secret_str]);
    // The same secret without the final newline is the same secret.
    let same = s.dir.join("same.secret");
    fs::write(&same, "0123456789abcdef0123456789abcdef").unwrap();
    let peer = seeder.peer();
    let secret_arg = |p: &Path| vec!["--network-secret".to_owned(), p.display().to_string()];
    let try_get = |name: &str, pre: Vec<String>, post: &[&str]| {
        let out = s.dir.join(name);
        let r = fm(&s.client)
            .args(pre)
            .args(["--json", "get", &s.id, "--peer", &peer, "-o"])
            .arg(&out)
            .args(post)
            .output()
            .unwrap();
        (r, out)
    };
    for (name, pre) in [("none.bin", vec![]), ("wrong.bin", secret_arg(&wrong))] {
        let (r, out) = try_get(name, pre, &[]);
        assert!(!r.status.success(), "{name}");
        assert!(stderr_of(&r).contains("wrong network secret"), "{name}: {}", stderr_of(&r));
        assert!(!out.exists());
    }
    let (r, out) = try_get("enc.bin", secret_arg(&secret), &["--encryption", "off"]);
    assert!(!r.status.success());
    assert!(stderr_of(&r).contains("encryption settings differ"), "{}", stderr_of(&r));
    assert!(!out.exists());
    let (r, out) = try_get("right.bin", secret_arg(&same), &[]);
    assert!(r.status.success(), "{}", stderr_of(&r));
    assert!(fs::read(&out).unwrap() == s.original);
    // A secret file too short to be a key is refused before anything starts.
    let short = s.dir.join("short.secret");
    fs::write(&short, "tiny").unwrap();
    let (r, _) = try_get("short.bin", secret_arg(&short), &[]);
    assert!(!r.status.success());
    assert!(stderr_of(&r).contains("short.secret"), "{}", stderr_of(&r));
    let stats = seeder.stop();
    assert!(stats["handshakes_failed"].as_u64().unwrap() >= 3, "{stats}");
}

/// Captures loopback traffic on `port` while `f` runs and returns the raw capture.
fn capture(dir: &Path, port: u16, f: impl FnOnce()) -> Vec<u8> {
    let pcap = dir.join(format!("cap-{port}.pcap"));
    let mut tcpdump = Command::new("tcpdump")
        // A 64 MiB capture buffer: loopback moves the file faster than tcpdump writes.
        .args(["-i", "lo", "-U", "-s", "0", "-B", "65536", "-w"])
        .arg(&pcap)
        .args(["tcp", "port", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("tcpdump is needed for this test (apt install tcpdump)");
    // tcpdump says "listening on lo" once the capture is live.
    let mut err = tcpdump.stderr.take().unwrap();
    let mut seen = Vec::new();
    let mut b = [0u8; 256];
    while !String::from_utf8_lossy(&seen).contains("listening on") {
        let n = err.read(&mut b).unwrap();
        assert!(n > 0, "tcpdump failed: {}", String::from_utf8_lossy(&seen));
        seen.extend_from_slice(&b[..n]);
    }
    f();
    // Let the last packets reach the capture, then stop it cleanly.
    std::thread::sleep(Duration::from_millis(300));
    signal(tcpdump.id(), "INT");
    tcpdump.wait().unwrap();
    fs::read(&pcap).unwrap()
}

fn count(haystack: &[u8], needle: &[u8]) -> usize {
    haystack.windows(needle.len()).filter(|w| *w == needle).count()
}

#[test]
fn a_packet_capture_shows_no_plaintext_with_encryption_on() {
    const MARKER: &[u8] = b"<<FURYMESH-PLAINTEXT-MARKER-7f3a>>";
    let t = tempdir();
    let data = t.path().join("seeder");
    let f = t.path().join("marked.bin");
    let content: Vec<u8> = MARKER.iter().copied().cycle().take(4 << 20).collect();
    fs::write(&f, &content).unwrap();
    let id = publish_id(&data, &f, &[]);
    for (mode, expect_marker) in [("on", false), ("off", true)] {
        let seeder = Seeder::start_with_args(&data, 1, &["--encryption", mode]);
        let out = t.path().join(format!("out-{mode}.bin"));
        let pcap = capture(t.path(), seeder.addr.port(), || {
            let r = get_cmd(&t.path().join("client"), &id, &seeder.peer(), &out)
                .args(["--encryption", mode])
                .output()
                .unwrap();
            assert!(r.status.success(), "{}", stderr_of(&r));
        });
        assert!(fs::read(&out).unwrap() == content);
        let seen = count(&pcap, MARKER);
        // The capture holds most of the transfer (the kernel may drop some packets when
        // tcpdump falls behind; what it holds is what is checked).
        assert!(pcap.len() > 2 << 20, "the capture missed the transfer ({} bytes)", pcap.len());
        if expect_marker {
            // The control: the same capture with plaintext records does show the marker,
            // so the capture works and the check above means something.
            assert!(seen > 1000, "plaintext run: marker seen {seen} times");
        } else {
            assert_eq!(seen, 0, "encrypted run: the marker is on the wire");
        }
        seeder.stop();
    }
}

#[test]
fn a_known_peer_that_changes_identity_is_refused_until_the_user_says_so() {
    let s = setup(200_000);
    let seeder = Seeder::start(&s.data, 1);
    let addr = seeder.peer();
    let seeder_id = node_id(&s.data);
    // First use of a plain HOST:PORT: trusted, and remembered.
    let r = get_via(&s, &addr, &s.dir.join("first.bin"), &[]);
    assert!(r.status.success(), "{}", stderr_of(&r));
    let known = fs::read_to_string(s.client.join("known-peers")).unwrap();
    assert!(known.contains(&format!("{addr} {seeder_id}")), "{known}");
    seeder.stop();
    // Another node now answers on that address (same file, different identity).
    let other = s.dir.join("other");
    publish(&other, &[&s.dir.join("file.bin")], &["--chunk-size", "64KiB"]);
    let impostor = Seeder::start_with(&other, 1, &addr, &[]);
    let out = s.dir.join("second.bin");
    let r = get_via(&s, &addr, &out, &[]);
    assert!(!r.status.success());
    assert!(stderr_of(&r).contains("known-peers"), "{}", stderr_of(&r));
    assert!(!out.exists());
    // Pinning the new ID explicitly is the user saying so.
    let other_id = node_id(&other);
    let r = get_via(&s, &format!("{other_id}@{addr}"), &out, &[]);
    assert!(r.status.success(), "{}", stderr_of(&r));
    // …and is remembered: the plain address now means the new node.
    let known = fs::read_to_string(s.client.join("known-peers")).unwrap();
    assert!(known.contains(&format!("{addr} {other_id}")), "{known}");
    let r = get_via(&s, &addr, &s.dir.join("third.bin"), &[]);
    assert!(r.status.success(), "{}", stderr_of(&r));
    impostor.stop();
}

#[test]
fn a_get_keeps_its_session_key_and_replaces_one_that_is_damaged_or_not_its_own() {
    use std::os::unix::fs::PermissionsExt;
    let s = setup(200_000);
    let seeder = Seeder::start(&s.data, 1);
    let addr = seeder.peer();
    let kept = s.client.join("session.key");
    let get_ok = |name: &str| {
        let r = get_via(&s, &addr, &s.dir.join(name), &[]);
        assert!(r.status.success(), "{}", stderr_of(&r));
    };
    get_ok("1.bin");
    let first = fs::read(&kept).unwrap();
    assert_eq!(fs::metadata(&kept).unwrap().permissions().mode() & 0o777, 0o600);
    // The next command reuses it (no new RSA signature) and the seeder accepts it.
    get_ok("2.bin");
    assert_eq!(fs::read(&kept).unwrap(), first);
    // Damaged: replaced by a new one, and the download works.
    let mut damaged = first.clone();
    let mid = damaged.len() / 2;
    damaged[mid] ^= 0x10;
    fs::write(&kept, &damaged).unwrap();
    get_ok("3.bin");
    let third = fs::read(&kept).unwrap();
    assert!(third != damaged && third != first);
    // Another node's (the seeder keeps its own too): never used as ours.
    let theirs = fs::read(s.data.join("session.key")).unwrap();
    fs::write(&kept, &theirs).unwrap();
    get_ok("4.bin");
    let fourth = fs::read(&kept).unwrap();
    assert!(fourth != theirs && fourth != third);
    seeder.stop();
}
