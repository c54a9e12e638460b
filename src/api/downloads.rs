//! Downloads started through the API: the node runs them ([`Handle::download`]); this
//! module gives each a stable API ID across pauses and restarts, remembers them after they
//! end, measures their rate (overall and per peer) from the progress the node reports,
//! records a finished file in the catalog as `get` does, and keeps the list of unfinished
//! ones in `DATA_DIR/api-downloads.json` so that a restarted `seed` resumes them.
//!
//! Pause is a node-level cancel (connections closed, verified chunks and resume state kept
//! beside the output) that the API remembers as `paused`; resume starts a new node download
//! of the same request, which picks the resume state up. The list file is replaced
//! atomically (written aside, synced, renamed, directory synced) on every change of the
//! set of unfinished downloads, so a `kill -9` at any instant leaves the old or the new
//! list, never a torn one.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fs;
use std::io::{self, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::config::{self, API_DHT_QUERY_TIMEOUT, API_DOWNLOADS_ENDED_KEPT, API_RATE_WINDOW};
use crate::crypto::FileId;
use crate::dht::Key;
use crate::node::{
    clock, DownloadId, GetError, GetOptions, GetProgress, GetReport, Handle, NodeError, PeerAddr,
    PeerReport, TransportChoice,
};
use crate::storage::layout;
use crate::transfer::Strategy;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Progress samples (time, bytes) kept over `API_RATE_WINDOW`: a rate is the bytes between
/// the oldest and the newest over the time between them.
#[derive(Default)]
pub(super) struct Samples(VecDeque<(Instant, u64)>);

impl Samples {
    /// Adds a sample and forgets those older than the window (keeping at least two).
    pub(super) fn push(&mut self, now: Instant, bytes: u64) {
        self.0.push_back((now, bytes));
        while self.0.len() > 2
            && self.0.front().is_some_and(|(t, _)| now.duration_since(*t) > API_RATE_WINDOW)
        {
            self.0.pop_front();
        }
    }

    /// Bytes per second over the window (0 with fewer than two samples).
    pub(super) fn rate(&self) -> f64 {
        match (self.0.front(), self.0.back()) {
            (Some((t0, d0)), Some((t1, d1))) if t1 > t0 => {
                d1.saturating_sub(*d0) as f64 / t1.duration_since(*t0).as_secs_f64()
            }
            _ => 0.0,
        }
    }
}

/// What the node reported last about one download, with rates.
#[derive(Default)]
struct Meter {
    total: Samples,
    per_peer: HashMap<SocketAddr, Samples>,
    done: u64,
    size: u64,
    chunk_size: u32,
    peers: Arc<Vec<PeerReport>>,
}

impl Meter {
    fn record(&mut self, p: GetProgress, now: Instant) {
        self.done = p.done_bytes;
        self.size = p.total_bytes;
        self.chunk_size = p.chunk_size;
        self.total.push(now, p.done_bytes);
        for r in p.peers.iter() {
            self.per_peer.entry(r.addr).or_default().push(now, r.bytes);
        }
        self.peers = p.peers;
    }

    /// A new run starts: its peers count from zero again.
    fn new_run(&mut self) {
        self.total = Samples::default();
        self.per_peer.clear();
        self.peers = Arc::default();
    }
}

/// A download as the API was asked for it: what the list file keeps, and what a resume
/// (after a pause or a restart) starts again.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Spec {
    /// The API's ID (stable across pauses and restarts).
    pub(super) id: u64,
    /// 64 hex characters.
    pub(super) file_id: String,
    /// `[NODE_ID@]HOST:PORT` each; empty: providers from the node's DHT at each (re)start.
    pub(super) peers: Vec<String>,
    pub(super) output: PathBuf,
    pub(super) force: bool,
    pub(super) connections: Option<usize>,
    pub(super) max_download_rate: Option<u64>,
    /// HTTP(S) mirrors (`get --web-seed`); lists written before they existed have none.
    #[serde(default)]
    pub(super) web_seeds: Vec<String>,
    /// Paused by the API (a restart keeps it paused).
    #[serde(default)]
    pub(super) paused: bool,
    /// Unix seconds when the API first started it.
    pub(super) started_unix: u64,
}

/// The list file: every download not yet ended, the last ones that ended (for the history
/// and for cleaning up what they left), and the next API ID.
#[derive(Default, Serialize, Deserialize)]
struct ListFile {
    next_id: u64,
    downloads: Vec<Spec>,
    #[serde(default)]
    ended: Vec<Ended>,
}

