//! Throughput of the per-byte primitives on the data path, against memcpy as the limit.
//!
//! - SHA-256 through `furymesh::crypto::chunk_hash`: every chunk is verified with it; and
//!   the same digest from `sha2` and from `ring::digest` directly, the evidence for the
//!   choice between them.
//! - xxh3-64 (`xxhash-rust`): the non-adversarial checksum the crate already depends on.
//! - AES-256-GCM seal and open: the pure-Rust `aes-gcm` crate (out of place), `ring`
//!   (BoringSSL's assembly; in place, so timed with a copy into the buffer first), and the
//!   record layer itself (`Sealer::seal_in_place` / `Opener::open_in_place`: its backend,
//!   nonce and AAD, no copy). The evidence for the record layer's choice of backend.
//! - `memcpy` (`copy_from_slice`) of the same bytes: the reference limit; every other
//!   primitive must at least read each byte once.
//!
//! Each runs over a 512 KiB buffer (the default chunk) and a 16 KiB buffer (a typical
//! record or SCTP message size), reported as bytes per second. Run with
//! `cargo bench --bench primitives` (about a minute and a half); see docs/microbench-results.md.

// A benchmark times real work: `iter_custom` reads the clock directly (clippy.toml confines
// clock reads to node::clock inside the crate, not in benches).
#![allow(clippy::disallowed_methods)]

use std::hint::black_box;
use std::time::Duration;

use aes_gcm::aead::inout::InOutBuf;
use aes_gcm::aead::{AeadInOut, KeyInit};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

use furymesh::crypto::{chunk_hash, Opener, RecordAad, RekeyLimits, Sealer};
use sha2::Digest;

/// Buffer sizes measured: the default chunk and a small record.
const SIZES_BYTES: [usize; 2] = [512 * 1024, 16 * 1024];
/// Associated data for the AEAD: roughly a chunk header (file ID + chunk index).
const AAD: &[u8] = &[7u8; 36];

