//! Content hashes, identities, the authenticated handshake and the record layer.
//!
//! Owns the file ID and chunk hash definitions, node IDs ([`id`]), node identities
//! ([`identity`]), the sans-IO handshake ([`handshake`]) and AES-256-GCM records
//! ([`record`]). Pure functions and state machines: no I/O (callers read and write key
//! files), no logging, no clock (time comes in as `now_unix`), no OS randomness (callers pass
//! random bytes or an RNG). `Debug` of every secret is redacted. Imports nothing from the
//! rest of the crate but `config`: the DHT builds on node IDs, not the other way round.

use std::fmt;
use std::str::FromStr;

use sha2::{Digest, Sha256};

pub mod handshake;
pub mod id;
pub mod identity;
pub mod record;
pub mod signal;

pub use handshake::{
    dtls_channel_binding, network_tag, verify_network_tag, Encryption, HandshakeConfig,
    HandshakeError, HandshakeRandom, Initiator, NetworkSecret, Responder, ResponderAwaitingFinish,
    Session,
};
pub use id::{IdParseError, NodeId, NODE_ID_BYTES};
pub use identity::{
    sign_provider_record, sign_provider_transports, verify_provider_record,
    verify_provider_transports, Certificate, Identity, IdentityError, SessionIdentity,
    VerifiedCertificate,
};
pub use record::{Opener, RecordAad, RecordError, RecordKind, RekeyLimits, Sealer};
/// The RNG traits (rand_core 0.6) that [`Identity::generate`] and
/// [`Identity::issue_session`] take; `rand_core::OsRng` is the one to pass.
pub use rsa::rand_core;

/// Bytes in a SHA-256 digest.
pub const DIGEST_BYTES: usize = 32;

/// Domain separator that starts the canonical manifest encoding hashed into a file ID.
const FILE_ID_DOMAIN: &[u8] = b"furymesh-file-v1\0";
/// Domain separator for a collection ID: the same manifest encoding (of the blob holding
/// the encoded collection) under another prefix, so no collection ID is ever a file ID.
const COLLECTION_ID_DOMAIN: &[u8] = b"furymesh-collection-v1\0";
/// Textual prefix of a collection ID (`c-` then 64 lowercase hex characters).
pub const COLLECTION_ID_PREFIX: &str = "c-";

/// SHA-256 of one chunk.
pub type ChunkHash = [u8; DIGEST_BYTES];

/// The identity of a published file: SHA-256 over its canonical manifest encoding, so the ID
/// authenticates every chunk hash (see [`FileId::from_manifest`]).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FileId(pub [u8; DIGEST_BYTES]);

impl FileId {
    /// Computes the file ID of a manifest. The canonical encoding is
    /// `"furymesh-file-v1\0" || size (u64 LE) || chunk_size (u32 LE) || chunk_count (u32 LE)
    /// || chunk_hash[0] || … || chunk_hash[n-1]`, hashed with SHA-256.
    pub fn from_manifest(size: u64, chunk_size: u32, chunk_hashes: &[ChunkHash]) -> Self {
        Self::hash_manifest(FILE_ID_DOMAIN, size, chunk_size, chunk_hashes)
    }

    /// The ID of a collection whose encoding is the blob with this manifest: the
    /// [`FileId::from_manifest`] encoding with the prefix `"furymesh-collection-v1\0"`
    /// instead. Seeders serve the blob under this ID; it lives in the same 32-byte
    /// namespace as file IDs, and the domain keeps the two apart (see [`IdKind`]).
    pub fn collection_from_manifest(
        size: u64,
        chunk_size: u32,
        chunk_hashes: &[ChunkHash],
    ) -> Self {
        Self::hash_manifest(COLLECTION_ID_DOMAIN, size, chunk_size, chunk_hashes)
    }

    /// The bytes [`FileId::from_manifest`] hashes: `"furymesh-file-v1\0" || size (u64 LE)
    /// || chunk_size (u32 LE) || chunk_count (u32 LE) || chunk hashes`. The share page
    /// fetches exactly this and checks its SHA-256 against the file ID before it trusts a
    /// byte of it.
    pub fn manifest_encoding(size: u64, chunk_size: u32, chunk_hashes: &[ChunkHash]) -> Vec<u8> {
        let mut out = Vec::with_capacity(FILE_ID_DOMAIN.len() + 16 + chunk_hashes.len() * 32);
        out.extend_from_slice(FILE_ID_DOMAIN);
        out.extend_from_slice(&size.to_le_bytes());
        out.extend_from_slice(&chunk_size.to_le_bytes());
        out.extend_from_slice(&(chunk_hashes.len() as u32).to_le_bytes());
        for c in chunk_hashes {
            out.extend_from_slice(c);
        }
        out
    }

    fn hash_manifest(
        domain: &[u8],
        size: u64,
        chunk_size: u32,
        chunk_hashes: &[ChunkHash],
    ) -> Self {
        let mut h = Sha256::new();
        h.update(domain);
        h.update(size.to_le_bytes());
        h.update(chunk_size.to_le_bytes());
        // Chunk counts are bounded by `config::CHUNKS_PER_FILE_MAX`, far below u32::MAX.
        h.update((chunk_hashes.len() as u32).to_le_bytes());
        for c in chunk_hashes {
            h.update(c);
        }
        Self(h.finalize().into())
    }