/// A download that ended, as the list file keeps it.
#[derive(Serialize, Deserialize)]
struct Ended {
    spec: Spec,
    state: String,
    #[serde(default)]
    error: Option<String>,
    ended_unix: u64,
}

/// The state names an ended download can have (`&'static` for the views).
fn ended_state(s: &str) -> &'static str {
    match s {
        "completed" => "completed",
        "cancelled" => "cancelled",
        _ => "failed",
    }
}

/// How a download ended.
struct Finished {
    state: &'static str,
    error: Option<String>,
    report: Option<GetReport>,
}

/// What the API wants of a download whose node run may still be going.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Want {
    Run,
    Pause,
    Cancel,
}

struct Entry {
    spec: Spec,
    /// Unix seconds when it ended.
    ended_unix: Option<u64>,
    meter: Arc<Mutex<Meter>>,
    want: Want,
    /// The node download of the current run, while it runs.
    run: Option<DownloadId>,
    /// The peers of the current (or last) run, as given or as the DHT found them.
    run_peers: Vec<String>,
    reaper: Option<JoinHandle<()>>,
    finished: Option<Finished>,
}

/// One peer of a download, as its status shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct PeerRow {
    /// `HOST:PORT`.
    pub(super) addr: String,
    /// The node ID it proved, once connected.
    pub(super) node_id: Option<String>,
    /// `tcp` or `webrtc` (a data channel): what its last connection used; `null` before
    /// one was made.
    pub(super) transport: Option<crate::node::Transport>,
    /// Verified payload bytes it delivered in this run.
    pub(super) bytes: u64,
    /// Verified chunks it delivered in this run.
    pub(super) chunks: u64,
    /// Its verified bytes per second over the last few seconds.
    pub(super) rate_bytes_per_s: f64,
    /// Chunks from it that failed verification.
    pub(super) corrupt_chunks: u64,
    /// Dropped after repeated corrupt chunks.
    pub(super) banned: bool,
}

/// A download as `GET /api/downloads/{id}` shows it: the node's `TransferStatus` (verified
/// and total bytes, state) with chunk counts, rate, ETA and per-peer rows, and the report
/// once it ended.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct DownloadView {
    id: u64,
    file_id: String,
    #[schema(value_type = String)]
    output: PathBuf,
    peers: Vec<String>,
    /// `starting`, `running`, `pausing`, `paused`, `cancelling`, `completed`, `failed` or
    /// `cancelled`.
    #[schema(value_type = String)]
    state: &'static str,
    /// Unix seconds when the API started it.
    started_unix: u64,
    /// Verified bytes (including chunks kept from an earlier run).
    done_bytes: u64,
    /// The file's size, 0 until its manifest arrived.
    total_bytes: u64,
    /// The manifest's chunk size, 0 until it arrived.
    chunk_size: u32,
    /// Chunks verified (from the verified bytes: whole chunks; all of them once complete).
    chunks_done: u64,
    chunks_total: u64,
    /// Verified bytes per second over the last few seconds.
    rate_bytes_per_s: f64,
    /// Seconds left at that rate (`null` while unknown).
    eta_seconds: Option<f64>,
    /// The peers of the current (or last) run.
    peer_rows: Vec<PeerRow>,
    /// Why it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    /// The download's report, once completed.
    #[serde(skip_serializing_if = "Option::is_none")]
    report: Option<GetReport>,
}

/// Why a pause, resume or cancel did nothing.
pub(super) enum ActionError {
    Unknown,
    /// Not in a state that allows it (the state it is in).
    Conflict(&'static str),
    Node(NodeError),
}

impl From<NodeError> for ActionError {
    fn from(e: NodeError) -> Self {
        Self::Node(e)
    }
}

#[derive(Default)]
struct Table {
    next_id: u64,
    all: BTreeMap<u64, Entry>,
}

/// The API's downloads, by API ID.
pub(super) struct Downloads {
    table: Mutex<Table>,
    /// Where the list file lives (`None`: nothing persists).
    data_dir: Option<PathBuf>,
    /// The node is shutting down: interrupted runs stay in the list for the next start.
    stopping: AtomicBool,
    restorer: Mutex<Option<JoinHandle<()>>>,
}

impl Downloads {
    pub(super) fn new(data_dir: Option<PathBuf>) -> Self {
        Self {
            table: Mutex::default(),
            data_dir,
            stopping: AtomicBool::new(false),
            restorer: Mutex::default(),
        }
    }

