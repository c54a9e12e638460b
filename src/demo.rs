//! `furymesh demo`: the first command a newcomer runs. Everything on loopback in a
//! temporary directory, through the real publish, seed and get paths.

use std::fs::File;
use std::io::Read;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde_json::json;

use crate::config::{
    CHUNK_SIZE_DEFAULT_BYTES, REQUESTS_INFLIGHT_DEFAULT, RESUME_SAVE_DEFAULT_BYTES,
};
use crate::crypto::Encryption;
use crate::dht::Key;
use crate::node::{
    self, clock, ContactJson, DhtQuery, DhtServerOptions, GetOptions, Node, NodeOptions,
    NodeSecurity, PeerAddr, SeedStats, TransportChoice,
};
use crate::storage::{self, layout, Catalog};
use crate::transfer::Strategy;

/// The demo's nodes: the seeders and the downloader, each with its own identity, kept in
/// `DATA_DIR/demo/node-N/` so only the first demo pays for generating RSA-4096 keys.
fn demo_nodes(data_dir: &Path) -> Result<Vec<Arc<NodeSecurity>>> {
    let dirs: Vec<_> = (0..=SEEDERS).map(|i| layout::demo_node_dir(data_dir, i)).collect();
    // Created in parallel the first time (each says so on stderr).
    let identities: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> =
            dirs.iter().map(|d| s.spawn(move || node::load_or_create_identity(d))).collect();
        handles
            .into_iter()
            .map(|h| h.join().map_err(|_| anyhow::anyhow!("key generation panicked")))
            .collect()
    });
    identities.into_iter().map(|i| Ok(NodeSecurity::new(i??.0, None, Encryption::On)?)).collect()
}

/// Seed of the demo's generated file (`bench::generate_file`), so anyone can rebuild it.
pub const DEMO_FILE_SEED: u64 = 0x5eed;

