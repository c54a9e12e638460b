//! WebRTC signaling through the DHT, sealed end to end (sans-IO): what a node that wants a
//! data channel with node `T` sends through DHT relays, and what `T` answers.
//!
//! Relays see only sealed blobs: they can drop them, but neither read nor alter them. Two
//! round trips, shaped like SIGMA-I (the node handshake's pattern, `handshake.rs`), so every
//! message fits one 1,400-byte DHT datagram with a 1.1 KB certificate in it:
//!
//! ```text
//! S (wants a channel)                                  T (the target node)
//! Hello      = 1 ‖ ts u64 ‖ nonce[16] ‖ e_S[32] ‖ T's id[20] ‖ cert_S     ──▶
//!                 ts within ±SIGNAL_WINDOW_SECS, nonce never seen in the window, cert_S verifies
//!      ◀── HelloReply = 2 ‖ nonce ‖ e_T[32] ‖ cert_T ‖ Ed25519_T(th)
//!          th = SHA-256(domain ‖ Hello ‖ e_T ‖ cert_T); S checks cert_T names T and the signature
//! Offer      = 3 ‖ nonce ‖ AES-256-GCM_k_offer(Ed25519_S("offer" ‖ th ‖ p) ‖ p)   ──▶
//!      ◀── Answer = 4 ‖ nonce ‖ AES-256-GCM_k_answer(Ed25519_T("answer" ‖ th ‖ H(p_offer) ‖ p) ‖ p)
//! p = n u8 (1..=SIGNAL_CANDIDATES_MAX) ‖ n × (type u8 ‖ IPv6/IPv4-mapped [16] ‖ port u16 LE)
//!     ‖ sdp_len u16 LE ‖ SDP (RFC 8866); type 0 host, 1 server-reflexive, 2 relayed
//! k_offer, k_answer = HKDF-SHA-256(X25519(e_S, e_T), salt = th, info = direction)
//! ```
//!
//! What this gives: the SDP, with its DTLS fingerprint and ICE credentials, is signed by the
//! sender's session key (certified by its RSA identity, so bound to its node ID) and
//! encrypted under keys only the two ephemeral-key holders have (forward secrecy). A relay
//! that alters a byte breaks the AEAD; one that answers for `T` cannot sign as `T`; a
//! replayed Hello is refused by its nonce within the window and by its timestamp outside
//! it; a replayed Offer finds no pending state (each is opened once). Keys are used for one
//! message each, so the AEAD nonce is fixed.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use hkdf::Hkdf;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use sha2::{Digest, Sha256};
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::Zeroizing;

use super::identity::{
    Certificate, Reader, SessionIdentity, VerifiedCertificate, CERTIFICATE_BYTES_MAX,
    ED25519_SIGNATURE_BYTES,
};
use super::NodeId;
use crate::addr::{ip_from_octets, ip_octets};

/// Wire version of every signaling message (its first byte).
/// 2: a payload carries several candidates (host, server-reflexive, relayed); 1 carried one.
pub const SIGNAL_VERSION: u8 = 2;
/// How far a Hello's timestamp may be from the target's clock, in seconds. Hellos are
/// remembered this long (twice: past and future), so a replay within it is refused too.
pub const SIGNAL_WINDOW_SECS: u64 = 30;
/// Longest SDP a signaling message carries, in bytes (it must fit one DHT datagram).
pub const SIGNAL_SDP_BYTES_MAX: usize = 1000;
/// Largest signaling message (a Hello or HelloReply with the largest certificate).
pub const SIGNAL_MESSAGE_BYTES_MAX: usize =
    1 + 1 + 8 + 16 + 32 + 20 + 2 + CERTIFICATE_BYTES_MAX + ED25519_SIGNATURE_BYTES;
/// Most candidates one offer or answer carries (host, server-reflexive per STUN server,
/// relayed).
pub const SIGNAL_CANDIDATES_MAX: usize = 4;
/// Hellos a target keeps state for (answered, offer not yet come); the oldest goes first.
pub const SIGNAL_PENDING_MAX: usize = 256;
/// Hello nonces remembered for the replay window.
pub const SIGNAL_SEEN_MAX: usize = 4096;

const DOMAIN: &[u8] = b"furymesh-signal-v2\0";
const KIND_HELLO: u8 = 1;
const KIND_HELLO_REPLY: u8 = 2;
const KIND_OFFER: u8 = 3;
const KIND_ANSWER: u8 = 4;
const NONCE_BYTES: usize = 16;
const TAG_BYTES: usize = 16;

