//! Releases as one unit (issue 15): a directory published as a collection and fetched with
//! one `get`, resumed after `kill -9`; hostile collections refused with nothing written
//! outside the output directory; share links; publishing refuses what a release cannot
//! carry safely. Real processes on loopback.

// Real processes on real time: the waits read the clock directly.
#![allow(clippy::disallowed_methods)]

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use furymesh::collection::{Collection, CollectionEntry};
use furymesh::crypto::FileId;
use furymesh::storage::{store_collection, Catalog};

/// Every regular file under `root` by relative path, with the SHA-256 of its bytes and its
/// execute bits.
fn tree(root: &Path) -> Vec<(PathBuf, String, u32)> {
    let mut out = Vec::new();
    for e in walkdir::WalkDir::new(root).sort_by_file_name() {
        let e = e.unwrap();
        if e.file_type().is_file() {
            let mode = e.metadata().unwrap().permissions().mode() & 0o111;
            let rel = e.path().strip_prefix(root).unwrap().to_owned();
            let hash = hex::encode(furymesh::crypto::chunk_hash(&fs::read(e.path()).unwrap()));
            out.push((rel, hash, mode));
        }
    }
    out
}

/// A 40-file release: nested directories, an empty file, an executable, and a few larger
/// files (so a rate-limited download can be killed half-way).
fn make_release(root: &Path) {
    for i in 0..37u64 {
        let p = root.join(format!("d{}/sub{}/f{i:02}.bin", i % 4, i % 3));
        write_file(&p, 1000 + i as usize * 3001, i);
    }
    write_file(&root.join("big/one.img"), 3 << 20, 100);
    fs::write(root.join("EMPTY"), b"").unwrap();
    let exe = root.join("bin/tool.sh");
    fs::create_dir_all(exe.parent().unwrap()).unwrap();
    fs::write(&exe, b"#!/bin/sh\necho release\n").unwrap();
    fs::set_permissions(&exe, fs::Permissions::from_mode(0o755)).unwrap();
}

fn collection_row(rows: &[serde_json::Value]) -> &serde_json::Value {
    rows.iter().find(|r| r.get("collection_id").is_some()).expect("a collection row")
}

#[test]
fn a_40_file_release_is_one_id_fetched_with_one_get_and_resumed_after_kill_9() {
    let t = tempdir();
    let data = t.path().join("data");
    let src = t.path().join("release-1.0");
    make_release(&src);
    let rows = publish_rows(&data, &[&src], &[]);
    assert_eq!(rows.iter().filter(|r| r.get("file_id").is_some()).count(), 40);
    let c = collection_row(&rows);
    let cid = c["collection_id"].as_str().unwrap().to_owned();
    assert!(cid.starts_with("c-") && cid.len() == 66, "{cid}");
    assert_eq!(c["files"], 40);
    assert_eq!(c["name"], "release-1.0");
    // Unchanged tree, same ID; ls lists it.
    assert_eq!(collection_row(&publish_rows(&data, &[&src], &[]))["collection_id"], cid.as_str());
    let ls = String::from_utf8(run_ok(fm(&data).arg("ls")).stdout).unwrap();
    assert!(ls.contains(&cid) && ls.contains("release-1.0/ (40 files)"), "{ls}");

    // Slow enough that a kill lands while files are still missing.
    let seeder = Seeder::start_with_args(&data, 1, &["--max-upload-rate", "2MiB"]);
    let down = t.path().join("down");
    let out = t.path().join("out");
    let get = || {
        let mut c = get_cmd(&down, &cid, &seeder.peer(), &out);
        c.stdout(Stdio::piped()).stderr(Stdio::piped());
        c
    };
    let mut child = get().spawn().unwrap();
    // Kill once some files are final and the big one is still partial.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        // Files with their final names (the walk races the download: errors are skipped).
        let finals = walkdir::WalkDir::new(&out)
            .into_iter()
            .filter_map(Result::ok)
            .filter(|e| e.file_type().is_file())
            .filter(|e| !e.path().to_string_lossy().contains(".furymesh-"))
            .count()
            >= 5;
        if finals || Instant::now() > deadline || child.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(child.try_wait().unwrap().is_none(), "the get ended before it could be killed");
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(!out.join("big/one.img").exists(), "the big file cannot have verified yet");

    let done = get().output().unwrap();
    assert!(done.status.success(), "{}", stderr_of(&done));
    let report = json(&done);
    assert_eq!(report["files"], 40);
    let kept = report["files_kept"].as_u64().unwrap();
    assert!(kept >= 5, "files verified before the kill are kept: {report}");
    assert_eq!(report["files_fetched"].as_u64().unwrap() + kept, 40);
    // Byte-identical, modes included, and nothing but the release in the directory.
    let (got, want) = (tree(&out), tree(&src));
    let extra: Vec<_> = got.iter().filter(|e| !want.contains(e)).collect();
    let missing: Vec<_> = want.iter().filter(|e| !got.contains(e)).collect();
    assert!(extra.is_empty() && missing.is_empty(), "extra {extra:?}, missing {missing:?}");
    assert_eq!(fs::metadata(out.join("bin/tool.sh")).unwrap().permissions().mode() & 0o111, 0o111);
    assert_eq!(fs::metadata(out.join("EMPTY")).unwrap().len(), 0);
    // The downloader records the release: a seed on its data directory serves it whole.
    let ls = String::from_utf8(run_ok(fm(&down).arg("ls")).stdout).unwrap();
    assert!(ls.contains(&cid), "{ls}");
}

