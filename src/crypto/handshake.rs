//! The authenticated handshake: a sans-IO, three-message, mutually authenticated key
//! agreement (shaped like Noise XX / SIGMA-I), and the private-network secret.
//!
//! Each side is a typestate: [`Initiator::start`] → ClientHello; [`Responder::
//! handle_client_hello`] → ServerHello; [`Initiator::handle_server_hello`] → ClientFinish and
//! a [`Session`]; [`ResponderAwaitingFinish::handle_client_finish`] → [`Session`]. Messages
//! are owned byte vectors; the transport frames them (each is at most
//! [`HANDSHAKE_MESSAGE_BYTES_MAX`] bytes). Every state consumes itself, so a state cannot be
//! reused, and nothing here does I/O, reads a clock or draws randomness: the caller passes
//! `now_unix` and a fresh [`HandshakeRandom`] per handshake.
//!
//! # Messages (integers little-endian)
//!
//! ```text
//! ClientHello  = 0x01 ‖ version ‖ flags ‖ e_c [32] ‖ nonce_c [32] ‖ has_expected u8
//!                ‖ expected_node_id [20] (if has_expected) ‖ net_mac [32]
//! ServerHello  = 0x02 ‖ e_s [32] ‖ nonce_s [32] ‖ flags ‖ certificate_s ‖ sig_s [64]
//!                ‖ fin_s [32]
//! ClientFinish = 0x03 ‖ certificate_c ‖ sig_c [64] ‖ fin_c [32]
//! ```
//!
//! `flags` bit 0 is `encryption on`, bit 1 `channel-bound` (below); other bits must be 0.
//! A running transcript hash `T` (SHA-256 over length-prefixed, labelled fields) covers
//! every byte sent, in order, and, on a channel-bound handshake, first the binding.
//!
//! # Keys and what each one signs or MACs
//!
//! - `psk` = HKDF(network secret) — or a fixed public value without one. `net_mac =
//!   HMAC(psk, ClientHello without net_mac)`: a responder refuses a client from another
//!   network at once, before any public-key work ([`HandshakeError::WrongNetworkSecret`]).
//! - `prk = HKDF-Extract(salt = T(ClientHello, ServerHello core), X25519(e_c, e_s) ‖ psk)`.
//!   Ephemeral X25519 keys give forward secrecy; the psk makes it a network-bound secret.
//! - The responder's **Ed25519 session key** signs `"furymesh-hs-v1 server\0" ‖ T(…,
//!   certificate_s)`; the initiator's signs `"furymesh-hs-v1 client\0" ‖ T(…,
//!   certificate_c)`. Each transcript includes both ephemerals, both nonces, both flags and
//!   the signer's own certificate, so a signature cannot be moved to another handshake.
//! - `fin_s = HMAC(HKDF-Expand(prk, "s finished"), T(…, sig_s))`, `fin_c` likewise with "c
//!   finished": key confirmation that binds each identity to the shared secret (SIGMA's
//!   MAC), which stops identity misbinding — a third node cannot replace a certificate and
//!   signature with its own, because it cannot compute the MAC.
//! - Each node's **RSA key** only signs its own certificate, at start-up
//!   ([`Identity::issue_session`](super::Identity::issue_session)). A peer's certificate is
//!   checked with RSA public-key operations only, so no peer can time an RSA private key
//!   (RUSTSEC-2023-0071).
//! - Traffic: `HKDF(salt = T(all three messages), prk)` expands to the client→server and
//!   server→client secrets that seed the [`record`](super::record) layer.
//!
//! # Channel binding: records inside DTLS
//!
//! A handshake inside a WebRTC data channel may be *bound* to the DTLS session that
//! carries it ([`HandshakeConfig::channel_binding`]): `binding = SHA-256(
//! "furymesh-dtls-binding-v1\0" ‖ SHA-256(initiator's DTLS certificate) ‖ SHA-256(responder's
//! DTLS certificate))`, each side computing it from the certificate DTLS used for itself
//! and the one its peer presented. Both sides set flag bit 1 and absorb the binding into
//! `T` before the ClientHello, so both signatures and both finished MACs cover it. Records
//! after it are then plaintext: DTLS encrypts and authenticates them, and the binding
//! proves that the DTLS peer is the node this handshake authenticated. A man in the middle
//! who terminates DTLS toward each side separately presents his own certificate to each,
//! so the two sides' bindings differ, their transcripts differ, and the finished MAC fails
//! ([`HandshakeError::BadFinishedMac`]); relaying the handshake unchanged gains him
//! nothing. The flag is in both signed transcripts (no downgrade either way) and each
//! side compares the peer's flag with its own ([`HandshakeError::ChannelBindingMismatch`]).
//! Everything else — the network secret in `psk` and `net_mac`, pins, certificates — is
//! unchanged.
//!
//! # What an attacker on the path can and cannot do
//!
//! It sees both certificates (node IDs are not hidden), the optional expected node ID and
//! the encryption flags. It cannot learn session keys (X25519), impersonate a node without
//! its session key, downgrade `encryption` (both flags are in both signed transcripts, and
//! each side also compares the peer's flag to its own setting), or replay a recorded
//! handshake: fresh ephemerals and nonces make every transcript new, so recorded MACs and
//! signatures fail ([`HandshakeError::BadFinishedMac`]: the MAC is checked first, before
//! any public-key work, which a tampered or garbage message therefore never costs).
//! Without the network secret it cannot complete a handshake with a private node at all. It
//! can always drop or delay messages.

use std::fmt;
use std::sync::Arc;

use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use super::id::NodeId;
use super::identity::{
    Certificate, IdentityError, Reader, SessionIdentity, VerifiedCertificate,
    ED25519_SIGNATURE_BYTES,
};
use super::record::{Opener, RekeyLimits, Sealer};

/// The handshake version this code speaks.
pub const PROTOCOL_VERSION: u8 = 1;
/// Upper bound on every handshake message; the transport refuses longer frames unread.
pub const HANDSHAKE_MESSAGE_BYTES_MAX: usize = 2048;

const MSG_CLIENT_HELLO: u8 = 1;
const MSG_SERVER_HELLO: u8 = 2;
const MSG_CLIENT_FINISH: u8 = 3;
const FLAG_ENCRYPTION: u8 = 1;
const FLAG_CHANNEL_BOUND: u8 = 2;
const BINDING_DOMAIN: &[u8] = b"furymesh-dtls-binding-v1\0";
const MAC_BYTES: usize = 32;

const NETWORK_SALT: &[u8] = b"furymesh-network-v1";
const TRANSCRIPT_DOMAIN: &[u8] = b"furymesh-handshake-v1\0";
const SIG_SERVER: &[u8] = b"furymesh-hs-v1 server\0";
const SIG_CLIENT: &[u8] = b"furymesh-hs-v1 client\0";

type HmacSha256 = Hmac<Sha256>;

/// Whether records are encrypted. Both peers must say the same; the default is `On`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Encryption {
    /// AES-256-GCM records.
    #[default]
    On,
    /// Plaintext records (public mirrors, benchmarks): the handshake still authenticates
    /// the peer, and chunk hashes give integrity.
    Off,
}