/// Why a signaling message was refused. Every case means "no channel": the caller drops
/// the message (and counts it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignalError {
    #[error("malformed signaling message")]
    Malformed,
    #[error("signaling message for another node")]
    WrongTarget,
    #[error("signaling timestamp outside the window")]
    Stale,
    #[error("replayed signaling message")]
    Replayed,
    #[error("certificate does not verify or names another node")]
    BadCertificate,
    #[error("signature does not verify")]
    BadSignature,
    #[error("cannot decrypt (altered, or not for this session)")]
    Undecryptable,
}

/// How a candidate address was found (RFC 8445 §5.1.1): the socket's own address, the
/// address a STUN server saw it from, or an address relayed by a TURN server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CandidateKind {
    /// A host candidate (RFC 8445 §5.1.1.1).
    Host,
    /// A server-reflexive candidate: the socket's address outside its NAT, as a STUN
    /// server saw it (RFC 8445 §5.1.1.2, RFC 8489).
    ServerReflexive,
    /// A relayed candidate: an address allocated on a TURN server (RFC 8656).
    Relayed,
}

impl CandidateKind {
    fn code(self) -> u8 {
        match self {
            Self::Host => 0,
            Self::ServerReflexive => 1,
            Self::Relayed => 2,
        }
    }

    fn from_code(c: u8) -> Option<Self> {
        Some(match c {
            0 => Self::Host,
            1 => Self::ServerReflexive,
            2 => Self::Relayed,
            _ => return None,
        })
    }
}

/// One address where the sender's WebRTC socket may be reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SignalCandidate {
    /// How it was found.
    pub kind: CandidateKind,
    /// The address.
    pub addr: SocketAddr,
}

/// What an offer or answer carries: where the sender's WebRTC socket can be reached (its
/// ICE candidates, RFC 8445 §5.1.1) and its SDP (RFC 8866; for a data channel, RFC
/// 8831 §6), whose `a=fingerprint` line is the DTLS certificate's.
///
/// A *browser offer* (`browser` set) is the signed statement of the sending node that the
/// SDP is a browser's, whose share page it serves (ARCHITECTURE.md, "Browser peers"): the
/// target answers it with a browser session (plaintext peer wire inside DTLS). Encoded as
/// a trailing `0x01 ‖ IPv6 (16 bytes)` after the SDP, so a node from before it refuses the
/// offer as malformed rather than answering it with the handshake the browser cannot run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignalPayload {
    /// The sender's candidates, 1 to [`SIGNAL_CANDIDATES_MAX`], host first (none for a
    /// browser offer: the browser's checks are routed by their ICE username fragment).
    pub candidates: Vec<SignalCandidate>,
    /// The session description, at most [`SIGNAL_SDP_BYTES_MAX`] bytes.
    pub sdp: String,
    /// A browser offer: the IP address the browser's HTTP request came from, as the
    /// sending node saw it (the target uses it to pick the local address toward it).
    pub browser: Option<IpAddr>,
}

/// The trailing flag of a browser offer (see [`SignalPayload`]).
const BROWSER_FLAG: u8 = 1;

impl SignalPayload {
    fn encode(&self) -> Option<Vec<u8>> {
        let n = self.candidates.len();
        let least = usize::from(self.browser.is_none());
        if self.sdp.len() > SIGNAL_SDP_BYTES_MAX || n < least || n > SIGNAL_CANDIDATES_MAX {
            return None;
        }
        let mut out = Vec::with_capacity(3 + 19 * n + self.sdp.len() + 17);
        out.push(n as u8);
        for c in &self.candidates {
            out.push(c.kind.code());
            out.extend_from_slice(&ip_octets(c.addr.ip()));
            out.extend_from_slice(&c.addr.port().to_le_bytes());
        }
        out.extend_from_slice(&(self.sdp.len() as u16).to_le_bytes());
        out.extend_from_slice(self.sdp.as_bytes());
        if let Some(ip) = self.browser {
            out.push(BROWSER_FLAG);
            out.extend_from_slice(&ip_octets(ip));
        }
        Some(out)
    }

    fn decode(b: &[u8]) -> Option<Self> {
        let mut r = Reader::new(b);
        let n = usize::from(r.u8()?);
        if n > SIGNAL_CANDIDATES_MAX {
            return None;
        }
        let mut candidates = Vec::with_capacity(n);
        for _ in 0..n {
            let kind = CandidateKind::from_code(r.u8()?)?;
            let ip = ip_from_octets(r.array::<16>()?);
            candidates.push(SignalCandidate { kind, addr: SocketAddr::new(ip, r.u16()?) });
        }
        let len = usize::from(r.u16()?);
        if len > SIGNAL_SDP_BYTES_MAX {
            return None;
        }
        let sdp = std::str::from_utf8(r.take(len)?).ok()?.to_owned();
        let browser = if r.is_empty() {
            None
        } else {
            (r.u8()? == BROWSER_FLAG).then_some(())?;
            Some(ip_from_octets(r.array::<16>()?))
        };
        // Only a browser offer names no candidate of its sender.
        if !r.is_empty() || (n == 0 && browser.is_none()) {
            return None;
        }
        Some(Self { candidates, sdp, browser })
    }
}

