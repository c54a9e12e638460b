//! Network namespaces for tests that need several hosts (NATs, degraded links): running a
//! command that must succeed, and starting a process inside a namespace. Included with
//! `#[path = "common/netns.rs"] mod netns;` by the tests that use it.
#![allow(dead_code, unreachable_pub)]

use std::process::{Child, Command, Stdio};

/// Whether the test runs as root (network namespaces, nftables, TUN devices need it).
pub fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// Runs `cmd` (no shell), panicking with its output when it fails.
pub fn must(cmd: &[&str]) {
    let out = Command::new(cmd[0]).args(&cmd[1..]).output().expect("spawn");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Starts `cmd` (program, arguments and environment) inside network namespace `ns` with
/// `ip netns exec`, stdout and stderr piped.
pub fn spawn_in(ns: &str, cmd: &Command) -> Child {
    let mut full = Command::new("ip");
    full.args(["netns", "exec", ns]).arg(cmd.get_program()).args(cmd.get_args());
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => full.env(k, v),
            None => full.env_remove(k),
        };
    }
    full.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn")
}