impl Encryption {
    fn flags(self) -> u8 {
        match self {
            Self::On => FLAG_ENCRYPTION,
            Self::Off => 0,
        }
    }

    fn from_flags(flags: u8, message: &'static str) -> Result<Self, HandshakeError> {
        match flags {
            FLAG_ENCRYPTION => Ok(Self::On),
            0 => Ok(Self::Off),
            _ => Err(HandshakeError::Malformed { message, what: "unknown flags" }),
        }
    }
}

/// The flags byte of a hello: the encryption setting and whether the handshake is bound to
/// the DTLS channel that carries it.
fn flags_of(config: &HandshakeConfig) -> u8 {
    config.encryption.flags()
        | if config.channel_binding.is_some() { FLAG_CHANNEL_BOUND } else { 0 }
}

/// Reads a hello's flags byte: the peer's encryption setting and whether it binds.
fn parse_flags(flags: u8, message: &'static str) -> Result<(Encryption, bool), HandshakeError> {
    let bound = flags & FLAG_CHANNEL_BOUND != 0;
    Ok((Encryption::from_flags(flags & !FLAG_CHANNEL_BOUND, message)?, bound))
}

/// The channel binding of a DTLS session (module docs): from the SHA-256 of the DER
/// certificate each side used, the handshake initiator's first.
pub fn dtls_channel_binding(initiator_cert: &[u8; 32], responder_cert: &[u8; 32]) -> [u8; 32] {
    Sha256::new_with_prefix(BINDING_DOMAIN)
        .chain_update(initiator_cert)
        .chain_update(responder_cert)
        .finalize()
        .into()
}

/// A fresh transcript, with the channel binding first when there is one.
fn transcript_for(config: &HandshakeConfig) -> Transcript {
    let mut t = Transcript::new();
    if let Some(b) = &config.channel_binding {
        t.absorb(b"dtls binding", b);
    }
    t
}

/// A private network's pre-shared secret, as keys derived from the secret file's bytes.
#[derive(Clone, ZeroizeOnDrop)]
pub struct NetworkSecret {
    psk: [u8; 32],
    dht: [u8; 32],
}

impl NetworkSecret {
    /// Fewest secret bytes accepted (128 bits).
    pub const BYTES_MIN: usize = 16;

    /// Derives the network keys from the secret (e.g. the `--network-secret` file's bytes).
    pub fn from_bytes(secret: &[u8]) -> Result<Self, HandshakeError> {
        if secret.len() < Self::BYTES_MIN {
            return Err(HandshakeError::WeakNetworkSecret { len: secret.len() });
        }
        Ok(Self {
            psk: derive_network_key(secret, b"handshake psk"),
            dht: derive_network_key(secret, b"dht tag"),
        })
    }
}

impl fmt::Debug for NetworkSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("NetworkSecret(<redacted>)")
    }
}

fn derive_network_key(secret: &[u8], label: &[u8]) -> [u8; 32] {
    let hk = Hkdf::<Sha256>::new(Some(NETWORK_SALT), secret);
    let mut out = [0u8; 32];
    hk.expand(label, &mut out).expect("32 bytes is a valid HKDF length");
    out
}

/// The psk of the public network (no secret): a fixed, public value, distinct from any
/// secret network's psk.
fn psk_of(network: Option<&NetworkSecret>) -> Zeroizing<[u8; 32]> {
    Zeroizing::new(match network {
        Some(n) => n.psk,
        None => derive_network_key(b"", b"public handshake psk"),
    })
}

/// Bytes of a DHT datagram's network tag.
pub const NETWORK_TAG_BYTES: usize = 16;

/// HMAC-SHA256 of `datagram` under the network's DHT key, truncated to 128 bits. The DHT
/// appends it to every datagram in a private network, and drops datagrams whose tag does
/// not verify, so nodes without the secret can neither query nor pollute routing tables.
pub fn network_tag(secret: &NetworkSecret, datagram: &[u8]) -> [u8; NETWORK_TAG_BYTES] {
    let mut mac = dht_mac(secret);
    mac.update(datagram);
    let full = mac.finalize().into_bytes();
    let mut tag = [0u8; NETWORK_TAG_BYTES];
    tag.copy_from_slice(&full[..NETWORK_TAG_BYTES]);
    tag
}

/// Checks a [`network_tag`] in constant time.
pub fn verify_network_tag(secret: &NetworkSecret, datagram: &[u8], tag: &[u8]) -> bool {
    if tag.len() != NETWORK_TAG_BYTES {
        return false;
    }
    let mut mac = dht_mac(secret);
    mac.update(datagram);
    mac.verify_truncated_left(tag).is_ok()
}

fn dht_mac(secret: &NetworkSecret) -> HmacSha256 {
    // HMAC takes keys of any length.
    <HmacSha256 as Mac>::new_from_slice(&secret.dht).expect("HMAC accepts any key length")
}

fn hmac(key: &[u8], parts: &[&[u8]]) -> [u8; MAC_BYTES] {
    let mut mac = <HmacSha256 as Mac>::new_from_slice(key).expect("HMAC accepts any key length");
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().into()
}

fn verify_hmac(key: &[u8], parts: &[&[u8]], tag: &[u8]) -> bool {
    let mut mac = <HmacSha256 as Mac>::new_from_slice(key).expect("HMAC accepts any key length");
    for p in parts {
        mac.update(p);
    }
    mac.verify_slice(tag).is_ok()
}

/// Who is to blame for a failed handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Blame {
    /// The peer (or an attacker on the path): drop it, count a penalty.
    Peer,
    /// Our own configuration or state (e.g. an expired session certificate).
    Local,
}

