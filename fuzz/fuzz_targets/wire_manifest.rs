//! Catalog manifests (`DATA_DIR/catalog/*.fmm`): `wire::decode_manifest` on arbitrary bytes.
//! A manifest that decodes passes `FileInfo::check`, and `decode(encode(x)) == x`.
#![no_main]

use furymesh::config::CHUNKS_PER_FILE_MAX;
use furymesh::wire::{decode_manifest, encode_manifest};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok((info, path, mtime_ns)) = decode_manifest(data) else { return };
    info.check().expect("decoded manifest passes check");
    use std::os::unix::ffi::OsStrExt;
    let bytes = path.as_os_str().as_bytes();
    assert!(!bytes.is_empty() && !bytes.contains(&0), "a path a file can have");
    assert!(info.chunk_count() <= CHUNKS_PER_FILE_MAX);
    let covered: u64 = (0..info.chunk_count()).map(|i| info.chunk_len(i)).sum();
    assert_eq!(covered, info.size);
    let again = encode_manifest(&info, &path, mtime_ns);
    assert_eq!(decode_manifest(&again), Ok((info, path, mtime_ns)), "decode(encode(x)) == x");
});
