//! Downloads over degraded links (issue 17, "Degraded links"): a seeder and a downloader in
//! two network namespaces the test makes, joined by a TUN device in each and
//! `scripts/linkemu` between them, which delays, jitters, drops and reorders every packet
//! (this kernel has no `netem`); where a case limits the rate, the kernel's `tbf` shapes
//! the seeder's side. Every case must end byte-identical; the report's chunk latency shows
//! the delay was really there, and the emulator's counters that packets were really lost.
//! The goodput figures against a shaped link are measured by `scripts/degraded`, not here.
//!
//! Needs root (network namespaces, TUN devices) and python3; skipped with a message
//! otherwise.

mod common;
#[path = "common/netns.rs"]
mod netns;

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::*;
use netns::{is_root, must, spawn_in};

const SEEDER_IP: &str = "10.71.0.1";
const DOWNLOADER_IP: &str = "10.71.0.2";

fn usable() -> bool {
    let root = is_root();
    let python =
        Command::new("python3").arg("--version").output().is_ok_and(|o| o.status.success());
    if !(root && python) {
        eprintln!("skipped: degraded-link tests need root (network namespaces) and python3");
    }
    root && python
}

/// How the emulated link treats packets, each direction alike (`scripts/linkemu` flags).
struct Impairment {
    /// One-way delay, ms (the round trip is twice this).
    delay_ms: u32,
    jitter_ms: u32,
    /// Loss probability per packet, percent.
    loss_pct: u32,
    /// Probability that a packet is held back (overtaken by later ones), percent.
    reorder_pct: u32,
    /// A `tbf` rate on the seeder's side, e.g. `8mbit`.
    rate: Option<&'static str>,
}

/// Two namespaces joined through the link emulator; removed on drop with everything
/// started in them.
struct Link {
    seeder: String,
    downloader: String,
    emulator: Option<Child>,
    children: Vec<Child>,
}

impl Link {
    fn new(case: &str, imp: &Impairment) -> Self {
        let tag = format!("{}{case}", std::process::id());
        let mut link = Self {
            seeder: format!("fmdeg-s-{tag}"),
            downloader: format!("fmdeg-d-{tag}"),
            emulator: None,
            children: Vec::new(),
        };
        for (ns, me, other) in
            [(&link.seeder, SEEDER_IP, DOWNLOADER_IP), (&link.downloader, DOWNLOADER_IP, SEEDER_IP)]
        {
            must(&["ip", "netns", "add", ns]);
            must(&["ip", "-n", ns, "link", "set", "lo", "up"]);
            must(&["ip", "-n", ns, "tuntap", "add", "dev", "tun0", "mode", "tun"]);
            must(&["ip", "-n", ns, "addr", "add", me, "peer", other, "dev", "tun0"]);
            must(&["ip", "-n", ns, "link", "set", "tun0", "up"]);
        }
        if let Some(rate) = imp.rate {
            must(&[
                "ip",
                "netns",
                "exec",
                &link.seeder,
                "tc",
                "qdisc",
                "add",
                "dev",
                "tun0",
                "root",
                "tbf",
                "rate",
                rate,
                "burst",
                "32kb",
                "latency",
                "400ms",
            ]);
        }
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/linkemu");
        let mut emu = Command::new("python3")
            .arg(script)
            .args([&link.seeder, &link.downloader])
            .args(["--delay-ms", &imp.delay_ms.to_string()])
            .args(["--jitter-ms", &imp.jitter_ms.to_string()])
            .args(["--loss", &format!("{}", f64::from(imp.loss_pct) / 100.0)])
            .args(["--reorder", &format!("{}", f64::from(imp.reorder_pct) / 100.0)])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn scripts/linkemu");
        let mut ready = String::new();
        BufReader::new(emu.stdout.take().unwrap()).read_line(&mut ready).unwrap();
        assert_eq!(ready.trim(), "ready", "scripts/linkemu did not start");
        link.emulator = Some(emu);
        link
    }

    /// Starts `cmd` inside `ns`, kept to be killed on drop.
    fn spawn(&mut self, ns: &str, cmd: &Command) -> &mut Child {
        self.children.push(spawn_in(ns, cmd));
        self.children.last_mut().unwrap()
    }

