//! Node identities: the long-term RSA-4096 key, the node ID derived from it, and the
//! short-lived Ed25519 session key it certifies.
//!
//! # Why two keys
//!
//! The `rsa` crate has an unfixed timing side channel in private-key operations
//! (RUSTSEC-2023-0071, "Marvin"). So the RSA key does exactly one private-key operation per
//! process start: [`Identity::issue_session`] signs a [`Certificate`] for a fresh Ed25519
//! key, with RSA blinding on. Everything a remote peer can trigger afterwards (handshake
//! signatures, provider records) is an Ed25519 signature by the session key, or an RSA
//! *verification* of someone else's certificate, which involves no secret.
//!
//! # Encodings (all canonical, so hashes and signatures are reproducible)
//!
//! - Public key: DER `SubjectPublicKeyInfo` (SPKI, RFC 5280), the form OpenSSL prints with
//!   `openssl pkey -pubout -outform DER`. [`NodeId`] = first 160 bits of SHA-256(SPKI DER).
//! - Private key (persistence): unencrypted PKCS#8 DER. This module takes and returns
//!   bytes; the caller writes them atomically with mode 0600 (`storage::write_atomic`).
//! - Certificate: `spki_len u16 LE ‖ spki ‖ session_pub [32] ‖ not_after u64 LE ‖ sig_len
//!   u16 LE ‖ sig`, where `sig` is RSASSA-PKCS1-v1_5 with SHA-256 over
//!   `"furymesh-cert-v1\0" ‖ spki_len u16 LE ‖ spki ‖ session_pub ‖ not_after u64 LE`.
//!
//! No I/O and no logging here; `Debug` of anything secret prints no key bytes.

use std::fmt;

use ed25519_dalek::Signer as _;
use rsa::pkcs1v15;
use rsa::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey};
use rsa::rand_core::CryptoRngCore;
use rsa::signature::{RandomizedSigner as _, SignatureEncoding as _};
use rsa::traits::PublicKeyParts;
use rsa::{BigUint, RsaPrivateKey, RsaPublicKey};
use sha2::Sha256;
use zeroize::Zeroizing;

use super::id::NodeId;

/// Bits of every node's RSA modulus. Keys of any other size are refused.
pub const RSA_BITS: usize = 4096;
/// The only public exponent accepted.
pub const RSA_PUBLIC_EXPONENT: u64 = 65_537;
/// Bytes of an RSA-4096 signature.
pub const RSA_SIGNATURE_BYTES: usize = RSA_BITS / 8;
/// Upper bound on an SPKI DER encoding of an RSA-4096 key (it is 550 bytes; headroom for
/// encoders that add a NULL parameter differently is not needed, DER is canonical, but a
/// bound must exist before parsing).
pub const SPKI_BYTES_MAX: usize = 600;
/// Upper bound on an encoded [`Certificate`].
pub const CERTIFICATE_BYTES_MAX: usize = 2 + SPKI_BYTES_MAX + 32 + 8 + 2 + RSA_SIGNATURE_BYTES;
/// Bytes of an Ed25519 signature.
pub const ED25519_SIGNATURE_BYTES: usize = 64;

const CERT_DOMAIN: &[u8] = b"furymesh-cert-v1\0";
const PROVIDER_DOMAIN: &[u8] = b"furymesh-provider-v1\0";
/// Domain separator of the signature over a provider record's advertised transports.
const TRANSPORTS_DOMAIN: &[u8] = b"furymesh-transports-v1\0";

/// Why an identity, certificate or signed record was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    /// The private key bytes are not an unencrypted PKCS#8 RSA key.
    #[error("not a PKCS#8 DER RSA private key")]
    PrivateKeyEncoding,
    /// The key is RSA but not RSA-4096 with e = 65537.
    #[error("RSA key has {bits} bits and exponent {exponent}; need {RSA_BITS} and 65537")]
    WrongKeyShape { bits: usize, exponent: u64 },
    /// Key generation or signing failed inside the rsa crate.
    #[error("RSA operation failed: {reason}")]
    Rsa { reason: String },
    /// A certificate is truncated, too long, or its fields do not parse.
    #[error("malformed certificate: {what}")]
    MalformedCertificate { what: &'static str },
    /// The RSA signature on a certificate does not verify.
    #[error("certificate signature does not verify")]
    CertificateSignature,
    /// The certificate's validity ended before `now`.
    #[error("certificate expired at {not_after} (now {now})")]
    CertificateExpired { not_after: u64, now: u64 },
    /// An Ed25519 signature by a session key does not verify.
    #[error("session-key signature does not verify")]
    SessionSignature,
    /// A signed provider record is past its expiry.
    #[error("provider record expired at {expires} (now {now})")]
    ProviderRecordExpired { expires: u64, now: u64 },
}

