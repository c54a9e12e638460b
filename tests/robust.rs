//! Failure classes real users hit (issue 12), one test per class, through the real binary
//! on real files, pipes and processes.

// An edit's later mtime is the real time plus a few seconds (clippy.toml confines clock
// reads to node::clock inside the crate, not in tests).
#![allow(clippy::disallowed_methods)]

mod common;

use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::*;

/// Runs `cmd` with stdout a pipe whose reading end is already closed, so its first write
/// to stdout fails with EPIPE (deterministically: no race with a reader that exits).
fn run_into_closed_pipe(cmd: &mut Command) -> Output {
    let writer = closed_pipe_writer();
    cmd.stdout(Stdio::from(writer)).stderr(Stdio::piped()).output().expect("spawn furymesh")
}

/// Asserts that a command whose stdout was closed ended quietly: the exit code it would
/// have had, no panic, no error message about the pipe.
fn assert_quiet(what: &str, out: &Output, code: i32) {
    let err = stderr_of(out);
    assert_eq!(out.status.code(), Some(code), "{what}: {} (stderr: {err})", out.status);
    assert!(!err.contains("panicked"), "{what} panicked: {err}");
    assert!(!err.to_lowercase().contains("broken pipe"), "{what}: {err}");
}

/// Issue 12, item 6: every command that prints ends quietly when its reader has gone
/// (`furymesh ls | head -1`, a `--json` consumer that exits early), with the exit code it
/// would have had, and the work it did is done.
#[test]
fn every_command_ends_quietly_on_a_closed_stdout() {
    let t = tempdir();
    let data = t.path().join("data");
    let src = t.path().join("src");
    let mut files = Vec::new();
    for i in 0..20u64 {
        let p = src.join(format!("f{i:02}.bin"));
        files.push((p.clone(), write_file(&p, 50_000 + i as usize * 1000, i)));
    }
    // publish, human and JSON: the files are recorded although nobody read the list.
    for json in [false, true] {
        let mut cmd = fm(&data);
        if json {
            cmd.arg("--json");
        }
        let out = run_into_closed_pipe(cmd.arg("publish").arg(&src));
        assert_quiet("publish", &out, 0);
    }
    let published = publish(&data, &[&src], &[]);
    assert_eq!(published.len(), files.len());
    // A failed file still makes publish exit 1 with a closed stdout.
    let missing = t.path().join("missing.bin");
    let out = run_into_closed_pipe(fm(&data).arg("publish").arg(&src).arg(&missing));
    assert_quiet("publish with a missing file", &out, 1);
    assert!(stderr_of(&out).contains("missing.bin"), "{}", stderr_of(&out));

    for args in [&["ls"][..], &["--json", "ls"], &["id"], &["--json", "id"], &["init"]] {
        let out = run_into_closed_pipe(fm(&data).args(args));
        assert_quiet(&args.join(" "), &out, 0);
    }
    let out = run_into_closed_pipe(
        Command::new(BIN).args(["--json", "bench", "sha256", "--bytes", "1MiB"]),
    );
    assert_quiet("bench sha256", &out, 0);

    // get --json into a reader that has gone: the download is complete and recorded.
    let seeder = Seeder::start(&data, 1);
    let down = t.path().join("down");
    let id = published[3]["file_id"].as_str().unwrap();
    let dest = t.path().join("got.bin");
    let out = run_into_closed_pipe(&mut get_cmd(&down, id, &seeder.peer(), &dest));
    assert_quiet("get --json", &out, 0);
    assert!(fs::read(&dest).unwrap() == files[3].1);
    let ls = json(&run_ok(fm(&down).args(["--json", "ls"])));
    assert_eq!(ls[0]["file_id"], id, "the download is in the catalog: {ls}");

    let out = run_into_closed_pipe(fm(&down).args(["--json", "dht", "ping"]).arg(seeder.peer()));
    assert_quiet("dht ping", &out, 0);
    drop(seeder);

    // seed prints its counters when it stops.
    let mut child = fm(&data)
        .args(["--json", "seed", "--listen", "127.0.0.1:0", "--shards", "1"])
        .stdout(Stdio::from(closed_pipe_writer()))
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    read_line_with(child.stderr.as_mut().unwrap(), "listening on");
    signal(child.id(), "TERM");
    let out = child.wait_with_output().unwrap();
    assert_quiet("seed --json", &out, 0);
}