/// Why a handshake failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    /// A message is truncated, too long, or has a bad field.
    #[error("malformed {message}: {what}")]
    Malformed { message: &'static str, what: &'static str },
    /// The peer speaks another handshake version.
    #[error("peer speaks handshake version {version}, we speak {PROTOCOL_VERSION}")]
    UnsupportedVersion { version: u8 },
    /// The peer has another network secret (or none while we have one, or vice versa).
    #[error("the peer is not in our network: its network secret differs from ours")]
    WrongNetworkSecret,
    /// The two sides disagree on `--encryption`.
    #[error("encryption is {local:?} here but {peer:?} at the peer: both must agree")]
    EncryptionMismatch { local: Encryption, peer: Encryption },
    /// One side binds the handshake to its DTLS channel and the other does not (module
    /// docs, "Channel binding").
    #[error("channel binding is {local} here but {peer} at the peer: both must agree")]
    ChannelBindingMismatch { local: bool, peer: bool },
    /// The client asked for another node than us.
    #[error("the client expects node {expected}, we are another node")]
    NotTheExpectedNode { expected: NodeId },
    /// The peer's key does not hash to the pinned node ID.
    #[error("the peer is node {got}, but node {expected} was pinned")]
    PeerIdMismatch { expected: NodeId, got: NodeId },
    /// The peer's certificate is malformed, badly signed or expired.
    #[error("peer certificate refused: {0}")]
    PeerCertificate(IdentityError),
    /// The peer's ephemeral key is a low-order point (the shared secret would be all zero).
    #[error("the peer's ephemeral key is of low order")]
    NonContributoryKeyExchange,
    /// The peer's session-key signature over the transcript does not verify, though its
    /// finished MAC did: it shares this handshake's key but cannot sign for the node its
    /// certificate names (an impostor that ran the key exchange itself).
    #[error("the peer's handshake signature does not verify (an impostor)")]
    BadSignature,
    /// The peer's finished MAC does not verify: it does not share our key (a replayed or
    /// tampered handshake, or a different network secret). Checked before the peer's
    /// certificate and signature, so such a message costs no public-key operation.
    #[error(
        "the peer's finished MAC does not verify (replayed or tampered handshake, or wrong \
         network secret)"
    )]
    BadFinishedMac,
    /// Our own session certificate has expired: issue a new one.
    #[error("our session certificate expired at {not_after} (now {now})")]
    LocalCertificateExpired { not_after: u64, now: u64 },
    /// The network secret is too short.
    #[error(
        "network secret of {len} bytes is too short (at least {} bytes)",
        NetworkSecret::BYTES_MIN
    )]
    WeakNetworkSecret { len: usize },
}

impl HandshakeError {
    /// Whether the peer or we caused it.
    pub fn blame(&self) -> Blame {
        match self {
            Self::LocalCertificateExpired { .. } | Self::WeakNetworkSecret { .. } => Blame::Local,
            _ => Blame::Peer,
        }
    }
}

/// What each side brings to a handshake.
#[derive(Clone, Debug)]
pub struct HandshakeConfig {
    /// Our certified session key.
    pub local: Arc<SessionIdentity>,
    /// The private network's secret, or `None` for the public network.
    pub network: Option<NetworkSecret>,
    /// Our `--encryption` setting; the peer must have the same.
    pub encryption: Encryption,
    /// Pin: the peer must be this node (initiator: `NODE_ID@HOST:PORT`; a responder may
    /// pin too). Also sent in the ClientHello so a wrong responder refuses early.
    pub expected_peer: Option<NodeId>,
    /// The DTLS channel this handshake runs in ([`dtls_channel_binding`]), or `None` (TCP).
    /// With one, the transcript covers it and the session's records are plaintext inside
    /// DTLS (module docs, "Channel binding"); the peer must bind too.
    pub channel_binding: Option<[u8; 32]>,
}

/// Fresh randomness for one handshake: fill both from the OS RNG, never reuse.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct HandshakeRandom {
    /// The X25519 ephemeral secret key.
    pub ephemeral: [u8; 32],
    /// The handshake nonce.
    pub nonce: [u8; 32],
}

impl fmt::Debug for HandshakeRandom {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("HandshakeRandom(<redacted>)")
    }
}

/// The running transcript hash: labelled, length-prefixed fields, so no two different
/// sequences of fields hash the same.
#[derive(Clone)]
struct Transcript(Sha256);

impl Transcript {
    fn new() -> Self {
        Self(Sha256::new_with_prefix(TRANSCRIPT_DOMAIN))
    }

    fn absorb(&mut self, label: &[u8], bytes: &[u8]) {
        for part in [label, bytes] {
            self.0.update((part.len() as u64).to_le_bytes());
            self.0.update(part);
        }
    }

    fn hash(&self) -> [u8; 32] {
        self.0.clone().finalize().into()
    }
}

fn check_local(config: &HandshakeConfig, now_unix: u64) -> Result<(), HandshakeError> {
    let not_after = config.local.not_after();
    if now_unix > not_after {
        return Err(HandshakeError::LocalCertificateExpired { not_after, now: now_unix });
    }
    Ok(())
}

/// The peer's channel-binding flag must be ours.
fn check_binding(config: &HandshakeConfig, peer_bound: bool) -> Result<(), HandshakeError> {
    let local = config.channel_binding.is_some();
    if local != peer_bound {
        return Err(HandshakeError::ChannelBindingMismatch { local, peer: peer_bound });
    }
    Ok(())
}

fn agree(
    secret: &StaticSecret,
    peer: [u8; 32],
    psk: &[u8; 32],
    salt: &[u8; 32],
) -> Result<Zeroizing<[u8; 32]>, HandshakeError> {
    let shared = secret.diffie_hellman(&PublicKey::from(peer));
    if !shared.was_contributory() {
        return Err(HandshakeError::NonContributoryKeyExchange);
    }
    let mut ikm = Zeroizing::new([0u8; 64]);
    ikm[..32].copy_from_slice(shared.as_bytes());
    ikm[32..].copy_from_slice(psk);
    let (prk, _) = Hkdf::<Sha256>::extract(Some(salt), ikm.as_ref());
    Ok(Zeroizing::new(prk.into()))
}

fn finished_key(prk: &[u8; 32], label: &[u8]) -> Zeroizing<[u8; 32]> {
    let mut k = Zeroizing::new([0u8; 32]);
    Hkdf::<Sha256>::from_prk(prk)
        .expect("32-byte PRK")
        .expand(label, k.as_mut())
        .expect("32 bytes is a valid HKDF length");
    k
}

/// Verifies a peer's certificate, pin, signature and finished MAC, absorbing each into the
/// transcript. Shared by both roles.
struct PeerAuth<'a> {
    cert: Certificate,
    cert_bytes: &'a [u8],
    signature: [u8; ED25519_SIGNATURE_BYTES],
    fin: [u8; MAC_BYTES],
}

fn read_peer_auth<'a>(
    r: &mut Reader<'a>,
    message: &'static str,
) -> Result<PeerAuth<'a>, HandshakeError> {
    let bad = |what| HandshakeError::Malformed { message, what };
    let start = r.remaining();
    let before = start.len();
    let cert = Certificate::read(r).map_err(|_| bad("certificate"))?;
    let cert_bytes = &start[..before - r.rest_len()];
    let signature = r.array().ok_or(bad("truncated signature"))?;
    let fin = r.array().ok_or(bad("truncated finished MAC"))?;
    if !r.is_empty() {
        return Err(bad("trailing bytes"));
    }
    Ok(PeerAuth { cert, cert_bytes, signature, fin })
}