/// A node's long-term identity: an RSA-4096 private key (e = 65537).
///
/// Only [`Identity::issue_session`] uses the private key; call it at start-up, never in
/// response to a peer.
pub struct Identity {
    key: RsaPrivateKey,
    public_der: Vec<u8>,
    node_id: NodeId,
}

impl Identity {
    /// Generates a fresh RSA-4096 identity. Takes seconds in release builds and minutes in
    /// debug builds: call it from `furymesh init`, never from tests (use the fixtures).
    pub fn generate(rng: &mut impl CryptoRngCore) -> Result<Self, IdentityError> {
        let key = RsaPrivateKey::new_with_exp(rng, RSA_BITS, &BigUint::from(RSA_PUBLIC_EXPONENT))
            .map_err(|e| IdentityError::Rsa { reason: e.to_string() })?;
        Self::from_key(key)
    }

    /// Reads an identity from unencrypted PKCS#8 DER (what [`Identity::to_pkcs8_der`]
    /// writes, and what `openssl genpkey -outform DER` makes).
    pub fn from_pkcs8_der(der: &[u8]) -> Result<Self, IdentityError> {
        let key =
            RsaPrivateKey::from_pkcs8_der(der).map_err(|_| IdentityError::PrivateKeyEncoding)?;
        Self::from_key(key)
    }

    fn from_key(key: RsaPrivateKey) -> Result<Self, IdentityError> {
        check_key_shape(key.n().bits(), key.e())?;
        let public_der = public_key_der(&key.to_public_key())?;
        let node_id = NodeId::from_public_key(&public_der);
        Ok(Self { key, public_der, node_id })
    }

    /// The private key as unencrypted PKCS#8 DER, for the caller to persist atomically with
    /// mode 0600. The buffer is wiped when dropped.
    pub fn to_pkcs8_der(&self) -> Result<Zeroizing<Vec<u8>>, IdentityError> {
        let doc =
            self.key.to_pkcs8_der().map_err(|e| IdentityError::Rsa { reason: e.to_string() })?;
        Ok(Zeroizing::new(doc.as_bytes().to_vec()))
    }

    /// The canonical public key: SPKI DER.
    pub fn public_der(&self) -> &[u8] {
        &self.public_der
    }

    /// First 160 bits of SHA-256 of [`Identity::public_der`].
    pub fn node_id(&self) -> NodeId {
        self.node_id
    }

    /// Certifies a new Ed25519 session key valid until `not_after` (unix seconds). This is
    /// the identity's only RSA private-key operation (blinded with `rng`); do it at start-up.
    ///
    /// `session_seed` is the Ed25519 secret key: 32 bytes from the OS RNG.
    pub fn issue_session(
        &self,
        rng: &mut impl CryptoRngCore,
        session_seed: [u8; 32],
        not_after: u64,
    ) -> Result<SessionIdentity, IdentityError> {
        let seed = Zeroizing::new(session_seed);
        let signing = ed25519_dalek::SigningKey::from_bytes(&seed);
        let session_public = signing.verifying_key().to_bytes();
        let message = cert_message(&self.public_der, &session_public, not_after);
        let signer = pkcs1v15::SigningKey::<Sha256>::new(self.key.clone());
        let signature = signer
            .try_sign_with_rng(rng, &message)
            .map_err(|e| IdentityError::Rsa { reason: e.to_string() })?
            .to_vec();
        let certificate = Certificate {
            node_public_der: self.public_der.clone(),
            session_public,
            not_after,
            signature,
        };
        let encoded = certificate.to_bytes();
        Ok(SessionIdentity { signing, certificate, encoded, node_id: self.node_id })
    }
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("node_id", &self.node_id)
            .field("private_key", &"<redacted>")
            .finish()
    }
}

