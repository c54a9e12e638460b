//! DHT datagrams and the persisted routing table: `wire::decode_dht_proved` and
//! `wire::decode_dht_table` on arbitrary bytes, with the production size limit. Lists respect
//! their bounds, and what decodes re-encodes (with its proof) to a datagram that decodes to
//! the same message.
#![no_main]

use furymesh::dht::{DhtBody, CONTACTS_PER_MESSAGE_MAX, PROVIDERS_PER_MESSAGE_MAX};
use furymesh::wire::{
    decode_dht, decode_dht_proved, decode_dht_table, encode_dht_proved, encode_dht_table,
    DHT_DATAGRAM_MAX_BYTES,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(table) = decode_dht_table(data) {
        assert_eq!(decode_dht_table(&encode_dht_table(&table)), Ok(table));
    }
    let Ok((msg, proof)) = decode_dht_proved(data) else {
        assert!(decode_dht(data).is_err());
        return;
    };
    assert!(data.len() <= DHT_DATAGRAM_MAX_BYTES);
    assert_eq!(decode_dht(data).as_ref(), Ok(&msg));
    match &msg.body {
        DhtBody::Nodes { contacts } => assert!(contacts.len() <= CONTACTS_PER_MESSAGE_MAX),
        DhtBody::Providers { providers, closer } => {
            assert!(providers.len() <= PROVIDERS_PER_MESSAGE_MAX);
            assert!(closer.len() <= CONTACTS_PER_MESSAGE_MAX);
        }
        _ => {}
    }
    let _ = (msg.body.is_request(), format!("{msg:?}"));
    let mut again = Vec::new();
    encode_dht_proved(&msg, proof.as_ref(), &mut again);
    if again.len() > DHT_DATAGRAM_MAX_BYTES {
        // FlatBuffers lets a sender point two fields at one vector, so a datagram within the
        // limit can re-encode larger. The node never re-sends what it received; what it does
        // send is checked against the limit by the `dht_engine` target.
        return;
    }
    assert_eq!(decode_dht_proved(&again), Ok((msg, proof)), "decode(encode(m)) == m");
});
