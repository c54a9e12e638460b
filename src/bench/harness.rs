//! `furymesh bench`: one swarm scenario on loopback, in one process, measured against the
//! limits that matter on this machine, all in the same run.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use hdrhistogram::Histogram;
use serde::Serialize;

use crate::config::RESUME_SAVE_DEFAULT_BYTES;
use crate::node::{
    self, clock, GetOptions, LatencyReport, Node, NodeOptions, NodeSecurity, PeerAddr, SeedStats,
    TransportChoice,
};
use crate::storage::{self, Catalog};
use crate::transfer::Strategy;

/// Every parameter of a scenario (all echoed in the JSON as `scenario`).
#[derive(Debug, Clone, Serialize)]
pub struct Scenario {
    pub seeders: usize,
    pub downloaders: usize,
    pub file_bytes: u64,
    /// `None`: the automatic chunk size.
    pub chunk_size_bytes: Option<u32>,
    pub seeder_shards: usize,
    pub connections_per_downloader: usize,
    pub window: u32,
    pub strategy: String,
    pub max_upload_rate_bytes: Option<u64>,
    pub transport: &'static str,
    pub encryption: bool,
}

/// The machine the figures come from.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub cpu_model: String,
    pub cpu_flags: Vec<String>,
    pub cores: usize,
    pub kernel: String,
}

/// One downloader's result.
#[derive(Debug, Clone, Serialize)]
pub struct DownloaderResult {
    pub bytes: u64,
    pub seconds: f64,
    pub throughput_bytes_per_sec: f64,
}

/// Everything `furymesh bench --json` prints. Field by field in tuning.md.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub throughput_bytes_per_sec: f64,
    pub downloaders: Vec<DownloaderResult>,
    pub limits: std::collections::BTreeMap<&'static str, f64>,
    pub ratios: std::collections::BTreeMap<&'static str, f64>,
    pub latency_us: LatencyReport,
    pub cpu_seconds_per_gib: f64,
    /// CPU seconds per GiB moved of the seeders' threads alone (their shards).
    pub seeder_cpu_seconds_per_gib: f64,
    /// CPU seconds per GiB moved of the downloading node's threads alone (its shards and
    /// download coordinators).
    pub downloader_cpu_seconds_per_gib: f64,
    pub peak_rss_bytes: u64,
    pub seconds: f64,
    pub scenario: Scenario,
    pub machine: Machine,
    pub seeder_payload_bytes_from_map: u64,
    /// Payload bytes the seeders encrypted in one pass from their maps (encryption on).
    pub seeder_payload_bytes_sealed: u64,
    /// (seconds since start, bytes verified by all downloaders) every 100 ms.
    pub timeline: Vec<(f64, u64)>,
}

/// Thread-name prefixes of the scenario's seeders and of its downloading node.
const SEEDER_THREADS: &str = "fm-seed";
const DOWNLOADER_THREADS: &str = "fm-get";

/// CPU seconds so far of the seeders' threads and of the downloading node's threads.
fn sides_cpu() -> (f64, f64) {
    (node::threads_cpu_seconds(SEEDER_THREADS), node::threads_cpu_seconds(DOWNLOADER_THREADS))
}

/// Bytes each primitive measurement processes.
const LIMIT_SAMPLE_BYTES: u64 = 512 << 20;

fn memcpy_throughput() -> f64 {
    let src = vec![0x5au8; 1 << 20];
    let mut dst = vec![0u8; 1 << 20];
    let rounds = LIMIT_SAMPLE_BYTES >> 20;
    let t = clock::now();
    for _ in 0..rounds {
        dst.copy_from_slice(std::hint::black_box(&src));
        std::hint::black_box(&mut dst);
    }
    LIMIT_SAMPLE_BYTES as f64 / t.elapsed().as_secs_f64()
}

