//! TURN (RFC 8656) from a WebRTC socket, sans-IO: the relayed ICE candidate (RFC 8445
//! §5.1.1.2) a node offers when neither side's NAT lets the other in (two symmetric NATs,
//! or a firewall that drops direct UDP between them).
//!
//! The node asks its TURN server (`--turn HOST:PORT`, long-term credentials, RFC 8489
//! §9.2) for an allocation from the same UDP socket its ICE runs on, so the relayed
//! candidate's base is that socket and ICE pairs it like any other. What passes through the
//! allocation is driven by `rtc`'s own sans-IO TURN client (`rtc::turn`): Allocate with the
//! 401 challenge, Refresh (capped at `WEBRTC_STUN_REFRESH_SECS` so the NAT's mapping toward
//! the server never goes idle), CreatePermission for each peer address (RFC 8656 §9),
//! ChannelBind for the data (RFC 8656 §12) and Send/Data indications until the channel is
//! bound. This module keeps the relay's state, the bounds and the demultiplexing: only
//! datagrams from the configured server are handed to the client, and what comes out of
//! it (Data indications, ChannelData) goes to the sessions as if it came from the peer.
//!
//! Everything from the network is hostile: the server's datagrams go to `rtc`'s STUN and
//! ChannelData decoders, errors drop them; at most `WEBRTC_TURN_PERMISSIONS_MAX` peer
//! addresses are permitted per allocation (the client refreshes every permission it ever
//! asked for in one request, which must stay within a datagram); a peer beyond that is
//! simply not relayed to.

use std::collections::HashSet;
use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use rtc::sansio::Protocol;
use rtc::shared::error::Error as RtcError;
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};
use rtc::turn::client::{Client, ClientConfig, Event};

use crate::config::{WEBRTC_STUN_REFRESH_SECS, WEBRTC_TURN_PERMISSIONS_MAX};

/// Largest credentials file read (`--turn-credentials`), in bytes.
const CREDENTIALS_FILE_MAX_BYTES: u64 = 4096;

/// A TURN server and the long-term credentials (RFC 8489 §9.2) to allocate a relay with.
/// The password never appears in `Debug` output or logs.
#[derive(Clone, PartialEq, Eq)]
pub struct TurnServer {
    /// The server's UDP address.
    pub addr: SocketAddr,
    /// The long-term credential's user name.
    pub username: String,
    password: String,
}

impl fmt::Debug for TurnServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TurnServer")
            .field("addr", &self.addr)
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

impl TurnServer {
    /// The server at `addr` with `username` and `password`.
    pub fn new(addr: SocketAddr, username: String, password: String) -> Self {
        Self { addr, username, password }
    }

    /// The server at `addr` with the credentials of a file (`--turn-credentials`): the
    /// user name on its first line, the password on its second (so either may hold a
    /// colon, as TURN REST user names do); trailing `\r` and a final newline are ignored.
    pub fn from_credentials_file(addr: SocketAddr, path: &Path) -> io::Result<Self> {
        use std::io::Read;
        let mut text = String::new();
        std::fs::File::open(path)?
            .take(CREDENTIALS_FILE_MAX_BYTES + 1)
            .read_to_string(&mut text)?;
        if text.len() as u64 > CREDENTIALS_FILE_MAX_BYTES {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "credentials file too large"));
        }
        let mut lines = text.lines().map(|l| l.trim_end_matches('\r'));
        let (Some(user), Some(password)) = (lines.next(), lines.next()) else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "a TURN credentials file holds the user name on its first line and the \
                 password on its second",
            ));
        };
        if user.is_empty() || lines.any(|l| !l.is_empty()) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "a TURN credentials file holds exactly two lines: user name, password",
            ));
        }
        Ok(Self::new(addr, user.to_owned(), password.to_owned()))
    }
}

/// A TURN password as given on the command line or in the environment: its `Debug`
/// output is redacted, so no derived `Debug` of the options that hold it shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct TurnPassword(String);

impl TurnPassword {
    /// The password.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::str::FromStr for TurnPassword {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self(s.to_owned()))
    }
}

impl fmt::Debug for TurnPassword {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Allocating,
    /// The relayed transport address (XOR-RELAYED-ADDRESS, RFC 8656 §7.3).
    Allocated(SocketAddr),
    Failed,
}

/// One allocation on a TURN server, asked for from one socket (`local`).
pub(in crate::node) struct TurnRelay {
    server: SocketAddr,
    client: Client,
    state: State,
    /// Peer addresses a permission was asked for (bounded).
    permitted: HashSet<SocketAddr>,
}

