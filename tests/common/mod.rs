//! Helpers for tests that drive the real `furymesh` binary over loopback.
#![allow(dead_code, unreachable_pub)]
// Test identities, session keys and handshake randomness come from the OS RNG and the wall
// clock, as in a node (clippy.toml confines those calls to node::clock inside the crate).
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

pub const BIN: &str = env!("CARGO_BIN_EXE_furymesh");

/// Fixture identities (tests/fixtures/identities/nodeNN.pk8.der) handed out in turn.
pub const FIXTURE_IDENTITIES: usize = 16;

/// Path of fixture identity `n` (mod the number of fixtures).
pub fn fixture_identity(n: usize) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/identities")
        .join(format!("node{:02}.pk8.der", n % FIXTURE_IDENTITIES))
}

/// Gives `data_dir` a node identity unless it has one: the next fixture key, so tests
/// never wait for RSA-4096 generation and each data dir of a test process is its own node
/// (for up to `FIXTURE_IDENTITIES` data dirs).
pub fn ensure_identity(data_dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    use std::sync::atomic::{AtomicUsize, Ordering};
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let path = data_dir.join("identity.pk8.der");
    if path.exists() {
        return;
    }
    fs::create_dir_all(data_dir).unwrap();
    let key = fs::read(fixture_identity(NEXT.fetch_add(1, Ordering::Relaxed))).unwrap();
    fs::write(&path, key).unwrap();
    // git does not keep modes; the node refuses a key others can read.
    fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
}

/// A `furymesh` command with its own data directory (given a fixture identity).
pub fn fm(data_dir: &Path) -> Command {
    ensure_identity(data_dir);
    let mut c = Command::new(BIN);
    c.arg("--data-dir").arg(data_dir);
    c.env_remove("FURYMESH_HOME");
    c
}

pub fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("spawn furymesh");
    assert!(
        out.status.success(),
        "command failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

pub fn json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!("stdout is not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout))
    })
}

/// One step of a xorshift generator: the tests' only source of pseudo-randomness, so every
/// run is reproducible from its seed.
pub fn xorshift(x: &mut u64) -> u64 {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    *x
}

/// Deterministic pseudo-random bytes, different per seed.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        v.extend_from_slice(&xorshift(&mut x).to_le_bytes());
    }
    v.truncate(len);
    v
}

pub fn write_file(path: &Path, len: usize, seed: u64) -> Vec<u8> {
    let data = pattern(len, seed);
    if let Some(d) = path.parent() {
        fs::create_dir_all(d).unwrap();
    }
    fs::write(path, &data).unwrap();
    data
}

/// Publishes `paths` and returns the JSON array's files (the rows with a `file_id`; a
/// directory also adds a row with its `collection_id`, see [`publish_rows`]).
pub fn publish(data_dir: &Path, paths: &[&Path], extra: &[&str]) -> Vec<serde_json::Value> {
    publish_rows(data_dir, paths, extra)
        .into_iter()
        .filter(|r| r.get("file_id").is_some())
        .collect()
}

/// Publishes `paths` and returns every row of the JSON array (files, then collections).
pub fn publish_rows(data_dir: &Path, paths: &[&Path], extra: &[&str]) -> Vec<serde_json::Value> {
    let out = run_ok(fm(data_dir).arg("--json").arg("publish").args(extra).args(paths));
    json(&out).as_array().expect("array").clone()
}

/// Publishes one file and returns its file ID.
pub fn publish_id(data_dir: &Path, file: &Path, extra: &[&str]) -> String {
    publish(data_dir, &[file], extra)[0]["file_id"].as_str().expect("file_id").to_owned()
}

/// A running `furymesh seed` process on 127.0.0.1 with an OS-chosen port.
pub struct Seeder {
    child: Option<Child>,
    pub addr: SocketAddr,
    /// Its WebRTC (UDP) address, when started with `--webrtc`.
    pub webrtc: Option<SocketAddr>,
}

impl Seeder {
    pub fn start(data_dir: &Path, shards: usize) -> Self {
        Self::start_with(data_dir, shards, "127.0.0.1:0", &[])
    }

    /// A seeder on `listen` that joins the DHT through `bootstrap`.
    pub fn start_with(data_dir: &Path, shards: usize, listen: &str, bootstrap: &[String]) -> Self {
        let mut extra = Vec::new();
        for b in bootstrap {
            extra.extend(["--bootstrap", b.as_str()]);
        }
        Self::spawn(data_dir, shards, listen, &extra)
    }

    /// A seeder on an OS-chosen port with extra `seed` flags.
    pub fn start_with_args(data_dir: &Path, shards: usize, args: &[&str]) -> Self {
        Self::spawn(data_dir, shards, "127.0.0.1:0", args)
    }

