//! Encode and decode cost of the whitepaper's messages: FlatBuffers vs JSON vs protobuf.
//!
//! Every format goes from the same owned value to bytes and back to an equal owned value, so
//! the comparison includes what a real receiver pays:
//!
//! - `flatbuffers`: for ChunkRequest, ChunkResponse and FileInfo the crate's real path,
//!   `wire::Encoder::frame` and `wire::decode` (verifier with `wire::verifier_options`, hex
//!   file-ID parsing, and for FileInfo the manifest check, which hashes all chunk hashes).
//!   PeerInfo and TransferStatus have no owned type in `furymesh::wire` yet, so they are built
//!   and verified here with the crate's own flatc-generated code (included by path below,
//!   same verifier options).
//! - `flatbuffers_view`: verify, then read every field in place without building owned
//!   values: the zero-copy access FlatBuffers is designed for (and what the whitepaper's
//!   claim assumes). Not a full decode: no hex parsing, no manifest check.
//!   `flatbuffers_view_unverified` skips the verifier (`root_unchecked`, bench only) so the
//!   difference is the verifier's cost.
//! - `json`: `serde_json` with borrowed strings where possible, file IDs and chunk hashes as
//!   hex strings (JSON has no bytes type; the whitepaper's `checksums:[string]`).
//! - `prost`: protobuf through hand-written `#[derive(prost::Message)]` structs with the
//!   schema's fields and field order (no protoc); chunk hashes as one `bytes` field.
//!
//! JSON and prost decodes end with the same checks as `wire::decode` (file-ID parse,
//! `FileInfo::check`), so all three produce the same guarantees. Each format's size is printed
//! as `size <message> <format> <n> bytes` before its measurements. Run with
//! `cargo bench --bench wire` (about 2 minutes on the shared 2-core machine); results and
//! analysis in docs/microbench-results.md.

use std::borrow::Cow;
use std::fmt::Debug;
use std::hint::black_box;
use std::time::Duration;

use criterion::measurement::WallTime;
use criterion::{criterion_group, criterion_main, BenchmarkGroup, BenchmarkId, Criterion};
use flatbuffers::{FlatBufferBuilder, WIPOffset};
use prost::Message as _;
use serde::ser::SerializeSeq;
use serde::{Deserialize, Serialize};

use furymesh::crypto::{chunk_hash, ChunkHash, FileId, DIGEST_BYTES};
use furymesh::manifest::FileInfo;
use furymesh::wire::{self, Message, FRAME_PREFIX_BYTES};

// The crate's flatc output (src/wire/generated, kept current by scripts/gen-flatbuffers),
// compiled into this bench so PeerInfo/TransferStatus and the zero-copy view use exactly the
// generated code the node uses. Not formatted, not linted, like in src/wire/mod.rs.
#[rustfmt::skip]
#[allow(unsafe_code, unreachable_pub, unused_qualifications, clippy::all, clippy::pedantic)]
#[allow(clippy::nursery, clippy::undocumented_unsafe_blocks, clippy::missing_safety_doc)]
#[allow(dead_code, unused_imports)]
#[path = "../src/wire/generated/furymesh_generated.rs"]
mod generated;
use generated::furymesh as fb;

/// Chunks in the FileInfo sample: a 1 GiB file at 512 KiB chunks.
const FILE_INFO_CHUNKS: u32 = 2048;
/// The chunk size of the samples: the project's default.
const CHUNK_BYTES: u32 = furymesh::config::CHUNK_SIZE_DEFAULT_BYTES;
/// Files a PeerInfo advertises in the sample.
const PEER_FILES: usize = 32;

// ---------------------------------------------------------------------------------------
// Sample values

/// A whitepaper PeerInfo as an owned value (no type in `furymesh::wire` yet).
#[derive(Debug, Clone, PartialEq, Eq)]
struct PeerInfo {
    /// 160-bit node ID as 40 hex characters.
    peer_id: String,
    address: String,
    available_files: Vec<FileId>,
    connection_quality: u8,
}

/// A whitepaper TransferStatus as an owned value (no type in `furymesh::wire` yet).
#[derive(Debug, Clone, PartialEq, Eq)]
struct TransferStatus {
    file_id: FileId,
    chunks_received: u32,
    total_chunks: u32,
    transfer_rate: u32,
    eta_seconds: u32,
}

