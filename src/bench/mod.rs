//! Load generation and the limits figures are compared against.
//!
//! `raw_tcp_copy` is the ceiling for `get` over loopback: the same bytes, sent straight from
//! a memory map over plain TCP and written to a file, with no framing, hashing or
//! FlatBuffers. Public API only; no protocol logic.

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};
use serde::Serialize;

use crate::node::clock;
use crate::storage::MappedFile;

mod harness;

pub use harness::{run as run_scenario, table, write_out, BenchReport, Scenario};

/// Bytes per read/write call of the raw copy.
const RAW_IO_BYTES: usize = 1 << 20;

/// Throughput of one primitive on one core.
#[derive(Debug, Clone, Serialize)]
pub struct PrimitiveReport {
    pub name: &'static str,
    pub bytes: u64,
    pub seconds: f64,
    pub bytes_per_sec: f64,
}

/// SHA-256 (the chunk hash) over `total` bytes in 512 KiB chunks on the calling thread: the
/// per-core limit of chunk verification.
pub fn sha256_throughput(total: u64) -> PrimitiveReport {
    let chunk = vec![0x5au8; crate::config::CHUNK_SIZE_DEFAULT_BYTES as usize];
    let rounds = total.div_ceil(chunk.len() as u64).max(1);
    let started = clock::now();
    let mut acc = 0u8;
    for _ in 0..rounds {
        acc ^= crate::crypto::chunk_hash(std::hint::black_box(&chunk))[0];
    }
    std::hint::black_box(acc);
    let seconds = started.elapsed().as_secs_f64();
    let bytes = rounds * chunk.len() as u64;
    PrimitiveReport { name: "sha256", bytes, seconds, bytes_per_sec: bytes as f64 / seconds }
}

/// Writes `size` pseudo-random bytes from `seed` to `path` (demo and bench files; the same
/// seed gives the same file) and syncs it.
pub fn generate_file(path: &Path, size: u64, seed: u64) -> Result<()> {
    use rand::{RngCore, SeedableRng};
    let mut rng = rand::rngs::SmallRng::seed_from_u64(seed);
    let mut w = BufWriter::with_capacity(1 << 20, File::create(path)?);
    let mut block = vec![0u8; 1 << 20];
    let mut left = size;
    while left > 0 {
        let n = left.min(block.len() as u64) as usize;
        rng.fill_bytes(&mut block[..n]);
        w.write_all(&block[..n])?;
        left -= n as u64;
    }
    w.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    Ok(())
}

/// Result of one raw copy.
#[derive(Debug, Clone, Serialize)]
pub struct RawTcpReport {
    pub bytes: u64,
    pub connections: usize,
    pub seconds: f64,
    pub bytes_per_sec: f64,
    pub cpu_seconds: f64,
}

/// Copies `src` to `dst` over `connections` loopback TCP connections (equal byte ranges),
/// sender and receiver threads in this process, and fdatasyncs `dst` before the clock stops.
pub fn raw_tcp_copy(src: &Path, dst: &Path, connections: usize) -> Result<RawTcpReport> {
    let connections = connections.max(1);
    let file = File::open(src).with_context(|| format!("cannot open {}", src.display()))?;
    // SAFETY: the mapped bytes only ever reach `write(2)` on a socket below (the kernel
    // reads them; a page lost to truncation is EFAULT there), the same contract as the
    // seeder's plaintext path this baseline stands in for.
    #[allow(unsafe_code)]
    let map = Arc::new(unsafe { MappedFile::open(file) }?);
    let size = map.len() as u64;
    let out = OpenOptions::new().create(true).write(true).truncate(true).open(dst)?;
    out.set_len(size)?;
    let out = Arc::new(out);
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let per = size.div_ceil(connections as u64);
    let cpu0 = crate::node::process_cpu_seconds();
    let started = clock::now();
    let mut threads = Vec::new();
    for i in 0..connections as u64 {
        let (start, end) = ((i * per).min(size), ((i + 1) * per).min(size));
        let map = map.clone();
        threads.push(std::thread::spawn(move || -> io::Result<()> {
            let mut s = TcpStream::connect(addr)?;
            s.write_all(&start.to_le_bytes())?;
            for piece in map.bytes()[start as usize..end as usize].chunks(RAW_IO_BYTES) {
                s.write_all(piece)?;
            }
            Ok(())
        }));
    }
    for _ in 0..connections {
        let (mut s, _) = listener.accept()?;
        let out = out.clone();
        threads.push(std::thread::spawn(move || -> io::Result<()> {
            let mut off = [0u8; 8];
            s.read_exact(&mut off)?;
            let mut pos = u64::from_le_bytes(off);
            let mut buf = vec![0u8; RAW_IO_BYTES];
            loop {
                let n = s.read(&mut buf)?;
                if n == 0 {
                    return Ok(());
                }
                out.write_all_at(&buf[..n], pos)?;
                pos += n as u64;
            }
        }));
    }
    for t in threads {
        t.join().map_err(|_| anyhow::anyhow!("a copy thread panicked"))??;
    }
    out.sync_data()?;
    let seconds = started.elapsed().as_secs_f64();
    Ok(RawTcpReport {
        bytes: size,
        connections,
        seconds,
        bytes_per_sec: size as f64 / seconds,
        cpu_seconds: crate::node::process_cpu_seconds() - cpu0,
    })
}
