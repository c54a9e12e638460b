//! The web UI (issue 13, item 6) in a real headless Chromium (Debian `chromium`, which
//! scripts/test installs when missing), driven over the DevTools protocol: the page of a
//! running `seed` shows its published file with its file ID and `NODE_ID@HOST:PORT`, a
//! download started through the API advances on screen, the page's pause and resume
//! buttons act on it (with the token from the page's `#token=` fragment), and the file
//! arrives byte-identical. The screenshot is saved as target/tmp/ui-screenshot.png.
// Waits for events read the wall clock (the lint confines it to node::clock in the crate).
#![allow(clippy::disallowed_methods)]

#[path = "common/chromium.rs"]
mod chromium;
mod common;

use std::fs;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use chromium::{Browser, Page};
use common::{node_id, publish_id, tempdir, write_file, Seeder};
use furymesh::api::ApiClient;
use serde_json::{json, Value};

/// What the page shows: the file rows' IDs and peer addresses, and each download row's
/// on-screen percentage and state.
const SCREEN: &str = r#"!document.querySelector('#status') ? '{}' : JSON.stringify({
  files: [...document.querySelectorAll('#files tbody tr')].map(r => ({
    id: r.dataset.fileId,
    kind: r.dataset.kind,
    state: r.dataset.state,
    text: r.textContent,
    peer: (r.querySelector('.peer') || {}).textContent || null })),
  downloads: [...document.querySelectorAll('#downloads tbody tr')].map(r => ({
    id: r.dataset.downloadId,
    pct: parseFloat(r.querySelector('.pct').textContent),
    state: r.children[2].firstChild.textContent })),
  status: document.querySelector('#status').textContent,
  banner: document.querySelector('#banner').hidden ? null : document.querySelector('#banner').textContent,
})"#;

fn screen(page: &mut Page) -> Value {
    serde_json::from_str(page.eval(SCREEN).as_str().unwrap()).unwrap()
}

fn download_pct(v: &Value) -> Option<f64> {
    v["downloads"].get(0).and_then(|d| d["pct"].as_f64())
}