fn id(seed: u8) -> FileId {
    FileId(chunk_hash(&[seed]))
}

fn chunk_request() -> Message {
    Message::ChunkRequest { file_id: id(1), chunk_index: 1234, priority: 1 }
}

fn chunk_response() -> Message {
    Message::ChunkResponse { file_id: id(1), chunk_index: 1234, payload_len: CHUNK_BYTES }
}

/// A valid manifest (passes `FileInfo::check`) of a 1 GiB file.
fn file_info() -> Message {
    let chunk_hashes: Vec<ChunkHash> =
        (0..FILE_INFO_CHUNKS).map(|i| chunk_hash(&i.to_le_bytes())).collect();
    let size = FILE_INFO_CHUNKS as u64 * CHUNK_BYTES as u64;
    Message::FileInfo(FileInfo {
        file_id: FileId::from_manifest(size, CHUNK_BYTES, &chunk_hashes),
        name: "ubuntu-26.04-desktop-amd64.iso".into(),
        size,
        chunk_size: CHUNK_BYTES,
        creation_time: 1_795_000_000,
        chunk_hashes,
    })
}

fn peer_info() -> PeerInfo {
    PeerInfo {
        peer_id: hex::encode(&id(2).0[..20]),
        address: "198.51.100.23:7420".into(),
        available_files: (0..PEER_FILES).map(|i| id(i as u8)).collect(),
        connection_quality: 200,
    }
}

fn transfer_status() -> TransferStatus {
    TransferStatus {
        file_id: id(1),
        chunks_received: 1234,
        total_chunks: FILE_INFO_CHUNKS,
        transfer_rate: 118_000_000,
        eta_seconds: 7,
    }
}

// ---------------------------------------------------------------------------------------
// The codec interface every format implements

/// One wire format for values of type `T`.
trait Codec<T> {
    /// Name in the benchmark ID.
    const NAME: &'static str;
    /// Encodes `v`; the bytes live in the codec's reused buffer until the next call.
    fn encode(&mut self, v: &T) -> &[u8];
    /// Decodes and validates bytes produced by `encode`.
    fn decode(bytes: &[u8]) -> T;
}

/// Hex of a file ID on the stack (no allocation).
fn hex_id(id: &FileId) -> [u8; 64] {
    let mut out = [0u8; 64];
    hex::encode_to_slice(id.0, &mut out).expect("64 bytes for a 32-byte digest");
    out
}

fn as_str(hex: &[u8]) -> &str {
    std::str::from_utf8(hex).expect("hex is ASCII")
}

fn parse_id(s: &str) -> FileId {
    s.parse().expect("valid file ID")
}

// ---------------------------------------------------------------------------------------
// FlatBuffers

/// The crate's real path: `Encoder::frame` (body after the 4-byte prefix) and `wire::decode`.
#[derive(Default)]
struct Flat(wire::Encoder);

impl Codec<Message> for Flat {
    const NAME: &'static str = "flatbuffers";
    fn encode(&mut self, v: &Message) -> &[u8] {
        &self.0.frame(v)[FRAME_PREFIX_BYTES..]
    }
    fn decode(bytes: &[u8]) -> Message {
        wire::decode(bytes).expect("valid frame")
    }
}

/// FlatBuffers built and verified in this bench with the generated code, for the messages
/// `furymesh::wire` does not expose yet. Reuses its builder like `wire::Encoder`.
struct FlatLocal {
    fbb: FlatBufferBuilder<'static>,
    offsets: Vec<WIPOffset<&'static str>>,
}

impl Default for FlatLocal {
    fn default() -> Self {
        Self { fbb: FlatBufferBuilder::with_capacity(1024), offsets: Vec::new() }
    }
}

/// Verifies a Message body with the crate's verifier limits.
fn verified(bytes: &[u8]) -> fb::Message<'_> {
    flatbuffers::root_with_opts::<fb::Message>(&wire::verifier_options(bytes.len()), bytes)
        .expect("verifies")
}

