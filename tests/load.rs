//! Fault suite, load (issue 17): many concurrent downloaders — real sockets, a few
//! downloading nodes with many downloads each — against one real `furymesh seed` process.
//! Every download must complete byte-identical (however long the saturated cores make the
//! wait: waits follow progress, not a constant), the seeder's anonymous memory must stay
//! bounded while it serves them all, and a fresh `get` started in the middle of the load
//! must complete too.
//!
//! The test in CI is the short variant: 120 downloads of a 1 MiB file in 1 MiB chunks, so
//! every connection reads (and seals) a whole 1 MiB chunk at about the same moment. A seeder
//! that kept a send buffer per connection peaked at 86–92 MiB here; with the shard's pool of
//! send buffers (`SEND_BUFFER_BUDGET_PER_SHARD_BYTES`) it stays near 8 MiB. `scripts/load`
//! runs the long one through the same code with `LOAD_DOWNLOADERS` (concurrent downloads in
//! all), `LOAD_NODES` (downloading nodes they are spread over), `LOAD_SIZE` and
//! `LOAD_CHUNK`, and reports the completions, the seeder's peak anonymous RSS and how long
//! the fresh `get` took.
//!
//! The WebRTC soak (issue 14) is the same run over data channels: `LOAD_TRANSPORT=webrtc`
//! starts the seeder with `--webrtc` and has every download open its own session to it,
//! and `LOAD_RATE` (bytes per second per download) keeps the sessions open long enough to
//! hold them all at once. It reports the most downloads in progress at one moment and the
//! seeder's memory per session (peak minus idle anonymous RSS over that count);
//! `scripts/load --transport webrtc` runs it.

// Waits and the RSS sampler read the wall clock (the lint confines it to node::clock in
// the crate).
#![allow(clippy::disallowed_methods)]

mod common;

use std::fs;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use furymesh::crypto::FileId;
use furymesh::node::{self, GetOptions, Node, PeerAddr, TransportChoice};

/// The seeder's anonymous RSS may not exceed this while it serves the load (issue 17).
const SEEDER_ANON_RSS_MAX_KIB: u64 = 64 << 10;

/// CPU seconds (user + system) a process has used, from `/proc/PID/stat`.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let f: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    (ticks(11) + ticks(12)) as f64 / 100.0
}