fn transcript(hello: &[u8], e_t: &[u8; 32], cert_t: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(DOMAIN);
    h.update((hello.len() as u16).to_le_bytes());
    h.update(hello);
    h.update(e_t);
    h.update(cert_t);
    h.finalize().into()
}

/// The two one-message keys from the ephemeral exchange; `None` for a non-contributory
/// (small-order) peer key.
fn keys(secret: &StaticSecret, peer: &[u8; 32], th: &[u8; 32]) -> Option<(Key, Key)> {
    let shared = secret.diffie_hellman(&PublicKey::from(*peer));
    if !shared.was_contributory() {
        return None;
    }
    let hk = Hkdf::<Sha256>::new(Some(th), shared.as_bytes());
    let mut offer = Zeroizing::new([0u8; 32]);
    let mut answer = Zeroizing::new([0u8; 32]);
    hk.expand(b"furymesh-signal-v1 offer", offer.as_mut()).ok()?;
    hk.expand(b"furymesh-signal-v1 answer", answer.as_mut()).ok()?;
    Some((Key(offer), Key(answer)))
}

#[cfg_attr(fuzzing, derive(Clone))]
struct Key(Zeroizing<[u8; 32]>);

impl Key {
    fn aead(&self) -> LessSafeKey {
        // A 32-byte key is always a valid AES-256-GCM key.
        LessSafeKey::new(UnboundKey::new(&AES_256_GCM, self.0.as_ref()).expect("32-byte key"))
    }

    /// `header ‖ AES-256-GCM(signature ‖ payload)`, the header as associated data.
    fn seal(&self, header: &[u8], sig: &[u8; 64], payload: &[u8]) -> Vec<u8> {
        let mut body = Vec::with_capacity(64 + payload.len() + TAG_BYTES);
        body.extend_from_slice(sig);
        body.extend_from_slice(payload);
        // One message per key: the all-zero nonce is used exactly once.
        let nonce = Nonce::assume_unique_for_key([0; 12]);
        self.aead()
            .seal_in_place_append_tag(nonce, Aad::from(header), &mut body)
            .expect("in-memory seal");
        let mut out = header.to_vec();
        out.extend_from_slice(&body);
        out
    }

    /// Opens what [`Key::seal`] made: (signature, payload).
    fn open(&self, header: &[u8], sealed: &[u8]) -> Result<([u8; 64], Vec<u8>), SignalError> {
        let mut body = sealed.to_vec();
        let nonce = Nonce::assume_unique_for_key([0; 12]);
        let plain = self
            .aead()
            .open_in_place(nonce, Aad::from(header), &mut body)
            .map_err(|_| SignalError::Undecryptable)?;
        if plain.len() < 64 {
            return Err(SignalError::Malformed);
        }
        let sig: [u8; 64] = plain[..64].try_into().map_err(|_| SignalError::Malformed)?;
        Ok((sig, plain[64..].to_vec()))
    }
}

fn signed_offer(th: &[u8; 32], payload: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(DOMAIN.len() + 6 + 32 + payload.len());
    m.extend_from_slice(DOMAIN);
    m.extend_from_slice(b"offer");
    m.extend_from_slice(th);
    m.extend_from_slice(payload);
    m
}

fn signed_answer(th: &[u8; 32], offer: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(DOMAIN.len() + 6 + 64 + payload.len());
    m.extend_from_slice(DOMAIN);
    m.extend_from_slice(b"answer");
    m.extend_from_slice(th);
    m.extend_from_slice(&Sha256::digest(offer));
    m.extend_from_slice(payload);
    m
}

fn signed_reply(th: &[u8; 32]) -> Vec<u8> {
    let mut m = DOMAIN.to_vec();
    m.extend_from_slice(b"reply");
    m.extend_from_slice(th);
    m
}

/// The nonce a message carries after its version and kind (every kind has one): what
/// relays and drivers may use to match messages, nothing secret.
pub fn signal_nonce(message: &[u8]) -> Option<[u8; NONCE_BYTES]> {
    let mut r = Reader::new(message);
    let (_, kind) = (r.u8()?, r.u8()?);
    if kind == KIND_HELLO {
        r.u64()?;
    }
    r.array()
}

