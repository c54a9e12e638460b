//! STUN Binding (RFC 8489 §3, §6) from a WebRTC socket, sans-IO: what a node sends its
//! STUN servers (`--stun HOST:PORT`) to learn the address its socket has outside its NAT,
//! and the checks an answer must pass before that address becomes a server-reflexive ICE
//! candidate (RFC 8445 §5.1.1.2).
//!
//! The socket also carries ICE's own STUN (connectivity checks between peers), so a
//! datagram is taken here only when it comes from a configured server and answers one of
//! our outstanding transaction IDs; everything else goes on to the peer connections.
//! Answers are network input: bounded in size, matched by source and transaction ID, and
//! parsed by `rtc`'s STUN decoder (the one ICE uses for every check), never a panic.

use std::collections::VecDeque;
use std::net::SocketAddr;

use rtc::stun::message::{Getter, Message};
use rtc::stun::xoraddr::XorMappedAddress;

use crate::config::WEBRTC_STUN_SERVERS_MAX;

/// RFC 8489 §5: the fixed magic cookie of every STUN message.
const MAGIC_COOKIE: [u8; 4] = [0x21, 0x12, 0xA4, 0x42];
/// Binding request and Binding success response message types (RFC 8489 §5, §18.2).
const BINDING_REQUEST: [u8; 2] = [0x00, 0x01];
const BINDING_SUCCESS: [u8; 2] = [0x01, 0x01];
const HEADER_BYTES: usize = 20;
/// Largest Binding answer looked at (RFC 8489 §6.1: a server keeps answers within the
/// path MTU; 548 bytes is the floor it must fit in, we allow a full Ethernet payload).
const ANSWER_MAX_BYTES: usize = 1500;
/// Requests remembered per server (an answer to any of them counts).
const OUTSTANDING_PER_SERVER: usize = 2;

/// The STUN side of one socket: its servers, the requests not yet answered, and the
/// mapped address the latest verified answer gave.
#[derive(Debug)]
pub(in crate::node) struct StunClient {
    servers: Vec<SocketAddr>,
    outstanding: VecDeque<(SocketAddr, [u8; 12])>,
    mapped: Option<SocketAddr>,
}

impl StunClient {
    /// A client of `servers` (at most `WEBRTC_STUN_SERVERS_MAX` are used); `None` for none.
    pub(in crate::node) fn new(servers: &[SocketAddr]) -> Option<Self> {
        let servers: Vec<SocketAddr> =
            servers.iter().copied().take(WEBRTC_STUN_SERVERS_MAX).collect();
        (!servers.is_empty()).then(|| Self { servers, outstanding: VecDeque::new(), mapped: None })
    }

    /// A Binding request for each server, with fresh transaction IDs from `random` (12
    /// bytes per server); the oldest outstanding ones are forgotten beyond two per server.
    pub(in crate::node) fn requests(
        &mut self,
        mut random: impl FnMut() -> [u8; 12],
    ) -> Vec<(SocketAddr, Vec<u8>)> {
        let mut out = Vec::with_capacity(self.servers.len());
        for &server in &self.servers {
            let tx = random();
            let mut d = Vec::with_capacity(HEADER_BYTES);
            d.extend_from_slice(&BINDING_REQUEST);
            d.extend_from_slice(&0u16.to_be_bytes());
            d.extend_from_slice(&MAGIC_COOKIE);
            d.extend_from_slice(&tx);
            self.outstanding.push_back((server, tx));
            out.push((server, d));
        }
        while self.outstanding.len() > OUTSTANDING_PER_SERVER * self.servers.len() {
            self.outstanding.pop_front();
        }
        out
    }

    /// Takes `d` from `from` if it answers one of our outstanding requests: `true` means
    /// it was ours (used or, when malformed, dropped), `false` that it is someone else's
    /// (an ICE check) and goes on. A verified answer's XOR-MAPPED-ADDRESS becomes
    /// [`StunClient::mapped`].
    pub(in crate::node) fn handle(&mut self, from: SocketAddr, d: &[u8]) -> bool {
        if d.len() < HEADER_BYTES || d[4..8] != MAGIC_COOKIE || !self.servers.contains(&from) {
            return false;
        }
        let tx: [u8; 12] = match d[8..20].try_into() {
            Ok(tx) => tx,
            Err(_) => return false,
        };
        let Some(i) = self.outstanding.iter().position(|o| *o == (from, tx)) else {
            return false;
        };
        if d.len() > ANSWER_MAX_BYTES || d[..2] != BINDING_SUCCESS {
            // An error response (or an oversized one) still settles the transaction.
            self.outstanding.remove(i);
            return true;
        }
        let mut m = Message { raw: d.to_vec(), ..Message::default() };
        let mut xor = XorMappedAddress::default();
        if m.decode().is_ok() && xor.get_from(&m).is_ok() && xor.port != 0 {
            self.outstanding.remove(i);
            self.mapped = Some(SocketAddr::new(xor.ip, xor.port));
        }
        true
    }