/// The writing end of a pipe whose reading end is closed.
fn closed_pipe_writer() -> std::os::fd::OwnedFd {
    let (reader, writer) = rustix::pipe::pipe().expect("pipe");
    drop(reader);
    writer
}

/// A path from raw bytes (Linux file names need not be UTF-8).
fn byte_path(dir: &Path, name: &[u8]) -> PathBuf {
    dir.join(OsStr::from_bytes(name))
}

/// Issue 12, item 5: file names are bytes. Names that are not UTF-8 (Latin-1 `é`, lone
/// continuation bytes, a directory with such a name) publish, list distinguishably,
/// re-publish without re-hashing, and are served byte for byte.
#[test]
fn names_that_are_not_utf8_publish_list_and_serve() {
    let t = tempdir();
    let data = t.path().join("data");
    let src = t.path().join("src");
    let names: [&[u8]; 4] =
        [b"caf\xe9.txt", b"\xff\xfe", b"caf\xc3\xa9.txt", b"dir-\xe9/inner.bin"];
    let mut files = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let p = byte_path(&src, name);
        files.push((p.clone(), write_file(&p, 70_000 + i, 40 + i as u64)));
    }
    let published = publish(&data, &[&src], &[]);
    assert_eq!(published.len(), names.len(), "{published:?}");
    // `ls` tells the two cafés apart: the Latin-1 byte is escaped, not replaced.
    let ls = String::from_utf8(run_ok(fm(&data).arg("ls")).stdout).unwrap();
    assert!(ls.contains("caf\\xE9.txt"), "{ls}");
    assert!(ls.contains("caf\u{e9}.txt"), "{ls}");
    assert!(ls.contains("\\xFF\\xFE"), "{ls}");
    // The JSON carries the exact bytes of names that are not UTF-8.
    let listed = json(&run_ok(fm(&data).args(["--json", "ls"])));
    let mut by_path = std::collections::HashMap::new();
    for e in listed.as_array().unwrap() {
        let path = match e.get("path_hex") {
            Some(h) => PathBuf::from(OsStr::from_bytes(&hex::decode(h.as_str().unwrap()).unwrap())),
            None => PathBuf::from(e["path"].as_str().unwrap()),
        };
        by_path.insert(path, e["file_id"].as_str().unwrap().to_owned());
    }
    // Publishing again finds every file unchanged (nothing hashed again).
    let again = run_ok(fm(&data).arg("publish").arg(&src));
    let text = String::from_utf8_lossy(&again.stdout);
    assert!(text.contains(&format!("({} unchanged)", names.len())), "{text}");
    // Every file is served byte for byte.
    let seeder = Seeder::start(&data, 1);
    let down = t.path().join("down");
    for (n, (p, bytes)) in files.iter().enumerate() {
        let id = &by_path[&fs::canonicalize(p).unwrap()];
        let out = t.path().join(format!("got-{n}"));
        run_ok(&mut get_cmd(&down, id, &seeder.peer(), &out));
        assert!(fs::read(&out).unwrap() == *bytes, "{}", p.display());
    }
    // A download to a name that is not UTF-8 is recorded under that exact name (in a data
    // directory of its own: one that already lists the same content from an intact file
    // keeps that entry).
    let id = &by_path[&fs::canonicalize(&files[0].0).unwrap()];
    let out = byte_path(t.path(), b"got-\xe9");
    let down2 = t.path().join("down2");
    run_ok(&mut get_cmd(&down2, id, &seeder.peer(), &out));
    let listed = json(&run_ok(fm(&down2).args(["--json", "ls"])));
    let hexes: Vec<_> =
        listed.as_array().unwrap().iter().filter_map(|e| e.get("path_hex")).collect();
    let want = hex::encode(fs::canonicalize(&out).unwrap().as_os_str().as_bytes());
    assert!(hexes.iter().any(|h| *h == &want), "{listed}");
}

