//! Resume state (`OUTPUT.furymesh-resume`): `wire::decode_resume` on arbitrary bytes, then
//! the check `get` applies before trusting it (`Bitfield::from_bytes`). What decodes
//! re-encodes to the same state.
#![no_main]

use furymesh::transfer::Bitfield;
use furymesh::wire::{decode_resume, encode_resume};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok((info, bits)) = decode_resume(data) else { return };
    info.check().expect("decoded manifest passes check");
    let n = info.chunk_count();
    assert_eq!(bits.len(), (n as usize).div_ceil(8));
    let again = encode_resume(&info, &bits);
    assert_eq!(decode_resume(&again), Ok((info.clone(), bits.clone())), "decode(encode(x)) == x");
    if let Some(field) = Bitfield::from_bytes(bits, n) {
        assert_eq!(field.len(), n);
        let ones: Vec<u32> = field.ones().collect();
        assert_eq!(ones.len() as u32, field.count_ones());
        assert!(ones.iter().all(|&i| i < n && field.get(i)));
        assert!(!field.get(n));
        let durable: u64 = ones.iter().map(|&i| info.chunk_len(i)).sum();
        assert!(durable <= info.size);
    }
});
