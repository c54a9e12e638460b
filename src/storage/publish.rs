//! Publishing: chunk and hash files in place, using every core, and record manifests.

use std::fs::{self, File};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use rayon::prelude::*;

use super::{layout, write_atomic, Catalog, CatalogEntry, CatalogError, FileStamp};
use crate::collection::{check_entry_path, Collection, CollectionEntry};
use crate::config::{auto_chunk_size, CHUNKS_PER_FILE_MAX};
use crate::crypto::{chunk_hash, ChunkHash, FileId};
use crate::manifest::FileInfo;

/// Why a file could not be published.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path}: changed while it was being hashed; publish it again once it is stable")]
    Changed { path: PathBuf },
    #[error("{path}: {chunks} chunks is more than the limit of {max}; use a larger --chunk-size")]
    TooManyChunks { path: PathBuf, chunks: u64, max: u32 },
    /// A file a directory's collection cannot include (`publish DIR`): a symlink leaving
    /// the tree, a special file, an unreadable file or directory.
    #[error("{path}: {why}")]
    Unsafe { path: PathBuf, why: String },
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    /// The catalog could not be locked and reloaded for writing; nothing was recorded.
    #[error("not recorded: {0}")]
    CatalogUnavailable(String),
}

/// The outcome for one published file.
#[derive(Debug, Clone)]
pub struct Published {
    pub entry: CatalogEntry,
    /// True when the catalog already had this file unchanged and nothing was hashed.
    pub reused: bool,
}

/// What [`publish_tree`] does with a directory's entries that a release cannot carry
/// safely: symlinks whose target is outside the directory, special files (FIFOs,
/// sockets, devices) and unreadable files or directories.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UnsafePolicy {
    /// Each is an error (the command fails); the directory's collection is not recorded.
    #[default]
    Refuse,
    /// Each is left out with a warning; the collection is recorded without it.
    Skip,
}

/// One regular file found under the given paths.
struct Found {
    /// Canonical path (what the catalog records).
    path: PathBuf,
    /// Index of the directory it was found under, and its path relative to it (`None` for
    /// a file given directly).
    root: Option<(usize, PathBuf)>,
}

/// A directory given to [`publish_tree`]: the root of a collection.
struct Root {
    dir: PathBuf,
    /// Entries that keep it from becoming a collection (refused, or skipped).
    problems: Vec<(PathBuf, String)>,
    /// Entries that are never content, left out whatever the policy: FuryMesh data
    /// directories (they hold a node's private key) and downloads' side files.
    excluded: Vec<(PathBuf, String)>,
}

/// Why `path` (canonical) is never published, if it is not: it lies in a FuryMesh data
/// directory, or it is a download's side file.
fn never_published(path: &Path) -> Option<String> {
    if let Some(d) = layout::data_dir_around(path) {
        return Some(format!(
            "inside the FuryMesh data directory {} (it holds a node's private key and API \
             token): never published",
            d.display()
        ));
    }
    layout::is_download_side_file(path)
        .then(|| "an unfinished download's partial data or resume state: never published".into())
}