/// The sending side, before the target's reply: holds the ephemeral secret. Not `Clone`
/// outside fuzz builds (see [`crate::crypto::Initiator`]).
#[cfg_attr(fuzzing, derive(Clone))]
pub struct SignalInitiator {
    session: Arc<SessionIdentity>,
    target: NodeId,
    secret: StaticSecret,
    nonce: [u8; NONCE_BYTES],
    hello: Vec<u8>,
}

impl SignalInitiator {
    /// Starts signaling to `target` at `now_unix` with 48 fresh random bytes (ephemeral key,
    /// nonce). Returns the state and the Hello to send.
    pub fn start(
        session: Arc<SessionIdentity>,
        target: NodeId,
        now_unix: u64,
        random: [u8; 48],
    ) -> (Self, Vec<u8>) {
        let secret_bytes: [u8; 32] = random[..32].try_into().expect("32 of 48");
        let secret = StaticSecret::from(secret_bytes);
        let nonce: [u8; NONCE_BYTES] = random[32..].try_into().expect("16 of 48");
        let cert = session.certificate_bytes();
        let mut hello = Vec::with_capacity(80 + cert.len());
        hello.extend_from_slice(&[SIGNAL_VERSION, KIND_HELLO]);
        hello.extend_from_slice(&now_unix.to_le_bytes());
        hello.extend_from_slice(&nonce);
        hello.extend_from_slice(PublicKey::from(&secret).as_bytes());
        hello.extend_from_slice(target.as_bytes());
        hello.extend_from_slice(&(cert.len() as u16).to_le_bytes());
        hello.extend_from_slice(cert);
        let out = hello.clone();
        (Self { session, target, secret, nonce, hello }, out)
    }

    /// The Hello's nonce (every later message of this exchange carries it).
    pub fn nonce(&self) -> [u8; NONCE_BYTES] {
        self.nonce
    }

    /// Checks the target's HelloReply: its certificate must verify and name the target, and
    /// its signature cover this exchange. Then the offer can be sealed.
    pub fn handle_reply(self, reply: &[u8], now_unix: u64) -> Result<SignalOfferer, SignalError> {
        let mut r = Reader::new(reply);
        let head = (r.u8(), r.u8());
        if head != (Some(SIGNAL_VERSION), Some(KIND_HELLO_REPLY)) {
            return Err(SignalError::Malformed);
        }
        if r.array::<NONCE_BYTES>() != Some(self.nonce) {
            return Err(SignalError::Malformed);
        }
        let e_t = r.array::<32>().ok_or(SignalError::Malformed)?;
        let cert_len = usize::from(r.u16().ok_or(SignalError::Malformed)?);
        if cert_len > CERTIFICATE_BYTES_MAX {
            return Err(SignalError::Malformed);
        }
        let cert_bytes = r.take(cert_len).ok_or(SignalError::Malformed)?;
        let sig = r.array::<ED25519_SIGNATURE_BYTES>().ok_or(SignalError::Malformed)?;
        if !r.is_empty() {
            return Err(SignalError::Malformed);
        }
        // Another node's certificate is refused by its key's hash, before the RSA check.
        let cert = Certificate::from_bytes(cert_bytes).map_err(|_| SignalError::BadCertificate)?;
        if cert.claimed_node_id() != self.target {
            return Err(SignalError::BadCertificate);
        }
        let cert = cert.verify(now_unix).map_err(|_| SignalError::BadCertificate)?;
        let th = transcript(&self.hello, &e_t, cert_bytes);
        cert.verify_session_signature(&signed_reply(&th), &sig)
            .map_err(|_| SignalError::BadSignature)?;
        let (offer, answer) = keys(&self.secret, &e_t, &th).ok_or(SignalError::Malformed)?;
        Ok(SignalOfferer {
            session: self.session,
            target: cert,
            nonce: self.nonce,
            th,
            offer,
            answer,
            sent: Vec::new(),
        })
    }
}

fn verified(cert: &[u8], now_unix: u64) -> Result<VerifiedCertificate, SignalError> {
    Certificate::from_bytes(cert)
        .and_then(|c| c.verify(now_unix))
        .map_err(|_| SignalError::BadCertificate)
}

/// The sending side once the target proved itself: seals the offer, opens the answer.
pub struct SignalOfferer {
    session: Arc<SessionIdentity>,
    target: VerifiedCertificate,
    nonce: [u8; NONCE_BYTES],
    th: [u8; 32],
    offer: Key,
    answer: Key,
    sent: Vec<u8>,
}

impl SignalOfferer {
    /// The target's node ID (proved by its certificate and signature).
    pub fn target(&self) -> NodeId {
        self.target.node_id()
    }