fn check_key_shape(bits: usize, e: &BigUint) -> Result<(), IdentityError> {
    let exponent = e
        .to_bytes_be()
        .iter()
        .try_fold(0u64, |acc, &b| acc.checked_mul(256).map(|a| a | u64::from(b)))
        .unwrap_or(u64::MAX);
    if bits != RSA_BITS || *e != BigUint::from(RSA_PUBLIC_EXPONENT) {
        return Err(IdentityError::WrongKeyShape { bits, exponent });
    }
    Ok(())
}

fn public_key_der(key: &RsaPublicKey) -> Result<Vec<u8>, IdentityError> {
    let doc = key.to_public_key_der().map_err(|e| IdentityError::Rsa { reason: e.to_string() })?;
    Ok(doc.as_bytes().to_vec())
}

fn cert_message(spki: &[u8], session_public: &[u8; 32], not_after: u64) -> Vec<u8> {
    let mut m = Vec::with_capacity(CERT_DOMAIN.len() + 2 + spki.len() + 32 + 8);
    m.extend_from_slice(CERT_DOMAIN);
    // SPKI lengths are bounded by SPKI_BYTES_MAX (checked on parse, fixed for our own key).
    m.extend_from_slice(&(spki.len() as u16).to_le_bytes());
    m.extend_from_slice(spki);
    m.extend_from_slice(session_public);
    m.extend_from_slice(&not_after.to_le_bytes());
    m
}

/// An RSA-signed statement "this Ed25519 key speaks for node X until `not_after`".
/// Unverified as parsed; [`Certificate::verify`] checks it.
#[derive(Clone, PartialEq, Eq)]
pub struct Certificate {
    /// The node's RSA public key, SPKI DER. Its hash is the node ID.
    pub node_public_der: Vec<u8>,
    /// The Ed25519 session public key being certified.
    pub session_public: [u8; 32],
    /// End of validity, unix seconds (inclusive).
    pub not_after: u64,
    /// RSASSA-PKCS1-v1_5 / SHA-256 signature by the node's RSA key.
    pub signature: Vec<u8>,
}

impl Certificate {
    /// The canonical encoding (see the module docs).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(CERTIFICATE_BYTES_MAX);
        // Both lengths are bounded (SPKI_BYTES_MAX, RSA_SIGNATURE_BYTES) far below u16::MAX.
        out.extend_from_slice(&(self.node_public_der.len() as u16).to_le_bytes());
        out.extend_from_slice(&self.node_public_der);
        out.extend_from_slice(&self.session_public);
        out.extend_from_slice(&self.not_after.to_le_bytes());
        out.extend_from_slice(&(self.signature.len() as u16).to_le_bytes());
        out.extend_from_slice(&self.signature);
        out
    }

    /// Parses the canonical encoding; the whole input must be consumed.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, IdentityError> {
        let mut r = Reader::new(bytes);
        let cert = Self::read(&mut r)?;
        if !r.is_empty() {
            return Err(IdentityError::MalformedCertificate { what: "trailing bytes" });
        }
        Ok(cert)
    }

    pub(super) fn read(r: &mut Reader<'_>) -> Result<Self, IdentityError> {
        let bad = |what| IdentityError::MalformedCertificate { what };
        let spki_len = usize::from(r.u16().ok_or(bad("truncated"))?);
        if spki_len > SPKI_BYTES_MAX {
            return Err(bad("public key too long"));
        }
        let node_public_der = r.take(spki_len).ok_or(bad("truncated"))?.to_vec();
        let session_public = r.array::<32>().ok_or(bad("truncated"))?;
        let not_after = r.u64().ok_or(bad("truncated"))?;
        let sig_len = usize::from(r.u16().ok_or(bad("truncated"))?);
        if sig_len != RSA_SIGNATURE_BYTES {
            return Err(bad("signature length"));
        }
        let signature = r.take(sig_len).ok_or(bad("truncated"))?.to_vec();
        Ok(Self { node_public_der, session_public, not_after, signature })
    }

    /// The node ID this certificate speaks for *if* it verifies: SHA-256 of its public key,
    /// truncated. Costs one hash, no RSA, so a caller that expects a particular node (a
    /// pinned peer, a DHT provider, a signaling target) refuses another node's certificate
    /// with this before it pays for [`Certificate::verify`].
    pub fn claimed_node_id(&self) -> NodeId {
        NodeId::from_public_key(&self.node_public_der)
    }

    /// Checks expiry against `now_unix`, the RSA key shape, the session key and the RSA
    /// signature. Only RSA public-key operations: safe to run on input from any peer.
    ///
    /// The checks run cheapest first, so a certificate that is expired, malformed, not
    /// canonical or certifies a session key that is not an Ed25519 point is refused before
    /// the RSA-4096 verification, the one costly step. That step uses `ring`'s RSA
    /// verification (PKCS#1 v1.5, SHA-256): the `rsa` crate only parses the key here.
    /// Both accept exactly the signatures `s < n` with `s^e mod n` equal to the one valid
    /// PKCS#1 v1.5 encoding of the message; ring's big-number code is a few times faster,
    /// which bounds what a peer sending bad certificates costs us.
    pub fn verify(&self, now_unix: u64) -> Result<VerifiedCertificate, IdentityError> {
        if now_unix > self.not_after {
            return Err(IdentityError::CertificateExpired {
                not_after: self.not_after,
                now: now_unix,
            });
        }
        let key = RsaPublicKey::from_public_key_der(&self.node_public_der)
            .map_err(|_| IdentityError::MalformedCertificate { what: "public key" })?;
        check_key_shape(key.n().bits(), key.e())?;
        // Canonical form only: a key re-encoded differently would hash to another node ID.
        if public_key_der(&key)? != self.node_public_der {
            return Err(IdentityError::MalformedCertificate { what: "non-canonical public key" });
        }
        if self.signature.len() != RSA_SIGNATURE_BYTES {
            return Err(IdentityError::CertificateSignature);
        }
        let session = ed25519_dalek::VerifyingKey::from_bytes(&self.session_public)
            .map_err(|_| IdentityError::MalformedCertificate { what: "session key" })?;
        let message = cert_message(&self.node_public_der, &self.session_public, self.not_after);
        let (n, e) = (key.n().to_bytes_be(), key.e().to_bytes_be());
        ring::signature::RsaPublicKeyComponents { n: n.as_slice(), e: e.as_slice() }
            .verify(&ring::signature::RSA_PKCS1_2048_8192_SHA256, &message, &self.signature)
            .map_err(|_| IdentityError::CertificateSignature)?;
        Ok(VerifiedCertificate { node_id: self.claimed_node_id(), session })
    }
}