/// Deterministic, incompressible-looking bytes (the primitives do not care, but a buffer of
/// zeros could hide page-sharing effects on the first touch).
fn input(len: usize) -> Vec<u8> {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn primitives(c: &mut Criterion) {
    // A fixed key and nonce: fine for timing, never for real traffic (a nonce must not be
    // reused under one key).
    let cipher = Aes256Gcm::new(&Key::<Aes256Gcm>::from([0x42; 32]));
    let nonce = Nonce::from([0x24; 12]);

    for len in SIZES_BYTES {
        let mut g = c.benchmark_group(format!("primitives/{}KiB", len / 1024));
        g.throughput(Throughput::Bytes(len as u64));
        let data = input(len);
        let mut out = vec![0u8; len];

        g.bench_function(BenchmarkId::from_parameter("memcpy"), |b| {
            b.iter(|| {
                out.copy_from_slice(black_box(&data));
                black_box(&mut out);
            })
        });
        g.bench_function(BenchmarkId::from_parameter("sha256"), |b| {
            b.iter(|| chunk_hash(black_box(&data)))
        });
        g.bench_function(BenchmarkId::from_parameter("sha256_sha2"), |b| {
            b.iter(|| sha2::Sha256::digest(black_box(&data)))
        });
        g.bench_function(BenchmarkId::from_parameter("sha256_ring"), |b| {
            b.iter(|| ring::digest::digest(&ring::digest::SHA256, black_box(&data)))
        });
        assert_eq!(
            sha2::Sha256::digest(&data).as_slice(),
            ring::digest::digest(&ring::digest::SHA256, &data).as_ref()
        );
        g.bench_function(BenchmarkId::from_parameter("xxh3_64"), |b| {
            b.iter(|| xxhash_rust::xxh3::xxh3_64(black_box(&data)))
        });

        // Seal out of place (plaintext → separate ciphertext buffer), as a sender encrypting
        // straight from a memory map would.
        g.bench_function(BenchmarkId::from_parameter("aes256gcm_seal"), |b| {
            b.iter(|| {
                let io = InOutBuf::new(black_box(&data), &mut out).expect("equal lengths");
                cipher.encrypt_inout_detached(&nonce, AAD, io).expect("seal")
            })
        });

        // Open out of place from a fixed ciphertext so every iteration checks a valid tag
        // (GCM checks the tag before decrypting: a failing open would skip the CTR pass).
        let mut sealed = data.clone();
        let tag =
            cipher.encrypt_inout_detached(&nonce, AAD, sealed.as_mut_slice().into()).expect("seal");
        g.bench_function(BenchmarkId::from_parameter("aes256gcm_open"), |b| {
            b.iter(|| {
                let io = InOutBuf::new(black_box(&sealed), &mut out).expect("equal lengths");
                cipher.decrypt_inout_detached(&nonce, AAD, io, &tag).expect("valid tag")
            })
        });
        // Checked outside the timed closures (a filtered run skips them).
        cipher
            .decrypt_inout_detached(
                &nonce,
                AAD,
                InOutBuf::new(&sealed, &mut out).expect("len"),
                &tag,
            )
            .expect("valid tag");
        assert_eq!(out, data, "open must restore the plaintext");

        // ring seals and opens in place only: copy into the buffer first, as a sender using
        // it would have to (the copy is part of what it would cost us, and is timed).
        let ring_key = ring::aead::LessSafeKey::new(
            ring::aead::UnboundKey::new(&ring::aead::AES_256_GCM, &[7u8; 32]).expect("key"),
        );
        let ring_nonce = || ring::aead::Nonce::assume_unique_for_key([3u8; 12]);
        g.bench_function(BenchmarkId::from_parameter("ring_aes256gcm_seal"), |b| {
            b.iter(|| {
                out.copy_from_slice(black_box(&data));
                ring_key
                    .seal_in_place_separate_tag(ring_nonce(), ring::aead::Aad::from(AAD), &mut out)
                    .expect("seal")
            })
        });
        out.copy_from_slice(&data);
        let ring_tag = ring_key
            .seal_in_place_separate_tag(ring_nonce(), ring::aead::Aad::from(AAD), &mut out)
            .expect("seal");
        let ring_sealed = out.clone();
        // Copy the sealed record into `buf` and open it there, as a receiver would.
        let ring_open = |buf: &mut Vec<u8>| {
            buf.copy_from_slice(black_box(&ring_sealed));
            let aad = ring::aead::Aad::from(AAD);
            ring_key
                .open_in_place_separate_tag(ring_nonce(), aad, ring_tag, buf, 0..)
                .map(|p| p.len())
                .expect("valid tag")
        };
        g.bench_function(BenchmarkId::from_parameter("ring_aes256gcm_open"), |b| {
            b.iter(|| ring_open(&mut out))
        });
        ring_open(&mut out);
        assert_eq!(out, data, "ring's open must restore the plaintext");

        // The record layer as the seeder and downloader use it: seal a chunk record in
        // place, open it in place. The opener takes records in order, so every iteration
        // seals and opens one record and only the half being measured is timed.
        let aad = RecordAad::chunk([5; 32], 0, len as u32);
        let secret = zeroize::Zeroizing::new([6; 32]);
        let mut sealer = Sealer::new(secret.clone(), RekeyLimits::PROTOCOL);
        let mut opener = Opener::new(secret, RekeyLimits::PROTOCOL);
        out.copy_from_slice(&data);
        let mut record = |b: &mut criterion::Bencher<'_>, time_seal: bool| {
            b.iter_custom(|iters| {
                let mut timed = Duration::ZERO;
                for _ in 0..iters {
                    let t = std::time::Instant::now();
                    let tag = sealer.seal_in_place(&aad, black_box(&mut out)).expect("seal");
                    let sealed_at = t.elapsed();
                    let t = std::time::Instant::now();
                    opener.open_in_place(&aad, black_box(&mut out), &tag).expect("valid tag");
                    timed += if time_seal { sealed_at } else { t.elapsed() };
                }
                timed
            })
        };
        g.bench_function(BenchmarkId::from_parameter("record_seal_in_place"), |b| record(b, true));
        g.bench_function(BenchmarkId::from_parameter("record_open_in_place"), |b| record(b, false));
        assert_eq!(out, data, "the record layer must restore the plaintext");
        g.finish();
    }
}

criterion_group! {
    name = benches;
    // 20 benchmarks × (1 s warm-up + 3 s measurement) ≈ 1.5 min for a full run.
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(50);
    targets = primitives
}
criterion_main!(benches);
