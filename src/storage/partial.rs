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
use std::ops::Range;
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
/// Chunks that were never written cost neither reads nor SHA-256: a chunk wholly inside a
/// hole (`SEEK_HOLE`; ext4 and XFS also report `fallocate`d extents never written as holes)
/// is zeros without reading it, and a chunk that reads as all zeros is not hashed again.
/// Either matches exactly when the manifest's hash is the hash of that many zeros
/// (computed once per chunk length), so a chunk of genuine zeros still counts and a hole
/// where data belongs never does.
///
/// Errors: the file cannot be opened, is shorter than `info.size` (`UnexpectedEof`: a
/// shorter file is an error, not a match), or a chunk cannot be read in full. Indices past
/// the manifest's chunk count are ignored.
pub fn reverify_chunks(path: &Path, info: &FileInfo, candidates: &[u32]) -> io::Result<Vec<u32>> {
    let file = File::open(path)?;
    if file.metadata()?.len() < info.size {
        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "shorter than the manifest says"));
    }
    let n = info.chunk_count();
    let full_len = info.chunk_size as usize;
    let zeros_full = std::sync::OnceLock::<ChunkHash>::new();
    let zeros_last = std::sync::OnceLock::<ChunkHash>::new();
    let last = n.saturating_sub(1);
    let zero_hash = |i: u32, len: usize| {
        let cell = if i == last { &zeros_last } else { &zeros_full };
        *cell.get_or_init(|| chunk_hash(&vec![0u8; len]))
    };
    let data = data_ranges(&file, info.size);
    let mut found: Vec<u32> = candidates
        .par_iter()
        .copied()
        .filter(|&i| i < n)
        .map_init(
            || vec![0u8; full_len],
            |buf, i| -> io::Result<Option<u32>> {
                let r = info.chunk_range(i);
                let len = (r.end - r.start) as usize;
                if !overlaps(&data, &r) {
                    return Ok((zero_hash(i, len) == info.chunk_hashes[i as usize]).then_some(i));
                }
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

/// The byte ranges of `file` below `size` that may hold data, ascending, from
/// `SEEK_DATA`/`SEEK_HOLE`; everything outside them reads as zeros. If the file system
/// cannot tell, the whole file counts as data (slower, never wrong).
fn data_ranges(file: &File, size: u64) -> Vec<Range<u64>> {
    use rustix::fs::{seek, SeekFrom};
    let everything = || std::iter::once(0..size).collect();
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < size {
        let start = match seek(file, SeekFrom::Data(pos)) {
            Ok(start) => start,
            // No data at or after `pos`.
            Err(rustix::io::Errno::NXIO) => break,
            Err(_) => return everything(),
        };
        let end = match seek(file, SeekFrom::Hole(start)) {
            Ok(end) if end > start => end,
            _ => return everything(),
        };
        if start < size {
            out.push(start..end.min(size));
        }
        pos = end;
    }
    out
}

/// Whether `r` intersects any of the ascending, disjoint `ranges`.
fn overlaps(ranges: &[Range<u64>], r: &Range<u64>) -> bool {
    // The first range that ends after `r` starts is the only candidate.
    let i = ranges.partition_point(|d| d.end <= r.start);
    ranges.get(i).is_some_and(|d| d.start < r.end)
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
    fn overlap_finds_the_ranges_a_chunk_touches() {
        let d = [10..20, 30..40];
        for (r, want) in [(0..10, false), (0..11, true), (19..30, true), (20..30, false)] {
            assert_eq!(overlaps(&d, &r), want, "{r:?}");
        }
        assert!(overlaps(&d, &(35..100)) && !overlaps(&d, &(40..100)) && !overlaps(&[], &(0..1)));
    }

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
        // Holes punched into the file (zeros without data) are judged without reading:
        // a hole where zeros belong counts, a hole where data belongs does not.
        let sparse = dir.path().join("sparse");
        let f = File::create(&sparse).unwrap();
        f.set_len(data.len() as u64).unwrap();
        f.write_all_at(&data[..chunk as usize], 0).unwrap();
        drop(f);
        assert_eq!(reverify_chunks(&sparse, &info, &[0, 1, 2]).unwrap(), vec![0, 1]);
        // A file shorter than the manifest is an error, not a match.
        std::fs::write(&p, &data[..chunk as usize]).unwrap();
        assert!(reverify_chunks(&p, &info, &[1]).is_err());
    }
}
