//! End to end through the real binary: publish, seed, get over loopback.

mod common;

use std::fs;
use std::path::Path;

use common::*;

const CHUNK: usize = 64 * 1024;

/// Edge sizes around the chunk boundary plus a large file, each downloaded byte-identical
/// from one seeder with two shards, with the seeder's zero-copy counters checked.
#[test]
fn files_of_every_edge_size_download_identical() {
    let t = tempdir();
    let data = t.path().join("data");
    let src = t.path().join("src");
    let sizes = [0, 1, CHUNK, CHUNK + 1, 64 << 20];
    let mut files = Vec::new();
    for (i, &size) in sizes.iter().enumerate() {
        let p = src.join(format!("f{size}"));
        let bytes = write_file(&p, size, i as u64);
        files.push((p, bytes));
    }
    let paths: Vec<&Path> = files.iter().map(|(p, _)| p.as_path()).collect();
    let published = publish(&data, &paths, &["--chunk-size", "64KiB"]);
    assert_eq!(published.len(), sizes.len());
    for (entry, &size) in published.iter().zip(&sizes) {
        // The JSON contract of `publish --json`.
        let id = entry["file_id"].as_str().unwrap();
        assert_eq!(id.len(), 64);
        assert!(id.bytes().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        assert_eq!(entry["size"], size as u64);
        assert_eq!(entry["chunk_size"], CHUNK as u64);
        assert_eq!(entry["chunks"], size.div_ceil(CHUNK) as u64);
        assert!(Path::new(entry["path"].as_str().unwrap()).is_absolute());
    }
    let seeder = Seeder::start(&data, 2);
    let dl = t.path().join("dl");
    fs::create_dir_all(&dl).unwrap();
    let mut total = 0u64;
    for (entry, (_, bytes)) in published.iter().zip(&files) {
        let id = entry["file_id"].as_str().unwrap();
        let out_path = dl.join(id);
        let out = run_ok(&mut get_cmd(&data, id, &seeder.peer(), &out_path));
        let report = json(&out);
        assert_eq!(report["file_id"], id);
        assert_eq!(report["bytes"], bytes.len() as u64);
        assert_eq!(report["chunks_fetched"], bytes.len().div_ceil(CHUNK) as u64);
        assert_eq!(report["chunks_reused"], 0);
        assert!(report["seconds"].as_f64().unwrap() >= 0.0);
        assert!(report["bytes_per_sec"].as_f64().is_some());
        assert!(fs::read(&out_path).unwrap() == *bytes, "{id} differs");
        // Nothing left next to the output.
        assert_eq!(
            paths_in(&dl).iter().filter(|p| p.to_string_lossy().contains(".furymesh-")).count(),
            0
        );
        total += bytes.len() as u64;
    }
    let stats = seeder.stop();
    // Encrypted (the default): every payload byte went from a map through the cipher into
    // the send buffer in one pass (endgame duplicates included, hence ≥), none copied first.
    assert!(stats["payload_bytes_sealed"].as_u64().unwrap() >= total, "{stats}");
    assert_eq!(stats["payload_bytes_from_map"], 0);
    assert_eq!(stats["bad_frames"], 0);
    assert_eq!(stats["handshakes_failed"], 0);
}

#[test]
fn a_directory_of_200_small_files_publishes_and_downloads() {
    let t = tempdir();
    let data = t.path().join("data");
    let tree = t.path().join("tree");
    let mut originals = std::collections::HashMap::new();
    for i in 0..200u64 {
        let p = tree.join(format!("d{}", i % 7)).join(format!("file-{i}.bin"));
        let bytes = write_file(&p, (i as usize * 977) % 20_000 + 1, 1000 + i);
        originals.insert(fs::canonicalize(&p).unwrap(), bytes);
    }
    let published = publish(&data, &[&tree], &[]);
    assert_eq!(published.len(), 200);
    // Plaintext, as a public mirror would run: payload goes from the maps to the socket
    // with no user-space copy.
    let seeder = Seeder::start_with_args(&data, 2, &["--encryption", "off"]);
    let mut total = 0;
    for (n, e) in published.iter().enumerate() {
        let id = e["file_id"].as_str().unwrap();
        let out = t.path().join(format!("out-{n}"));
        run_ok(get_cmd(&data, id, &seeder.peer(), &out).args(["--encryption", "off"]));
        let want = &originals[Path::new(e["path"].as_str().unwrap())];
        assert!(fs::read(&out).unwrap() == *want);
        total += want.len() as u64;
    }
    let stats = seeder.stop();
    assert_eq!(stats["manifests_served"], 200);
    assert!(stats["payload_bytes_from_map"].as_u64().unwrap() >= total, "{stats}");
    assert_eq!(stats["payload_bytes_sealed"], 0);
}

#[test]
fn republishing_an_unchanged_file_reuses_its_id_and_a_changed_one_gets_a_new_id() {
    let t = tempdir();
    let data = t.path().join("data");
    let f = t.path().join("a.bin");
    write_file(&f, 300_000, 5);
    let first = publish(&data, &[&f], &[]);
    let again = run_ok(fm(&data).args(["publish"]).arg(&f));
    assert!(String::from_utf8_lossy(&again.stdout).contains("(1 unchanged)"));
    let second = publish(&data, &[&f], &[]);
    assert_eq!(first[0]["file_id"], second[0]["file_id"]);
    append(&f, b"more");
    let third = publish(&data, &[&f], &[]);
    assert_ne!(first[0]["file_id"], third[0]["file_id"]);
    // One entry per path: the changed file replaced its old manifest.
    let ls = json(&run_ok(fm(&data).args(["--json", "ls"])));
    assert_eq!(ls.as_array().unwrap().len(), 1);
    assert_eq!(ls[0]["file_id"], third[0]["file_id"]);
}

#[test]
fn get_fails_clearly_for_unknown_files_unreachable_peers_and_existing_outputs() {
    let t = tempdir();
    let data = t.path().join("data");
    let f = t.path().join("a.bin");
    let bytes = write_file(&f, 100_000, 9);
    let id = publish_id(&data, &f, &[]);
    let seeder = Seeder::start(&data, 1);
    let out = t.path().join("out");

    let unknown = "ab".repeat(32);
    let r = get_cmd(&data, &unknown, &seeder.peer(), &out).output().unwrap();
    assert!(!r.status.success());
    assert!(stderr_of(&r).contains("does not have file"), "{}", stderr_of(&r));
    assert!(!out.exists());

    // A port nobody listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let r = get_cmd(&data, &id, &closed.to_string(), &out).output().unwrap();
    assert!(!r.status.success());
    assert!(stderr_of(&r).contains("cannot connect"), "{}", stderr_of(&r));
    assert_eq!(stderr_of(&r).lines().count(), 1, "one line: {}", stderr_of(&r));

    let r = get_cmd(&data, "not-an-id", &seeder.peer(), &out).output().unwrap();
    assert!(!r.status.success());

    fs::write(&out, b"precious").unwrap();
    let r = get_cmd(&data, &id, &seeder.peer(), &out).output().unwrap();
    assert!(!r.status.success());
    assert!(stderr_of(&r).contains("already exists"), "{}", stderr_of(&r));
    assert_eq!(fs::read(&out).unwrap(), b"precious");
    run_ok(get_cmd(&data, &id, &seeder.peer(), &out).arg("--force"));
    assert!(fs::read(&out).unwrap() == bytes);
}

/// A seeder whose file was altered in place after publishing, with size and mtime put back:
/// the downloader's hash check refuses the chunk and nothing appears under the final name.
#[test]
fn corruption_behind_the_seeders_back_fails_the_download_cleanly() {
    let t = tempdir();
    let data = t.path().join("data");
    let f = t.path().join("a.bin");
    write_file(&f, 5 * CHUNK + 123, 3);
    let id = publish_id(&data, &f, &["--chunk-size", "64KiB"]);
    let mtime = fs::metadata(&f).unwrap().modified().unwrap();
    let mut bytes = fs::read(&f).unwrap();
    bytes[3 * CHUNK + 7] ^= 0x40;
    fs::write(&f, &bytes).unwrap();
    fs::File::options().write(true).open(&f).unwrap().set_modified(mtime).unwrap();

    let seeder = Seeder::start(&data, 2);
    let out = t.path().join("out.bin");
    let r = get_cmd(&data, &id, &seeder.peer(), &out).output().unwrap();
    assert!(!r.status.success());
    let err = stderr_of(&r);
    assert!(err.contains("chunk 3") && err.contains("failed verification"), "{err}");
    assert!(!out.exists(), "nothing under the final name");

    // Changing the size or mtime instead makes the seeder refuse to serve it at all, once
    // its next check of the file has seen it (at most FILE_CHECK_INTERVAL after the change).
    append(&f, b"x");
    std::thread::sleep(2 * furymesh::config::FILE_CHECK_INTERVAL);
    fs::remove_file(out.with_extension("bin.furymesh-resume")).ok();
    let out2 = t.path().join("out2.bin");
    let r = get_cmd(&data, &id, &seeder.peer(), &out2).output().unwrap();
    assert!(!r.status.success());
    assert!(stderr_of(&r).contains("changed on disk"), "{}", stderr_of(&r));
    assert!(!out2.exists());
}

#[test]
fn init_creates_the_data_dir_and_seed_refuses_a_taken_port() {
    let t = tempdir();
    let data = t.path().join("nested").join("data");
    let out = run_ok(fm(&data).arg("init"));
    assert!(data.join("catalog").is_dir(), "{}", String::from_utf8_lossy(&out.stdout));
    // The data dir may also come from the environment. This is the one test that has
    // `init` generate a real RSA-4096 identity (a few seconds).
    let env_dir = t.path().join("env-home");
    let home = || {
        let mut c = std::process::Command::new(BIN);
        c.env("FURYMESH_HOME", &env_dir);
        c
    };
    let out = run_ok(home().args(["--json", "init"]));
    assert!(env_dir.join("catalog").is_dir());
    let created = json(&out);
    assert_eq!(created["created"], true, "{created}");
    let key = env_dir.join("identity.pk8.der");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(fs::metadata(&key).unwrap().permissions().mode() & 0o777, 0o600);
    let id = json(&run_ok(home().args(["--json", "id"])))["node_id"].as_str().unwrap().to_owned();
    assert_eq!(id, created["node_id"].as_str().unwrap());
    assert_eq!(id.len(), 40);
    assert!(id.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()), "{id}");
    // The node ID is the first 160 bits of SHA-256 of the public key's SPKI DER, computed
    // here by OpenSSL, an implementation independent of ours.
    let spki = std::process::Command::new("openssl")
        .args(["pkey", "-inform", "DER", "-pubout", "-outform", "DER", "-in"])
        .arg(&key)
        .output()
        .expect("openssl (apt install openssl)");
    assert!(spki.status.success(), "{}", stderr_of(&spki));
    let digest = std::process::Command::new("sha256sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(&spki.stdout)?;
            c.wait_with_output()
        })
        .unwrap();
    assert_eq!(&String::from_utf8_lossy(&digest.stdout)[..40], id);
    // A second init keeps the identity; a key others can read is refused.
    let again = json(&run_ok(home().args(["--json", "init"])));
    assert_eq!((again["created"].clone(), again["node_id"].clone()), (false.into(), id.into()));
    fs::set_permissions(&key, fs::Permissions::from_mode(0o644)).unwrap();
    let r = home().arg("id").output().unwrap();
    assert!(!r.status.success());
    assert!(stderr_of(&r).contains("chmod 600"), "{}", stderr_of(&r));

    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let r = fm(&data).args(["seed", "--listen", &addr]).output().unwrap();
    assert!(!r.status.success());
    assert!(stderr_of(&r).contains("cannot listen on"), "{}", stderr_of(&r));
}

/// A download onto a full filesystem fails with "disk full" and leaves nothing under the
/// final name. Needs root to mount a tiny tmpfs; says so and passes vacuously otherwise.
#[test]
fn disk_full_is_reported_clearly() {
    let t = tempdir();
    let mnt = t.path().join("small");
    fs::create_dir_all(&mnt).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
        .arg(&mnt)
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        eprintln!("SKIPPED: cannot mount a tmpfs here (not root?)");
        return;
    }
    struct Unmount<'a>(&'a Path);
    impl Drop for Unmount<'_> {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(self.0).status();
        }
    }
    let _guard = Unmount(&mnt);
    let data = t.path().join("data");
    let f = t.path().join("big.bin");
    write_file(&f, 4 << 20, 2);
    let id = publish_id(&data, &f, &[]);
    let seeder = Seeder::start(&data, 1);
    let out = mnt.join("big.bin");
    let r = get_cmd(&data, &id, &seeder.peer(), &out).output().unwrap();
    assert!(!r.status.success());
    assert!(stderr_of(&r).contains("disk full"), "{}", stderr_of(&r));
    assert!(!out.exists());
}
