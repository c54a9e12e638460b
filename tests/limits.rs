//! Limits and timeouts that follow the configured rate and the chunk size (issue 12, item
//! 4): a chunk that takes longer than `PEER_TIMEOUT` to send at the configured rate still
//! arrives, because the seeder paces it in pieces and the downloader's timeouts count
//! bytes, not whole chunks. Real seeders and downloaders on loopback; the only thing
//! checked is that every download completes with the right bytes (how close the rates come
//! to their limits is measured by `scripts/bench-throttle`, figures in tuning.md).

mod common;

use std::fs;
use std::path::Path;

use common::*;

/// One download under a limit: a file of `file_bytes` published with `--chunk-size
/// chunk_size`, so each chunk takes longer than `PEER_TIMEOUT` (10 s) at the rate.
struct Case {
    name: &'static str,
    file_bytes: usize,
    chunk_size: &'static str,
    seed_args: &'static [&'static str],
    get_args: &'static [&'static str],
}

fn run_case(dir: &Path, n: u64, c: &Case) {
    let (sd, cd) = (dir.join("seed"), dir.join("client"));
    let src = dir.join("f");
    let data = write_file(&src, c.file_bytes, 40 + n);
    let id = publish_id(&sd, &src, &["--chunk-size", c.chunk_size]);
    let seeder = Seeder::start_with_args(&sd, 2, c.seed_args);
    let out = dir.join("out");
    let got = get_cmd(&cd, &id, &seeder.peer(), &out).args(c.get_args).output().unwrap();
    assert!(got.status.success(), "{}: get failed ({}): {}", c.name, got.status, stderr_of(&got));
    assert!(fs::read(&out).unwrap() == data, "{}: wrong bytes", c.name);
    let report = json(&got);
    assert_eq!(report["bytes"].as_u64(), Some(c.file_bytes as u64), "{}", c.name);
    let stats = seeder.stop();
    assert!(served_bytes(&stats) >= c.file_bytes as u64, "{}: {stats}", c.name);
}

/// Rates from 10 KB/s to 1 MiB/s, chunks from 140 KB to 16 MiB, sealed and plaintext,
/// node-wide, per-connection and download limits: every chunk takes 13 to 16 s at its
/// rate, more than `PEER_TIMEOUT`. The cases run at once (the limits leave the CPU idle),
/// so the test takes about as long as the slowest one.
#[test]
fn chunks_slower_than_the_peer_timeout_complete_at_every_rate() {
    let cases = [
        Case {
            name: "upload 10 KB/s, a 140 KB chunk of a 16 MiB-chunk file, sealed",
            file_bytes: 140_000,
            chunk_size: "16MiB",
            seed_args: &["--max-upload-rate", "10KB"],
            get_args: &[],
        },
        Case {
            name: "upload 1 MiB/s, one whole 16 MiB chunk, plaintext",
            file_bytes: 16 << 20,
            chunk_size: "16MiB",
            seed_args: &["--max-upload-rate", "1MiB", "--encryption", "off"],
            get_args: &["--encryption", "off"],
        },
        Case {
            name: "per-connection upload 20 KB/s, one 256 KiB chunk, sealed",
            file_bytes: 256 << 10,
            chunk_size: "256KiB",
            seed_args: &["--max-peer-upload-rate", "20KB"],
            get_args: &["--connections", "1"],
        },
        Case {
            name: "download 200 KB/s, a 3.2 MB chunk of a 16 MiB-chunk file, sealed",
            file_bytes: 3_200_000,
            chunk_size: "16MiB",
            seed_args: &[],
            get_args: &["--max-download-rate", "200KB"],
        },
    ];
    let dir = tempdir();
    std::thread::scope(|s| {
        for (n, c) in cases.iter().enumerate() {
            let d = dir.path().join(n.to_string());
            s.spawn(move || run_case(&d, n as u64, c));
        }
    });
}
