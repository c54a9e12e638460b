//! A download's partial file after a crash: finding the chunks that were written but not
//! yet recorded in the resume state.
//!
//! `get` records a chunk in its resume state only after the chunk was verified, written and
//! fdatasynced, and it does so in batches, so a `kill -9` leaves up to a batch of correct
//! chunks on disk (or in the page cache) that the state does not claim. A chunk is correct
//! when its bytes hash to the manifest's chunk hash, however they got there, so a resumed
//! run hashes the unclaimed chunks and keeps those that match instead of fetching them
//! again. The caller must make them durable (fdatasync) before recording them.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

use rayon::prelude::*;

use crate::crypto::{chunk_hash, ChunkHash};
use crate::manifest::FileInfo;

/// Hashes the chunks `candidates` (indices into `info`'s chunks) of the partial file at
/// `path` and returns, ascending, those whose bytes hash to the manifest's chunk hash: the
/// same check a chunk received from a peer passes. Runs on rayon's pool (every core), one
/// `pread` per chunk into a per-thread buffer of `info.chunk_size` bytes.
///
/// A chunk that reads as all zeros (a hole left by `fallocate`, or never written) is not
/// hashed again: it matches exactly when the manifest's hash is the hash of that many
/// zeros, which is computed once per chunk length. So an untouched region costs a read and
/// a scan, not SHA-256, and a chunk of real zeros still counts.
///
/// Errors: the file cannot be opened or a chunk cannot be read in full (the caller checked
/// the file's size; a shorter file is an error, not a match). Indices past the manifest's
/// chunk count are ignored.
pub fn reverify_chunks(path: &Path, info: &FileInfo, candidates: &[u32]) -> io::Result<Vec<u32>> {
    let file = File::open(path)?;
    let n = info.chunk_count();
    let full_len = info.chunk_size as usize;
    let zeros_full = std::sync::OnceLock::<ChunkHash>::new();
    let zeros_last = std::sync::OnceLock::<ChunkHash>::new();
    let last = n.saturating_sub(1);
    let zero_hash = |i: u32, len: usize| {
        let cell = if i == last { &zeros_last } else { &zeros_full };
        *cell.get_or_init(|| chunk_hash(&vec![0u8; len]))
    };
    let mut found: Vec<u32> = candidates
        .par_iter()
        .copied()
        .filter(|&i| i < n)
        .map_init(
            || vec![0u8; full_len],
            |buf, i| -> io::Result<Option<u32>> {
                let r = info.chunk_range(i);
                let len = (r.end - r.start) as usize;
                let bytes = &mut buf[..len];
                file.read_exact_at(bytes, r.start)?;
                let got = if is_zero(bytes) { zero_hash(i, len) } else { chunk_hash(bytes) };
                Ok((got == info.chunk_hashes[i as usize]).then_some(i))
            },
        )
        .filter_map(Result::transpose)
        .collect::<io::Result<_>>()?;
    found.sort_unstable();
    Ok(found)
}

/// True when every byte is zero. Scans a page at a time (OR-folds vectorise) and stops at
/// the first page with data, so a chunk of real data costs little before it is hashed.
fn is_zero(bytes: &[u8]) -> bool {
    bytes.chunks(4096).all(|page| page.iter().fold(0u8, |acc, &b| acc | b) == 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::tests::sample;
    use std::io::Write;

    #[test]
    fn zero_scan_sees_any_set_byte() {
        for len in [0usize, 1, 7, 8, 9, 64, 65] {
            let mut v = vec![0u8; len];
            assert!(is_zero(&v));
            for i in 0..len {
                v[i] = 1;
                assert!(!is_zero(&v), "len {len}, byte {i}");
                v[i] = 0;
            }
        }
    }

    fn manifest_of(data: &[u8], chunk: u32) -> FileInfo {
        let mut info = sample(1, chunk);
        info.size = data.len() as u64;
        info.chunk_hashes = data.chunks(chunk as usize).map(chunk_hash).collect();
        info
    }

    #[test]
    fn keeps_matching_chunks_and_zero_chunks_only_when_they_hash_right() {
        // Chunks: 0 real data, 1 real zeros, 2 real data (short last chunk).
        let chunk = 4096u32;
        let mut data = vec![0u8; 2 * chunk as usize + 100];
        data[..chunk as usize].fill(7);
        data[2 * chunk as usize..].fill(9);
        let info = manifest_of(&data, chunk);
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("partial");
        // On disk: chunk 0 correct, chunk 1 zeros (correct by content), chunk 2 a hole.
        let mut disk = data.clone();
        disk[2 * chunk as usize..].fill(0);
        File::create(&p).unwrap().write_all(&disk).unwrap();
        assert_eq!(reverify_chunks(&p, &info, &[0, 1, 2, 99]).unwrap(), vec![0, 1]);
        // A torn chunk 0 (one byte off) does not count.
        disk[5] ^= 1;
        std::fs::write(&p, &disk).unwrap();
        assert_eq!(reverify_chunks(&p, &info, &[0, 2]).unwrap(), Vec::<u32>::new());
        // A file shorter than the manifest is an error, not a match.
        std::fs::write(&p, &data[..chunk as usize]).unwrap();
        assert!(reverify_chunks(&p, &info, &[1]).is_err());
    }
}
