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

// Waits and the RSS sampler read the wall clock (the lint confines it to node::clock in
// the crate).
#![allow(clippy::disallowed_methods)]

mod common;

use std::fs;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use furymesh::crypto::{Encryption, FileId};
use furymesh::node::{
    self, GetOptions, Node, NodeOptions, NodeSecurity, PeerAddr, TransportChoice,
};
use furymesh::transfer::Strategy;

/// The seeder's anonymous RSS may not exceed this while it serves the load (issue 17).
const SEEDER_ANON_RSS_MAX_KIB: u64 = 64 << 10;

/// `RssAnon` of a process, in KiB.
fn anon_rss_kib(pid: u32) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("RssAnon:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn downloading_node(dir: &Path) -> Node {
    ensure_identity(dir);
    let security =
        NodeSecurity::new(node::load_identity(dir).unwrap(), None, Encryption::On).unwrap();
    Node::start(Vec::new(), &NodeOptions::new(None, 1, security)).unwrap()
}

#[test]
fn many_concurrent_downloaders_against_one_seeder() {
    let downloaders = env_or("LOAD_DOWNLOADERS", 120) as usize;
    let nodes = (env_or("LOAD_NODES", 2) as usize).clamp(1, downloaders);
    let size = env_or("LOAD_SIZE", 1 << 20);
    let chunk = env_or("LOAD_CHUNK", 1 << 20);
    eprintln!(
        "LOAD_DOWNLOADERS={downloaders} LOAD_NODES={nodes} LOAD_SIZE={size} LOAD_CHUNK={chunk}"
    );
    let t = tempdir();
    let dir = t.path();
    let src = dir.join("src.bin");
    let original = write_file(&src, size as usize, 7);
    let data = dir.join("seeder");
    let id_hex = publish_id(&data, &src, &["--chunk-size", &chunk.to_string()]);
    let id: FileId = id_hex.parse().unwrap();
    let seeder = Seeder::start_with_args(&data, 2, &["--api", "off"]);
    let seeder_pid = seeder.pid();
    let idle_rss = anon_rss_kib(seeder_pid);

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
        (0..nodes).map(|n| downloading_node(&dir.join(format!("node{n}")))).collect();
    let mut ids = Vec::new();
    for i in 0..downloaders {
        let h = node_list[i % nodes].handle();
        let opts = GetOptions {
            kind: furymesh::crypto::IdKind::File,
            file_id: id,
            peers: vec![PeerAddr { addr: seeder.addr, node_id: None }],
            security: h.security().clone(),
            output: outs.join(format!("{i}.bin")),
            force: false,
            connections: 1,
            window: 4,
            strategy: Strategy::RarestFirst,
            max_peers: 1,
            serve_partial: false,
            save_every_bytes: 1 << 20,
            download_rate_bytes: None,
            transport: TransportChoice::Tcp,
            web_seeds: Vec::new(),
        };
        let interrupt = Arc::new(AtomicBool::new(false));
        ids.push((i % nodes, h.download(opts, interrupt, Box::new(|_| {})).unwrap()));
    }

    // A fresh `get` in the middle of it, as a separate process.
    let fresh_out = dir.join("fresh.bin");
    let fresh_started = Instant::now();
    let fresh = fm(&dir.join("fresh"))
        .args(["--json", "get", &id_hex, "--peer", &seeder.peer(), "-o"])
        .arg(&fresh_out)
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
    done.store(true, Ordering::Relaxed);
    sampler.join().unwrap();
    let peak = peak.load(Ordering::Relaxed);
    // The line scripts/load reports (and tuning.md quotes).
    println!(
        "load: downloaders {downloaders} nodes {nodes} size {size} completed {} seconds {secs:.2} \
         seeder_anon_rss_idle_kib {idle_rss} seeder_anon_rss_peak_kib {peak} fresh_get_s {fresh_secs:.2}",
        downloaders - failed.len()
    );
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
    assert!(
        peak <= SEEDER_ANON_RSS_MAX_KIB,
        "the seeder's anonymous RSS reached {peak} KiB (idle {idle_rss} KiB) under {downloaders} downloaders"
    );
    drop(node_list);
    seeder.stop();
}
