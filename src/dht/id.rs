//! The 160-bit key space: provider-record keys, the XOR metric and contacts. Node IDs
//! themselves are identities and live in `crypto::id`; this file adds the Kademlia
//! geometry on top of them.

use core::net::SocketAddr;
use std::fmt;
use std::str::FromStr;

use rand::Rng;

use crate::crypto::{FileId, NODE_ID_BYTES};
pub use crate::crypto::{IdParseError, NodeId};

/// Length of every identifier in the DHT key space, in bytes (160 bits): a node ID.
pub const ID_BYTES: usize = NODE_ID_BYTES;

/// Number of bits in an identifier, hence the number of k-buckets.
pub const ID_BITS: usize = ID_BYTES * 8;

/// The Kademlia geometry of node IDs (defined here, beside the key space, not in `crypto`).
impl NodeId {
    /// XOR distance to `other`.
    pub fn distance(&self, other: &Self) -> Distance {
        let mut out = [0; ID_BYTES];
        for (o, (a, b)) in out.iter_mut().zip(self.as_bytes().iter().zip(other.as_bytes())) {
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
        let mut out = *self.as_bytes();
        for (o, d) in out.iter_mut().zip(distance) {
            *o ^= d;
        }
        Self::from_bytes(out)
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

    /// The DHT key of a file: the first 160 bits of its ID.
    pub fn from_file_id(file_id: &FileId) -> Self {
        let mut bytes = [0; ID_BYTES];
        bytes.copy_from_slice(&file_id.0[..ID_BYTES]);
        Self(bytes)
    }

    /// The raw bytes, most significant first.
    pub const fn as_bytes(&self) -> &[u8; ID_BYTES] {
        &self.0
    }

    /// The point in node-id space whose k closest nodes hold this key's records.
    pub const fn target(&self) -> NodeId {
        NodeId::from_bytes(self.0)
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
        NodeId::from_str(s).map(|id| Self(*id.as_bytes()))
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
    fn key_hex_round_trip_and_file_prefix() {
        let file_id = FileId([7; 32]);
        let key = Key::from_file_id(&file_id);
        assert_eq!(key.as_bytes(), &[7; ID_BYTES]);
        assert_eq!(key.to_string().parse::<Key>(), Ok(key));
        assert_eq!("abc".parse::<Key>(), Err(IdParseError::Length { expected: 40, len: 3 }));
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