impl Codec<PeerInfo> for FlatLocal {
    const NAME: &'static str = "flatbuffers";
    fn encode(&mut self, v: &PeerInfo) -> &[u8] {
        let fbb = &mut self.fbb;
        fbb.reset();
        self.offsets.clear();
        for f in &v.available_files {
            self.offsets.push(fbb.create_string(as_str(&hex_id(f))));
        }
        let files = fbb.create_vector(&self.offsets);
        let peer_id = fbb.create_string(&v.peer_id);
        let address = fbb.create_string(&v.address);
        let pi = fb::PeerInfo::create(
            fbb,
            &fb::PeerInfoArgs {
                peer_id: Some(peer_id),
                address: Some(address),
                available_files: Some(files),
                connection_quality: v.connection_quality,
            },
        );
        let root = fb::Message::create(
            fbb,
            &fb::MessageArgs {
                type_: fb::MessageType::PEER_INFO,
                peer_info: Some(pi),
                ..Default::default()
            },
        );
        fbb.finish_minimal(root);
        fbb.finished_data()
    }
    fn decode(bytes: &[u8]) -> PeerInfo {
        let m = verified(bytes);
        assert_eq!(m.type_(), fb::MessageType::PEER_INFO);
        let p = m.peer_info().expect("peer_info");
        PeerInfo {
            peer_id: p.peer_id().expect("peer_id").to_owned(),
            address: p.address().expect("address").to_owned(),
            available_files: p
                .available_files()
                .map(|v| v.iter().map(parse_id).collect())
                .unwrap_or_default(),
            connection_quality: p.connection_quality(),
        }
    }
}

impl Codec<TransferStatus> for FlatLocal {
    const NAME: &'static str = "flatbuffers";
    fn encode(&mut self, v: &TransferStatus) -> &[u8] {
        let fbb = &mut self.fbb;
        fbb.reset();
        let file_id = fbb.create_string(as_str(&hex_id(&v.file_id)));
        let ts = fb::TransferStatus::create(
            fbb,
            &fb::TransferStatusArgs {
                file_id: Some(file_id),
                chunks_received: v.chunks_received,
                total_chunks: v.total_chunks,
                transfer_rate: v.transfer_rate,
                eta_seconds: v.eta_seconds,
            },
        );
        let root = fb::Message::create(
            fbb,
            &fb::MessageArgs {
                type_: fb::MessageType::TRANSFER_STATUS,
                transfer_status: Some(ts),
                ..Default::default()
            },
        );
        fbb.finish_minimal(root);
        fbb.finished_data()
    }
    fn decode(bytes: &[u8]) -> TransferStatus {
        let m = verified(bytes);
        assert_eq!(m.type_(), fb::MessageType::TRANSFER_STATUS);
        let t = m.transfer_status().expect("transfer_status");
        TransferStatus {
            file_id: parse_id(t.file_id().expect("file_id")),
            chunks_received: t.chunks_received(),
            total_chunks: t.total_chunks(),
            transfer_rate: t.transfer_rate(),
            eta_seconds: t.eta_seconds(),
        }
    }
}

/// Zero-copy access: verify, then touch every field in place (string lengths, scalars, the
/// hash bytes) and fold them into a number so nothing is optimised away. Allocates nothing.
fn view(bytes: &[u8]) -> u64 {
    view_fields(verified(bytes))
}

/// The same access without the verifier, only to measure what verification costs
/// (`view` minus this). The node never does this: STYLE.md requires `root_with_opts`.
#[allow(unsafe_code)]
fn view_unverified(bytes: &[u8]) -> u64 {
    // SAFETY: `bytes` is always a body this bench just built with the generated builder
    // and that `view` has verified once before the measurement (see `bench_view`).
    let m = unsafe { flatbuffers::root_unchecked::<fb::Message>(bytes) };
    view_fields(m)
}

