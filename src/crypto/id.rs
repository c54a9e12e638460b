//! Node IDs: who a node is. A node ID is derived from the node's long-term public key, so
//! it belongs with the identities ([`super::identity`]) that prove it. The DHT uses the same
//! 160 bits as a position in its key space and adds the XOR metric on top (`dht::id`).

use std::fmt;
use std::str::FromStr;

use sha2::{Digest, Sha256};

/// Length of a node ID in bytes (160 bits).
pub const NODE_ID_BYTES: usize = 20;

/// A node's identity: the first 160 bits of SHA-256 over its public key (see
/// [`NodeId::from_public_key`]). The DHT places nodes in its key space by this value.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeId([u8; NODE_ID_BYTES]);

impl NodeId {
    /// Wraps raw bytes (for the wire decoder and tests).
    pub const fn from_bytes(bytes: [u8; NODE_ID_BYTES]) -> Self {
        Self(bytes)
    }

    /// The node id of an identity: the first 160 bits of SHA-256 over the public key bytes.
    pub fn from_public_key(public_key: &[u8]) -> Self {
        let digest = Sha256::digest(public_key);
        let mut bytes = [0; NODE_ID_BYTES];
        bytes.copy_from_slice(&digest[..NODE_ID_BYTES]);
        Self(bytes)
    }

    /// The raw bytes, most significant first.
    pub const fn as_bytes(&self) -> &[u8; NODE_ID_BYTES] {
        &self.0
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeId({self})")
    }
}

/// Why a string is not a node id (or a DHT key, which has the same form).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum IdParseError {
    /// The string is not exactly 40 characters long.
    #[error("expected {expected} hex characters, got {len}")]
    Length {
        /// Characters required.
        expected: usize,
        /// Characters given.
        len: usize,
    },
    /// The string holds a character that is not lowercase or uppercase hex.
    #[error("not a hex string")]
    NotHex,
}

impl FromStr for NodeId {
    type Err = IdParseError;

    /// Parses 40 hex characters, either case.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() != NODE_ID_BYTES * 2 {
            return Err(IdParseError::Length { expected: NODE_ID_BYTES * 2, len: s.len() });
        }
        let mut bytes = [0; NODE_ID_BYTES];
        hex::decode_to_slice(s, &mut bytes).map_err(|_| IdParseError::NotHex)?;
        Ok(Self(bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_public_key_is_sha256_prefix() {
        // SHA-256("abc") = ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad
        let id = NodeId::from_public_key(b"abc");
        assert_eq!(id.to_string(), "ba7816bf8f01cfea414140de5dae2223b00361a3");
    }

    #[test]
    fn hex_round_trip_and_errors() {
        let id = NodeId::from_public_key(b"key");
        assert_eq!(id.to_string().len(), 40);
        assert_eq!(id.to_string().parse::<NodeId>(), Ok(id));
        assert_eq!(
            id.to_string().to_uppercase().parse::<NodeId>(),
            Ok(id),
            "uppercase hex is accepted"
        );
        assert_eq!("abc".parse::<NodeId>(), Err(IdParseError::Length { expected: 40, len: 3 }));
        assert_eq!("zz".repeat(20).parse::<NodeId>(), Err(IdParseError::NotHex));
    }
}