/// Expands `paths` (files, and directories recursively) into regular files in a stable
/// order. Inside a directory, symlinks are followed only while they stay inside it;
/// symlinks leaving it, special files and unreadable entries are recorded as problems of
/// that directory. Paths that cannot be read at all become errors.
fn expand(paths: &[PathBuf]) -> (Vec<Result<Found, PublishError>>, Vec<Root>) {
    let mut out = Vec::new();
    let mut roots = Vec::new();
    for given in paths {
        let is_dir = fs::metadata(given).is_ok_and(|m| m.is_dir());
        if let Some(why) = fs::canonicalize(given).ok().and_then(|c| never_published(&c)) {
            out.push(Err(PublishError::Unsafe { path: given.clone(), why }));
            continue;
        }
        if !is_dir {
            let found = match fs::metadata(given) {
                Ok(m) if !m.is_file() => Err(PublishError::Unsafe {
                    path: given.clone(),
                    why: "not a regular file (FIFO, socket or device)".into(),
                }),
                _ => fs::canonicalize(given)
                    .map(|path| Found { path, root: None })
                    .map_err(|source| PublishError::Io { path: given.clone(), source }),
            };
            out.push(found);
            continue;
        }
        let r = roots.len();
        let mut root = Root { dir: given.clone(), problems: Vec::new(), excluded: Vec::new() };
        let inside = fs::canonicalize(given).unwrap_or_else(|_| given.clone());
        let mut walk =
            walkdir::WalkDir::new(given).follow_links(true).sort_by_file_name().into_iter();
        while let Some(ent) = walk.next() {
            let e = match ent {
                Ok(e) => e,
                Err(e) => {
                    let path = e.path().unwrap_or(given).to_path_buf();
                    let why = match e.into_io_error() {
                        Some(io) => format!("unreadable: {io}"),
                        None => "symlink loop".to_owned(),
                    };
                    root.problems.push((path, why));
                    continue;
                }
            };
            let path = e.path();
            let canonical = match fs::canonicalize(path) {
                Ok(c) => c,
                Err(io) => {
                    root.problems.push((path.into(), format!("unreadable: {io}")));
                    continue;
                }
            };
            if !canonical.starts_with(&inside) {
                root.problems.push((
                    path.into(),
                    format!("symlink leaving the tree (to {})", canonical.display()),
                ));
                if e.file_type().is_dir() {
                    walk.skip_current_dir();
                }
                continue;
            }
            let ft = e.file_type();
            if ft.is_dir() {
                if layout::is_data_dir(&canonical) {
                    root.excluded
                        .push((path.into(), never_published(&canonical).unwrap_or_default()));
                    walk.skip_current_dir();
                }
                continue;
            }
            if layout::is_download_side_file(&canonical) {
                root.excluded.push((path.into(), never_published(&canonical).unwrap_or_default()));
                continue;
            }
            if !ft.is_file() {
                root.problems.push((path.into(), "special file (FIFO, socket or device)".into()));
                continue;
            }
            if let Err(io) = File::open(&canonical) {
                root.problems.push((path.into(), format!("unreadable: {io}")));
                continue;
            }
            let rel = path.strip_prefix(given).unwrap_or(path).to_path_buf();
            out.push(Ok(Found { path: canonical, root: Some((r, rel)) }));
        }
        roots.push(root);
    }
    (out, roots)
}

/// Hashes every chunk of `path` in parallel. Reads with `pread` rather than a map so a file
/// truncated under us is an error, not a SIGBUS.
fn hash_file(
    path: &Path,
    size: u64,
    chunk_size: u32,
    progress: &(dyn Fn(u64) + Sync),
) -> io::Result<Vec<ChunkHash>> {
    let file = File::open(path)?;
    let n = size.div_ceil(chunk_size as u64);
    (0..n)
        .into_par_iter()
        .map_init(
            || vec![0u8; chunk_size as usize],
            |buf, i| {
                let start = i * chunk_size as u64;
                let len = (size - start).min(chunk_size as u64) as usize;
                file.read_exact_at(&mut buf[..len], start)?;
                progress(len as u64);
                Ok(chunk_hash(&buf[..len]))
            },
        )
        .collect()
}