/// AES-256-GCM over 512 KiB chunk records on one core, through the record layer itself
/// (`crypto::record`: its cipher backend, nonces and AAD): sealing in place, or opening (tag
/// check and decryption in place) with `seal == false`. Only the cipher calls are timed.
fn aes_gcm_throughput(seal: bool) -> f64 {
    use crate::crypto::{Opener, RekeyLimits, Sealer};
    let secret = zeroize::Zeroizing::new([7u8; 32]);
    let mut sealer = Sealer::new(secret.clone(), RekeyLimits::PROTOCOL);
    let mut opener = Opener::new(secret, RekeyLimits::PROTOCOL);
    let mut buf = vec![0x5au8; 512 << 10];
    let aad = crate::crypto::RecordAad::chunk([1; 32], 0, buf.len() as u32);
    let rounds = LIMIT_SAMPLE_BYTES / buf.len() as u64;
    let mut timed = Duration::ZERO;
    for _ in 0..rounds {
        // Both lengths are the fixed 512 KiB above, within a record's limit.
        let t = clock::now();
        let tag = sealer.seal_in_place(&aad, &mut buf).expect("512 KiB record");
        if seal {
            timed += t.elapsed();
        }
        // Opening restores the plaintext for the next seal; the opener expects every
        // sealed record in order, so it runs in both modes.
        let t = clock::now();
        opener.open_in_place(&aad, &mut buf, &tag).expect("own record opens");
        if !seal {
            timed += t.elapsed();
        }
        std::hint::black_box(&mut buf);
    }
    LIMIT_SAMPLE_BYTES as f64 / timed.as_secs_f64()
}

/// Peak resident set of this process (VmHWM), in bytes.
fn peak_rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("VmHWM:")?.trim().strip_suffix("kB")?.trim().parse::<u64>().ok()
            })
        })
        .map_or(0, |kb| kb * 1024)
}

fn machine() -> Machine {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let field = |name: &str| {
        cpuinfo
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split(':').nth(1))
            .map(|v| v.trim().to_owned())
            .unwrap_or_default()
    };
    let wanted = ["aes", "vaes", "avx2", "avx512f", "sha_ni", "pclmulqdq", "vpclmulqdq"];
    let flags = field("flags");
    Machine {
        cpu_model: field("model name"),
        cpu_flags: flags
            .split_whitespace()
            .filter(|f| wanted.contains(f))
            .map(str::to_owned)
            .collect(),
        cores: node::available_cores(),
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_owned())
            .unwrap_or_default(),
    }
}

/// Temporary directory for the scenario: tmpfs when there is one (so the disk does not set
/// the result), else the usual temporary directory.
fn workdir() -> Result<tempfile::TempDir> {
    let shm = Path::new("/dev/shm");
    let b = tempfile::Builder::new().prefix("furymesh-bench").tempdir_in(shm);
    b.or_else(|_| tempfile::Builder::new().prefix("furymesh-bench").tempdir())
        .context("cannot create a temporary directory")
}

