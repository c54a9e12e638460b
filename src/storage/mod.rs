//! Storage: the catalog of published files, memory maps, and crash-safe writes.
//!
//! Owns the data directory layout ([`layout`]: every path under `DATA_DIR`), manifest
//! persistence, chunking and hashing of published files, and the only `unsafe` code of the
//! crate (`mmap.rs`). May not touch the network or key material.
//!
//! Every persisted file is written with [`write_atomic`]: temporary file, fsync, rename,
//! fsync of the directory, so a `kill -9` at any instant leaves the old or the new version.

pub mod layout;
mod lock;
#[allow(unsafe_code)]
mod mmap;
mod partial;
mod publish;

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

pub use lock::{lock_exclusive, lock_shared, try_lock_exclusive, DownloadClaim, LockFile};
pub use mmap::MappedFile;
pub use partial::reverify_chunks;
pub use publish::{
    publish, publish_tree, store_collection, total_bytes, PublishError, Published,
    PublishedCollection, TreeOutcome, UnsafePolicy,
};

use crate::collection::Collection;
use crate::crypto::{FileId, IdKind};
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

/// Whether a published file on disk is still the one that was hashed (the seeder checks
/// the same size and modification time before it serves a chunk, and refuses otherwise).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FileState {
    /// Size and modification time as when it was published.
    Intact,
    /// Size or modification time differ: peers are refused its chunks.
    Changed,
    /// It is gone or cannot be read.
    Missing,
}

impl FileState {
    /// `ok`, `changed` or `missing`: the state as the API, `ls --json` and the UI show it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Intact => "ok",
            Self::Changed => "changed",
            Self::Missing => "missing",
        }
    }

    /// What the state means to an operator, and what to do (`None` when intact).
    pub fn advice(self) -> Option<&'static str> {
        match self {
            Self::Intact => None,
            Self::Changed => Some(
                "changed on disk since publish: peers are refused its chunks and it is no \
                 longer announced; republish it (publish PATH) or unpublish it",
            ),
            Self::Missing => Some(
                "missing on disk since publish: peers are refused its chunks and it is no \
                 longer announced; put it back and republish it, or unpublish it",
            ),
        }
    }
}

impl CatalogEntry {
    /// Whether the file is still as published: one `stat` of its path (size and mtime
    /// against the catalog's stamp).
    pub fn state(&self) -> FileState {
        match fs::metadata(&self.path) {
            Ok(m) if m.is_file() && FileStamp::of(&m) == self.stamp => FileState::Intact,
            Ok(_) => FileState::Changed,
            Err(_) => FileState::Missing,
        }
    }

    /// Whether this entry serves a collection's encoded list (a blob under
    /// `DATA_DIR/collections/` whose manifest hashes in the collection domain) rather than
    /// a file. Only such blobs pay for the manifest check.
    pub fn is_collection(&self) -> bool {
        layout::is_collection_blob(&self.path) && self.info.kind() == Some(IdKind::Collection)
    }
}

/// Reads the collection a catalog entry serves and decodes it, checked like a peer's blob.
/// Errors: the blob cannot be read, or does not decode (as text).
pub fn read_collection(entry: &CatalogEntry) -> Result<Collection, String> {
    let bytes = fs::read(&entry.path).map_err(|e| format!("{}: {e}", entry.path.display()))?;
    wire::decode_collection(&bytes).map_err(|e| format!("{}: {e}", entry.path.display()))
}

/// Errors reading or writing the catalog.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("cannot read catalog directory {dir}: {source}")]
    ReadDir { dir: PathBuf, source: io::Error },
    #[error("cannot write manifest {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
    #[error("cannot lock the catalog ({path}): {source}")]
    Lock { path: PathBuf, source: io::Error },
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
    /// IDs whose manifest names a path that a newer manifest names too: not listed, and
    /// their manifests are deleted by the next write.
    stale: Vec<FileId>,
}

