//! The record layer: AES-256-GCM under per-direction keys with counter nonces and a
//! deterministic HKDF ratchet.
//!
//! A [`Session`](super::Session) yields one [`Sealer`] (our direction) and one [`Opener`]
//! (the peer's). Each direction has a 32-byte *traffic secret*; from it
//!
//! ```text
//! key        = HKDF-Expand(secret, "furymesh rec key v1", 32)
//! nonce_base = HKDF-Expand(secret, "furymesh rec iv v1", 12)
//! next       = HKDF-Expand(secret, "furymesh rec next v1", 32)   (the ratchet)
//! nonce(seq) = nonce_base XOR (0u32 ‖ seq u64 BE)
//! ```
//!
//! `seq` counts records under the current key from 0. Nonces are never random and never
//! reused: `seq` only goes up, and the key changes before it could wrap. The opener expects
//! exactly the next `seq`, so a replayed, reordered or dropped record fails its tag.
//!
//! # Rekeying, and why these numbers
//!
//! Both sides ratchet to `next` after [`RekeyLimits::PROTOCOL`]: 2^24 records or 2^34 bytes
//! (16 GiB) under one key, whichever comes first. The binding GCM limit for counter nonces
//! is confidentiality: the distinguishing advantage grows like (blocks)^2 / 2^129
//! (draft-irtf-cfrg-aead-limits). 2^34 bytes = 2^30 blocks gives about 2^-69, far below the
//! usual 2^-57 target (which would allow 2^36 blocks = 1 TiB); 2^24 records is far below the
//! 2^32 invocation bound NIST SP 800-38D sets even for random nonces. Integrity is not the
//! limit: the first failed open poisons the [`Opener`] and the connection closes, so an
//! attacker gets one forgery attempt per connection. A 512 KiB chunk record costs one
//! HKDF ratchet every 32,768 records: the rekey is free in practice.
//!
//! # Associated data
//!
//! Every record binds [`RecordAad`]: `kind u8 ‖ file_id [32] ‖ chunk_index u32 LE ‖ length
//! u32 LE`. A chunk record cannot be replayed as another chunk, file or kind, and a length
//! that does not match the buffer is refused before the cipher runs.
//!
//! # Sealing chunk payloads
//!
//! The seeder preads a chunk into its send buffer and seals it there
//! ([`Sealer::seal_in_place`]); it never seals straight from a memory map, whose pages can
//! vanish under a truncated file (`storage::mmap`). Tags are returned detached so the caller
//! can append them or gather them into the same write.
//!
//! # The cipher
//!
//! AES-256-GCM comes from `ring` (BoringSSL's assembly, which on this project's CPUs runs
//! AES-CTR and GHASH in one stitched VAES/VPCLMULQDQ pass), behind the small internal
//! [`Gcm`] trait; `Backend` names the one implementation in use, so swapping it is a
//! one-line change. Why ring and not the pure-Rust `aes-gcm` crate, with the numbers:
//! ARCHITECTURE.md ("Records") and docs/microbench-results.md. A differential test in this
//! file checks that ring and `aes-gcm` produce byte-identical records and open each
//! other's. Both directions work in place.

use std::fmt;

use hkdf::Hkdf;
use sha2::Sha256;
use zeroize::Zeroizing;

/// Bytes of a GCM tag.
pub const TAG_BYTES: usize = 16;
/// Bytes of the encoded [`RecordAad`].
pub const AAD_BYTES: usize = 1 + 32 + 4 + 4;
/// Largest plaintext of one record (16 MiB; chunks are 512 KiB by default).
pub const RECORD_PLAINTEXT_BYTES_MAX: usize = 16 << 20;

const LABEL_KEY: &[u8] = b"furymesh rec key v1";
const LABEL_IV: &[u8] = b"furymesh rec iv v1";
const LABEL_NEXT: &[u8] = b"furymesh rec next v1";

/// What a record carries; bound into the associated data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum RecordKind {
    /// Requests, manifests, errors: anything but chunk payload.
    Control = 1,
    /// Chunk payload bytes.
    Chunk = 2,
    /// The sender's last record: the peer knows the stream was not truncated.
    Close = 3,
}