impl fmt::Debug for Certificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Certificate")
            .field("node_id", &NodeId::from_public_key(&self.node_public_der))
            .field("session_public", &hex::encode(self.session_public))
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

/// A certificate whose RSA signature and expiry have been checked: the peer's node ID and
/// the session key that speaks for it.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct VerifiedCertificate {
    node_id: NodeId,
    session: ed25519_dalek::VerifyingKey,
}

impl VerifiedCertificate {
    /// SHA-256 of the certified RSA public key, truncated to 160 bits.
    pub fn node_id(&self) -> NodeId {
        self.node_id
    }

    pub(super) fn verify_session_signature(
        &self,
        message: &[u8],
        signature: &[u8; ED25519_SIGNATURE_BYTES],
    ) -> Result<(), IdentityError> {
        let sig = ed25519_dalek::Signature::from_bytes(signature);
        // verify_strict rejects small-order keys and non-canonical signatures.
        self.session.verify_strict(message, &sig).map_err(|_| IdentityError::SessionSignature)
    }
}

/// What a running node holds: its certificate and the Ed25519 session secret key. Cheap to
/// share (put it in an `Arc`); every handshake signature comes from here.
pub struct SessionIdentity {
    signing: ed25519_dalek::SigningKey,
    certificate: Certificate,
    encoded: Vec<u8>,
    node_id: NodeId,
}

impl SessionIdentity {
    /// This node's ID.
    pub fn node_id(&self) -> NodeId {
        self.node_id
    }

    /// The certificate, as sent in handshakes.
    pub fn certificate(&self) -> &Certificate {
        &self.certificate
    }

    /// The certificate's canonical encoding.
    pub fn certificate_bytes(&self) -> &[u8] {
        &self.encoded
    }

    /// End of the session key's validity, unix seconds: issue a new one before this.
    pub fn not_after(&self) -> u64 {
        self.certificate.not_after
    }

    pub(super) fn sign(&self, message: &[u8]) -> [u8; ED25519_SIGNATURE_BYTES] {
        self.signing.sign(message).to_bytes()
    }
}

