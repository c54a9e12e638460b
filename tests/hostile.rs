//! Garbage, truncated and oversized frames and out-of-range requests: each gets a clear
//! error reply or a closed connection, and the seeder keeps serving everyone else. The
//! frame tests run after a real handshake with encryption off, so the bytes reach the frame
//! parser as sent; garbage handshakes are tested too.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::*;
use furymesh::crypto::FileId;
use furymesh::wire::{self, Encoder, ErrorCode, Message};

fn connect_raw(addr: std::net::SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

/// A connection past the handshake (plaintext records).
fn connect(addr: std::net::SocketAddr) -> TcpStream {
    let mut s = connect_raw(addr);
    client_handshake(&mut s, 3, furymesh::crypto::Encryption::Off, None).unwrap();
    s
}

/// Reads one reply frame, or None if the seeder closed the connection.
fn reply(s: &mut TcpStream) -> Option<Message> {
    let mut len = [0u8; 4];
    s.read_exact(&mut len).ok()?;
    let mut body = vec![0u8; u32::from_le_bytes(len) as usize];
    s.read_exact(&mut body).unwrap();
    Some(wire::decode(&body).expect("seeder replies decode"))
}

fn is_closed(s: &mut TcpStream) -> bool {
    let mut b = [0u8; 1];
    matches!(s.read(&mut b), Ok(0) | Err(_))
}

fn error_code(m: Option<Message>) -> ErrorCode {
    match m {
        Some(Message::Error { code, .. }) => code,
        other => panic!("expected an error reply, got {other:?}"),
    }
}

#[test]
fn bad_input_is_refused_and_the_seeder_keeps_serving() {
    let t = tempdir();
    let data = t.path().join("data");
    let f = t.path().join("a.bin");
    let bytes = write_file(&f, 300_000, 1);
    let entry = publish(&data, &[&f], &["--chunk-size", "64KiB"]).remove(0);
    let id: FileId = entry["file_id"].as_str().unwrap().parse().unwrap();
    let mut seeder = Seeder::start_with_args(&data, 2, &["--encryption", "off"]);
    let mut enc = Encoder::default();

    // Handshakes: garbage, an oversized length, a truncated ClientHello. Each connection
    // is closed; none reaches the request parser.
    let mut s = connect_raw(seeder.addr);
    s.write_all(&[9, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9]).unwrap();
    // A ClientHello that does not parse gets the two-byte refusal, then the close.
    let refusal = recv_hs(&mut s).unwrap();
    assert!(matches!(
        wire::frame::HandshakeFrame::parse(&refusal),
        wire::frame::HandshakeFrame::Refusal(_)
    ));
    assert!(is_closed(&mut s));
    let mut s = connect_raw(seeder.addr);
    s.write_all(&u16::MAX.to_le_bytes()).unwrap();
    assert!(is_closed(&mut s));
    let mut s = connect_raw(seeder.addr);
    s.write_all(&[200, 0, 1, 1]).unwrap();
    drop(s);

    // Garbage with a plausible length: undecodable → MALFORMED, connection closed.
    let mut s = connect(seeder.addr);
    s.write_all(&[16, 0, 0, 0]).unwrap();
    s.write_all(&[0xde; 16]).unwrap();
    assert_eq!(error_code(reply(&mut s)), ErrorCode::Malformed);
    assert!(is_closed(&mut s));

    // Oversized length prefix: refused before anything is allocated or read.
    let mut s = connect(seeder.addr);
    s.write_all(&u32::MAX.to_le_bytes()).unwrap();
    assert_eq!(error_code(reply(&mut s)), ErrorCode::Malformed);
    assert!(is_closed(&mut s));

    // Truncated frame, then the client goes away: the seeder just drops it.
    let mut s = connect(seeder.addr);
    let frame = enc.frame(&Message::FileInfoRequest { file_id: id }).to_vec();
    s.write_all(&frame[..frame.len() - 3]).unwrap();
    drop(s);

    // A message only a seeder sends is refused.
    let mut s = connect(seeder.addr);
    s.write_all(enc.frame(&Message::ChunkResponse { file_id: id, chunk_index: 0, payload_len: 0 }))
        .unwrap();
    assert_eq!(error_code(reply(&mut s)), ErrorCode::Malformed);

    // Unknown file and out-of-range chunk get errors but keep the connection usable.
    let mut s = connect(seeder.addr);
    s.write_all(enc.frame(&Message::FileInfoRequest { file_id: FileId([7; 32]) })).unwrap();
    assert_eq!(error_code(reply(&mut s)), ErrorCode::UnknownFile);
    s.write_all(enc.frame(&Message::ChunkRequest { file_id: id, chunk_index: 5, priority: 0 }))
        .unwrap();
    assert_eq!(error_code(reply(&mut s)), ErrorCode::ChunkOutOfRange);
    s.write_all(enc.frame(&Message::ChunkRequest {
        file_id: FileId([7; 32]),
        chunk_index: 0,
        priority: 0,
    }))
    .unwrap();
    assert_eq!(error_code(reply(&mut s)), ErrorCode::UnknownFile);
    // …and a valid request on the same connection still works, payload and all.
    s.write_all(enc.frame(&Message::ChunkRequest { file_id: id, chunk_index: 4, priority: 0 }))
        .unwrap();
    match reply(&mut s) {
        Some(Message::ChunkResponse { chunk_index: 4, payload_len, .. }) => {
            let mut payload = vec![0u8; payload_len as usize];
            s.read_exact(&mut payload).unwrap();
            assert!(payload == bytes[4 * 65536..]);
        }
        other => panic!("expected chunk 4, got {other:?}"),
    }

    // Many connections sending random junk at once.
    let mut x = 0x1234_5678_u64;
    for _ in 0..50 {
        let mut s = connect_raw(seeder.addr);
        let _ = s.write_all(&junk(64, &mut x));
    }

    // Through all of that, a normal download still works.
    assert!(seeder.is_running());
    let out = t.path().join("out.bin");
    run_ok(
        get_cmd(&data, entry["file_id"].as_str().unwrap(), &seeder.peer(), &out)
            .args(["--encryption", "off"]),
    );
    assert!(std::fs::read(&out).unwrap() == bytes);
    let stats = seeder.stop();
    assert!(stats["bad_frames"].as_u64().unwrap() >= 3, "{stats}");
    assert!(stats["handshakes_failed"].as_u64().unwrap() >= 3 + 50, "{stats}");
}