/// `RssAnon` of a process, in KiB.
fn anon_rss_kib(pid: u32) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("RssAnon:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

#[test]
fn many_concurrent_downloaders_against_one_seeder() {
    let downloaders = env_or("LOAD_DOWNLOADERS", 120) as usize;
    let nodes = (env_or("LOAD_NODES", 2) as usize).clamp(1, downloaders);
    let size = env_or("LOAD_SIZE", 1 << 20);
    let chunk = env_or("LOAD_CHUNK", 1 << 20);
    let webrtc = match std::env::var("LOAD_TRANSPORT").as_deref() {
        Ok("webrtc") => true,
        Ok("tcp") | Err(_) => false,
        Ok(other) => panic!("LOAD_TRANSPORT={other}: tcp or webrtc"),
    };
    let rate = Some(env_or("LOAD_RATE", 0)).filter(|&r| r > 0);
    eprintln!(
        "LOAD_DOWNLOADERS={downloaders} LOAD_NODES={nodes} LOAD_SIZE={size} LOAD_CHUNK={chunk} \
         LOAD_TRANSPORT={} LOAD_RATE={rate:?}",
        if webrtc { "webrtc" } else { "tcp" }
    );
    let t = tempdir();
    let dir = t.path();
    let src = dir.join("src.bin");
    let original = write_file(&src, size as usize, 7);
    let data = dir.join("seeder");
    let id_hex = publish_id(&data, &src, &["--chunk-size", &chunk.to_string()]);
    let id: FileId = id_hex.parse().unwrap();
    let mut seed_args = vec!["--api", "off"];
    if webrtc {
        seed_args.extend(["--webrtc", "127.0.0.1:0"]);
    }
    let seeder = Seeder::start_with_args(&data, 2, &seed_args);
    let (peer, transport) = match seeder.webrtc {
        Some(udp) if webrtc => (udp, TransportChoice::Webrtc),
        _ => (seeder.addr, TransportChoice::Tcp),
    };
    let seeder_pid = seeder.pid();
    let idle_rss = anon_rss_kib(seeder_pid);
    let (seeder_cpu0, own_cpu0) = (cpu_seconds(seeder_pid), node::process_cpu_seconds());

    // The seeder's anonymous RSS, sampled until the load ends.
    let done = Arc::new(AtomicBool::new(false));
    let peak = Arc::new(AtomicU64::new(idle_rss));
    let sampler = {
        let (done, peak) = (done.clone(), peak.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                peak.fetch_max(anon_rss_kib(seeder_pid), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };

    let started = Instant::now();
    let outs = dir.join("outs");
    fs::create_dir(&outs).unwrap();
    let node_list: Vec<Node> =
        (0..nodes).map(|n| downloading_node(&dir.join(format!("node{n}")), 1)).collect();
    // Downloads in progress (some bytes, not all), and the most at one moment.
    let in_progress = Arc::new(AtomicU64::new(0));
    let most_in_progress = Arc::new(AtomicU64::new(0));
    let mut ids = Vec::new();
    for i in 0..downloaders {
        let h = node_list[i % nodes].handle();
        let peer = PeerAddr { addr: peer, node_id: None };
        let opts = GetOptions {
            connections: 1,
            window: 4,
            max_peers: 1,
            download_rate_bytes: rate,
            transport,
            ..get_options(&h, id, peer, outs.join(format!("{i}.bin")))
        };
        let interrupt = Arc::new(AtomicBool::new(false));
        let (now, most) = (in_progress.clone(), most_in_progress.clone());
        // 0: not started, 1: in progress, 2: done (counted once each way).
        let state = std::sync::atomic::AtomicU8::new(0);
        let progress = Box::new(move |p: node::GetProgress| {
            let next = if p.done_bytes >= p.total_bytes { 2 } else { u8::from(p.done_bytes > 0) };
            let before = state.fetch_max(next, Ordering::Relaxed);
            if before == 0 && next == 1 {
                most.fetch_max(now.fetch_add(1, Ordering::Relaxed) + 1, Ordering::Relaxed);
            } else if before == 1 && next == 2 {
                now.fetch_sub(1, Ordering::Relaxed);
            }
        });
        ids.push((i % nodes, h.download(opts, interrupt, progress).unwrap()));
    }

    // A fresh `get` in the middle of it, as a separate process.
    let fresh_out = dir.join("fresh.bin");
    let fresh_started = Instant::now();
    let fresh = fm(&dir.join("fresh"))
        .args(["--json", "get", &id_hex, "--peer", &peer.to_string(), "-o"])
        .arg(&fresh_out)
        .args(["--transport", if webrtc { "webrtc" } else { "tcp" }])
        .output()
        .unwrap();
    let fresh_secs = fresh_started.elapsed().as_secs_f64();

    let mut failed = Vec::new();
    for (n, d) in ids {
        match node_list[n].handle().wait(d) {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => failed.push(format!("download {d:?}: {e}")),
            Err(e) => failed.push(format!("download {d:?}: {e}")),
        }
    }
    let secs = started.elapsed().as_secs_f64();
    let (seeder_cpu, own_cpu) =
        (cpu_seconds(seeder_pid) - seeder_cpu0, node::process_cpu_seconds() - own_cpu0);
    done.store(true, Ordering::Relaxed);
    sampler.join().unwrap();
    let peak = peak.load(Ordering::Relaxed);
    let most = most_in_progress.load(Ordering::Relaxed);
    // The line scripts/load reports (and tuning.md quotes).
    println!(
        "load: downloaders {downloaders} nodes {nodes} size {size} completed {} seconds {secs:.2} \
         seeder_anon_rss_idle_kib {idle_rss} seeder_anon_rss_peak_kib {peak} fresh_get_s {fresh_secs:.2} \
         most_in_progress {most} seeder_anon_kib_per_download {:.1}",
        downloaders - failed.len(),
        peak.saturating_sub(idle_rss) as f64 / most.max(1) as f64,
    );
    // Where the time went (CPU on each side) and, over WebRTC, how the seeder's set-ups
    // ended (its counters: the line is for reading, not asserted on).
    let mut reasons = std::collections::BTreeMap::<String, usize>::new();
    for f in &failed {
        *reasons
            .entry(f.split_once(": ").map_or(f.as_str(), |(_, r)| r).to_owned())
            .or_default() += 1;
    }
    println!("load-cpu: seeder_cpu_s {seeder_cpu:.1} downloaders_cpu_s {own_cpu:.1} failures {reasons:?}");
    let stats = seeder.stop();
    if webrtc {
        let keys = [
            "webrtc_offers",
            "webrtc_offers_busy",
            "webrtc_offers_dropped",
            "webrtc_ice_connected",
            "webrtc_dtls_connected",
            "webrtc_setups_opened",
            "webrtc_setup_ms_total",
            "webrtc_setup_timeouts",
            "webrtc_setup_failures",
            "webrtc_connections",
            "handshakes_failed",
            "chunks_served",
        ];
        let fields: Vec<String> = keys.iter().map(|k| format!("{k} {}", stats[k])).collect();
        println!("load-webrtc: {}", fields.join(" "));
    }
    assert!(
        failed.is_empty(),
        "{} of {downloaders} downloads failed: {:?}",
        failed.len(),
        &failed[..failed.len().min(5)]
    );
    for i in 0..downloaders {
        assert!(
            fs::read(outs.join(format!("{i}.bin"))).unwrap() == original,
            "download {i} differs"
        );
    }
    assert!(fresh.status.success(), "the fresh get failed under load: {}", stderr_of(&fresh));
    assert!(fs::read(&fresh_out).unwrap() == original, "the fresh get differs");
    // The bound is issue 17's, for TCP connections; a WebRTC session costs more (its SCTP
    // association and DTLS state), which the soak measures rather than bounds.
    assert!(
        webrtc || peak <= SEEDER_ANON_RSS_MAX_KIB,
        "the seeder's anonymous RSS reached {peak} KiB (idle {idle_rss} KiB) under {downloaders} downloaders"
    );
    drop(node_list);
}