/// A data directory that publishes one real file and serves a collection made of
/// `entries` (paths as given, not checked: a hostile publisher's), each naming that file.
fn hostile_publisher(data: &Path, file: &Path, paths: &[&str]) -> String {
    let row = &publish(data, &[file], &[])[0];
    let file_id: FileId = row["file_id"].as_str().unwrap().parse().unwrap();
    let entries = paths
        .iter()
        .map(|p| CollectionEntry {
            path: (*p).to_owned(),
            file_id,
            size: row["size"].as_u64().unwrap(),
            chunk_size: row["chunk_size"].as_u64().unwrap() as u32,
            executable: false,
        })
        .collect();
    // Not Collection::new: that would refuse (or sort) them.
    let entry = store_collection(data, &Collection { entries }, "evil").unwrap();
    let id = entry.info.file_id;
    let (mut catalog, _lock) = Catalog::load_for_update(data).unwrap();
    catalog.insert(entry).unwrap();
    format!("c-{id}")
}

#[test]
fn hostile_collections_are_refused_with_nothing_written_outside_dir() {
    let t = tempdir();
    let data = t.path().join("data");
    let file = t.path().join("payload.bin");
    write_file(&file, 10_000, 7);
    let long_name = "n".repeat(256);
    let long_path = vec!["d".repeat(200); 21].join("/");
    let cases: Vec<(&str, Vec<&str>, &str)> = vec![
        ("absolute", vec!["/tmp/furymesh-escape"], "absolute"),
        ("dotdot", vec!["../escape"], "`..`"),
        ("inner dotdot", vec!["a/../../escape"], "`..`"),
        ("empty component", vec!["a//b"], "empty"),
        ("dot", vec!["./a"], "`.`"),
        ("nul", vec!["a\0b"], "NUL"),
        ("control", vec!["a\u{1b}]0;pwned\u{7}"], "control character"),
        ("backslash", vec!["..\\escape"], "backslash"),
        ("long name", vec![&long_name], "component is 256 bytes"),
        ("long path", vec![&long_path], "more than 4096"),
        ("duplicate", vec!["same", "same"], "same path"),
        ("case folding", vec!["README", "readme"], "case folding"),
        ("unicode normalization", vec!["cafe\u{301}", "caf\u{e9}"], "normalization"),
        ("file and directory", vec!["a", "a/b"], "directory"),
        ("unsorted", vec!["b", "a"], "sorted"),
    ];
    let ids: Vec<String> =
        cases.iter().map(|(_, paths, _)| hostile_publisher(&data, &file, paths)).collect();
    let seeder = Seeder::start(&data, 1);
    let down = t.path().join("down");
    for ((what, _, reason), id) in cases.iter().zip(&ids) {
        let out = t.path().join("out");
        let got = get_cmd(&down, id, &seeder.peer(), &out).output().unwrap();
        let err = stderr_of(&got);
        assert!(!got.status.success(), "{what}: accepted");
        assert!(err.contains("refusing collection") && err.contains(reason), "{what}: {err}");
        // Nothing written: the output directory is empty, nothing appeared beside it.
        assert_eq!(paths_in(&out), Vec::<PathBuf>::new(), "{what}");
        assert!(!t.path().join("escape").exists() && !Path::new("/tmp/furymesh-escape").exists());
        fs::remove_dir(&out).unwrap();
    }

    // A symlink already inside DIR on an entry's way: refused before anything is written,
    // and nothing lands where it points.
    let good = hostile_publisher(&data, &file, &["sub/x.bin", "top.bin"]);
    drop(seeder);
    let seeder = Seeder::start(&data, 1);
    let out = t.path().join("out-link");
    let elsewhere = t.path().join("elsewhere");
    fs::create_dir_all(&out).unwrap();
    fs::create_dir_all(&elsewhere).unwrap();
    std::os::unix::fs::symlink(&elsewhere, out.join("sub")).unwrap();
    let got = get_cmd(&down, &good, &seeder.peer(), &out).output().unwrap();
    assert!(!got.status.success());
    assert!(stderr_of(&got).contains("symlink already inside"), "{}", stderr_of(&got));
    assert_eq!(paths_in(&elsewhere), Vec::<PathBuf>::new());
    assert_eq!(paths_in(&out), vec![out.join("sub")], "top.bin was not written either");
    // Without the link the same collection downloads.
    fs::remove_file(out.join("sub")).unwrap();
    run_ok(&mut get_cmd(&down, &good, &seeder.peer(), &out));
    assert_eq!(fs::read(out.join("sub/x.bin")).unwrap(), fs::read(&file).unwrap());
}