    /// Seals the offer (signed by this node's session key). `None` if the SDP is longer
    /// than [`SIGNAL_SDP_BYTES_MAX`].
    pub fn seal_offer(&mut self, offer: &SignalPayload) -> Option<Vec<u8>> {
        let payload = offer.encode()?;
        let sig = self.session.sign(&signed_offer(&self.th, &payload));
        let mut header = vec![SIGNAL_VERSION, KIND_OFFER];
        header.extend_from_slice(&self.nonce);
        let out = self.offer.seal(&header, &sig, &payload);
        self.sent = payload;
        Some(out)
    }

    /// Opens the target's answer: decrypts it and checks the target's signature over this
    /// exchange, the offer sent and the answer.
    pub fn open_answer(&self, answer: &[u8]) -> Result<SignalPayload, SignalError> {
        let header_len = 2 + NONCE_BYTES;
        let header = answer.get(..header_len).ok_or(SignalError::Malformed)?;
        if header[..2] != [SIGNAL_VERSION, KIND_ANSWER] || header[2..] != self.nonce {
            return Err(SignalError::Malformed);
        }
        let (sig, payload) = self.answer.open(header, &answer[header_len..])?;
        self.target
            .verify_session_signature(&signed_answer(&self.th, &self.sent, &payload), &sig)
            .map_err(|_| SignalError::BadSignature)?;
        SignalPayload::decode(&payload).ok_or(SignalError::Malformed)
    }
}

/// A Hello answered, waiting for its offer.
#[cfg_attr(fuzzing, derive(Clone))]
struct Pending {
    peer: VerifiedCertificate,
    th: [u8; 32],
    offer: Key,
    answer: Key,
}

/// An opened offer: who sent it, what it says, and what seals the answer to it.
pub struct OpenedOffer {
    /// The sender's node ID (its certificate verified, its signature over the offer).
    pub from: NodeId,
    /// What it offers.
    pub payload: SignalPayload,
    th: [u8; 32],
    answer: Key,
    offer_bytes: Vec<u8>,
    nonce: [u8; NONCE_BYTES],
}

/// The target side: answers Hellos, opens offers, seals answers. State is bounded:
/// [`SIGNAL_PENDING_MAX`] answered Hellos, [`SIGNAL_SEEN_MAX`] remembered nonces. Not
/// `Clone` outside fuzz builds (see [`crate::crypto::Initiator`]).
#[cfg_attr(fuzzing, derive(Clone))]
pub struct SignalResponder {
    session: Arc<SessionIdentity>,
    pending: HashMap<[u8; NONCE_BYTES], Pending>,
    pending_order: VecDeque<[u8; NONCE_BYTES]>,
    seen: HashSet<[u8; NONCE_BYTES]>,
    seen_order: VecDeque<(u64, [u8; NONCE_BYTES])>,
}

impl SignalResponder {
    /// A responder for the node whose session identity this is.
    pub fn new(session: Arc<SessionIdentity>) -> Self {
        Self {
            session,
            pending: HashMap::new(),
            pending_order: VecDeque::new(),
            seen: HashSet::new(),
            seen_order: VecDeque::new(),
        }
    }

    /// Uses a renewed session identity from now on (pending exchanges keep working).
    pub fn set_session(&mut self, session: Arc<SessionIdentity>) {
        self.session = session;
    }

    /// Whether `message` is a Hello (costs a certificate check: callers budget those).
    pub fn is_hello(message: &[u8]) -> bool {
        message.get(..2) == Some(&[SIGNAL_VERSION, KIND_HELLO][..])
    }

