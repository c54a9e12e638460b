//! `get ID -o -`: the file streamed to standard output in order as its chunks verify,
//! through real pipes into real readers (`sha256sum`, a reader that quits early).

mod common;

use std::fs;
use std::io::Read;
use std::process::{Command, Stdio};

use common::*;

const CHUNK: usize = 64 * 1024;

/// `sha256sum`'s hex digest of `bytes` (the reference side of the comparison).
fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(bytes))
}

/// Runs `get ID -o -` from `peers` piped into `sha256sum`; returns sha256sum's digest and
/// the get's stderr (its --json report), asserting both exit 0.
fn stream_into_sha256sum(
    data_dir: &std::path::Path,
    id: &str,
    peers: &[String],
) -> (String, String) {
    let mut get = fm(data_dir);
    get.args(["--json", "get", id, "-o", "-"]);
    for p in peers {
        get.args(["--peer", p]);
    }
    let mut get = get.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let pipe = get.stdout.take().unwrap();
    let sum = Command::new("sha256sum").stdin(Stdio::from(pipe)).output().unwrap();
    let out = get.wait_with_output().unwrap();
    let stderr = stderr_of(&out);
    assert!(out.status.success(), "get -o - failed ({}): {stderr}", out.status);
    assert!(sum.status.success());
    let digest = String::from_utf8(sum.stdout).unwrap();
    (digest.split_whitespace().next().unwrap().to_owned(), stderr)
}

/// The --json report a streaming get printed on stderr (its last line).
fn report(stderr: &str) -> serde_json::Value {
    let line = stderr.lines().rev().find(|l| l.starts_with('{')).expect("a JSON report on stderr");
    serde_json::from_str(line).unwrap()
}

#[test]
fn get_to_stdout_piped_into_sha256sum_matches_from_one_and_from_two_seeders() {
    let t = tempdir();
    let f = t.path().join("f.bin");
    // Not a whole number of chunks, and several reorder windows' worth of none: 80 chunks.
    let bytes = write_file(&f, 80 * CHUNK - 17, 61);
    let want = sha256_hex(&bytes);
    let (d1, d2) = (t.path().join("s1"), t.path().join("s2"));
    let id = publish_id(&d1, &f, &["--chunk-size", "64KiB"]);
    publish(&d2, &[&f], &["--chunk-size", "64KiB"]);
    let s1 = Seeder::start(&d1, 1);
    let (digest, stderr) = stream_into_sha256sum(&t.path().join("g1"), &id, &[s1.peer()]);
    assert_eq!(digest, want, "one seeder: {stderr}");
    let r = report(&stderr);
    assert_eq!(r["file_size"], bytes.len() as u64);
    assert_eq!(r["chunks_fetched"], 80);

    let s2 = Seeder::start(&d2, 1);
    let dl = t.path().join("g2");
    let (digest, stderr) = stream_into_sha256sum(&dl, &id, &[s1.peer(), s2.peer()]);
    assert_eq!(digest, want, "two seeders: {stderr}");
    let r = report(&stderr);
    let chunks: u64 =
        r["peers"].as_array().unwrap().iter().map(|p| p["chunks"].as_u64().unwrap()).sum();
    assert!(chunks >= 80, "every chunk came from some seeder: {r}");
    // Nothing was left on disk: no partial file, no resume state, no catalog entry.
    let leftovers: Vec<_> = fs::read_dir(t.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("furymesh-") || n == "-")
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn a_reader_that_goes_away_ends_the_stream_with_exit_141_and_no_panic() {
    let t = tempdir();
    let f = t.path().join("f.bin");
    // Far more than a pipe buffer holds, so a write after the reader is gone must fail.
    let bytes = write_file(&f, 64 * CHUNK, 62);
    let data = t.path().join("s");
    let id = publish_id(&data, &f, &["--chunk-size", "64KiB"]);
    let s = Seeder::start(&data, 1);
    let mut get = fm(&t.path().join("g"))
        .args(["get", &id, "--peer", &s.peer(), "-o", "-"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = vec![0u8; 1000];
    let mut out = get.stdout.take().unwrap();
    out.read_exact(&mut first).unwrap();
    assert!(first == bytes[..1000], "the stream starts with the file's first bytes");
    drop(out);
    let done = get.wait_with_output().unwrap();
    let stderr = stderr_of(&done);
    assert_eq!(done.status.code(), Some(141), "{stderr}");
    assert!(stderr.contains("closed by its reader"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn a_collection_is_not_streamed() {
    let t = tempdir();
    let src = t.path().join("tree");
    write_file(&src.join("a.bin"), 1000, 63);
    write_file(&src.join("d/b.bin"), 2000, 64);
    let data = t.path().join("s");
    let rows = publish_rows(&data, &[&src], &[]);
    let cid = rows
        .iter()
        .find_map(|r| r.get("collection_id"))
        .and_then(|v| v.as_str())
        .expect("a collection row")
        .to_owned();
    // Refused before any peer is asked: none listens there.
    let out = fm(&t.path().join("g"))
        .args(["get", &cid, "--peer", "127.0.0.1:1", "-o", "-"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty(), "nothing on stdout");
    assert!(
        stderr_of(&out).contains("cannot be streamed to standard output"),
        "{}",
        stderr_of(&out)
    );
}
