//! Collections: a release (a directory tree) published as one unit, and the rules that
//! make its entry paths safe to write.
//!
//! A [`Collection`] lists files by relative path with their file ID, size and executable
//! bit, sorted by path bytes. Its canonical encoding (`wire::encode_collection`) is
//! published as a small blob of its own, served like any file; the collection ID is the
//! hash of that blob's manifest in the collection domain
//! ([`FileId::collection_from_manifest`]), so a downloader verifies every byte of the
//! collection before it reads a path, and every file of it like any other download.
//!
//! Entry paths come from peers: [`check_entry_path`] and [`Collection::check`] refuse every
//! path that could name something outside the output directory or collide with another
//! entry on the target filesystem (ARCHITECTURE.md, "Collections"). Pure: no I/O.

use std::collections::{BTreeSet, HashMap};

use unicode_normalization::UnicodeNormalization;

use crate::config::{COLLECTION_ENTRIES_MAX, COLLECTION_NAME_MAX_BYTES, COLLECTION_PATH_MAX_BYTES};
use crate::crypto::FileId;

/// One file of a collection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CollectionEntry {
    /// Relative path, `/`-separated, UTF-8 (see [`check_entry_path`]).
    pub path: String,
    /// The file's ID (its manifest must have it and `size`).
    pub file_id: FileId,
    /// Size in bytes.
    pub size: u64,
    /// Chunk size of the file's manifest, in bytes (with `size`, enough to check a file
    /// on disk against `file_id` by hashing it).
    pub chunk_size: u32,
    /// Any execute bit was set when published; the downloader sets them (where read bits
    /// are set) on the verified file.
    pub executable: bool,
}

/// The files of a release, sorted by the bytes of their paths, each path once.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Collection {
    pub entries: Vec<CollectionEntry>,
}

/// Why an entry path is refused. Each variant is one hostile (or non-portable) case.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("the path is empty")]
    Empty,
    #[error("the path is absolute")]
    Absolute,
    #[error("a component is `..`")]
    DotDot,
    #[error("a component is `.`")]
    Dot,
    #[error("a component is empty (`//` or a trailing `/`)")]
    EmptyComponent,
    #[error("the path contains NUL")]
    Nul,
    #[error("the path contains a control character (U+{0:04X})")]
    Control(u32),
    #[error("the path contains a backslash")]
    Backslash,
    #[error("a component is {len} bytes, more than {}", COLLECTION_NAME_MAX_BYTES)]
    NameTooLong { len: usize },
    #[error("the path is {len} bytes, more than {}", COLLECTION_PATH_MAX_BYTES)]
    PathTooLong { len: usize },
    #[error("another entry has the same path")]
    Duplicate,
    #[error("it is the same name as {other:?} after Unicode normalization and case folding")]
    FoldedDuplicate { other: String },
    #[error("{other:?} needs it to be a directory")]
    FileIsDirectory { other: String },
}

/// Why a collection is refused (decoding it, or checking one built locally).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CollectionError {
    /// Entry `index` (in the order given) has a bad path.
    #[error("entry {index} {path:?}: {reason}")]
    Path { index: usize, path: String, reason: PathError },
    #[error("{count} entries, more than {}", COLLECTION_ENTRIES_MAX)]
    TooManyEntries { count: usize },
    /// The entries are not in canonical order (sorted by path bytes): another encoder, or
    /// a forged blob. Refused so one collection has one encoding and one ID.
    #[error("entries are not sorted by path (entry {index})")]
    NotSorted { index: usize },
    /// The encoding did not verify or misses a field.
    #[error("not a collection: {0}")]
    Malformed(String),
}