    /// The 64 lowercase hex characters users see.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Display for FileId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for FileId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FileId({})", self.to_hex())
    }
}

/// Why a string is not a file ID.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a file ID is 64 lowercase hex characters")]
pub struct ParseFileIdError;

impl FromStr for FileId {
    type Err = ParseFileIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let b = s.as_bytes();
        if b.len() != 2 * DIGEST_BYTES || !b.iter().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'))
        {
            return Err(ParseFileIdError);
        }
        let mut out = [0u8; DIGEST_BYTES];
        hex::decode_to_slice(b, &mut out).map_err(|_| ParseFileIdError)?;
        Ok(Self(out))
    }
}

/// What a 32-byte ID names: a file, or a collection (a release of files). The hash domain
/// decides ([`FileId::from_manifest`] vs [`FileId::collection_from_manifest`]), so a
/// manifest proves its kind, and the textual form shows it ([`ContentId`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum IdKind {
    File,
    Collection,
}

/// An ID as users write it: a file ID (64 lowercase hex characters) or a collection ID
/// (`c-` then 64 lowercase hex characters).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ContentId {
    /// The 32 bytes peers know it by.
    pub id: FileId,
    /// File or collection.
    pub kind: IdKind,
}

impl ContentId {
    /// A file's ID.
    pub fn file(id: FileId) -> Self {
        Self { id, kind: IdKind::File }
    }

    /// A collection's ID.
    pub fn collection(id: FileId) -> Self {
        Self { id, kind: IdKind::Collection }
    }
}

impl fmt::Display for ContentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.kind == IdKind::Collection {
            f.write_str(COLLECTION_ID_PREFIX)?;
        }
        f.write_str(&self.id.to_hex())
    }
}

impl fmt::Debug for ContentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ContentId({self})")
    }
}

/// Why a string is not a file or collection ID.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("an ID is 64 lowercase hex characters (a file) or `c-` and 64 lowercase hex characters (a collection)")]
pub struct ParseContentIdError;

impl FromStr for ContentId {
    type Err = ParseContentIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (kind, hex) = match s.strip_prefix(COLLECTION_ID_PREFIX) {
            Some(rest) => (IdKind::Collection, rest),
            None => (IdKind::File, s),
        };
        let id = hex.parse().map_err(|_| ParseContentIdError)?;
        Ok(Self { id, kind })
    }
}

/// SHA-256 of a chunk's bytes.
pub fn chunk_hash(data: &[u8]) -> ChunkHash {
    Sha256::digest(data).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_id_is_canonical_and_hex_round_trips() {
        let hashes = [chunk_hash(b"a"), chunk_hash(b"b")];
        let id = FileId::from_manifest(3, 2, &hashes);
        // Same inputs, same ID; any field change, another ID.
        assert_eq!(id, FileId::from_manifest(3, 2, &hashes));
        assert_ne!(id, FileId::from_manifest(4, 2, &hashes));
        assert_ne!(id, FileId::from_manifest(3, 4, &hashes));
        assert_ne!(id, FileId::from_manifest(3, 2, &hashes[..1]));
        let hex = id.to_hex();
        assert_eq!(hex.len(), 64);
        assert_eq!(hex.parse::<FileId>(), Ok(id));
        assert!(hex.to_uppercase().parse::<FileId>().is_err());
        assert!(hex[1..].parse::<FileId>().is_err());
    }

    #[test]
    fn collection_ids_are_another_domain_and_another_text() {
        let hashes = [chunk_hash(b"a")];
        let file = FileId::from_manifest(1, 4096, &hashes);
        let coll = FileId::collection_from_manifest(1, 4096, &hashes);
        assert_ne!(file, coll, "the same blob has distinct file and collection IDs");
        let c = ContentId::collection(coll);
        let text = c.to_string();
        assert_eq!(text, format!("c-{}", coll.to_hex()));
        assert_eq!(text.parse::<ContentId>(), Ok(c));
        assert_eq!(file.to_hex().parse::<ContentId>(), Ok(ContentId::file(file)));
        for bad in ["c-", "c-xyz", "C-00", "d-00", &format!("c-{}", "A".repeat(64))] {
            assert_eq!(bad.parse::<ContentId>(), Err(ParseContentIdError), "{bad}");
        }
    }

    #[test]
    fn the_manifest_encoding_hashes_to_the_file_id() {
        let hashes = [chunk_hash(b"a"), chunk_hash(b"b")];
        let enc = FileId::manifest_encoding(5, 4, &hashes);
        assert_eq!(enc.len(), 17 + 16 + 64);
        let digest: [u8; 32] = Sha256::digest(&enc).into();
        assert_eq!(FileId(digest), FileId::from_manifest(5, 4, &hashes));
    }

    #[test]
    fn empty_file_has_a_stable_id() {
        // Pins the canonical encoding: changing it changes every published ID.
        let mut h = Sha256::new();
        h.update(b"furymesh-file-v1\0");
        h.update(0u64.to_le_bytes());
        h.update(524288u32.to_le_bytes());
        h.update(0u32.to_le_bytes());
        let want: [u8; 32] = h.finalize().into();
        assert_eq!(FileId::from_manifest(0, 524288, &[]).0, want);
    }
}
