//! The seed corpora of the fuzz targets (`fuzz/seeds/TARGET/NAME`), generated here from real
//! encodings: every wire message, manifests, resume states, DHT datagrams (one with a real
//! signed proof), DHT conversations replayed against the fuzzed node, certificates, the
//! three messages of a real handshake, and record streams.
//!
//! The test fails when the committed seeds differ from what this generator writes (an
//! encoding changed, or a seed was edited by hand); `FURYMESH_WRITE_SEEDS=1 cargo test
//! --test fuzz_seeds` rewrites them. Targets share their fixtures and input layouts with
//! this file (`fuzz/src/fixtures.rs`), so a seed drives its target exactly as recorded.

// The scripted DHT node's virtual time needs a base instant (`Instant` has no constructor
// but `now`), and the shared fixtures sign session certificates with the OS RNG; nothing
// recorded depends on either.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use std::collections::BTreeMap;
use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Instant;

use furymesh::crypto::{chunk_hash, sign_provider_record, FileId};
use furymesh::dht::{Contact, Dht, DhtBody, DhtMessage, Key, NodeId};
use furymesh::manifest::FileInfo;
use furymesh::wire::{
    self, decode_dht_proved, encode_dht, encode_dht_proved, encode_dht_table, encode_manifest,
    encode_resume, provider_addr_bytes, AnnounceProof, Encoder, ErrorCode, Message,
};

#[path = "../fuzz/src/fixtures.rs"]
#[allow(dead_code, unreachable_pub)]
mod fixtures;

use fixtures::{
    dht_contact, dht_op, dht_source, handshake_mode, signal_mode, Cursor, HELLO_MAC_BYTES,
};

/// target → seed name → bytes.
type Seeds = BTreeMap<&'static str, BTreeMap<String, Vec<u8>>>;

fn add(seeds: &mut Seeds, target: &'static str, name: &str, bytes: Vec<u8>) {
    let old = seeds.entry(target).or_default().insert(name.to_owned(), bytes);
    assert!(old.is_none(), "seed {target}/{name} generated twice");
}

fn manifest(chunks: u32, name: &str) -> FileInfo {
    let chunk_size = furymesh::config::CHUNK_SIZE_MIN_BYTES;
    let size = (chunks as u64 * chunk_size as u64).saturating_sub(u64::from(chunks > 1) * 100);
    let chunk_hashes: Vec<_> = (0..chunks).map(|i| chunk_hash(&i.to_le_bytes())).collect();
    FileInfo {
        file_id: FileId::from_manifest(size, chunk_size, &chunk_hashes),
        name: name.into(),
        size,
        chunk_size,
        creation_time: 1_700_000_000,
        chunk_hashes,
    }
}