/// Checks one entry path on its own: relative, `/`-separated, every component a plain
/// name (not empty, `.` or `..`; no NUL, control character or backslash; at most
/// `COLLECTION_NAME_MAX_BYTES`), the whole at most `COLLECTION_PATH_MAX_BYTES`. Collisions
/// between entries are [`Collection::check`]'s.
pub fn check_entry_path(path: &str) -> Result<(), PathError> {
    if path.is_empty() {
        return Err(PathError::Empty);
    }
    if path.len() > COLLECTION_PATH_MAX_BYTES {
        return Err(PathError::PathTooLong { len: path.len() });
    }
    if path.starts_with('/') {
        return Err(PathError::Absolute);
    }
    for c in path.chars() {
        match c {
            '\0' => return Err(PathError::Nul),
            '\\' => return Err(PathError::Backslash),
            c if c.is_control() => return Err(PathError::Control(c as u32)),
            _ => {}
        }
    }
    for comp in path.split('/') {
        match comp {
            "" => return Err(PathError::EmptyComponent),
            "." => return Err(PathError::Dot),
            ".." => return Err(PathError::DotDot),
            c if c.len() > COLLECTION_NAME_MAX_BYTES => {
                return Err(PathError::NameTooLong { len: c.len() })
            }
            _ => {}
        }
    }
    Ok(())
}

/// The key two names collide under on a filesystem that normalizes Unicode (APFS, HFS+)
/// or folds case (NTFS, FAT, APFS and ext4 casefold directories by default): NFC, then
/// lowercase, then NFC again (lowercasing may denormalize).
fn folded(s: &str) -> String {
    s.nfc().collect::<String>().to_lowercase().nfc().collect()
}

impl Collection {
    /// Sorts `entries` canonically and checks them ([`Collection::check`]).
    pub fn new(mut entries: Vec<CollectionEntry>) -> Result<Self, CollectionError> {
        entries.sort_by(|a, b| a.path.as_bytes().cmp(b.path.as_bytes()));
        let c = Self { entries };
        c.check()?;
        Ok(c)
    }

    /// Checks every entry path ([`check_entry_path`]), the canonical order, the entry
    /// limit, and that no two entries collide: the same path, the same name after Unicode
    /// normalization and case folding (checked everywhere, not only where the target
    /// folds: a release whose names differ only so is not portable, and detecting folding
    /// per directory is unreliable), or a file that another entry needs as a directory.
    pub fn check(&self) -> Result<(), CollectionError> {
        let n = self.entries.len();
        if n > COLLECTION_ENTRIES_MAX {
            return Err(CollectionError::TooManyEntries { count: n });
        }
        let bad = |index: usize, reason: PathError| CollectionError::Path {
            index,
            path: self.entries[index].path.clone(),
            reason,
        };
        for (i, e) in self.entries.iter().enumerate() {
            check_entry_path(&e.path).map_err(|r| bad(i, r))?;
        }
        for i in 1..n {
            match self.entries[i - 1].path.as_bytes().cmp(self.entries[i].path.as_bytes()) {
                std::cmp::Ordering::Less => {}
                std::cmp::Ordering::Equal => return Err(bad(i, PathError::Duplicate)),
                std::cmp::Ordering::Greater => return Err(CollectionError::NotSorted { index: i }),
            }
        }
        // Folded file paths → entry, and folded directory prefixes → the entry needing them.
        let mut files: HashMap<String, usize> = HashMap::with_capacity(n);
        let mut dirs: HashMap<String, usize> = HashMap::new();
        for (i, e) in self.entries.iter().enumerate() {
            let key = folded(&e.path);
            if let Some(&j) = files.get(&key) {
                let other = self.entries[j].path.clone();
                return Err(bad(i, PathError::FoldedDuplicate { other }));
            }
            if let Some(&j) = dirs.get(&key) {
                let other = self.entries[j].path.clone();
                return Err(bad(i, PathError::FileIsDirectory { other }));
            }
            for (pos, _) in key.match_indices('/') {
                let dir = &key[..pos];
                if let Some(&j) = files.get(dir) {
                    let other = self.entries[i].path.clone();
                    return Err(bad(j, PathError::FileIsDirectory { other }));
                }
                dirs.entry(dir.to_owned()).or_insert(i);
            }
            files.insert(key, i);
        }
        Ok(())
    }