/// Reads every field of the table the message carries.
fn view_fields(m: fb::Message<'_>) -> u64 {
    let len = |s: Option<&str>| s.map_or(0, |s| s.len() as u64);
    match m.type_() {
        fb::MessageType::CHUNK_REQUEST => {
            let r = m.chunk_request().expect("chunk_request");
            len(r.file_id()) + r.chunk_index() as u64 + r.priority() as u64
        }
        fb::MessageType::CHUNK_RESPONSE => {
            let r = m.chunk_response().expect("chunk_response");
            len(r.file_id()) + r.chunk_index() as u64 + r.payload_len() as u64
        }
        fb::MessageType::FILE_INFO => {
            let f = m.file_info().expect("file_info");
            let hashes = f.chunk_hashes().map_or(&[][..], |v| v.bytes());
            len(f.file_id())
                + len(f.name())
                + f.size()
                + f.chunk_count() as u64
                + f.chunk_size() as u64
                + f.creation_time() as u64
                + hashes.len() as u64
                + hashes.last().copied().unwrap_or_default() as u64
        }
        fb::MessageType::PEER_INFO => {
            let p = m.peer_info().expect("peer_info");
            let files = p.available_files().map_or(0, |v| v.iter().map(|s| s.len() as u64).sum());
            len(p.peer_id()) + len(p.address()) + files + p.connection_quality() as u64
        }
        fb::MessageType::TRANSFER_STATUS => {
            let t = m.transfer_status().expect("transfer_status");
            len(t.file_id())
                + t.chunks_received() as u64
                + t.total_chunks() as u64
                + t.transfer_rate() as u64
                + t.eta_seconds() as u64
        }
        other => panic!("unexpected type {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------
// JSON (serde_json)

/// The schema's `Message` envelope: a type tag plus the one table that is present.
/// `H` is the chunk-hash list: [`HexList`] to encode, `Vec<&str>` to decode (borrowed).
#[derive(Serialize, Deserialize)]
struct JsonMessage<'a, H> {
    #[serde(rename = "type")]
    kind: u8,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    chunk_request: Option<JsonChunkRequest<'a>>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    chunk_response: Option<JsonChunkResponse<'a>>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    file_info: Option<JsonFileInfo<'a, H>>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    peer_info: Option<JsonPeerInfo<'a>>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    transfer_status: Option<JsonTransferStatus<'a>>,
}

impl<H> JsonMessage<'_, H> {
    fn empty(kind: u8) -> Self {
        Self {
            kind,
            chunk_request: None,
            chunk_response: None,
            file_info: None,
            peer_info: None,
            transfer_status: None,
        }
    }
}

#[derive(Serialize, Deserialize)]
struct JsonChunkRequest<'a> {
    file_id: &'a str,
    chunk_index: u32,
    priority: u8,
}

#[derive(Serialize, Deserialize)]
struct JsonChunkResponse<'a> {
    file_id: &'a str,
    chunk_index: u32,
    payload_len: u32,
}

#[derive(Serialize, Deserialize)]
struct JsonFileInfo<'a, H> {
    file_id: &'a str,
    #[serde(borrow)]
    name: Cow<'a, str>,
    size: u64,
    chunk_count: u32,
    chunk_size: u32,
    creation_time: i64,
    chunk_hashes: H,
}

#[derive(Serialize, Deserialize)]
struct JsonPeerInfo<'a> {
    #[serde(borrow)]
    peer_id: Cow<'a, str>,
    #[serde(borrow)]
    address: Cow<'a, str>,
    /// Hex file IDs; `Cow` because encoding produces them and decoding borrows them.
    #[serde(borrow)]
    available_files: Vec<Cow<'a, str>>,
    connection_quality: u8,
}

#[derive(Serialize, Deserialize)]
struct JsonTransferStatus<'a> {
    file_id: &'a str,
    chunks_received: u32,
    total_chunks: u32,
    transfer_rate: u32,
    eta_seconds: u32,
}

/// Serializes chunk hashes as a JSON array of hex strings without allocating them.
struct HexList<'a>(&'a [ChunkHash]);

impl Serialize for HexList<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        for h in self.0 {
            let mut hex = [0u8; 2 * DIGEST_BYTES];
            hex::encode_to_slice(h, &mut hex).expect("64 bytes for a 32-byte digest");
            seq.serialize_element(as_str(&hex))?;
        }
        seq.end()
    }
}

/// Decoding side of the chunk-hash list: borrowed hex strings.
type HexStrs<'a> = Vec<&'a str>;

#[derive(Default)]
struct Json(Vec<u8>);

impl Json {
    fn write<H: Serialize>(&mut self, m: &JsonMessage<'_, H>) -> &[u8] {
        self.0.clear();
        serde_json::to_writer(&mut self.0, m).expect("serializes");
        &self.0
    }
}