    /// A seeder on `listen` (e.g. the address of one that was killed) with extra flags.
    pub fn start_at(data_dir: &Path, shards: usize, listen: &str, args: &[&str]) -> Self {
        Self::spawn(data_dir, shards, listen, args)
    }

    fn spawn(data_dir: &Path, shards: usize, listen: &str, args: &[&str]) -> Self {
        let mut cmd = fm(data_dir);
        cmd.args(["--json", "seed", "--listen", listen, "--shards"]).arg(shards.to_string());
        cmd.args(args);
        let mut child =
            cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn seeder");
        let stderr = child.stderr.take().unwrap();
        // With --webrtc it is ready once it also printed its UDP address.
        let wants_webrtc = args.contains(&"--webrtc");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let (mut tcp, mut seen) = (None, String::new());
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let word_after = |key: &str| {
                    line.split(key)
                        .nth(1)
                        .and_then(|r| r.split_whitespace().next())
                        .map(str::to_owned)
                };
                if let Some(a) = word_after("listening on ") {
                    if !wants_webrtc {
                        let _ = tx.send(Ok((a.clone(), None)));
                    }
                    tcp = Some(a);
                } else if let Some(udp) = word_after("webrtc on udp ") {
                    let _ = tx.send(Ok((tcp.clone().unwrap_or_default(), Some(udp))));
                } else {
                    seen.push_str(&line);
                    seen.push('\n');
                }
            }
            let _ = tx.send(Err(seen));
        });
        let (addr, webrtc) = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(Ok(addrs)) => addrs,
            Ok(Err(stderr)) => panic!("seeder did not start: {stderr}"),
            Err(e) => panic!("seeder did not start: {e}"),
        };
        Self {
            child: Some(child),
            addr: addr.parse().unwrap(),
            webrtc: webrtc.map(|a| a.parse().unwrap()),
        }
    }

    pub fn peer(&self) -> String {
        self.addr.to_string()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// SIGKILL, no goodbye.
    pub fn kill9(mut self) {
        let mut c = self.child.take().unwrap();
        c.kill().unwrap();
        c.wait().unwrap();
    }

    pub fn is_running(&mut self) -> bool {
        self.child.as_mut().unwrap().try_wait().unwrap().is_none()
    }

    /// SIGTERM, wait, and return the stats JSON it prints.
    pub fn stop(mut self) -> serde_json::Value {
        let child = self.child.take().unwrap();
        signal(child.id(), "TERM");
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "seeder exited with {}", out.status);
        serde_json::from_slice(&out.stdout).expect("seeder stats JSON")
    }
}

impl Drop for Seeder {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill").arg(format!("-{sig}")).arg(pid.to_string()).status().unwrap();
    assert!(ok.success());
}

/// `furymesh get` command for `id` from `peer` into `out`.
pub fn get_cmd(data_dir: &Path, id: &str, peer: &str, out: &Path) -> Command {
    let mut c = fm(data_dir);
    c.args(["--json", "get", id, "--peer", peer, "-o"]).arg(out);
    c
}

/// The node ID of the identity in `data_dir` (`furymesh id`).
pub fn node_id(data_dir: &Path) -> String {
    let out = run_ok(fm(data_dir).args(["--json", "id"]));
    json(&out)["node_id"].as_str().expect("node_id").to_owned()
}

/// Payload bytes a seeder sent, plaintext (from its maps) or sealed.
pub fn served_bytes(stats: &serde_json::Value) -> u64 {
    stats["payload_bytes_from_map"].as_u64().unwrap()
        + stats["payload_bytes_sealed"].as_u64().unwrap()
}

pub fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new().prefix("furymesh-test").tempdir().unwrap()
}

pub fn stderr_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

pub fn paths_in(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<_> = fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    v.sort();
    v
}

pub fn append(path: &Path, bytes: &[u8]) {
    fs::OpenOptions::new().append(true).open(path).unwrap().write_all(bytes).unwrap();
}

/// Chunks the resume state at `path` marks verified (0 if it does not exist yet).
pub fn verified_in(path: &Path) -> u64 {
    fs::read(path)
        .ok()
        .and_then(|b| furymesh::wire::decode_resume(&b).ok())
        .map(|(_, bits)| bits.iter().map(|b| b.count_ones() as u64).sum())
        .unwrap_or(0)
}

/// `len` junk bytes for hostile-input tests, continuing the stream in `state`.
pub fn junk(len: usize, state: &mut u64) -> Vec<u8> {
    (0..len).map(|_| xorshift(state) as u8).collect()
}

/// Sends one handshake message in the wire's handshake framing (`wire::frame`).
pub fn send_hs(s: &mut impl Write, msg: &[u8]) {
    let mut out = Vec::new();
    furymesh::wire::frame::push_handshake(&mut out, msg);
    s.write_all(&out).unwrap();
}

