//! Owned DHT messages: plain data that `wire/` encodes to and decodes from FlatBuffers.
//!
//! Every list has a bound below; the decoder should reject longer lists, and the core
//! truncates (and counts) any that still get through.

use crate::dht::id::{Contact, Key, NodeId};

/// Most contacts in one message (`Nodes::contacts`, `Providers::closer`). Equal to the
/// default `k`; a configured `k` may not exceed it.
pub const CONTACTS_PER_MESSAGE_MAX: usize = 20;

/// Most provider contacts in one `Providers` reply. With 20 closer contacts, a reply stays
/// around 1.3 KB of addresses and ids, under the 1,452-byte datagram budget.
pub const PROVIDERS_PER_MESSAGE_MAX: usize = 10;

/// What a provider offers besides TCP on its contact's address (its signed provider
/// record says so; a record without it offers TCP only).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Transports {
    /// TCP on the contact's port.
    pub tcp: bool,
    /// WebRTC data channels (RFC 8831), signaled through the DHT to the provider's node ID.
    pub webrtc: bool,
    /// The provider's own WebRTC (UDP) port at the contact's IP, if it is directly
    /// reachable there; 0: none (signal through the DHT).
    pub webrtc_port: u16,
}

impl Default for Transports {
    /// TCP only: what every record from before transports were advertised means.
    fn default() -> Self {
        Self { tcp: true, webrtc: false, webrtc_port: 0 }
    }
}

impl Transports {
    const TCP: u8 = 1;
    const WEBRTC: u8 = 2;

    /// The wire flags (bit 0 TCP, bit 1 WebRTC; other bits ignored).
    pub fn flags(self) -> u8 {
        (u8::from(self.tcp) * Self::TCP) | (u8::from(self.webrtc) * Self::WEBRTC)
    }

    /// From the wire flags and port.
    pub fn from_flags(flags: u8, webrtc_port: u16) -> Self {
        Self {
            tcp: flags & Self::TCP != 0,
            webrtc: flags & Self::WEBRTC != 0,
            webrtc_port: if flags & Self::WEBRTC != 0 { webrtc_port } else { 0 },
        }
    }
}

/// One DHT datagram.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DhtMessage {
    /// Transaction id: random in requests, echoed unchanged in the reply.
    pub tx: u64,
    /// The sender's id and the address it says it listens on. The receiver files the
    /// sender under the datagram's source address, not under this one.
    pub sender: Contact,
    /// What the message asks or answers.
    pub body: DhtBody,
    /// The sender is a short-lived client (a downloader or an operator tool) that answers
    /// no queries: receivers answer it but never add it to their routing tables (as in
    /// BitTorrent's BEP 43), so clients that come and go do not fill tables with dead
    /// entries.
    pub read_only: bool,
}

/// Requests and their replies.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DhtBody {
    /// Request: are you alive? Answered by `Pong`.
    Ping,
    /// Reply to `Ping`.
    Pong,
    /// Request: the contacts you know closest to `target`. Answered by `Nodes`.
    FindNode {
        /// The id looked up.
        target: NodeId,
    },
    /// Reply to `FindNode`: at most [`CONTACTS_PER_MESSAGE_MAX`] contacts, closest first.
    Nodes {
        /// Closest contacts the responder knows.
        contacts: Vec<Contact>,
    },
    /// Request: providers of `key`, and contacts closer to it (Kademlia `FIND_VALUE`).
    /// Answered by `Providers`.
    GetProviders {
        /// The key looked up.
        key: Key,
    },
    /// Reply to `GetProviders`.
    Providers {
        /// Stored providers of the key, at most [`PROVIDERS_PER_MESSAGE_MAX`].
        providers: Vec<Contact>,
        /// Closest contacts to the key the responder knows, at most
        /// [`CONTACTS_PER_MESSAGE_MAX`].
        closer: Vec<Contact>,
    },
    /// Request: store `provider` as a provider of `key` (Kademlia `STORE`). The provider must
    /// be the sender itself (same id); it is stored under the datagram's source address.
    /// Answered by `AnnounceAck`.
    AnnounceProvider {
        /// The key provided.
        key: Key,
        /// The providing node (the sender).
        provider: Contact,
    },
    /// Reply to `AnnounceProvider`.
    AnnounceAck {
        /// `false` when the record was refused (store full or invalid announcement).
        stored: bool,
    },
}

impl DhtBody {
    /// Whether this body is a request (as opposed to a reply).
    pub fn is_request(&self) -> bool {
        matches!(
            self,
            Self::Ping
                | Self::FindNode { .. }
                | Self::GetProviders { .. }
                | Self::AnnounceProvider { .. }
        )
    }

    /// Whether `self` is a valid reply to `request`.
    pub fn answers(&self, request: &Self) -> bool {
        matches!(
            (request, self),
            (Self::Ping, Self::Pong)
                | (Self::FindNode { .. }, Self::Nodes { .. })
                | (Self::GetProviders { .. }, Self::Providers { .. })
                | (Self::AnnounceProvider { .. }, Self::AnnounceAck { .. })
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_match_requests() {
        let target = NodeId::from_bytes([1; 20]);
        let find = DhtBody::FindNode { target };
        assert!(find.is_request());
        let nodes = DhtBody::Nodes { contacts: vec![] };
        assert!(!nodes.is_request());
        assert!(nodes.answers(&find));
        assert!(!DhtBody::Pong.answers(&find));
        assert!(DhtBody::Pong.answers(&DhtBody::Ping));
    }
}