    /// A seeder of `data_dir` on fixed ports of the seeder's namespace (TCP 7000, WebRTC
    /// UDP 7001), once it says both are up.
    fn start_seed(&mut self, data_dir: &Path) {
        let mut cmd = fm(data_dir);
        cmd.args(["seed", "--api", "off", "--shards", "1"])
            .args(["--listen", &format!("{SEEDER_IP}:7000")])
            .args(["--webrtc", &format!("{SEEDER_IP}:7001")]);
        let ns = self.seeder.clone();
        let stderr = self.spawn(&ns, &cmd).stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut seen = String::new();
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("webrtc on udp ") {
                    let _ = tx.send(Ok(()));
                }
                seen.push_str(&line);
                seen.push('\n');
            }
            let _ = tx.send(Err(seen));
        });
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(Ok(())) => {}
            Ok(Err(stderr)) => panic!("seed did not start: {stderr}"),
            Err(e) => panic!("seed did not start: {e}"),
        }
    }

    /// Runs `get` in the downloader's namespace to the end; its JSON report.
    fn get(&mut self, data_dir: &Path, id: &str, transport: &str, out: &Path) -> serde_json::Value {
        let port = if transport == "webrtc" { 7001 } else { 7000 };
        let mut cmd = fm(data_dir);
        cmd.args(["--json", "get", id, "--transport", transport])
            .args(["--peer", &format!("{SEEDER_IP}:{port}"), "-o"])
            .arg(out);
        let ns = self.downloader.clone();
        let child = self.spawn(&ns, &cmd);
        let (mut stdout, mut stderr) = (String::new(), String::new());
        child.stdout.take().unwrap().read_to_string(&mut stdout).unwrap();
        child.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
        let status = child.wait().unwrap();
        assert!(status.success(), "get failed ({status}): {stderr}");
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"))
    }

    /// Stops the emulator; the packets it dropped (both directions).
    fn dropped(&mut self) -> u64 {
        let mut emu = self.emulator.take().unwrap();
        must(&["kill", "-TERM", &emu.id().to_string()]);
        let mut err = String::new();
        emu.stderr.take().unwrap().read_to_string(&mut err).unwrap();
        emu.wait().unwrap();
        err.lines()
            .filter_map(|l| l.split(", ").nth(1)?.strip_suffix(" dropped")?.parse::<u64>().ok())
            .sum()
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        for c in self.children.iter_mut().chain(self.emulator.as_mut()) {
            let _ = c.kill();
            let _ = c.wait();
        }
        for ns in [&self.seeder, &self.downloader] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// Publishes a fresh file of `len` bytes, downloads it over a link with `imp` by
/// `transport`, and checks the result: byte-identical, the chunk latency at least one
/// round trip, and (with loss) packets really dropped on the way.
fn case(name: &str, imp: Impairment, len: usize, transport: &str) {
    if !usable() {
        return;
    }
    let t = tempdir();
    let (sd, dd): (PathBuf, PathBuf) = (t.path().join("seed"), t.path().join("dl"));
    let bytes = write_file(&t.path().join("f.bin"), len, 17);
    let id = publish_id(&sd, &t.path().join("f.bin"), &["--chunk-size", "64KiB"]);
    let mut link = Link::new(name, &imp);
    link.start_seed(&sd);
    let out = t.path().join("out.bin");
    let report = link.get(&dd, &id, transport, &out);
    assert!(std::fs::read(&out).unwrap() == bytes, "{name}: download differs: {report}");
    assert_eq!(report["peers"][0]["transport"], transport, "{report}");
    let p50_us = report["latency_us"]["p50"].as_u64().unwrap();
    let rtt_us = 2 * u64::from(imp.delay_ms) * 1000;
    assert!(p50_us >= rtt_us, "{name}: chunk latency {p50_us} µs below the round trip {rtt_us} µs");
    let dropped = link.dropped();
    if imp.loss_pct > 0 {
        assert!(dropped > 0, "{name}: the emulator dropped nothing");
    }
    eprintln!("{name}: {len} bytes in {}s, {dropped} packets dropped", report["seconds"]);
}

/// 10% loss each way on a 50 ms round trip: TCP retransmits, the download completes.
#[test]
fn tcp_with_ten_percent_loss_completes_byte_identical() {
    let imp = Impairment { delay_ms: 25, jitter_ms: 0, loss_pct: 10, reorder_pct: 0, rate: None };
    case("loss10", imp, 512 << 10, "tcp");
}

/// A 300 ms round trip with 20 ms jitter, 1% loss and 5% of packets reordered.
#[test]
fn tcp_with_long_delay_jitter_and_reordering_completes_byte_identical() {
    let imp = Impairment { delay_ms: 150, jitter_ms: 20, loss_pct: 1, reorder_pct: 5, rate: None };
    case("rtt300", imp, (1 << 20) + 333, "tcp");
}

/// An 8 Mbit/s `tbf` link with a 100 ms round trip and 2% loss.
#[test]
fn tcp_through_a_rate_limited_lossy_link_completes_byte_identical() {
    let imp =
        Impairment { delay_ms: 50, jitter_ms: 0, loss_pct: 2, reorder_pct: 0, rate: Some("8mbit") };
    case("tbf", imp, 1 << 20, "tcp");
}

/// A WebRTC data channel (SCTP over DTLS over UDP) over 5% loss, a 100 ms round trip
/// and reordering: SCTP's retransmissions carry it, byte-identical.
#[test]
fn webrtc_with_loss_and_reordering_completes_byte_identical() {
    let imp = Impairment { delay_ms: 50, jitter_ms: 5, loss_pct: 5, reorder_pct: 2, rate: None };
    case("rtc", imp, 512 << 10, "webrtc");
}