#[test]
fn a_link_alone_is_enough_for_get() {
    let t = tempdir();
    let data = t.path().join("data");
    let src = t.path().join("rel");
    write_file(&src.join("a/x.bin"), 300_000, 1);
    write_file(&src.join("y.txt"), 20, 2);
    let seeder = Seeder::start(&data, 1);
    let rows = publish_rows(&data, &[&src, &src.join("y.txt")], &["--link-peer", &seeder.peer()]);
    let coll_link = collection_row(&rows)["link"].as_str().unwrap().to_owned();
    let file_link = rows.iter().find(|r| r["path"].as_str().unwrap().ends_with("y.txt")).unwrap()
        ["link"]
        .as_str()
        .unwrap()
        .to_owned();
    let node = node_id(&data);
    assert!(coll_link.contains(&format!("peer={node}@{}", seeder.peer())), "{coll_link}");
    // The seeder follows the catalog within a second: wait until it serves the collection.
    let down = t.path().join("down");
    let cwd = t.path().join("cwd");
    fs::create_dir_all(&cwd).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let got = fm(&down).args(["get", &coll_link]).current_dir(&cwd).output().unwrap();
        if got.status.success() {
            break;
        }
        assert!(Instant::now() < deadline, "{}", stderr_of(&got));
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(tree(&cwd.join("rel")), tree(&src));
    run_ok(fm(&down).args(["get", &file_link]).current_dir(&cwd));
    assert_eq!(fs::read(cwd.join("y.txt")).unwrap(), fs::read(src.join("y.txt")).unwrap());
    // A malformed link names its bad part.
    let bad = coll_link.replace("peer=", "peer=zz");
    let got = fm(&down).args(["get", &bad]).current_dir(&cwd).output().unwrap();
    assert!(!got.status.success());
    assert!(stderr_of(&got).contains("peer #1"), "{}", stderr_of(&got));
    // A collection ID given as a plain file ID is refused, not written as a file.
    let bare = coll_link.split('?').next().unwrap().trim_start_matches("furymesh:c-").to_owned();
    let got = get_cmd(&down, &bare, &seeder.peer(), &cwd.join("blob")).output().unwrap();
    assert!(!got.status.success());
    assert!(stderr_of(&got).contains("Collection"), "{}", stderr_of(&got));
    assert!(!cwd.join("blob").exists());
}

