//! WebRTC through real NATs, in network namespaces the test makes and always removes: a
//! "public" namespace with a STUN/TURN server (Debian coturn's `turnserver`, started with
//! a configuration the test writes) and a DHT bootstrap node; two private namespaces, each
//! behind its own NAT namespace (nftables masquerade), a seeder behind one and a
//! downloader behind the other. The two private networks overlap nowhere and have no route
//! to each other: only the NATs' outside addresses are reachable from the public side.
//!
//! - endpoint-independent NAT (Linux masquerade keeps the source port): the download goes
//!   peer to peer over server-reflexive candidates, byte-identical;
//! - both NATs symmetric (masquerade `random,fully-random`: a new random port toward every
//!   destination, so neither side's server-reflexive candidate reaches it): the download
//!   goes through coturn's relay (TURN, RFC 8656, long-term credentials), byte-identical;
//! - no TCP path at all between the two (the public router resets every forwarded TCP
//!   connection): `get --transport auto` finds the seeder through the DHT and completes
//!   over WebRTC.
//!
//! Needs root (network namespaces, nftables); skipped with a message otherwise.
//! `scripts/test` installs coturn and nftables when they are missing.

mod common;
#[path = "common/netns.rs"]
mod netns;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::mpsc;
use std::time::Duration;

use common::*;
use netns::{is_root, must, spawn_in};

/// Public side: the router between the NATs, the STUN server and the bootstrap node.
const PUB_A: &str = "100.64.1.1";
const NAT_A_WAN: &str = "100.64.1.2";
const PUB_B: &str = "100.64.2.1";
const NAT_B_WAN: &str = "100.64.2.2";
/// The seeder's private network behind NAT A, the downloader's behind NAT B.
/// A stand-in for the rest of the Internet beyond the public router (a dummy link).
const INTERNET_GW_SELF: &str = "198.18.0.1";
const INTERNET_GW: &str = "198.18.0.2";
const LAN_A_GW: &str = "10.61.0.1";
const SEEDER_IP: &str = "10.61.0.2";
const LAN_B_GW: &str = "10.62.0.1";
const DOWNLOADER_IP: &str = "10.62.0.2";
const STUN_PORT: u16 = 3478;
/// The TURN user the test's coturn knows (long-term credentials, RFC 8489 §9.2).
const TURN_USER: &str = "fm-nat";
const TURN_PASSWORD: &str = "relay-me-9f3b";

/// The namespaces of one test run (names carry the process ID and the case, so parallel
/// runs and tests never meet), deleted on drop with their interfaces.
struct Net {
    public: String,
    nat_a: String,
    nat_b: String,
    seeder: String,
    downloader: String,
    /// Processes started inside them, killed before the namespaces go.
    children: Vec<Child>,
}