/// The associated data of one record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RecordAad {
    /// What the record carries.
    pub kind: RecordKind,
    /// The file the record belongs to (all zero for control and close records).
    pub file_id: [u8; 32],
    /// The chunk index (0 for control and close records).
    pub chunk_index: u32,
    /// Plaintext length: must equal the buffer's length.
    pub length: u32,
}

impl RecordAad {
    /// AAD of a control record of `length` bytes.
    pub fn control(length: u32) -> Self {
        Self { kind: RecordKind::Control, file_id: [0; 32], chunk_index: 0, length }
    }

    /// AAD of the payload of chunk `chunk_index` of `file_id`.
    pub fn chunk(file_id: [u8; 32], chunk_index: u32, length: u32) -> Self {
        Self { kind: RecordKind::Chunk, file_id, chunk_index, length }
    }

    /// AAD of the (empty) close record.
    pub fn close() -> Self {
        Self { kind: RecordKind::Close, file_id: [0; 32], chunk_index: 0, length: 0 }
    }

    /// The canonical encoding fed to GCM.
    pub fn encode(&self) -> [u8; AAD_BYTES] {
        let mut out = [0u8; AAD_BYTES];
        out[0] = self.kind as u8;
        out[1..33].copy_from_slice(&self.file_id);
        out[33..37].copy_from_slice(&self.chunk_index.to_le_bytes());
        out[37..41].copy_from_slice(&self.length.to_le_bytes());
        out
    }
}

/// Why a record was refused. Every variant but `LengthMismatch`/`TooLong` on the sealing
/// side is the peer's fault (or an attacker's on the path): close the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// The AAD's length field does not match the buffer (or src and dst differ in length).
    #[error("record length {buffer_len} does not match its header length {header_len}")]
    LengthMismatch { header_len: u32, buffer_len: usize },
    /// The record is longer than [`RECORD_PLAINTEXT_BYTES_MAX`].
    #[error("record of {len} bytes exceeds the {RECORD_PLAINTEXT_BYTES_MAX}-byte limit")]
    TooLong { len: usize },
    /// The tag does not verify: the record was tampered with, replayed, reordered,
    /// truncated, or another record was dropped before it.
    #[error("record {seq} (key epoch {epoch}) failed authentication")]
    Authentication { epoch: u64, seq: u64 },
    /// An earlier record failed: this direction is dead.
    #[error("the record stream already failed authentication; the connection must close")]
    Poisoned,
}

/// When both directions ratchet to a new key. Both peers must use the same limits: the
/// protocol fixes [`RekeyLimits::PROTOCOL`]; smaller values exist for tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RekeyLimits {
    /// Records under one key before the ratchet.
    pub records_max: u64,
    /// Plaintext bytes under one key before the ratchet (checked after each record).
    pub bytes_max: u64,
}

impl RekeyLimits {
    /// The protocol's limits (see the module docs for the reasoning).
    pub const PROTOCOL: Self = Self { records_max: 1 << 24, bytes_max: 1 << 34 };
}

/// What the record layer needs from an AES-256-GCM implementation: in-place seal and open
/// with a detached 16-byte tag, a 96-bit nonce and associated data. The record layer owns
/// nonces, lengths and the ratchet; an implementation only runs the cipher.
trait Gcm: Sized {
    /// A cipher under the 32-byte key.
    fn new(key: &[u8; 32]) -> Self;
    /// Encrypts `buf` in place and returns the tag. Callers bound `buf` far below GCM's
    /// 2^36-byte limit ([`RECORD_PLAINTEXT_BYTES_MAX`]).
    fn seal_in_place(&self, nonce: [u8; 12], aad: &[u8], buf: &mut [u8]) -> [u8; TAG_BYTES];
    /// Verifies `tag` and decrypts `buf` in place. `Err` when the tag does not verify; `buf`
    /// then holds no plaintext (ring zeroes it, aes-gcm leaves the ciphertext).
    fn open_in_place(
        &self,
        nonce: [u8; 12],
        aad: &[u8],
        buf: &mut [u8],
        tag: &[u8; TAG_BYTES],
    ) -> Result<(), AuthFailed>;
}

/// A tag that does not verify.
#[derive(Debug)]
struct AuthFailed;

