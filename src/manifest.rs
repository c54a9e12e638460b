//! The manifest of a published file ([`FileInfo`]): its size, chunk size and chunk hashes,
//! and the rule that makes it trustworthy ([`FileInfo::check`]: the file ID is the hash of
//! the rest). Owned here rather than by its codec: the catalog, the resume state, the
//! downloader and the wire all use the same value; `wire` only encodes and decodes it.
//! Pure: no I/O.

use crate::config::{CHUNKS_PER_FILE_MAX, CHUNK_SIZE_MAX_BYTES, CHUNK_SIZE_MIN_BYTES};
use crate::crypto::{ChunkHash, FileId, IdKind};

/// A manifest: everything a downloader needs to fetch and verify a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileInfo {
    /// SHA-256 over the canonical manifest encoding ([`FileId::from_manifest`]).
    pub file_id: FileId,
    /// File name without directories (a hint for the downloader; never a path).
    pub name: String,
    /// File size in bytes.
    pub size: u64,
    /// Bytes per chunk; every chunk but the last is this long.
    pub chunk_size: u32,
    /// Unix seconds when the file was published.
    pub creation_time: i64,
    /// SHA-256 of each chunk, in file order.
    pub chunk_hashes: Vec<ChunkHash>,
}

/// Why a manifest is not self-consistent. Small and `Copy`: decoders wrap it
/// (`wire::DecodeError::BadManifest`), so a peer that sends one is to blame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    /// The chunk size is outside `CHUNK_SIZE_MIN_BYTES..=CHUNK_SIZE_MAX_BYTES`.
    #[error("chunk size {chunk_size} out of range")]
    ChunkSizeOutOfRange {
        /// The chunk size claimed, in bytes.
        chunk_size: u32,
    },
    /// The number of chunk hashes is not `ceil(size / chunk_size)`, or exceeds
    /// `CHUNKS_PER_FILE_MAX`.
    #[error("{hashes} chunk hashes for {chunks} chunks")]
    ChunkCountMismatch {
        /// Hashes carried.
        hashes: usize,
        /// Chunks the size and chunk size imply.
        chunks: u64,
    },
    /// The file ID is not the hash of the manifest.
    #[error("file ID is not the hash of the manifest")]
    IdMismatch,
}

impl FileInfo {
    /// Number of chunks.
    pub fn chunk_count(&self) -> u32 {
        // Bounded by CHUNKS_PER_FILE_MAX at construction and decode.
        self.chunk_hashes.len() as u32
    }

    /// Byte range of chunk `index` within the file.
    pub fn chunk_range(&self, index: u32) -> std::ops::Range<u64> {
        let start = index as u64 * self.chunk_size as u64;
        start..(start + self.chunk_size as u64).min(self.size)
    }

    /// Bytes in chunk `index` (the last one may be short).
    pub fn chunk_len(&self, index: u32) -> u64 {
        let r = self.chunk_range(index);
        r.end - r.start
    }

    /// Checks that size, chunk size and hash count agree, and that the ID is the hash of the
    /// manifest, in the file domain or the collection domain (which one is returned). A
    /// manifest that passes authenticates every chunk hash in it.
    pub fn check(&self) -> Result<IdKind, ManifestError> {
        let chunk_size = self.chunk_size;
        if !(CHUNK_SIZE_MIN_BYTES..=CHUNK_SIZE_MAX_BYTES).contains(&chunk_size) {
            return Err(ManifestError::ChunkSizeOutOfRange { chunk_size });
        }
        let chunks = self.size.div_ceil(chunk_size as u64);
        let hashes = self.chunk_hashes.len();
        if chunks != hashes as u64 || chunks > CHUNKS_PER_FILE_MAX as u64 {
            return Err(ManifestError::ChunkCountMismatch { hashes, chunks });
        }
        if FileId::from_manifest(self.size, chunk_size, &self.chunk_hashes) == self.file_id {
            return Ok(IdKind::File);
        }
        if FileId::collection_from_manifest(self.size, chunk_size, &self.chunk_hashes)
            == self.file_id
        {
            return Ok(IdKind::Collection);
        }
        Err(ManifestError::IdMismatch)
    }

    /// What this manifest's ID names, by hash domain (`None` if it is the hash of neither:
    /// a manifest that would fail [`FileInfo::check`]).
    pub fn kind(&self) -> Option<IdKind> {
        self.check().ok()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::crypto::chunk_hash;

    /// A valid manifest of `n` chunks, the last one a byte short (shared with wire's tests).
    pub(crate) fn sample(n: u32, chunk_size: u32) -> FileInfo {
        let size = n as u64 * chunk_size as u64 - 1;
        let chunk_hashes: Vec<_> = (0..n).map(|i| chunk_hash(&i.to_le_bytes())).collect();
        FileInfo {
            file_id: FileId::from_manifest(size, chunk_size, &chunk_hashes),
            name: "x.iso".into(),
            size,
            chunk_size,
            creation_time: 7,
            chunk_hashes,
        }
    }

    #[test]
    fn check_accepts_an_honest_manifest_and_names_each_lie() {
        let good = sample(3, CHUNK_SIZE_MIN_BYTES);
        assert_eq!(good.check(), Ok(IdKind::File));
        assert_eq!(good.chunk_len(2), CHUNK_SIZE_MIN_BYTES as u64 - 1);

        let mut small = sample(3, CHUNK_SIZE_MIN_BYTES);
        small.chunk_size -= 1;
        assert_eq!(
            small.check(),
            Err(ManifestError::ChunkSizeOutOfRange { chunk_size: CHUNK_SIZE_MIN_BYTES - 1 })
        );

        let mut short = sample(3, CHUNK_SIZE_MIN_BYTES);
        short.chunk_hashes.pop();
        assert_eq!(short.check(), Err(ManifestError::ChunkCountMismatch { hashes: 2, chunks: 3 }));

        let mut forged = sample(3, CHUNK_SIZE_MIN_BYTES);
        forged.chunk_hashes[1] = chunk_hash(b"evil");
        assert_eq!(forged.check(), Err(ManifestError::IdMismatch));
    }
}
