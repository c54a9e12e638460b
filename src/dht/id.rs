//! 160-bit identifiers: node ids, provider-record keys and XOR distance.

use core::net::SocketAddr;
use std::fmt;
use std::str::FromStr;

use rand::Rng;
use sha2::{Digest, Sha256};

/// Length of every identifier in the DHT key space, in bytes (160 bits).
pub const ID_BYTES: usize = 20;

/// Number of bits in an identifier, hence the number of k-buckets.
pub const ID_BITS: usize = ID_BYTES * 8;

/// A node's position in the 160-bit Kademlia key space.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeId([u8; ID_BYTES]);

impl NodeId {
    /// Wraps raw bytes (for the wire decoder and tests).
    pub const fn from_bytes(bytes: [u8; ID_BYTES]) -> Self {
        Self(bytes)
    }

    /// The node id of an identity: the first 160 bits of SHA-256 over the public key bytes.
    pub fn from_public_key(public_key: &[u8]) -> Self {
        let digest = Sha256::digest(public_key);
        let mut bytes = [0; ID_BYTES];
        bytes.copy_from_slice(&digest[..ID_BYTES]);
        Self(bytes)
    }

    /// The raw bytes, most significant first.
    pub const fn as_bytes(&self) -> &[u8; ID_BYTES] {
        &self.0
    }

    /// XOR distance to `other`.
    pub fn distance(&self, other: &Self) -> Distance {
        let mut out = [0; ID_BYTES];
        for (o, (a, b)) in out.iter_mut().zip(self.0.iter().zip(other.0.iter())) {
            *o = a ^ b;
        }
        Distance(out)
    }

    /// A uniformly random id whose distance to `self` has exactly `leading_zeros` leading zero
    /// bits, i.e. an id that falls in bucket `leading_zeros` of a table centred on `self`.
    pub(crate) fn random_in_bucket<R: Rng>(&self, leading_zeros: usize, rng: &mut R) -> Self {
        assert!(leading_zeros < ID_BITS, "bucket index out of range");
        let mut distance = [0u8; ID_BYTES];
        rng.fill(&mut distance[..]);
        for bit in 0..=leading_zeros {
            let mask = 0x80u8 >> (bit % 8);
            if bit == leading_zeros {
                distance[bit / 8] |= mask;
            } else {
                distance[bit / 8] &= !mask;
            }
        }
        let mut out = self.0;
        for (o, d) in out.iter_mut().zip(distance) {
            *o ^= d;
        }
        Self(out)
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

/// Why a string is not a node id or key.
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

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() != ID_BYTES * 2 {
            return Err(IdParseError::Length { expected: ID_BYTES * 2, len: s.len() });
        }
        let mut bytes = [0; ID_BYTES];
        hex::decode_to_slice(s, &mut bytes).map_err(|_| IdParseError::NotHex)?;
        Ok(Self(bytes))
    }
}

/// The key of a provider record: the first 160 bits of a file ID.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key([u8; ID_BYTES]);

impl Key {
    /// Wraps raw bytes (for the wire decoder and tests).
    pub const fn from_bytes(bytes: [u8; ID_BYTES]) -> Self {
        Self(bytes)
    }

    /// The DHT key of a file: the first 160 bits of its ID. `None` if the ID is shorter.
    pub fn from_file_id(file_id: &[u8]) -> Option<Self> {
        let prefix = file_id.get(..ID_BYTES)?;
        let mut bytes = [0; ID_BYTES];
        bytes.copy_from_slice(prefix);
        Some(Self(bytes))
    }

    /// The raw bytes, most significant first.
    pub const fn as_bytes(&self) -> &[u8; ID_BYTES] {
        &self.0
    }

    /// The point in node-id space whose k closest nodes hold this key's records.
    pub const fn target(&self) -> NodeId {
        NodeId(self.0)
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Key({self})")
    }
}

impl FromStr for Key {
    type Err = IdParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        NodeId::from_str(s).map(|id| Self(id.0))
    }
}

/// XOR distance between two ids; compares as a 160-bit big-endian integer.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct Distance([u8; ID_BYTES]);

impl Distance {
    /// Number of leading zero bits: the index of the k-bucket the farther id falls into.
    /// `ID_BITS` for distance zero.
    pub fn leading_zeros(&self) -> usize {
        let mut zeros = 0;
        for byte in self.0 {
            if byte != 0 {
                return zeros + byte.leading_zeros() as usize;
            }
            zeros += 8;
        }
        zeros
    }
}

/// A reachable DHT node. TCP and UDP share the port, so one address names the node.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct Contact {
    /// The node's id.
    pub id: NodeId,
    /// The address it listens on (UDP for the DHT, TCP for transfers).
    pub addr: SocketAddr,
}

#[cfg(test)]
mod tests {
    use rand::rngs::SmallRng;
    use rand::SeedableRng;

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
        let key = Key::from_file_id(&[7; 32]).expect("32-byte file id");
        assert_eq!(key.to_string().parse::<Key>(), Ok(key));
        assert_eq!(Key::from_file_id(&[7; 19]), None);
    }

    #[test]
    fn distance_is_xor_and_orders_big_endian() {
        let a = NodeId::from_bytes([0; ID_BYTES]);
        let mut b_bytes = [0; ID_BYTES];
        b_bytes[19] = 1;
        let b = NodeId::from_bytes(b_bytes);
        let mut c_bytes = [0; ID_BYTES];
        c_bytes[0] = 0x40;
        let c = NodeId::from_bytes(c_bytes);
        assert!(a.distance(&b) < a.distance(&c));
        assert_eq!(a.distance(&b).leading_zeros(), 159);
        assert_eq!(a.distance(&c).leading_zeros(), 1);
        assert_eq!(a.distance(&a).leading_zeros(), ID_BITS);
        assert_eq!(b.distance(&c), c.distance(&b));
    }

    #[test]
    fn random_in_bucket_lands_in_bucket() {
        let mut rng = SmallRng::seed_from_u64(3);
        let local = NodeId::from_public_key(b"local");
        for index in [0, 1, 7, 8, 9, 100, 159] {
            let id = local.random_in_bucket(index, &mut rng);
            assert_eq!(local.distance(&id).leading_zeros(), index);
        }
    }
}