impl Codec<Message> for Json {
    const NAME: &'static str = "json";
    fn encode(&mut self, v: &Message) -> &[u8] {
        match v {
            Message::ChunkRequest { file_id, chunk_index, priority } => {
                let hex = hex_id(file_id);
                let mut m = JsonMessage::<HexList<'_>>::empty(0);
                m.chunk_request = Some(JsonChunkRequest {
                    file_id: as_str(&hex),
                    chunk_index: *chunk_index,
                    priority: *priority,
                });
                self.write(&m)
            }
            Message::ChunkResponse { file_id, chunk_index, payload_len } => {
                let hex = hex_id(file_id);
                let mut m = JsonMessage::<HexList<'_>>::empty(1);
                m.chunk_response = Some(JsonChunkResponse {
                    file_id: as_str(&hex),
                    chunk_index: *chunk_index,
                    payload_len: *payload_len,
                });
                self.write(&m)
            }
            Message::FileInfo(f) => {
                let hex = hex_id(&f.file_id);
                let mut m = JsonMessage::empty(2);
                m.file_info = Some(JsonFileInfo {
                    file_id: as_str(&hex),
                    name: Cow::Borrowed(&f.name),
                    size: f.size,
                    chunk_count: f.chunk_count(),
                    chunk_size: f.chunk_size,
                    creation_time: f.creation_time,
                    chunk_hashes: HexList(&f.chunk_hashes),
                });
                self.write(&m)
            }
            other => unimplemented!("not benchmarked: {other:?}"),
        }
    }
    fn decode(bytes: &[u8]) -> Message {
        let m: JsonMessage<'_, HexStrs<'_>> = serde_json::from_slice(bytes).expect("valid JSON");
        match m.kind {
            0 => {
                let r = m.chunk_request.expect("chunk_request");
                Message::ChunkRequest {
                    file_id: parse_id(r.file_id),
                    chunk_index: r.chunk_index,
                    priority: r.priority,
                }
            }
            1 => {
                let r = m.chunk_response.expect("chunk_response");
                Message::ChunkResponse {
                    file_id: parse_id(r.file_id),
                    chunk_index: r.chunk_index,
                    payload_len: r.payload_len,
                }
            }
            2 => {
                let f = m.file_info.expect("file_info");
                assert_eq!(f.chunk_hashes.len(), f.chunk_count as usize);
                let chunk_hashes = f
                    .chunk_hashes
                    .iter()
                    .map(|s| {
                        let mut h = [0u8; DIGEST_BYTES];
                        hex::decode_to_slice(s, &mut h).expect("hex chunk hash");
                        h
                    })
                    .collect();
                let info = FileInfo {
                    file_id: parse_id(f.file_id),
                    name: f.name.into_owned(),
                    size: f.size,
                    chunk_size: f.chunk_size,
                    creation_time: f.creation_time,
                    chunk_hashes,
                };
                info.check().expect("authentic manifest");
                Message::FileInfo(info)
            }
            other => panic!("unexpected type {other}"),
        }
    }
}

impl Codec<PeerInfo> for Json {
    const NAME: &'static str = "json";
    fn encode(&mut self, v: &PeerInfo) -> &[u8] {
        let mut m = JsonMessage::<HexList<'_>>::empty(3);
        m.peer_info = Some(JsonPeerInfo {
            peer_id: Cow::Borrowed(&v.peer_id),
            address: Cow::Borrowed(&v.address),
            available_files: v.available_files.iter().map(|f| Cow::Owned(f.to_hex())).collect(),
            connection_quality: v.connection_quality,
        });
        self.write(&m)
    }
    fn decode(bytes: &[u8]) -> PeerInfo {
        let m: JsonMessage<'_, HexStrs<'_>> = serde_json::from_slice(bytes).expect("valid JSON");
        assert_eq!(m.kind, 3);
        let p = m.peer_info.expect("peer_info");
        PeerInfo {
            peer_id: p.peer_id.into_owned(),
            address: p.address.into_owned(),
            available_files: p.available_files.iter().map(|s| parse_id(s)).collect(),
            connection_quality: p.connection_quality,
        }
    }
}

