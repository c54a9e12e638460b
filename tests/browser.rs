//! Browsers download from FuryMesh seeders (issue 16) in a real headless Chromium (Debian
//! `chromium`, which scripts/test installs when missing), driven over the DevTools
//! protocol: the share page `/f/FILE_ID` of a `seed --http … --webrtc …` shows the file,
//! its Download button fetches the manifest (checked against the file ID), opens a WebRTC
//! data channel to the seeder through the page's HTTP signaling, fetches every chunk over
//! it and verifies each with WebCrypto; the file Chromium saves is byte-identical. The
//! seeder counts the session as a browser's WebRTC session. With other seeders of the file
//! in the DHT, the page signals them through its node too and downloads from all at once.
// Waits for events read the wall clock (the lint confines it to node::clock in the crate).
#![allow(clippy::disallowed_methods)]

#[path = "common/chromium.rs"]
mod chromium;
mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chromium::{Browser, Page};
use common::{fm, get_cmd, json, publish_id, run_ok, tempdir, write_file, Seeder};
use serde_json::{json, Value};

/// A seeder with the HTTP gateway, WebRTC and the API on loopback, and its gateway address.
fn seeder_with_share_page(data: &Path) -> (Seeder, String) {
    let args = ["--api", "127.0.0.1:0", "--http", "127.0.0.1:0", "--webrtc", "127.0.0.1:0"];
    let seeder = Seeder::start_with_args(data, 1, &args);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(addr) = furymesh::gateway::read_addr(data) {
            return (seeder, addr.to_string());
        }
        assert!(Instant::now() < deadline, "the gateway wrote no http.addr");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The page's state (`idle`, `manifest`, `connecting`, `downloading`, `saving`, `done`,
/// `failed`) and figures, as the page keeps them for its own display.
fn page_status(page: &mut Page) -> Value {
    let v = page.eval("JSON.stringify(window.furymeshStatus || null)");
    serde_json::from_str(v.as_str().unwrap_or("null")).unwrap_or(Value::Null)
}

/// Waits until the page reaches `done` (a `failed` page fails the test with its message).
fn wait_done(page: &mut Page, limit: Duration) -> Value {
    let deadline = Instant::now() + limit;
    loop {
        let s = page_status(page);
        assert_ne!(s["state"], "failed", "the page failed: {s}");
        if s["state"] == "done" {
            return s;
        }
        assert!(Instant::now() < deadline, "the download did not finish: {s}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Waits until Chromium has saved `name` whole in `dir` (it writes `*.crdownload` first
/// and renames at the end) and returns its path.
fn wait_saved(dir: &Path, name: &str, len: u64, limit: Duration) -> PathBuf {
    let path = dir.join(name);
    let deadline = Instant::now() + limit;
    loop {
        if fs::metadata(&path).is_ok_and(|m| m.len() == len) {
            return path;
        }
        let seen: Vec<_> = fs::read_dir(dir)
            .map(|d| d.filter_map(|e| e.ok()).map(|e| e.file_name()).collect())
            .unwrap_or_default();
        assert!(Instant::now() < deadline, "{name} was not saved; the directory holds {seen:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A headless Chromium on the share page of `id` at gateway `http`, saving downloads into
/// `saved` without a save dialog (File System Access), which a headless browser cannot
/// answer: `?save=download` (Blob parts, saved at the end) or `?save=stream` (streamed to
/// the download through the page's service worker).
struct SharePage {
    page: Page,
    saved: PathBuf,
    _downloads: Page,
    _browser: Browser,
}

/// One browser test at a time: three Chromiums and three debug seeders at once on a
/// 2-core machine starve each other's ICE consent checks.
static ONE_BROWSER: std::sync::Mutex<()> = std::sync::Mutex::new(());

impl SharePage {
    /// The page with `?save=download`.
    fn open(dir: &Path, http: impl std::fmt::Display, id: &str) -> Self {
        Self::open_saving(dir, http, id, "download")
    }

    /// The page with `?save=SAVE`.
    fn open_saving(dir: &Path, http: impl std::fmt::Display, id: &str, save: &str) -> Self {
        let saved = dir.join("downloads");
        fs::create_dir_all(&saved).unwrap();
        let browser = Browser::start(&dir.join("chromium-profile"));
        let downloads = browser.allow_downloads(&saved);
        let mut page = browser.page();
        page.call("Page.enable", json!({}));
        page.call("Page.navigate", json!({"url": format!("http://{http}/f/{id}?save={save}")}));
        // The script is deferred: the button exists before its listener does, and a click
        // in between is lost. `furymeshStatus` is set in the same run that adds it.
        page.wait_for(
            "the share page and its script",
            "window.furymeshStatus && document.getElementById('download') \
             ? document.getElementById('share').innerText : ''",
            Duration::from_secs(60),
            |v| v.as_str().is_some_and(|s| s.contains(id)),
        );
        Self { page, saved, _downloads: downloads, _browser: browser }
    }

    /// Presses the page's Download button.
    fn download(&mut self) {
        self.page.eval("document.getElementById('download').click()");
    }

    /// Downloads `name` whole and checks Chromium saved exactly `bytes` with no corrupt
    /// chunk on the way; the page's final status and the seconds it took.
    fn download_whole(&mut self, name: &str, bytes: &[u8]) -> (Value, f64) {
        let began = Instant::now();
        self.download();
        let status = wait_done(&mut self.page, Duration::from_secs(600));
        let secs = began.elapsed().as_secs_f64();
        assert_eq!(status["bytes"], bytes.len(), "{status}");
        assert_eq!(status["corrupt"], 0, "{status}");
        let path = wait_saved(&self.saved, name, bytes.len() as u64, Duration::from_secs(120));
        assert!(fs::read(&path).unwrap() == bytes, "the saved file differs from the published one");
        (status, secs)
    }
}

#[test]
fn a_browser_downloads_64_mib_over_webrtc_and_verifies_every_chunk() {
    let _one = ONE_BROWSER.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let t = tempdir();
    let data = t.path().join("seed");
    let file = t.path().join("release-1.0.iso");
    let bytes = write_file(&file, 64 << 20, 16);
    let id = publish_id(&data, &file, &[]);
    let (seeder, http) = seeder_with_share_page(&data);

    // The page shows the file's name, size and ID.
    let mut share = SharePage::open(t.path(), &http, &id);
    let shown = share.page.eval("document.getElementById('share').innerText");
    let shown = shown.as_str().unwrap();
    assert!(shown.contains("release-1.0.iso") && shown.contains("64.0 MiB"), "{shown}");

    let (_, secs) = share.download_whole("release-1.0.iso", &bytes);
    let screen = share.page.eval("document.getElementById('progress').innerText");
    eprintln!("browser: 64 MiB in {secs:.1} s ({:.1} MiB/s) on screen: {screen}", 64.0 / secs);
    drop(share);

    // The same seeder to a native WebRTC peer (`get --transport webrtc`), for the figure.
    let api = furymesh::api::ApiClient::for_data_dir(&data).expect("the seeder's API");
    let udp = api.get("/api/node").unwrap()["webrtc_address"].as_str().unwrap().to_owned();
    let out = t.path().join("native.iso");
    let began = Instant::now();
    run_ok(get_cmd(&t.path().join("native"), &id, &udp, &out).args(["--transport", "webrtc"]));
    let native = began.elapsed().as_secs_f64();
    assert!(fs::read(&out).unwrap() == bytes, "the native download differs");
    eprintln!(
        "native get --transport webrtc: 64 MiB in {native:.1} s ({:.1} MiB/s)",
        64.0 / native
    );

    // The seeder served it as a browser's WebRTC session.
    let stats = seeder.stop();
    assert!(stats["browser_connections"].as_u64() >= Some(1), "{stats}");
    assert!(stats["webrtc_connections"].as_u64() >= Some(1), "{stats}");
    assert!(stats["chunks_served"].as_u64() >= Some(128), "{stats}");
}

/// The seeder's upload connections as `/api/peers` lists them.
fn uploads(api: &furymesh::api::ApiClient) -> Vec<Value> {
    let peers = api.get("/api/peers").expect("GET /api/peers");
    let all = peers.as_array().cloned().unwrap_or_default();
    all.into_iter().filter(|p| p["direction"] == "upload").collect()
}

#[test]
fn closing_the_tab_mid_download_frees_the_session_on_the_seeder() {
    let _one = ONE_BROWSER.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let t = tempdir();
    let data = t.path().join("seed");
    let file = t.path().join("big.bin");
    write_file(&file, 64 << 20, 17);
    let id = publish_id(&data, &file, &[]);
    // Paced, so the tab closes mid-download: 64 MiB take 32 s at 2 MiB/s.
    let args = [
        "--api",
        "127.0.0.1:0",
        "--http",
        "127.0.0.1:0",
        "--webrtc",
        "127.0.0.1:0",
        "--max-upload-rate",
        "2MiB",
    ];
    let _seeder = Seeder::start_with_args(&data, 1, &args);
    let deadline = Instant::now() + Duration::from_secs(30);
    let (http, api) = loop {
        let api = furymesh::api::ApiClient::for_data_dir(&data);
        if let (Some(http), Ok(api)) = (furymesh::gateway::read_addr(&data), api) {
            break (http, api);
        }
        assert!(Instant::now() < deadline, "no http.addr or api.addr");
        std::thread::sleep(Duration::from_millis(50));
    };

    let mut share = SharePage::open(t.path(), http, &id);
    share.download();
    let page = &mut share.page;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let s = page_status(page);
        if s["bytes"].as_u64() > Some(0) {
            break;
        }
        assert_ne!(s["state"], "failed", "the page failed: {s}");
        assert!(Instant::now() < deadline, "no bytes arrived: {s}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let open = uploads(&api);
    assert_eq!(open.len(), 1, "{open:?}");
    assert_eq!(open[0]["transport"], "webrtc", "{open:?}");
    assert!(open[0]["node_id"].is_null(), "a browser proves no node ID: {open:?}");

    // The page mid-download, for the README (docs/share-screenshot.png).
    let shot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("share-screenshot.png");
    page.screenshot(&shot);
    eprintln!("screenshot {}", shot.display());

    // Close the tab, no goodbye from the page's script.
    let status = page_status(page);
    assert_ne!(status["state"], "done", "the download finished before the tab closed");
    page.call("Page.close", json!({}));
    drop(share);
    let closed = Instant::now();
    let deadline = closed + Duration::from_secs(60);
    loop {
        let open = uploads(&api);
        if open.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "the session outlived its tab: {open:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!(
        "the seeder freed the session {:.1} s after the tab closed",
        closed.elapsed().as_secs_f64()
    );
}

/// Overwrites `bytes` at `offset` of `path` in place, keeping its size and mtime, so the
/// seeder (which checks only those) serves the changed bytes under the old file ID.
fn rewrite_in_place(path: &Path, offset: u64, bytes: &[u8]) {
    use std::os::unix::fs::FileExt;
    let mtime = fs::metadata(path).unwrap().modified().unwrap();
    let f = fs::OpenOptions::new().write(true).open(path).unwrap();
    f.write_all_at(bytes, offset).unwrap();
    f.set_modified(mtime).unwrap();
    f.sync_all().unwrap();
}

/// Sizes of the files in `dir` (a download in progress included), by name.
fn listing(dir: &Path) -> Vec<(String, u64)> {
    let mut files: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| (e.file_name().to_string_lossy().into_owned(), e.metadata().unwrap().len()))
        .collect();
    files.sort();
    files
}

/// A chunk changed on disk behind a lone seeder's back: the page refuses it every time,
/// drops the seeder and gives up, and not one byte of it reaches the disk; put right, the
/// same page downloads the file whole. `save` is the page's save path.
fn corrupt_chunk_refused(save: &str) {
    let t = tempdir();
    let data = t.path().join("seed");
    let file = t.path().join("tools.tar");
    let bytes = write_file(&file, 8 << 20, 18);
    let id = publish_id(&data, &file, &[]);
    // One chunk changes on disk behind the seeder's back.
    let chunk = 512 * 1024;
    let at = 3 * chunk + 1000;
    rewrite_in_place(&file, at as u64, b"not what was published");
    let (_seeder, http) = seeder_with_share_page(&data);

    let mut share = SharePage::open_saving(t.path(), &http, &id, save);
    share.download();
    let page = &mut share.page;
    // Every copy of that chunk fails its hash: it is fetched again, the seeder is dropped
    // after repeated corrupt chunks (and again on every new channel), and the page gives up
    // without saving anything.
    let failed = page.wait_for(
        "the page to refuse the corrupt seeder",
        "JSON.stringify(window.furymeshStatus)",
        Duration::from_secs(300),
        |v| v.as_str().is_some_and(|s| s.contains("\"state\":\"failed\"")),
    );
    let failed: Value = serde_json::from_str(failed.as_str().unwrap()).unwrap();
    assert!(failed["corrupt"].as_u64() >= Some(3), "{failed}");
    assert!(failed["error"].as_str().unwrap().contains("corrupt"), "{failed}");
    let shown = page.eval("document.getElementById('error').innerText");
    assert!(shown.as_str().unwrap().contains("corrupt"), "{shown}");
    if save == "stream" {
        // The browser's download had begun; it holds at most the verified chunks before the
        // corrupt one, and it fails rather than end as the file.
        assert_eq!(failed["save"], "stream", "{failed}");
        let left = listing(&share.saved);
        eprintln!("the failed streamed download left {left:?}");
        for (name, len) in left {
            assert_ne!(name, "tools.tar", "a failed download was saved as the file");
            let held = fs::read(share.saved.join(&name)).unwrap();
            assert!(len as usize <= 3 * chunk, "{name}: {len} bytes, past the corrupt chunk");
            assert!(held == bytes[..held.len()], "{name} holds bytes that were not verified");
        }
    } else {
        let listed = listing(&share.saved);
        assert!(listed.is_empty(), "something was saved: {listed:?}");
    }

    // Put right, the same page downloads it whole.
    rewrite_in_place(&file, at as u64, &bytes[at..at + 22]);
    share.download();
    let status = wait_done(&mut share.page, Duration::from_secs(300));
    assert_eq!(status["corrupt"], 0, "{status}");
    assert_eq!(status["save"], save.replace("download", "blob"), "{status}");
    let path = wait_saved(&share.saved, "tools.tar", 8 << 20, Duration::from_secs(120));
    assert!(fs::read(&path).unwrap() == bytes, "the saved file differs from the published one");
}

#[test]
fn a_corrupt_chunk_is_refused_in_the_browser_and_never_saved() {
    let _one = ONE_BROWSER.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    corrupt_chunk_refused("download");
}

#[test]
fn a_corrupt_chunk_never_reaches_a_streamed_download() {
    let _one = ONE_BROWSER.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    corrupt_chunk_refused("stream");
}

#[test]
fn without_file_system_access_64_mib_stream_to_disk_through_the_service_worker() {
    let _one = ONE_BROWSER.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let t = tempdir();
    let data = t.path().join("seed");
    let file = t.path().join("stream-1.0.iso");
    let len = 64 << 20;
    let bytes = write_file(&file, len, 23);
    let id = publish_id(&data, &file, &[]);
    let (_seeder, http) = seeder_with_share_page(&data);

    let mut share = SharePage::open_saving(t.path(), &http, &id, "stream");
    share.download();
    // The download grows on disk while the page is still fetching chunks: the disk is read
    // first, the page after it, so the bytes on disk were there before the page had the
    // whole file. (A Blob save writes nothing before the page is done.)
    let deadline = Instant::now() + Duration::from_secs(600);
    let (on_disk, in_page) = loop {
        let on_disk: u64 = listing(&share.saved).iter().map(|(_, n)| n).sum();
        let s = page_status(&mut share.page);
        assert_ne!(s["state"], "failed", "the page failed: {s}");
        let in_page = s["bytes"].as_u64().unwrap_or(0);
        if on_disk > 0 && in_page < len as u64 {
            break (on_disk, in_page);
        }
        assert_ne!(s["state"], "done", "the file reached the disk only once the page was done");
        assert!(Instant::now() < deadline, "nothing reached the disk: {s}");
        std::thread::sleep(Duration::from_millis(20));
    };
    eprintln!("{on_disk} bytes on disk while the page had verified {in_page} of {len}");
    let status = wait_done(&mut share.page, Duration::from_secs(600));
    assert_eq!(status["save"], "stream", "{status}");
    assert_eq!(status["corrupt"], 0, "{status}");
    let shown = share.page.eval("document.getElementById('saving').innerText");
    assert!(shown.as_str().unwrap().contains("service worker"), "{shown}");
    let path = wait_saved(&share.saved, "stream-1.0.iso", len as u64, Duration::from_secs(120));
    assert!(fs::read(&path).unwrap() == bytes, "the saved file differs from the published one");
}

/// Three seeders of one file on loopback, each with its own copy under `dir`: A serves the
/// share page (`--http`) and is the DHT's meeting point, B and C join through it; all three
/// offer WebRTC. Returns them, A's gateway address, the file ID and its bytes, once A's
/// DHT finds all three providers.
struct ThreeSeeders {
    seeders: Vec<(Seeder, PathBuf)>,
    http: String,
    id: String,
    bytes: Vec<u8>,
}

impl ThreeSeeders {
    fn start(dir: &Path, name: &str, len: usize, seed: u64) -> Self {
        let bytes = common::pattern(len, seed);
        let mut id = String::new();
        let mut files = Vec::new();
        for n in ["a", "b", "c"] {
            let copy = dir.join(n).join(name);
            fs::create_dir_all(copy.parent().unwrap()).unwrap();
            fs::write(&copy, &bytes).unwrap();
            let data = dir.join(n).join("data");
            let got = publish_id(&data, &copy, &["--chunk-size", "256KiB"]);
            assert!(id.is_empty() || id == got, "the copies have different IDs");
            id = got;
            files.push((data, copy));
        }
        let (a, http) = seeder_with_share_page(&files[0].0);
        let mut seeders = vec![(a, files[0].1.clone())];
        for (data, copy) in &files[1..] {
            let args = ["--api", "127.0.0.1:0", "--webrtc", "127.0.0.1:0", "--bootstrap"];
            let mut args = args.to_vec();
            let boot = seeders[0].0.peer();
            args.push(&boot);
            seeders.push((Seeder::start_with_args(data, 1, &args), copy.clone()));
        }
        // A's DHT finds all three, each offering WebRTC (a forming network: poll).
        let client = dir.join("dht-client");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let out = fm(&client)
                .args(["--json", "dht", "find-providers", &id, "--bootstrap", &seeders[0].0.peer()])
                .args(["--timeout-secs", "5"])
                .output()
                .unwrap();
            let found = if out.status.success() { json(&out) } else { Value::Null };
            let rtc = found["contacts"]
                .as_array()
                .map_or(0, |c| c.iter().filter(|c| c["webrtc"] == true).count());
            if rtc >= 3 {
                break;
            }
            assert!(Instant::now() < deadline, "three WebRTC providers never showed up: {found}");
            std::thread::sleep(Duration::from_millis(250));
        }
        Self { seeders, http, id, bytes }
    }

    /// Stops the seeders; their stats JSON, A's first.
    fn stop(self) -> Vec<Value> {
        self.seeders.into_iter().map(|(s, _)| s.stop()).collect()
    }
}

/// The page's seeders (`furymeshStatus.seeders`) that served it verified chunks.
fn contributors(status: &Value) -> Vec<&Value> {
    let all = status["seeders"].as_array().into_iter().flatten();
    all.filter(|s| s["chunks"].as_u64() > Some(0)).collect()
}

#[test]
fn a_browser_downloads_64_mib_from_three_seeders_found_through_the_dht() {
    let _one = ONE_BROWSER.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let t = tempdir();
    let three = ThreeSeeders::start(t.path(), "release-2.0.iso", 64 << 20, 19);

    let mut share = SharePage::open(t.path(), &three.http, &three.id);
    let (status, secs) = share.download_whole("release-2.0.iso", &three.bytes);
    // Each seeder served the page verified chunks: this node and both relayed ones.
    let from = contributors(&status);
    assert_eq!(from.len(), 3, "{status}");
    assert!(from.iter().any(|s| s["node"] == "origin"), "{status}");
    eprintln!("browser: 64 MiB from three seeders in {secs:.1} s ({:.1} MiB/s)", 64.0 / secs);
    for s in status["seeders"].as_array().unwrap() {
        eprintln!("  {}: {} chunks, channel open after {} ms", s["node"], s["chunks"], s["openMs"]);
    }
    drop(share);

    // Each seeder counted a browser session and served chunks.
    for stats in three.stop() {
        assert!(stats["browser_connections"].as_u64() >= Some(1), "{stats}");
        assert!(stats["chunks_served"].as_u64() > Some(0), "{stats}");
    }
}

#[test]
fn a_seeder_that_serves_corrupt_chunks_is_dropped_and_the_others_finish_the_file() {
    let _one = ONE_BROWSER.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let t = tempdir();
    let len = 16 << 20;
    let three = ThreeSeeders::start(t.path(), "tools-2.tar", len, 20);
    // C's copy changes behind its back in every chunk: whatever it is asked, it lies.
    let liar = three.seeders[2].1.clone();
    for chunk in 0..(len / (256 << 10)) {
        rewrite_in_place(&liar, (chunk * (256 << 10) + 77) as u64, b"not what was published");
    }

    let mut share = SharePage::open(t.path(), &three.http, &three.id);
    share.download();
    let status = wait_done(&mut share.page, Duration::from_secs(600));
    let path = wait_saved(&share.saved, "tools-2.tar", len as u64, Duration::from_secs(120));
    assert!(fs::read(&path).unwrap() == three.bytes, "the saved file differs");
    // The liar was caught and dropped; the other two served every chunk that counted.
    assert!(status["corrupt"].as_u64() >= Some(1), "{status}");
    let seeders = status["seeders"].as_array().unwrap();
    let dropped: Vec<_> = seeders.iter().filter(|s| s["state"] == "dropped").collect();
    assert_eq!(dropped.len(), 1, "{status}");
    assert_eq!(dropped[0]["node"], common::node_id(&t.path().join("c/data")), "{status}");
    assert_eq!(dropped[0]["chunks"], 0, "{status}");
    assert!(dropped[0]["error"].as_str().unwrap().contains("corrupt"), "{status}");
    assert_eq!(contributors(&status).len(), 2, "{status}");
    drop(share);
    let stats = three.stop();
    assert!(stats[2]["chunks_served"].as_u64() >= Some(1), "the liar served: {}", stats[2]);
}

#[test]
fn a_provider_that_vanished_after_announcing_costs_the_page_nothing_but_a_failed_channel() {
    let _one = ONE_BROWSER.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let t = tempdir();
    let mut three = ThreeSeeders::start(t.path(), "gone.bin", 16 << 20, 22);
    // C dies without a goodbye; its provider record stays in A's DHT (TTL 4 h).
    let (c, _) = three.seeders.pop().unwrap();
    c.kill9();

    let mut share = SharePage::open(t.path(), &three.http, &three.id);
    let (status, _) = share.download_whole("gone.bin", &three.bytes);
    let c_id = common::node_id(&t.path().join("c/data"));
    let seeders = status["seeders"].as_array().unwrap();
    let gone = seeders.iter().find(|s| s["node"] == c_id.as_str());
    let gone = gone.unwrap_or_else(|| panic!("the page never tried C: {status}"));
    assert_eq!(gone["chunks"], 0, "{status}");
    assert_ne!(gone["state"], "open", "{status}");
    assert!(gone["error"].as_str().is_some_and(|e| e.contains("could not signal")), "{status}");
    eprintln!("the vanished seeder's channel: {gone}");
    assert_eq!(contributors(&status).len(), 2, "{status}");
    drop(share);
    three.stop();
}