fn wire_seeds(seeds: &mut Seeds) {
    let id = manifest(3, "x").file_id;
    let messages = [
        ("chunk_request", Message::ChunkRequest { file_id: id, chunk_index: 2, priority: 1 }),
        (
            "chunk_response",
            Message::ChunkResponse { file_id: id, chunk_index: 2, payload_len: 4096 },
        ),
        ("file_info_request", Message::FileInfoRequest { file_id: id }),
        ("file_info", Message::FileInfo(manifest(3, "disk.img"))),
        ("file_info_empty_file", Message::FileInfo(manifest(0, ""))),
        (
            "error",
            Message::Error {
                code: ErrorCode::ChunkOutOfRange,
                message: "chunk 9 of 3".into(),
                file_id: Some(id),
                chunk_index: 9,
            },
        ),
        (
            "error_without_file",
            Message::Error {
                code: ErrorCode::Overloaded,
                message: String::new(),
                file_id: None,
                chunk_index: 0,
            },
        ),
        ("bitfield_request", Message::BitfieldRequest { file_id: id }),
        ("bitfield_partial", Message::Bitfield { file_id: id, bits: Some(vec![0b101]) }),
        ("bitfield_complete", Message::Bitfield { file_id: id, bits: None }),
    ];
    let mut enc = Encoder::default();
    for (name, msg) in messages {
        let body = enc.frame(&msg)[wire::FRAME_PREFIX_BYTES..].to_vec();
        assert_eq!(wire::decode(&body), Ok(msg));
        add(seeds, "wire_message", name, body);
    }

    let (one, five, empty) = (manifest(1, "one"), manifest(5, "five.iso"), manifest(0, "empty"));
    for (name, info) in [("one_chunk", &one), ("five_chunks", &five), ("empty_file", &empty)] {
        let m = encode_manifest(
            info,
            Path::new(&format!("/srv/{}", info.name)),
            1_700_000_000_123_456_789,
        );
        assert!(wire::decode_manifest(&m).is_ok());
        add(seeds, "wire_manifest", name, m);
        let bits = vec![0x55; (info.chunk_count() as usize).div_ceil(8)];
        let bits: Vec<u8> = bits
            .into_iter()
            .enumerate()
            .map(|(i, b)| {
                // No bits past the last chunk: what `get` writes.
                let left = info.chunk_count() as usize - i * 8;
                if left < 8 {
                    b & ((1u8 << left) - 1)
                } else {
                    b
                }
            })
            .collect();
        let r = encode_resume(info, &bits);
        assert!(wire::decode_resume(&r).is_ok());
        add(seeds, "wire_resume", name, r);
    }

    let files = |parts: &[&[u8]]| -> Vec<u8> {
        let mut out = Vec::new();
        for p in parts {
            out.extend_from_slice(&(p.len() as u16).to_le_bytes());
            out.extend_from_slice(p);
        }
        out
    };
    let m1 = encode_manifest(&one, Path::new("/srv/one"), 1);
    let m5 = encode_manifest(&five, Path::new("/srv/five.iso"), 2);
    let m1_elsewhere = encode_manifest(&one, Path::new("/data/one-copy"), 3);
    add(seeds, "catalog", "two_files", files(&[&m1, &m5]));
    add(seeds, "catalog", "same_file_two_paths", files(&[&m1, &m1_elsewhere]));
    add(seeds, "catalog", "one_cut_short", files(&[&m5, &m1[..m1.len() / 2]]));
}

fn dht_message(from: u8, tx: u64, body: DhtBody) -> DhtMessage {
    DhtMessage { tx, sender: dht_contact(from), body, read_only: false }
}

fn dht_datagram_seeds(seeds: &mut Seeds) {
    let key = Key::from_bytes([9; 20]);
    let contacts: Vec<Contact> = (1..=20).map(dht_contact).collect();
    let bodies = [
        ("ping", DhtBody::Ping),
        ("pong", DhtBody::Pong),
        ("find_node", DhtBody::FindNode { target: NodeId::from_bytes([7; 20]) }),
        ("nodes", DhtBody::Nodes { contacts: contacts.clone() }),
        ("get_providers", DhtBody::GetProviders { key }),
        (
            "providers",
            DhtBody::Providers { providers: contacts[..10].to_vec(), closer: contacts.clone() },
        ),
        ("announce_provider", DhtBody::AnnounceProvider { key, provider: dht_contact(1) }),
        ("announce_ack", DhtBody::AnnounceAck { stored: true }),
    ];
    let mut buf = Vec::new();
    for (name, body) in bodies {
        encode_dht(&dht_message(1, 0x1234_5678_9abc, body), &mut buf);
        assert!(wire::decode_dht(&buf).is_ok());
        add(seeds, "dht_datagram", name, buf.clone());
    }
    // An announcement signed the way a node signs its own.
    let session = fixtures::server_session();
    let provider = Contact { id: session.node_id(), addr: dht_source(1) };
    let expires = fixtures::NOW + 3600;
    let signature = sign_provider_record(
        &session,
        key.as_bytes(),
        &provider_addr_bytes(provider.addr),
        expires,
    );
    let proof =
        AnnounceProof { certificate: session.certificate_bytes().to_vec(), expires, signature };
    let msg = DhtMessage {
        tx: 77,
        sender: provider,
        body: DhtBody::AnnounceProvider { key, provider },
        read_only: false,
    };
    encode_dht_proved(&msg, Some(&proof), &mut buf);
    assert_eq!(decode_dht_proved(&buf), Ok((msg, Some(proof))));
    add(seeds, "dht_datagram", "announce_provider_signed", buf.clone());
    add(seeds, "dht_datagram", "table", encode_dht_table(&contacts));
}