    /// Answers a Hello: checks it is for this node, fresh (timestamp within
    /// [`SIGNAL_WINDOW_SECS`], nonce unseen) and that its certificate verifies, then returns
    /// the signed HelloReply. `random`: 32 fresh bytes (the ephemeral key).
    pub fn handle_hello(
        &mut self,
        hello: &[u8],
        now_unix: u64,
        random: [u8; 32],
    ) -> Result<Vec<u8>, SignalError> {
        let mut r = Reader::new(hello);
        if (r.u8(), r.u8()) != (Some(SIGNAL_VERSION), Some(KIND_HELLO)) {
            return Err(SignalError::Malformed);
        }
        let ts = r.u64().ok_or(SignalError::Malformed)?;
        let nonce = r.array::<NONCE_BYTES>().ok_or(SignalError::Malformed)?;
        let e_s = r.array::<32>().ok_or(SignalError::Malformed)?;
        let target = r.array::<20>().ok_or(SignalError::Malformed)?;
        let cert_len = usize::from(r.u16().ok_or(SignalError::Malformed)?);
        if cert_len > CERTIFICATE_BYTES_MAX {
            return Err(SignalError::Malformed);
        }
        let cert_s = r.take(cert_len).ok_or(SignalError::Malformed)?;
        if !r.is_empty() {
            return Err(SignalError::Malformed);
        }
        if NodeId::from_bytes(target) != self.session.node_id() {
            return Err(SignalError::WrongTarget);
        }
        if ts.abs_diff(now_unix) > SIGNAL_WINDOW_SECS {
            return Err(SignalError::Stale);
        }
        self.forget_seen(now_unix);
        if self.seen.contains(&nonce) {
            return Err(SignalError::Replayed);
        }
        let peer = verified(cert_s, now_unix)?;
        // Remembered only once it verified: forged Hellos cannot fill the window.
        if self.seen.len() >= SIGNAL_SEEN_MAX {
            if let Some((_, old)) = self.seen_order.pop_front() {
                self.seen.remove(&old);
            }
        }
        self.seen.insert(nonce);
        self.seen_order.push_back((ts.max(now_unix), nonce));
        let secret = StaticSecret::from(random);
        let e_t = *PublicKey::from(&secret).as_bytes();
        let cert_t = self.session.certificate_bytes();
        let th = transcript(hello, &e_t, cert_t);
        let (offer, answer) = keys(&secret, &e_s, &th).ok_or(SignalError::Malformed)?;
        let sig = self.session.sign(&signed_reply(&th));
        if self.pending.len() >= SIGNAL_PENDING_MAX {
            if let Some(old) = self.pending_order.pop_front() {
                self.pending.remove(&old);
            }
        }
        self.pending.insert(nonce, Pending { peer, th, offer, answer });
        self.pending_order.push_back(nonce);
        let mut out = Vec::with_capacity(2 + NONCE_BYTES + 34 + cert_t.len() + 64);
        out.extend_from_slice(&[SIGNAL_VERSION, KIND_HELLO_REPLY]);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&e_t);
        out.extend_from_slice(&(cert_t.len() as u16).to_le_bytes());
        out.extend_from_slice(cert_t);
        out.extend_from_slice(&sig);
        Ok(out)
    }

    /// Forgets nonces whose window has passed.
    fn forget_seen(&mut self, now_unix: u64) {
        while let Some(&(ts, nonce)) = self.seen_order.front() {
            if ts.saturating_add(SIGNAL_WINDOW_SECS) >= now_unix {
                break;
            }
            self.seen_order.pop_front();
            self.seen.remove(&nonce);
        }
    }

    /// Opens an offer that follows an answered Hello (once: the state goes with it) and
    /// checks the sender's signature over the exchange and the offer.
    pub fn open_offer(&mut self, offer: &[u8]) -> Result<OpenedOffer, SignalError> {
        let header_len = 2 + NONCE_BYTES;
        let header = offer.get(..header_len).ok_or(SignalError::Malformed)?;
        if header[..2] != [SIGNAL_VERSION, KIND_OFFER] {
            return Err(SignalError::Malformed);
        }
        let nonce: [u8; NONCE_BYTES] =
            header[2..].try_into().map_err(|_| SignalError::Malformed)?;
        let p = self.pending.remove(&nonce).ok_or(SignalError::Replayed)?;
        self.pending_order.retain(|n| *n != nonce);
        let (sig, payload) = p.offer.open(header, &offer[header_len..])?;
        p.peer
            .verify_session_signature(&signed_offer(&p.th, &payload), &sig)
            .map_err(|_| SignalError::BadSignature)?;
        let decoded = SignalPayload::decode(&payload).ok_or(SignalError::Malformed)?;
        Ok(OpenedOffer {
            from: p.peer.node_id(),
            payload: decoded,
            th: p.th,
            answer: p.answer,
            offer_bytes: payload,
            nonce,
        })
    }

    /// Seals the answer to an opened offer, signed by this node. `None` if the SDP is too
    /// long.
    pub fn seal_answer(&self, offer: &OpenedOffer, answer: &SignalPayload) -> Option<Vec<u8>> {
        let payload = answer.encode()?;
        let sig = self.session.sign(&signed_answer(&offer.th, &offer.offer_bytes, &payload));
        let mut header = vec![SIGNAL_VERSION, KIND_ANSWER];
        header.extend_from_slice(&offer.nonce);
        Some(offer.answer.seal(&header, &sig, &payload))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::identity::fixtures::{session, ALICE, BOB, CAROL};

    const NOW: u64 = 1_800_000_000;
    // Each fixture's session key is derived from its tag: distinct tags, distinct keys.

    fn payload(port: u16, fp: &str) -> SignalPayload {
        SignalPayload {
            candidates: vec![
                SignalCandidate {
                    kind: CandidateKind::Host,
                    addr: SocketAddr::from(([10, 0, 0, 1], port)),
                },
                SignalCandidate {
                    kind: CandidateKind::ServerReflexive,
                    addr: SocketAddr::from(([198, 51, 100, 7], port)),
                },
                SignalCandidate {
                    kind: CandidateKind::Relayed,
                    addr: "[2001:db8::1]:3478".parse().unwrap(),
                },
            ],
            sdp: format!("v=0\r\na=fingerprint:sha-256 {fp}\r\n"),
            browser: None,
        }
    }

    /// One full exchange; returns what each side got.
    fn exchange() -> (SignalPayload, SignalPayload, NodeId) {
        exchange_with(&payload(1, "AA"))
    }

    /// One full exchange offering `offered`; returns what each side got.
    fn exchange_with(offered: &SignalPayload) -> (SignalPayload, SignalPayload, NodeId) {
        let (s, t) = (session(ALICE, 1, NOW + 3600), session(BOB, 2, NOW + 3600));
        let mut responder = SignalResponder::new(t.clone());
        let (init, hello) = SignalInitiator::start(s.clone(), t.node_id(), NOW, [7; 48]);
        assert!(hello.len() <= SIGNAL_MESSAGE_BYTES_MAX);
        let reply = responder.handle_hello(&hello, NOW, [9; 32]).unwrap();
        assert!(reply.len() <= SIGNAL_MESSAGE_BYTES_MAX);
        let mut offerer = init.handle_reply(&reply, NOW).unwrap();
        let offer = offerer.seal_offer(offered).unwrap();
        let opened = responder.open_offer(&offer).unwrap();
        let answer = responder.seal_answer(&opened, &payload(2, "BB")).unwrap();
        let got = offerer.open_answer(&answer).unwrap();
        (opened.payload, got, opened.from)
    }

    #[test]
    fn offer_and_answer_round_trip_signed_and_sealed() {
        let (offer, answer, from) = exchange();
        assert_eq!(offer, payload(1, "AA"));
        assert_eq!(answer, payload(2, "BB"));
        assert_eq!(from, session(ALICE, 1, NOW + 3600).node_id());
    }

    #[test]
    fn altered_offer_wrong_signer_and_replays_never_open() {
        let (s, t) = (session(ALICE, 1, NOW + 3600), session(BOB, 2, NOW + 3600));
        let mut responder = SignalResponder::new(t.clone());
        let (init, hello) = SignalInitiator::start(s.clone(), t.node_id(), NOW, [3; 48]);
        let reply = responder.handle_hello(&hello, NOW, [4; 32]).unwrap();
        // A replayed Hello within the window is refused; outside it, stale.
        assert_eq!(responder.handle_hello(&hello, NOW + 1, [5; 32]), Err(SignalError::Replayed));
        let (_, old) = SignalInitiator::start(s.clone(), t.node_id(), NOW - 100, [6; 48]);
        assert_eq!(responder.handle_hello(&old, NOW, [5; 32]), Err(SignalError::Stale));
        // A Hello meant for another node.
        let carol = session(CAROL, 3, NOW + 3600);
        let (_, other) = SignalInitiator::start(s.clone(), carol.node_id(), NOW, [8; 48]);
        assert_eq!(responder.handle_hello(&other, NOW, [5; 32]), Err(SignalError::WrongTarget));
        // A reply signed by someone else than the target: Carol answering for Bob.
        let mut carols = SignalResponder::new(carol.clone());
        let (init2, hello2) = SignalInitiator::start(s.clone(), carol.node_id(), NOW, [10; 48]);
        let carol_reply = carols.handle_hello(&hello2, NOW, [11; 32]).unwrap();
        let (init3, _) = SignalInitiator::start(s.clone(), t.node_id(), NOW, [10; 48]);
        assert_eq!(init3.handle_reply(&carol_reply, NOW).err(), Some(SignalError::BadCertificate));
        drop(init2);
        // The offer altered in flight (a flipped bit in its sealed SDP) does not open.
        let mut offerer = init.handle_reply(&reply, NOW).unwrap();
        let offer = offerer.seal_offer(&payload(1, "AA")).unwrap();
        let mut tampered = offer.clone();
        *tampered.last_mut().unwrap() ^= 0x80;
        assert_eq!(responder.open_offer(&tampered).err(), Some(SignalError::Undecryptable));
        // The tampered one consumed the state: even the genuine offer is now refused (the
        // sender starts again), and a replay of a genuine offer is refused likewise.
        assert_eq!(responder.open_offer(&offer).err(), Some(SignalError::Replayed));
        // An offer signed by a node other than the Hello's certificate: Carol seals an
        // offer with keys from Alice's exchange is impossible (she lacks them), so the
        // wrong-signer case is a Hello carrying Carol's certificate and Alice's signature.
        let (init4, hello4) = SignalInitiator::start(carol.clone(), t.node_id(), NOW, [12; 48]);
        let reply4 = responder.handle_hello(&hello4, NOW, [13; 32]).unwrap();
        let mut o4 = init4.handle_reply(&reply4, NOW).unwrap();
        o4.session = s.clone();
        let forged = o4.seal_offer(&payload(1, "AA")).unwrap();
        assert_eq!(responder.open_offer(&forged).err(), Some(SignalError::BadSignature));
    }

    #[test]
    fn hostile_bytes_never_panic() {
        let t = session(BOB, 2, NOW + 3600);
        let s = session(ALICE, 1, NOW + 3600);
        let mut responder = SignalResponder::new(t.clone());
        let (_, hello) = SignalInitiator::start(s, t.node_id(), NOW, [1; 48]);
        for cut in 0..hello.len() {
            let _ = responder.handle_hello(&hello[..cut], NOW, [2; 32]);
            let _ = responder.open_offer(&hello[..cut]);
            let _ = signal_nonce(&hello[..cut]);
        }
        // A reply with any byte flipped never verifies (nor panics).
        let s = session(ALICE, 1, NOW + 3600);
        let (_, hello) = SignalInitiator::start(s.clone(), t.node_id(), NOW, [4; 48]);
        let reply = responder.handle_hello(&hello, NOW, [2; 32]).unwrap();
        for i in 0..reply.len() {
            let (init, _) = SignalInitiator::start(s.clone(), t.node_id(), NOW, [4; 48]);
            let mut bad = reply.clone();
            bad[i] ^= 0x01;
            assert!(init.handle_reply(&bad, NOW).is_err(), "byte {i}");
            let (init, _) = SignalInitiator::start(s.clone(), t.node_id(), NOW, [4; 48]);
            assert!(init.handle_reply(&reply[..i], NOW).is_err());
        }
        assert!(SignalPayload::decode(&[0; 3]).is_none());
    }

    #[test]
    fn payload_candidates_are_bounded_and_typed() {
        let p = payload(9, "CC");
        let b = p.encode().unwrap();
        assert_eq!(SignalPayload::decode(&b), Some(p.clone()));
        // Every prefix is refused (the SDP length and the end must agree), never a panic.
        for i in 0..b.len() {
            assert!(SignalPayload::decode(&b[..i]).is_none(), "prefix {i}");
        }
        // No candidates, too many, an unknown type: refused both ways.
        let none = SignalPayload { candidates: vec![], ..p.clone() };
        assert!(none.encode().is_none());
        let many = SignalPayload {
            candidates: vec![p.candidates[0]; SIGNAL_CANDIDATES_MAX + 1],
            ..p.clone()
        };
        assert!(many.encode().is_none());
        let mut bad = b.clone();
        bad[0] = (SIGNAL_CANDIDATES_MAX + 1) as u8;
        assert!(SignalPayload::decode(&bad).is_none());
        bad[0] = 0;
        assert!(SignalPayload::decode(&bad).is_none());
        let mut bad = b;
        bad[1] = 3;
        assert!(SignalPayload::decode(&bad).is_none());
        // The largest payload, sealed, still fits the DHT's signal field.
        let v6 = SignalCandidate {
            kind: CandidateKind::Relayed,
            addr: "[2001:db8::1]:1".parse().unwrap(),
        };
        let largest = SignalPayload {
            candidates: vec![v6; SIGNAL_CANDIDATES_MAX],
            sdp: "a".repeat(SIGNAL_SDP_BYTES_MAX),
            browser: Some("2001:db8::2".parse().unwrap()),
        };
        let sealed = 2 + NONCE_BYTES + 64 + largest.encode().unwrap().len() + TAG_BYTES;
        assert!(sealed <= SIGNAL_MESSAGE_BYTES_MAX, "{sealed}");
    }

    #[test]
    fn a_browser_offer_is_flagged_signed_and_needs_no_candidate() {
        let p = SignalPayload {
            candidates: vec![],
            browser: Some("192.0.2.9".parse().unwrap()),
            ..payload(1, "DD")
        };
        let b = p.encode().unwrap();
        assert_eq!(SignalPayload::decode(&b), Some(p.clone()));
        for i in 0..b.len() {
            assert!(SignalPayload::decode(&b[..i]).is_none(), "prefix {i}");
        }
        // An unknown flag, or bytes after the address: refused.
        let mut bad = b.clone();
        let flag = b.len() - 17;
        bad[flag] = 2;
        assert!(SignalPayload::decode(&bad).is_none());
        let mut long = b.clone();
        long.push(0);
        assert!(SignalPayload::decode(&long).is_none());
        // The flag is inside the signed, sealed offer: the target sees it as sent.
        let (offer, _, _) = exchange_with(&p);
        assert_eq!(offer, p);
    }
}
