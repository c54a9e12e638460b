//! `seed` as a service (issue 13, item 7): DATA_DIR/config.toml sets `seed`'s options,
//! flags and FURYMESH_* variables override it, `furymesh config` prints what `seed` runs
//! with, bad files are refused naming the key, and logs follow `--log-format` and
//! `RUST_LOG`. Real `furymesh` processes on loopback.
// Waits for events read the wall clock (the lint confines it to node::clock in the crate).
#![allow(clippy::disallowed_methods)]

mod common;

use std::fs;
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::{fm, json, run_ok, stderr_of, tempdir, write_file, Seeder};
use serde_json::Value;

/// Starts `seed` with `args` and `envs`, collecting its stderr lines until one contains
/// `until` (or it exits). Returns the child and the lines.
fn seed_until(
    dir: &Path,
    args: &[&str],
    envs: &[(&str, &str)],
    until: &str,
) -> (Child, Vec<String>) {
    let mut cmd = fm(dir);
    cmd.args(args).arg("seed");
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let mut child = cmd.stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    let until = until.to_owned();
    std::thread::spawn(move || {
        let mut lines = Vec::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let done = line.contains(&until);
            lines.push(line);
            if done {
                break;
            }
        }
        let _ = tx.send(lines);
    });
    let lines = rx.recv_timeout(Duration::from_secs(60)).expect("seed wrote nothing in 60 s");
    (child, lines)
}

