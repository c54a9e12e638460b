//! Headless Chromium (Debian `chromium`, which scripts/test installs when missing) driven
//! over the DevTools protocol, for the tests of pages the node serves (tests/ui.rs,
//! tests/browser.rs). Included with `#[path]` by the tests that use it.
#![allow(dead_code, unreachable_pub)]

use std::fs;
use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{json, Value};

/// Headless Chromium in its own process group (killed as a group on drop), with the
/// flags ../shared/DESIGN.md records for this machine.
pub struct Browser {
    child: Child,
    devtools_port: u16,
}

impl Browser {
    pub fn start(profile: &Path) -> Self {
        let mut child = Command::new("chromium")
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--remote-debugging-port=0",
                "--window-size=1280,1500",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg("about:blank")
            .process_group(0)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("chromium (scripts/test installs it: apt-get install chromium)");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            // Keep draining stderr so Chromium never blocks on it.
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("DevTools listening on ws://").nth(1) {
                    if let Some(tx) = tx.take() {
                        let port = rest.split('/').next().unwrap().rsplit(':').next().unwrap();
                        let _ = tx.send(port.parse::<u16>().unwrap());
                    }
                }
            }
        });
        let devtools_port =
            rx.recv_timeout(Duration::from_secs(60)).expect("chromium did not open DevTools");
        Self { child, devtools_port }
    }

    /// The DevTools WebSocket of the first page.
    pub fn page(&self) -> Page {
        let list = http_get(self.devtools_port, "/json/list");
        let pages: Vec<Value> = serde_json::from_str(&list).unwrap();
        let url = pages
            .iter()
            .find(|p| p["type"] == "page")
            .and_then(|p| p["webSocketDebuggerUrl"].as_str())
            .expect("a page target");
        let (ws, _) = tungstenite::connect(url).expect("DevTools WebSocket");
        Page { ws, next_id: 0 }
    }

    /// The browser's own DevTools target (the `Browser.*` domain), as a [`Page`] to call.
    pub fn target(&self) -> Page {
        let version: Value =
            serde_json::from_str(&http_get(self.devtools_port, "/json/version")).unwrap();
        let url = version["webSocketDebuggerUrl"].as_str().expect("a browser target");
        let (ws, _) = tungstenite::connect(url).expect("DevTools WebSocket");
        Page { ws, next_id: 0 }
    }

    /// Lets pages save downloads into `dir` without asking (`Browser.setDownloadBehavior`)
    /// for as long as the returned session lives (Chromium resets it when it closes).
    #[must_use = "downloads are allowed only while the returned session lives"]
    pub fn allow_downloads(&self, dir: &Path) -> Page {
        let mut target = self.target();
        target.call(
            "Browser.setDownloadBehavior",
            json!({"behavior": "allow", "downloadPath": dir.to_str().unwrap()}),
        );
        target
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // The whole group (Chromium's renderer and GPU processes too), which
        // `process_group(0)` made Chromium lead: kill(-pgid), never through a shell
        // command whose argument parsing could turn it into kill(-1).
        let pgid = self.child.id() as i32;
        if let Some(pid) = rustix::process::Pid::from_raw(pgid).filter(|_| pgid > 1) {
            let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
        }
        let _ = self.child.wait();
    }
}

/// The body of `GET path` from Chromium's DevTools HTTP server, through the crate's HTTP
/// client (ureq), which reads to `Content-Length`: the server keeps the connection open
/// despite `Connection: close`, so reading to the end waited out a 10 s read timeout per
/// call, twice per browser.
fn http_get(port: u16, path: &str) -> String {
    let agent: ureq::Agent =
        ureq::Agent::config_builder().timeout_global(Some(Duration::from_secs(10))).build().into();
    let mut reply = agent
        .get(&format!("http://127.0.0.1:{port}{path}"))
        .call()
        .unwrap_or_else(|e| panic!("GET {path} from Chromium's DevTools: {e}"));
    reply.body_mut().read_to_string().expect("a DevTools HTTP response body")
}

/// One page over the DevTools protocol.
pub struct Page {
    ws: tungstenite::WebSocket<tungstenite::stream::MaybeTlsStream<TcpStream>>,
    next_id: u64,
}

impl Page {
    /// Sends a command and returns its result (events in between are skipped).
    pub fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let msg = json!({"id": id, "method": method, "params": params});
        self.ws.send(tungstenite::Message::text(msg.to_string())).unwrap();
        loop {
            let m = self.ws.read().expect("DevTools message");
            let Ok(text) = m.to_text() else { continue };
            let v: Value = serde_json::from_str(text).unwrap();
            if v["id"] == id {
                assert!(v.get("error").is_none(), "{method}: {v}");
                return v["result"].clone();
            }
        }
    }

    /// Evaluates `expr` in the page; its value (JSON-compatible).
    pub fn eval(&mut self, expr: &str) -> Value {
        let r = self.call("Runtime.evaluate", json!({"expression": expr, "returnByValue": true}));
        assert!(r.get("exceptionDetails").is_none(), "{expr}: {r}");
        r["result"]["value"].clone()
    }

    /// Waits (up to `limit`) until `check` accepts what `expr` evaluates to.
    pub fn wait_for(
        &mut self,
        what: &str,
        expr: &str,
        limit: Duration,
        check: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + limit;
        loop {
            let v = self.eval(expr);
            if check(&v) {
                return v;
            }
            assert!(Instant::now() < deadline, "{what}: the page shows {v}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    pub fn screenshot(&mut self, path: &Path) {
        let r = self.call("Page.captureScreenshot", json!({"format": "png"}));
        let png =
            base64::engine::general_purpose::STANDARD.decode(r["data"].as_str().unwrap()).unwrap();
        assert!(png.starts_with(b"\x89PNG"), "not a PNG");
        fs::write(path, png).unwrap();
    }
}