/// Persisting a session key, so that a short-lived command (`get`) reuses one instead of
/// paying an RSA-4096 signature at every start.
impl SessionIdentity {
    /// The session key's Ed25519 secret (32 bytes) followed by the certificate's canonical
    /// encoding: what [`SessionIdentity::from_stored`] takes back. Secret: keep it as the
    /// identity key is kept (mode 0600, wiped when dropped).
    pub fn to_stored(&self) -> Zeroizing<Vec<u8>> {
        let mut out = Zeroizing::new(Vec::with_capacity(32 + self.encoded.len()));
        out.extend_from_slice(self.signing.as_bytes());
        out.extend_from_slice(&self.encoded);
        out
    }

    /// A session key of `identity` from [`SessionIdentity::to_stored`]'s bytes, if they
    /// are whole and genuine at `now_unix`: the certificate parses, names `identity`'s
    /// public key and the secret's public key, and verifies (signature, expiry). `None`
    /// for anything else (torn, stale, another node's, altered): the caller issues a new
    /// one.
    pub fn from_stored(identity: &Identity, bytes: &[u8], now_unix: u64) -> Option<Self> {
        let (seed, encoded) = bytes.split_first_chunk::<32>()?;
        let certificate = Certificate::from_bytes(encoded).ok()?;
        let signing = ed25519_dalek::SigningKey::from_bytes(seed);
        if certificate.node_public_der != identity.public_der
            || certificate.session_public != signing.verifying_key().to_bytes()
        {
            return None;
        }
        certificate.verify(now_unix).ok()?;
        let encoded = certificate.to_bytes();
        Some(Self { signing, certificate, encoded, node_id: identity.node_id })
    }
}

impl fmt::Debug for SessionIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionIdentity")
            .field("node_id", &self.node_id)
            .field("not_after", &self.certificate.not_after)
            .field("signing_key", &"<redacted>")
            .finish()
    }
}

fn provider_message(node_id: &NodeId, key: &[u8; 20], addr: &[u8], expires: u64) -> Vec<u8> {
    let mut m = Vec::with_capacity(PROVIDER_DOMAIN.len() + 20 + 20 + 2 + addr.len() + 8);
    m.extend_from_slice(PROVIDER_DOMAIN);
    m.extend_from_slice(node_id.as_bytes());
    m.extend_from_slice(key);
    // Addresses are at most a few dozen bytes; the length prefix keeps fields unambiguous.
    m.extend_from_slice(&(addr.len().min(usize::from(u16::MAX)) as u16).to_le_bytes());
    m.extend_from_slice(addr);
    m.extend_from_slice(&expires.to_le_bytes());
    m
}

/// Signs a DHT provider record "node `session.node_id()` serves `key` at `addr` until
/// `expires` (unix seconds)" with the session key. The signed message is
/// `"furymesh-provider-v1\0" ‖ node_id [20] ‖ key [20] ‖ addr_len u16 LE ‖ addr ‖ expires
/// u64 LE`, so a record cannot be replayed for another node, key, address or lifetime.
pub fn sign_provider_record(
    session: &SessionIdentity,
    key: &[u8; 20],
    addr: &[u8],
    expires: u64,
) -> [u8; ED25519_SIGNATURE_BYTES] {
    session.sign(&provider_message(&session.node_id, key, addr, expires))
}

/// Verifies a provider record against the announcing node's verified certificate and
/// `now_unix`. Returns the node ID the record speaks for.
pub fn verify_provider_record(
    certificate: &VerifiedCertificate,
    key: &[u8; 20],
    addr: &[u8],
    expires: u64,
    signature: &[u8; ED25519_SIGNATURE_BYTES],
    now_unix: u64,
) -> Result<NodeId, IdentityError> {
    if now_unix > expires {
        return Err(IdentityError::ProviderRecordExpired { expires, now: now_unix });
    }
    let message = provider_message(&certificate.node_id, key, addr, expires);
    certificate.verify_session_signature(&message, signature)?;
    Ok(certificate.node_id)
}