#[test]
fn publish_refuses_or_skips_what_a_release_cannot_carry() {
    let t = tempdir();
    let data = t.path().join("data");
    let src = t.path().join("rel");
    write_file(&src.join("ok.bin"), 1000, 1);
    write_file(&t.path().join("secret"), 10, 2);
    std::os::unix::fs::symlink(t.path().join("secret"), src.join("leak")).unwrap();
    std::os::unix::fs::symlink("ok.bin", src.join("alias")).unwrap();
    let fifo = src.join("pipe");
    assert!(Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    let out = fm(&data).args(["--json", "publish"]).arg(&src).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = stderr_of(&out);
    assert!(err.contains("leak") && err.contains("symlink leaving the tree"), "{err}");
    assert!(err.contains("pipe") && err.contains("special file"), "{err}");
    assert!(err.contains("no collection recorded"), "{err}");
    assert!(json(&out).as_array().unwrap().iter().all(|r| r.get("collection_id").is_none()));

    let out = fm(&data).args(["--json", "publish", "--skip-unsafe"]).arg(&src).output().unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
    let err = stderr_of(&out);
    assert!(err.contains("skipped") && err.contains("leak") && err.contains("pipe"), "{err}");
    let rows = json(&out);
    let rows = rows.as_array().unwrap();
    // ok.bin and the symlink inside the tree (alias → ok.bin).
    assert_eq!(collection_row(rows)["files"], 2, "{rows:?}");
}

/// A FuryMesh data directory is never content: publishing a tree that holds one (the
/// operator's own, or another node's) leaves it out with a warning and records the rest;
/// publishing the data directory itself, or a file in it, is refused; downloads' side files
/// are left out too. What was left out cannot be fetched.
#[test]
fn publish_never_serves_a_data_directory_or_a_downloads_side_files() {
    let t = tempdir();
    let tree = t.path().join("tree");
    let data = tree.join("node-data");
    write_file(&tree.join("release.bin"), 5000, 1);
    write_file(&tree.join("half.iso.furymesh-partial"), 300, 2);
    write_file(&tree.join("half.iso.furymesh-resume"), 30, 3);
    // Publishing from inside its own data directory's parent: `data` gets its identity.
    let out = fm(&data).args(["--json", "publish"]).arg(&tree).output().unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
    let err = stderr_of(&out);
    assert!(err.contains("node-data") && err.contains("never published"), "{err}");
    assert!(err.contains("half.iso.furymesh-partial"), "{err}");
    let rows = json(&out);
    let paths: Vec<&str> = rows
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r.get("file_id").and(r["path"].as_str()))
        .collect();
    assert_eq!(paths.len(), 1, "only release.bin: {paths:?}");
    assert!(paths[0].ends_with("release.bin"), "{paths:?}");
    assert_eq!(collection_row(rows.as_array().unwrap())["files"], 1, "{rows}");

    // The data directory itself, or its key, given directly: refused.
    for given in [data.clone(), data.join("identity.pk8.der")] {
        let out = fm(&data).args(["publish"]).arg(&given).output().unwrap();
        assert!(!out.status.success(), "{} was published", given.display());
        assert!(stderr_of(&out).contains("never published"), "{}", stderr_of(&out));
    }
    let ls = String::from_utf8(run_ok(fm(&data).arg("ls")).stdout).unwrap();
    assert!(!ls.contains("identity") && !ls.contains(".furymesh-partial"), "{ls}");
}

