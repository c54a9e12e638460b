//! The map contract under a file that changes while it is served: an operator truncates a
//! published file or copies a new release over it (`cp` opens with `O_TRUNC`) while a
//! download of it runs. Whatever the timing, encryption on or off, throttled or not, the
//! seeder must stay up and keep serving its other files, and the downloader must end with
//! either the right bytes or a clear error, never wrong bytes under the final name.
//!
//! Before the contract was fixed, the sealed path read mapped pages in user space and a
//! truncation killed the seeder with SIGBUS (exit 135).

// These tests run real processes on real time: their deadlines read the clock directly
// (clippy.toml confines clock reads to node::clock inside the crate, not in tests).
#![allow(clippy::disallowed_methods)]

mod common;

use std::fs;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;

#[derive(Clone, Copy, Debug)]
enum Change {
    /// `truncate -s 0`: every later page is past the end of the file.
    Truncate,
    /// Same as `cp other file`: truncate, then write different (shorter) content.
    Overwrite,
}

fn change(path: &Path, how: Change) {
    match how {
        Change::Truncate => {
            fs::OpenOptions::new().write(true).open(path).and_then(|f| f.set_len(0)).unwrap()
        }
        Change::Overwrite => fs::write(path, pattern(300_000, 99)).unwrap(),
    }
}

fn case(encryption: &str, throttled: bool, how: Change) {
    let t = tempdir();
    let data = t.path().join("seed");
    let big = t.path().join("release.iso");
    let original = write_file(&big, 8 << 20, 7);
    let other = t.path().join("other.bin");
    let other_bytes = write_file(&other, 1 << 20, 8);
    let ids: Vec<String> = publish(&data, &[&big, &other], &["--chunk-size", "256KiB"])
        .iter()
        .map(|e| e["file_id"].as_str().unwrap().to_owned())
        .collect();
    let mut args = vec!["--encryption", encryption];
    if throttled {
        // 8 MiB at 2 MiB/s: the change lands mid-download, often during a throttle wait.
        args.extend(["--max-peer-upload-rate", "2MiB"]);
    }
    let mut seeder = Seeder::start_with_args(&data, 2, &args);

    let client = t.path().join("client");
    let out = t.path().join("got.iso");
    let mut get = get_cmd(&client, &ids[0], &seeder.peer(), &out)
        .args(["--encryption", encryption])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Let the download get going, then change the file under it.
    std::thread::sleep(Duration::from_millis(if throttled { 700 } else { 30 }));
    change(&big, how);

    let deadline = Instant::now() + Duration::from_secs(120);
    while get.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "{encryption}/{throttled}/{how:?}: get did not end");
        assert!(seeder.is_running(), "{encryption}/{throttled}/{how:?}: the seeder died");
        std::thread::sleep(Duration::from_millis(50));
    }
    let result = get.wait_with_output().unwrap();
    let stderr = stderr_of(&result);
    if result.status.success() {
        // Finished before the change reached it (or entirely from chunks read before it).
        assert!(fs::read(&out).unwrap() == original, "wrong bytes under the final name");
    } else {
        assert!(!out.exists(), "a failed download left a file under the final name");
        assert!(
            stderr.contains("changed on disk"),
            "{encryption}/{throttled}/{how:?}: unclear error: {stderr}"
        );
    }
    assert!(seeder.is_running(), "{encryption}/{throttled}/{how:?}: the seeder died");

    // The seeder still serves its other file, byte-identical.
    let out2 = t.path().join("other.got");
    run_ok(get_cmd(&client, &ids[1], &seeder.peer(), &out2).args(["--encryption", encryption]));
    assert!(fs::read(&out2).unwrap() == other_bytes);
    // And it stops cleanly, with the changed file counted as refusals, not crashes.
    let stats = seeder.stop();
    assert!(stats["chunks_served"].as_u64().unwrap() >= 4, "{stats}");
}

#[test]
fn encrypted_throttled_truncate() {
    case("on", true, Change::Truncate);
}

#[test]
fn encrypted_throttled_overwrite() {
    case("on", true, Change::Overwrite);
}

#[test]
fn encrypted_unthrottled_truncate() {
    case("on", false, Change::Truncate);
}

#[test]
fn encrypted_unthrottled_overwrite() {
    case("on", false, Change::Overwrite);
}

#[test]
fn plaintext_throttled_truncate() {
    case("off", true, Change::Truncate);
}

#[test]
fn plaintext_throttled_overwrite() {
    case("off", true, Change::Overwrite);
}

#[test]
fn plaintext_unthrottled_truncate() {
    case("off", false, Change::Truncate);
}

#[test]
fn plaintext_unthrottled_overwrite() {
    case("off", false, Change::Overwrite);
}