fn transports_message(
    node_id: &NodeId,
    key: &[u8; 20],
    addr: &[u8],
    expires: u64,
    flags: u8,
    webrtc_port: u16,
) -> Vec<u8> {
    let mut m = provider_message(node_id, key, addr, expires);
    m.splice(..PROVIDER_DOMAIN.len(), TRANSPORTS_DOMAIN.iter().copied());
    m.push(flags);
    m.extend_from_slice(&webrtc_port.to_le_bytes());
    m
}

/// Signs the transports a provider record advertises: `"furymesh-transports-v1\0" ‖` the
/// provider record's fields (as in [`sign_provider_record`]) `‖ flags u8 ‖ webrtc_port u16
/// LE`. A separate signature, so a node that predates transports still verifies the record's
/// own signature and stores it as a TCP record.
pub fn sign_provider_transports(
    session: &SessionIdentity,
    key: &[u8; 20],
    addr: &[u8],
    expires: u64,
    flags: u8,
    webrtc_port: u16,
) -> [u8; ED25519_SIGNATURE_BYTES] {
    session.sign(&transports_message(&session.node_id, key, addr, expires, flags, webrtc_port))
}

/// Verifies [`sign_provider_transports`]' signature against the provider's verified
/// certificate.
pub fn verify_provider_transports(
    certificate: &VerifiedCertificate,
    key: &[u8; 20],
    addr: &[u8],
    expires: u64,
    flags: u8,
    webrtc_port: u16,
    signature: &[u8; ED25519_SIGNATURE_BYTES],
) -> Result<(), IdentityError> {
    let m = transports_message(&certificate.node_id, key, addr, expires, flags, webrtc_port);
    certificate.verify_session_signature(&m, signature)
}

/// A bounds-checked cursor over untrusted bytes: every read returns `None` past the end.
pub(super) struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(super) fn new(bytes: &'a [u8]) -> Self {
        Self { rest: bytes }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    /// The bytes not read yet.
    pub(super) fn remaining(&self) -> &'a [u8] {
        self.rest
    }

    pub(super) fn rest_len(&self) -> usize {
        self.rest.len()
    }

    pub(super) fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.rest.len() < n {
            return None;
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Some(head)
    }

    pub(super) fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N).and_then(|b| b.try_into().ok())
    }

    pub(super) fn u8(&mut self) -> Option<u8> {
        self.array::<1>().map(|[b]| b)
    }

    pub(super) fn u16(&mut self) -> Option<u16> {
        self.array().map(u16::from_le_bytes)
    }

    pub(super) fn u64(&mut self) -> Option<u64> {
        self.array().map(u64::from_le_bytes)
    }
}