#[allow(clippy::too_many_arguments)]
fn verify_peer(
    auth: &PeerAuth<'_>,
    t: &mut Transcript,
    prk: &[u8; 32],
    labels: (&[u8], &[u8], &[u8]),
    sig_label: &[u8],
    fin_label: &[u8],
    expected: Option<NodeId>,
    now_unix: u64,
) -> Result<VerifiedCertificate, HandshakeError> {
    // Every check below must pass before the peer is accepted; their order only decides
    // what a refused message costs us, so the cheap ones go first. The pin is a hash of
    // the certificate's key.
    if let Some(expected) = expected {
        let got = auth.cert.claimed_node_id();
        if got != expected {
            return Err(HandshakeError::PeerIdMismatch { expected, got });
        }
    }
    // The finished MAC is one HMAC under a key that only the two ends of this key exchange
    // hold, over the whole transcript: a replayed, tampered or garbage message stops here,
    // before the RSA-4096 and Ed25519 verifications.
    t.absorb(labels.0, auth.cert_bytes);
    let signed = [sig_label, &t.hash()].concat();
    t.absorb(labels.1, &auth.signature);
    if !verify_hmac(finished_key(prk, fin_label).as_ref(), &[&t.hash()], &auth.fin) {
        return Err(HandshakeError::BadFinishedMac);
    }
    t.absorb(labels.2, &auth.fin);
    let verified = auth.cert.verify(now_unix).map_err(HandshakeError::PeerCertificate)?;
    verified
        .verify_session_signature(&signed, &auth.signature)
        .map_err(|_| HandshakeError::BadSignature)?;
    Ok(verified)
}

/// Appends our certificate, signature and finished MAC, absorbing each.
fn write_own_auth(
    out: &mut Vec<u8>,
    local: &SessionIdentity,
    t: &mut Transcript,
    prk: &[u8; 32],
    labels: (&[u8], &[u8], &[u8]),
    sig_label: &[u8],
    fin_label: &[u8],
) {
    let cert = local.certificate_bytes();
    out.extend_from_slice(cert);
    t.absorb(labels.0, cert);
    let sig = local.sign(&[sig_label, &t.hash()].concat());
    out.extend_from_slice(&sig);
    t.absorb(labels.1, &sig);
    let fin = hmac(finished_key(prk, fin_label).as_ref(), &[&t.hash()]);
    out.extend_from_slice(&fin);
    t.absorb(labels.2, &fin);
}

const SH_LABELS: (&[u8], &[u8], &[u8]) = (b"sh cert", b"sh sig", b"sh fin");
const CF_LABELS: (&[u8], &[u8], &[u8]) = (b"cf cert", b"cf sig", b"cf fin");
const FIN_SERVER: &[u8] = b"furymesh s finished";
const FIN_CLIENT: &[u8] = b"furymesh c finished";

/// The initiator after sending its ClientHello.
///
/// Not `Clone`, so a state cannot be used twice, except in fuzz builds (`cfg(fuzzing)`,
/// set by cargo-fuzz only): there a target builds the fixture state once and clones it for
/// each input instead of running the key exchange that made it again.
#[cfg_attr(fuzzing, derive(Clone))]
pub struct Initiator {
    config: HandshakeConfig,
    ephemeral: StaticSecret,
    transcript: Transcript,
}

impl Initiator {
    /// Starts a handshake: returns the state and the ClientHello to send.
    pub fn start(
        config: HandshakeConfig,
        random: HandshakeRandom,
        now_unix: u64,
    ) -> Result<(Self, Vec<u8>), HandshakeError> {
        check_local(&config, now_unix)?;
        let ephemeral = StaticSecret::from(random.ephemeral);
        let mut ch = Vec::with_capacity(128);
        ch.push(MSG_CLIENT_HELLO);
        ch.push(PROTOCOL_VERSION);
        ch.push(flags_of(&config));
        ch.extend_from_slice(PublicKey::from(&ephemeral).as_bytes());
        ch.extend_from_slice(&random.nonce);
        match config.expected_peer {
            Some(id) => {
                ch.push(1);
                ch.extend_from_slice(id.as_bytes());
            }
            None => ch.push(0),
        }
        let mac = hmac(psk_of(config.network.as_ref()).as_ref(), &[b"ch", &ch]);
        ch.extend_from_slice(&mac);
        let mut transcript = transcript_for(&config);
        transcript.absorb(b"ch", &ch);
        Ok((Self { config, ephemeral, transcript }, ch))
    }

    /// Handles the ServerHello: authenticates the responder and returns the ClientFinish
    /// to send and the established session (records may follow the ClientFinish at once).
    pub fn handle_server_hello(
        self,
        message: &[u8],
        now_unix: u64,
    ) -> Result<(Vec<u8>, Session), HandshakeError> {
        const M: &str = "ServerHello";
        let bad = |what| HandshakeError::Malformed { message: M, what };
        if message.len() > HANDSHAKE_MESSAGE_BYTES_MAX {
            return Err(bad("too long"));
        }
        let Self { config, ephemeral, mut transcript } = self;
        let mut r = Reader::new(message);
        if r.u8() != Some(MSG_SERVER_HELLO) {
            return Err(bad("not a ServerHello"));
        }
        let e_s: [u8; 32] = r.array().ok_or(bad("truncated"))?;
        let _nonce_s: [u8; 32] = r.array().ok_or(bad("truncated"))?;
        let (peer_enc, peer_bound) = parse_flags(r.u8().ok_or(bad("truncated"))?, M)?;
        let core_len = message.len() - r.rest_len();
        let auth = read_peer_auth(&mut r, M)?;
        if peer_enc != config.encryption {
            return Err(HandshakeError::EncryptionMismatch {
                local: config.encryption,
                peer: peer_enc,
            });
        }
        check_binding(&config, peer_bound)?;
        transcript.absorb(b"sh core", &message[..core_len]);
        let psk = psk_of(config.network.as_ref());
        let prk = agree(&ephemeral, e_s, &psk, &transcript.hash())?;
        let peer = verify_peer(
            &auth,
            &mut transcript,
            &prk,
            SH_LABELS,
            SIG_SERVER,
            FIN_SERVER,
            config.expected_peer,
            now_unix,
        )?;
        let mut cf = Vec::with_capacity(HANDSHAKE_MESSAGE_BYTES_MAX);
        cf.push(MSG_CLIENT_FINISH);
        write_own_auth(
            &mut cf,
            &config.local,
            &mut transcript,
            &prk,
            CF_LABELS,
            SIG_CLIENT,
            FIN_CLIENT,
        );
        let session = Session::new(Role::Initiator, peer, &config, &transcript, &prk);
        Ok((cf, session))
    }
}

impl fmt::Debug for Initiator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Initiator")
            .field("local", &self.config.local.node_id())
            .finish_non_exhaustive()
    }
}

/// The responder's entry point.
#[derive(Debug)]
pub struct Responder;