/// Writes `dht_engine` operations while applying them to the same node the target builds,
/// so replies can echo the transaction IDs the node really chose.
struct DhtScript {
    dht: Dht,
    now: Instant,
    bytes: Vec<u8>,
    ops: usize,
    /// What the node sent and nobody answered yet (the target drains it after every
    /// operation, as this script does).
    sent: Vec<(SocketAddr, DhtMessage)>,
}

impl DhtScript {
    fn new() -> Self {
        let (dht, now) = (fixtures::dht_node(), Instant::now());
        Self { dht, now, bytes: Vec::new(), ops: 0, sent: Vec::new() }
    }

    /// Applies whole operations and records them.
    fn op(&mut self, op: Vec<u8>) {
        let mut c = Cursor::new(&op);
        while !c.is_empty() {
            fixtures::dht_step(&mut self.dht, &mut self.now, &mut c).expect("whole operations");
            self.ops += 1;
            self.sent.extend(std::iter::from_fn(|| self.dht.poll_transmit()));
            while self.dht.poll_event().is_some() {}
        }
        self.bytes.extend_from_slice(&op);
    }

    fn datagram(&mut self, from: u8, msg: &DhtMessage) {
        let mut buf = Vec::new();
        encode_dht(msg, &mut buf);
        let mut op = vec![dht_op::DATAGRAM, from];
        op.extend_from_slice(&(buf.len() as u16).to_le_bytes());
        op.extend_from_slice(&buf);
        self.op(op);
    }

    fn command(&mut self, which: u8, id: [u8; 20]) {
        let mut op = vec![dht_op::COMMAND, which];
        op.extend_from_slice(&id);
        self.op(op);
    }

    fn advance(&mut self, step: u16) {
        let mut op = vec![dht_op::ADVANCE];
        op.extend_from_slice(&step.to_le_bytes());
        self.op(op);
    }

    /// Answers every request the node has queued, as the contact at that address would:
    /// `Nodes` with `fresh` contacts, one provider, acknowledgements.
    fn answer(&mut self, fresh: &[u8]) {
        for (to, req) in std::mem::take(&mut self.sent) {
            let from = (0..=255u8).find(|&b| dht_source(b) == to).expect("a scripted peer");
            let body = match req.body {
                DhtBody::Ping => DhtBody::Pong,
                DhtBody::FindNode { .. } => {
                    DhtBody::Nodes { contacts: fresh.iter().map(|&b| dht_contact(b)).collect() }
                }
                DhtBody::GetProviders { .. } => DhtBody::Providers {
                    providers: vec![dht_contact(200)],
                    closer: fresh.iter().map(|&b| dht_contact(b)).collect(),
                },
                DhtBody::AnnounceProvider { .. } => DhtBody::AnnounceAck { stored: true },
                _ => continue,
            };
            self.datagram(from, &dht_message(from, req.tx, body));
        }
    }

    fn finish(self) -> Vec<u8> {
        assert!(self.ops <= 512, "the target stops after 512 operations");
        self.bytes
    }
}

