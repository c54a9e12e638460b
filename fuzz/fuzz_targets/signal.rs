//! WebRTC signaling relayed through the DHT (`crypto::signal`): each of the four messages
//! fed to the side that parses it, with the fixture identities and a fixed clock — a Hello
//! to the target's responder, a HelloReply to the deterministic initiator, an Offer to the
//! responder that answered the genuine Hello, an Answer to the offerer that sealed the
//! genuine Offer. `signal_nonce` (what relays read) sees every input too.
//!
//! Input: `mode u8 ‖ message` (modes in `fixtures::signal_mode`).
//!
//! The deterministic initiator and the responder awaiting the offer are built once and
//! cloned per input (`Clone` exists in fuzz builds only), the offerer awaiting the answer
//! is shared (`open_answer` takes `&self`): an input pays for the step it feeds, not for
//! the key exchanges that set its counterpart up.
//!
//! Beyond "no panic": relays cannot forge. With the other side's randomness fixed and
//! Ed25519 deterministic, a HelloReply, Offer or Answer is accepted only if it is the
//! genuine message byte for byte; an accepted Hello is refused when replayed, and its reply
//! fits a DHT datagram; a payload that opens carries at most `SIGNAL_SDP_BYTES_MAX` bytes
//! of SDP.
#![no_main]

use std::sync::OnceLock;

use furymesh::crypto::signal::{
    signal_nonce, SignalError, SignalOfferer, SignalPayload, SIGNAL_MESSAGE_BYTES_MAX,
    SIGNAL_SDP_BYTES_MAX,
};
use furymesh::crypto::signal::{SignalInitiator, SignalResponder};
use furymesh_fuzz::fixtures::{
    server_session, signal_awaiting_answer, signal_awaiting_offer, signal_initiator,
    signal_messages, signal_mode, NOW, SIGNAL_RESPONDER_RANDOM,
};
use libfuzzer_sys::fuzz_target;

fn sane(p: &SignalPayload) {
    assert!(p.sdp.len() <= SIGNAL_SDP_BYTES_MAX);
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, message)) = data.split_first() else { return };
    if message.len() > 2 * SIGNAL_MESSAGE_BYTES_MAX {
        return;
    }
    if let Some(nonce) = signal_nonce(message) {
        assert!(message.windows(nonce.len()).any(|w| w == nonce), "a nonce not in the message");
    }
    let [_, reply, offer, answer] = signal_messages();
    match mode % 4 {
        signal_mode::HELLO => {
            let mut target = furymesh::crypto::signal::SignalResponder::new(server_session());
            match target.handle_hello(message, NOW, SIGNAL_RESPONDER_RANDOM) {
                Ok(out) => {
                    assert!(out.len() <= SIGNAL_MESSAGE_BYTES_MAX, "reply too long");
                    let again = target.handle_hello(message, NOW, SIGNAL_RESPONDER_RANDOM);
                    assert_eq!(again.err(), Some(SignalError::Replayed), "a replay accepted");
                }
                Err(e) => {
                    let _ = e.to_string();
                }
            }
        }
        signal_mode::REPLY => {
            static INIT: OnceLock<SignalInitiator> = OnceLock::new();
            let init = INIT.get_or_init(|| signal_initiator().0).clone();
            if init.handle_reply(message, NOW).is_ok() {
                assert_eq!(message, &reply[..], "a forged reply accepted");
            }
        }
        signal_mode::OFFER => {
            static AWAITING: OnceLock<SignalResponder> = OnceLock::new();
            let mut responder = AWAITING.get_or_init(signal_awaiting_offer).clone();
            if let Ok(opened) = responder.open_offer(message) {
                assert_eq!(message, &offer[..], "a forged offer accepted");
                sane(&opened.payload);
                // Each offer opens once.
                assert!(responder.open_offer(message).is_err(), "an offer opened twice");
            }
        }
        signal_mode::ANSWER => {
            // `open_answer` takes `&self`: one offerer, built once, serves every input.
            static OFFERER: OnceLock<SignalOfferer> = OnceLock::new();
            let offerer = OFFERER.get_or_init(signal_awaiting_answer);
            if let Ok(p) = offerer.open_answer(message) {
                assert_eq!(message, &answer[..], "a forged answer accepted");
                sane(&p);
            }
        }
        _ => unreachable!("mode % 4"),
    }
});