impl Responder {
    /// Handles a ClientHello: returns the state awaiting the ClientFinish and the
    /// ServerHello to send.
    pub fn handle_client_hello(
        config: HandshakeConfig,
        random: HandshakeRandom,
        message: &[u8],
        now_unix: u64,
    ) -> Result<(ResponderAwaitingFinish, Vec<u8>), HandshakeError> {
        const M: &str = "ClientHello";
        let bad = |what| HandshakeError::Malformed { message: M, what };
        check_local(&config, now_unix)?;
        if message.len() > HANDSHAKE_MESSAGE_BYTES_MAX {
            return Err(bad("too long"));
        }
        let mut r = Reader::new(message);
        if r.u8() != Some(MSG_CLIENT_HELLO) {
            return Err(bad("not a ClientHello"));
        }
        let version = r.u8().ok_or(bad("truncated"))?;
        if version != PROTOCOL_VERSION {
            return Err(HandshakeError::UnsupportedVersion { version });
        }
        let (peer_enc, peer_bound) = parse_flags(r.u8().ok_or(bad("truncated"))?, M)?;
        let e_c: [u8; 32] = r.array().ok_or(bad("truncated"))?;
        let _nonce_c: [u8; 32] = r.array().ok_or(bad("truncated"))?;
        let expected = match r.u8().ok_or(bad("truncated"))? {
            0 => None,
            1 => Some(NodeId::from_bytes(r.array().ok_or(bad("truncated"))?)),
            _ => return Err(bad("expected-node flag")),
        };
        let body_len = message.len() - r.rest_len();
        let mac: [u8; MAC_BYTES] = r.array().ok_or(bad("truncated"))?;
        if !r.is_empty() {
            return Err(bad("trailing bytes"));
        }
        // Cheapest check first: outsiders are refused before any public-key work.
        let psk = psk_of(config.network.as_ref());
        if !verify_hmac(psk.as_ref(), &[b"ch", &message[..body_len]], &mac) {
            return Err(HandshakeError::WrongNetworkSecret);
        }
        if peer_enc != config.encryption {
            return Err(HandshakeError::EncryptionMismatch {
                local: config.encryption,
                peer: peer_enc,
            });
        }
        check_binding(&config, peer_bound)?;
        if let Some(expected) = expected {
            if expected != config.local.node_id() {
                return Err(HandshakeError::NotTheExpectedNode { expected });
            }
        }
        let mut transcript = transcript_for(&config);
        transcript.absorb(b"ch", message);

        let ephemeral = StaticSecret::from(random.ephemeral);
        let mut sh = Vec::with_capacity(HANDSHAKE_MESSAGE_BYTES_MAX);
        sh.push(MSG_SERVER_HELLO);
        sh.extend_from_slice(PublicKey::from(&ephemeral).as_bytes());
        sh.extend_from_slice(&random.nonce);
        sh.push(flags_of(&config));
        transcript.absorb(b"sh core", &sh);
        let prk = agree(&ephemeral, e_c, &psk, &transcript.hash())?;
        write_own_auth(
            &mut sh,
            &config.local,
            &mut transcript,
            &prk,
            SH_LABELS,
            SIG_SERVER,
            FIN_SERVER,
        );
        debug_assert!(sh.len() <= HANDSHAKE_MESSAGE_BYTES_MAX);
        Ok((ResponderAwaitingFinish { config, transcript, prk }, sh))
    }
}

/// The responder after sending its ServerHello. Not `Clone` outside fuzz builds (see
/// [`Initiator`]).
#[cfg_attr(fuzzing, derive(Clone))]
pub struct ResponderAwaitingFinish {
    config: HandshakeConfig,
    transcript: Transcript,
    prk: Zeroizing<[u8; 32]>,
}

impl ResponderAwaitingFinish {
    /// Handles the ClientFinish: authenticates the initiator and returns the session.
    pub fn handle_client_finish(
        self,
        message: &[u8],
        now_unix: u64,
    ) -> Result<Session, HandshakeError> {
        const M: &str = "ClientFinish";
        let bad = |what| HandshakeError::Malformed { message: M, what };
        if message.len() > HANDSHAKE_MESSAGE_BYTES_MAX {
            return Err(bad("too long"));
        }
        let Self { config, mut transcript, prk } = self;
        let mut r = Reader::new(message);
        if r.u8() != Some(MSG_CLIENT_FINISH) {
            return Err(bad("not a ClientFinish"));
        }
        let auth = read_peer_auth(&mut r, M)?;
        let peer = verify_peer(
            &auth,
            &mut transcript,
            &prk,
            CF_LABELS,
            SIG_CLIENT,
            FIN_CLIENT,
            config.expected_peer,
            now_unix,
        )?;
        Ok(Session::new(Role::Responder, peer, &config, &transcript, &prk))
    }
}

impl fmt::Debug for ResponderAwaitingFinish {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponderAwaitingFinish")
            .field("local", &self.config.local.node_id())
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Initiator,
    Responder,
}

/// An authenticated session: the peer's verified identity and the traffic secrets.
pub struct Session {
    role: Role,
    peer: VerifiedCertificate,
    encryption: Encryption,
    /// Bound to the DTLS channel that carries it: records are plaintext inside DTLS.
    channel_bound: bool,
    transcript_hash: [u8; 32],
    c2s: Zeroizing<[u8; 32]>,
    s2c: Zeroizing<[u8; 32]>,
}

impl Session {
    fn new(
        role: Role,
        peer: VerifiedCertificate,
        config: &HandshakeConfig,
        transcript: &Transcript,
        prk: &[u8; 32],
    ) -> Self {
        let (encryption, channel_bound) = (config.encryption, config.channel_binding.is_some());
        let transcript_hash = transcript.hash();
        let hk = Hkdf::<Sha256>::new(Some(&transcript_hash), prk);
        let mut c2s = Zeroizing::new([0u8; 32]);
        let mut s2c = Zeroizing::new([0u8; 32]);
        hk.expand(b"furymesh c2s traffic", c2s.as_mut()).expect("32 bytes is a valid HKDF length");
        hk.expand(b"furymesh s2c traffic", s2c.as_mut()).expect("32 bytes is a valid HKDF length");
        Self { role, peer, encryption, channel_bound, transcript_hash, c2s, s2c }
    }

    /// The authenticated peer's node ID.
    pub fn peer_id(&self) -> NodeId {
        self.peer.node_id()
    }

    /// What both sides agreed on.
    pub fn encryption(&self) -> Encryption {
        self.encryption
    }

    /// A hash of the whole handshake, equal on both sides: a channel binding value.
    pub fn transcript_hash(&self) -> [u8; 32] {
        self.transcript_hash
    }

    /// Whether the handshake was bound to the DTLS channel that carries it (module docs,
    /// "Channel binding").
    pub fn channel_bound(&self) -> bool {
        self.channel_bound
    }

    /// The record layer: our [`Sealer`] and the peer's [`Opener`], or `None` with
    /// encryption off (records are plaintext; chunk hashes give integrity) or on a
    /// channel-bound session (records are plaintext inside DTLS, which encrypts them).
    pub fn into_records(self) -> Option<(Sealer, Opener)> {
        self.into_records_with_limits(RekeyLimits::PROTOCOL)
    }

    /// [`Session::into_records`] with other rekey limits. Both peers must use the same;
    /// only tests should use anything but [`RekeyLimits::PROTOCOL`].
    pub fn into_records_with_limits(self, limits: RekeyLimits) -> Option<(Sealer, Opener)> {
        if self.encryption == Encryption::Off || self.channel_bound {
            return None;
        }
        let (ours, theirs) = match self.role {
            Role::Initiator => (self.c2s.clone(), self.s2c.clone()),
            Role::Responder => (self.s2c.clone(), self.c2s.clone()),
        };
        Some((Sealer::new(ours, limits), Opener::new(theirs, limits)))
    }
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("role", &self.role)
            .field("peer", &self.peer.node_id())
            .field("encryption", &self.encryption)
            .field("channel_bound", &self.channel_bound)
            .field("traffic_secrets", &"<redacted>")
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::super::identity::fixtures::{session, ALICE, BOB, CAROL};
    use super::super::record::{RecordAad, RecordError};
    use super::*;