impl Catalog {
    /// Loads every manifest under [`layout::catalog_dir`]. A missing directory is an empty
    /// catalog; an unreadable or corrupt manifest is skipped and listed in `skipped`.
    ///
    /// One entry per path: if several manifests name the same path (a catalog written
    /// before publishing replaced them, or a crash between writing the new manifest and
    /// removing the old one), the one hashed from the newest mtime counts and the others
    /// are listed in `stale` (not served, not announced; the next write removes them).
    pub fn load(data_dir: &Path) -> Result<Self, CatalogError> {
        let dir = layout::catalog_dir(data_dir);
        let mut cat = Self { data_dir: data_dir.to_owned(), ..Self::default() };
        let rd = match fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(cat),
            Err(source) => return Err(CatalogError::ReadDir { dir, source }),
        };
        let mut names: Vec<PathBuf> = rd.flatten().map(|e| e.path()).collect();
        // A stable order, so ties between stale manifests resolve the same way every time.
        names.sort();
        for path in names {
            if !layout::is_manifest(&path) {
                continue;
            }
            match fs::read(&path)
                .map_err(|e| e.to_string())
                .and_then(|b| wire::decode_manifest(&b).map_err(|e| e.to_string()))
            {
                Ok((info, p, mtime_ns)) => {
                    let stamp = FileStamp { size: info.size, mtime_ns };
                    let entry = CatalogEntry { info, path: p, stamp };
                    // The entry this path names now, if it still is that path's: an ID
                    // can have moved to another path (the same content published there)
                    // or been evicted through it since.
                    let current =
                        cat.by_path.get(&entry.path).copied().filter(|old| {
                            cat.entries.get(old).is_some_and(|e| e.path == entry.path)
                        });
                    if let Some(old) = current {
                        let keep_old = cat.entries[&old].stamp.mtime_ns >= stamp.mtime_ns;
                        let loser = if keep_old { entry.info.file_id } else { old };
                        cat.stale.push(loser);
                        if keep_old {
                            continue;
                        }
                        cat.entries.remove(&old);
                    }
                    cat.by_path.insert(entry.path.clone(), entry.info.file_id);
                    cat.entries.insert(entry.info.file_id, entry);
                }
                Err(why) => cat.skipped.push((path, why)),
            }
        }
        Ok(cat)
    }

    /// Takes the catalog's write lock (waiting for another writer to finish) and reloads
    /// the catalog as it is now, so a change made under the returned lock is a
    /// read-modify-write that loses no other command's entries. Hold the lock until the
    /// last insert.
    pub fn relock(&mut self) -> Result<LockFile, CatalogError> {
        let path = layout::catalog_lock_path(&self.data_dir);
        let lock = fs::create_dir_all(layout::catalog_dir(&self.data_dir))
            .and_then(|()| LockFile::acquire(&path))
            .map_err(|source| CatalogError::Lock { path, source })?;
        *self = Self::load(&self.data_dir)?;
        Ok(lock)
    }

    /// [`Catalog::load`] under the catalog's write lock (see [`Catalog::relock`]).
    pub fn load_for_update(data_dir: &Path) -> Result<(Self, LockFile), CatalogError> {
        let mut catalog = Self { data_dir: data_dir.to_owned(), ..Self::default() };
        let lock = catalog.relock()?;
        Ok((catalog, lock))
    }

    fn manifest_path(&self, id: &FileId) -> PathBuf {
        layout::manifest_path(&self.data_dir, id)
    }

    /// Persists `entry` atomically and adds it to the catalog, replacing what was published
    /// from the same path before: one entry per path, so a file changed and published again
    /// is listed and announced once, under its new ID. The new manifest is written before
    /// the old one is removed (a crash in between leaves both, and [`Catalog::load`] keeps
    /// the newer).
    pub fn insert(&mut self, entry: CatalogEntry) -> Result<(), CatalogError> {
        let id = entry.info.file_id;
        let path = self.manifest_path(&id);
        let write = || -> io::Result<()> {
            fs::create_dir_all(layout::catalog_dir(&self.data_dir))?;
            let bytes = wire::encode_manifest(&entry.info, &entry.path, entry.stamp.mtime_ns);
            write_atomic(&path, &bytes)
        };
        write().map_err(|source| CatalogError::Write { path, source })?;
        // The same content at another path: that path no longer has an entry of its own.
        if let Some(other) = self.entries.get(&id).filter(|e| e.path != entry.path) {
            let other = other.path.clone();
            self.by_path.remove(&other);
        }
        let replaced = self.by_path.insert(entry.path.clone(), id).filter(|old| *old != id);
        if let Some(old) = replaced {
            self.entries.remove(&old);
            self.stale.push(old);
        }
        self.entries.insert(id, entry);
        self.remove_stale()
    }

    /// Removes `id` from the catalog and deletes its manifest (the published file itself is
    /// never touched). Returns false if it was not listed. Call it under the catalog's
    /// write lock ([`Catalog::load_for_update`]).
    pub fn remove(&mut self, id: &FileId) -> Result<bool, CatalogError> {
        let Some(entry) = self.entries.remove(id) else { return Ok(false) };
        if self.by_path.get(&entry.path) == Some(id) {
            self.by_path.remove(&entry.path);
        }
        self.stale.push(*id);
        self.remove_stale()?;
        Ok(true)
    }

    /// Deletes the manifests of entries replaced by a newer one at the same path (unless
    /// that ID is still listed: the same content published from another path).
    fn remove_stale(&mut self) -> Result<(), CatalogError> {
        for id in std::mem::take(&mut self.stale) {
            if self.entries.contains_key(&id) {
                continue;
            }
            let path = self.manifest_path(&id);
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(source) => return Err(CatalogError::Write { path, source }),
            }
        }
        Ok(())
    }

    /// The data directory this catalog belongs to.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
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

    /// What unpublishing `id` takes back, `id` first: a file ID is that file alone. A
    /// collection ID is the collection and, unless `keep_files`, the files it brought: each
    /// of its files that is still served from inside the directory it was published from
    /// (the path most of its files share, less their entry paths) and that no other
    /// collection in the catalog lists. A file that is also published from elsewhere, or
    /// belongs to another release, stays. Empty if `id` is not in the catalog.
    pub fn takeback(&self, id: &FileId, keep_files: bool) -> Vec<FileId> {
        let Some(entry) = self.get(id) else { return Vec::new() };
        let mut out = vec![*id];
        if keep_files || !entry.is_collection() {
            return out;
        }
        let Ok(coll) = read_collection(entry) else { return out };
        let others: std::collections::HashSet<FileId> = self
            .entries()
            .filter(|o| o.info.file_id != *id && o.is_collection())
            .filter_map(|o| read_collection(o).ok())
            .flat_map(|c| c.entries.into_iter().map(|m| m.file_id))
            .collect();
        // The directory it was published from: where most of its files are served from.
        let mut roots: std::collections::BTreeMap<PathBuf, usize> = Default::default();
        for m in &coll.entries {
            let rel = Path::new(&m.path);
            let Some(f) = self.get(&m.file_id) else { continue };
            if f.path.ends_with(rel) {
                if let Some(root) = f.path.ancestors().nth(rel.components().count()) {
                    *roots.entry(root.to_owned()).or_default() += 1;
                }
            }
        }
        let Some(root) = roots.into_iter().max_by_key(|(_, n)| *n).map(|(r, _)| r) else {
            return out;
        };
        for m in &coll.entries {
            let inside = self.get(&m.file_id).is_some_and(|f| f.path == root.join(&m.path));
            if inside && !others.contains(&m.file_id) && !out.contains(&m.file_id) {
                out.push(m.file_id);
            }
        }
        out
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
