//! Peer-wire frame bodies: `wire::decode` on arbitrary bytes, with the production body
//! limits. A body that decodes must re-encode to a frame that decodes to the same message,
//! and every accessor of what it carries must hold.
#![no_main]

use furymesh::config::{CHUNKS_PER_FILE_MAX, RESPONSE_BODY_MAX_BYTES};
use furymesh::manifest::FileInfo;
use furymesh::wire::{self, Encoder, Message, ERROR_MESSAGE_MAX_BYTES, NAME_MAX_BYTES};
use libfuzzer_sys::fuzz_target;

fn walk_manifest(info: &FileInfo) {
    // A decoded manifest is authenticated: its ID is the hash of the rest.
    info.check().expect("decoded manifest passes check");
    assert!(info.name.len() <= NAME_MAX_BYTES);
    let n = info.chunk_count();
    assert!(n <= CHUNKS_PER_FILE_MAX);
    let mut total = 0u64;
    for i in 0..n {
        let r = info.chunk_range(i);
        assert!(r.start <= r.end && r.end <= info.size);
        let len = info.chunk_len(i);
        assert!(len >= 1 && len <= u64::from(info.chunk_size));
        total += len;
    }
    assert_eq!(total, info.size, "chunks cover the file exactly");
}

fn walk(msg: &Message) {
    match msg {
        Message::FileInfo(info) => walk_manifest(info),
        Message::Error { message, .. } => assert!(message.len() <= ERROR_MESSAGE_MAX_BYTES),
        Message::Bitfield { bits: Some(bits), .. } => {
            assert!(bits.len() <= (CHUNKS_PER_FILE_MAX / 8) as usize)
        }
        _ => {}
    }
    let _ = format!("{msg:?}");
}

fuzz_target!(|body: &[u8]| {
    // The downloader reads response bodies up to RESPONSE_BODY_MAX_BYTES (the seeder's
    // request limit is smaller); nothing longer reaches the decoder.
    if body.len() > RESPONSE_BODY_MAX_BYTES as usize {
        return;
    }
    // The typed decoders of each direction agree with the untyped one.
    if let Ok(req) = wire::decode_request(body) {
        assert_eq!(wire::decode(body), Ok(Message::from(req)));
    }
    if let Ok(resp) = wire::decode_response(body) {
        assert_eq!(wire::decode(body), Ok(Message::from(resp)));
    }
    let Ok(msg) = wire::decode(body) else { return };
    assert!(wire::decode_request(body).is_ok() || wire::decode_response(body).is_ok());
    walk(&msg);
    let mut enc = Encoder::default();
    let frame = enc.frame(&msg).to_vec();
    let len = u32::from_le_bytes(frame[..4].try_into().unwrap()) as usize;
    assert_eq!(len, frame.len() - wire::FRAME_PREFIX_BYTES, "length prefix");
    assert_eq!(wire::decode(&frame[4..]).as_ref(), Ok(&msg), "decode(encode(m)) == m");
    // Whatever we accept, we can send back within the receiver's limit.
    assert!(len <= RESPONSE_BODY_MAX_BYTES as usize, "re-encoded body of {len} bytes");
    if let Message::FileInfo(info) = &msg {
        assert_eq!(enc.file_info_frame(info), &frame[..], "borrowed manifest encoding");
    }
});