/// Fixture identities shared by the crypto unit tests (see scripts/gen-fixture-identities).
#[cfg(test)]
pub(crate) mod fixtures {
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex, OnceLock};

    use super::*;

    pub(crate) const ALICE: &[u8] = include_bytes!("../../tests/fixtures/identities/alice.pk8.der");
    pub(crate) const BOB: &[u8] = include_bytes!("../../tests/fixtures/identities/bob.pk8.der");
    pub(crate) const CAROL: &[u8] = include_bytes!("../../tests/fixtures/identities/carol.pk8.der");

    /// A deterministic RNG for RSA blinding in tests.
    pub(crate) fn rng() -> impl CryptoRngCore {
        struct Counter(u64);
        impl rsa::rand_core::RngCore for Counter {
            fn next_u32(&mut self) -> u32 {
                self.next_u64() as u32
            }
            fn next_u64(&mut self) -> u64 {
                self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                self.0
            }
            fn fill_bytes(&mut self, dest: &mut [u8]) {
                rsa::rand_core::impls::fill_bytes_via_next(self, dest)
            }
            fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rsa::rand_core::Error> {
                self.fill_bytes(dest);
                Ok(())
            }
        }
        // Test-only: blinding needs unpredictability against a timing attacker, not here.
        impl rsa::rand_core::CryptoRng for Counter {}
        Counter(7)
    }

    pub(crate) fn identity(der: &[u8]) -> Identity {
        Identity::from_pkcs8_der(der).unwrap()
    }

    /// A session identity valid until `not_after`, with a seed derived from `tag`. Cached:
    /// each RSA-4096 signature costs milliseconds, and tests ask for the same ones often.
    pub(crate) fn session(der: &'static [u8], tag: u8, not_after: u64) -> Arc<SessionIdentity> {
        type Cache = Mutex<HashMap<(usize, u8, u64), Arc<SessionIdentity>>>;
        static CACHE: OnceLock<Cache> = OnceLock::new();
        let key = (der.as_ptr() as usize, tag, not_after);
        let cache = CACHE.get_or_init(Default::default);
        if let Some(s) = cache.lock().unwrap().get(&key) {
            return s.clone();
        }
        let s = Arc::new(identity(der).issue_session(&mut rng(), [tag; 32], not_after).unwrap());
        cache.lock().unwrap().insert(key, s.clone());
        s
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::*;
    use super::*;

    #[test]
    fn fixture_identity_round_trips_and_has_the_right_shape() {
        let id = identity(ALICE);
        assert_eq!(id.public_der().len(), 550, "RSA-4096 SPKI DER");
        assert_eq!(id.node_id(), NodeId::from_public_key(id.public_der()));
        let der = id.to_pkcs8_der().unwrap();
        let again = Identity::from_pkcs8_der(&der).unwrap();
        assert_eq!(again.node_id(), id.node_id());
        assert_ne!(identity(BOB).node_id(), id.node_id());
        // Debug never shows the private key.
        let dbg = format!("{id:?}");
        assert!(dbg.contains("redacted") && dbg.len() < 200, "{dbg}");
    }

    #[test]
    fn node_id_is_sha256_prefix_of_spki() {
        use sha2::Digest;
        let id = identity(CAROL);
        let digest = Sha256::digest(id.public_der());
        assert_eq!(id.node_id().as_bytes()[..], digest[..20]);
    }

    #[test]
    fn garbage_and_wrong_size_keys_are_refused() {
        assert_eq!(
            Identity::from_pkcs8_der(b"not a key").unwrap_err(),
            IdentityError::PrivateKeyEncoding
        );
        assert!(check_key_shape(2048, &BigUint::from(65_537u32)).is_err());
        assert!(check_key_shape(4096, &BigUint::from(3u32)).is_err());
    }

    #[test]
    fn certificate_round_trips_verifies_and_expires() {
        let s = session(ALICE, 1, 1_000);
        let bytes = s.certificate_bytes();
        assert!(bytes.len() <= CERTIFICATE_BYTES_MAX);
        let cert = Certificate::from_bytes(bytes).unwrap();
        assert_eq!(&cert, s.certificate());
        let v = cert.verify(1_000).unwrap();
        assert_eq!(v.node_id(), s.node_id());
        assert_eq!(
            cert.verify(1_001).unwrap_err(),
            IdentityError::CertificateExpired { not_after: 1_000, now: 1_001 }
        );
        assert!(format!("{s:?}").contains("redacted"));
    }

    #[test]
    fn tampered_certificates_are_refused() {
        let s = session(ALICE, 1, 1_000);
        let bob = identity(BOB);
        // Someone else's key, same session key and signature: wrong signature.
        let mut c = s.certificate().clone();
        c.node_public_der = bob.public_der().to_vec();
        assert_eq!(c.verify(0).unwrap_err(), IdentityError::CertificateSignature);
        // Extended lifetime.
        let mut c = s.certificate().clone();
        c.not_after += 1;
        assert_eq!(c.verify(0).unwrap_err(), IdentityError::CertificateSignature);
        // Swapped session key.
        let mut c = s.certificate().clone();
        c.session_public = session(ALICE, 2, 1_000).certificate().session_public;
        assert_eq!(c.verify(0).unwrap_err(), IdentityError::CertificateSignature);
        // Every truncation fails to parse.
        let bytes = s.certificate_bytes();
        for n in 0..bytes.len() {
            assert!(Certificate::from_bytes(&bytes[..n]).is_err());
        }
        let mut long = bytes.to_vec();
        long.push(0);
        assert!(Certificate::from_bytes(&long).is_err());
    }

    #[test]
    fn a_stored_session_comes_back_only_whole_genuine_and_unexpired() {
        let alice = identity(ALICE);
        let s = session(ALICE, 3, 1_000);
        let stored = s.to_stored();
        let back = SessionIdentity::from_stored(&alice, &stored, 999).expect("round trip");
        assert_eq!(back.certificate_bytes(), s.certificate_bytes());
        assert_eq!(back.sign(b"m"), s.sign(b"m"));
        // Expired, another node's, torn, or altered anywhere: refused.
        assert!(SessionIdentity::from_stored(&alice, &stored, 1_001).is_none());
        assert!(SessionIdentity::from_stored(&identity(BOB), &stored, 999).is_none());
        for len in [0, 31, 32, stored.len() - 1] {
            assert!(SessionIdentity::from_stored(&alice, &stored[..len], 999).is_none(), "{len}");
        }
        for at in (0..stored.len()).step_by(97).chain([0, 31, 32, stored.len() - 1]) {
            let mut bad = stored.to_vec();
            bad[at] ^= 0x40;
            assert!(SessionIdentity::from_stored(&alice, &bad, 999).is_none(), "byte {at}");
        }
    }

    #[test]
    fn verification_agrees_with_the_rsa_crate_and_checks_cheap_things_first() {
        // `verify` checks signatures with ring; the rsa crate, which signed them, must
        // accept exactly the same ones: the genuine signature, and none with a bit flipped
        // anywhere or with a value at or above the modulus.
        let s = session(ALICE, 1, 1_000);
        let key = RsaPublicKey::from_public_key_der(&s.certificate().node_public_der).unwrap();
        let rsa_crate = pkcs1v15::VerifyingKey::<Sha256>::new(key.clone());
        let rsa_accepts = |c: &Certificate| {
            let message = cert_message(&c.node_public_der, &c.session_public, c.not_after);
            pkcs1v15::Signature::try_from(c.signature.as_slice()).is_ok_and(|sig| {
                rsa::signature::Verifier::verify(&rsa_crate, &message, &sig).is_ok()
            })
        };
        let genuine = s.certificate().clone();
        assert!(rsa_accepts(&genuine) && genuine.verify(0).is_ok());
        for bit in (0..RSA_SIGNATURE_BYTES * 8).step_by(61).chain([0, 7, 4095]) {
            let mut c = genuine.clone();
            c.signature[bit / 8] ^= 1 << (bit % 8);
            assert!(!rsa_accepts(&c), "bit {bit}");
            assert_eq!(c.verify(0).unwrap_err(), IdentityError::CertificateSignature, "bit {bit}");
        }
        let mut c = genuine.clone();
        c.signature = key.n().to_bytes_be();
        assert!(!rsa_accepts(&c));
        assert_eq!(c.verify(0).unwrap_err(), IdentityError::CertificateSignature);
        c.signature = vec![0xff; RSA_SIGNATURE_BYTES];
        assert_eq!(c.verify(0).unwrap_err(), IdentityError::CertificateSignature);
        // The claimed node ID is the key's hash, known before any verification.
        assert_eq!(genuine.claimed_node_id(), s.node_id());
        // A session key that is not a curve point is refused before the RSA check.
        let mut c = genuine.clone();
        c.session_public = (0..=u8::MAX)
            .map(|b| [b; 32])
            .find(|k| ed25519_dalek::VerifyingKey::from_bytes(k).is_err())
            .expect("about half of all encodings are not points");
        assert_eq!(
            c.verify(0).unwrap_err(),
            IdentityError::MalformedCertificate { what: "session key" }
        );
    }

    #[test]
    fn provider_records_bind_node_key_addr_and_expiry() {
        let s = session(ALICE, 1, 1_000);
        let v = s.certificate().verify(0).unwrap();
        let key = [9u8; 20];
        let sig = sign_provider_record(&s, &key, b"127.0.0.1:4000", 500);
        assert_eq!(
            verify_provider_record(&v, &key, b"127.0.0.1:4000", 500, &sig, 10),
            Ok(s.node_id())
        );
        assert!(verify_provider_record(&v, &[8; 20], b"127.0.0.1:4000", 500, &sig, 10).is_err());
        assert!(verify_provider_record(&v, &key, b"127.0.0.1:4001", 500, &sig, 10).is_err());
        assert!(verify_provider_record(&v, &key, b"127.0.0.1:4000", 501, &sig, 10).is_err());
        assert!(verify_provider_record(&v, &key, b"127.0.0.1:4000", 500, &sig, 501).is_err());
        // Bob's certificate cannot vouch for Alice's record.
        let bob = session(BOB, 2, 1_000).certificate().verify(0).unwrap();
        assert_eq!(
            verify_provider_record(&bob, &key, b"127.0.0.1:4000", 500, &sig, 10),
            Err(IdentityError::SessionSignature)
        );
    }
}
