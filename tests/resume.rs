//! `kill -9` of `get` at random instants, then resume: byte-identical result, and chunks the
//! resume state marks verified are really on disk and are never fetched again.

// These tests run real processes on real time: their deadlines read the clock directly
// (clippy.toml confines clock reads to node::clock inside the crate, not in tests).
#![allow(clippy::disallowed_methods)]

mod common;

use std::fs;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;
use furymesh::crypto::chunk_hash;

const CHUNK: u64 = 64 * 1024;
const CONNECTIONS: u64 = 2;
const WINDOW: u64 = 4;
const SAVE_EVERY: u64 = 1 << 20;

#[test]
fn kill_9_at_random_points_then_resume_gives_an_identical_file() {
    let mut seed = std::env::var("RESUME_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| std::process::id() as u64 * 0x9e37_79b9 + 1);
    eprintln!("RESUME_SEED={seed}");
    let t = tempdir();
    let data = t.path().join("data");
    let f = t.path().join("big.bin");
    let size = 96u64 << 20;
    let original = write_file(&f, size as usize, 77);
    let id = publish_id(&data, &f, &["--chunk-size", "64KiB"]);
    let seeder = Seeder::start(&data, 2);
    let out = t.path().join("out.bin");
    let resume = t.path().join("out.bin.furymesh-resume");
    let partial = t.path().join("out.bin.furymesh-partial");
    let get = || {
        let mut c = get_cmd(&data, &id, &seeder.peer(), &out);
        c.args(["--connections", &CONNECTIONS.to_string(), "--window", &WINDOW.to_string()]);
        c.args(["--save-every", &SAVE_EVERY.to_string()]);
        c.stdout(Stdio::piped()).stderr(Stdio::piped());
        c
    };

    // Time one full run to aim the kills inside a download.
    let started = Instant::now();
    run_ok(&mut get());
    let full = started.elapsed().max(Duration::from_millis(50));
    fs::remove_file(&out).unwrap();
    let mut served_before = size;

    let chunks = size / CHUNK;
    let mut kills = 0u64;
    let mut verified_before_last = 0u64;
    let mut finished = None;
    while kills < 8 {
        let mut child = get().spawn().unwrap();
        // Kill at a random point of what is left: once the resume state has reached a
        // random share of the remaining chunks, plus a random sub-interval delay.
        let left = chunks - verified_before_last;
        let target = verified_before_last + xorshift(&mut seed) % (left / 2).max(1);
        let deadline = Instant::now() + full * 4;
        while verified_in(&resume) < target && Instant::now() < deadline {
            if child.try_wait().unwrap().is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        std::thread::sleep(Duration::from_micros(xorshift(&mut seed) % 5_000));
        if child.try_wait().unwrap().is_some() {
            finished = Some(child.wait_with_output().unwrap());
            break;
        }
        child.kill().unwrap(); // SIGKILL
        let status = child.wait().unwrap();
        if status.success() {
            // It finished between the check and the signal.
            finished = Some(get().output().unwrap());
            break;
        }
        if out.exists() {
            // Killed after the final rename, before exiting: the download had finished, and
            // the final name may only ever hold the whole verified file. Start over.
            assert!(fs::read(&out).unwrap() == original, "final name holds a wrong file");
            fs::remove_file(&out).unwrap();
            served_before += size;
            verified_before_last = 0;
            continue;
        }
        kills += 1;
        // Whatever the resume state calls verified must be on disk and correct.
        if let Ok(state) = fs::read(&resume) {
            let (info, bits) = furymesh::wire::decode_resume(&state).expect("resume state decodes");
            let disk = fs::read(&partial).unwrap();
            let mut n = 0;
            for i in 0..info.chunk_count() {
                if bits[(i / 8) as usize] & (1 << (i % 8)) != 0 {
                    let r = info.chunk_range(i);
                    let got = chunk_hash(&disk[r.start as usize..r.end as usize]);
                    assert_eq!(got, info.chunk_hashes[i as usize], "chunk {i} marked verified");
                    n += 1;
                }
            }
            verified_before_last = n;
        }
    }
    eprintln!("killed {kills} times; {verified_before_last} chunks verified before the last run");
    let last = match finished {
        Some(out) => out,
        None => get().output().unwrap(),
    };
    assert!(last.status.success(), "{}", stderr_of(&last));
    let report = json(&last);
    assert!(kills >= 3, "too few kills landed inside the download to mean anything");
    assert!(fs::read(&out).unwrap() == original, "resumed file differs");
    assert!(!resume.exists() && !partial.exists());
    // The last run fetched exactly what was neither recorded nor found correct on disk.
    assert_eq!(report["chunks_reused"], verified_before_last);
    let reverified = report["chunks_reverified"].as_u64().unwrap();
    assert_eq!(
        report["chunks_fetched"].as_u64().unwrap() + verified_before_last + reverified,
        chunks
    );

    // Across all runs, each kill cost at most what was in flight: the requests of every
    // connection's window, and the verified chunks whose writes had not completed. Chunks
    // written but not yet recorded are found by hashing, not fetched again.
    let stats = seeder.stop();
    let served = served_bytes(&stats) - served_before;
    let per_kill = CONNECTIONS * (WINDOW + furymesh::config::WRITES_INFLIGHT_MAX) * CHUNK;
    assert!(
        served <= size + kills * per_kill,
        "served {served} bytes for a {size}-byte file with {kills} kills (bound {per_kill} per kill)"
    );
}

/// A run killed between two saves of its resume state leaves verified chunks on disk that
/// the state does not record. The next run hashes them instead of fetching them again: the
/// seeder serves exactly the chunks that are missing or wrong on disk (a hole, a torn
/// chunk), a chunk of genuine zeros counts only because its hash says so, and the file is
/// byte-identical.
#[test]
fn chunks_written_but_not_recorded_are_reverified_instead_of_fetched() {
    use std::os::unix::fs::FileExt;
    let t = tempdir();
    let data = t.path().join("data");
    let f = t.path().join("f.bin");
    let chunk = CHUNK as usize;
    let mut original = pattern(64 * chunk - 1000, 31);
    // Chunk 6 is zeros in the source: left as a hole on disk, it must still count.
    original[6 * chunk..7 * chunk].fill(0);
    fs::write(&f, &original).unwrap();
    let id = publish_id(&data, &f, &["--chunk-size", "64KiB"]);
    let out = t.path().join("out.bin");
    let resume = t.path().join("out.bin.furymesh-resume");
    let partial = t.path().join("out.bin.furymesh-partial");

    // A first run, killed with SIGKILL once it has its manifest and resume state.
    let slow = Seeder::start_with_args(&data, 1, &["--max-upload-rate", "256KiB"]);
    let mut child = get_cmd(&data, &id, &slow.peer(), &out)
        .args(["--connections", "1", "--window", "2"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let state = loop {
        let state = fs::read(&resume).ok().and_then(|b| furymesh::wire::decode_resume(&b).ok());
        if let Some(state) = state {
            break state;
        }
        assert!(Instant::now() < deadline, "no resume state within 30 s");
        std::thread::sleep(Duration::from_millis(1));
    };
    child.kill().unwrap();
    child.wait().unwrap();
    drop(slow);
    let info = state.0;
    let n = info.chunk_count();
    assert_eq!(n, 64);

    // Lay out the partial file and a lagging state by hand: chunks 0..8 recorded; of the
    // rest, by index mod 4: 0 and 1 written correctly but unrecorded, 2 never written
    // (zeros), 3 torn (one byte off).
    let mut bits = vec![0u8; (n as usize).div_ceil(8)];
    let file = fs::OpenOptions::new().write(true).open(&partial).unwrap();
    let (mut recorded, mut reverified, mut fetched) = (0u64, 0u64, 0u64);
    for i in 0..n {
        let r = info.chunk_range(i);
        let good = &original[r.start as usize..r.end as usize];
        let mut disk = good.to_vec();
        if i < 8 {
            bits[(i / 8) as usize] |= 1 << (i % 8);
            recorded += 1;
        } else {
            match i % 4 {
                0 | 1 => reverified += 1,
                2 => {
                    disk.fill(0);
                    if disk == good {
                        reverified += 1;
                    } else {
                        fetched += 1;
                    }
                }
                _ => {
                    disk[100] ^= 0x40;
                    fetched += 1;
                }
            }
        }
        file.write_all_at(&disk, r.start).unwrap();
    }
    drop(file);
    fs::write(&resume, furymesh::wire::encode_resume(&info, &bits)).unwrap();

    let seeder = Seeder::start(&data, 1);
    let report = json(&run_ok(get_cmd(&data, &id, &seeder.peer(), &out).args([
        "--connections",
        "1",
        "--window",
        "2",
    ])));
    let stats = seeder.stop();
    assert!(fs::read(&out).unwrap() == original, "resumed file differs");
    assert_eq!(report["chunks_reused"], recorded, "{report}");
    assert_eq!(report["chunks_reverified"], reverified, "{report}");
    assert_eq!(report["chunks_fetched"], fetched, "{report}");
    assert_eq!(stats["chunks_served"], fetched, "the seeder served more than what was missing");
}

#[test]
fn ctrl_c_saves_state_and_the_same_command_resumes() {
    let t = tempdir();
    let data = t.path().join("data");
    let f = t.path().join("f.bin");
    let original = write_file(&f, 64 << 20, 8);
    let id = publish_id(&data, &f, &["--chunk-size", "64KiB"]);
    // Slowed to 16 MiB/s so the 64 MiB download is still running when the signal lands.
    let seeder = Seeder::start_with_args(&data, 2, &["--max-upload-rate", "16MiB"]);
    let out = t.path().join("out.bin");
    let resume = t.path().join("out.bin.furymesh-resume");
    let get = || {
        let mut c = get_cmd(&data, &id, &seeder.peer(), &out);
        c.args(["--connections", "1", "--window", "2", "--save-every", "1MiB"]);
        c.stdout(Stdio::piped()).stderr(Stdio::piped());
        c
    };
    let child = get().spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while verified_in(&resume) == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    signal(child.id(), "INT");
    let r = child.wait_with_output().unwrap();
    assert_eq!(r.status.code(), Some(130), "{}", stderr_of(&r));
    assert!(stderr_of(&r).contains("interrupted"), "{}", stderr_of(&r));
    let saved = verified_in(&resume);
    assert!(saved > 0);
    let report = json(&run_ok(&mut get()));
    assert_eq!(report["chunks_reused"], saved);
    assert!(fs::read(&out).unwrap() == original);
}
