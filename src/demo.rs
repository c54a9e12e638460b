//! `furymesh demo`: the first command a newcomer runs. Everything on loopback in a
//! temporary directory, through the real publish, seed and get paths.

use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use rand::{RngCore, SeedableRng};
use serde_json::json;

use crate::config::{
    CHUNK_SIZE_DEFAULT_BYTES, REQUESTS_INFLIGHT_DEFAULT, RESUME_SAVE_DEFAULT_BYTES,
};
use crate::node::{self, GetOptions, SeedOptions, Seeder};
use crate::storage::{self, Catalog};

/// Runs the demo with a generated file of `size` bytes and `shards` shards per side.
pub fn run(size: u64, shards: usize, json: bool) -> Result<i32> {
    let shards = shards.max(1);
    let tmp = tempfile::Builder::new()
        .prefix("furymesh-demo")
        .tempdir()
        .context("cannot create a temporary directory")?;
    let say = |s: String| {
        if !json {
            println!("{s}");
        }
    };
    let data_dir = tmp.path().join("data");
    let src = tmp.path().join("release.img");
    let dst = tmp.path().join("downloaded.img");
    say(format!("1. generating a {} MiB file in {}", size >> 20, tmp.path().display()));
    generate(&src, size)?;

    say("2. publishing it (SHA-256 per 512 KiB chunk, all cores)".into());
    let mut catalog = Catalog::load(&data_dir)?;
    let published = storage::publish(
        &mut catalog,
        std::slice::from_ref(&src),
        CHUNK_SIZE_DEFAULT_BYTES,
        &|_| {},
    );
    let entry = published.into_iter().next().context("publish returned nothing")??.entry;
    let file_id = entry.info.file_id;
    say(format!("   file ID {file_id}"));

    let stop = Arc::new(AtomicBool::new(false));
    let opts = SeedOptions { listen: "127.0.0.1:0".parse()?, shards, dht: None };
    let seeder = Seeder::start(vec![entry], &opts, stop)?;
    say(format!("3. seeding on {} with {shards} shards", seeder.addr()));

    say("4. downloading it with `get` (verify every chunk, write through io_uring)".into());
    let get_opts = GetOptions {
        file_id,
        peer: seeder.addr(),
        output: dst.clone(),
        force: false,
        connections: shards,
        window: REQUESTS_INFLIGHT_DEFAULT,
        save_every_bytes: RESUME_SAVE_DEFAULT_BYTES,
    };
    let report = node::get(&get_opts, &AtomicBool::new(false), &|_| {});
    let stats = seeder.stop();
    let report = report?;

    say("5. comparing the two files byte for byte".into());
    if !same_bytes(&src, &dst)? {
        bail!("downloaded file differs from the original");
    }
    let raw = crate::bench::raw_tcp_copy(&src, &tmp.path().join("raw.img"), shards)?;
    let ratio = report.bytes_per_sec / raw.bytes_per_sec;
    if json {
        println!(
            "{}",
            json!({ "get": report, "seeder": stats, "raw_tcp": raw, "ratio_to_raw_tcp": ratio, "identical": true })
        );
    } else {
        println!("   identical: yes");
        println!(
            "done: {} MiB in {:.2} s = {:.0} MB/s; raw loopback TCP copy of the same file: {:.0} MB/s (ratio {:.2})",
            size >> 20,
            report.seconds,
            report.bytes_per_sec / 1e6,
            raw.bytes_per_sec / 1e6,
            ratio
        );
        println!(
            "seeder: {} chunks, {} payload bytes sent straight from memory maps, {} copied",
            stats.chunks_served, stats.payload_bytes_from_map, stats.payload_bytes_copied
        );
        println!("cleaning up {}", tmp.path().display());
    }
    Ok(0)
}

/// Writes `size` pseudo-random bytes (fixed seed: every demo serves the same file).
fn generate(path: &std::path::Path, size: u64) -> Result<()> {
    let mut rng = rand::rngs::SmallRng::seed_from_u64(0x5eed);
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

fn same_bytes(a: &std::path::Path, b: &std::path::Path) -> Result<bool> {
    let (mut fa, mut fb) = (File::open(a)?, File::open(b)?);
    if fa.metadata()?.len() != fb.metadata()?.len() {
        return Ok(false);
    }
    let (mut ba, mut bb) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    loop {
        let n = fa.read(&mut ba)?;
        if n == 0 {
            return Ok(true);
        }
        fb.read_exact(&mut bb[..n])?;
        if ba[..n] != bb[..n] {
            return Ok(false);
        }
    }
}
