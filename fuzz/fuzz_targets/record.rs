//! Sealed records: an `Opener` fed a stream of genuine, tampered and garbage records, with
//! tiny rekey limits so the key ratchet turns within one input.
//!
//! Input: `records_max u8 ‖ bytes_max u8` then operations `op u8 ‖ …`:
//!
//! - 0, genuine: `len u16 LE ‖ plaintext [len]`, sealed by the matching `Sealer`;
//! - 1, tampered: like 0, then one bit flipped (`bit u16 LE` over AAD ‖ ciphertext ‖ tag);
//! - 2, garbage: `kind u8 ‖ file_id [32] ‖ chunk u32 LE ‖ len u16 LE ‖ tag [16] ‖ bytes`;
//! - 3, wrong length: like 0, but the AAD's length is off by one.
//!
//! Until the first refusal, genuine records open to their plaintext and both sides stay at
//! the same (epoch, seq); every other kind is refused, and from then on the opener refuses
//! everything (`Poisoned`) and releases no plaintext.
#![no_main]

use furymesh::crypto::record::TAG_BYTES;
use furymesh::crypto::{Opener, RecordAad, RecordError, RecordKind, RekeyLimits, Sealer};
use furymesh_fuzz::Cursor;
use libfuzzer_sys::fuzz_target;
use zeroize::Zeroizing;

const OPS_MAX: usize = 256;
const SECRET: [u8; 32] = [7; 32];

fn aad_of(kind: u8, file_id: [u8; 32], chunk_index: u32, length: u32) -> RecordAad {
    match kind % 3 {
        0 => RecordAad { kind: RecordKind::Control, file_id, chunk_index, length },
        1 => RecordAad { kind: RecordKind::Chunk, file_id, chunk_index, length },
        _ => RecordAad { kind: RecordKind::Close, file_id, chunk_index, length },
    }
}

fuzz_target!(|data: &[u8]| {
    let mut c = Cursor::new(data);
    let (Some(r), Some(b)) = (c.u8(), c.u8()) else { return };
    let limits =
        RekeyLimits { records_max: 1 + u64::from(r % 8), bytes_max: 1 + u64::from(b) * 16 };
    let mut sealer = Sealer::new(Zeroizing::new(SECRET), limits);
    let mut opener = Opener::new(Zeroizing::new(SECRET), limits);
    let mut failed = false;
    for _ in 0..OPS_MAX {
        let Some(op) = c.u8() else { break };
        let kind = op >> 2;
        let (aad, mut buf, tag, genuine) = match op % 4 {
            2 => {
                let (Some(file_id), Some(chunk), Some(len), Some(tag)) =
                    (c.array::<32>(), c.u32(), c.u16(), c.array::<TAG_BYTES>())
                else {
                    break;
                };
                let buf = c.take_up_to(usize::from(len)).to_vec();
                (aad_of(kind, file_id, chunk, u32::from(len)), buf, tag, false)
            }
            op => {
                let Some(len) = c.u16() else { break };
                let plain = c.take_up_to(usize::from(len)).to_vec();
                let aad = aad_of(kind, [op; 32], u32::from(len) * 3, plain.len() as u32);
                let mut buf = plain.clone();
                let tag = sealer.seal_in_place(&aad, &mut buf).expect("sealing within limits");
                if buf.len() >= 16 {
                    assert_ne!(buf, plain, "the ciphertext is not the plaintext");
                }
                match op {
                    0 => (aad, buf, tag, true),
                    1 => {
                        let Some(bit) = c.u16() else { break };
                        let mut aad_bytes = aad.encode().to_vec();
                        let mut tag = tag;
                        let total = (aad_bytes.len() + buf.len() + TAG_BYTES) * 8;
                        let bit = usize::from(bit) % total;
                        let (byte, mask) = (bit / 8, 1u8 << (bit % 8));
                        let mut aad = aad;
                        if byte < aad_bytes.len() {
                            aad_bytes[byte] ^= mask;
                            // Re-read the flipped AAD; a kind byte that no longer names a
                            // kind flips the length instead (same effect: it must not open).
                            aad.file_id.copy_from_slice(&aad_bytes[1..33]);
                            aad.chunk_index =
                                u32::from_le_bytes(aad_bytes[33..37].try_into().unwrap());
                            aad.length = u32::from_le_bytes(aad_bytes[37..41].try_into().unwrap());
                            if byte == 0 {
                                aad.kind = match aad.kind {
                                    RecordKind::Control => RecordKind::Chunk,
                                    RecordKind::Chunk => RecordKind::Close,
                                    RecordKind::Close => RecordKind::Control,
                                };
                            }
                        } else if byte < aad_bytes.len() + buf.len() {
                            buf[byte - aad_bytes.len()] ^= mask;
                        } else {
                            tag[byte - aad_bytes.len() - buf.len()] ^= mask;
                        }
                        (aad, buf, tag, false)
                    }
                    _ => {
                        let mut aad = aad;
                        aad.length = aad.length.wrapping_add(1);
                        (aad, buf, tag, false)
                    }
                }
            }
        };
        let before = buf.clone();
        let result = opener.open_in_place(&aad, &mut buf, &tag);
        if failed {
            assert_eq!(result, Err(RecordError::Poisoned), "a failed opener stays dead");
        } else if genuine {
            result.expect("a genuine record opens");
            assert_eq!(opener.position(), sealer.position(), "both sides ratchet together");
            continue;
        } else {
            assert!(
                matches!(
                    result,
                    Err(RecordError::Authentication { .. } | RecordError::LengthMismatch { .. })
                ),
                "a forged record was accepted: {result:?}"
            );
            failed = true;
        }
        // No unverified plaintext escapes: the buffer is as it was (or wiped, for a cipher
        // that zeroes on failure).
        assert!(
            buf == before || buf.iter().all(|&b| b == 0),
            "a refused record changed the buffer"
        );
    }
});
