//! Downloads started through the API: the node runs them ([`Handle::download`]); this
//! module remembers them after they end, measures their rate for the status (from the
//! progress the node reports), and records a finished file in the catalog as `get` does.

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Instant;

use serde::Serialize;

use crate::config::API_RATE_WINDOW;
use crate::node::{
    clock, DownloadId, GetError, GetOptions, GetProgress, GetReport, Handle, NodeError,
};

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Progress samples of one download, for its rate over `API_RATE_WINDOW`.
#[derive(Default)]
struct Meter {
    samples: VecDeque<(Instant, u64)>,
    done: u64,
    total: u64,
    chunk_size: u32,
}

impl Meter {
    fn record(&mut self, p: GetProgress, now: Instant) {
        self.done = p.done_bytes;
        self.total = p.total_bytes;
        self.chunk_size = p.chunk_size;
        self.samples.push_back((now, p.done_bytes));
        while self.samples.len() > 2
            && self.samples.front().is_some_and(|(t, _)| now.duration_since(*t) > API_RATE_WINDOW)
        {
            self.samples.pop_front();
        }
    }

    /// Bytes per second over the samples of the last window (0 with fewer than two).
    fn rate(&self) -> f64 {
        match (self.samples.front(), self.samples.back()) {
            (Some((t0, d0)), Some((t1, d1))) if t1 > t0 => {
                d1.saturating_sub(*d0) as f64 / t1.duration_since(*t0).as_secs_f64()
            }
            _ => 0.0,
        }
    }
}

/// How a download ended.
struct Finished {
    state: &'static str,
    error: Option<String>,
    report: Option<GetReport>,
}

struct Entry {
    file_id: String,
    output: PathBuf,
    peers: Vec<String>,
    started_unix: u64,
    meter: Arc<Mutex<Meter>>,
    cancel_requested: bool,
    finished: Option<Finished>,
    reaper: Option<JoinHandle<()>>,
}

/// A download as `GET /api/downloads/{id}` shows it: the node's `TransferStatus` (verified
/// and total bytes, state) with chunk counts, rate and ETA, and the report once it ended.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct DownloadView {
    id: u64,
    file_id: String,
    #[schema(value_type = String)]
    output: PathBuf,
    peers: Vec<String>,
    /// `running`, `cancelling`, `completed`, `failed` or `cancelled`.
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
    /// Why it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    /// The download's report, once completed.
    #[serde(skip_serializing_if = "Option::is_none")]
    report: Option<GetReport>,
}

/// The API's downloads, by the node's download ID.
#[derive(Default)]
pub(super) struct Downloads {
    all: Mutex<BTreeMap<DownloadId, Entry>>,
}

/// Why a cancel did nothing.
pub(super) enum CancelError {
    Unknown,
    NotRunning(&'static str),
    Node(NodeError),
}

impl Downloads {
    /// Starts `opts` in the node and a thread that waits for its end (recording the file
    /// in the catalog when it completes).
    pub(super) fn start(
        self: &Arc<Self>,
        handle: &Handle,
        opts: GetOptions,
    ) -> Result<DownloadId, NodeError> {
        let meter = Arc::new(Mutex::new(Meter::default()));
        let m2 = meter.clone();
        let entry = Entry {
            file_id: opts.file_id.to_hex(),
            output: opts.output.clone(),
            peers: opts.peers.iter().map(peer_text).collect(),
            started_unix: clock::now_unix(),
            meter,
            cancel_requested: false,
            finished: None,
            reaper: None,
        };
        let output = opts.output.clone();
        // Held across the start so the reaper cannot finish before the entry exists.
        let mut all = lock(&self.all);
        let id = handle.download(
            opts,
            Arc::new(AtomicBool::new(false)),
            Box::new(move |p| lock(&m2).record(p, clock::now())),
        )?;
        all.insert(id, entry);
        let (me, h) = (self.clone(), handle.clone());
        let reaper = std::thread::Builder::new()
            .name(format!("furymesh-api-{id}"))
            .spawn(move || me.reap(&h, id, output))
            .map_err(NodeError::Shards)?;
        if let Some(e) = all.get_mut(&id) {
            e.reaper = Some(reaper);
        }
        Ok(id)
    }