    /// Sum of the entries' sizes, in bytes.
    pub fn total_size(&self) -> u64 {
        self.entries.iter().map(|e| e.size).sum()
    }

    /// The distinct directories the entries need (relative, `/`-separated), parents
    /// before children.
    pub fn directories(&self) -> Vec<String> {
        let mut dirs = BTreeSet::new();
        for e in &self.entries {
            for (pos, _) in e.path.match_indices('/') {
                dirs.insert(e.path[..pos].to_owned());
            }
        }
        // A parent is a prefix of its children, so it sorts first.
        dirs.into_iter().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(path: &str) -> CollectionEntry {
        CollectionEntry {
            path: path.into(),
            file_id: FileId([1; 32]),
            size: 1,
            chunk_size: 4096,
            executable: false,
        }
    }

    fn refused(paths: &[&str]) -> PathError {
        let entries = paths.iter().map(|p| entry(p)).collect();
        match Collection::new(entries) {
            Err(CollectionError::Path { reason, .. }) => reason,
            other => panic!("{paths:?} accepted or refused otherwise: {other:?}"),
        }
    }

    #[test]
    fn plain_trees_pass_and_sort_canonically() {
        let c =
            Collection::new(vec![entry("b/x"), entry("a"), entry("b/a/y"), entry("é")]).unwrap();
        let paths: Vec<_> = c.entries.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["a", "b/a/y", "b/x", "é"]);
        assert_eq!(c.directories(), ["b", "b/a"]);
        assert_eq!(c.total_size(), 4);
    }

    #[test]
    fn each_hostile_path_is_refused_with_its_reason() {
        assert_eq!(refused(&[""]), PathError::Empty);
        assert_eq!(refused(&["/etc/passwd"]), PathError::Absolute);
        assert_eq!(refused(&["../x"]), PathError::DotDot);
        assert_eq!(refused(&["a/../../x"]), PathError::DotDot);
        assert_eq!(refused(&["a/./x"]), PathError::Dot);
        assert_eq!(refused(&["a//x"]), PathError::EmptyComponent);
        assert_eq!(refused(&["a/"]), PathError::EmptyComponent);
        assert_eq!(refused(&["a\0b"]), PathError::Nul);
        assert_eq!(refused(&["a\nb"]), PathError::Control(0x0a));
        assert_eq!(refused(&["a\u{1b}[2Jb"]), PathError::Control(0x1b));
        assert_eq!(refused(&["a\u{85}b"]), PathError::Control(0x85));
        assert_eq!(refused(&["..\\x"]), PathError::Backslash);
        assert_eq!(refused(&[&"n".repeat(256)]), PathError::NameTooLong { len: 256 });
        let long = vec!["d".repeat(200); 21].join("/");
        assert_eq!(refused(&[&long]), PathError::PathTooLong { len: long.len() });
        assert_eq!(
            refused(&["README", "readme"]),
            PathError::FoldedDuplicate { other: "README".into() }
        );
        // "é" precomposed (NFC) and decomposed (NFD): one name on APFS and HFS+.
        assert_eq!(
            refused(&["caf\u{e9}", "cafe\u{301}"]),
            PathError::FoldedDuplicate { other: "cafe\u{301}".into() }
        );
        assert_eq!(refused(&["a", "a/b"]), PathError::FileIsDirectory { other: "a/b".into() });
        assert_eq!(refused(&["A", "a/b"]), PathError::FileIsDirectory { other: "a/b".into() });
    }

    #[test]
    fn exact_duplicates_and_unsorted_entries_are_refused() {
        let dup = Collection { entries: vec![entry("a"), entry("a")] };
        assert!(matches!(
            dup.check(),
            Err(CollectionError::Path { reason: PathError::Duplicate, .. })
        ));
        let unsorted = Collection { entries: vec![entry("b"), entry("a")] };
        assert_eq!(unsorted.check(), Err(CollectionError::NotSorted { index: 1 }));
    }
}