/// Runs `scenario`; `say` gets progress lines for humans.
/// Every node of the scenario shares `security` (one identity: node IDs play no part in a
/// transfer, and generating RSA-4096 keys per node would dominate a short run).
pub fn run(
    scenario: Scenario,
    security: Arc<NodeSecurity>,
    say: &dyn Fn(&str),
) -> Result<BenchReport> {
    if scenario.seeders == 0 || scenario.downloaders == 0 {
        bail!("a scenario needs at least one seeder and one downloader");
    }
    let tmp = workdir()?;
    let src = tmp.path().join("file.img");
    say(&format!("generating {} MiB in {}", scenario.file_bytes >> 20, tmp.path().display()));
    super::generate_file(&src, scenario.file_bytes, 0xbe7c)?;

    say("measuring limits: raw loopback TCP, memcpy, SHA-256, AES-256-GCM");
    let raw = super::raw_tcp_copy(
        &src,
        &tmp.path().join("raw.img"),
        scenario.connections_per_downloader,
    )?;
    std::fs::remove_file(tmp.path().join("raw.img")).ok();
    let mut limits = std::collections::BTreeMap::new();
    limits.insert("raw_loopback_tcp", raw.bytes_per_sec);
    limits.insert("memcpy_per_core", memcpy_throughput());
    limits.insert("sha256_per_core", super::sha256_throughput(LIMIT_SAMPLE_BYTES).bytes_per_sec);
    limits.insert("aes256gcm_seal_per_core", aes_gcm_throughput(true));
    limits.insert("aes256gcm_open_per_core", aes_gcm_throughput(false));

    say("publishing");
    let mut catalog = Catalog::load(&tmp.path().join("data"))?;
    let published = storage::publish(
        &mut catalog,
        std::slice::from_ref(&src),
        scenario.chunk_size_bytes,
        &|_| {},
    );
    let entry = published.into_iter().next().context("publish returned nothing")??.entry;

    say(&format!("starting {} seeder(s)", scenario.seeders));
    let mut seeders = Vec::new();
    for _ in 0..scenario.seeders {
        let listen = Some("127.0.0.1:0".parse()?);
        let opts = NodeOptions {
            upload_rate_bytes: scenario.max_upload_rate_bytes,
            name: SEEDER_THREADS.into(),
            ..NodeOptions::new(listen, scenario.seeder_shards, security.clone())
        };
        seeders.push(Node::start(vec![entry.clone().into()], &opts)?);
    }
    let peers: Vec<PeerAddr> = seeders.iter().filter_map(Node::addr).map(PeerAddr::from).collect();
    // Every downloader is a download in one node: its shards carry all of them, instead of
    // a pinned pool per downloader stacked onto the same cores.
    let shards = scenario.connections_per_downloader.clamp(1, node::available_cores());
    let getter = Node::start(
        Vec::new(),
        &NodeOptions {
            name: DOWNLOADER_THREADS.into(),
            ..NodeOptions::new(None, shards, security.clone())
        },
    )?;
    let strategy: Strategy = scenario.strategy.parse().map_err(|e| anyhow::anyhow!("{e}"))?;

    say(&format!("downloading with {} downloader(s)", scenario.downloaders));
    let progress: Arc<Vec<AtomicU64>> =
        Arc::new((0..scenario.downloaders).map(|_| AtomicU64::new(0)).collect());
    let done = Arc::new(AtomicBool::new(false));
    let timeline = Arc::new(Mutex::new(Vec::new()));
    let cpu0 = node::process_cpu_seconds();
    let (seed_cpu0, get_cpu0) = sides_cpu();
    let started = clock::now();
    let sampler = {
        let (progress, done, timeline) = (progress.clone(), done.clone(), timeline.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                let total: u64 = progress.iter().map(|p| p.load(Ordering::Relaxed)).sum();
                if let Ok(mut t) = timeline.lock() {
                    t.push((started.elapsed().as_secs_f64(), total));
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };
    let results: Vec<Result<node::GetReport>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..scenario.downloaders)
            .map(|i| {
                let opts = GetOptions {
                    kind: crate::crypto::IdKind::File,
                    file_id: entry.info.file_id,
                    peers: peers.clone(),
                    security: security.clone(),
                    output: tmp.path().join(format!("out-{i}.img")),
                    force: true,
                    connections: scenario.connections_per_downloader,
                    window: scenario.window,
                    strategy,
                    max_peers: 64,
                    serve_partial: false,
                    save_every_bytes: RESUME_SAVE_DEFAULT_BYTES,
                    download_rate_bytes: None,
                    transport: TransportChoice::Tcp,
                    web_seeds: Vec::new(),
                };
                let (progress, handle) = (progress.clone(), getter.handle());
                s.spawn(move || {
                    let report = move |p: node::GetProgress| {
                        progress[i].store(p.done_bytes, Ordering::Relaxed);
                    };
                    handle
                        .get(opts, Arc::new(AtomicBool::new(false)), Box::new(report))
                        .map_err(anyhow::Error::from)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| bail!("a downloader panicked")))
            .collect()
    });
    let seconds = started.elapsed().as_secs_f64();
    done.store(true, Ordering::Relaxed);
    let _ = sampler.join();
    let cpu = node::process_cpu_seconds() - cpu0;
    // Read before the nodes stop: their threads' counters go with them.
    let (seed_cpu, get_cpu) = sides_cpu();
    let (seed_cpu, get_cpu) = (seed_cpu - seed_cpu0, get_cpu - get_cpu0);
    getter.shutdown();
    let mut stats = SeedStats::default();
    for s in seeders {
        stats.add(&s.shutdown().serving);
    }
    let mut latency = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)?;
    let mut downloaders = Vec::new();
    let mut moved = 0u64;
    for r in results {
        let r = r?;
        moved += r.bytes;
        if let Some(h) = &r.latency_histogram {
            latency.add(h)?;
        }
        downloaders.push(DownloaderResult {
            bytes: r.bytes,
            seconds: r.seconds,
            throughput_bytes_per_sec: r.bytes_per_sec,
        });
    }
    let latency_us = LatencyReport::of(&latency);
    let gib_moved = (moved as f64 / (1u64 << 30) as f64).max(1e-9);
    let throughput = moved as f64 / seconds;
    let mut ratios = std::collections::BTreeMap::new();
    ratios.insert("raw_loopback_tcp", throughput / limits["raw_loopback_tcp"]);
    ratios.insert(
        "sha256_all_cores",
        throughput / (limits["sha256_per_core"] * node::available_cores() as f64),
    );
    if scenario.encryption {
        // The issue's bar: the slower of the network path and the cipher (sealing on the
        // seeder, opening on the downloader, each one core per connection).
        let cipher = limits["aes256gcm_seal_per_core"].min(limits["aes256gcm_open_per_core"]);
        ratios.insert("min_raw_tcp_cipher", throughput / limits["raw_loopback_tcp"].min(cipher));
    }
    if let Some(r) = scenario.max_upload_rate_bytes {
        ratios.insert("upload_caps", throughput / (r as f64 * scenario.seeders as f64));
    }
    Ok(BenchReport {
        throughput_bytes_per_sec: throughput,
        downloaders,
        limits,
        ratios,
        latency_us,
        cpu_seconds_per_gib: cpu / gib_moved,
        seeder_cpu_seconds_per_gib: seed_cpu / gib_moved,
        downloader_cpu_seconds_per_gib: get_cpu / gib_moved,
        peak_rss_bytes: peak_rss_bytes(),
        seconds,
        scenario,
        machine: machine(),
        seeder_payload_bytes_from_map: stats.payload_bytes_from_map,
        seeder_payload_bytes_sealed: stats.payload_bytes_sealed,
        timeline: timeline.lock().map(|t| t.clone()).unwrap_or_default(),
    })
}