#[test]
fn ui_shows_files_and_a_live_download_in_chromium() {
    let t = tempdir();
    // A throttled seeder with a 24 MiB file: about 24 s to fetch at 1 MiB/s.
    let src_dir = t.path().join("source");
    let big = t.path().join("release.iso");
    let bytes = write_file(&big, 24 << 20, 7);
    let big_id = publish_id(&src_dir, &big, &[]);
    let source =
        Seeder::start_with_args(&src_dir, 1, &["--api", "off", "--max-upload-rate", "1MiB"]);
    let source_peer = format!("{}@{}", node_id(&src_dir), source.addr);

    // The node whose UI is under test, with a published file of its own.
    let dir = t.path().join("node");
    let small = t.path().join("notes.txt");
    write_file(&small, 50_000, 3);
    let small_id = publish_id(&dir, &small, &[]);
    // A release (a collection) and a file that will change on disk while the node runs.
    let tree = t.path().join("app-1.0");
    write_file(&tree.join("bin/app"), 20_000, 4);
    write_file(&tree.join("README"), 1_000, 5);
    let rows = common::publish_rows(&dir, &[&tree], &[]);
    let cid = rows.iter().find_map(|r| r["collection_id"].as_str()).unwrap().to_owned();
    let drifting = t.path().join("drifting.log");
    write_file(&drifting, 10_000, 6);
    let drifting_id = publish_id(&dir, &drifting, &[]);
    let _node = Seeder::start_with_args(&dir, 1, &["--api", "127.0.0.1:0"]);
    // The API starts right after the shards listen and then writes its address file.
    let deadline = Instant::now() + Duration::from_secs(30);
    let api = loop {
        match ApiClient::for_data_dir(&dir) {
            Ok(api) => break api,
            Err(e) => assert!(Instant::now() < deadline, "no API address file: {e}"),
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let token = fs::read_to_string(dir.join("api.token")).unwrap().trim().to_owned();
    // Edited in place after publish: the page must say so (checked below).
    fs::OpenOptions::new().append(true).open(&drifting).unwrap().write_all(b"appended").unwrap();

    let out = t.path().join("fetched.iso");
    let started = api
        .request(
            "POST",
            "/api/downloads",
            Some(&json!({"file_id": big_id, "peers": [source_peer], "output": out})),
        )
        .expect("start a download through the API");
    let download_id = started["id"].as_u64().unwrap();

    let browser = Browser::start(&t.path().join("chromium-profile"));
    let mut page = browser.page();
    page.call("Page.enable", json!({}));
    page.call("Page.navigate", json!({"url": format!("http://{}/#token={token}", api.addr())}));

    // The published file, with its ID and the address to fetch it from.
    let v = page.wait_for("the published file", SCREEN, Duration::from_secs(60), |v| {
        let v: Value = serde_json::from_str(v.as_str().unwrap_or("{}")).unwrap_or_default();
        v["files"].as_array().is_some_and(|f| f.iter().any(|f| f["id"] == small_id.as_str()))
    });
    let v: Value = serde_json::from_str(v.as_str().unwrap()).unwrap();
    let row = v["files"].as_array().unwrap().iter().find(|f| f["id"] == small_id.as_str()).unwrap();
    assert!(row["text"].as_str().unwrap().contains("notes.txt"), "{row}");
    let node_peer = row["peer"].as_str().unwrap();
    assert!(node_peer.starts_with(&format!("{}@127.0.0.1:", node_id(&dir))), "{node_peer}");

    // The download's progress, as text on screen, rises while it runs.
    let deadline = Instant::now() + Duration::from_secs(60);
    let first = loop {
        let v = screen(&mut page);
        assert!(v["banner"].is_null(), "the page reports an error: {v}");
        if let Some(p) = download_pct(&v).filter(|p| *p > 0.0) {
            break p;
        }
        let d = api.get(&format!("/api/downloads/{download_id}")).unwrap();
        assert!(Instant::now() < deadline, "no progress on screen: {v}; the API says {d}");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(first < 100.0, "the download finished before the page showed it running");
    let later = page.wait_for("progress to advance", SCREEN, Duration::from_secs(60), |v| {
        let v: Value = serde_json::from_str(v.as_str().unwrap()).unwrap();
        download_pct(&v).is_some_and(|p| p > first)
    });
    let later = download_pct(&serde_json::from_str(later.as_str().unwrap()).unwrap()).unwrap();
    // The node counts it as running (a download the API waits on is still running).
    let node = api.get("/api/node").unwrap();
    assert_eq!(node["downloads_active"], 1, "{node}");
    let shot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("ui-screenshot.png");
    page.screenshot(&shot);
    eprintln!("progress on screen: {first}% then {later}%; screenshot {}", shot.display());

    // The page's pause button pauses it in the node (the page holds the token), and its
    // resume button resumes it.
    page.eval(&format!(
        "document.querySelector('#downloads tr[data-download-id=\"{download_id}\"] button').click()"
    ));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let d = api.get(&format!("/api/downloads/{download_id}")).unwrap();
        if d["state"] == "paused" || d["state"] == "completed" {
            break;
        }
        assert!(Instant::now() < deadline, "the pause button did nothing: {d}");
        std::thread::sleep(Duration::from_millis(100));
    }
    page.wait_for("the paused state on screen", SCREEN, Duration::from_secs(30), |v| {
        let v: Value = serde_json::from_str(v.as_str().unwrap()).unwrap();
        v["downloads"][0]["state"] == "paused" || v["downloads"][0]["state"] == "completed"
    });
    // Paused, time is no object: the release is a collection row under its c-… ID, with
    // its number of files.
    let v = screen(&mut page);
    let coll = v["files"].as_array().unwrap().iter().find(|f| f["id"] == cid.as_str());
    let coll = coll.unwrap_or_else(|| panic!("no row for {cid}: {v}"));
    assert_eq!(coll["kind"], "collection", "{coll}");
    assert!(coll["text"].as_str().unwrap().contains("collection of 2 files"), "{coll}");
    // The file changed on disk shows as changed, with what to do about it.
    let v = page.wait_for("the changed file", SCREEN, Duration::from_secs(30), |v| {
        let v: Value = serde_json::from_str(v.as_str().unwrap_or("{}")).unwrap_or_default();
        v["files"].as_array().is_some_and(|f| {
            f.iter().any(|f| f["id"] == drifting_id.as_str() && f["state"] == "changed")
        })
    });
    let v: Value = serde_json::from_str(v.as_str().unwrap()).unwrap();
    let row = v["files"].as_array().unwrap().iter().find(|f| f["id"] == drifting_id.as_str());
    let text = row.unwrap()["text"].as_str().unwrap().to_owned();
    assert!(text.contains("changed on disk since publish") && text.contains("republish"), "{text}");
    page.eval(&format!(
        "document.querySelectorAll('#downloads tr[data-download-id=\"{download_id}\"] button')[1].click()"
    ));
    page.wait_for("completion on screen", SCREEN, Duration::from_secs(120), |v| {
        let v: Value = serde_json::from_str(v.as_str().unwrap()).unwrap();
        v["downloads"][0]["state"] == "completed" && download_pct(&v) == Some(100.0)
    });
    assert_eq!(fs::read(&out).unwrap(), bytes, "the download is not byte-identical");
}