impl Codec<TransferStatus> for Json {
    const NAME: &'static str = "json";
    fn encode(&mut self, v: &TransferStatus) -> &[u8] {
        let hex = hex_id(&v.file_id);
        let mut m = JsonMessage::<HexList<'_>>::empty(4);
        m.transfer_status = Some(JsonTransferStatus {
            file_id: as_str(&hex),
            chunks_received: v.chunks_received,
            total_chunks: v.total_chunks,
            transfer_rate: v.transfer_rate,
            eta_seconds: v.eta_seconds,
        });
        self.write(&m)
    }
    fn decode(bytes: &[u8]) -> TransferStatus {
        let m: JsonMessage<'_, HexStrs<'_>> = serde_json::from_slice(bytes).expect("valid JSON");
        assert_eq!(m.kind, 4);
        let t = m.transfer_status.expect("transfer_status");
        TransferStatus {
            file_id: parse_id(t.file_id),
            chunks_received: t.chunks_received,
            total_chunks: t.total_chunks,
            transfer_rate: t.transfer_rate,
            eta_seconds: t.eta_seconds,
        }
    }
}

// ---------------------------------------------------------------------------------------
// Protocol Buffers (prost), hand-written from schemas/furymesh.fbs: same fields, tags in
// schema order. File IDs stay hex strings as in the schema; chunk hashes are one `bytes`.

