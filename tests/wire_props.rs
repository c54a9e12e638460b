//! Property tests for the wire formats: for every peer message, manifest, resume state, DHT
//! datagram (with and without a provider proof) and routing-table snapshot, decoding what
//! was encoded gives the value back; arbitrary bytes, and real encodings with bytes changed,
//! cut short or extended, never make a decoder panic. (The fuzz targets in `fuzz/` push the
//! second half much further; these run in every `cargo test`.)

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use furymesh::config::{CHUNK_SIZE_MAX_BYTES, CHUNK_SIZE_MIN_BYTES};
use furymesh::crypto::identity::CERTIFICATE_BYTES_MAX;
use furymesh::crypto::{ChunkHash, FileId};
use furymesh::dht::{
    Contact, DhtBody, DhtMessage, Key, NodeId, CONTACTS_PER_MESSAGE_MAX, PROVIDERS_PER_MESSAGE_MAX,
};
use furymesh::manifest::FileInfo;
use furymesh::wire::{
    self, decode_dht, decode_dht_proved, decode_dht_table, decode_manifest, decode_resume,
    encode_dht_proved, encode_dht_table, encode_manifest, encode_resume, AnnounceProof, Encoder,
    ErrorCode, Message, DHT_DATAGRAM_MAX_BYTES, ERROR_MESSAGE_MAX_BYTES,
};
use proptest::prelude::*;

fn file_id() -> impl Strategy<Value = FileId> {
    any::<[u8; 32]>().prop_map(FileId)
}

fn error_code() -> impl Strategy<Value = ErrorCode> {
    prop::sample::select(vec![
        ErrorCode::Unknown,
        ErrorCode::UnknownFile,
        ErrorCode::ChunkOutOfRange,
        ErrorCode::Malformed,
        ErrorCode::FileChanged,
        ErrorCode::Io,
        ErrorCode::Overloaded,
        ErrorCode::ChunkNotAvailable,
    ])
}

/// A consistent manifest (its ID is the hash of the rest, as `FileInfo::check` demands):
/// 0–40 chunks of any allowed size, the last one short by any amount.
fn file_info() -> impl Strategy<Value = FileInfo> {
    (
        CHUNK_SIZE_MIN_BYTES..=CHUNK_SIZE_MAX_BYTES,
        prop::collection::vec(any::<ChunkHash>(), 0..40),
        any::<u32>(),
        ".{0,40}",
        any::<i64>(),
    )
        .prop_map(|(chunk_size, chunk_hashes, short, name, creation_time)| {
            let n = chunk_hashes.len() as u64;
            let size = if n == 0 { 0 } else { n * chunk_size as u64 - (short % chunk_size) as u64 };
            FileInfo {
                file_id: FileId::from_manifest(size, chunk_size, &chunk_hashes),
                name,
                size,
                chunk_size,
                creation_time,
                chunk_hashes,
            }
        })
}

fn message() -> impl Strategy<Value = Message> {
    prop_oneof![
        (file_id(), any::<u32>(), any::<u8>()).prop_map(|(file_id, chunk_index, priority)| {
            Message::ChunkRequest { file_id, chunk_index, priority }
        }),
        (file_id(), any::<u32>(), any::<u32>()).prop_map(|(file_id, chunk_index, payload_len)| {
            Message::ChunkResponse { file_id, chunk_index, payload_len }
        }),
        file_id().prop_map(|file_id| Message::FileInfoRequest { file_id }),
        file_info().prop_map(Message::FileInfo),
        (error_code(), ".{0,200}", prop::option::of(file_id()), any::<u32>()).prop_map(
            |(code, message, file_id, chunk_index)| Message::Error {
                code,
                message,
                file_id,
                chunk_index
            }
        ),
        file_id().prop_map(|file_id| Message::BitfieldRequest { file_id }),
        (file_id(), prop::option::of(prop::collection::vec(any::<u8>(), 0..300)))
            .prop_map(|(file_id, bits)| Message::Bitfield { file_id, bits }),
    ]
}