fn dht_engine_seeds(seeds: &mut Seeds) {
    let key = Key::from_bytes([9; 20]);
    let mut s = DhtScript::new();
    s.datagram(3, &dht_message(3, 1, DhtBody::Ping));
    s.datagram(4, &dht_message(4, 2, DhtBody::FindNode { target: NodeId::from_bytes([4; 20]) }));
    s.datagram(5, &dht_message(5, 3, DhtBody::GetProviders { key }));
    let provider = dht_contact(6);
    s.datagram(6, &dht_message(6, 4, DhtBody::AnnounceProvider { key, provider }));
    s.datagram(7, &DhtMessage { read_only: true, ..dht_message(7, 5, DhtBody::Ping) });
    add(seeds, "dht_engine", "requests", s.finish());

    // Restore 20 contacts, then answer the bootstrap lookup for three rounds.
    let mut s = DhtScript::new();
    s.command(5, std::array::from_fn(|i| i as u8 + 1));
    for round in 0..3u8 {
        s.answer(&(0..8).map(|i| 30 + round * 8 + i).collect::<Vec<_>>());
        s.advance(4);
    }
    let bootstrapped = s.bytes.clone();
    add(seeds, "dht_engine", "bootstrap_lookup", s.finish());

    // From there: find providers, announce, and let requests time out.
    for (name, which) in [("find_providers", 1u8), ("announce", 2)] {
        let mut s = DhtScript::new();
        s.op(bootstrapped.clone());
        s.command(which, [9; 20]);
        for round in 0..3u8 {
            s.advance(70);
            s.answer(&(0..6).map(|i| 100 + round * 6 + i).collect::<Vec<_>>());
        }
        s.advance(200);
        add(seeds, "dht_engine", name, s.finish());
    }

    let mut s = DhtScript::new();
    let table = encode_dht_table(&(1..=40).map(dht_contact).collect::<Vec<_>>());
    let mut op = vec![dht_op::RESTORE];
    op.extend_from_slice(&(table.len() as u16).to_le_bytes());
    op.extend_from_slice(&table);
    s.op(op);
    s.advance(100);
    add(seeds, "dht_engine", "table_restore", s.finish());
}

fn crypto_seeds(seeds: &mut Seeds) {
    for (name, session) in
        [("alice", fixtures::server_session()), ("bob", fixtures::client_session())]
    {
        add(seeds, "certificate", name, session.certificate_bytes().to_vec());
    }
    let [hello, server_hello, finish] = fixtures::transcript();
    let with_mode = |mode: u8, message: &[u8]| [&[mode][..], message].concat();
    let unmaced = &hello[..hello.len() - HELLO_MAC_BYTES];
    add(seeds, "handshake", "client_hello", with_mode(handshake_mode::CLIENT_HELLO, &hello));
    add(
        seeds,
        "handshake",
        "client_hello_unmaced",
        with_mode(handshake_mode::CLIENT_HELLO_MACED, unmaced),
    );
    add(seeds, "handshake", "server_hello", with_mode(handshake_mode::SERVER_HELLO, &server_hello));
    add(seeds, "handshake", "client_finish", with_mode(handshake_mode::CLIENT_FINISH, &finish));

    // The four signaling messages, each under the mode of the side that parses it.
    let [hello, reply, offer, answer] = fixtures::signal_messages();
    add(seeds, "signal", "hello", with_mode(signal_mode::HELLO, hello));
    add(seeds, "signal", "reply", with_mode(signal_mode::REPLY, reply));
    add(seeds, "signal", "offer", with_mode(signal_mode::OFFER, offer));
    add(seeds, "signal", "answer", with_mode(signal_mode::ANSWER, answer));

    // Record streams: `records_max, bytes_max` then operations (see the record target).
    let genuine = |kind: u8, text: &[u8]| {
        [&[kind << 2][..], &(text.len() as u16).to_le_bytes(), text].concat()
    };
    let mut ratchet = vec![2, 4];
    for (i, text) in [&b""[..], b"manifest", b"chunk payload bytes", b"bye"].iter().enumerate() {
        ratchet.extend(genuine(i as u8 % 3, text));
    }
    add(seeds, "record", "genuine_across_rekeys", ratchet.clone());
    let mut tampered = ratchet.clone();
    tampered.extend([1 << 2 | 1, 5, 0]);
    tampered.extend_from_slice(b"hello");
    tampered.extend(300u16.to_le_bytes());
    tampered.extend(genuine(0, b"after"));
    add(seeds, "record", "tampered_then_poisoned", tampered);
    let mut garbage = vec![7, 255, 2 << 2 | 2];
    garbage.extend([3; 32]);
    garbage.extend(5u32.to_le_bytes());
    garbage.extend(4u16.to_le_bytes());
    garbage.extend([0xAA; 16]);
    garbage.extend(b"junk");
    add(seeds, "record", "garbage", garbage);
    let mut wrong_length = vec![7, 255];
    wrong_length.extend(genuine(0, b"ok"));
    wrong_length.push(3);
    wrong_length.extend(&genuine(0, b"off by one")[1..]);
    add(seeds, "record", "wrong_length", wrong_length);
}