#[derive(Clone, PartialEq, prost::Message)]
struct PbMessage {
    #[prost(int32, tag = "1")]
    kind: i32,
    #[prost(message, optional, tag = "2")]
    chunk_request: Option<PbChunkRequest>,
    #[prost(message, optional, tag = "3")]
    chunk_response: Option<PbChunkResponse>,
    #[prost(message, optional, tag = "4")]
    file_info: Option<PbFileInfo>,
    #[prost(message, optional, tag = "5")]
    peer_info: Option<PbPeerInfo>,
    #[prost(message, optional, tag = "6")]
    transfer_status: Option<PbTransferStatus>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct PbChunkRequest {
    #[prost(string, tag = "1")]
    file_id: String,
    #[prost(uint32, tag = "2")]
    chunk_index: u32,
    #[prost(uint32, tag = "3")]
    priority: u32,
}

#[derive(Clone, PartialEq, prost::Message)]
struct PbChunkResponse {
    #[prost(string, tag = "1")]
    file_id: String,
    #[prost(uint32, tag = "2")]
    chunk_index: u32,
    #[prost(uint32, tag = "5")]
    payload_len: u32,
}

#[derive(Clone, PartialEq, prost::Message)]
struct PbFileInfo {
    #[prost(string, tag = "1")]
    file_id: String,
    #[prost(string, tag = "2")]
    name: String,
    #[prost(uint64, tag = "3")]
    size: u64,
    #[prost(uint32, tag = "4")]
    chunk_count: u32,
    #[prost(uint32, tag = "5")]
    chunk_size: u32,
    #[prost(int64, tag = "6")]
    creation_time: i64,
    #[prost(bytes = "vec", tag = "8")]
    chunk_hashes: Vec<u8>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct PbPeerInfo {
    #[prost(string, tag = "1")]
    peer_id: String,
    #[prost(string, tag = "2")]
    address: String,
    #[prost(string, repeated, tag = "3")]
    available_files: Vec<String>,
    #[prost(uint32, tag = "4")]
    connection_quality: u32,
}

#[derive(Clone, PartialEq, prost::Message)]
struct PbTransferStatus {
    #[prost(string, tag = "1")]
    file_id: String,
    #[prost(uint32, tag = "2")]
    chunks_received: u32,
    #[prost(uint32, tag = "3")]
    total_chunks: u32,
    #[prost(uint32, tag = "4")]
    transfer_rate: u32,
    #[prost(uint32, tag = "5")]
    eta_seconds: u32,
}

/// prost encodes from its own owned structs, so encoding first builds one from the domain
/// value (hex strings, a copy of the hashes): that conversion is part of the cost.
#[derive(Default)]
struct Prost(Vec<u8>);

impl Prost {
    fn write(&mut self, m: &PbMessage) -> &[u8] {
        self.0.clear();
        m.encode(&mut self.0).expect("Vec grows");
        &self.0
    }
}

impl Codec<Message> for Prost {
    const NAME: &'static str = "prost";
    fn encode(&mut self, v: &Message) -> &[u8] {
        let mut m = PbMessage::default();
        match v {
            Message::ChunkRequest { file_id, chunk_index, priority } => {
                m.kind = 0;
                m.chunk_request = Some(PbChunkRequest {
                    file_id: file_id.to_hex(),
                    chunk_index: *chunk_index,
                    priority: *priority as u32,
                });
            }
            Message::ChunkResponse { file_id, chunk_index, payload_len } => {
                m.kind = 1;
                m.chunk_response = Some(PbChunkResponse {
                    file_id: file_id.to_hex(),
                    chunk_index: *chunk_index,
                    payload_len: *payload_len,
                });
            }
            Message::FileInfo(f) => {
                m.kind = 2;
                m.file_info = Some(PbFileInfo {
                    file_id: f.file_id.to_hex(),
                    name: f.name.clone(),
                    size: f.size,
                    chunk_count: f.chunk_count(),
                    chunk_size: f.chunk_size,
                    creation_time: f.creation_time,
                    chunk_hashes: f.chunk_hashes.as_flattened().to_vec(),
                });
            }
            other => unimplemented!("not benchmarked: {other:?}"),
        }
        self.write(&m)
    }
    fn decode(bytes: &[u8]) -> Message {
        let m = PbMessage::decode(bytes).expect("valid protobuf");
        match m.kind {
            0 => {
                let r = m.chunk_request.expect("chunk_request");
                Message::ChunkRequest {
                    file_id: parse_id(&r.file_id),
                    chunk_index: r.chunk_index,
                    priority: u8::try_from(r.priority).expect("priority fits u8"),
                }
            }
            1 => {
                let r = m.chunk_response.expect("chunk_response");
                Message::ChunkResponse {
                    file_id: parse_id(&r.file_id),
                    chunk_index: r.chunk_index,
                    payload_len: r.payload_len,
                }
            }
            2 => {
                let f = m.file_info.expect("file_info");
                assert_eq!(f.chunk_hashes.len(), f.chunk_count as usize * DIGEST_BYTES);
                let chunk_hashes = f
                    .chunk_hashes
                    .chunks_exact(DIGEST_BYTES)
                    .map(|c| c.try_into().expect("32-byte chunk"))
                    .collect();
                let info = FileInfo {
                    file_id: parse_id(&f.file_id),
                    name: f.name,
                    size: f.size,
                    chunk_size: f.chunk_size,
                    creation_time: f.creation_time,
                    chunk_hashes,
                };
                info.check().expect("authentic manifest");
                Message::FileInfo(info)
            }
            other => panic!("unexpected type {other}"),
        }
    }
}

impl Codec<PeerInfo> for Prost {
    const NAME: &'static str = "prost";
    fn encode(&mut self, v: &PeerInfo) -> &[u8] {
        let m = PbMessage {
            kind: 3,
            peer_info: Some(PbPeerInfo {
                peer_id: v.peer_id.clone(),
                address: v.address.clone(),
                available_files: v.available_files.iter().map(FileId::to_hex).collect(),
                connection_quality: v.connection_quality as u32,
            }),
            ..Default::default()
        };
        self.write(&m)
    }
    fn decode(bytes: &[u8]) -> PeerInfo {
        let m = PbMessage::decode(bytes).expect("valid protobuf");
        assert_eq!(m.kind, 3);
        let p = m.peer_info.expect("peer_info");
        PeerInfo {
            peer_id: p.peer_id,
            address: p.address,
            available_files: p.available_files.iter().map(|s| parse_id(s)).collect(),
            connection_quality: u8::try_from(p.connection_quality).expect("quality fits u8"),
        }
    }
}

impl Codec<TransferStatus> for Prost {
    const NAME: &'static str = "prost";
    fn encode(&mut self, v: &TransferStatus) -> &[u8] {
        let m = PbMessage {
            kind: 4,
            transfer_status: Some(PbTransferStatus {
                file_id: v.file_id.to_hex(),
                chunks_received: v.chunks_received,
                total_chunks: v.total_chunks,
                transfer_rate: v.transfer_rate,
                eta_seconds: v.eta_seconds,
            }),
            ..Default::default()
        };
        self.write(&m)
    }
    fn decode(bytes: &[u8]) -> TransferStatus {
        let m = PbMessage::decode(bytes).expect("valid protobuf");
        assert_eq!(m.kind, 4);
        let t = m.transfer_status.expect("transfer_status");
        TransferStatus {
            file_id: parse_id(&t.file_id),
            chunks_received: t.chunks_received,
            total_chunks: t.total_chunks,
            transfer_rate: t.transfer_rate,
            eta_seconds: t.eta_seconds,
        }
    }
}

// ---------------------------------------------------------------------------------------
// Benchmarks

/// Checks that `C` round-trips `value`, prints its size, and measures encode, decode and
/// encode+decode.
fn bench_codec<T: PartialEq + Debug, C: Codec<T> + Default>(
    g: &mut BenchmarkGroup<'_, WallTime>,
    msg: &str,
    value: &T,
) {
    let mut codec = C::default();
    let bytes = codec.encode(value).to_vec();
    assert_eq!(&C::decode(&bytes), value, "{} must round-trip {msg}", C::NAME);
    println!("size {msg} {} {} bytes", C::NAME, bytes.len());

    g.bench_function(BenchmarkId::new("encode", C::NAME), |b| {
        b.iter(|| codec.encode(black_box(value)).len())
    });
    g.bench_function(BenchmarkId::new("decode", C::NAME), |b| {
        b.iter(|| C::decode(black_box(&bytes)))
    });
    g.bench_function(BenchmarkId::new("roundtrip", C::NAME), |b| {
        b.iter(|| C::decode(codec.encode(black_box(value))))
    });
}

/// Measures the zero-copy view of an encoded FlatBuffers body, with and without the
/// verifier.
fn bench_view(g: &mut BenchmarkGroup<'_, WallTime>, body: &[u8]) {
    assert_eq!(view(body), view_unverified(body), "the body verifies");
    g.bench_function(BenchmarkId::new("decode", "flatbuffers_view"), |b| {
        b.iter(|| view(black_box(body)))
    });
    g.bench_function(BenchmarkId::new("decode", "flatbuffers_view_unverified"), |b| {
        b.iter(|| view_unverified(black_box(body)))
    });
}

fn wire_messages(c: &mut Criterion) {
    let crate_messages = [("chunk_request", chunk_request()), ("chunk_response", chunk_response())];
    for (name, msg) in &crate_messages {
        let mut g = c.benchmark_group(format!("wire/{name}"));
        bench_codec::<_, Flat>(&mut g, name, msg);
        bench_codec::<_, Json>(&mut g, name, msg);
        bench_codec::<_, Prost>(&mut g, name, msg);
        bench_view(&mut g, Flat::default().encode(msg));
        g.finish();
    }

    let msg = file_info();
    let mut g = c.benchmark_group("wire/file_info_2048");
    bench_codec::<_, Flat>(&mut g, "file_info_2048", &msg);
    bench_codec::<_, Json>(&mut g, "file_info_2048", &msg);
    bench_codec::<_, Prost>(&mut g, "file_info_2048", &msg);
    bench_view(&mut g, Flat::default().encode(&msg));
    // What every full decode above pays for authenticating the manifest: SHA-256 over the
    // 64 KiB of chunk hashes (the file ID), independent of the format.
    if let Message::FileInfo(info) = &msg {
        g.bench_function("check", |b| b.iter(|| black_box(info).check()));
    }
    g.finish();

    let msg = peer_info();
    let mut g = c.benchmark_group("wire/peer_info");
    bench_codec::<_, FlatLocal>(&mut g, "peer_info", &msg);
    bench_codec::<_, Json>(&mut g, "peer_info", &msg);
    bench_codec::<_, Prost>(&mut g, "peer_info", &msg);
    bench_view(&mut g, <FlatLocal as Codec<PeerInfo>>::encode(&mut FlatLocal::default(), &msg));
    g.finish();

    let msg = transfer_status();
    let mut g = c.benchmark_group("wire/transfer_status");
    bench_codec::<_, FlatLocal>(&mut g, "transfer_status", &msg);
    bench_codec::<_, Json>(&mut g, "transfer_status", &msg);
    bench_codec::<_, Prost>(&mut g, "transfer_status", &msg);
    bench_view(
        &mut g,
        <FlatLocal as Codec<TransferStatus>>::encode(&mut FlatLocal::default(), &msg),
    );
    g.finish();
}

criterion_group! {
    name = benches;
    // 56 benchmarks × (0.3 s warm-up + 0.8 s measurement): about 90 s on a quiet machine.
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_millis(800))
        .sample_size(50);
    targets = wire_messages
}
criterion_main!(benches);
