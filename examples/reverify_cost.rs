//! What re-verifying a partial file costs when `get` resumes (`storage::reverify_chunks`),
//! for the figures in tuning.md.
//!
//! Usage: `reverify_cost DIR [SIZE_MIB] [CHUNK_KIB]` (defaults 512 and 256)
//!
//! Writes a file of pseudo-random bytes under DIR and times re-verifying every chunk of it
//! three ways: a fresh `fallocate`d partial file (nothing written: holes), the same size
//! written with zeros (a file system that cannot report holes), and the whole file written
//! correctly (every chunk hashed, from the page cache). Also times SHA-256 of the same bytes
//! on one thread, the reference. Deletes what it wrote.

use std::fs::{self, File};
use std::path::Path;

use furymesh::crypto::{chunk_hash, FileId};
use furymesh::manifest::FileInfo;
use furymesh::node::clock;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let dir = Path::new(args.get(1).map(String::as_str).unwrap_or("."));
    let mib: u64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(512);
    let chunk: u32 = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(256) * 1024;
    let size = mib << 20;
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let data: Vec<u8> = (0..size / 8)
        .flat_map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x.to_le_bytes()
        })
        .collect();
    let chunk_hashes: Vec<_> = data.chunks(chunk as usize).map(chunk_hash).collect();
    let info = FileInfo {
        file_id: FileId::from_manifest(size, chunk, &chunk_hashes),
        name: "reverify".into(),
        size,
        chunk_size: chunk,
        creation_time: 0,
        chunk_hashes,
    };
    let all: Vec<u32> = (0..info.chunk_count()).collect();
    let path = dir.join("furymesh-reverify-cost.bin");
    let time = |what: &str| {
        let t = clock::now();
        let found = furymesh::storage::reverify_chunks(&path, &info, &all).expect("reverify");
        let s = t.elapsed().as_secs_f64();
        println!(
            "{what}: {} of {} chunks match, {s:.3} s ({:.0} MiB/s)",
            found.len(),
            all.len(),
            mib as f64 / s
        );
    };
    let _ = fs::remove_file(&path);
    let f = File::create(&path).expect("create");
    rustix::fs::fallocate(&f, rustix::fs::FallocateFlags::empty(), 0, size).expect("fallocate");
    drop(f);
    time("fallocated, never written");
    fs::write(&path, vec![0u8; size as usize]).expect("write zeros");
    time("written with zeros");
    fs::write(&path, &data).expect("write");
    time("written correctly");
    let t = clock::now();
    for c in data.chunks(chunk as usize) {
        std::hint::black_box(chunk_hash(c));
    }
    let s = t.elapsed().as_secs_f64();
    println!("SHA-256 on one thread, in memory: {s:.3} s ({:.0} MiB/s)", mib as f64 / s);
    fs::remove_file(&path).expect("remove");
}
