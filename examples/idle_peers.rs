//! Holds many authenticated, idle peer-wire connections open against a seeder, for
//! measuring what idle connections cost it (`scripts/bench-idle`).
//!
//! Usage: `idle_peers ADDR COUNT IDENTITY.pk8.der [on|off]`
//!
//! Opens COUNT TCP connections to ADDR, runs the client side of the FuryMesh handshake on
//! each as the given identity (one session key for all), prints `ready COUNT` on stdout and
//! then sends nothing until stdin closes (or the process is killed). A connection the
//! seeder closes is reported on stderr at exit.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;

use furymesh::crypto::{
    Encryption, HandshakeConfig, HandshakeRandom, Identity, Initiator, SessionIdentity,
};
use furymesh::node::clock::{self, now_unix};
use furymesh::wire::frame::{handshake_len, push_handshake, HandshakeFrame};

fn send(s: &mut TcpStream, msg: &[u8]) -> std::io::Result<()> {
    let mut out = Vec::new();
    push_handshake(&mut out, msg);
    s.write_all(&out)
}

fn recv(s: &mut TcpStream) -> Result<Vec<u8>, String> {
    let mut prefix = [0u8; 2];
    s.read_exact(&mut prefix).map_err(|e| e.to_string())?;
    let mut msg = vec![0u8; handshake_len(prefix).map_err(|e| e.to_string())?];
    s.read_exact(&mut msg).map_err(|e| e.to_string())?;
    Ok(msg)
}

fn connect(
    addr: SocketAddr,
    local: &Arc<SessionIdentity>,
    encryption: Encryption,
) -> Result<TcpStream, String> {
    let mut s = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    let config = HandshakeConfig {
        local: local.clone(),
        network: None,
        encryption,
        expected_peer: None,
        channel_binding: None,
    };
    let random = HandshakeRandom { ephemeral: clock::random(), nonce: clock::random() };
    let (state, hello) = Initiator::start(config, random, now_unix()).map_err(|e| e.to_string())?;
    send(&mut s, &hello).map_err(|e| e.to_string())?;
    let reply = recv(&mut s)?;
    if let HandshakeFrame::Refusal(code) = HandshakeFrame::parse(&reply) {
        return Err(format!("refused: {}", code.text()));
    }
    let (finish, _session) =
        state.handle_server_hello(&reply, now_unix()).map_err(|e| e.to_string())?;
    send(&mut s, &finish).map_err(|e| e.to_string())?;
    Ok(s)
}

fn main() -> Result<(), String> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        return Err("usage: idle_peers ADDR COUNT IDENTITY.pk8.der [on|off]".into());
    }
    let addr: SocketAddr = args[1].parse().map_err(|e| format!("bad ADDR: {e}"))?;
    let count: usize = args[2].parse().map_err(|e| format!("bad COUNT: {e}"))?;
    let key = std::fs::read(&args[3]).map_err(|e| format!("cannot read {}: {e}", args[3]))?;
    let encryption = match args.get(4).map(String::as_str) {
        None | Some("on") => Encryption::On,
        Some("off") => Encryption::Off,
        Some(other) => return Err(format!("encryption must be on or off, not {other}")),
    };
    let identity = Identity::from_pkcs8_der(&key).map_err(|e| e.to_string())?;
    let session = identity
        .issue_session(&mut clock::os_rng(), clock::random(), now_unix() + 3600)
        .map_err(|e| e.to_string())?;
    let session = Arc::new(session);
    let mut conns = Vec::with_capacity(count);
    for i in 0..count {
        conns
            .push(connect(addr, &session, encryption).map_err(|e| format!("connection {i}: {e}"))?);
    }
    println!("ready {count}");
    std::io::stdout().flush().map_err(|e| e.to_string())?;
    // Idle until told to stop.
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
    let mut closed = 0;
    for c in &conns {
        c.set_nonblocking(true).map_err(|e| e.to_string())?;
        if matches!((&*c).read(&mut [0u8; 1]), Ok(0)) {
            closed += 1;
        }
    }
    eprintln!("{closed} of {count} connections were closed by the seeder");
    Ok(())
}