/// Reads one handshake message (a refusal included), or `None` if the peer closed the
/// connection or announced an oversized message.
pub fn recv_hs(s: &mut impl std::io::Read) -> Option<Vec<u8>> {
    use furymesh::wire::frame::{handshake_len, HANDSHAKE_PREFIX_BYTES};
    let mut prefix = [0u8; HANDSHAKE_PREFIX_BYTES];
    s.read_exact(&mut prefix).ok()?;
    let mut msg = vec![0u8; handshake_len(prefix).ok()?];
    s.read_exact(&mut msg).ok()?;
    Some(msg)
}

pub fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

/// A session key for fixture identity `n`, as a node certifies one at start-up.
pub fn fixture_session(n: usize) -> std::sync::Arc<furymesh::crypto::SessionIdentity> {
    use furymesh::crypto::{rand_core::OsRng, Identity};
    let id = Identity::from_pkcs8_der(&fs::read(fixture_identity(n)).unwrap()).unwrap();
    std::sync::Arc::new(id.issue_session(&mut OsRng, rand::random(), unix_now() + 3600).unwrap())
}

/// Runs the initiator's handshake on a blocking stream as fixture identity `n` (a test
/// client that then speaks raw frames). Returns the session or the handshake's error.
pub fn client_handshake(
    s: &mut std::net::TcpStream,
    n: usize,
    encryption: furymesh::crypto::Encryption,
    network: Option<furymesh::crypto::NetworkSecret>,
) -> Result<furymesh::crypto::Session, String> {
    use furymesh::crypto::{HandshakeConfig, HandshakeRandom, Initiator};
    use furymesh::wire::frame::HandshakeFrame;
    let config = HandshakeConfig {
        local: fixture_session(n),
        network,
        encryption,
        expected_peer: None,
        channel_binding: None,
    };
    let random = HandshakeRandom { ephemeral: rand::random(), nonce: rand::random() };
    let (state, hello) = Initiator::start(config, random, unix_now()).map_err(|e| e.to_string())?;
    send_hs(s, &hello);
    let reply = recv_hs(s).ok_or("closed before the ServerHello")?;
    if let HandshakeFrame::Refusal(code) = HandshakeFrame::parse(&reply) {
        return Err(format!("refused: {}", code.text()));
    }
    let (finish, session) =
        state.handle_server_hello(&reply, unix_now()).map_err(|e| e.to_string())?;
    send_hs(s, &finish);
    Ok(session)
}

/// A long-variant parameter of the fault-suite tests: environment variable `name` as a
/// size or count (`512MiB`, `1000`), else `default`. A value that does not parse panics,
/// naming it.
pub fn env_or(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => furymesh::config::parse_bytes(&v).unwrap_or_else(|e| panic!("{name}={v}: {e}")),
        Err(_) => default,
    }
}

/// A fault-suite run's random seed: environment variable `name` to replay a run, else one
/// from the process ID (printed by the test, so a failure can be replayed).
pub fn env_seed(name: &str) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| std::process::id() as u64 * 0x9e37_79b9 + 1)
}

/// The node security of `dir`'s fixture identity, encryption on (in-process nodes).
pub fn node_security(dir: &Path) -> std::sync::Arc<furymesh::node::NodeSecurity> {
    ensure_identity(dir);
    let key = furymesh::node::load_identity(dir).unwrap();
    furymesh::node::NodeSecurity::new(key, None, furymesh::crypto::Encryption::On).unwrap()
}

/// An in-process node that only downloads (no listener), on `shards` shards.
pub fn downloading_node(dir: &Path, shards: usize) -> furymesh::node::Node {
    let opts = furymesh::node::NodeOptions::new(None, shards, node_security(dir));
    furymesh::node::Node::start(Vec::new(), &opts).unwrap()
}

/// Options for an in-process download of `id` from `peer` into `out` over TCP: two
/// connections, a window of 8, rarest first; callers change what their test is about
/// with struct update syntax.
pub fn get_options(
    h: &furymesh::node::Handle,
    id: furymesh::crypto::FileId,
    peer: furymesh::node::PeerAddr,
    out: PathBuf,
) -> furymesh::node::GetOptions {
    furymesh::node::GetOptions {
        kind: furymesh::crypto::IdKind::File,
        file_id: id,
        peers: vec![peer],
        security: h.security().clone(),
        output: out,
        force: false,
        connections: 2,
        window: 8,
        strategy: furymesh::transfer::Strategy::RarestFirst,
        max_peers: 4,
        serve_partial: false,
        save_every_bytes: 1 << 20,
        download_rate_bytes: None,
        transport: furymesh::node::TransportChoice::Tcp,
        web_seeds: Vec::new(),
    }
}
