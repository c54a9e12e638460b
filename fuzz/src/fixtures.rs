//! Deterministic fixtures shared by the fuzz targets and the seed generator
//! (`tests/fuzz_seeds.rs` includes this file with `#[path]`), so a committed seed replays
//! exactly the state its target builds: the same identities, session keys, handshake
//! randomness, DHT node and input layouts.
//!
//! Nothing here is secret: the identities are the test fixtures in
//! `tests/fixtures/identities`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use furymesh::crypto::rand_core::OsRng;
use furymesh::crypto::{
    Encryption, HandshakeConfig, HandshakeRandom, Identity, Initiator, Responder,
    ResponderAwaitingFinish, SessionIdentity,
};
use furymesh::dht::{Contact, Dht, DhtCommand, DhtConfig, Key, NodeId};
use furymesh::wire::{decode_dht, decode_dht_table};
use hmac::Mac;

/// The fixed "now" (unix seconds) of every handshake and certificate check.
pub const NOW: u64 = 1_700_000_000;
/// End of validity of the fixture session certificates.
pub const NOT_AFTER: u64 = NOW + 24 * 3600;

/// Seed of the fuzzed DHT node's random choices (transaction ids, refresh targets).
pub const DHT_SEED: u64 = 0x5eed;

/// The fuzzed DHT node's own contact.
pub fn dht_local() -> Contact {
    Contact { id: NodeId::from_bytes([0x42; 20]), addr: "10.0.0.1:7420".parse().unwrap() }
}

/// The fuzzed DHT node's configuration: the production defaults.
pub fn dht_config() -> DhtConfig {
    DhtConfig::default()
}

/// The source address a `dht_engine` input names with one byte: 64 IPv4 hosts in 8 /24
/// networks, then IPv6 hosts in 4 /64 networks, ports vary so one IP can be several nodes.
pub fn dht_source(selector: u8) -> SocketAddr {
    let n = selector;
    let port = 7000 + u16::from(n % 3);
    if n < 192 {
        let ip = Ipv4Addr::new(10, 1 + n % 8, n / 8, 2 + n % 5);
        SocketAddr::new(IpAddr::V4(ip), port)
    } else {
        let ip = Ipv6Addr::new(0x2001, 0xdb8, u16::from(n % 4), 0, 0, 0, 0, u16::from(n));
        SocketAddr::new(IpAddr::V6(ip), port)
    }
}

/// `dht_engine` operation codes (the first byte of each operation, modulo 4).
pub mod dht_op {
    /// `from u8 ‖ len u16 LE ‖ datagram [len]`: a datagram arrives from
    /// [`dht_source`](super::dht_source)`(from)`.
    pub const DATAGRAM: u8 = 0;
    /// `step u16 LE`: time passes by `step × 16` ms, then due timers run.
    pub const ADVANCE: u8 = 1;
    /// `which u8 ‖ id [20]`: an application command (see [`dht_step`](super::dht_step)).
    pub const COMMAND: u8 = 2;
    /// `len u16 LE ‖ snapshot [len]`: a persisted routing table is restored.
    pub const RESTORE: u8 = 3;
}

/// A fresh fuzzed DHT node.
pub fn dht_node() -> Dht {
    Dht::new(dht_config(), dht_local(), DHT_SEED)
}