    const NOW: u64 = 1_700_000_000;
    const LATER: u64 = NOW + 3_600;

    fn config(der: &'static [u8], tag: u8) -> HandshakeConfig {
        HandshakeConfig {
            local: session(der, tag, LATER),
            network: None,
            encryption: Encryption::On,
            expected_peer: None,
            channel_binding: None,
        }
    }

    fn random(tag: u8) -> HandshakeRandom {
        HandshakeRandom { ephemeral: [tag; 32], nonce: [tag ^ 0xff; 32] }
    }

    struct Recorded {
        ch: Vec<u8>,
        sh: Vec<u8>,
        cf: Vec<u8>,
        client: Session,
        server: Session,
    }

    fn run(client: HandshakeConfig, server: HandshakeConfig, seed: u8) -> Recorded {
        let (init, ch) = Initiator::start(client, random(seed), NOW).unwrap();
        let (resp, sh) =
            Responder::handle_client_hello(server, random(seed.wrapping_add(100)), &ch, NOW)
                .unwrap();
        let (cf, client) = init.handle_server_hello(&sh, NOW).unwrap();
        let server = resp.handle_client_finish(&cf, NOW).unwrap();
        Recorded { ch, sh, cf, client, server }
    }

    #[test]
    fn full_handshake_authenticates_both_sides_and_keys_match() {
        let (a, b) = (config(ALICE, 1), config(BOB, 2));
        let (a_id, b_id) = (a.local.node_id(), b.local.node_id());
        let rec = run(a, b, 1);
        assert!(rec.ch.len() <= HANDSHAKE_MESSAGE_BYTES_MAX);
        assert!(rec.sh.len() <= HANDSHAKE_MESSAGE_BYTES_MAX);
        assert!(rec.cf.len() <= HANDSHAKE_MESSAGE_BYTES_MAX);
        assert_eq!(rec.client.peer_id(), b_id);
        assert_eq!(rec.server.peer_id(), a_id);
        assert_eq!(rec.client.transcript_hash(), rec.server.transcript_hash());
        assert!(format!("{:?}", rec.client).contains("redacted"));

        let (mut cs, mut co) = rec.client.into_records().unwrap();
        let (mut ss, mut so) = rec.server.into_records().unwrap();
        let aad = RecordAad::chunk([3; 32], 0, 5);
        let mut buf = *b"hello";
        let tag = cs.seal_in_place(&aad, &mut buf).unwrap();
        so.open_in_place(&aad, &mut buf, &tag).unwrap();
        assert_eq!(&buf, b"hello");
        let tag = ss.seal_in_place(&aad, &mut buf).unwrap();
        // Directions have distinct keys: the client's own opener... is for the server's
        // direction, so a record reflected back to its sender fails.
        let mut reflected = *b"hello";
        let t2 = {
            let (mut s2, _) =
                run(config(ALICE, 1), config(BOB, 2), 1).client.into_records().unwrap();
            s2.seal_in_place(&aad, &mut reflected).unwrap()
        };
        assert!(co.open_in_place(&aad, &mut reflected.clone(), &t2).is_err());
        let (_, mut co) = run(config(ALICE, 1), config(BOB, 2), 1).client.into_records().unwrap();
        co.open_in_place(&aad, &mut buf, &tag).unwrap();
        assert_eq!(&buf, b"hello");
    }

    #[test]
    fn pinning_the_right_node_passes_and_a_wrong_one_fails() {
        let bob_id = config(BOB, 2).local.node_id();
        let carol_id = config(CAROL, 3).local.node_id();
        let mut a = config(ALICE, 1);
        a.expected_peer = Some(bob_id);
        assert_eq!(run(a, config(BOB, 2), 1).client.peer_id(), bob_id);

        // Client pins Carol but reaches Bob: Bob refuses at the ClientHello...
        let mut a = config(ALICE, 1);
        a.expected_peer = Some(carol_id);
        let (_, ch) = Initiator::start(a.clone(), random(1), NOW).unwrap();
        assert_eq!(
            Responder::handle_client_hello(config(BOB, 2), random(2), &ch, NOW).unwrap_err(),
            HandshakeError::NotTheExpectedNode { expected: carol_id }
        );
        // ...and if an impostor answers anyway, the client refuses the ServerHello.
        let (init, ch) = Initiator::start(a, random(1), NOW).unwrap();
        let mut unpinned = ch.clone();
        // Rewrite the ClientHello without the pin (as a MITM would, with the public psk).
        unpinned.truncate(2 + 1 + 64);
        unpinned.push(0);
        let mac = hmac(psk_of(None).as_ref(), &[b"ch", &unpinned]);
        unpinned.extend_from_slice(&mac);
        let (_, sh) =
            Responder::handle_client_hello(config(BOB, 2), random(2), &unpinned, NOW).unwrap();
        assert_eq!(
            init.handle_server_hello(&sh, NOW).unwrap_err(),
            HandshakeError::PeerIdMismatch { expected: carol_id, got: bob_id }
        );

        // A responder may pin the client too.
        let mut b = config(BOB, 2);
        b.expected_peer = Some(carol_id);
        let (init, ch) = Initiator::start(config(ALICE, 1), random(1), NOW).unwrap();
        let (resp, sh) = Responder::handle_client_hello(b, random(2), &ch, NOW).unwrap();
        let (cf, _) = init.handle_server_hello(&sh, NOW).unwrap();
        assert!(matches!(
            resp.handle_client_finish(&cf, NOW),
            Err(HandshakeError::PeerIdMismatch { .. })
        ));
    }