/// The AES-256-GCM implementation the record layer runs on: the one place the choice is
/// made.
type Backend = RingGcm;

/// AES-256-GCM from ring.
struct RingGcm(ring::aead::LessSafeKey);

impl Gcm for RingGcm {
    fn new(key: &[u8; 32]) -> Self {
        // ring refuses only keys of the wrong length; AES_256_GCM takes exactly 32 bytes.
        let key = ring::aead::UnboundKey::new(&ring::aead::AES_256_GCM, key)
            .expect("AES-256 key is 32 bytes");
        Self(ring::aead::LessSafeKey::new(key))
    }

    fn seal_in_place(&self, nonce: [u8; 12], aad: &[u8], buf: &mut [u8]) -> [u8; TAG_BYTES] {
        let tag = self
            .0
            .seal_in_place_separate_tag(
                ring::aead::Nonce::assume_unique_for_key(nonce),
                ring::aead::Aad::from(aad),
                buf,
            )
            // ring fails only past GCM's input limit, which record lengths never reach.
            .expect("GCM input within limits");
        let mut out = [0u8; TAG_BYTES];
        out.copy_from_slice(tag.as_ref());
        out
    }

    fn open_in_place(
        &self,
        nonce: [u8; 12],
        aad: &[u8],
        buf: &mut [u8],
        tag: &[u8; TAG_BYTES],
    ) -> Result<(), AuthFailed> {
        self.0
            .open_in_place_separate_tag(
                ring::aead::Nonce::assume_unique_for_key(nonce),
                ring::aead::Aad::from(aad),
                ring::aead::Tag::from(*tag),
                buf,
                0..,
            )
            .map(|_| ())
            .map_err(|_| AuthFailed)
    }
}

/// One direction's key state.
struct Direction<G: Gcm = Backend> {
    secret: Zeroizing<[u8; 32]>,
    cipher: G,
    nonce_base: [u8; 12],
    epoch: u64,
    seq: u64,
    bytes: u64,
    limits: RekeyLimits,
}

impl<G: Gcm> Direction<G> {
    fn new(secret: Zeroizing<[u8; 32]>, limits: RekeyLimits) -> Self {
        assert!(limits.records_max >= 1 && limits.bytes_max >= 1, "rekey limits must be positive");
        assert!(limits.records_max <= RekeyLimits::PROTOCOL.records_max);
        assert!(limits.bytes_max <= RekeyLimits::PROTOCOL.bytes_max);
        let (cipher, nonce_base) = Self::keys(&secret);
        Self { secret, cipher, nonce_base, epoch: 0, seq: 0, bytes: 0, limits }
    }

    fn keys(secret: &[u8; 32]) -> (G, [u8; 12]) {
        let hk = expander(secret);
        let mut key = Zeroizing::new([0u8; 32]);
        let mut iv = [0u8; 12];
        // HKDF-Expand of 32 and 12 bytes from SHA-256 never exceeds the 255-block limit.
        hk.expand(LABEL_KEY, key.as_mut()).expect("32 bytes is a valid HKDF length");
        hk.expand(LABEL_IV, &mut iv).expect("12 bytes is a valid HKDF length");
        (G::new(&key), iv)
    }

    fn nonce(&self) -> [u8; 12] {
        let mut n = self.nonce_base;
        for (b, c) in n[4..].iter_mut().zip(self.seq.to_be_bytes()) {
            *b ^= c;
        }
        n
    }

    /// Called after every record, sealed or opened, with its length.
    fn advance(&mut self, len: usize) {
        self.seq += 1;
        self.bytes += len as u64;
        if self.seq >= self.limits.records_max || self.bytes >= self.limits.bytes_max {
            let mut next = Zeroizing::new([0u8; 32]);
            expander(&self.secret)
                .expand(LABEL_NEXT, next.as_mut())
                .expect("32 bytes is a valid HKDF length");
            let (cipher, nonce_base) = Self::keys(&next);
            self.secret = next;
            self.cipher = cipher;
            self.nonce_base = nonce_base;
            self.epoch += 1;
            self.seq = 0;
            self.bytes = 0;
        }
    }

