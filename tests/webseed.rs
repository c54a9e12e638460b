//! Web seeds (`get --web-seed URL`): Debian's nginx, started by the test on a loopback port
//! with its own configuration in a temp dir, serves the file beside FuryMesh seeders.

// Waiting for nginx to accept reads the clock directly (clippy.toml confines clock reads to
// node::clock inside the crate, not in tests).
#![allow(clippy::disallowed_methods)]

mod common;

use std::fs;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const CHUNK: usize = 64 * 1024;

/// One nginx (a single process: `master_process off`) on 127.0.0.1, serving `good` under
/// `/good/`, the same directory with ranges switched off under `/norange/`, `bad` under
/// `/bad/`, and a redirect loop at `/loop`. Killed on drop.
struct Nginx {
    child: Child,
    port: u16,
}

impl Nginx {
    fn start(dir: &Path, good: &Path, bad: &Path) -> Self {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let t = dir.join("tmp");
        fs::create_dir_all(&t).unwrap();
        let conf = format!(
            r#"
daemon off;
master_process off;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 64; }}
http {{
    access_log off;
    sendfile on;
    keepalive_timeout 10;
    default_type application/octet-stream;
    client_body_temp_path {t}/body; proxy_temp_path {t}/proxy; fastcgi_temp_path {t}/fastcgi;
    uwsgi_temp_path {t}/uwsgi; scgi_temp_path {t}/scgi;
    server {{
        listen 127.0.0.1:{port};
        location /good/ {{ alias {good}/; }}
        location /norange/ {{ alias {good}/; max_ranges 0; }}
        location /bad/ {{ alias {bad}/; }}
        location /loop {{ return 302 /loop; }}
    }}
}}
"#,
            dir = dir.display(),
            t = t.display(),
            good = good.display(),
            bad = bad.display(),
        );
        let cf = dir.join("nginx.conf");
        fs::write(&cf, conf).unwrap();
        let bin = ["/usr/sbin/nginx", "nginx"]
            .into_iter()
            .find(|b| Command::new(b).arg("-v").output().is_ok())
            .expect("nginx is not installed (scripts/test installs it with apt)");
        let child = Command::new(bin)
            .arg("-p")
            .arg(dir)
            .arg("-c")
            .arg(&cf)
            .arg("-e")
            .arg(dir.join("error.log"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut me = Self { child, port };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            let log = fs::read_to_string(dir.join("error.log")).unwrap_or_default();
            assert!(me.child.try_wait().unwrap().is_none(), "nginx exited: {log}");
            assert!(Instant::now() < deadline, "nginx did not listen: {log}");
            std::thread::sleep(Duration::from_millis(20));
        }
        me.port = port;
        me
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The --json report's row for web seed `url`.
fn web_row<'a>(report: &'a serde_json::Value, url: &str) -> &'a serde_json::Value {
    report["web_seeds"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["url"] == url)
        .unwrap_or_else(|| panic!("no web seed {url} in {report}"))
}

/// A file published by two data dirs (for two seeders), also laid out for nginx in
/// `www/good/` and, with one byte of every chunk flipped, in `www/bad/`.
fn setup(t: &Path, chunks: usize, seed: u64) -> (Vec<u8>, String, PathBuf, PathBuf) {
    let www = t.join("www");
    let f = www.join("good/f.bin");
    let bytes = write_file(&f, chunks * CHUNK - 123, seed);
    let mut bad = bytes.clone();
    for c in 0..chunks {
        bad[c * CHUNK + 7] ^= 0x5a;
    }
    fs::create_dir_all(www.join("bad")).unwrap();
    fs::write(www.join("bad/f.bin"), &bad).unwrap();
    let (d1, d2) = (t.join("s1"), t.join("s2"));
    let id = publish_id(&d1, &f, &["--chunk-size", "64KiB"]);
    publish(&d2, &[&f], &["--chunk-size", "64KiB"]);
    (bytes, id, d1, d2)
}

#[test]
fn a_download_mixes_a_linked_nginx_web_seed_with_two_seeders_and_gets_chunks_from_each() {
    let t = tempdir();
    // 16 MiB: the web seed starts before the seeders' handshakes are done, and fetches one
    // chunk at a time; big enough that it cannot take the whole file before they join.
    let (bytes, id, d1, d2) = setup(t.path(), 256, 71);
    let www = t.path().join("www");
    let nginx = Nginx::start(&t.path().join("nginx"), &www.join("good"), &www.join("bad"));
    let seeders = [Seeder::start(&d1, 1), Seeder::start(&d2, 1)];
    let out = t.path().join("out.bin");
    let web = nginx.url("/good/f.bin");
    // The web seed comes from a share link (`web-seed=`, percent-encoded), the peers from
    // the flags.
    let enc = percent_encoding::utf8_percent_encode(&web, percent_encoding::NON_ALPHANUMERIC);
    let link = format!("furymesh:{id}?web-seed={enc}");
    let mut cmd = fm(&t.path().join("dl"));
    cmd.args(["--json", "get", &link, "-o"]).arg(&out);
    for s in &seeders {
        cmd.args(["--peer", &s.peer()]);
    }
    let report = json(&run_ok(&mut cmd));
    assert!(fs::read(&out).unwrap() == bytes, "download differs");
    let w = web_row(&report, &web);
    assert!(w["chunks"].as_u64().unwrap() > 0, "no chunk from the web seed: {report}");
    assert_eq!(w["corrupt_chunks"], 0);
    assert!(w["error"].is_null(), "{report}");
    let mut total = w["chunks"].as_u64().unwrap();
    for p in report["peers"].as_array().unwrap() {
        assert!(p["chunks"].as_u64().unwrap() > 0, "no chunk from seeder {p}: {report}");
        total += p["chunks"].as_u64().unwrap();
    }
    assert!(total >= 256, "{report}");
}

