//! The handshake's three messages, each fed to the side that parses it: a ClientHello to a
//! responder, a ServerHello to the deterministic initiator, a ClientFinish to the
//! deterministic responder (all with production limits and the fixture identities).
//!
//! Input: `mode u8 ‖ message` (modes in `fixtures::handshake_mode`). In the MAC-fixing mode
//! the target appends the public network's ClientHello MAC, so mutations reach the code
//! behind that check. Whenever a step succeeds the handshake is carried on with the real
//! counterpart; when both sides end with a session, they must agree (peer IDs, transcript
//! hash, encryption) and their records must open on the other side.
//!
//! The fixture initiator and responder states are deterministic, so each is built once and
//! cloned per input (`Clone` exists in fuzz builds only): an input pays for the
//! handshake step it feeds, not for the key exchanges that set its counterpart up.
#![no_main]

use std::sync::OnceLock;

use furymesh::crypto::handshake::HANDSHAKE_MESSAGE_BYTES_MAX;
use furymesh::crypto::{
    HandshakeError, Initiator, RecordAad, Responder, ResponderAwaitingFinish, Session,
};
use furymesh_fuzz::fixtures::{
    self, check_hello_mac, client_session, config, handshake_mode, public_hello_mac, random,
    server_session, NOW,
};
use libfuzzer_sys::fuzz_target;

fn agree(client: Session, server: Session) {
    assert_eq!(client.peer_id(), server_session().node_id());
    assert_eq!(server.peer_id(), client_session().node_id());
    assert_eq!(client.transcript_hash(), server.transcript_hash());
    assert_eq!(client.encryption(), server.encryption());
    let (mut c_seal, mut c_open) = client.into_records().expect("encryption is on");
    let (mut s_seal, mut s_open) = server.into_records().expect("encryption is on");
    let mut msg = *b"hello over the record layer";
    let aad = RecordAad::control(msg.len() as u32);
    let tag = c_seal.seal_in_place(&aad, &mut msg).unwrap();
    s_open.open_in_place(&aad, &mut msg, &tag).expect("server opens the client's record");
    let tag = s_seal.seal_in_place(&aad, &mut msg).unwrap();
    c_open.open_in_place(&aad, &mut msg, &tag).expect("client opens the server's record");
    assert_eq!(&msg, b"hello over the record layer");
}

/// The deterministic initiator (`fixtures::initiator`) and its ClientHello.
fn initiator() -> (Initiator, &'static [u8]) {
    static S: OnceLock<(Initiator, Vec<u8>)> = OnceLock::new();
    let (init, hello) = S.get_or_init(fixtures::initiator);
    (init.clone(), hello)
}

/// The deterministic responder awaiting the ClientFinish (`fixtures::responder`).
fn responder() -> ResponderAwaitingFinish {
    static S: OnceLock<ResponderAwaitingFinish> = OnceLock::new();
    S.get_or_init(|| fixtures::responder().0).clone()
}

fn refused(e: &HandshakeError) {
    // Nothing a peer sends is blamed on us, and the error prints.
    assert_eq!(e.blame(), furymesh::crypto::handshake::Blame::Peer, "{e}");
    let _ = e.to_string();
}

fuzz_target!(|data: &[u8]| {
    static CHECKED: std::sync::Once = std::sync::Once::new();
    CHECKED.call_once(check_hello_mac);
    let Some((&mode, message)) = data.split_first() else { return };
    if message.len() > HANDSHAKE_MESSAGE_BYTES_MAX + 64 {
        return;
    }
    match mode % 4 {
        handshake_mode::CLIENT_HELLO | handshake_mode::CLIENT_HELLO_MACED => {
            let mut hello = message.to_vec();
            if mode % 4 == handshake_mode::CLIENT_HELLO_MACED {
                hello.extend_from_slice(&public_hello_mac(message));
            }
            let server = config(server_session(), None);
            match Responder::handle_client_hello(server, random(1), &hello, NOW) {
                Ok((state, server_hello)) => {
                    assert!(server_hello.len() <= HANDSHAKE_MESSAGE_BYTES_MAX);
                    // Only the fixture initiator can finish; for any other hello its finish
                    // must be refused.
                    let (init, fixture_hello) = initiator();
                    let Ok((finish, client)) = init.handle_server_hello(&server_hello, NOW) else {
                        return;
                    };
                    match state.handle_client_finish(&finish, NOW) {
                        Ok(server) => {
                            assert_eq!(hello, fixture_hello, "a finish for another hello");
                            agree(client, server);
                        }
                        Err(e) => refused(&e),
                    }
                }
                Err(e) => refused(&e),
            }
        }
        handshake_mode::SERVER_HELLO => {
            let (init, _) = initiator();
            match init.handle_server_hello(message, NOW) {
                Ok((finish, client)) => {
                    assert!(finish.len() <= HANDSHAKE_MESSAGE_BYTES_MAX);
                    assert_eq!(client.peer_id(), server_session().node_id(), "the pin holds");
                    match responder().handle_client_finish(&finish, NOW) {
                        Ok(server) => agree(client, server),
                        Err(e) => refused(&e),
                    }
                }
                Err(e) => refused(&e),
            }
        }
        _ => match responder().handle_client_finish(message, NOW) {
            Ok(server) => {
                assert_eq!(server.peer_id(), client_session().node_id());
                let [_, server_hello, _] = fixtures::transcript();
                let (init, _) = initiator();
                let (_, client) = init.handle_server_hello(&server_hello, NOW).unwrap();
                agree(client, server);
            }
            Err(e) => refused(&e),
        },
    }
});