    /// Seals the next record in place. A refused length consumes no nonce.
    fn seal(&mut self, aad: &RecordAad, buf: &mut [u8]) -> Result<[u8; TAG_BYTES], RecordError> {
        check_lengths(aad, buf.len())?;
        let tag = self.cipher.seal_in_place(self.nonce(), &aad.encode(), buf);
        self.advance(buf.len());
        Ok(tag)
    }

    /// Opens the next record in place. On a failed tag `buf` is zeroed, whatever the
    /// backend does, so no unauthenticated plaintext is ever left in it.
    fn open(
        &mut self,
        aad: &RecordAad,
        buf: &mut [u8],
        tag: &[u8; TAG_BYTES],
    ) -> Result<(), RecordError> {
        check_lengths(aad, buf.len())?;
        if self.cipher.open_in_place(self.nonce(), &aad.encode(), buf, tag).is_err() {
            buf.fill(0);
            return Err(RecordError::Authentication { epoch: self.epoch, seq: self.seq });
        }
        self.advance(buf.len());
        Ok(())
    }
}

fn expander(secret: &[u8; 32]) -> Hkdf<Sha256> {
    // A 32-byte PRK is exactly SHA-256's output size, which from_prk accepts.
    Hkdf::<Sha256>::from_prk(secret).expect("32-byte PRK")
}

fn check_lengths(aad: &RecordAad, len: usize) -> Result<(), RecordError> {
    if len > RECORD_PLAINTEXT_BYTES_MAX {
        return Err(RecordError::TooLong { len });
    }
    if aad.length as usize != len {
        return Err(RecordError::LengthMismatch { header_len: aad.length, buffer_len: len });
    }
    Ok(())
}

/// Encrypts our direction's records, in order.
pub struct Sealer {
    dir: Direction,
}

impl Sealer {
    /// Our direction, keyed by a traffic secret. Real connections get theirs from
    /// [`Session::into_records`](super::Session::into_records); this is public so the
    /// record fuzz target (`fuzz/fuzz_targets/record.rs`) and the cipher measurements
    /// (`furymesh bench`'s limits, `benches/primitives.rs`) can drive the layer without a
    /// handshake. Two sealers under one secret reuse nonces: never send what such a pair
    /// seals.
    ///
    /// # Panics
    /// If a limit is zero or above [`RekeyLimits::PROTOCOL`].
    pub fn new(secret: Zeroizing<[u8; 32]>, limits: RekeyLimits) -> Self {
        Self { dir: Direction::new(secret, limits) }
    }

    /// Encrypts `buf` in place and returns the tag. `aad.length` must equal `buf.len()`.
    ///
    /// # Errors
    ///
    /// [`RecordError::TooLong`] or [`RecordError::LengthMismatch`]; nothing is sealed and no
    /// nonce is consumed.
    pub fn seal_in_place(
        &mut self,
        aad: &RecordAad,
        buf: &mut [u8],
    ) -> Result<[u8; TAG_BYTES], RecordError> {
        self.dir.seal(aad, buf)
    }

    /// Records sealed under the current key, and how many ratchets happened.
    pub fn position(&self) -> (u64, u64) {
        (self.dir.epoch, self.dir.seq)
    }
}

/// Decrypts the peer's records, in order. After the first failure it refuses everything.
pub struct Opener {
    dir: Direction,
    poisoned: bool,
}

impl Opener {
    /// The peer's direction, keyed by its traffic secret. Real connections get theirs from
    /// [`Session::into_records`](super::Session::into_records); public for the record fuzz
    /// target, like [`Sealer::new`].
    ///
    /// # Panics
    /// If a limit is zero or above [`RekeyLimits::PROTOCOL`].
    pub fn new(secret: Zeroizing<[u8; 32]>, limits: RekeyLimits) -> Self {
        Self { dir: Direction::new(secret, limits), poisoned: false }
    }

    /// Verifies and decrypts `buf` in place.
    ///
    /// # Errors
    ///
    /// Any [`RecordError`]; the opener is then poisoned and refuses every later record. A
    /// failed tag leaves `buf` zeroed (the cipher decrypts while it authenticates, so the
    /// bytes are wiped rather than released); a refused length leaves `buf` untouched.
    pub fn open_in_place(
        &mut self,
        aad: &RecordAad,
        buf: &mut [u8],
        tag: &[u8; TAG_BYTES],
    ) -> Result<(), RecordError> {
        if self.poisoned {
            return Err(RecordError::Poisoned);
        }
        let opened = self.dir.open(aad, buf, tag);
        self.poisoned = opened.is_err();
        opened
    }

