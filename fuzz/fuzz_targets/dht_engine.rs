//! A real DHT engine (`dht::Dht`, production configuration) fed the fuzzer's datagrams,
//! clock steps, commands and routing-table snapshots, the way the node's loops feed it:
//! `wire::decode_dht` then `Dht::handle_datagram` (see `fixtures::dht_step`).
//!
//! Input: a sequence of operations (layouts in `fixtures::dht_op`). After every operation
//! the engine's invariants hold (`Dht::assert_invariants`), and every datagram it wants to
//! send encodes within `DHT_DATAGRAM_MAX_BYTES` and decodes to itself: a node never emits
//! what its peers (or it) would refuse.
#![no_main]

use std::sync::OnceLock;
use std::time::Instant;

use furymesh::dht::{Dht, DhtEvent};
use furymesh::wire::{decode_dht, encode_dht, DHT_DATAGRAM_MAX_BYTES};
use furymesh_fuzz::fixtures::{dht_node, dht_step};
use furymesh_fuzz::Cursor;
use libfuzzer_sys::fuzz_target;

/// Operations per input: bounds the time one input takes.
const OPS_MAX: usize = 512;

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn drain(dht: &mut Dht, buf: &mut Vec<u8>) {
    while let Some((to, msg)) = dht.poll_transmit() {
        assert_ne!(to, dht.local().addr, "never sends to itself");
        encode_dht(&msg, buf);
        assert!(buf.len() <= DHT_DATAGRAM_MAX_BYTES, "sends a {}-byte datagram", buf.len());
        assert_eq!(decode_dht(buf).as_ref(), Ok(&msg), "sends what it would refuse");
    }
    while let Some(ev) = dht.poll_event() {
        if let DhtEvent::PeerMisbehaved { addr, .. } = ev {
            assert_ne!(addr, dht.local().addr);
        }
    }
    dht.assert_invariants();
}

fuzz_target!(|data: &[u8]| {
    let mut dht = dht_node();
    let mut now = epoch();
    let mut c = Cursor::new(data);
    let mut buf = Vec::with_capacity(DHT_DATAGRAM_MAX_BYTES);
    for _ in 0..OPS_MAX {
        if dht_step(&mut dht, &mut now, &mut c).is_none() {
            break;
        }
        drain(&mut dht, &mut buf);
    }
    let _ = (dht.stats(), dht.snapshot(), dht.table().len(), dht.stored_records());
});