/// Reads one operation from `c` and applies it to `dht` the way the node's loops do
/// (datagrams go through `wire::decode_dht` first). `None`: the input ended.
pub fn dht_step(dht: &mut Dht, now: &mut Instant, c: &mut Cursor<'_>) -> Option<()> {
    match c.u8()? % 4 {
        dht_op::DATAGRAM => {
            let from = dht_source(c.u8()?);
            let len = usize::from(c.u16()?);
            if let Ok(msg) = decode_dht(c.take_up_to(len)) {
                dht.handle_datagram(*now, from, msg);
            }
        }
        dht_op::ADVANCE => {
            *now += Duration::from_millis(u64::from(c.u16()?) * 16);
            if dht.poll_timeout().is_some_and(|t| t <= *now) {
                dht.handle_timeout(*now);
            }
        }
        dht_op::COMMAND => {
            let which = c.u8()?;
            let id = c.array::<20>()?;
            let cmd = match which % 6 {
                0 => DhtCommand::FindNode(NodeId::from_bytes(id)),
                1 => DhtCommand::FindProviders(Key::from_bytes(id)),
                2 => DhtCommand::Announce(Key::from_bytes(id)),
                3 => DhtCommand::Withdraw(Key::from_bytes(id)),
                4 => DhtCommand::Bootstrap(id.iter().map(|&b| dht_source(b)).collect()),
                _ => DhtCommand::Restore(id.iter().map(|&b| dht_contact(b)).collect()),
            };
            dht.handle_command(*now, cmd);
        }
        _ => {
            // What `node::dht` does with DATA_DIR/dht-table.fmt at start-up.
            let len = usize::from(c.u16()?);
            if let Ok(contacts) = decode_dht_table(c.take_up_to(len)) {
                dht.handle_command(*now, DhtCommand::Restore(contacts));
            }
        }
    }
    Some(())
}

/// The contact a `Restore` command names with one byte: id `[b; 20]` at `dht_source(b)`.
pub fn dht_contact(b: u8) -> Contact {
    Contact { id: NodeId::from_bytes([b; 20]), addr: dht_source(b) }
}

fn issue(der: &[u8], seed: u8) -> Arc<SessionIdentity> {
    let identity = Identity::from_pkcs8_der(der).expect("fixture identity");
    // PKCS#1 v1.5 signatures are deterministic; the RNG only blinds the RSA operation.
    Arc::new(identity.issue_session(&mut OsRng, [seed; 32], NOT_AFTER).expect("session"))
}

/// The responder's session identity (fixture "alice").
pub fn server_session() -> Arc<SessionIdentity> {
    static S: OnceLock<Arc<SessionIdentity>> = OnceLock::new();
    S.get_or_init(|| issue(include_bytes!("../../tests/fixtures/identities/alice.pk8.der"), 1))
        .clone()
}

/// The initiator's session identity (fixture "bob").
pub fn client_session() -> Arc<SessionIdentity> {
    static S: OnceLock<Arc<SessionIdentity>> = OnceLock::new();
    S.get_or_init(|| issue(include_bytes!("../../tests/fixtures/identities/bob.pk8.der"), 2))
        .clone()
}

/// A public-network, encrypted configuration for `local`.
pub fn config(local: Arc<SessionIdentity>, expected_peer: Option<NodeId>) -> HandshakeConfig {
    HandshakeConfig {
        local,
        network: None,
        encryption: Encryption::On,
        expected_peer,
        channel_binding: None,
    }
}

/// Fixed handshake randomness for role 0 (initiator) or 1 (responder).
pub fn random(role: u8) -> HandshakeRandom {
    HandshakeRandom { ephemeral: [0x10 + role; 32], nonce: [0x20 + role; 32] }
}

/// The deterministic initiator (pinning the responder) and its ClientHello.
pub fn initiator() -> (Initiator, Vec<u8>) {
    let cfg = config(client_session(), Some(server_session().node_id()));
    Initiator::start(cfg, random(0), NOW).expect("initiator starts")
}

/// The deterministic responder after the deterministic ClientHello, and its ServerHello.
pub fn responder() -> (ResponderAwaitingFinish, Vec<u8>) {
    let (_, hello) = initiator();
    Responder::handle_client_hello(config(server_session(), None), random(1), &hello, NOW)
        .expect("responder accepts the fixture ClientHello")
}

/// The three messages of the deterministic handshake: ClientHello, ServerHello,
/// ClientFinish.
pub fn transcript() -> [Vec<u8>; 3] {
    let (init, hello) = initiator();
    let (_, server_hello) = responder();
    let (finish, _) =
        init.handle_server_hello(&server_hello, NOW).expect("fixture handshake completes");
    [hello, server_hello, finish]
}