/// The human table.
pub fn table(r: &BenchReport) -> String {
    let mut s = String::new();
    let mb = |b: f64| b / 1e6;
    let _ = writeln!(
        s,
        "scenario: {} seeder(s) -> {} downloader(s), {} MiB, {} connection(s) each, window {}",
        r.scenario.seeders,
        r.scenario.downloaders,
        r.scenario.file_bytes >> 20,
        r.scenario.connections_per_downloader,
        r.scenario.window
    );
    let _ = writeln!(
        s,
        "machine: {} ({} cores, kernel {})",
        r.machine.cpu_model, r.machine.cores, r.machine.kernel
    );
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "{:<34} {:>12}",
        "aggregate throughput",
        format!("{:.0} MB/s", mb(r.throughput_bytes_per_sec))
    );
    for (i, d) in r.downloaders.iter().enumerate() {
        let _ = writeln!(
            s,
            "{:<34} {:>12}",
            format!("  downloader {i}"),
            format!("{:.0} MB/s", mb(d.throughput_bytes_per_sec))
        );
    }
    for (name, v) in &r.limits {
        let ratio = r.ratios.get(name).map(|x| format!("  ratio {x:.2}")).unwrap_or_default();
        let _ = writeln!(
            s,
            "{:<34} {:>12}{ratio}",
            format!("limit: {name}"),
            format!("{:.0} MB/s", mb(*v))
        );
    }
    for (name, v) in r.ratios.iter().filter(|(n, _)| !r.limits.contains_key(*n)) {
        let _ = writeln!(s, "{:<34} {:>12.2}", format!("ratio to {name}"), v);
    }
    let l = &r.latency_us;
    let _ = writeln!(
        s,
        "{:<34} p50 {} us, p90 {}, p99 {}, p99.9 {}, max {}",
        "chunk latency", l.p50, l.p90, l.p99, l.p999, l.max
    );
    let _ = writeln!(
        s,
        "{:<34} {:>12.2}",
        "CPU seconds per GiB (whole process)", r.cpu_seconds_per_gib
    );
    let _ =
        writeln!(s, "{:<34} {:>12.2}", "  of which seeders' shards", r.seeder_cpu_seconds_per_gib);
    let _ = writeln!(
        s,
        "{:<34} {:>12.2}",
        "  of which the downloading node", r.downloader_cpu_seconds_per_gib
    );
    let _ = write!(s, "{:<34} {:>12}", "peak RSS", format!("{} MiB", r.peak_rss_bytes >> 20));
    s
}