impl TurnRelay {
    /// Starts an allocation on `server` from the socket bound at `local`: the first
    /// Allocate request is queued ([`TurnRelay::poll_transmit`]).
    pub(in crate::node) fn new(
        server: &TurnServer,
        local: SocketAddr,
        now: Instant,
    ) -> io::Result<Self> {
        let config = ClientConfig {
            stun_serv_addr: String::new(),
            turn_serv_addr: server.addr.to_string(),
            local_addr: local,
            transport_protocol: TransportProtocol::UDP,
            username: server.username.clone(),
            password: server.password.clone(),
            // Learned from the server's 401 (RFC 8489 §9.2.3).
            realm: String::new(),
            software: String::new(),
            rto_in_ms: 0,
            allocation_refresh_interval_cap: Some(Duration::from_secs(WEBRTC_STUN_REFRESH_SECS)),
        };
        let turn_io = |e: RtcError| io::Error::other(format!("turn: {e}"));
        let crypto =
            rtc::crypto::default_provider().map_err(|e| io::Error::other(e.to_string()))?;
        let mut client = Client::new(config, crypto).map_err(turn_io)?;
        client.allocate(now).map_err(turn_io)?;
        Ok(Self {
            server: server.addr,
            client,
            state: State::Allocating,
            permitted: HashSet::new(),
        })
    }

    /// The server's address: only its datagrams are [`TurnRelay::handle`]d.
    pub(in crate::node) fn server(&self) -> SocketAddr {
        self.server
    }

    /// The relayed address, once allocated.
    pub(in crate::node) fn relayed(&self) -> Option<SocketAddr> {
        match self.state {
            State::Allocated(a) => Some(a),
            _ => None,
        }
    }

    /// Whether the allocation was refused or never answered.
    pub(in crate::node) fn failed(&self) -> bool {
        self.state == State::Failed
    }

    /// Whether the allocation has settled: allocated or failed.
    pub(in crate::node) fn settled(&self) -> bool {
        self.state != State::Allocating
    }

    /// Whether every permission this allocation may hold is taken.
    pub(in crate::node) fn exhausted(&self) -> bool {
        self.permitted.len() >= WEBRTC_TURN_PERMISSIONS_MAX
    }

    /// Takes a datagram from the server: answers to our requests, and what peers sent
    /// through the relay, returned as `(peer, bytes)`. Malformed datagrams are dropped.
    pub(in crate::node) fn handle(
        &mut self,
        now: Instant,
        d: &[u8],
    ) -> Vec<(SocketAddr, BytesMut)> {
        let msg = TaggedBytesMut {
            now,
            transport: TransportContext {
                local_addr: self.server,
                peer_addr: self.server,
                ecn: None,
                transport_protocol: TransportProtocol::UDP,
            },
            message: BytesMut::from(d),
        };
        let _ = self.client.handle_read(msg);
        let mut out = Vec::new();
        self.events(&mut out);
        out
    }

    fn events(&mut self, out: &mut Vec<(SocketAddr, BytesMut)>) {
        while let Some(ev) = self.client.poll_event() {
            match ev {
                Event::AllocateResponse(_, relayed) if self.state == State::Allocating => {
                    self.state = State::Allocated(relayed);
                }
                Event::AllocateError(..) if self.state == State::Allocating => {
                    self.state = State::Failed;
                }
                // A request (an Allocate, a Refresh, a permission) retransmitted until it
                // gave up: the server is gone, and the allocation with it.
                Event::TransactionTimeout(_) => self.state = State::Failed,
                // Refused: it may be asked for again.
                Event::CreatePermissionError(..) => {}
                Event::DataIndicationOrChannelData(_, peer, data) if !data.is_empty() => {
                    out.push((peer, data));
                }
                _ => {}
            }
        }
    }

    /// Asks the server to relay to and from `peer` (CreatePermission, RFC 8656 §9.1) unless
    /// already asked; refused beyond `WEBRTC_TURN_PERMISSIONS_MAX` peers, and for a private
    /// address when the server's is not one (see [`reaches`]).
    pub(in crate::node) fn permit(&mut self, now: Instant, peer: SocketAddr) {
        let Some(relayed) = self.relayed() else { return };
        if self.permitted.contains(&peer) || self.exhausted() || !reaches(self.server, peer) {
            return;
        }
        if let Ok(mut relay) = self.client.relay(relayed) {
            if relay.create_permission(now, peer).is_ok() {
                self.permitted.insert(peer);
            }
        }
    }

    /// Sends `data` to `peer` through the relay (ChannelData once a channel is bound, Send
    /// indications until then). Without a permission for `peer` yet, asks for one and
    /// drops `data`: ICE sends its checks again, and data flows only after a check passed.
    pub(in crate::node) fn send(&mut self, now: Instant, peer: SocketAddr, data: &[u8]) {
        let Some(relayed) = self.relayed() else { return };
        let sent = match self.client.relay(relayed) {
            Ok(mut relay) => relay.send_to(now, data, peer),
            Err(e) => Err(e),
        };
        if sent == Err(RtcError::ErrNoPermission) {
            self.permit(now, peer);
        }
    }

    /// Releases the allocation (a Refresh with lifetime 0, RFC 8656 §7.2): queued.
    pub(in crate::node) fn release(&mut self, now: Instant) {
        if let Some(relayed) = self.relayed() {
            if let Ok(mut relay) = self.client.relay(relayed) {
                let _ = relay.close(now);
            }
        }
    }

    /// The next datagram for the server.
    pub(in crate::node) fn poll_transmit(&mut self) -> Option<(SocketAddr, BytesMut)> {
        self.client.poll_write().map(|t| (t.transport.peer_addr, t.message))
    }

