//! Property tests for the cryptographic core: a bit flipped anywhere in any handshake
//! message never yields a session, and records round-trip (and refuse any tampering) for
//! arbitrary associated data, lengths and rekey boundaries.
//!
//! The fixture identities (tests/fixtures/identities) are loaded once; every case runs a
//! fresh in-memory handshake.

// Session certificates are signed with the OS RNG as a node signs them; the properties do
// not depend on the signature's randomness.
#![allow(clippy::disallowed_types)]

use std::sync::{Arc, OnceLock};

use furymesh::crypto::rand_core::OsRng;
use furymesh::crypto::{
    Encryption, HandshakeConfig, HandshakeRandom, Identity, Initiator, NetworkSecret, Opener,
    RecordAad, RecordKind, RekeyLimits, Responder, Sealer, Session, SessionIdentity,
};
use proptest::prelude::*;
use sha2::{Digest, Sha256};

const NOW: u64 = 1_700_000_000;

fn sessions() -> &'static (Arc<SessionIdentity>, Arc<SessionIdentity>) {
    static S: OnceLock<(Arc<SessionIdentity>, Arc<SessionIdentity>)> = OnceLock::new();
    S.get_or_init(|| {
        let issue = |der: &[u8], seed: u8| {
            let id = Identity::from_pkcs8_der(der).unwrap();
            Arc::new(id.issue_session(&mut OsRng, [seed; 32], NOW + 3_600).unwrap())
        };
        (
            issue(include_bytes!("fixtures/identities/alice.pk8.der"), 1),
            issue(include_bytes!("fixtures/identities/bob.pk8.der"), 2),
        )
    })
}

fn configs(network: Option<NetworkSecret>) -> (HandshakeConfig, HandshakeConfig) {
    let (a, b) = sessions();
    let config = |local: &Arc<SessionIdentity>| HandshakeConfig {
        local: local.clone(),
        network: network.clone(),
        encryption: Encryption::On,
        expected_peer: None,
        channel_binding: None,
    };
    (config(a), config(b))
}

/// Deterministic per-case randomness (proptest shrinks and replays by seed).
fn random(seed: u64, role: u8) -> HandshakeRandom {
    let h = |label: &[u8]| -> [u8; 32] {
        Sha256::new()
            .chain_update(seed.to_le_bytes())
            .chain_update([role])
            .chain_update(label)
            .finalize()
            .into()
    };
    HandshakeRandom { ephemeral: h(b"e"), nonce: h(b"n") }
}

/// Runs a handshake, flipping bit `flip.1` of message `flip.0` (0 = ClientHello,
/// 1 = ServerHello, 2 = ClientFinish) in transit. Returns both sessions if both sides
/// completed.
fn handshake(seed: u64, flip: Option<(usize, usize)>) -> Option<(Session, Session)> {
    let network = NetworkSecret::from_bytes(b"a private network secret").ok();
    let (a, b) = configs(network);
    let tamper = |i: usize, mut m: Vec<u8>| {
        if let Some((which, bit)) = flip {
            if which == i {
                let bit = bit % (m.len() * 8);
                m[bit / 8] ^= 1 << (bit % 8);
            }
        }
        m
    };
    let (init, ch) = Initiator::start(a, random(seed, 0), NOW).unwrap();
    let (resp, sh) =
        Responder::handle_client_hello(b, random(seed, 1), &tamper(0, ch), NOW).ok()?;
    let (cf, client) = init.handle_server_hello(&tamper(1, sh), NOW).ok()?;
    let server = resp.handle_client_finish(&tamper(2, cf), NOW).ok()?;
    Some((client, server))
}

fn records(seed: u64, limits: RekeyLimits) -> ((Sealer, Opener), (Sealer, Opener)) {
    let (client, server) = handshake(seed, None).expect("clean handshake succeeds");
    assert_eq!(client.transcript_hash(), server.transcript_hash());
    (
        client.into_records_with_limits(limits).unwrap(),
        server.into_records_with_limits(limits).unwrap(),
    )
}

fn aad_strategy() -> impl Strategy<Value = (u8, [u8; 32], u32)> {
    (0u8..3, any::<[u8; 32]>(), any::<u32>())
}

fn make_aad((kind, file_id, chunk_index): (u8, [u8; 32], u32), len: usize) -> RecordAad {
    let kind = [RecordKind::Control, RecordKind::Chunk, RecordKind::Close][usize::from(kind)];
    RecordAad { kind, file_id, chunk_index, length: len as u32 }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn any_flipped_handshake_bit_fails_the_handshake(
        seed in any::<u64>(),
        which in 0usize..3,
        bit in any::<usize>(),
    ) {
        prop_assert!(handshake(seed, Some((which, bit))).is_none());
    }

    #[test]
    fn records_round_trip_for_random_aad_lengths_and_rekeys(
        seed in any::<u64>(),
        records_max in 1u64..6,
        bytes_max in 1u64..20_000,
        msgs in prop::collection::vec((aad_strategy(), 0usize..5_000, any::<bool>()), 1..24),
    ) {
        let limits = RekeyLimits { records_max, bytes_max };
        let ((mut cs, mut co), (mut ss, mut so)) = records(seed, limits);
        for (i, (aad, len, to_server)) in msgs.into_iter().enumerate() {
            let aad = make_aad(aad, len);
            let data: Vec<u8> = (0..len).map(|j| (i * 31 + j) as u8).collect();
            let (sealer, opener) =
                if to_server { (&mut cs, &mut so) } else { (&mut ss, &mut co) };
            let mut wire = data.clone();
            let tag = sealer.seal_in_place(&aad, &mut wire).unwrap();
            if len >= 16 {
                prop_assert_ne!(&wire, &data);
            }
            opener.open_in_place(&aad, &mut wire, &tag).unwrap();
            prop_assert_eq!(&wire, &data);
            prop_assert_eq!(sealer.position(), opener.position());
        }
    }

    #[test]
    fn any_tampering_of_a_record_is_refused(
        seed in any::<u64>(),
        aad in aad_strategy(),
        len in 1usize..2_000,
        target in 0u8..3,
        bit in any::<usize>(),
    ) {
        let ((mut cs, _), (_, mut so)) = records(seed, RekeyLimits::PROTOCOL);
        let aad = make_aad(aad, len);
        let mut wire = vec![7u8; len];
        let mut tag = cs.seal_in_place(&aad, &mut wire).unwrap();
        let mut bad_aad = aad;
        match target {
            0 => { let b = bit % (len * 8); wire[b / 8] ^= 1 << (b % 8); }
            1 => { let b = bit % 128; tag[b / 8] ^= 1 << (b % 8); }
            _ => {
                // Change the file ID or chunk index the record claims.
                let b = bit % (32 * 8 + 32);
                if b < 256 { bad_aad.file_id[b / 8] ^= 1 << (b % 8); }
                else { bad_aad.chunk_index ^= 1 << (b - 256); }
            }
        }
        prop_assert!(so.open_in_place(&bad_aad, &mut wire, &tag).is_err());
        // The cipher decrypts while it authenticates: a refused record is wiped, not released.
        prop_assert!(wire.iter().all(|&b| b == 0), "nothing is released on failure");
    }
}