/// A contact as the decoder returns it: IPv4 addresses as `V4` (the wire carries them
/// IPv4-mapped), any other IPv6 address as `V6`.
fn contact() -> impl Strategy<Value = Contact> {
    let ip = prop_oneof![
        any::<[u8; 4]>().prop_map(|b| IpAddr::V4(Ipv4Addr::from(b))),
        any::<[u8; 16]>().prop_map(|b| {
            let v6 = Ipv6Addr::from(b);
            v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4)
        }),
    ];
    (any::<[u8; 20]>(), ip, any::<u16>()).prop_map(|(id, ip, port)| Contact {
        id: NodeId::from_bytes(id),
        addr: SocketAddr::new(ip, port),
    })
}

fn contacts(max: usize) -> impl Strategy<Value = Vec<Contact>> {
    prop::collection::vec(contact(), 0..=max)
}

fn dht_body() -> impl Strategy<Value = DhtBody> {
    prop_oneof![
        Just(DhtBody::Ping),
        Just(DhtBody::Pong),
        any::<[u8; 20]>().prop_map(|t| DhtBody::FindNode { target: NodeId::from_bytes(t) }),
        contacts(CONTACTS_PER_MESSAGE_MAX).prop_map(|contacts| DhtBody::Nodes { contacts }),
        any::<[u8; 20]>().prop_map(|k| DhtBody::GetProviders { key: Key::from_bytes(k) }),
        (contacts(PROVIDERS_PER_MESSAGE_MAX), contacts(CONTACTS_PER_MESSAGE_MAX))
            .prop_map(|(providers, closer)| DhtBody::Providers { providers, closer }),
        (any::<[u8; 20]>(), contact()).prop_map(|(k, provider)| DhtBody::AnnounceProvider {
            key: Key::from_bytes(k),
            provider
        }),
        any::<bool>().prop_map(|stored| DhtBody::AnnounceAck { stored }),
    ]
}

fn dht_message() -> impl Strategy<Value = DhtMessage> {
    (any::<u64>(), contact(), dht_body(), any::<bool>())
        .prop_map(|(tx, sender, body, read_only)| DhtMessage { tx, sender, body, read_only })
}

fn proof() -> impl Strategy<Value = AnnounceProof> {
    // Shape only (the decoder does not verify): certificates up to the longest allowed,
    // any expiry and signature.
    (
        prop::collection::vec(any::<u8>(), 0..=CERTIFICATE_BYTES_MAX),
        any::<u64>(),
        any::<[u8; 32]>(),
        any::<[u8; 32]>(),
    )
        .prop_map(|(certificate, expires, a, b)| {
            let mut signature = [0u8; 64];
            signature[..32].copy_from_slice(&a);
            signature[32..].copy_from_slice(&b);
            AnnounceProof { certificate, expires, signature }
        })
}

fn body_of(frame: &[u8]) -> &[u8] {
    let len = u32::from_le_bytes(frame[..4].try_into().unwrap()) as usize;
    assert_eq!(len, frame.len() - wire::FRAME_PREFIX_BYTES, "length prefix");
    &frame[wire::FRAME_PREFIX_BYTES..]
}

/// Every decoder on `bytes`: none may panic (the results are the other tests' business).
fn decode_everything(bytes: &[u8]) {
    let _ = wire::decode(bytes);
    let _ = decode_manifest(bytes);
    let _ = decode_resume(bytes);
    let _ = decode_dht_proved(bytes);
    let _ = decode_dht_table(bytes);
}

/// A change to a real encoding: overwrite, cut, or append.
#[derive(Debug, Clone)]
enum Edit {
    Set(usize, u8),
    Cut(usize),
    Append(Vec<u8>),
}

fn edits() -> impl Strategy<Value = Vec<Edit>> {
    let edit = prop_oneof![
        4 => (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Edit::Set(i, b)),
        1 => any::<usize>().prop_map(Edit::Cut),
        1 => prop::collection::vec(any::<u8>(), 1..16).prop_map(Edit::Append),
    ];
    prop::collection::vec(edit, 1..8)
}