    /// Starts a new download from `spec` (its `id` is assigned here) with `peers` resolved
    /// by the caller, and persists it. Returns its API ID.
    pub(super) fn start(
        self: &Arc<Self>,
        handle: &Handle,
        mut spec: Spec,
        peers: Vec<PeerAddr>,
    ) -> Result<u64, NodeError> {
        let mut t = lock(&self.table);
        spec.id = t.next_id;
        let id = spec.id;
        let entry = Entry {
            spec,
            ended_unix: None,
            meter: Arc::default(),
            want: Want::Run,
            run: None,
            run_peers: Vec::new(),
            reaper: None,
            finished: None,
        };
        t.all.insert(id, entry);
        if let Err(e) = self.run_locked(&mut t, handle, id, peers) {
            t.all.remove(&id);
            return Err(e);
        }
        t.next_id = id + 1;
        self.persist(&mut t);
        Ok(id)
    }

    /// Starts a node run of entry `id` and the thread that waits for its end. Called with
    /// the table locked, so the reaper cannot finish before the run is recorded.
    fn run_locked(
        self: &Arc<Self>,
        t: &mut Table,
        handle: &Handle,
        id: u64,
        peers: Vec<PeerAddr>,
    ) -> Result<(), NodeError> {
        let e = t.all.get_mut(&id).ok_or(NodeError::UnknownDownload(DownloadId(id)))?;
        let run_peers: Vec<String> = peers.iter().map(peer_text).collect();
        let opts = options(&e.spec, handle, peers)?;
        lock(&e.meter).new_run();
        let meter = e.meter.clone();
        let run = handle.download(
            opts,
            Arc::new(AtomicBool::new(false)),
            Box::new(move |p| lock(&meter).record(p, clock::now())),
        )?;
        tracing::info!(
            "furymesh seed: download {id} running: {} -> {} from {}",
            e.spec.file_id,
            e.spec.output.display(),
            if run_peers.is_empty() { "DHT providers".to_owned() } else { run_peers.join(", ") }
        );
        e.run = Some(run);
        e.run_peers = run_peers;
        e.want = Want::Run;
        if let Some(old) = e.reaper.take() {
            // The previous run's reaper is done (the run was not running any more).
            let _ = old.join();
        }
        let (me, h) = (self.clone(), handle.clone());
        let output = e.spec.output.clone();
        e.reaper = Some(
            std::thread::Builder::new()
                .name(format!("furymesh-api-{id}"))
                .spawn(move || me.reap(&h, id, run, output))
                .map_err(NodeError::Shards)?,
        );
        Ok(())
    }

    fn reap(&self, handle: &Handle, id: u64, run: DownloadId, output: PathBuf) {
        let result = handle.wait(run);
        let mut t = lock(&self.table);
        let stopping = self.stopping.load(Ordering::SeqCst);
        let Some(e) = t.all.get_mut(&id) else { return };
        e.run = None;
        let finished = match result {
            Ok(Ok(report)) => {
                let mut error = None;
                if let Some(info) = report.info.clone() {
                    if let Err(err) = handle.record_download(info, &output) {
                        error = Some(format!("completed, but not recorded in the catalog: {err}"));
                    }
                }
                Some(Finished { state: "completed", error, report: Some(report) })
            }
            // A shutdown: the list keeps it for the next start.
            Ok(Err(GetError::Interrupted)) if stopping => None,
            Ok(Err(GetError::Interrupted)) if e.want == Want::Pause => None,
            Ok(Err(GetError::Interrupted)) => {
                Some(Finished { state: "cancelled", error: None, report: None })
            }
            // The node stopped under it (a shutdown too).
            Err(NodeError::Stopped) if stopping => None,
            Ok(Err(err)) => {
                Some(Finished { state: "failed", error: Some(err.to_string()), report: None })
            }
            Err(err) => {
                Some(Finished { state: "failed", error: Some(err.to_string()), report: None })
            }
        };
        match &finished {
            Some(f) if f.state == "completed" => tracing::info!(
                "furymesh seed: download {id} completed: {}{}",
                output.display(),
                f.error.as_deref().map(|w| format!(" ({w})")).unwrap_or_default()
            ),
            Some(f) => tracing::warn!(
                "furymesh seed: download {id} {}: {}{}",
                f.state,
                output.display(),
                f.error.as_deref().map(|w| format!(": {w}")).unwrap_or_default()
            ),
            None if e.want == Want::Pause => {
                tracing::info!("furymesh seed: download {id} paused: {}", output.display())
            }
            None => tracing::info!(
                "furymesh seed: download {id} interrupted by the shutdown; resumed at the next start"
            ),
        }
        if finished.is_some() {
            e.finished = finished;
            e.ended_unix = Some(clock::now_unix());
            if !stopping {
                self.persist(&mut t);
            }
        }
    }