impl Net {
    fn new(case: &str) -> Self {
        let tag = format!("{}{case}", std::process::id());
        let name = |role: &str| format!("fmnat-{role}-{tag}");
        let net = Self {
            public: name("pub"),
            nat_a: name("nata"),
            nat_b: name("natb"),
            seeder: name("s"),
            downloader: name("d"),
            children: Vec::new(),
        };
        for ns in net.all() {
            must(&["ip", "netns", "add", ns]);
            net.ip(ns, &["link", "set", "lo", "up"]);
        }
        // Each link is made with both ends already in their namespaces (no name clashes
        // in the root namespace).
        net.link(&net.public, "pa", &net.nat_a, "wan");
        net.link(&net.public, "pb", &net.nat_b, "wan");
        net.link(&net.nat_a, "lan", &net.seeder, "eth0");
        net.link(&net.nat_b, "lan", &net.downloader, "eth0");
        net.addr(&net.public, "pa", PUB_A);
        net.addr(&net.public, "pb", PUB_B);
        net.addr(&net.nat_a, "wan", NAT_A_WAN);
        net.addr(&net.nat_b, "wan", NAT_B_WAN);
        net.addr(&net.nat_a, "lan", LAN_A_GW);
        net.addr(&net.nat_b, "lan", LAN_B_GW);
        net.addr(&net.seeder, "eth0", SEEDER_IP);
        net.addr(&net.downloader, "eth0", DOWNLOADER_IP);
        // The public side's own way out, where the Internet would be: datagrams to
        // addresses nobody here routes (a peer's private host candidate) leave into it and
        // are lost, as on the Internet, rather than failing at once with "network
        // unreachable" on the TURN server's relay socket.
        // (A veth pair whose far end takes nothing: frames to the gateway's made-up MAC
        // address are dropped there.)
        net.link(&net.public, "inet0", &net.public, "inet1");
        net.addr(&net.public, "inet0", INTERNET_GW_SELF);
        net.ip(
            &net.public,
            &[
                "neigh",
                "add",
                INTERNET_GW,
                "lladdr",
                "02:00:00:00:00:02",
                "dev",
                "inet0",
                "nud",
                "permanent",
            ],
        );
        net.ip(&net.public, &["route", "add", "default", "via", INTERNET_GW]);
        net.ip(&net.nat_a, &["route", "add", "default", "via", PUB_A]);
        net.ip(&net.nat_b, &["route", "add", "default", "via", PUB_B]);
        net.ip(&net.seeder, &["route", "add", "default", "via", LAN_A_GW]);
        net.ip(&net.downloader, &["route", "add", "default", "via", LAN_B_GW]);
        for ns in [&net.public, &net.nat_a, &net.nat_b] {
            net.exec(ns, &["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"]);
        }
        net
    }

    fn all(&self) -> [&String; 5] {
        [&self.public, &self.nat_a, &self.nat_b, &self.seeder, &self.downloader]
    }

    fn exec(&self, ns: &str, cmd: &[&str]) {
        let mut full = vec!["ip", "netns", "exec", ns];
        full.extend_from_slice(cmd);
        must(&full);
    }

    fn ip(&self, ns: &str, args: &[&str]) {
        let mut full = vec!["ip", "-n", ns];
        full.extend_from_slice(args);
        must(&full);
    }

    fn link(&self, ns1: &str, if1: &str, ns2: &str, if2: &str) {
        must(&[
            "ip", "-n", ns1, "link", "add", if1, "type", "veth", "peer", "name", if2, "netns", ns2,
        ]);
        self.ip(ns1, &["link", "set", if1, "up"]);
        self.ip(ns2, &["link", "set", if2, "up"]);
    }

    fn addr(&self, ns: &str, dev: &str, ip: &str) {
        self.ip(ns, &["addr", "add", &format!("{ip}/24"), "dev", dev]);
    }

    /// Source NAT on `ns`'s outside interface: masquerade, with `flags` (e.g.
    /// `random,fully-random` for a symmetric NAT), behind a home router's input firewall
    /// (new connections from outside to the router itself are dropped: without it, a
    /// peer's first check, arriving before ours left, would make conntrack give our
    /// mapping another port).
    fn masquerade(&self, ns: &str, flags: &str) {
        self.exec(ns, &["nft", "add", "table", "inet", "fmfw"]);
        self.exec(
            ns,
            &[
                "nft",
                "add",
                "chain",
                "inet",
                "fmfw",
                "in",
                "{ type filter hook input priority 0; }",
            ],
        );
        self.exec(
            ns,
            &[
                "nft", "add", "rule", "inet", "fmfw", "in", "iifname", "wan", "ct", "state", "new",
                "drop",
            ],
        );
        self.exec(ns, &["nft", "add", "table", "ip", "fmnat"]);
        self.exec(
            ns,
            &[
                "nft",
                "add",
                "chain",
                "ip",
                "fmnat",
                "post",
                "{ type nat hook postrouting priority 100; }",
            ],
        );
        let mut rule =
            vec!["nft", "add", "rule", "ip", "fmnat", "post", "oifname", "wan", "masquerade"];
        rule.extend(flags.split_whitespace());
        self.exec(ns, &rule);
    }

