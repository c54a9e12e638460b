//! Session certificates as peers send them (in every handshake and in signed DHT
//! announcements): `crypto::Certificate::from_bytes` on arbitrary bytes. A certificate that
//! parses is canonical (`to_bytes` gives the input back) and then goes through the same
//! RSA public-key check a peer's does, `Certificate::verify`.
//!
//! `now` enters `verify` only through its expiry comparison, so one full verification runs
//! per input, at an instant inside the validity (the fixture clock, or the certificate's
//! last valid second if that clock is past it), and a second one a second after the end,
//! which must be refused as expired before any RSA work.
#![no_main]

use furymesh::crypto::identity::{IdentityError, CERTIFICATE_BYTES_MAX};
use furymesh::crypto::Certificate;
use furymesh::dht::NodeId;
use furymesh_fuzz::fixtures::NOW;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(cert) = Certificate::from_bytes(data) else { return };
    assert!(data.len() <= CERTIFICATE_BYTES_MAX);
    assert_eq!(cert.to_bytes(), data, "the encoding is canonical");
    let _ = format!("{cert:?}");
    let claimed = cert.claimed_node_id();
    assert_eq!(claimed, NodeId::from_public_key(&cert.node_public_der));
    if let Ok(verified) = cert.verify(NOW.min(cert.not_after)) {
        assert_eq!(verified.node_id(), claimed, "a certificate speaks for its key's node");
    }
    if let Some(after) = cert.not_after.checked_add(1) {
        assert_eq!(
            cert.verify(after).err(),
            Some(IdentityError::CertificateExpired { not_after: cert.not_after, now: after }),
            "expired certificates never verify"
        );
    }
});
