//! Publishing: chunk and hash files in place, using every core, and record manifests.

use std::fs::{self, File};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use rayon::prelude::*;

use super::{Catalog, CatalogEntry, CatalogError, FileStamp};
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

/// Expands `paths` (files and directories, recursively, following symlinks) into regular
/// files in a stable order. Unreadable entries become errors; other files still publish.
fn expand(paths: &[PathBuf]) -> Vec<Result<PathBuf, PublishError>> {
    let mut out = Vec::new();
    for root in paths {
        for ent in walkdir::WalkDir::new(root).follow_links(true).sort_by_file_name() {
            match ent {
                Ok(e) if e.file_type().is_file() => out.push(
                    fs::canonicalize(e.path())
                        .map_err(|source| PublishError::Io { path: e.path().into(), source }),
                ),
                Ok(_) => {}
                Err(e) => {
                    let path = e.path().unwrap_or(root).to_path_buf();
                    let source =
                        e.into_io_error().unwrap_or_else(|| io::Error::other("symlink loop"));
                    out.push(Err(PublishError::Io { path, source }));
                }
            }
        }
    }
    out
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
/// receives the number of bytes each finished piece covered.
pub fn publish(
    catalog: &mut Catalog,
    paths: &[PathBuf],
    chunk_size: Option<u32>,
    progress: &(dyn Fn(u64) + Sync),
) -> Vec<Result<Published, PublishError>> {
    let files = expand(paths);
    let snapshot: &Catalog = catalog;
    let results: Vec<_> = files
        .into_par_iter()
        .map(|f| f.and_then(|p| publish_one(snapshot, &p, chunk_size, progress)))
        .collect();
    // Hashing ran on a snapshot without a lock (it may take minutes); the writes are a
    // read-modify-write under the catalog's lock, on the catalog as it is now.
    let lock = catalog.relock().map_err(|e| e.to_string());
    results
        .into_iter()
        .map(|r| {
            let p = r?;
            if !p.reused {
                match &lock {
                    Ok(_) => catalog.insert(p.entry.clone())?,
                    Err(why) => return Err(PublishError::CatalogUnavailable(why.clone())),
                }
            }
            Ok(p)
        })
        .collect()
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