    /// Pauses a running download: its node run is cancelled (state saved beside the
    /// output), and it stays paused across restarts until resumed.
    pub(super) fn pause(&self, handle: &Handle, id: u64) -> Result<(), ActionError> {
        let mut t = lock(&self.table);
        let e = t.all.get_mut(&id).ok_or(ActionError::Unknown)?;
        let run = match (e.run, e.want, &e.finished) {
            (_, _, Some(f)) => return Err(ActionError::Conflict(f.state)),
            (Some(run), Want::Run, None) => run,
            // Paused or pausing already: what was asked holds (scripts may repeat it).
            (_, Want::Pause, None) => return Ok(()),
            _ => return Err(ActionError::Conflict(state_of(e))),
        };
        e.want = Want::Pause;
        e.spec.paused = true;
        // Ended meanwhile: its reaper is recording the outcome.
        if handle.cancel(run).is_err() {
            e.want = Want::Run;
            e.spec.paused = false;
            return Err(ActionError::Conflict("finishing"));
        }
        self.persist(&mut t);
        Ok(())
    }

    /// Resumes a paused download: a new node run of the same request (peers resolved again
    /// through the DHT if none were given) continues from the verified chunks.
    pub(super) fn resume(self: &Arc<Self>, handle: &Handle, id: u64) -> Result<(), ActionError> {
        let spec = {
            let t = lock(&self.table);
            let e = t.all.get(&id).ok_or(ActionError::Unknown)?;
            match (e.run, e.want, &e.finished) {
                (_, _, Some(f)) => return Err(ActionError::Conflict(f.state)),
                (None, Want::Pause, None) => e.spec.clone(),
                // Running already: what was asked holds.
                (Some(_), Want::Run, None) => return Ok(()),
                _ => return Err(ActionError::Conflict(state_of(e))),
            }
        };
        // Outside the lock: a DHT lookup may take seconds.
        let peers = resolve(handle, &spec)?;
        let mut t = lock(&self.table);
        match t.all.get(&id) {
            Some(e) if e.run.is_none() && e.want == Want::Pause && e.finished.is_none() => {}
            Some(e) => return Err(ActionError::Conflict(state_of(e))),
            None => return Err(ActionError::Unknown),
        }
        self.run_locked(&mut t, handle, id, peers)?;
        if let Some(e) = t.all.get_mut(&id) {
            e.spec.paused = false;
        }
        self.persist(&mut t);
        Ok(())
    }

    /// Cancels a download (running or paused): it will not be resumed; its verified chunks
    /// stay beside the output (a later download of the same output reuses them).
    pub(super) fn cancel(&self, handle: &Handle, id: u64) -> Result<(), ActionError> {
        let mut t = lock(&self.table);
        let e = t.all.get_mut(&id).ok_or(ActionError::Unknown)?;
        if let Some(f) = &e.finished {
            return Err(ActionError::Conflict(f.state));
        }
        match e.run {
            Some(run) => {
                if e.want == Want::Cancel {
                    return Err(ActionError::Conflict("cancelling"));
                }
                e.want = Want::Cancel;
                if handle.cancel(run).is_err() {
                    return Err(ActionError::Conflict("finishing"));
                }
            }
            None => {
                e.want = Want::Cancel;
                e.finished = Some(Finished { state: "cancelled", error: None, report: None });
                e.ended_unix = Some(clock::now_unix());
            }
        }
        self.persist(&mut t);
        Ok(())
    }

    /// The view of one download, `None` if the API did not start it.
    pub(super) fn view(&self, handle: &Handle, id: u64) -> Option<DownloadView> {
        lock(&self.table).all.get(&id).map(|e| view(handle, e))
    }

    /// Every download the API started, oldest first.
    pub(super) fn list(&self, handle: &Handle) -> Vec<DownloadView> {
        lock(&self.table).all.values().map(|e| view(handle, e)).collect()
    }