/// The file the `peer_server` target serves: 5 chunks of the smallest chunk size, the last
/// one short.
pub fn served_file() -> furymesh::manifest::FileInfo {
    let chunk_size = furymesh::config::CHUNK_SIZE_MIN_BYTES;
    let size = 5 * u64::from(chunk_size) - 100;
    let chunk_hashes: Vec<_> =
        (0..5u32).map(|i| furymesh::crypto::chunk_hash(&i.to_le_bytes())).collect();
    furymesh::manifest::FileInfo {
        file_id: furymesh::crypto::FileId::from_manifest(size, chunk_size, &chunk_hashes),
        name: "served.bin".into(),
        size,
        chunk_size,
        creation_time: 1_700_000_000,
        chunk_hashes,
    }
}

/// Bytes of the ClientHello's network MAC.
pub const HELLO_MAC_BYTES: usize = 32;

/// The ClientHello MAC of the public network: `HMAC-SHA256(psk, "ch" ‖ body)` with `psk =
/// HKDF-SHA256(salt "furymesh-network-v1", ikm "", info "public handshake psk")`, a public
/// value (see `crypto::handshake`). The handshake target appends it to fuzzed bodies so
/// fuzzing reaches past the MAC check; [`check_hello_mac`] proves it matches the product.
pub fn public_hello_mac(body: &[u8]) -> [u8; HELLO_MAC_BYTES] {
    let hk = hkdf::Hkdf::<sha2::Sha256>::new(Some(b"furymesh-network-v1"), b"");
    let mut psk = [0u8; 32];
    hk.expand(b"public handshake psk", &mut psk).expect("32-byte HKDF output");
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&psk).expect("any key length");
    mac.update(b"ch");
    mac.update(body);
    mac.finalize().into_bytes().into()
}

/// Panics unless [`public_hello_mac`] reproduces the MAC of a real ClientHello (the
/// handshake's key schedule changed: update this file).
pub fn check_hello_mac() {
    let (_, hello) = initiator();
    let (body, mac) = hello.split_at(hello.len() - HELLO_MAC_BYTES);
    assert_eq!(public_hello_mac(body), mac, "fixtures: the public ClientHello MAC changed");
}

/// `handshake` target modes (the input's first byte, modulo 4).
pub mod handshake_mode {
    /// The rest is a ClientHello, fed to the responder as is.
    pub const CLIENT_HELLO: u8 = 0;
    /// The rest is a ClientHello without its MAC; the target appends the public MAC.
    pub const CLIENT_HELLO_MACED: u8 = 1;
    /// The rest is a ServerHello for the deterministic initiator.
    pub const SERVER_HELLO: u8 = 2;
    /// The rest is a ClientFinish for the deterministic responder.
    pub const CLIENT_FINISH: u8 = 3;
}

/// Reads structured operations out of a fuzz input. Every read past the end returns `None`,
/// which ends the operation loop.
pub struct Cursor<'a> {
    rest: &'a [u8],
}

impl<'a> Cursor<'a> {
    /// A cursor over `data`.
    pub fn new(data: &'a [u8]) -> Self {
        Self { rest: data }
    }

    /// Whether everything was read.
    pub fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    /// The next `n` bytes.
    pub fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.rest.len() < n {
            return None;
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Some(head)
    }

    /// Up to `n` bytes: fewer at the end of the input.
    pub fn take_up_to(&mut self, n: usize) -> &'a [u8] {
        let n = n.min(self.rest.len());
        self.take(n).unwrap_or_default()
    }

    /// The next `N` bytes as an array.
    pub fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N).map(|b| b.try_into().expect("N bytes"))
    }

    /// The next byte.
    pub fn u8(&mut self) -> Option<u8> {
        self.array::<1>().map(|[b]| b)
    }

    /// The next little-endian u16.
    pub fn u16(&mut self) -> Option<u16> {
        self.array().map(u16::from_le_bytes)
    }

    /// The next little-endian u32.
    pub fn u32(&mut self) -> Option<u32> {
        self.array().map(u32::from_le_bytes)
    }

    /// Everything not read yet.
    pub fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.rest)
    }
}

/// Modes of the `signal` target: the first input byte says which side parses the rest.
pub mod signal_mode {
    /// The rest is a Hello, fed to the target node's responder.
    pub const HELLO: u8 = 0;
    /// The rest is a HelloReply, fed to the deterministic initiator.
    pub const REPLY: u8 = 1;
    /// The rest is an Offer, fed to the responder that answered the genuine Hello.
    pub const OFFER: u8 = 2;
    /// The rest is an Answer, fed to the offerer that sealed the genuine Offer.
    pub const ANSWER: u8 = 3;
}