    /// Records opened under the current key, and how many ratchets happened.
    pub fn position(&self) -> (u64, u64) {
        (self.dir.epoch, self.dir.seq)
    }
}

impl fmt::Debug for Sealer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sealer")
            .field("epoch", &self.dir.epoch)
            .field("seq", &self.dir.seq)
            .field("keys", &"<redacted>")
            .finish()
    }
}

impl fmt::Debug for Opener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Opener")
            .field("epoch", &self.dir.epoch)
            .field("seq", &self.dir.seq)
            .field("poisoned", &self.poisoned)
            .field("keys", &"<redacted>")
            .finish()
    }
}

/// A sealer and the opener of its records from one secret: what two ends of a connection
/// hold after a handshake, for tests and simulations that skip the handshake. Never use it
/// for a real connection (both ends must derive their secrets from a handshake).
#[cfg(any(test, feature = "sim"))]
pub fn test_pair(secret: [u8; 32]) -> (Sealer, Opener) {
    let s = Zeroizing::new(secret);
    (Sealer::new(s.clone(), RekeyLimits::PROTOCOL), Opener::new(s, RekeyLimits::PROTOCOL))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(limits: RekeyLimits) -> (Sealer, Opener) {
        let s = Zeroizing::new([42u8; 32]);
        (Sealer::new(s.clone(), limits), Opener::new(s, limits))
    }

    fn sealed(s: &mut Sealer, aad: &RecordAad, data: &[u8]) -> (Vec<u8>, [u8; TAG_BYTES]) {
        let mut buf = data.to_vec();
        let tag = s.seal_in_place(aad, &mut buf).unwrap();
        (buf, tag)
    }

    #[test]
    fn round_trip_in_place() {
        let (mut s, mut o) = pair(RekeyLimits::PROTOCOL);
        let data = b"chunk payload bytes".to_vec();
        let aad = RecordAad::chunk([7; 32], 3, data.len() as u32);
        for _ in 0..2 {
            let (mut ct, tag) = sealed(&mut s, &aad, &data);
            assert_ne!(ct, data);
            o.open_in_place(&aad, &mut ct, &tag).unwrap();
            assert_eq!(ct, data);
        }
        assert_eq!((s.position(), o.position()), ((0, 2), (0, 2)));
    }

    #[test]
    fn every_flipped_bit_is_rejected_and_nothing_is_released() {
        let data: Vec<u8> = (0..64u8).collect();
        let aad = RecordAad::chunk([1; 32], 9, 64);
        let (mut s, _) = pair(RekeyLimits::PROTOCOL);
        let (ct, tag) = sealed(&mut s, &aad, &data);
        // Ciphertext bits.
        for bit in 0..ct.len() * 8 {
            let (_, mut o) = pair(RekeyLimits::PROTOCOL);
            let mut bad = ct.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            assert!(matches!(
                o.open_in_place(&aad, &mut bad, &tag),
                Err(RecordError::Authentication { .. })
            ));
            assert!(bad.iter().all(|&b| b == 0), "a failed open must release nothing");
            assert_eq!(o.open_in_place(&aad, &mut ct.clone(), &tag), Err(RecordError::Poisoned));
        }
        // Tag bits.
        for bit in 0..TAG_BYTES * 8 {
            let (_, mut o) = pair(RekeyLimits::PROTOCOL);
            let mut t = tag;
            t[bit / 8] ^= 1 << (bit % 8);
            assert!(o.open_in_place(&aad, &mut ct.clone(), &t).is_err());
        }
        // AAD bits.
        let enc = aad.encode();
        for bit in 0..AAD_BYTES * 8 {
            let mut e = enc;
            e[bit / 8] ^= 1 << (bit % 8);
            let kind = match e[0] {
                1 => RecordKind::Control,
                2 => RecordKind::Chunk,
                3 => RecordKind::Close,
                _ => continue, // not representable: the decoder would refuse it
            };
            let bad = RecordAad {
                kind,
                file_id: e[1..33].try_into().unwrap(),
                chunk_index: u32::from_le_bytes(e[33..37].try_into().unwrap()),
                length: u32::from_le_bytes(e[37..41].try_into().unwrap()),
            };
            let (_, mut o) = pair(RekeyLimits::PROTOCOL);
            assert!(o.open_in_place(&bad, &mut ct.clone(), &tag).is_err(), "aad bit {bit}");
        }
    }

    #[test]
    fn replay_reorder_drop_and_truncation_are_rejected() {
        let (mut s, _) = pair(RekeyLimits::PROTOCOL);
        let aad = RecordAad::control(5);
        let recs: Vec<_> = (0..3u8).map(|i| sealed(&mut s, &aad, &[i; 5])).collect();

        // Replay of record 0 after record 0.
        let (_, mut o) = pair(RekeyLimits::PROTOCOL);
        o.open_in_place(&aad, &mut recs[0].0.clone(), &recs[0].1).unwrap();
        assert!(o.open_in_place(&aad, &mut recs[0].0.clone(), &recs[0].1).is_err());

        // Reorder: 1 before 0.
        let (_, mut o) = pair(RekeyLimits::PROTOCOL);
        assert!(o.open_in_place(&aad, &mut recs[1].0.clone(), &recs[1].1).is_err());

        // Drop: 0 then 2.
        let (_, mut o) = pair(RekeyLimits::PROTOCOL);
        o.open_in_place(&aad, &mut recs[0].0.clone(), &recs[0].1).unwrap();
        assert!(o.open_in_place(&aad, &mut recs[2].0.clone(), &recs[2].1).is_err());

        // Truncated record: header says 5, 4 bytes arrive.
        let (_, mut o) = pair(RekeyLimits::PROTOCOL);
        assert_eq!(
            o.open_in_place(&aad, &mut recs[0].0[..4].to_vec(), &recs[0].1),
            Err(RecordError::LengthMismatch { header_len: 5, buffer_len: 4 })
        );
        // ... or the header is rewritten to match: the tag fails.
        let (_, mut o) = pair(RekeyLimits::PROTOCOL);
        let short = RecordAad::control(4);
        assert!(o.open_in_place(&short, &mut recs[0].0[..4].to_vec(), &recs[0].1).is_err());
    }

    #[test]
    fn sealer_refuses_bad_lengths_without_consuming_a_nonce() {
        let (mut s, mut o) = pair(RekeyLimits::PROTOCOL);
        let mut buf = vec![0u8; 10];
        assert!(s.seal_in_place(&RecordAad::control(9), &mut buf).is_err());
        let big = vec![0u8; RECORD_PLAINTEXT_BYTES_MAX + 1];
        assert_eq!(
            s.seal_in_place(&RecordAad::control(big.len() as u32), &mut big.clone()),
            Err(RecordError::TooLong { len: big.len() })
        );
        assert_eq!(s.position(), (0, 0));
        let tag = s.seal_in_place(&RecordAad::control(10), &mut buf).unwrap();
        o.open_in_place(&RecordAad::control(10), &mut buf, &tag).unwrap();
    }

    #[test]
    fn rekey_at_record_and_byte_boundaries() {
        let limits = RekeyLimits { records_max: 3, bytes_max: 100 };
        let (mut s, mut o) = pair(limits);
        let mut nonces = std::collections::HashSet::new();
        let mut keys_seen = std::collections::HashSet::new();
        let lens = [1usize, 1, 1, 60, 50, 10, 0, 0, 0, 99, 1];
        let mut prev = (0, 0);
        for (i, &len) in lens.iter().enumerate() {
            // (epoch, seq) identifies the (key, nonce) pair: never twice.
            assert!(nonces.insert(s.position()), "record {i} reuses a nonce");
            keys_seen.insert(s.position().0);
            let aad = RecordAad::control(len as u32);
            let data = vec![i as u8; len];
            let (mut ct, tag) = sealed(&mut s, &aad, &data);
            o.open_in_place(&aad, &mut ct, &tag).unwrap();
            assert_eq!(ct, data);
            assert_eq!(s.position(), o.position(), "both sides ratchet in lockstep");
            assert!(s.position() > prev || s.position().1 == 0);
            prev = s.position();
        }
        // 3 records → epoch 1; 60+50 bytes → epoch 2; 10+0+0 records → 3; 99+1 bytes → 4.
        assert_eq!(s.position(), (4, 0));
        assert_eq!(keys_seen.len(), 4);

        // A record from the previous epoch replayed after the ratchet fails.
        let (mut s, mut o) = pair(limits);
        let aad = RecordAad::control(1);
        let old: Vec<_> = (0..3).map(|_| sealed(&mut s, &aad, &[1])).collect();
        for (ct, tag) in &old {
            o.open_in_place(&aad, &mut ct.clone(), tag).unwrap();
        }
        assert_eq!(o.position(), (1, 0));
        assert!(o.open_in_place(&aad, &mut old[0].0.clone(), &old[0].1).is_err());
    }

    /// AES-256-GCM from the pure-Rust `aes-gcm` crate (the record layer's cipher before
    /// ring): the independent implementation the chosen backend is checked against.
    struct RustCryptoGcm(aes_gcm::Aes256Gcm);

    impl Gcm for RustCryptoGcm {
        fn new(key: &[u8; 32]) -> Self {
            use aes_gcm::KeyInit;
            Self(aes_gcm::Aes256Gcm::new(&(*key).into()))
        }

        fn seal_in_place(&self, nonce: [u8; 12], aad: &[u8], buf: &mut [u8]) -> [u8; TAG_BYTES] {
            use aes_gcm::AeadInOut;
            let tag = self.0.encrypt_inout_detached(&nonce.into(), aad, buf.into()).unwrap();
            tag.into()
        }

        fn open_in_place(
            &self,
            nonce: [u8; 12],
            aad: &[u8],
            buf: &mut [u8],
            tag: &[u8; TAG_BYTES],
        ) -> Result<(), AuthFailed> {
            use aes_gcm::AeadInOut;
            let tag = (*tag).into();
            self.0
                .decrypt_inout_detached(&nonce.into(), aad, buf.into(), &tag)
                .map_err(|_| AuthFailed)
        }
    }

    /// One direction under `secret` on the chosen backend and on the reference.
    fn both(
        secret: [u8; 32],
        limits: RekeyLimits,
    ) -> (Direction<Backend>, Direction<RustCryptoGcm>) {
        (
            Direction::new(Zeroizing::new(secret), limits),
            Direction::new(Zeroizing::new(secret), limits),
        )
    }

    fn pattern(len: usize, seed: u32) -> Vec<u8> {
        (0..len as u32)
            .map(|j| (j.wrapping_mul(2_654_435_761).wrapping_add(seed) >> 24) as u8)
            .collect()
    }

    /// Seals `data` on both sides, checks the records are byte-identical, and that each
    /// side opens the other's record back to `data`.
    fn differential_record(
        sealers: &mut (Direction<Backend>, Direction<RustCryptoGcm>),
        openers: &mut (Direction<Backend>, Direction<RustCryptoGcm>),
        aad: &RecordAad,
        data: &[u8],
    ) -> (Vec<u8>, [u8; TAG_BYTES]) {
        let (mut a, mut b) = (data.to_vec(), data.to_vec());
        let tag_a = sealers.0.seal(aad, &mut a).unwrap();
        let tag_b = sealers.1.seal(aad, &mut b).unwrap();
        assert_eq!(a, b, "ciphertexts differ");
        assert_eq!(tag_a, tag_b, "tags differ");
        let record = (a.clone(), tag_a);
        openers.0.open(aad, &mut b, &tag_b).unwrap(); // the reference's record on ring
        openers.1.open(aad, &mut a, &tag_a).unwrap(); // ring's record on the reference
        assert_eq!(a, data);
        assert_eq!(b, data);
        record
    }

    #[test]
    fn ring_matches_aes_gcm_on_chunk_sized_records() {
        // Full 512 KiB chunks and sizes around the stitched code's block groups.
        let limits = RekeyLimits { records_max: 4, bytes_max: 1 << 21 };
        let mut sealers = both([9; 32], limits);
        let mut openers = both([9; 32], limits);
        for (i, len) in [512 << 10, 0, 1, 15, 16, 17, 255, 256, 257, 4095, 4096, 4097, 512 << 10]
            .into_iter()
            .enumerate()
        {
            let aad = RecordAad::chunk([i as u8; 32], i as u32, len as u32);
            differential_record(&mut sealers, &mut openers, &aad, &pattern(len, i as u32));
        }
        assert_eq!(sealers.0.epoch, 3, "the ratchet ran on both sides");
        assert_eq!((sealers.0.epoch, sealers.0.seq), (sealers.1.epoch, sealers.1.seq));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

        /// The chosen backend and aes-gcm make byte-identical records (same ciphertext,
        /// same tag) across random lengths, AADs and ratchets, open each other's, and both
        /// refuse the same tampered records (a flipped ciphertext, tag or AAD bit).
        #[test]
        fn chosen_backend_and_aes_gcm_agree(
            secret in proptest::prelude::any::<[u8; 32]>(),
            records_max in 1u64..6,
            bytes_max in 1u64..40_000,
            msgs in proptest::collection::vec(
                (0u8..3, proptest::prelude::any::<[u8; 32]>(), proptest::prelude::any::<u32>(),
                 0usize..9_000, 0u8..4, proptest::prelude::any::<usize>()),
                1..12,
            ),
        ) {
            let limits = RekeyLimits { records_max, bytes_max };
            let mut sealers = both(secret, limits);
            let mut openers = both(secret, limits);
            for (i, (kind, file_id, chunk_index, len, tamper, bit)) in msgs.into_iter().enumerate() {
                let aad = match kind {
                    0 => RecordAad::control(len as u32),
                    1 => RecordAad::chunk(file_id, chunk_index, len as u32),
                    _ => RecordAad::close(),
                };
                let len = aad.length as usize;
                let data = pattern(len, i as u32);
                // Seal on both; before opening the genuine records, offer both openers a
                // tampered copy: each must refuse it, wipe the buffer and stay in step.
                let (mut a, mut b) = (data.clone(), data.clone());
                let tag = sealers.0.seal(&aad, &mut a).unwrap();
                proptest::prop_assert_eq!(tag, sealers.1.seal(&aad, &mut b).unwrap());
                proptest::prop_assert_eq!(&a, &b);
                let (mut bad, mut bad_tag, mut bad_aad) = (a.clone(), tag, aad);
                match tamper {
                    1 if len > 0 => bad[bit % len] ^= 1 << (bit % 8),
                    2 => bad_tag[bit % TAG_BYTES] ^= 1 << (bit % 8),
                    3 => bad_aad.file_id[bit % 32] ^= 1 << (bit % 8),
                    _ => {}
                }
                if (bad.clone(), bad_tag, bad_aad) != (a.clone(), tag, aad) {
                    let mut x = bad.clone();
                    let refused = matches!(
                        openers.0.open(&bad_aad, &mut x, &bad_tag),
                        Err(RecordError::Authentication { .. })
                    );
                    proptest::prop_assert!(refused);
                    proptest::prop_assert!(x.iter().all(|&v| v == 0));
                    let mut y = bad.clone();
                    proptest::prop_assert!(openers.1.open(&bad_aad, &mut y, &bad_tag).is_err());
                }
                openers.0.open(&aad, &mut b, &tag).unwrap();
                openers.1.open(&aad, &mut a, &tag).unwrap();
                proptest::prop_assert_eq!(&a, &data);
                proptest::prop_assert_eq!(&b, &data);
                proptest::prop_assert_eq!(
                    (openers.0.epoch, openers.0.seq),
                    (openers.1.epoch, openers.1.seq)
                );
            }
        }
    }

    #[test]
    fn nonce_is_base_xor_counter() {
        let (mut s, _) = pair(RekeyLimits::PROTOCOL);
        let base = s.dir.nonce_base;
        assert_eq!(s.dir.nonce(), base);
        s.dir.seq = 0x0102_0304_0506_0708;
        let n = s.dir.nonce();
        assert_eq!(n[..4], base[..4]);
        for i in 0..8 {
            assert_eq!(n[4 + i], base[4 + i] ^ (i as u8 + 1));
        }
        assert!(format!("{s:?}").contains("redacted"));
    }
}