#[test]
fn a_lying_web_seed_is_banned_and_broken_or_silent_ones_are_reported_while_the_file_arrives_intact()
{
    let t = tempdir();
    let (bytes, id, d1, _) = setup(t.path(), 32, 72);
    let www = t.path().join("www");
    let nginx = Nginx::start(&t.path().join("nginx"), &www.join("good"), &www.join("bad"));
    // One honest seeder, paced (about two seconds for the file): the liar answers many
    // requests before the file is done, and the silent one outlasts the peer timeout.
    let seeder = Seeder::start_with_args(&d1, 1, &["--max-upload-rate", "1MiB"]);
    // A "mirror" that accepts connections (the kernel's backlog) and never answers.
    let silent_listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let silent = format!("http://{}/f.bin", silent_listener.local_addr().unwrap());
    let conf = t.path().join("fast-timeout.toml");
    fs::write(&conf, "peer_timeout_ms = 1000\n").unwrap();
    let (bad, norange, missing, looping) = (
        nginx.url("/bad/f.bin"),
        nginx.url("/norange/f.bin"),
        nginx.url("/good/nothing-here.bin"),
        nginx.url("/loop"),
    );
    let out = t.path().join("out.bin");
    let mut cmd = fm(&t.path().join("dl"));
    cmd.arg("--config").arg(&conf);
    cmd.args(["--json", "get", &id, "--peer", &seeder.peer(), "-o"]).arg(&out);
    for w in [&bad, &norange, &missing, &looping, &silent] {
        cmd.args(["--web-seed", w]);
    }
    let done = run_ok(&mut cmd);
    let report = json(&done);
    assert!(fs::read(&out).unwrap() == bytes, "download differs");
    let liar = web_row(&report, &bad);
    assert_eq!(liar["banned"], true, "{report}");
    assert!(liar["corrupt_chunks"].as_u64().unwrap() >= 3, "{report}");
    assert_eq!(liar["chunks"], 0, "{report}");
    let err = |url: &str| web_row(&report, url)["error"].as_str().unwrap_or("").to_owned();
    assert!(err(&norange).contains("does not support Range"), "{report}");
    assert!(err(&missing).contains("404"), "{report}");
    assert!(err(&looping).contains("redirect"), "{report}");
    assert!(err(&silent).contains("stalled"), "{report}");
    // Each was also a note on stderr while the download went on.
    let stderr = stderr_of(&done);
    for url in [&bad, &norange, &missing, &looping, &silent] {
        assert!(stderr.contains(&format!("web seed {url}")), "{url} not noted: {stderr}");
    }
    assert_eq!(report["peers"][0]["banned"], false);
}

/// `get --detach --web-seed URL` hands the web seed to the running node (the API's
/// `web_seeds`), which fetches from it like a foreground `get`.
#[test]
fn a_detached_get_passes_its_web_seed_to_the_node() {
    let t = tempdir();
    let (bytes, id, d1, _) = setup(t.path(), 32, 73);
    let www = t.path().join("www");
    let nginx = Nginx::start(&t.path().join("nginx"), &www.join("good"), &www.join("bad"));
    // A slow seeder: the mirror delivers most of the file.
    let seeder = Seeder::start_with_args(&d1, 1, &["--max-upload-rate", "256KiB"]);
    let dl = t.path().join("dl");
    let _ = fs::remove_file(dl.join("api.addr"));
    let node = Seeder::start_with_args(&dl, 1, &["--api", "127.0.0.1:0"]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !dl.join("api.addr").exists() {
        assert!(Instant::now() < deadline, "the node wrote no api.addr");
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = t.path().join("out.bin");
    let web = nginx.url("/good/f.bin");
    let started = json(&run_ok(
        fm(&dl)
            .args(["--json", "get", &id, "--peer", &seeder.peer(), "--web-seed", &web, "--detach"])
            .arg("-o")
            .arg(&out),
    ));
    let deadline = Instant::now() + Duration::from_secs(60);
    let row = loop {
        let list = json(&run_ok(fm(&dl).args(["--json", "downloads"])));
        let row = list
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["id"] == started["id"])
            .cloned()
            .unwrap_or_else(|| panic!("download {} not listed: {list}", started["id"]));
        if !matches!(row["state"].as_str(), Some("starting" | "running")) {
            break row;
        }
        assert!(Instant::now() < deadline, "the detached download did not end: {row}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(row["state"], "completed", "{row}");
    assert!(fs::read(&out).unwrap() == bytes, "download differs");
    let w = web_row(&row["report"], &web);
    assert!(w["chunks"].as_u64().unwrap() > 0, "nothing from the web seed: {row}");
    drop(node);
}
