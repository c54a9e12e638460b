//! The catalog loader: `storage::Catalog::load` over a real data directory whose manifest
//! files hold the fuzzer's bytes.
//!
//! Input: up to four files, each `len u16 LE ‖ bytes [len]` (the last may be cut short),
//! written as `catalog/<i>.fmm`. Every file is either loaded (and then matches what
//! `decode_manifest` says about it) or skipped with a reason; the loader never fails or
//! panics on content.
#![no_main]

use std::fs;
use std::path::PathBuf;
use std::sync::OnceLock;

use furymesh::storage::{layout, Catalog};
use furymesh::wire::decode_manifest;
use furymesh_fuzz::Cursor;
use libfuzzer_sys::fuzz_target;

const FILES_MAX: usize = 4;

fn data_dir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    // Kept for the whole run: one directory, rewritten per input; in memory where the
    // system has a tmpfs (the loader's behaviour does not depend on the file system).
    DIR.get_or_init(|| {
        let shm = std::path::Path::new("/dev/shm");
        let b = tempfile::Builder::new()
            .prefix("furymesh-fuzz-catalog")
            .tempdir_in(if shm.is_dir() { shm.to_path_buf() } else { std::env::temp_dir() });
        b.expect("temp dir").keep()
    })
}

fuzz_target!(|data: &[u8]| {
    let dir = data_dir();
    let cat_dir = layout::catalog_dir(dir);
    let _ = fs::remove_dir_all(&cat_dir);
    fs::create_dir_all(&cat_dir).expect("catalog dir");
    let mut c = Cursor::new(data);
    let mut files = Vec::new();
    while files.len() < FILES_MAX && !c.is_empty() {
        let len = c.u16().map_or(0, usize::from);
        let bytes = c.take_up_to(len);
        let path = cat_dir.join(format!("{}.fmm", files.len()));
        fs::write(&path, bytes).expect("write manifest");
        files.push((path, decode_manifest(bytes)));
    }
    let cat = Catalog::load(dir).expect("a readable catalog directory loads");
    let bad = files.iter().filter(|(_, d)| d.is_err()).count();
    assert_eq!(cat.skipped.len(), bad, "every undecodable manifest is reported");
    for (path, why) in &cat.skipped {
        assert!(!why.is_empty());
        assert!(files.iter().any(|(p, d)| p == path && d.is_err()));
    }
    let good: Vec<_> = files.iter().filter_map(|(_, d)| d.as_ref().ok()).collect();
    assert!(cat.len() <= good.len());
    assert_eq!(cat.is_empty(), good.is_empty());
    for (info, path, _) in &good {
        // One entry per path: a manifest is listed unless another one names the same path
        // (then exactly one of them is); identical IDs share one entry.
        let same_path = good.iter().filter(|(_, p, _)| p == path).count();
        match cat.get(&info.file_id) {
            Some(e) => assert_eq!(e.info.file_id, info.file_id),
            None => assert!(same_path > 1, "a manifest alone at its path is in the catalog"),
        }
        assert!(cat.entries().filter(|e| e.path == *path).count() <= 1, "one entry per path");
    }
    for e in cat.entries() {
        e.info.check().expect("catalog entries are authenticated manifests");
        assert_eq!(e.stamp.size, e.info.size);
        assert!(good
            .iter()
            .any(|(i, p, m)| *i == e.info && e.path == *p && e.stamp.mtime_ns == *m));
        if let Some(found) = cat.find_unchanged(&e.path, e.stamp, e.info.chunk_size) {
            assert_eq!(found.path, e.path);
        }
    }
});