fn apply(mut bytes: Vec<u8>, edits: &[Edit]) -> Vec<u8> {
    for e in edits {
        match e {
            Edit::Set(i, b) if !bytes.is_empty() => {
                let n = bytes.len();
                bytes[i % n] = *b;
            }
            Edit::Set(..) => {}
            Edit::Cut(i) => bytes.truncate(i % (bytes.len() + 1)),
            Edit::Append(tail) => bytes.extend_from_slice(tail),
        }
    }
    bytes
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn every_peer_message_round_trips(msg in message()) {
        let mut enc = Encoder::default();
        let frame = enc.frame(&msg).to_vec();
        prop_assert_eq!(wire::decode(body_of(&frame)), Ok(msg.clone()));
        if let Message::FileInfo(info) = &msg {
            prop_assert_eq!(enc.file_info_frame(info), &frame[..]);
        }
    }

    #[test]
    fn manifests_and_resume_states_round_trip(
        info in file_info(),
        path in ".{0,80}",
        mtime_ns in any::<i64>(),
        seed in any::<u8>(),
    ) {
        let path = std::path::PathBuf::from(format!("/{path}").replace('\0', "_"));
        let m = encode_manifest(&info, &path, mtime_ns);
        prop_assert_eq!(decode_manifest(&m), Ok((info.clone(), path, mtime_ns)));
        let bits: Vec<u8> =
            (0..(info.chunk_count() as usize).div_ceil(8)).map(|i| seed.wrapping_mul(i as u8)).collect();
        prop_assert_eq!(decode_resume(&encode_resume(&info, &bits)), Ok((info.clone(), bits.clone())));
        // One byte more or less than one bit per chunk is refused.
        let mut longer = bits.clone();
        longer.push(0);
        prop_assert!(decode_resume(&encode_resume(&info, &longer)).is_err());
    }

    #[test]
    fn every_dht_datagram_round_trips(msg in dht_message(), proof in prop::option::of(proof())) {
        let mut buf = Vec::new();
        encode_dht_proved(&msg, proof.as_ref(), &mut buf);
        if buf.len() <= DHT_DATAGRAM_MAX_BYTES {
            prop_assert_eq!(decode_dht_proved(&buf), Ok((msg.clone(), proof)));
            prop_assert_eq!(decode_dht(&buf), Ok(msg));
        } else {
            // Only a long proof with full lists exceeds the datagram budget; it is refused
            // whole, never cut.
            prop_assert!(proof.is_some());
            prop_assert!(decode_dht(&buf).is_err());
        }
    }

    #[test]
    fn routing_table_snapshots_round_trip(table in prop::collection::vec(contact(), 0..200)) {
        prop_assert_eq!(decode_dht_table(&encode_dht_table(&table)), Ok(table));
    }

    #[test]
    fn long_error_messages_are_cut_at_a_character_boundary(text in ".{1000,1100}") {
        let msg = Message::Error {
            code: ErrorCode::Io,
            message: text.clone(),
            file_id: None,
            chunk_index: 0,
        };
        let mut enc = Encoder::default();
        let Ok(Message::Error { message, .. }) = wire::decode(body_of(enc.frame(&msg))) else {
            panic!("an error message decodes");
        };
        prop_assert!(text.starts_with(&message));
        if text.len() <= ERROR_MESSAGE_MAX_BYTES {
            prop_assert_eq!(message, text);
        } else {
            // The longest whole-character prefix within the limit (a character is at most
            // four bytes).
            prop_assert!(message.len() <= ERROR_MESSAGE_MAX_BYTES);
            prop_assert!(message.len() + 4 > ERROR_MESSAGE_MAX_BYTES);
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic_a_decoder(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
        decode_everything(&bytes);
        let mut datagram = wire::DHT_MAGIC.to_vec();
        datagram.extend_from_slice(&bytes);
        decode_everything(&datagram);
    }

    #[test]
    fn edited_real_encodings_never_panic_a_decoder(
        msg in message(),
        dht in dht_message(),
        info in file_info(),
        edits in edits(),
    ) {
        let mut enc = Encoder::default();
        let body = body_of(enc.frame(&msg)).to_vec();
        let mut datagram = Vec::new();
        encode_dht_proved(&dht, None, &mut datagram);
        let bits = vec![0; (info.chunk_count() as usize).div_ceil(8)];
        for real in [
            body,
            datagram,
            encode_manifest(&info, std::path::Path::new("/srv/x"), 1),
            encode_resume(&info, &bits),
            encode_dht_table(&[dht.sender]),
        ] {
            decode_everything(&apply(real, &edits));
        }
    }
}