/// Issue 12, item 7: one catalog entry per path. A file changed and published again
/// replaces its old manifest (listed, served and announced once, under the new ID), and a
/// catalog that already holds stale duplicates lists only the newest.
#[test]
fn a_path_published_again_has_one_catalog_entry() {
    let t = tempdir();
    let data = t.path().join("data");
    let f = t.path().join("a.bin");
    write_file(&f, 200_000, 1);
    let first = publish_id(&data, &f, &[]);
    let catalog = data.join("catalog");
    let old_manifest = fs::read(catalog.join(format!("{first}.fmm"))).unwrap();
    // Same size, new content; then a different size.
    let mut ids = vec![first.clone()];
    for (len, seed) in [(200_000, 2), (300_000, 3)] {
        write_file(&f, len, seed);
        // A later mtime, as an edit has (the same size and mtime would look unchanged).
        let later = std::time::SystemTime::now() + std::time::Duration::from_secs(seed);
        fs::File::options().write(true).open(&f).unwrap().set_modified(later).unwrap();
        ids.push(publish_id(&data, &f, &[]));
    }
    assert!(ids[0] != ids[1] && ids[1] != ids[2], "{ids:?}");
    let ls = json(&run_ok(fm(&data).args(["--json", "ls"])));
    assert_eq!(ls.as_array().unwrap().len(), 1, "{ls}");
    assert_eq!(ls[0]["file_id"], ids[2]);
    assert_eq!(manifests_in(&catalog), 1, "{:?}", paths_in(&catalog));
    // A catalog written by an older version, holding the stale manifest too: still one
    // entry, the newer; the next publish removes the stale file.
    fs::write(catalog.join(format!("{first}.fmm")), &old_manifest).unwrap();
    let ls = json(&run_ok(fm(&data).args(["--json", "ls"])));
    assert_eq!(ls.as_array().unwrap().len(), 1, "{ls}");
    assert_eq!(ls[0]["file_id"], ids[2]);
    let g = t.path().join("g.bin");
    write_file(&g, 1000, 9);
    publish(&data, &[&g], &[]);
    assert_eq!(manifests_in(&catalog), 2, "{:?}", paths_in(&catalog));
    // The seeder serves the new ID and not the old ones.
    let seeder = Seeder::start(&data, 1);
    let down = t.path().join("down");
    let out = fm(&down)
        .args(["get", &first, "--peer", &seeder.peer(), "-o"])
        .arg(t.path().join("old"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(stderr_of(&out).contains("does not have file"), "{}", stderr_of(&out));
    run_ok(&mut get_cmd(&down, &ids[2], &seeder.peer(), &t.path().join("new")));
    assert!(fs::read(t.path().join("new")).unwrap() == fs::read(&f).unwrap());
}

/// The node ID a starting seeder prints on stderr ("listening on ADDR (…, node ID, …)").
fn seeder_node_id(line: &str) -> String {
    line.split("node ").nth(1).and_then(|r| r.split([',', ')']).next()).unwrap().to_owned()
}

/// Issue 12, item 11 (identity): a `seed` and an `init` started at once on an
/// uninitialised data directory both generate a key, but exactly one is kept and both
/// name that node. (Two `seed`s on one directory are refused: one seed per directory.)
/// (Real RSA-4096 generation: the one test that cannot use a fixture key.)
#[test]
fn two_first_starts_at_once_share_one_identity() {
    let t = tempdir();
    let data = t.path().join("fresh");
    let command = |args: &[&str]| {
        let mut c = Command::new(BIN);
        c.arg("--data-dir").arg(&data).env_remove("FURYMESH_HOME");
        c.args(args);
        c.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap()
    };
    let mut seed = command(&["--json", "seed", "--listen", "127.0.0.1:0", "--shards", "1"]);
    let init = command(&["--json", "init"]);
    let line = read_line_with(seed.stderr.as_mut().unwrap(), "listening on");
    let init = init.wait_with_output().unwrap();
    assert!(init.status.success(), "{}", stderr_of(&init));
    let _ = seed.kill();
    let _ = seed.wait();
    let ids = [seeder_node_id(&line), json(&init)["node_id"].as_str().unwrap().to_owned()];
    assert_eq!(ids[0], ids[1], "two identities were created; one was lost");
    assert_eq!(node_id(&data), ids[0]);
    // Nothing left behind but the key, the session key kept beside it, the catalog
    // directory `init` makes, the seed's lock and the control API's token and address file
    // (the seed was killed, so the address file stays, naming a port nobody answers on).
    let leftovers: Vec<_> = paths_in(&data)
        .into_iter()
        .filter(|p| {
            !["identity.pk8.der", "session.key", "api.token", "api.addr", "seed.lock", "catalog"]
                .contains(&p.file_name().unwrap().to_str().unwrap())
        })
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

/// Issue 12, item 11 (known-peers): concurrent `get`s sharing one data directory each
/// pin the peer they used first; every pin survives.
#[test]
fn concurrent_gets_keep_every_trust_on_first_use_pin() {
    const SEEDERS: usize = 6;
    let t = tempdir();
    let mut seeders = Vec::new();
    let mut ids = Vec::new();
    for i in 0..SEEDERS {
        let data = t.path().join(format!("seed-{i}"));
        let f = t.path().join(format!("f{i}.bin"));
        write_file(&f, 100_000, 70 + i as u64);
        ids.push(publish_id(&data, &f, &[]));
        let s = Seeder::start(&data, 1);
        let node = node_id(&data);
        seeders.push((s, node));
    }
    let shared = t.path().join("shared");
    ensure_identity(&shared);
    let children: Vec<_> = (0..SEEDERS)
        .map(|i| {
            get_cmd(&shared, &ids[i], &seeders[i].0.peer(), &t.path().join(format!("out-{i}")))
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for c in children {
        let out = c.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", stderr_of(&out));
    }
    let known = fs::read_to_string(shared.join("known-peers")).unwrap();
    for (s, node) in &seeders {
        assert!(known.contains(&format!("{} {node}", s.peer())), "{} missing:\n{known}", s.peer());
    }
}

/// Manifest files in a catalog directory.
fn manifests_in(dir: &Path) -> usize {
    paths_in(dir).iter().filter(|p| p.extension().is_some_and(|e| e == "fmm")).count()
}

/// Issue 12, item 2: two `get`s of different files to the same output. The second is
/// refused clearly while the first writes; the first's file is exactly its source and is
/// recorded under its own ID; a later `--force` replaces it cleanly (one catalog entry).
#[test]
fn two_gets_to_one_output_never_mix_their_files() {
    let t = tempdir();
    let data = t.path().join("seed");
    let (fa, fb) = (t.path().join("a.bin"), t.path().join("b.bin"));
    let a = write_file(&fa, 3 << 20, 11);
    let b = write_file(&fb, 3 << 20, 12);
    let (ida, idb) = (publish_id(&data, &fa, &[]), publish_id(&data, &fb, &[]));
    let seeder = Seeder::start(&data, 1);
    let down = t.path().join("down");
    let out = t.path().join("out.bin");
    let resume = t.path().join("out.bin.furymesh-resume");
    // The first get is slowed down so the second surely starts while it runs.
    let first = get_cmd(&down, &ida, &seeder.peer(), &out)
        .args(["--max-download-rate", "1MiB"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // It has the manifest and holds the output once its resume state exists.
    let started = std::time::Instant::now();
    while !resume.exists() {
        assert!(started.elapsed().as_secs() < 60, "the first get never started");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let second = get_cmd(&down, &idb, &seeder.peer(), &out).output().unwrap();
    let first = first.wait_with_output().unwrap();
    assert!(first.status.success(), "{}", stderr_of(&first));
    assert!(!second.status.success(), "the second get ran on the same output");
    assert!(
        stderr_of(&second).contains("another furymesh get is writing"),
        "{}",
        stderr_of(&second)
    );
    assert!(fs::read(&out).unwrap() == a, "the output is not the first file");
    let ls = json(&run_ok(fm(&down).args(["--json", "ls"])));
    assert_eq!(ls.as_array().unwrap().len(), 1, "{ls}");
    assert_eq!(ls[0]["file_id"], ida);
    // Replacing it on purpose works, and the catalog keeps one entry for the path.
    run_ok(get_cmd(&down, &idb, &seeder.peer(), &out).arg("--force"));
    assert!(fs::read(&out).unwrap() == b);
    let ls = json(&run_ok(fm(&down).args(["--json", "ls"])));
    assert_eq!(ls.as_array().unwrap().len(), 1, "{ls}");
    assert_eq!(ls[0]["file_id"], idb);
}

/// `furymesh seed` on loopback under `ulimit` arguments (a shell sets the limits, then
/// becomes the seeder), with its address and stderr.
fn seed_under_ulimit(data: &Path, ulimit: &str) -> (std::process::Child, String) {
    let mut child = Command::new("sh")
        .args(["-c", &format!("ulimit {ulimit} && exec \"$0\" \"$@\""), BIN, "--data-dir"])
        .arg(data)
        .args(["--json", "seed", "--listen", "127.0.0.1:0", "--shards", "1"])
        .env_remove("FURYMESH_HOME")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let line = read_line_with(child.stderr.as_mut().unwrap(), "listening on");
    let addr = line.split("listening on ").nth(1).unwrap().split(' ').next().unwrap().to_owned();
    (child, addr)
}

/// Soft and hard "Max open files" of a running process.
fn open_files_limits(pid: u32) -> (String, String) {
    let limits = fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits.lines().find(|l| l.starts_with("Max open files")).unwrap();
    let f: Vec<&str> = line.split_whitespace().collect();
    (f[3].to_owned(), f[4].to_owned())
}

/// Issue 12, item 3: descriptors running out. The soft limit is raised to the hard one at
/// start; under a hard limit of 128, a seeder serves 200 files (more than it may hold
/// open) to concurrent downloaders without an error, and its descriptors fall back once
/// they are gone.
#[test]
fn a_seeder_serves_more_files_than_it_may_open() {
    let t = tempdir();
    let data = t.path().join("seed");
    let src = t.path().join("src");
    let mut files = Vec::new();
    for i in 0..200u64 {
        let p = src.join(format!("f{i:03}.bin"));
        files.push(write_file(&p, 5_000 + i as usize, 500 + i));
    }
    let published = publish(&data, &[&src], &[]);
    assert_eq!(published.len(), files.len());

    // A low soft limit is raised to the hard one.
    let (mut raised, _) = seed_under_ulimit(&data, "-S -n 100");
    let (soft, hard) = open_files_limits(raised.id());
    let _ = raised.kill();
    let _ = raised.wait();
    assert_eq!(soft, hard, "the soft limit was not raised");

    let (mut seeder, addr) = seed_under_ulimit(&data, "-n 128");
    assert_eq!(open_files_limits(seeder.id()), ("128".to_owned(), "128".to_owned()));
    let down = t.path().join("down");
    ensure_identity(&down);
    for batch in published.chunks(8).enumerate().collect::<Vec<_>>() {
        let (b, entries) = batch;
        let children: Vec<_> = entries
            .iter()
            .enumerate()
            .map(|(i, e)| {
                let out = t.path().join(format!("out-{b}-{i}"));
                let child = get_cmd(&down, e["file_id"].as_str().unwrap(), &addr, &out)
                    .stdout(Stdio::null())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap();
                (child, out, e)
            })
            .collect();
        for (child, out, e) in children {
            let res = child.wait_with_output().unwrap();
            assert!(res.status.success(), "{}: {}", e["path"], stderr_of(&res));
            let src = fs::read(e["path"].as_str().unwrap()).unwrap();
            assert!(fs::read(&out).unwrap() == src);
        }
    }
    // Every client is gone: the seeder holds its cached maps and little else.
    let fds = fs::read_dir(format!("/proc/{}/fd", seeder.id())).unwrap().count();
    assert!(fds <= 96, "{fds} descriptors open with no client");
    signal(seeder.id(), "TERM");
    let mut err = String::new();
    std::io::Read::read_to_string(seeder.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert!(seeder.wait().unwrap().success(), "{err}");
    assert!(err.matches("accept failed").count() <= 1, "{err}");
}

/// Reads `r` until a line contains `what`, and returns that line.
fn read_line_with(r: &mut impl std::io::Read, what: &str) -> String {
    let mut seen = Vec::new();
    let mut byte = [0u8; 1];
    while r.read(&mut byte).unwrap() == 1 {
        if byte[0] == b'\n' {
            let line = String::from_utf8_lossy(&seen).into_owned();
            if line.contains(what) {
                return line;
            }
            seen.clear();
        } else {
            seen.push(byte[0]);
        }
    }
    panic!("no line with {what:?}; last: {}", String::from_utf8_lossy(&seen));
}