/// Writes `result.json`, `throughput.svg` and `latency.svg` into `dir`.
pub fn write_out(r: &BenchReport, dir: &Path) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let json = dir.join("result.json");
    std::fs::write(&json, serde_json::to_vec_pretty(r)?)?;
    let tp = dir.join("throughput.svg");
    let points: Vec<(f64, f64)> = r
        .timeline
        .windows(2)
        .map(|w| {
            let dt = (w[1].0 - w[0].0).max(1e-9);
            (w[1].0, (w[1].1.saturating_sub(w[0].1)) as f64 / dt / 1e6)
        })
        .collect();
    std::fs::write(&tp, svg_line("throughput over time", "seconds", "MB/s", &points))?;
    let l = &r.latency_us;
    let lat = dir.join("latency.svg");
    let q = [(50.0, l.p50), (90.0, l.p90), (99.0, l.p99), (99.9, l.p999), (100.0, l.max)];
    let pts: Vec<(f64, f64)> = q.iter().map(|&(p, v)| (p, v as f64 / 1000.0)).collect();
    std::fs::write(&lat, svg_line("chunk latency by percentile", "percentile", "ms", &pts))?;
    Ok(vec![json, tp, lat])
}

/// A small self-contained SVG line chart.
fn svg_line(title: &str, xlabel: &str, ylabel: &str, pts: &[(f64, f64)]) -> String {
    let (w, h, m) = (640.0, 360.0, 50.0);
    let xmax = pts.iter().map(|p| p.0).fold(1e-9, f64::max);
    let ymax = pts.iter().map(|p| p.1).fold(1e-9, f64::max) * 1.1;
    let path: Vec<String> = pts
        .iter()
        .map(|&(x, y)| {
            format!("{:.1},{:.1}", m + x / xmax * (w - 2.0 * m), h - m - y / ymax * (h - 2.0 * m))
        })
        .collect();
    format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
<text x="{tx}" y="20" text-anchor="middle" font-size="14">{title}</text>
<line x1="{m}" y1="{yb}" x2="{xr}" y2="{yb}" stroke="black"/><line x1="{m}" y1="{m}" x2="{m}" y2="{yb}" stroke="black"/>
<text x="{tx}" y="{xl}" text-anchor="middle">{xlabel} (max {xmax:.1})</text>
<text x="12" y="{ty}" transform="rotate(-90 12 {ty})" text-anchor="middle">{ylabel} (max {ymax:.1})</text>
<polyline fill="none" stroke="steelblue" stroke-width="2" points="{points}"/>
</svg>
"#,
        tx = w / 2.0,
        yb = h - m,
        xr = w - m,
        xl = h - 15.0,
        ty = h / 2.0,
        points = path.join(" ")
    )
}