fn publish_one(
    catalog: &Catalog,
    path: &Path,
    chunk_size: Option<u32>,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<Published, PublishError> {
    let io_err = |source| PublishError::Io { path: path.into(), source };
    let stamp = FileStamp::of(&fs::metadata(path).map_err(io_err)?);
    let chunk_size = chunk_size.unwrap_or_else(|| auto_chunk_size(stamp.size));
    if let Some(e) = catalog.find_unchanged(path, stamp, chunk_size) {
        progress(stamp.size);
        return Ok(Published { entry: e.clone(), reused: true });
    }
    let chunks = stamp.size.div_ceil(chunk_size as u64);
    if chunks > CHUNKS_PER_FILE_MAX as u64 {
        return Err(PublishError::TooManyChunks {
            path: path.into(),
            chunks,
            max: CHUNKS_PER_FILE_MAX,
        });
    }
    let chunk_hashes = hash_file(path, stamp.size, chunk_size, progress).map_err(io_err)?;
    // The hashes only describe the file if it did not change while we read it.
    if FileStamp::of(&fs::metadata(path).map_err(io_err)?) != stamp {
        return Err(PublishError::Changed { path: path.into() });
    }
    let info = FileInfo {
        file_id: FileId::from_manifest(stamp.size, chunk_size, &chunk_hashes),
        name: path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
        size: stamp.size,
        chunk_size,
        creation_time: stamp.mtime_ns.div_euclid(1_000_000_000),
        chunk_hashes,
    };
    Ok(Published { entry: CatalogEntry { info, path: path.into(), stamp }, reused: false })
}

/// Publishes every regular file under `paths`: hashes what changed (all cores), records the
/// manifests in the catalog, and returns one result per file in a stable order. Chunks are
/// `chunk_size` bytes, or [`auto_chunk_size`] of each file when `None`. `progress`
/// receives the number of bytes each finished piece covered. Directories are also
/// recorded as collections ([`publish_tree`] with [`UnsafePolicy::Refuse`]).
pub fn publish(
    catalog: &mut Catalog,
    paths: &[PathBuf],
    chunk_size: Option<u32>,
    progress: &(dyn Fn(u64) + Sync),
) -> Vec<Result<Published, PublishError>> {
    publish_tree(catalog, paths, chunk_size, UnsafePolicy::Refuse, progress).files
}

/// A directory recorded as a collection.
#[derive(Debug, Clone)]
pub struct PublishedCollection {
    /// The directory as given.
    pub dir: PathBuf,
    /// The collection ID (a collection-domain ID, see `crypto::IdKind`).
    pub id: FileId,
    /// Display name: the directory's name.
    pub name: String,
    pub collection: Collection,
}

/// Everything [`publish_tree`] did.
#[derive(Debug)]
pub struct TreeOutcome {
    /// One result per regular file (unsafe entries refused are errors here).
    pub files: Vec<Result<Published, PublishError>>,
    /// One result per directory given: its collection, or why none was recorded.
    pub collections: Vec<Result<PublishedCollection, String>>,
    /// Entries left out, with the reason: under [`UnsafePolicy::Skip`], and always FuryMesh
    /// data directories and downloads' side files.
    pub skipped: Vec<(PathBuf, String)>,
}

/// [`publish`], and every directory in `paths` recorded as a collection of the files under
/// it (relative paths, file IDs, sizes, executable bits): its canonical encoding is
/// written to `DATA_DIR/collections/` and published like a file under the collection ID,
/// so seeders serve it. Entries a release cannot carry safely follow `policy`. A
/// directory with a file that failed, a name that is not UTF-8 or not a safe entry path
/// ([`check_entry_path`]), or names that collide is not recorded (the reason is in
/// `collections`); its files are published all the same.
pub fn publish_tree(
    catalog: &mut Catalog,
    paths: &[PathBuf],
    chunk_size: Option<u32>,
    policy: UnsafePolicy,
    progress: &(dyn Fn(u64) + Sync),
) -> TreeOutcome {
    let (found, roots) = expand(paths);
    let snapshot: &Catalog = catalog;
    let hashed: Vec<_> = found
        .into_par_iter()
        .map(|f| {
            f.and_then(|f| {
                let p = publish_one(snapshot, &f.path, chunk_size, progress)?;
                Ok((p, f.root))
            })
        })
        .collect();
    // Hashing ran on a snapshot without a lock (it may take minutes); the writes are a
    // read-modify-write under the catalog's lock, on the catalog as it is now.
    let lock = catalog.relock().map_err(|e| e.to_string());
    let mut files = Vec::with_capacity(hashed.len());
    let mut members: Vec<Vec<CollectionEntry>> = vec![Vec::new(); roots.len()];
    let mut broken: Vec<Option<String>> = vec![None; roots.len()];
    for r in hashed {
        let recorded = r.and_then(|(p, root)| {
            if !p.reused {
                match &lock {
                    Ok(_) => catalog.insert(p.entry.clone())?,
                    Err(why) => return Err(PublishError::CatalogUnavailable(why.clone())),
                }
            }
            Ok((p, root))
        });
        match recorded {
            Ok((p, root)) => {
                if let Some((r, rel)) = root {
                    match entry_of(&p.entry, &rel) {
                        Ok(e) => members[r].push(e),
                        Err(why) => {
                            broken[r].get_or_insert(why);
                        }
                    }
                }
                files.push(Ok(p));
            }
            Err(e) => {
                // Which root it belonged to is lost with the error: a failed file anywhere
                // keeps every directory from being recorded incomplete.
                for b in broken.iter_mut() {
                    b.get_or_insert_with(|| "a file under it failed to publish".to_owned());
                }
                files.push(Err(e));
            }
        }
    }
    let mut skipped = Vec::new();
    let mut collections = Vec::new();
    for (r, root) in roots.into_iter().enumerate() {
        skipped.extend(root.excluded.iter().cloned());
        if !root.problems.is_empty() {
            match policy {
                UnsafePolicy::Refuse => {
                    for (path, why) in &root.problems {
                        files.push(Err(PublishError::Unsafe {
                            path: path.clone(),
                            why: why.clone(),
                        }));
                    }
                    broken[r].get_or_insert_with(|| {
                        format!(
                            "{} entries cannot be published safely (--skip-unsafe leaves them out)",
                            root.problems.len()
                        )
                    });
                }
                UnsafePolicy::Skip => skipped.extend(root.problems.iter().cloned()),
            }
        }
        let result = match (broken[r].take(), &lock) {
            (Some(why), _) => Err(why),
            (None, Err(why)) => Err(format!("not recorded: {why}")),
            (None, Ok(_)) => record_collection(catalog, &root.dir, std::mem::take(&mut members[r])),
        };
        collections.push(
            result.map_err(|why| format!("{}: no collection recorded: {why}", root.dir.display())),
        );
    }
    TreeOutcome { files, collections, skipped }
}

/// The collection entry of a published file found at `rel` under its directory.
fn entry_of(e: &CatalogEntry, rel: &Path) -> Result<CollectionEntry, String> {
    use std::os::unix::fs::PermissionsExt;
    let path =
        rel.to_str().ok_or_else(|| format!("{}: the name is not UTF-8", rel.display()))?.to_owned();
    check_entry_path(&path).map_err(|why| format!("{path:?}: {why}"))?;
    let executable = fs::metadata(&e.path)
        .map_err(|io| format!("{}: {io}", e.path.display()))?
        .permissions()
        .mode()
        & 0o111
        != 0;
    Ok(CollectionEntry {
        path,
        file_id: e.info.file_id,
        size: e.info.size,
        chunk_size: e.info.chunk_size,
        executable,
    })
}

/// Encodes `entries` as a collection, writes the blob to `DATA_DIR/collections/` and
/// inserts it into `catalog` (whose lock the caller holds) under its collection ID.
fn record_collection(
    catalog: &mut Catalog,
    dir: &Path,
    entries: Vec<CollectionEntry>,
) -> Result<PublishedCollection, String> {
    let collection = Collection::new(entries).map_err(|e| e.to_string())?;
    let name = fs::canonicalize(dir)
        .ok()
        .and_then(|d| d.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_default();
    let entry =
        store_collection(catalog.data_dir(), &collection, &name).map_err(|e| e.to_string())?;
    let id = entry.info.file_id;
    if catalog.get(&id).is_none_or(|old| old.stamp != entry.stamp || old.path != entry.path) {
        catalog.insert(entry).map_err(|e| e.to_string())?;
    }
    Ok(PublishedCollection { dir: dir.to_owned(), id, name, collection })
}

/// Writes the canonical encoding of `collection` to `DATA_DIR/collections/<id>.fmc`
/// (unless it is there already, unchanged) and returns the catalog entry that serves it
/// under its collection ID, named `name`.
pub fn store_collection(
    data_dir: &Path,
    collection: &Collection,
    name: &str,
) -> io::Result<CatalogEntry> {
    let bytes = crate::wire::encode_collection(collection);
    let size = bytes.len() as u64;
    let chunk_size = auto_chunk_size(size);
    let chunk_hashes: Vec<ChunkHash> = bytes.chunks(chunk_size as usize).map(chunk_hash).collect();
    let id = FileId::collection_from_manifest(size, chunk_size, &chunk_hashes);
    let path = layout::collection_path(data_dir, &id);
    if fs::read(&path).ok().as_deref() != Some(&bytes[..]) {
        fs::create_dir_all(layout::collections_dir(data_dir))?;
        write_atomic(&path, &bytes)?;
    }
    let stamp = FileStamp::of(&fs::metadata(&path)?);
    let info = FileInfo {
        file_id: id,
        name: name.to_owned(),
        size,
        chunk_size,
        creation_time: stamp.mtime_ns.div_euclid(1_000_000_000),
        chunk_hashes,
    };
    Ok(CatalogEntry { info, path, stamp })
}

/// Sum of the sizes of the regular files under `paths` (for a progress bar's length).
pub fn total_bytes(paths: &[PathBuf]) -> u64 {
    paths
        .iter()
        .flat_map(|r| walkdir::WalkDir::new(r).follow_links(true))
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file())
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum()
}