/// Randomness of the deterministic signaling initiator (ephemeral key ‖ nonce).
pub const SIGNAL_INITIATOR_RANDOM: [u8; 48] = [0x31; 48];
/// Randomness of the deterministic signaling responder (its ephemeral key).
pub const SIGNAL_RESPONDER_RANDOM: [u8; 32] = [0x32; 32];

/// The payload each side of the deterministic signaling exchange sends: `side` 0 for the
/// offer, 1 for the answer.
pub fn signal_payload(side: u8) -> furymesh::crypto::signal::SignalPayload {
    furymesh::crypto::signal::SignalPayload {
        candidates: vec![
            furymesh::crypto::signal::SignalCandidate {
                kind: furymesh::crypto::signal::CandidateKind::Host,
                addr: SocketAddr::from(([127, 0, 0, 1], 40_000 + u16::from(side))),
            },
            furymesh::crypto::signal::SignalCandidate {
                kind: furymesh::crypto::signal::CandidateKind::ServerReflexive,
                addr: SocketAddr::from(([198, 51, 100, 1], 50_000 + u16::from(side))),
            },
        ],
        sdp: format!(
            "v=0\r\no=- {side} 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n\
             a=fingerprint:sha-256 {}\r\na=ice-ufrag:fz{side}\r\na=ice-pwd:fuzzfuzzfuzzfuzzfuzz{side}\r\n",
            ["AB"; 32].join(":")
        ),
        browser: None,
    }
}

/// The deterministic initiator (bob, signaling to alice) and its Hello.
pub fn signal_initiator() -> (furymesh::crypto::signal::SignalInitiator, Vec<u8>) {
    furymesh::crypto::signal::SignalInitiator::start(
        client_session(),
        server_session().node_id(),
        NOW,
        SIGNAL_INITIATOR_RANDOM,
    )
}

/// The four messages of the deterministic signaling exchange: Hello, HelloReply, Offer,
/// Answer (computed once per process).
pub fn signal_messages() -> &'static [Vec<u8>; 4] {
    static M: OnceLock<[Vec<u8>; 4]> = OnceLock::new();
    M.get_or_init(|| {
        let (hello, reply, mut offerer) = signal_first_round();
        let offer = offerer.seal_offer(&signal_payload(0)).expect("fixture offer fits");
        let mut opener = signal_awaiting_offer();
        let opened = opener.open_offer(&offer).expect("fixture offer opens");
        let answer = opener.seal_answer(&opened, &signal_payload(1)).expect("fixture answer fits");
        [hello, reply, offer, answer]
    })
}

/// The first round trip (Hello, HelloReply) and the offerer it leaves.
fn signal_first_round() -> (Vec<u8>, Vec<u8>, furymesh::crypto::signal::SignalOfferer) {
    let mut responder = furymesh::crypto::signal::SignalResponder::new(server_session());
    let (init, hello) = signal_initiator();
    let reply =
        responder.handle_hello(&hello, NOW, SIGNAL_RESPONDER_RANDOM).expect("fixture hello");
    let offerer = init.handle_reply(&reply, NOW).expect("fixture reply");
    (hello, reply, offerer)
}

/// The target's responder after answering the genuine Hello: it awaits the Offer.
pub fn signal_awaiting_offer() -> furymesh::crypto::signal::SignalResponder {
    let (_, hello) = signal_initiator();
    let mut responder = furymesh::crypto::signal::SignalResponder::new(server_session());
    responder.handle_hello(&hello, NOW, SIGNAL_RESPONDER_RANDOM).expect("fixture hello");
    responder
}

/// The initiator's offerer after sealing the genuine Offer: it awaits the Answer.
pub fn signal_awaiting_answer() -> furymesh::crypto::signal::SignalOfferer {
    let (init, _) = signal_initiator();
    let mut offerer = init.handle_reply(&signal_messages()[1], NOW).expect("fixture reply");
    offerer.seal_offer(&signal_payload(0)).expect("fixture offer fits");
    offerer
}
