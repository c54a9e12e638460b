//! Regressions found while fuzzing the catalog loader (fuzz/fuzz_targets/catalog.rs): a
//! catalog directory is read at every start, and whatever it holds must load or be skipped,
//! never crash the node.

use std::fs;
use std::path::Path;

use furymesh::crypto::{chunk_hash, FileId};
use furymesh::manifest::FileInfo;
use furymesh::storage::{layout, Catalog};
use furymesh::wire::encode_manifest;

fn info(seed: u8) -> FileInfo {
    let chunk_size = furymesh::config::CHUNK_SIZE_MIN_BYTES;
    let chunk_hashes = vec![chunk_hash(&[seed])];
    FileInfo {
        file_id: FileId::from_manifest(100, chunk_size, &chunk_hashes),
        name: format!("f{seed}"),
        size: 100,
        chunk_size,
        creation_time: 0,
        chunk_hashes,
    }
}

/// The same content listed under two paths, then one of those paths superseded by newer
/// content, then the other path named again. The loader used to index its map of entries
/// with an ID it had already evicted (a panic at start-up); now the evicted ID no longer
/// counts as the other path's entry.
#[test]
fn a_path_whose_entry_was_evicted_through_another_path_loads() {
    let data = tempfile::tempdir().unwrap();
    let dir = layout::catalog_dir(data.path());
    fs::create_dir_all(&dir).unwrap();
    let (x, y, z) = (info(1), info(2), info(3));
    // Read in name order: a, b, c, d.
    let files = [
        ("a.fmm", &x, "/srv/one", 10),
        ("b.fmm", &x, "/srv/two", 10),
        ("c.fmm", &y, "/srv/two", 20),
        ("d.fmm", &z, "/srv/one", 30),
    ];
    for (name, info, path, mtime) in files {
        fs::write(dir.join(name), encode_manifest(info, Path::new(path), mtime)).unwrap();
    }
    let cat = Catalog::load(data.path()).unwrap();
    assert!(cat.skipped.is_empty());
    // The newest manifest of each path is listed; the superseded content is not.
    let listed = |id: &FileId| cat.get(id).map(|e| e.path.to_str().unwrap().to_owned());
    assert_eq!(listed(&y.file_id).as_deref(), Some("/srv/two"));
    assert_eq!(listed(&z.file_id).as_deref(), Some("/srv/one"));
    assert_eq!(listed(&x.file_id), None);
    assert_eq!(cat.len(), 2);
}
