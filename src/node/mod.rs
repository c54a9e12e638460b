//! The node: executors, pinning, sockets, timers and the clock — the only impure pump.
//!
//! A node runs N shards, one glommio executor pinned per core. A connection lives its whole
//! life on the shard that accepted it; shards share nothing mutable on the data path (the
//! catalog snapshot they read is immutable). Protocol decisions live in `wire` and
//! `transfer`; this module moves bytes and time between them and the OS.
//!
//! - `seed`: the seeder (per-shard listeners with SO_REUSEPORT, zero-copy chunk serving).
//! - `fetch`: the downloader behind `furymesh get`.
//! - `webseed`: HTTP mirrors as sources of a download (one blocking client thread each).

pub mod clock;
mod dht;
mod fetch;
mod fetch_collection;
mod handle;
mod limits;
mod secure;
mod seed;
mod send_buffers;
#[allow(unsafe_code)]
mod sys;
mod transport;
mod wake;
mod webseed;

use std::future::Future;
use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use glommio::{LocalExecutorPoolBuilder, PoolPlacement, PoolThreadHandles};

pub use dht::{
    config_for, ping, query, ContactJson, DhtAnswer, DhtError, DhtNodeStats, DhtQuery,
    DhtServerOptions, PingAnswer,
};
pub(crate) use fetch::side_paths;
pub use fetch::{
    resolve_addr, GetError, GetOptions, GetProgress, GetReport, LatencyReport, PeerAddr,
    PeerReport, TransportChoice, WebSeedReport,
};
pub use fetch_collection::{get_collection, record_collection, CollectionReport};
pub use handle::{
    CatalogCounts, DownloadCounters, DownloadId, Handle, Node, NodeActivity, NodeError,
    NodeOptions, NodeStats, ResolvedPeers, TransferStatus,
};
pub use limits::{open_files_limit, raise_open_files_limit, ShardBudget};
pub use secure::{
    load_identity, load_or_create_identity, read_network_secret, HandshakeFailure,
    IdentityFileError, KnownPeers, NodeSecurity,
};
pub use seed::{ConnectionInfo, FileServed, SeedStats, ServedFile, ShardActivity};
pub use transport::{Transport, TurnPassword, TurnServer};
pub use webseed::{parse_web_seed, WebSeedError};

use crate::config::IO_MEMORY_PER_SHARD_BYTES;

/// `0.0.0.0:0`: where an address is needed and none is known (an error's context).
const UNSPECIFIED_ADDR: std::net::SocketAddr =
    std::net::SocketAddr::V4(std::net::SocketAddrV4::new(std::net::Ipv4Addr::UNSPECIFIED, 0));

/// Index of a shard within its node, `0..shards`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ShardId(pub usize);

/// Number of CPUs this process may run on: the default shard count.
pub fn available_cores() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

/// Starts `shards` executors, each pinned to its own CPU when there are enough CPUs (else
/// fenced to all of them), and runs `f(shard_id)` on each.
pub fn spawn_shards<G, F, T>(name: &str, shards: usize, f: G) -> io::Result<PoolThreadHandles<T>>
where
    G: FnOnce(ShardId) -> F + Clone + Send + 'static,
    F: Future<Output = T> + 'static,
    T: Send + 'static,
{
    let placement = match glommio::CpuSet::online() {
        Ok(cpus) if cpus.len() >= shards => PoolPlacement::MaxSpread(shards, Some(cpus)),
        Ok(cpus) if !cpus.is_empty() => PoolPlacement::Fenced(shards, cpus),
        _ => PoolPlacement::Unbound(shards),
    };
    let next = Arc::new(AtomicUsize::new(0));
    LocalExecutorPoolBuilder::new(placement)
        .name(name)
        .io_memory(IO_MEMORY_PER_SHARD_BYTES)
        .on_all_shards(move || {
            let id = ShardId(next.fetch_add(1, Ordering::Relaxed));
            f(id)
        })
        .map_err(glommio_io)
}

/// Runs one future on a fresh single executor on the calling thread (control work such as
/// fetching a manifest before the shards start).
pub fn run_local<F, T>(fut: F) -> io::Result<T>
where
    F: Future<Output = T>,
{
    let ex = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .io_memory(IO_MEMORY_PER_SHARD_BYTES)
        .make()
        .map_err(glommio_io)?;
    Ok(ex.run(fut))
}

/// glommio's error as the OS error it wraps (so its kind, ENOSPC and friends survive), or
/// as text for glommio's own errors.
fn glommio_io<T>(e: glommio::GlommioError<T>) -> io::Error {
    match e {
        glommio::GlommioError::IoError(source)
        | glommio::GlommioError::EnhancedIoError { source, .. } => source,
        other => io::Error::other(other.to_string()),
    }
}

/// Waits until `stop` returns true, checking every `every`.
async fn wait_until(every: Duration, stop: impl Fn() -> bool) {
    while !stop() {
        glommio::timer::sleep(every).await;
    }
}

/// CPU seconds (user + system) used so far by this process's threads whose name starts
/// with `prefix` (a node's [`NodeOptions::name`]), from `/proc/self/task/*/stat`. Threads
/// that already ended are not counted.
pub fn threads_cpu_seconds(prefix: &str) -> f64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else { return 0.0 };
    tasks
        .flatten()
        .filter(|t| {
            let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
            comm.starts_with(prefix)
        })
        .map(|t| stat_cpu_seconds(&t.path().join("stat")))
        .sum()
}

/// CPU seconds (user + system, all threads) this process has used so far.
pub fn process_cpu_seconds() -> f64 {
    stat_cpu_seconds(std::path::Path::new("/proc/self/stat"))
}

/// User + system CPU seconds in a `/proc/.../stat` file (0 if it cannot be read).
fn stat_cpu_seconds(path: &std::path::Path) -> f64 {
    // Fields 14 and 15 are utime and stime in clock ticks, which Linux fixes at 100 per
    // second for user space (USER_HZ).
    let Ok(stat) = std::fs::read_to_string(path) else { return 0.0 };
    let Some(after_comm) = stat.rfind(')').map(|i| &stat[i + 2..]) else { return 0.0 };
    let f: Vec<&str> = after_comm.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    // after_comm starts at field 3 (state): utime is field 14 → index 11.
    (ticks(11) + ticks(12)) as f64 / 100.0
}

#[cfg(test)]
mod tests {
    /// A named thread's CPU is counted under its name's prefix, and only there.
    #[test]
    fn threads_cpu_seconds_counts_the_named_threads() {
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let (busy_tx, busy_rx) = std::sync::mpsc::channel::<()>();
        let burner = std::thread::Builder::new()
            .name("fmtest-burn".into())
            .spawn(move || {
                // Spin until this thread's own CPU shows 50 ms (5 ticks), then stay alive.
                let mut x = 0u64;
                while super::stat_cpu_seconds(std::path::Path::new("/proc/thread-self/stat")) < 0.05
                {
                    x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
                }
                busy_tx.send(()).unwrap();
                done_rx.recv().unwrap();
            })
            .unwrap();
        busy_rx.recv().unwrap();
        assert!(super::threads_cpu_seconds("fmtest-burn") >= 0.05);
        assert_eq!(super::threads_cpu_seconds("fmtest-none"), 0.0);
        done_tx.send(()).unwrap();
        burner.join().unwrap();
    }
}