    #[test]
    fn network_secrets_must_match() {
        let secret = NetworkSecret::from_bytes(b"sixteen byte key, and more").unwrap();
        let other = NetworkSecret::from_bytes(b"another sixteen-byte secret").unwrap();
        let with = |der: &'static [u8], tag, n: Option<&NetworkSecret>| {
            let mut c = config(der, tag);
            c.network = n.cloned();
            c
        };
        // Same secret: fine.
        run(with(ALICE, 1, Some(&secret)), with(BOB, 2, Some(&secret)), 1);
        // Different secret, secret vs none, none vs secret: refused at the first message.
        for (c, s) in [(Some(&secret), Some(&other)), (Some(&secret), None), (None, Some(&secret))]
        {
            let (_, ch) = Initiator::start(with(ALICE, 1, c), random(1), NOW).unwrap();
            let err =
                Responder::handle_client_hello(with(BOB, 2, s), random(2), &ch, NOW).unwrap_err();
            assert_eq!(err, HandshakeError::WrongNetworkSecret);
            assert!(err.to_string().contains("network secret"));
        }
        // A responder that skips the ClientHello check (an impostor) still fails: the psk is
        // mixed into the key, so its finished MAC is wrong.
        let (init, ch) = Initiator::start(with(ALICE, 1, Some(&secret)), random(1), NOW).unwrap();
        let mut forged = ch[..ch.len() - MAC_BYTES].to_vec();
        let mac = hmac(other.psk.as_ref(), &[b"ch", &forged]);
        forged.extend_from_slice(&mac);
        let (_, sh) =
            Responder::handle_client_hello(with(BOB, 2, Some(&other)), random(2), &forged, NOW)
                .unwrap();
        assert_eq!(init.handle_server_hello(&sh, NOW).unwrap_err(), HandshakeError::BadFinishedMac);
        assert_eq!(
            NetworkSecret::from_bytes(b"short").unwrap_err(),
            HandshakeError::WeakNetworkSecret { len: 5 }
        );
        assert_eq!(format!("{secret:?}"), "NetworkSecret(<redacted>)");
    }

    #[test]
    fn replayed_handshake_messages_are_rejected() {
        let rec = run(config(ALICE, 1), config(BOB, 2), 1);
        // Replay the recorded ClientHello and ClientFinish to a fresh responder: the
        // responder's fresh ephemeral and nonce make a new transcript and key, and the
        // recorded finished MAC (like the recorded signature) does not cover it.
        let (resp, _) =
            Responder::handle_client_hello(config(BOB, 2), random(77), &rec.ch, NOW).unwrap();
        assert_eq!(
            resp.handle_client_finish(&rec.cf, NOW).unwrap_err(),
            HandshakeError::BadFinishedMac
        );
        // Replay the recorded ServerHello to a fresh initiator.
        let (init, _) = Initiator::start(config(ALICE, 1), random(55), NOW).unwrap();
        assert_eq!(
            init.handle_server_hello(&rec.sh, NOW).unwrap_err(),
            HandshakeError::BadFinishedMac
        );
    }

    #[test]
    fn identity_misbinding_is_caught_by_the_finished_mac() {
        // Carol takes Alice's ClientFinish and substitutes her own certificate and a valid
        // signature over the (public) transcript; she cannot compute the finished MAC.
        let carol = session(CAROL, 3, LATER);
        let (init, ch) = Initiator::start(config(ALICE, 1), random(1), NOW).unwrap();
        let (resp, sh) =
            Responder::handle_client_hello(config(BOB, 2), random(2), &ch, NOW).unwrap();
        let (_cf, _) = init.handle_server_hello(&sh, NOW).unwrap();
        let mut t = resp.transcript.clone();
        let mut forged = vec![MSG_CLIENT_FINISH];
        forged.extend_from_slice(carol.certificate_bytes());
        t.absorb(CF_LABELS.0, carol.certificate_bytes());
        let sig = carol.sign(&[SIG_CLIENT, &t.hash()].concat());
        forged.extend_from_slice(&sig);
        forged.extend_from_slice(&[0u8; MAC_BYTES]);
        assert_eq!(
            resp.handle_client_finish(&forged, NOW).unwrap_err(),
            HandshakeError::BadFinishedMac
        );
    }

    #[test]
    fn the_finished_mac_is_checked_before_the_certificate_and_the_signature() {
        // A ClientFinish whose certificate signature was flipped in transit: the MAC covers
        // the certificate, so it fails first, and no RSA verification runs.
        let (init, ch) = Initiator::start(config(ALICE, 1), random(1), NOW).unwrap();
        let (resp, sh) =
            Responder::handle_client_hello(config(BOB, 2), random(2), &ch, NOW).unwrap();
        let (cf, _) = init.handle_server_hello(&sh, NOW).unwrap();
        let mut tampered = cf.clone();
        let cert_len = config(ALICE, 1).local.certificate_bytes().len();
        tampered[cert_len] ^= 1; // the last byte of the certificate's RSA signature
        let (resp2, _) =
            Responder::handle_client_hello(config(BOB, 2), random(2), &ch, NOW).unwrap();
        assert_eq!(
            resp2.handle_client_finish(&tampered, NOW).unwrap_err(),
            HandshakeError::BadFinishedMac
        );
        // With the MAC right (computed here with the responder's key, as an impostor that
        // ran the key exchange could), a bad signature is still caught: BadSignature.
        let alice = config(ALICE, 1).local;
        let mut t = resp.transcript.clone();
        let mut forged = vec![MSG_CLIENT_FINISH];
        forged.extend_from_slice(alice.certificate_bytes());
        t.absorb(CF_LABELS.0, alice.certificate_bytes());
        let sig = [0x55u8; ED25519_SIGNATURE_BYTES];
        forged.extend_from_slice(&sig);
        t.absorb(CF_LABELS.1, &sig);
        forged.extend_from_slice(&hmac(finished_key(&resp.prk, FIN_CLIENT).as_ref(), &[&t.hash()]));
        assert_eq!(
            resp.handle_client_finish(&forged, NOW).unwrap_err(),
            HandshakeError::BadSignature
        );
    }

    #[test]
    fn a_bound_handshake_needs_the_same_dtls_channel_on_both_sides() {
        let binding = dtls_channel_binding(&[1; 32], &[2; 32]);
        // Order matters: the initiator's certificate first.
        assert_ne!(binding, dtls_channel_binding(&[2; 32], &[1; 32]));
        let bound = |der: &'static [u8], tag, b: [u8; 32]| {
            let mut c = config(der, tag);
            c.channel_binding = Some(b);
            c
        };
        // The same channel on both sides: authenticated, and no records of our own (DTLS
        // encrypts the stream).
        let bob_id = config(BOB, 2).local.node_id();
        let rec = run(bound(ALICE, 1, binding), bound(BOB, 2, binding), 1);
        assert_eq!(rec.client.peer_id(), bob_id);
        assert!(rec.client.channel_bound() && rec.server.channel_bound());
        assert_eq!(rec.client.encryption(), Encryption::On);
        assert!(rec.client.into_records().is_none());
        assert!(rec.server.into_records().is_none());
        // An unbound handshake keeps its records.
        assert!(!run(config(ALICE, 1), config(BOB, 2), 1).client.channel_bound());

        // A man in the middle terminating DTLS toward each side: each side sees his
        // certificate, so the bindings differ, and relaying the handshake unchanged fails
        // at the finished MAC (the client's check, then the server's).
        let a = bound(ALICE, 1, dtls_channel_binding(&[1; 32], &[9; 32]));
        let b = bound(BOB, 2, dtls_channel_binding(&[9; 32], &[2; 32]));
        let (init, ch) = Initiator::start(a.clone(), random(1), NOW).unwrap();
        let (_, sh) = Responder::handle_client_hello(b.clone(), random(2), &ch, NOW).unwrap();
        assert_eq!(init.handle_server_hello(&sh, NOW).unwrap_err(), HandshakeError::BadFinishedMac);
        // The server's side: a ClientFinish made for another binding.
        let (init, ch) = Initiator::start(a, random(1), NOW).unwrap();
        let (resp, _) = Responder::handle_client_hello(b, random(2), &ch, NOW).unwrap();
        let (_, sh_for_a) = Responder::handle_client_hello(
            bound(BOB, 2, dtls_channel_binding(&[1; 32], &[9; 32])),
            random(2),
            &ch,
            NOW,
        )
        .unwrap();
        let (cf, _) = init.handle_server_hello(&sh_for_a, NOW).unwrap();
        assert_eq!(
            resp.handle_client_finish(&cf, NOW).unwrap_err(),
            HandshakeError::BadFinishedMac
        );

        // One side bound and the other not: refused by flag, both ways.
        let (_, ch) = Initiator::start(bound(ALICE, 1, binding), random(1), NOW).unwrap();
        assert_eq!(
            Responder::handle_client_hello(config(BOB, 2), random(2), &ch, NOW).unwrap_err(),
            HandshakeError::ChannelBindingMismatch { local: false, peer: true }
        );
        let (_, ch) = Initiator::start(config(ALICE, 1), random(1), NOW).unwrap();
        assert_eq!(
            Responder::handle_client_hello(bound(BOB, 2, binding), random(2), &ch, NOW)
                .unwrap_err(),
            HandshakeError::ChannelBindingMismatch { local: true, peer: false }
        );
        // A man in the middle clearing the flag in the ServerHello is refused.
        let (init, ch) = Initiator::start(bound(ALICE, 1, binding), random(1), NOW).unwrap();
        let (_, mut sh) =
            Responder::handle_client_hello(bound(BOB, 2, binding), random(2), &ch, NOW).unwrap();
        sh[65] = FLAG_ENCRYPTION;
        assert!(init.handle_server_hello(&sh, NOW).is_err());
    }

    #[test]
    fn encryption_must_agree_and_off_still_authenticates() {
        let mut a = config(ALICE, 1);
        a.encryption = Encryption::Off;
        let (_, ch) = Initiator::start(a.clone(), random(1), NOW).unwrap();
        assert_eq!(
            Responder::handle_client_hello(config(BOB, 2), random(2), &ch, NOW).unwrap_err(),
            HandshakeError::EncryptionMismatch { local: Encryption::On, peer: Encryption::Off }
        );
        let mut b = config(BOB, 2);
        b.encryption = Encryption::Off;
        let bob_id = b.local.node_id();
        let rec = run(a, b, 1);
        assert_eq!(rec.client.encryption(), Encryption::Off);
        assert_eq!(rec.client.peer_id(), bob_id);
        assert!(rec.client.into_records().is_none());
        // A MITM flipping the flag in the ServerHello breaks the signature.
        let (init, ch) = Initiator::start(config(ALICE, 1), random(1), NOW).unwrap();
        let (_, mut sh) =
            Responder::handle_client_hello(config(BOB, 2), random(2), &ch, NOW).unwrap();
        sh[65] = 0;
        assert!(init.handle_server_hello(&sh, NOW).is_err());
    }

    #[test]
    fn expired_certificates_are_refused() {
        let mut old = config(BOB, 2);
        old.local = session(BOB, 2, NOW - 1);
        // The responder notices its own expiry (a local error)...
        let (_, ch) = Initiator::start(config(ALICE, 1), random(1), NOW).unwrap();
        let err = Responder::handle_client_hello(old.clone(), random(2), &ch, NOW).unwrap_err();
        assert_eq!(err.blame(), Blame::Local);
        // ...and the initiator refuses an expired peer certificate.
        let (init, ch) = Initiator::start(config(ALICE, 1), random(1), NOW - 10).unwrap();
        let (_, sh) = Responder::handle_client_hello(old, random(2), &ch, NOW - 10).unwrap();
        assert_eq!(
            init.handle_server_hello(&sh, NOW).unwrap_err(),
            HandshakeError::PeerCertificate(IdentityError::CertificateExpired {
                not_after: NOW - 1,
                now: NOW
            })
        );
    }

    #[test]
    fn truncated_and_extended_messages_are_malformed_not_panics() {
        let rec = run(config(ALICE, 1), config(BOB, 2), 1);
        for n in 0..rec.ch.len() {
            assert!(Responder::handle_client_hello(config(BOB, 2), random(2), &rec.ch[..n], NOW)
                .is_err());
        }
        for n in (0..rec.sh.len()).step_by(7).chain([rec.sh.len() - 1]) {
            let (init, _) = Initiator::start(config(ALICE, 1), random(1), NOW).unwrap();
            assert!(init.handle_server_hello(&rec.sh[..n], NOW).is_err());
        }
        let mut long = rec.sh.clone();
        long.push(0);
        let (init, _) = Initiator::start(config(ALICE, 1), random(1), NOW).unwrap();
        assert!(matches!(
            init.handle_server_hello(&long, NOW),
            Err(HandshakeError::Malformed { what: "trailing bytes", .. })
        ));
        let mut v = rec.ch.clone();
        v[1] = 2;
        assert_eq!(
            Responder::handle_client_hello(config(BOB, 2), random(2), &v, NOW).unwrap_err(),
            HandshakeError::UnsupportedVersion { version: 2 }
        );
    }

    #[test]
    fn low_order_ephemeral_is_refused() {
        let (_, mut ch) = Initiator::start(config(ALICE, 1), random(1), NOW).unwrap();
        ch[3..35].fill(0); // the all-zero point has small order
        ch.truncate(ch.len() - MAC_BYTES);
        let mac = hmac(psk_of(None).as_ref(), &[b"ch", &ch]);
        ch.extend_from_slice(&mac);
        assert_eq!(
            Responder::handle_client_hello(config(BOB, 2), random(2), &ch, NOW).unwrap_err(),
            HandshakeError::NonContributoryKeyExchange
        );
    }

    #[test]
    fn network_tags_verify_only_with_the_same_secret() {
        let s = NetworkSecret::from_bytes(&[1; 32]).unwrap();
        let o = NetworkSecret::from_bytes(&[2; 32]).unwrap();
        let tag = network_tag(&s, b"datagram");
        assert!(verify_network_tag(&s, b"datagram", &tag));
        assert!(!verify_network_tag(&o, b"datagram", &tag));
        assert!(!verify_network_tag(&s, b"datagraM", &tag));
        assert!(!verify_network_tag(&s, b"datagram", &tag[..15]));
        // The DHT key is not the handshake key.
        assert_ne!(s.psk, s.dht);
    }

    #[test]
    fn first_record_after_handshake_survives_and_replay_fails() {
        let rec = run(config(ALICE, 1), config(BOB, 2), 9);
        let (mut cs, _) = rec.client.into_records().unwrap();
        let (_, mut so) = rec.server.into_records().unwrap();
        let aad = RecordAad::control(3);
        let mut a = *b"abc";
        let tag = cs.seal_in_place(&aad, &mut a).unwrap();
        let copy = a;
        so.open_in_place(&aad, &mut a, &tag).unwrap();
        assert!(matches!(
            so.open_in_place(&aad, &mut copy.clone(), &tag),
            Err(RecordError::Authentication { .. })
        ));
    }
}