    /// The public router resets every TCP connection it would forward between the NATs.
    fn no_tcp_between_nats(&self) {
        let ns = &self.public;
        self.exec(ns, &["nft", "add", "table", "inet", "fmfilter"]);
        self.exec(
            ns,
            &[
                "nft",
                "add",
                "chain",
                "inet",
                "fmfilter",
                "blocktcp",
                "{ type filter hook forward priority 0; }",
            ],
        );
        self.exec(
            ns,
            &[
                "nft", "add", "rule", "inet", "fmfilter", "blocktcp", "meta", "l4proto", "tcp",
                "reject", "with", "tcp", "reset",
            ],
        );
    }

    /// Starts `cmd` inside `ns`, kept to be killed on drop.
    fn spawn(&mut self, ns: &str, cmd: &mut Command) -> &mut Child {
        let child = spawn_in(ns, cmd);
        self.children.push(child);
        self.children.last_mut().unwrap()
    }

    /// coturn on the public side, from a configuration written into `dir`: a STUN server
    /// (RFC 8489), and with `turn` also a TURN server (RFC 8656) relaying from `PUB_A` for
    /// `TURN_USER` (long-term credentials); its log goes to `dir/turnserver.log` (a pipe
    /// nobody reads could fill and stall it). Returns once it listens.
    fn start_stun(&mut self, dir: &Path, turn: bool) {
        let conf = dir.join("turnserver.conf");
        let mode = if turn {
            format!(
                "lt-cred-mech\nuser={TURN_USER}:{TURN_PASSWORD}\nrealm=furymesh.test\n\
                 relay-ip={PUB_A}\nmin-port=50000\nmax-port=50999\n"
            )
        } else {
            "stun-only\n".to_owned()
        };
        std::fs::write(
            &conf,
            format!(
                "listening-ip={PUB_A}\nlistening-port={STUN_PORT}\n{mode}no-tls\nno-dtls\n\
                 no-cli\nno-software-attribute\nsimple-log\nlog-file={}\nverbose\n\
                 pidfile={}\n",
                dir.join("turnserver.log").display(),
                dir.join("turnserver.pid").display()
            ),
        )
        .unwrap();
        let public = self.public.clone();
        let mut cmd = Command::new("turnserver");
        cmd.arg("-c").arg(&conf);
        self.spawn(&public, &mut cmd);
        // Ready once its UDP port is bound (ss reads the namespace's sockets).
        for _ in 0..200 {
            let out = Command::new("ip")
                .args([
                    "netns",
                    "exec",
                    &public,
                    "ss",
                    "-Hlun",
                    "sport",
                    "=",
                    &format!(":{STUN_PORT}"),
                ])
                .output()
                .expect("ss");
            if !String::from_utf8_lossy(&out.stdout).trim().is_empty() {
                return;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!("turnserver did not bind {PUB_A}:{STUN_PORT}");
    }

    /// A `furymesh seed` inside `ns` with `args`; returns its TCP listen address once it
    /// says it listens (and, with `--webrtc`, once its WebRTC socket is up).
    fn start_seed(&mut self, ns: &str, data_dir: &Path, args: &[&str]) -> String {
        let webrtc = args.contains(&"--webrtc");
        let mut cmd = fm(data_dir);
        cmd.args(["--json", "seed", "--api", "off", "--shards", "1"]).args(args);
        let child = self.spawn(ns, &mut cmd);
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let (mut tcp, mut seen) = (None::<String>, String::new());
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("listening on ").nth(1) {
                    tcp = rest.split_whitespace().next().map(str::to_owned);
                    if !webrtc {
                        let _ = tx.send(Ok(tcp.clone().unwrap_or_default()));
                    }
                } else if line.contains("webrtc on udp ") {
                    let _ = tx.send(Ok(tcp.clone().unwrap_or_default()));
                } else {
                    seen.push_str(&line);
                    seen.push('\n');
                }
            }
            let _ = tx.send(Err(seen));
        });
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(Ok(addr)) => addr,
            Ok(Err(stderr)) => panic!("seed in {ns} did not start: {stderr}"),
            Err(e) => panic!("seed in {ns} did not start: {e}"),
        }
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        for ns in self.all() {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// Builds the network of one case, starts STUN (and with `turn` TURN), a bootstrap node
/// and a seeder of a fresh file behind NAT A (with `turn` relayed candidates too, its
/// credentials from a file); returns the network, the file's bytes, its ID, the
/// bootstrap's address and the downloader's data directory.
fn world(
    t: &Path,
    case: &str,
    nat_flags: &str,
    turn: bool,
) -> (Net, Vec<u8>, String, String, PathBuf) {
    let mut net = Net::new(case);
    net.masquerade(&net.nat_a.clone(), nat_flags);
    net.masquerade(&net.nat_b.clone(), nat_flags);
    let (boot, sd, dd) = (t.join("boot"), t.join("seed"), t.join("dl"));
    let data = write_file(&t.join("f.bin"), (512 << 10) + 777, 11);
    let id = publish_id(&sd, &t.join("f.bin"), &["--chunk-size", "128KiB"]);
    net.start_stun(t, turn);
    let public = net.public.clone();
    let b0 = net.start_seed(&public, &boot, &["--listen", &format!("{PUB_A}:0")]);
    let seeder = net.seeder.clone();
    let stun = format!("{PUB_A}:{STUN_PORT}");
    // Behind a NAT a node binds the unspecified address: it does not know the address its
    // DHT records are seen from (its NAT's), and signs its port only.
    let mut args =
        vec!["--listen", "0.0.0.0:0", "--webrtc", "0.0.0.0:0", "--bootstrap", &b0, "--stun", &stun];
    let creds = t.join("turn-credentials");
    std::fs::write(&creds, format!("{TURN_USER}\n{TURN_PASSWORD}\n")).unwrap();
    let creds = creds.to_str().unwrap();
    if turn {
        args.extend(["--turn", &stun, "--turn-credentials", creds]);
    }
    net.start_seed(&seeder, &sd, &args);
    // The seeder's provider record (signed for its port, stored under its NAT's address)
    // is on the bootstrap node once a lookup from the downloader's side finds it.
    let mut found = serde_json::Value::Null;
    for _ in 0..120 {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &net.downloader]);
        let mut inner = fm(&dd);
        inner.args(["--json", "dht", "find-providers", &id, "--bootstrap", &b0]);
        inner.args(["--timeout-secs", "5"]);
        cmd.arg(inner.get_program()).args(inner.get_args()).env_remove("FURYMESH_HOME");
        let out = cmd.output().expect("dht find-providers");
        found = serde_json::from_slice(&out.stdout).unwrap_or_default();
        let has = found["contacts"].as_array().is_some_and(|c| {
            c.iter().any(|c| c["addr"].as_str().is_some_and(|a| a.starts_with(NAT_A_WAN)))
        });
        if has {
            return (net, data, id, b0, dd);
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    panic!("the seeder's provider record never showed: {found}");
}

/// `get` inside the downloader's namespace (with `turn`, relayed candidates too, the
/// password from the environment); returns its JSON report.
fn get_behind_nat(
    net: &Net,
    dd: &Path,
    id: &str,
    b0: &str,
    (transport, turn): (&str, bool),
    out: &Path,
) -> serde_json::Value {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &net.downloader]);
    let mut inner = fm(dd);
    let server = format!("{PUB_A}:{STUN_PORT}");
    inner.args(["--json", "get", id, "--transport", transport, "--bootstrap", b0]);
    inner.args(["--stun", &server]);
    if turn {
        inner.args(["--turn", &server, "--turn-user", TURN_USER]);
        cmd.env("FURYMESH_TURN_PASSWORD", TURN_PASSWORD);
    }
    inner.arg("-o").arg(out);
    cmd.arg(inner.get_program()).args(inner.get_args());
    cmd.env_remove("FURYMESH_HOME");
    let started = furymesh::node::clock::now();
    let report = json(&run_ok(&mut cmd));
    // A figure for tuning.md (never asserted): the whole get, DHT lookup and signaling
    // included, and the transfer's own seconds.
    eprintln!(
        "nat: get --transport {transport} took {:.2} s ({} s transferring), ice {}",
        started.elapsed().as_secs_f64(),
        report["seconds"],
        report["peers"][0]["ice"]
    );
    report
}