/// Runs the demo with a generated file of `size` bytes and `shards` shards per side. The
/// node identities live under `data_dir/demo`.
pub fn run(data_dir: &Path, size: u64, shards: usize, json: bool) -> Result<i32> {
    let shards = shards.max(1);
    let say = |s: String| if json { Ok(()) } else { crate::output::say(&s) };
    let mut nodes = demo_nodes(data_dir)?;
    let downloader = nodes.pop().context("no demo nodes")?;
    // Memory-backed when the host has /dev/shm with room, so the demo shows the network
    // path rather than the disk; otherwise the usual temporary directory.
    let mut tmp = None;
    for dir in [Path::new("/dev/shm"), &std::env::temp_dir()] {
        let Ok(t) = tempfile::Builder::new().prefix("furymesh-demo").tempdir_in(dir) else {
            continue;
        };
        say(format!("1. generating a {} MiB file in {}", size >> 20, t.path().display()))?;
        match crate::bench::generate_file(&t.path().join("release.img"), size, DEMO_FILE_SEED) {
            Ok(()) => {
                tmp = Some(t);
                break;
            }
            Err(e) => say(format!("   cannot use {}: {e}", dir.display()))?,
        }
    }
    let tmp = tmp.context("no temporary directory with room for the demo file")?;
    let catalog_dir = tmp.path().join("data");
    let src = tmp.path().join("release.img");
    let dst = tmp.path().join("downloaded.img");

    say("2. publishing it (SHA-256 per 512 KiB chunk, all cores)".into())?;
    let mut catalog = Catalog::load(&catalog_dir)?;
    let published = storage::publish(
        &mut catalog,
        std::slice::from_ref(&src),
        Some(CHUNK_SIZE_DEFAULT_BYTES),
        &|_| {},
    );
    let entry = published.into_iter().next().context("publish returned nothing")??.entry;
    let file_id = entry.info.file_id;
    say(format!("   file ID {file_id}"))?;

    say(format!(
        "3. starting {SEEDERS} seeders ({shards} shards each) on loopback; each joins the DHT \
         through the previous one and announces the file"
    ))?;
    let key = Key::from_file_id(&file_id);
    let mut seeders: Vec<(Node, SocketAddr)> = Vec::new();
    for security in nodes {
        let dht = DhtServerOptions {
            bootstrap: seeders.last().map(|s| vec![s.1]).unwrap_or_default(),
            table_path: None,
            provide: vec![key],
            read_only: false,
        };
        let opts = NodeOptions {
            dht: Some(dht),
            ..NodeOptions::new(Some("127.0.0.1:0".parse()?), shards, security)
        };
        let seeder = Node::start(vec![entry.clone().into()], &opts)?;
        let addr = seeder.addr().context("seeder without an address")?;
        say(format!("   seeder on {addr}"))?;
        seeders.push((seeder, addr));
    }
    let bootstrap = seeders.last().map(|s| s.1).context("no seeder")?;

    say(format!("4. finding providers through the DHT, knowing only {bootstrap}"))?;
    let providers = discover(bootstrap, key)?;
    for p in &providers {
        say(format!("   provider {} at {}", p.node_id, p.addr))?;
    }

    say(format!(
        "5. downloading from all {} providers at once with `get` (each must prove the node ID \
         its signed DHT record names; AES-256-GCM records; rarest first, verify every chunk, \
         write through io_uring)",
        providers.len()
    ))?;
    let get_opts = GetOptions {
        kind: crate::crypto::IdKind::File,
        file_id,
        peers: providers
            .iter()
            .map(|p| PeerAddr { addr: p.addr, node_id: p.node_id.parse().ok() })
            .collect(),
        security: downloader.clone(),
        output: dst.clone(),
        force: false,
        connections: shards,
        window: REQUESTS_INFLIGHT_DEFAULT,
        strategy: Strategy::RarestFirst,
        max_peers: SEEDERS,
        serve_partial: false,
        save_every_bytes: RESUME_SAVE_DEFAULT_BYTES,
        download_rate_bytes: None,
        transport: TransportChoice::Tcp,
        web_seeds: Vec::new(),
    };
    // The raw-TCP reference runs around the download (one copy before it, the rest after),
    // and the best one counts: one noisy sample on a shared machine cannot swing the ratio.
    let raw_path = tmp.path().join("raw.img");
    let mut raw_runs = vec![raw_copy(&src, &raw_path, shards)?];
    // The downloader is a node of its own (no listener): the download runs on its shards.
    let getter = Node::start(Vec::new(), &NodeOptions::new(None, shards, downloader))?;
    let report = getter.handle().get(get_opts, Arc::new(AtomicBool::new(false)), Box::new(|_| {}));
    getter.shutdown();
    let mut stats = SeedStats::default();
    for (s, _) in seeders {
        stats.add(&s.shutdown().serving);
    }
    let report = report?;

    say("6. comparing the two files byte for byte".into())?;
    let digest = file_sha256(&dst)?;
    if digest != file_sha256(&src)? {
        bail!("downloaded file differs from the original");
    }
    for _ in 1..RAW_TCP_RUNS {
        raw_runs.push(raw_copy(&src, &raw_path, shards)?);
    }
    let raw = raw_runs
        .iter()
        .max_by(|a, b| a.bytes_per_sec.total_cmp(&b.bytes_per_sec))
        .cloned()
        .context("no raw TCP run")?;
    let ratio = report.bytes_per_sec / raw.bytes_per_sec;
    if json {
        crate::output::say(
            &json!({
                "get": report,
                "providers": providers,
                "seeders": stats,
                "raw_tcp": raw,
                "raw_tcp_runs": raw_runs,
                "ratio_to_raw_tcp": ratio,
                "identical": true,
                "downloaded_sha256": digest
            })
            .to_string(),
        )?;
    } else {
        say("   identical: yes".into())?;
        say(format!(
            "done: {} MiB in {:.2} s = {:.0} MB/s; raw loopback TCP copy of the same file, best of {} runs around the download: {:.0} MB/s (ratio {:.2})",
            size >> 20,
            report.seconds,
            report.bytes_per_sec / 1e6,
            raw_runs.len(),
            raw.bytes_per_sec / 1e6,
            ratio
        ))?;
        say(format!(
            "seeders: {} chunks, {} payload bytes each read once from the file and sealed in place",
            stats.chunks_served, stats.payload_bytes_sealed
        ))?;
        say(format!("cleaning up {}", tmp.path().display()))?;
    }
    Ok(0)
}

/// Seeders the demo starts.
const SEEDERS: usize = 3;

/// Raw loopback TCP copies the demo's ratio is taken against (the best of them): one
/// before the download, the rest after it.
const RAW_TCP_RUNS: usize = 3;

/// One raw loopback TCP copy of `src` into `dst` (removed afterwards, so the copies never
/// hold more than one extra file's room).
fn raw_copy(src: &Path, dst: &Path, connections: usize) -> Result<crate::bench::RawTcpReport> {
    let report = crate::bench::raw_tcp_copy(src, dst, connections);
    std::fs::remove_file(dst).ok();
    report
}

/// Asks the DHT for providers of `key` until every seeder's announcement has landed (they
/// are paced, so the first seconds may find fewer), or 20 s have passed with at least one.
fn discover(bootstrap: SocketAddr, key: Key) -> Result<Vec<ContactJson>> {
    let deadline = clock::now() + Duration::from_secs(20);
    let mut best = Vec::new();
    loop {
        let answer =
            node::query(&[bootstrap], DhtQuery::FindProviders(key), None, Duration::from_secs(5))?;
        if answer.contacts.len() > best.len() {
            best = answer.contacts;
        }
        if best.len() >= SEEDERS {
            return Ok(best);
        }
        if clock::now() >= deadline {
            if best.is_empty() {
                bail!("no provider announced itself within 20 s");
            }
            return Ok(best);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// SHA-256 of a whole file, streamed.
fn file_sha256(path: &Path) -> Result<String> {
    use sha2::{Digest, Sha256};
    let mut f = File::open(path)?;
    let (mut h, mut buf) = (Sha256::new(), vec![0u8; 1 << 20]);
    loop {
        match f.read(&mut buf)? {
            0 => return Ok(hex::encode(h.finalize())),
            n => h.update(&buf[..n]),
        }
    }
}