    /// The peers of every running download: (API ID, row).
    pub(super) fn running_peers(&self) -> Vec<(u64, PeerRow)> {
        let t = lock(&self.table);
        let mut out = Vec::new();
        for e in t.all.values().filter(|e| state_of(e) == "running") {
            let m = lock(&e.meter);
            out.extend(m.peers.iter().map(|p| (e.spec.id, peer_row(&m, p, true))));
        }
        out
    }

    /// What the API's downloads hold on disk: finished files still there, and the partial
    /// files and resume states of the ones not completed (abandoned: cancelled or failed).
    pub(super) fn storage(&self) -> DownloadStorage {
        let t = lock(&self.table);
        let mut s = DownloadStorage::default();
        for e in t.all.values() {
            let state = state_of(e);
            if state == "completed" {
                if let Ok(m) = fs::metadata(&e.spec.output) {
                    s.downloaded_files += 1;
                    s.downloaded_bytes += m.len();
                }
            }
            let left = leftovers(&e.spec.output);
            if !left.exists {
                continue;
            }
            s.partial_downloads += 1;
            s.partial_bytes += left.bytes;
            if e.finished.is_some() {
                s.abandoned_downloads += 1;
                s.abandoned_bytes += left.bytes;
            }
        }
        s
    }

    /// Removes the partial files and resume states left by downloads that ended (cancelled,
    /// failed, or completed with a stray resume state) and were last written at least
    /// `older_than_secs` ago. Never a running or paused download's, and never one another
    /// process is writing (its claim on the partial file is held).
    pub(super) fn cleanup(&self, older_than_secs: u64) -> Cleanup {
        let ended: Vec<(u64, PathBuf)> = lock(&self.table)
            .all
            .values()
            .filter(|e| e.finished.is_some())
            .map(|e| (e.spec.id, e.spec.output.clone()))
            .collect();
        let now = clock::now_unix();
        let mut out = Cleanup::default();
        for (id, output) in ended {
            let left = leftovers(&output);
            if !left.exists {
                continue;
            }
            let written = left
                .modified
                .and_then(|m| m.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(now, |d| d.as_secs());
            if now.saturating_sub(written) < older_than_secs {
                out.kept_young += 1;
                continue;
            }
            let (partial, resume) = crate::node::side_paths(&output);
            let claim = match crate::storage::DownloadClaim::try_new(&partial, &resume) {
                Ok(Some(c)) => c,
                Ok(None) => {
                    out.kept_busy += 1;
                    continue;
                }
                Err(_) => continue,
            };
            let mut removed = Vec::new();
            for p in [&resume, &partial] {
                if fs::remove_file(p).is_ok() {
                    removed.push(p.to_string_lossy().into_owned());
                }
            }
            drop(claim);
            out.bytes_freed += left.bytes;
            out.removed.push(Removed {
                id,
                output: output.to_string_lossy().into_owned(),
                files: removed,
            });
        }
        out
    }

    /// Loads the list file and resumes what it names, on a thread of its own (a DHT lookup
    /// for peers may take seconds): paused ones stay paused; one whose output is complete
    /// (killed between the end and the list's update) is shown completed. A list that
    /// cannot be read is reported and left in place.
    pub(super) fn restore(self: &Arc<Self>, handle: &Handle) {
        let Some(dir) = &self.data_dir else { return };
        let path = layout::api_downloads_path(dir);
        let list: ListFile = match fs::read(&path) {
            Ok(bytes) => match serde_json::from_slice(&bytes) {
                Ok(l) => l,
                Err(e) => {
                    note!("furymesh seed: ignoring {}: {e}", path.display());
                    return;
                }
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => return,
            Err(e) => {
                note!("furymesh seed: cannot read {}: {e}", path.display());
                return;
            }
        };
        let mut to_run = Vec::new();
        {
            let mut t = lock(&self.table);
            t.next_id = t.next_id.max(list.next_id);
            for spec in list.downloads {
                if spec.file_id.parse::<FileId>().is_err() || t.all.contains_key(&spec.id) {
                    continue;
                }
                t.next_id = t.next_id.max(spec.id + 1);
                let (partial, _) = crate::node::side_paths(&spec.output);
                let done = spec.output.exists() && !partial.exists() && !spec.force;
                // Its progress so far, from the resume state beside the output: a paused
                // download shows what it has kept, not 0 of 0, until it runs again.
                let mut meter = Meter::default();
                if let Some((done, size, chunk_size)) = resume_progress(&spec) {
                    (meter.done, meter.size, meter.chunk_size) = (done, size, chunk_size);
                }
                let mut e = Entry {
                    want: if spec.paused { Want::Pause } else { Want::Run },
                    spec,
                    ended_unix: None,
                    meter: Arc::new(Mutex::new(meter)),
                    run: None,
                    run_peers: Vec::new(),
                    reaper: None,
                    finished: None,
                };
                if done {
                    e.finished = Some(Finished { state: "completed", error: None, report: None });
                    e.ended_unix = Some(clock::now_unix());
                } else if e.want == Want::Run {
                    to_run.push(e.spec.id);
                }
                t.all.insert(e.spec.id, e);
            }
            for ended in list.ended {
                if t.all.contains_key(&ended.spec.id) {
                    continue;
                }
                t.next_id = t.next_id.max(ended.spec.id + 1);
                let e = Entry {
                    want: Want::Cancel,
                    ended_unix: Some(ended.ended_unix),
                    finished: Some(Finished {
                        state: ended_state(&ended.state),
                        error: ended.error,
                        report: None,
                    }),
                    spec: ended.spec,
                    meter: Arc::default(),
                    run: None,
                    run_peers: Vec::new(),
                    reaper: None,
                };
                t.all.insert(e.spec.id, e);
            }
            self.persist(&mut t);
        }
        if to_run.is_empty() {
            return;
        }
        let (me, h) = (self.clone(), handle.clone());
        let thread = std::thread::Builder::new().name("furymesh-api-rs".into()).spawn(move || {
            for id in to_run {
                if me.stopping.load(Ordering::SeqCst) {
                    return;
                }
                let Some(spec) = lock(&me.table).all.get(&id).map(|e| e.spec.clone()) else {
                    continue;
                };
                let started = resolve(&h, &spec).and_then(|peers| {
                    let mut t = lock(&me.table);
                    match t.all.get(&id) {
                        Some(e)
                            if e.run.is_none() && e.want == Want::Run && e.finished.is_none() =>
                        {
                            me.run_locked(&mut t, &h, id, peers)
                        }
                        _ => Ok(()),
                    }
                });
                if let Err(err) = started {
                    let mut t = lock(&me.table);
                    if let Some(e) = t.all.get_mut(&id) {
                        e.finished = Some(Finished {
                            state: "failed",
                            error: Some(format!("could not resume after a restart: {err}")),
                            report: None,
                        });
                        e.ended_unix = Some(clock::now_unix());
                    }
                    me.persist(&mut t);
                }
            }
        });
        match thread {
            Ok(t) => *lock(&self.restorer) = Some(t),
            Err(e) => note!("furymesh seed: cannot resume the API's downloads: {e}"),
        }
    }

    /// At shutdown: cancels every running download and waits until each has saved its
    /// state; the list file keeps them, so the next start resumes them.
    pub(super) fn stop_all(&self, handle: &Handle) {
        self.stopping.store(true, Ordering::SeqCst);
        if let Some(r) = lock(&self.restorer).take() {
            let _ = r.join();
        }
        let reapers: Vec<JoinHandle<()>> = {
            let mut t = lock(&self.table);
            for e in t.all.values() {
                if let Some(run) = e.run {
                    let _ = handle.cancel(run);
                }
            }
            t.all.values_mut().filter_map(|e| e.reaper.take()).collect()
        };
        for r in reapers {
            let _ = r.join();
        }
    }

    /// Writes the list of unfinished downloads atomically. A failure is reported, not
    /// fatal: the downloads go on, only a restart would not resume them.
    fn persist(&self, t: &mut Table) {
        // Only the last API_DOWNLOADS_ENDED_KEPT ended downloads are remembered.
        let ended: Vec<u64> =
            t.all.iter().filter(|(_, e)| e.finished.is_some()).map(|(id, _)| *id).collect();
        for id in ended.iter().take(ended.len().saturating_sub(API_DOWNLOADS_ENDED_KEPT)) {
            t.all.remove(id);
        }
        let Some(dir) = &self.data_dir else { return };
        let list = ListFile {
            next_id: t.next_id,
            downloads: t
                .all
                .values()
                .filter(|e| e.finished.is_none())
                .map(|e| e.spec.clone())
                .collect(),
            ended: t
                .all
                .values()
                .filter_map(|e| {
                    let f = e.finished.as_ref()?;
                    Some(Ended {
                        spec: e.spec.clone(),
                        state: f.state.into(),
                        error: f.error.clone(),
                        ended_unix: e.ended_unix.unwrap_or(0),
                    })
                })
                .collect(),
        };
        let path = layout::api_downloads_path(dir);
        let write = serde_json::to_vec_pretty(&list)
            .map_err(io::Error::other)
            .and_then(|bytes| write_synced(&path, &bytes));
        if let Err(e) = write {
            note!("furymesh seed: cannot save {}: {e}", path.display());
        }
    }
}

/// Replaces `path` by `bytes` so that a crash at any instant leaves the old or the new
/// content: a synced temporary file renamed over it, then the directory synced.
fn write_synced(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let mut f = fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// The peers of `spec`: the given ones, or the providers the node's DHT finds.
pub(super) fn resolve(handle: &Handle, spec: &Spec) -> Result<Vec<PeerAddr>, NodeError> {
    let file_id: FileId =
        spec.file_id.parse().map_err(|_| NodeError::UnknownDownload(DownloadId(spec.id)))?;
    let mut peers = Vec::with_capacity(spec.peers.len());
    for p in &spec.peers {
        if let Ok(p) = p.parse::<PeerAddr>() {
            peers.push(p);
        }
    }
    if spec.peers.is_empty() {
        let answer = handle.find_providers(Key::from_file_id(&file_id), API_DHT_QUERY_TIMEOUT)?;
        peers.extend(
            answer
                .contacts
                .iter()
                .filter(|c| Some(c.addr) != handle.addr())
                .map(|c| PeerAddr { addr: c.addr, node_id: c.node_id.parse().ok() }),
        );
    }
    if peers.is_empty() {
        return Err(NodeError::NoProviders(file_id));
    }
    Ok(peers)
}

fn options(spec: &Spec, handle: &Handle, peers: Vec<PeerAddr>) -> Result<GetOptions, NodeError> {
    let file_id: FileId =
        spec.file_id.parse().map_err(|_| NodeError::UnknownDownload(DownloadId(spec.id)))?;
    Ok(GetOptions {
        file_id,
        kind: crate::crypto::IdKind::File,
        peers,
        security: handle.security().clone(),
        output: spec.output.clone(),
        force: spec.force,
        connections: spec.connections.unwrap_or_else(crate::node::available_cores).max(1),
        window: config::REQUESTS_INFLIGHT_DEFAULT,
        strategy: Strategy::RarestFirst,
        max_peers: 16,
        serve_partial: false,
        save_every_bytes: config::RESUME_SAVE_DEFAULT_BYTES,
        download_rate_bytes: spec.max_download_rate,
        transport: TransportChoice::Tcp,
        web_seeds: spec.web_seeds.clone(),
    })
}

/// Text of a peer for the status (`NODE_ID@HOST:PORT` when pinned).
pub(super) fn peer_text(p: &PeerAddr) -> String {
    match p.node_id {
        Some(id) => format!("{id}@{}", p.addr),
        None => p.addr.to_string(),
    }
}

/// What the resume state beside a download's output says it has verified: (bytes done,
/// file size, chunk size). `None` when there is none, or it belongs to another file or
/// does not decode (the next run starts over then anyway).
fn resume_progress(spec: &Spec) -> Option<(u64, u64, u32)> {
    let (_, resume) = crate::node::side_paths(&spec.output);
    let (info, bits) = crate::wire::decode_resume(&fs::read(resume).ok()?).ok()?;
    if info.file_id.to_hex() != spec.file_id {
        return None;
    }
    let n = info.chunk_count();
    let bits = crate::transfer::Bitfield::from_bytes(bits, n)?;
    let cs = u64::from(info.chunk_size);
    let mut done = u64::from(bits.count_ones()) * cs;
    // The last chunk is short: count only its real bytes.
    if n > 0 && bits.get(n - 1) {
        done = done.saturating_sub(cs * u64::from(n) - info.size.min(cs * u64::from(n)));
    }
    Some((done.min(info.size), info.size, info.chunk_size))
}

fn state_of(e: &Entry) -> &'static str {
    match (&e.finished, e.run, e.want) {
        (Some(f), _, _) => f.state,
        (None, Some(_), Want::Run) => "running",
        (None, Some(_), Want::Pause) => "pausing",
        (None, Some(_), Want::Cancel) => "cancelling",
        (None, None, Want::Pause) => "paused",
        (None, None, _) => "starting",
    }
}

fn view(handle: &Handle, e: &Entry) -> DownloadView {
    let m = lock(&e.meter);
    let (mut done, mut total) = (m.done, m.size);
    // While it runs, the node's own status is the authority on bytes.
    if let Some(run) = e.run {
        if let Ok(s) = handle.status(run) {
            (done, total) = (s.done_bytes, s.total_bytes);
        }
    }
    let state = state_of(e);
    if state == "completed" {
        done = total.max(done);
    }
    let cs = u64::from(m.chunk_size);
    let chunks_total = if cs == 0 { 0 } else { total.div_ceil(cs) };
    let chunks_done = match cs {
        0 => 0,
        _ if done >= total => chunks_total,
        _ => done / cs,
    };
    let running = state == "running";
    let rate = if running { m.total.rate() } else { 0.0 };
    let eta_seconds = match state {
        "running" if rate > 0.0 && total > 0 => Some(total.saturating_sub(done) as f64 / rate),
        "completed" => Some(0.0),
        _ => None,
    };
    let peer_rows = m.peers.iter().map(|p| peer_row(&m, p, running)).collect();
    let f = e.finished.as_ref();
    DownloadView {
        id: e.spec.id,
        file_id: e.spec.file_id.clone(),
        output: e.spec.output.clone(),
        peers: if e.run_peers.is_empty() { e.spec.peers.clone() } else { e.run_peers.clone() },
        state,
        started_unix: e.spec.started_unix,
        done_bytes: done,
        total_bytes: total,
        chunk_size: m.chunk_size,
        chunks_done,
        chunks_total,
        rate_bytes_per_s: rate,
        eta_seconds,
        peer_rows,
        error: f.and_then(|f| f.error.clone()),
        report: f.and_then(|f| f.report.clone()),
    }
}

fn peer_row(m: &Meter, p: &PeerReport, running: bool) -> PeerRow {
    PeerRow {
        addr: p.addr.to_string(),
        node_id: p.node_id.clone(),
        transport: p.transport,
        bytes: p.bytes,
        chunks: p.chunks,
        rate_bytes_per_s: if running {
            m.per_peer.get(&p.addr).map_or(0.0, Samples::rate)
        } else {
            0.0
        },
        corrupt_chunks: p.corrupt_chunks,
        banned: p.banned,
    }
}

/// What a download left beside its output: whether a partial file or resume state exists,
/// the bytes they occupy on disk, and when either was last written.
struct Leftovers {
    exists: bool,
    bytes: u64,
    modified: Option<std::time::SystemTime>,
}

fn leftovers(output: &Path) -> Leftovers {
    use std::os::unix::fs::MetadataExt;
    let (partial, resume) = crate::node::side_paths(output);
    let mut l = Leftovers { exists: false, bytes: 0, modified: None };
    for p in [partial, resume] {
        if let Ok(m) = fs::symlink_metadata(&p) {
            l.exists = true;
            // Allocated bytes: a partial file is preallocated at full size.
            l.bytes += m.blocks() * 512;
            if let Ok(t) = m.modified() {
                l.modified = Some(l.modified.map_or(t, |o| o.max(t)));
            }
        }
    }
    l
}

/// The downloads' share of `GET /api/storage`.
#[derive(Debug, Default, Serialize, utoipa::ToSchema)]
pub(super) struct DownloadStorage {
    /// Completed API downloads whose file is still there.
    pub(super) downloaded_files: u64,
    /// Their bytes.
    pub(super) downloaded_bytes: u64,
    /// Downloads with a partial file or resume state on disk (running, paused or
    /// abandoned).
    pub(super) partial_downloads: u64,
    /// Bytes those occupy on disk.
    pub(super) partial_bytes: u64,
    /// Of those, the ended ones (cancelled or failed): what cleanup may remove.
    pub(super) abandoned_downloads: u64,
    /// Bytes those occupy on disk.
    pub(super) abandoned_bytes: u64,
}

/// One download's leftovers that a cleanup removed.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct Removed {
    /// The download's API ID.
    id: u64,
    output: String,
    /// The files removed (resume state, partial file).
    files: Vec<String>,
}

/// What `POST /api/storage/cleanup` did.
#[derive(Debug, Default, Serialize, utoipa::ToSchema)]
pub(super) struct Cleanup {
    removed: Vec<Removed>,
    /// Bytes the removed files occupied.
    bytes_freed: u64,
    /// Leftovers kept because they were written more recently than the age given.
    kept_young: u64,
    /// Leftovers kept because a download (in this or another process) holds them.
    kept_busy: u64,
}