    /// The address the socket has outside its NAT, as the latest verified answer said.
    pub(in crate::node) fn mapped(&self) -> Option<SocketAddr> {
        self.mapped
    }
}

/// The USERNAME attribute (RFC 8489 §14.3) of a STUN message, as ICE uses it in its
/// connectivity checks (RFC 8445 §7.2.2: `RECEIVER_UFRAG:SENDER_UFRAG`): how a check from
/// an address not signaled (a peer-reflexive one, RFC 8445 §7.3.1.3: a NAT that gave the
/// peer a new port toward us) finds its session. `None` for anything else or malformed;
/// the attributes are walked within the message's stated length, never past the datagram.
pub(in crate::node) fn username(d: &[u8]) -> Option<&[u8]> {
    if d.len() < HEADER_BYTES || d[0] & 0xC0 != 0 || d[4..8] != MAGIC_COOKIE {
        return None;
    }
    let len = usize::from(u16::from_be_bytes([d[2], d[3]]));
    let body = d.get(HEADER_BYTES..HEADER_BYTES + len)?;
    let mut at = 0;
    while at + 4 <= body.len() {
        let typ = u16::from_be_bytes([body[at], body[at + 1]]);
        let alen = usize::from(u16::from_be_bytes([body[at + 2], body[at + 3]]));
        let value = body.get(at + 4..at + 4 + alen)?;
        if typ == 0x0006 {
            return Some(value);
        }
        at += 4 + alen.next_multiple_of(4);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtc::stun::message::{Setter, TransactionId};

    fn answer(tx: [u8; 12], mapped: SocketAddr) -> Vec<u8> {
        let mut m = Message::new();
        let xor = XorMappedAddress { ip: mapped.ip(), port: mapped.port() };
        let setters: [Box<dyn Setter>; 3] = [
            Box::new(TransactionId(tx)),
            Box::new(rtc::stun::message::BINDING_SUCCESS),
            Box::new(xor),
        ];
        m.build(&setters).unwrap();
        m.raw
    }

    #[test]
    fn a_matching_answer_gives_the_mapped_address_and_others_are_not_taken() {
        let server: SocketAddr = "192.0.2.1:3478".parse().unwrap();
        let mapped: SocketAddr = "198.51.100.9:40000".parse().unwrap();
        let mut c = StunClient::new(&[server]).unwrap();
        let reqs = c.requests(|| [7; 12]);
        assert_eq!(reqs.len(), 1);
        assert_eq!(reqs[0].1.len(), HEADER_BYTES);
        // A different transaction, a different source: not ours, no address.
        assert!(!c.handle(server, &answer([8; 12], mapped)));
        assert!(!c.handle("192.0.2.2:3478".parse().unwrap(), &answer([7; 12], mapped)));
        assert_eq!(c.mapped(), None);
        // Every prefix and flipped byte of the genuine answer: never a panic.
        let good = answer([7; 12], mapped);
        for i in 0..good.len() {
            let _ = c.handle(server, &good[..i]);
            let mut bad = good.clone();
            bad[i] ^= 0x40;
            let _ = c.handle(server, &bad);
        }
        let mut c = StunClient::new(&[server]).unwrap();
        c.requests(|| [7; 12]);
        assert!(c.handle(server, &good));
        assert_eq!(c.mapped(), Some(mapped));
        // Answered once: a replay is no longer ours.
        assert!(!c.handle(server, &good));
        assert!(StunClient::new(&[]).is_none());
    }

    #[test]
    fn the_username_of_a_check_is_found_and_hostile_ones_are_not() {
        let mut m = Message::new();
        let user = rtc::stun::textattrs::Username::new(
            rtc::stun::attributes::ATTR_USERNAME,
            "abcd:efgh".to_owned(),
        );
        let setters: [Box<dyn Setter>; 3] = [
            Box::new(TransactionId([1; 12])),
            Box::new(rtc::stun::message::BINDING_REQUEST),
            Box::new(user),
        ];
        m.build(&setters).unwrap();
        assert_eq!(username(&m.raw), Some(&b"abcd:efgh"[..]));
        for i in 0..m.raw.len() {
            let _ = username(&m.raw[..i]);
            let mut bad = m.raw.clone();
            bad[i] ^= 0xFF;
            let _ = username(&bad);
        }
        assert_eq!(username(&[0; 19]), None);
    }
}