    fn reap(&self, handle: &Handle, id: DownloadId, output: PathBuf) {
        let finished = match handle.wait(id) {
            Ok(Ok(report)) => {
                let mut error = None;
                if let Some(info) = report.info.clone() {
                    if let Err(e) = handle.record_download(info, &output) {
                        error = Some(format!("completed, but not recorded in the catalog: {e}"));
                    }
                }
                Finished { state: "completed", error, report: Some(report) }
            }
            Ok(Err(GetError::Interrupted)) => {
                Finished { state: "cancelled", error: None, report: None }
            }
            Ok(Err(e)) => Finished { state: "failed", error: Some(e.to_string()), report: None },
            Err(e) => Finished { state: "failed", error: Some(e.to_string()), report: None },
        };
        if let Some(e) = lock(&self.all).get_mut(&id) {
            e.finished = Some(finished);
        }
    }

    /// The view of one download, `None` if the API did not start it.
    pub(super) fn view(&self, handle: &Handle, id: DownloadId) -> Option<DownloadView> {
        let all = lock(&self.all);
        all.get(&id).map(|e| view(handle, id, e))
    }

    /// Every download the API started, oldest first.
    pub(super) fn list(&self, handle: &Handle) -> Vec<DownloadView> {
        lock(&self.all).iter().map(|(id, e)| view(handle, *id, e)).collect()
    }

    /// Asks a running download to stop (its verified chunks kept for a later resume).
    pub(super) fn cancel(&self, handle: &Handle, id: DownloadId) -> Result<(), CancelError> {
        let mut all = lock(&self.all);
        let e = all.get_mut(&id).ok_or(CancelError::Unknown)?;
        if let Some(f) = &e.finished {
            return Err(CancelError::NotRunning(f.state));
        }
        match handle.cancel(id) {
            Ok(()) => {
                e.cancel_requested = true;
                Ok(())
            }
            // Ended between the check and the cancel: the reaper is recording it.
            Err(NodeError::UnknownDownload(_)) => Err(CancelError::NotRunning("finishing")),
            Err(e) => Err(CancelError::Node(e)),
        }
    }

    /// Cancels every running download and waits until each has saved its state.
    pub(super) fn stop_all(&self, handle: &Handle) {
        let reapers: Vec<JoinHandle<()>> = {
            let mut all = lock(&self.all);
            for (id, e) in all.iter_mut() {
                if e.finished.is_none() {
                    let _ = handle.cancel(*id);
                }
            }
            all.values_mut().filter_map(|e| e.reaper.take()).collect()
        };
        for r in reapers {
            let _ = r.join();
        }
    }
}

fn peer_text(p: &crate::node::PeerAddr) -> String {
    match p.node_id {
        Some(id) => format!("{id}@{}", p.addr),
        None => p.addr.to_string(),
    }
}

fn view(handle: &Handle, id: DownloadId, e: &Entry) -> DownloadView {
    let m = lock(&e.meter);
    let (mut done, mut total) = (m.done, m.total);
    // While it runs, the node's own status is the authority on bytes.
    if e.finished.is_none() {
        if let Ok(s) = handle.status(id) {
            (done, total) = (s.done_bytes, s.total_bytes);
        }
    }
    let state = match &e.finished {
        Some(f) => f.state,
        None if e.cancel_requested => "cancelling",
        None => "running",
    };
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
    let rate = if e.finished.is_some() { 0.0 } else { m.rate() };
    let eta_seconds = match state {
        "running" if rate > 0.0 && total > 0 => Some(total.saturating_sub(done) as f64 / rate),
        "completed" => Some(0.0),
        _ => None,
    };
    let f = e.finished.as_ref();
    DownloadView {
        id: id.0,
        file_id: e.file_id.clone(),
        output: e.output.clone(),
        peers: e.peers.clone(),
        state,
        started_unix: e.started_unix,
        done_bytes: done,
        total_bytes: total,
        chunk_size: m.chunk_size,
        chunks_done,
        chunks_total,
        rate_bytes_per_s: rate,
        eta_seconds,
        error: f.and_then(|f| f.error.clone()),
        report: f.and_then(|f| f.report.clone()),
    }
}
