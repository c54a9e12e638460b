//! Session certificates as peers send them (in every handshake and in signed DHT
//! announcements): `crypto::Certificate::from_bytes` on arbitrary bytes. A certificate that
//! parses is canonical (`to_bytes` gives the input back) and then goes through the same
//! RSA public-key check a peer's does, `Certificate::verify`.
#![no_main]

use furymesh::crypto::identity::CERTIFICATE_BYTES_MAX;
use furymesh::crypto::Certificate;
use furymesh::dht::NodeId;
use furymesh_fuzz::fixtures::NOW;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(cert) = Certificate::from_bytes(data) else { return };
    assert!(data.len() <= CERTIFICATE_BYTES_MAX);
    assert_eq!(cert.to_bytes(), data, "the encoding is canonical");
    let _ = format!("{cert:?}");
    for now in [NOW, cert.not_after, cert.not_after.saturating_add(1)] {
        if let Ok(verified) = cert.verify(now) {
            assert!(now <= cert.not_after, "expired certificates never verify");
            assert_eq!(verified.node_id(), NodeId::from_public_key(&cert.node_public_der));
        }
    }
});