fn stop(mut child: Child) {
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn config_file_sets_seed_options_and_flags_override_it() {
    let t = tempdir();
    let dir = t.path().join("node");
    let f = t.path().join("a.bin");
    write_file(&f, 100_000, 1);
    run_ok(fm(&dir).arg("publish").arg(&f));
    // The file's listen address is taken: seed must fail on it, naming it...
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_addr = taken.local_addr().unwrap().to_string();
    fs::write(
        dir.join("config.toml"),
        format!(
            "idle_timeout_ms = 7000\n[seed]\nlisten = \"{taken_addr}\"\nshards = 1\napi = \"off\"\nencryption = \"off\"\n"
        ),
    )
    .unwrap();
    let out = fm(&dir).args(["seed"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr_of(&out));
    assert!(stderr_of(&out).contains(&taken_addr), "{}", stderr_of(&out));

    // ... and run with the flag's address instead, the file's other options applied.
    let (child, lines) =
        seed_until(&dir, &[], &[("FURYMESH_LISTEN", "127.0.0.1:0")], "listening on");
    let line = lines.last().unwrap();
    assert!(line.contains("listening on 127.0.0.1:"), "{lines:?}");
    assert!(line.contains("(1 shard, 1 file,") && line.contains("encryption OFF"), "{line}");
    // `--api off` from the file: no API started, no address written.
    assert!(!dir.join("api.addr").exists(), "the file said api = off");
    stop(child);

    // `furymesh config` shows the same resolution, and where each value came from.
    let v = json(&run_ok(fm(&dir).args(["--json", "config", "--listen", "127.0.0.1:5555"])));
    assert_eq!(v["seed"]["listen"], "127.0.0.1:5555");
    assert_eq!(v["seed"]["sources"]["listen"], "command_line");
    assert_eq!(v["seed"]["shards"], 1);
    assert_eq!(v["seed"]["sources"]["shards"], "file");
    assert_eq!(v["seed"]["encryption"], "off");
    assert_eq!(v["seed"]["api"], "off");
    assert_eq!(v["seed"]["sources"]["max_upload_rate"], "default");
    assert_eq!(v["node"]["idle_timeout_ms"], 7000);
    assert_eq!(v["config_file"], dir.join("config.toml").to_str().unwrap());
    // The environment beats the file, and is named as the source (not "the command
    // line"); a flag beside it still says command line.
    let v = json(&run_ok(fm(&dir).args(["--json", "config"]).env("FURYMESH_ENCRYPTION", "on")));
    assert_eq!(v["seed"]["encryption"], "on");
    assert_eq!(
        v["seed"]["sources"]["encryption"],
        serde_json::json!({"environment": "FURYMESH_ENCRYPTION"})
    );
    let secret = t.path().join("net.secret");
    fs::write(&secret, "0123456789abcdef0123456789abcdef").unwrap();
    let human = run_ok(
        fm(&dir)
            .args(["config", "--shards", "3"])
            .env("FURYMESH_ENCRYPTION", "on")
            .env("FURYMESH_NETWORK_SECRET", &secret),
    );
    let human = String::from_utf8(human.stdout).unwrap();
    assert!(
        human.contains("# seed.encryption from the environment variable FURYMESH_ENCRYPTION"),
        "{human}"
    );
    assert!(
        human.contains(
            "# seed.network_secret from the environment variable FURYMESH_NETWORK_SECRET"
        ),
        "{human}"
    );
    assert!(human.contains("# seed.shards from the command line"), "{human}");
    assert!(!human.contains("encryption from the command line"), "{human}");

    // The human form is itself a configuration file that gives the same settings.
    let v = json(&run_ok(fm(&dir).args(["--json", "config"])));
    let text = String::from_utf8(run_ok(fm(&dir).arg("config")).stdout).unwrap();
    let copy = t.path().join("copy.toml");
    fs::write(&copy, &text).unwrap();
    let v2 = json(&run_ok(fm(&dir).arg("--config").arg(&copy).args(["--json", "config"])));
    for k in ["listen", "shards", "encryption", "api", "bootstrap"] {
        assert_eq!(v2["seed"][k], v["seed"][k], "{k} after a round trip through:\n{text}");
    }
    assert_eq!(v2["node"], v["node"]);
    drop(taken);
}

#[test]
fn bad_configuration_is_refused_naming_the_key() {
    let t = tempdir();
    let dir = t.path().join("node");
    for (text, key) in [
        ("[seed]\nlisten = \"not-an-address\"\n", "listen"),
        ("[seed]\nmax_upload_rate = \"fast\"\n", "max_upload_rate"),
        ("[seed]\nshards = 0\n", "shards"),
        ("[seed]\nlisen = \"127.0.0.1:1\"\n", "lisen"),
        ("peer_timeout_ms = 5\n", "peer_timeout_ms"),
        ("[seed\n", "config.toml"),
    ] {
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("config.toml"), text).unwrap();
        for cmd in [&["seed"][..], &["config"][..]] {
            let out = fm(&dir).args(cmd).output().unwrap();
            let err = stderr_of(&out);
            assert_eq!(out.status.code(), Some(1), "{cmd:?} with {text:?}: {err}");
            assert!(err.contains(key), "{cmd:?} with {text:?} should name {key}: {err}");
            assert!(err.contains("config.toml"), "{cmd:?} should name the file: {err}");
        }
    }
    // An explicit --config that does not exist is an error, not the defaults.
    let out = fm(&dir).args(["--config", "/nonexistent/furymesh.toml", "config"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr_of(&out).contains("/nonexistent/furymesh.toml"), "{}", stderr_of(&out));
}

#[test]
fn logs_follow_log_format_and_rust_log() {
    let t = tempdir();
    let dir = t.path().join("node");
    let flags = ["--log-format", "json"];
    let envs =
        [("FURYMESH_LISTEN", "127.0.0.1:0"), ("FURYMESH_API", "off"), ("FURYMESH_SHARDS", "1")];
    let (child, lines) = seed_until(&dir, &flags, &envs, "listening on");
    stop(child);
    // Every line is one JSON object with a timestamp, a level and the message.
    let mut levels = Vec::new();
    for line in &lines {
        let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(v["timestamp"].as_str().is_some_and(|s| s.contains('T')), "{line}");
        levels.push(v["level"].as_str().unwrap().to_owned());
    }
    let last: Value = serde_json::from_str(lines.last().unwrap()).unwrap();
    assert!(last["fields"]["message"].as_str().unwrap().contains("listening on 127.0.0.1:"));
    assert_eq!(last["level"], "INFO");
    // The warning that nothing is published yet comes first, at WARN.
    assert!(levels.iter().any(|l| l == "WARN"), "{lines:?}");

    // RUST_LOG=warn: the warning stays, the INFO line goes (the node still starts: its
    // API address appears once it listens).
    let mut envs2 = envs.to_vec();
    envs2.retain(|(k, _)| *k != "FURYMESH_API");
    envs2.extend([("RUST_LOG", "warn"), ("FURYMESH_API", "127.0.0.1:0")]);
    let mut cmd = fm(&dir);
    cmd.arg("seed");
    for (k, v) in &envs2 {
        cmd.env(k, v);
    }
    let mut child = cmd.stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    let addr_file = dir.join("api.addr");
    let mut waited = 0;
    while !addr_file.exists() && waited < 600 {
        std::thread::sleep(Duration::from_millis(100));
        waited += 1;
    }
    assert!(addr_file.exists(), "seed never started its API");
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    let err = stderr_of(&out);
    assert!(err.contains("nothing published"), "{err}");
    assert!(!err.contains("listening on") && !err.contains("API on"), "{err}");
}

/// dist/furymesh.service: systemd accepts it (no unknown keys or bad values) and rates its
/// exposure "OK" or better (3.5 or less on systemd-analyze's 0–10 scale).
#[test]
fn systemd_unit_verifies_and_is_hardened() {
    let t = tempdir();
    let unit =
        fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("dist/furymesh.service"))
            .unwrap();
    for must in [
        "ProtectSystem=strict",
        "ReadWritePaths=/var/lib/furymesh",
        "NoNewPrivileges=yes",
        "Restart=on-failure",
    ] {
        assert!(unit.lines().any(|l| l == must), "the unit lacks {must}");
    }
    // verify checks that ExecStart's binary exists: point it at the one under test.
    let path = t.path().join("furymesh.service");
    fs::write(&path, unit.replace("/usr/local/bin/furymesh", common::BIN)).unwrap();
    let out = std::process::Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("systemd-analyze (scripts/test installs systemd)");
    assert!(out.status.success() && out.stderr.is_empty(), "verify: {}", stderr_of(&out));
    let out = std::process::Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--threshold=35"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(out.status.success(), "exposure above 3.5:\n{}", String::from_utf8_lossy(&out.stdout));
}

/// One `seed` per data directory: a second one on the same directory is refused at once
/// with a clear message, and the first keeps running (and keeps its `api.addr`).
#[test]
fn a_second_seed_on_the_same_data_directory_is_refused() {
    let t = tempdir();
    let data = t.path().join("data");
    let mut first = Seeder::start_with_args(&data, 1, &["--api", "127.0.0.1:0"]);
    let second = fm(&data)
        .args(["seed", "--listen", "127.0.0.1:0", "--api", "127.0.0.1:0", "--shards", "1"])
        .output()
        .unwrap();
    assert!(!second.status.success());
    let err = stderr_of(&second);
    assert!(err.contains("another `furymesh seed` is already running"), "{err}");
    assert!(first.is_running());
    // The second never got as far as the API files: the first's are intact.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !data.join("api.addr").exists() {
        assert!(std::time::Instant::now() < deadline, "the first seed wrote no api.addr");
        std::thread::sleep(Duration::from_millis(20));
    }
    run_ok(fm(&data).arg("status"));
    first.stop();
}