fn skip_unless_root(what: &str) -> bool {
    if is_root() {
        return false;
    }
    eprintln!("SKIPPED {what}: network namespaces and nftables need root (CI runs as root)");
    true
}

#[test]
fn through_two_endpoint_independent_nats_the_download_goes_peer_to_peer_over_srflx() {
    if skip_unless_root("the NAT test (endpoint-independent)") {
        return;
    }
    let t = tempdir();
    let (net, data, id, b0, dd) = world(t.path(), "e", "", false);
    let out = t.path().join("out.bin");
    let report = get_behind_nat(&net, &dd, &id, &b0, ("webrtc", false), &out);
    assert_eq!(std::fs::read(&out).unwrap(), data, "download through the NATs differs");
    let ice = one_webrtc_peer_over_srflx(&report);
    assert!(!ice.contains("relay"), "{ice}: {report}");
}

#[test]
fn through_two_symmetric_nats_the_download_goes_through_the_turn_relay() {
    if skip_unless_root("the NAT test (symmetric, TURN)") {
        return;
    }
    let t = tempdir();
    let (net, data, id, b0, dd) = world(t.path(), "r", "random,fully-random", true);
    let out = t.path().join("out.bin");
    let get = || get_behind_nat(&net, &dd, &id, &b0, ("webrtc", true), &out);
    let report = std::panic::catch_unwind(get).unwrap_or_else(|e| {
        // What the relay saw (allocations, permissions, channels, why sessions closed).
        let log = std::fs::read_to_string(t.path().join("turnserver.log")).unwrap_or_default();
        eprintln!("coturn's log:\n{log}");
        std::panic::resume_unwind(e)
    });
    assert_eq!(std::fs::read(&out).unwrap(), data, "download through the relay differs");
    let ice = one_webrtc_peer(&report);
    // Either side's relayed candidate: the seeder's (`host-relay`, `srflx-relay`) or ours.
    assert!(ice.split('-').any(|c| c == "relay"), "{ice}: {report}");
}