    /// When [`TurnRelay::handle_timeout`] is next due (retransmissions, refreshes).
    pub(in crate::node) fn poll_timeout(&mut self) -> Option<Instant> {
        self.client.poll_timeout()
    }

    /// Retransmits, refreshes the allocation and the permissions when due.
    pub(in crate::node) fn handle_timeout(&mut self, now: Instant) {
        let _ = self.client.handle_timeout(now);
        let mut data = Vec::new();
        self.events(&mut data);
    }
}

/// Whether a relay on the TURN server at `server` can reach `peer`: not when the peer's
/// address is private (RFC 1918, RFC 4193, link-local, loopback: a peer's host candidate
/// behind its NAT) and the server's is not. Such a permission could only be wasted (they
/// are bounded) and makes coturn tear down the whole allocation when its relay socket gets
/// "network unreachable"; a server on a private network reaches private peers.
fn reaches(server: SocketAddr, peer: SocketAddr) -> bool {
    fn private(ip: IpAddr) -> bool {
        match ip {
            IpAddr::V4(v4) => v4.is_private() || v4.is_loopback() || v4.is_link_local(),
            IpAddr::V6(v6) => {
                v6.is_unique_local() || v6.is_unicast_link_local() || v6.is_loopback()
            }
        }
    }
    private(server.ip()) || !private(peer.ip())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_public_relay_is_not_asked_to_reach_private_addresses() {
        let public: SocketAddr = "100.64.1.1:3478".parse().unwrap();
        let private: SocketAddr = "10.0.0.1:3478".parse().unwrap();
        for peer in ["10.61.0.2:5000", "192.168.1.2:1", "127.0.0.1:9", "[fd00::1]:9", "[fe80::1]:9"]
        {
            let peer: SocketAddr = peer.parse().unwrap();
            assert!(!reaches(public, peer), "{peer}");
            assert!(reaches(private, peer), "{peer}");
        }
        for peer in ["100.64.2.2:5000", "198.51.100.7:1", "[2001:db8::1]:9"] {
            assert!(reaches(public, peer.parse().unwrap()), "{peer}");
        }
    }

    #[test]
    fn credentials_files_are_two_lines_and_the_password_is_never_shown() {
        let dir = tempfile::tempdir().unwrap();
        let addr: SocketAddr = "192.0.2.1:3478".parse().unwrap();
        let path = dir.path().join("turn");
        std::fs::write(&path, "1700000000:alice\r\npa:ss\n").unwrap();
        let s = TurnServer::from_credentials_file(addr, &path).unwrap();
        assert_eq!(s, TurnServer::new(addr, "1700000000:alice".into(), "pa:ss".into()));
        assert!(!format!("{s:?}").contains("pa:ss"));
        let p: TurnPassword = "pa:ss".parse().unwrap();
        assert_eq!((p.expose(), format!("{p:?}").contains("pa:ss")), ("pa:ss", false));
        for bad in ["", "alice\n", "\npass\n", "a\nb\nc\n"] {
            std::fs::write(&path, bad).unwrap();
            assert!(TurnServer::from_credentials_file(addr, &path).is_err(), "{bad:?}");
        }
        std::fs::write(&path, vec![b'a'; CREDENTIALS_FILE_MAX_BYTES as usize + 1]).unwrap();
        assert!(TurnServer::from_credentials_file(addr, &path).is_err());
    }

    #[test]
    fn an_allocation_starts_with_a_request_to_the_server_and_hostile_answers_never_panic() {
        let server: SocketAddr = "192.0.2.1:3478".parse().unwrap();
        let t = TurnServer::new(server, "u".into(), "p".into());
        let now = crate::node::clock::now();
        let mut r = TurnRelay::new(&t, "10.0.0.2:5000".parse().unwrap(), now).unwrap();
        let (to, first) = r.poll_transmit().unwrap();
        assert_eq!(to, server);
        assert!(!r.settled());
        // Every prefix and flipped byte of a STUN message, and ChannelData for a channel
        // never bound: dropped, never a panic, no data, nothing allocated.
        for i in 0..first.len() {
            assert!(r.handle(now, &first[..i]).is_empty());
            let mut bad = first.to_vec();
            bad[i] ^= 0x41;
            assert!(r.handle(now, &bad).is_empty());
        }
        assert!(r.handle(now, &[0x40, 0x00, 0x00, 0x04, 1, 2, 3, 4]).is_empty());
        assert_eq!(r.relayed(), None);
        // Unanswered, the allocation fails once its retransmissions run out.
        let mut at = now;
        for _ in 0..64 {
            let Some(t) = r.poll_timeout() else { break };
            at = at.max(t);
            r.handle_timeout(at);
            while r.poll_transmit().is_some() {}
            if r.settled() {
                break;
            }
        }
        assert!(r.failed());
        // Without an allocation nothing is sent or permitted.
        r.send(at, "198.51.100.1:9".parse().unwrap(), b"x");
        r.permit(at, "198.51.100.1:9".parse().unwrap());
        assert!(r.poll_transmit().is_none());
    }
}
