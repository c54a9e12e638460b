//! A seeder's side of a connection on hostile bytes: the peer wire's `Deframer`
//! (plaintext, the production request limit) feeding a `peer::ServerSession` that serves one
//! fixture file, as the node's TCP pump does.
//!
//! Input: `step u8 ‖ bytes` repeated: the next `step` bytes arrive (through
//! `Deframer::feed` or `read_buf`/`commit`, alternately); a zero step lets time pass instead.
//! Every transmit is a response the client can decode or a chunk inside the served file
//! with an AAD naming exactly that chunk; a deframing error closes the session, and a closed
//! session sends nothing more.
#![no_main]

use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use furymesh::config::{IDLE_TIMEOUT, REQUEST_BODY_MAX_BYTES};
use furymesh::crypto::{FileId, RecordKind};
use furymesh::manifest::FileInfo;
use furymesh::peer::{ServerSession, ServerTransmit};
use furymesh::wire::frame::{Deframed, Deframer};
use furymesh::wire::{decode_response, FRAME_PREFIX_BYTES};
use furymesh_fuzz::Cursor;
use libfuzzer_sys::fuzz_target;

/// Bytes per input: bounds the time one input takes.
const STEPS_MAX: usize = 256;

fn files() -> &'static HashMap<FileId, FileInfo> {
    static FILES: OnceLock<HashMap<FileId, FileInfo>> = OnceLock::new();
    FILES.get_or_init(|| {
        let info = furymesh_fuzz::fixtures::served_file();
        HashMap::from([(info.file_id, info)])
    })
}

fn check(t: &ServerTransmit) {
    match t {
        ServerTransmit::Frame(frame) => {
            decode_response(&frame[FRAME_PREFIX_BYTES..]).expect("a response the client decodes");
        }
        ServerTransmit::Chunk { header, file_id, chunk_index, range, aad, .. } => {
            decode_response(&header[FRAME_PREFIX_BYTES..]).expect("a chunk header decodes");
            let info = files().get(file_id).expect("only served files");
            assert!(*chunk_index < info.chunk_count());
            assert_eq!(*range, info.chunk_range(*chunk_index));
            assert_eq!(aad.kind, RecordKind::Chunk);
            assert_eq!((aad.file_id, aad.chunk_index), (file_id.0, *chunk_index));
            assert_eq!(u64::from(aad.length), range.end - range.start);
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let mut now = Instant::now();
    let mut server = ServerSession::new(now, IDLE_TIMEOUT);
    let mut deframer = Deframer::new(None, REQUEST_BODY_MAX_BYTES);
    let mut c = Cursor::new(data);
    for step in 0..STEPS_MAX {
        let Some(n) = c.u8() else { break };
        if n == 0 {
            now += Duration::from_secs(u64::from(c.u8().unwrap_or(0)));
            server.handle_timeout(now);
        } else {
            let bytes = c.take_up_to(usize::from(n));
            if step % 2 == 0 {
                deframer.feed(bytes);
            } else {
                let dst = deframer.read_buf();
                assert!(!dst.is_empty());
                let k = dst.len().min(bytes.len());
                dst[..k].copy_from_slice(&bytes[..k]);
                deframer.commit(k);
                deframer.feed(&bytes[k..]);
            }
            loop {
                match deframer.poll() {
                    Ok(Some(Deframed::Control)) => {
                        let body = deframer.body().to_vec();
                        assert!(body.len() <= REQUEST_BODY_MAX_BYTES as usize);
                        server.handle_frame(now, &body, files());
                    }
                    Ok(Some(Deframed::Payload(_))) => panic!("a server never expects payloads"),
                    Ok(None) => break,
                    Err(e) => {
                        server.handle_frame_error(now, e);
                        break;
                    }
                }
            }
        }
        let closed = server.is_closed();
        while let Some(t) = server.poll_transmit() {
            check(&t);
        }
        if closed {
            server.handle_frame(now, b"anything", files());
            assert!(server.poll_transmit().is_none(), "a closed session sends nothing");
            break;
        }
    }
    let _ = (server.stats(), server.poll_timeout());
});
