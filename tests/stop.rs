//! A command that never ends (issue 12, item 9): every wait of a `get` has a deadline, and
//! SIGTERM ends it promptly wherever it is blocked: on a peer that accepts and says nothing,
//! on one that drips a byte at a time, in the middle of a throttled download. The bounds
//! below are generous (the promise is a second); they only tell "ends" from "hangs".

// Waiting for a process to exit reads the clock (clippy.toml confines clock reads to
// node::clock inside the crate, not in tests).
#![allow(clippy::disallowed_methods)]

mod common;

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use common::*;

/// Far beyond the one second the node promises, far below the hangs this catches.
const GENEROUS: Duration = Duration::from_secs(5);

/// Waits up to `bound` for `child` to exit.
fn exits_within(child: &mut Child, bound: Duration) -> Option<ExitStatus> {
    let until = Instant::now() + bound;
    while Instant::now() < until {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

/// A peer on loopback that accepts connections and handles each with `talk` until the
/// returned flag is set (then it drops them).
fn fake_peer(talk: fn(TcpStream, &AtomicBool)) -> (String, Arc<AtomicBool>, mpsc::Receiver<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let done = Arc::new(AtomicBool::new(false));
    let (tx, rx) = mpsc::channel();
    let flag = done.clone();
    std::thread::spawn(move || {
        for s in listener.incoming() {
            let Ok(s) = s else { return };
            let _ = tx.send(());
            let flag = flag.clone();
            std::thread::spawn(move || talk(s, &flag));
        }
    });
    (addr, done, rx)
}

fn silent(s: TcpStream, done: &AtomicBool) {
    while !done.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(s);
}

/// Announces a 1 KiB handshake message, then sends it a zero byte every 2 s: every read
/// gets something well within the read timeout, so only a deadline on the whole handshake
/// ends it.
fn dripping(mut s: TcpStream, done: &AtomicBool) {
    let _ = s.write_all(&1024u16.to_le_bytes());
    while !done.load(Ordering::Relaxed) && s.write_all(&[0]).is_ok() {
        for _ in 0..40 {
            if done.load(Ordering::Relaxed) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn spawn_get(client: &Path, id: &str, peer: &str, out: &Path) -> Child {
    get_cmd(client, id, peer, out).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap()
}

const SOME_ID: &str = "0000000000000000000000000000000000000000000000000000000000000000";

#[test]
fn sigterm_ends_a_get_waiting_on_a_silent_peer() {
    let t = tempdir();
    let (peer, done, accepted) = fake_peer(silent);
    let mut get = spawn_get(&t.path().join("client"), SOME_ID, &peer, &t.path().join("out"));
    // The get is in its handshake, waiting for an answer that never comes.
    accepted.recv_timeout(Duration::from_secs(30)).expect("get never connected");
    std::thread::sleep(Duration::from_millis(300));
    signal(get.id(), "TERM");
    let status = exits_within(&mut get, GENEROUS);
    done.store(true, Ordering::Relaxed);
    let Some(status) = status else {
        let _ = get.kill();
        panic!("get still running {GENEROUS:?} after SIGTERM");
    };
    let out = get.wait_with_output().unwrap();
    assert_eq!(status.code(), Some(130), "{}", stderr_of(&out));
    assert!(stderr_of(&out).contains("interrupted"), "{}", stderr_of(&out));
}

#[test]
fn a_peer_dripping_its_handshake_is_given_up_on() {
    let t = tempdir();
    let (peer, done, _accepted) = fake_peer(dripping);
    let mut get = spawn_get(&t.path().join("client"), SOME_ID, &peer, &t.path().join("out"));
    // Twice PEER_TIMEOUT (20 s) for the whole handshake, plus room.
    let status = exits_within(&mut get, Duration::from_secs(60));
    done.store(true, Ordering::Relaxed);
    let Some(status) = status else {
        let _ = get.kill();
        panic!("get still talking to a dripping peer after 60 s");
    };
    let out = get.wait_with_output().unwrap();
    assert!(!status.success());
    assert!(stderr_of(&out).contains("no answer within"), "{}", stderr_of(&out));
}

#[test]
fn sigterm_ends_a_throttled_download_and_keeps_its_state() {
    let t = tempdir();
    let (sd, cd) = (t.path().join("seed"), t.path().join("client"));
    let src = t.path().join("f");
    let data = write_file(&src, 400_000, 9);
    let id = publish_id(&sd, &src, &["--chunk-size", "16KiB"]);
    // 10 KB/s: the download would take 40 s.
    let seeder = Seeder::start_with_args(&sd, 2, &["--max-upload-rate", "10KB"]);
    let out = t.path().join("out");
    let mut get = spawn_get(&cd, &id, &seeder.peer(), &out);
    // Wait until chunks are arriving (the resume state records some).
    let resume = t.path().join("out.furymesh-resume");
    let until = Instant::now() + Duration::from_secs(30);
    while verified_in(&resume) == 0 {
        assert!(Instant::now() < until, "no chunk arrived");
        assert!(get.try_wait().unwrap().is_none(), "get ended early");
        std::thread::sleep(Duration::from_millis(50));
    }
    signal(get.id(), "TERM");
    let Some(status) = exits_within(&mut get, GENEROUS) else {
        let _ = get.kill();
        panic!("get still running {GENEROUS:?} after SIGTERM");
    };
    let got = get.wait_with_output().unwrap();
    assert_eq!(status.code(), Some(130), "{}", stderr_of(&got));
    assert!(!out.exists(), "an interrupted download has no final name");
    assert!(verified_in(&resume) > 0, "what was verified is kept");
    // And the same command finishes it.
    drop(seeder);
    let seeder = Seeder::start(&sd, 2);
    run_ok(&mut get_cmd(&cd, &id, &seeder.peer(), &out));
    assert!(std::fs::read(&out).unwrap() == data);
}