/// `peer_server` inputs: request frames as a client sends them (plaintext records), in
/// steps of at most 255 bytes.
fn peer_server_seeds(seeds: &mut Seeds) {
    let served = fixtures::served_file();
    let id = served.file_id;
    let other = manifest(1, "x").file_id;
    let mut enc = Encoder::default();
    let mut steps = |msgs: &[Message]| {
        let stream: Vec<u8> = msgs.iter().flat_map(|m| enc.frame(m).to_vec()).collect();
        let mut out = Vec::new();
        for piece in stream.chunks(100) {
            out.push(piece.len() as u8);
            out.extend_from_slice(piece);
        }
        out
    };
    let download = steps(&[
        Message::FileInfoRequest { file_id: id },
        Message::BitfieldRequest { file_id: id },
        Message::ChunkRequest { file_id: id, chunk_index: 0, priority: 0 },
        Message::ChunkRequest { file_id: id, chunk_index: 4, priority: 0 },
    ]);
    add(seeds, "peer_server", "download", download);
    let refusals = steps(&[
        Message::ChunkRequest { file_id: id, chunk_index: 5, priority: 0 },
        Message::FileInfoRequest { file_id: other },
        Message::BitfieldRequest { file_id: other },
        Message::FileInfo(served),
    ]);
    add(seeds, "peer_server", "refusals", refusals);
    let mut idle = steps(&[Message::FileInfoRequest { file_id: id }]);
    idle.extend([0, 200, 0, 200]);
    add(seeds, "peer_server", "idle_timeout", idle);
}

fn generate() -> Seeds {
    let mut seeds = Seeds::new();
    wire_seeds(&mut seeds);
    dht_datagram_seeds(&mut seeds);
    dht_engine_seeds(&mut seeds);
    crypto_seeds(&mut seeds);
    peer_server_seeds(&mut seeds);
    seeds
}

fn seeds_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds")
}

fn read_dir(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let Ok(rd) = fs::read_dir(dir) else { return BTreeMap::new() };
    rd.map(|e| {
        let e = e.unwrap();
        (e.file_name().into_string().unwrap(), fs::read(e.path()).unwrap())
    })
    .collect()
}

#[test]
fn committed_fuzz_seeds_are_what_the_generator_writes() {
    let seeds = generate();
    let root = seeds_dir();
    if std::env::var_os("FURYMESH_WRITE_SEEDS").is_some() {
        let _ = fs::remove_dir_all(&root);
        for (target, files) in &seeds {
            fs::create_dir_all(root.join(target)).unwrap();
            for (name, bytes) in files {
                fs::write(root.join(target).join(name), bytes).unwrap();
            }
        }
    }
    let targets: Vec<String> = fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(targets.len(), seeds.len(), "fuzz/seeds has {targets:?}");
    for (target, want) in &seeds {
        let have = read_dir(&root.join(target));
        assert_eq!(
            have.keys().collect::<Vec<_>>(),
            want.keys().collect::<Vec<_>>(),
            "fuzz/seeds/{target}: rerun with FURYMESH_WRITE_SEEDS=1"
        );
        for (name, bytes) in want {
            assert!(
                have[name] == *bytes,
                "fuzz/seeds/{target}/{name} is not what the generator writes: rerun with \
                 FURYMESH_WRITE_SEEDS=1"
            );
        }
    }
}

#[test]
fn every_fuzz_target_has_seeds() {
    let manifest =
        fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/Cargo.toml")).unwrap();
    let seeds = generate();
    let targets: Vec<&str> = manifest
        .lines()
        .filter_map(|l| l.strip_prefix("name = \""))
        .filter_map(|l| l.strip_suffix('"'))
        .filter(|name| *name != "furymesh-fuzz")
        .collect();
    assert!(!targets.is_empty());
    for t in targets {
        assert!(seeds.get(t).is_some_and(|s| !s.is_empty()), "fuzz target {t} has no seeds");
    }
}