/// Under `dir`: a data directory (not created), a release tree `rel/` of two files (`a.bin`,
/// `sub/b.bin`) and a file `other.bin` beside it, with contents from `seed` on.
fn release_and_other(dir: &Path, seed: u64) -> (PathBuf, PathBuf, PathBuf) {
    let tree = dir.join("rel");
    write_file(&tree.join("a.bin"), 1000, seed);
    write_file(&tree.join("sub/b.bin"), 2000, seed + 1);
    let other = dir.join("other.bin");
    write_file(&other, 3000, seed + 2);
    (dir.join("data"), tree, other)
}

/// `unpublish DIR` takes back what `publish DIR` published: every file under it and its
/// collection; a collection ID alone takes back only the collection.
#[test]
fn unpublish_of_a_directory_takes_back_its_files_and_collection() {
    let t = tempdir();
    let (data, tree, other) = release_and_other(t.path(), 1);
    run_ok(fm(&data).args(["publish"]).arg(&tree).arg(&other));
    let listed = |data: &Path| json(&run_ok(fm(data).args(["--json", "ls"])));
    assert_eq!(listed(&data).as_array().unwrap().len(), 4, "{}", listed(&data));
    let out = run_ok(fm(&data).args(["--json", "unpublish"]).arg(&tree));
    assert_eq!(json(&out).as_array().unwrap().len(), 3, "two files and the collection");
    let left = listed(&data);
    let left = left.as_array().unwrap();
    assert_eq!(left.len(), 1, "{left:?}");
    assert!(left[0]["path"].as_str().unwrap().ends_with("other.bin"), "{left:?}");
    // Nothing under it any more: a clear refusal.
    let again = fm(&data).args(["unpublish"]).arg(&tree).output().unwrap();
    assert_eq!(again.status.code(), Some(1));
    assert!(stderr_of(&again).contains("is not published"), "{}", stderr_of(&again));
}

/// `unpublish c-…` (no node running) takes back the release: the collection and the files
/// it brought, not a file published on its own from elsewhere; `--keep-files` takes the
/// collection alone. The summary counts both kinds in plain English.
#[test]
fn unpublish_of_a_collection_id_takes_back_the_files_it_brought() {
    let t = tempdir();
    let (data, tree, other) = release_and_other(t.path(), 11);
    let rows = json(&run_ok(fm(&data).args(["--json", "publish"]).arg(&tree).arg(&other)));
    let cid =
        collection_row(rows.as_array().unwrap())["collection_id"].as_str().unwrap().to_owned();
    let out = run_ok(fm(&data).args(["unpublish", &cid]));
    let said = String::from_utf8(out.stdout).unwrap();
    assert!(said.contains("unpublished 2 files and 1 collection"), "{said}");
    assert!(said.starts_with(&cid), "the collection first, as written: {said}");
    let left = json(&run_ok(fm(&data).args(["--json", "ls"])));
    let left = left.as_array().unwrap();
    assert_eq!(left.len(), 1, "{left:?}");
    assert!(left[0]["path"].as_str().unwrap().ends_with("other.bin"), "{left:?}");
    assert_eq!(left[0]["state"], "ok", "{left:?}");

    // Published again; --keep-files takes the collection only.
    let rows = json(&run_ok(fm(&data).args(["--json", "publish"]).arg(&tree)));
    let cid =
        collection_row(rows.as_array().unwrap())["collection_id"].as_str().unwrap().to_owned();
    let out = run_ok(fm(&data).args(["unpublish", "--keep-files", &cid]));
    let said = String::from_utf8(out.stdout).unwrap();
    assert!(said.trim_end().ends_with("unpublished 1 collection"), "{said}");
    assert_eq!(json(&run_ok(fm(&data).args(["--json", "ls"]))).as_array().unwrap().len(), 3);
    let again = fm(&data).args(["unpublish", &cid]).output().unwrap();
    assert_eq!(again.status.code(), Some(1));
    assert!(stderr_of(&again).contains("is not published"), "{}", stderr_of(&again));
}
