//! Storage: the catalog of published files, memory maps, and crash-safe writes.
//!
//! Owns the data directory layout ([`layout`]: every path under `DATA_DIR`), manifest
//! persistence, chunking and hashing of published files, and the only `unsafe` code of the
//! crate (`mmap.rs`). May not touch the network or key material.
//!
//! Every persisted file is written with [`write_atomic`]: temporary file, fsync, rename,
//! fsync of the directory, so a `kill -9` at any instant leaves the old or the new version.

pub mod layout;
#[allow(unsafe_code)]
mod mmap;
mod publish;

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

pub use mmap::MappedFile;
pub use publish::{publish, total_bytes, PublishError, Published};

use crate::crypto::FileId;
use crate::manifest::FileInfo;
use crate::wire;

/// Writes `data` to `path` so that a crash at any instant leaves either the previous content
/// or the new one, never a mix: write a temporary file next to it, fsync, rename over, fsync
/// the directory.
pub fn write_atomic(path: &Path, data: &[u8]) -> io::Result<()> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new().prefix(".furymesh-tmp").tempfile_in(dir)?;
    tmp.write_all(data)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    File::open(dir)?.sync_all()
}

/// Size and modification time of a file, the cheap check that it is unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileStamp {
    pub size: u64,
    pub mtime_ns: i64,
}

impl FileStamp {
    pub fn of(meta: &fs::Metadata) -> Self {
        Self { size: meta.len(), mtime_ns: meta.mtime() * 1_000_000_000 + meta.mtime_nsec() }
    }
}

/// One published file.
#[derive(Debug, Clone)]
pub struct CatalogEntry {
    pub info: FileInfo,
    /// Absolute path of the file, served in place.
    pub path: PathBuf,
    /// Size and mtime when it was hashed.
    pub stamp: FileStamp,
}

/// Errors reading or writing the catalog.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("cannot read catalog directory {dir}: {source}")]
    ReadDir { dir: PathBuf, source: io::Error },
    #[error("cannot write manifest {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
}

/// The published files of a data directory, keyed by file ID.
#[derive(Debug, Default)]
pub struct Catalog {
    data_dir: PathBuf,
    entries: HashMap<FileId, CatalogEntry>,
    /// Path → ID of the entry last published from that path (identical files at several
    /// paths share one ID and one entry).
    by_path: HashMap<PathBuf, FileId>,
    /// Manifests that could not be read, with the reason (reported, never fatal).
    pub skipped: Vec<(PathBuf, String)>,
}

impl Catalog {
    /// Loads every manifest under [`layout::catalog_dir`]. A missing directory is an empty
    /// catalog; an unreadable or corrupt manifest is skipped and listed in `skipped`.
    pub fn load(data_dir: &Path) -> Result<Self, CatalogError> {
        let dir = layout::catalog_dir(data_dir);
        let mut cat = Self { data_dir: data_dir.to_owned(), ..Self::default() };
        let rd = match fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(cat),
            Err(source) => return Err(CatalogError::ReadDir { dir, source }),
        };
        for ent in rd.flatten() {
            let path = ent.path();
            if !layout::is_manifest(&path) {
                continue;
            }
            match fs::read(&path)
                .map_err(|e| e.to_string())
                .and_then(|b| wire::decode_manifest(&b).map_err(|e| e.to_string()))
            {
                Ok((info, p, mtime_ns)) => {
                    let stamp = FileStamp { size: info.size, mtime_ns };
                    cat.by_path.insert(p.clone(), info.file_id);
                    cat.entries.insert(info.file_id, CatalogEntry { info, path: p, stamp });
                }
                Err(why) => cat.skipped.push((path, why)),
            }
        }
        Ok(cat)
    }

    /// Persists `entry` atomically and adds it to the catalog.
    pub fn insert(&mut self, entry: CatalogEntry) -> Result<(), CatalogError> {
        let path = layout::manifest_path(&self.data_dir, &entry.info.file_id);
        let write = || -> io::Result<()> {
            fs::create_dir_all(layout::catalog_dir(&self.data_dir))?;
            let bytes = wire::encode_manifest(&entry.info, &entry.path, entry.stamp.mtime_ns);
            write_atomic(&path, &bytes)
        };
        write().map_err(|source| CatalogError::Write { path, source })?;
        self.by_path.insert(entry.path.clone(), entry.info.file_id);
        self.entries.insert(entry.info.file_id, entry);
        Ok(())
    }

    pub fn get(&self, id: &FileId) -> Option<&CatalogEntry> {
        self.entries.get(id)
    }

    pub fn entries(&self) -> impl Iterator<Item = &CatalogEntry> {
        self.entries.values()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entry for `path` if its size, mtime and chunk size are unchanged.
    pub fn find_unchanged(
        &self,
        path: &Path,
        stamp: FileStamp,
        chunk_size: u32,
    ) -> Option<&CatalogEntry> {
        let e = self.entries.get(self.by_path.get(path)?)?;
        (e.path == path && e.stamp == stamp && e.info.chunk_size == chunk_size).then_some(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_content() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("state");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        // No temporary files left behind.
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