/// The download's only peer came over a data channel; returns its ICE pair
/// (`LOCAL-REMOTE` candidate types).
fn one_webrtc_peer(report: &serde_json::Value) -> String {
    let peers = report["peers"].as_array().unwrap();
    assert_eq!(peers.len(), 1, "{report}");
    assert_eq!(peers[0]["transport"], "webrtc", "{report}");
    let ice = peers[0]["ice"].as_str().unwrap_or_else(|| panic!("no ice pair: {report}"));
    ice.to_owned()
}

/// The download's only peer came over a data channel whose ICE pair names the seeder's
/// server-reflexive address (its NAT's outside one): neither side's host address is
/// reachable from the other. Returns the pair (`LOCAL-REMOTE` candidate types).
fn one_webrtc_peer_over_srflx(report: &serde_json::Value) -> String {
    let ice = one_webrtc_peer(report);
    assert!(ice.ends_with("-srflx"), "{ice}: {report}");
    ice
}

#[test]
fn with_no_tcp_path_between_the_nats_get_auto_completes_over_webrtc_found_through_the_dht() {
    if skip_unless_root("the NAT test (no TCP path)") {
        return;
    }
    let t = tempdir();
    let (net, data, id, b0, dd) = world(t.path(), "t", "", false);
    net.no_tcp_between_nats();
    let out = t.path().join("out.bin");
    let report = get_behind_nat(&net, &dd, &id, &b0, ("auto", false), &out);
    assert_eq!(std::fs::read(&out).unwrap(), data, "download through the NATs differs");
    one_webrtc_peer_over_srflx(&report);
}
