//! An HTTP server on a thread of its own, as the control API and the HTTP gateway run:
//! a current-thread tokio runtime driving one serve future until told to stop, with the
//! listening address written to a file in the data directory while it runs (local
//! clients find it there).
//!
//! Kept off the shards so the data path never waits on HTTP and glommio's executors never
//! host a second runtime.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::thread::JoinHandle;

/// A running server thread. [`ServerThread::shut`] (or dropping it) tells the serve future
/// to stop, joins the thread and removes the address file if it is still this server's.
pub(crate) struct ServerThread {
    addr: SocketAddr,
    addr_file: PathBuf,
    stop: Option<flume::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl ServerThread {
    /// Writes `addr` to `addr_file` (mode 0644: an address is no secret), then starts a
    /// thread named `name` that runs `serve(stop)` on `runtime` to its end; `stop` yields
    /// once the server is told to stop. Errors: the address file cannot be written or the
    /// thread cannot start.
    pub(crate) fn spawn<F, Fut>(
        name: &str,
        addr: SocketAddr,
        addr_file: PathBuf,
        runtime: tokio::runtime::Runtime,
        serve: F,
    ) -> io::Result<Self>
    where
        F: FnOnce(flume::Receiver<()>) -> Fut + Send + 'static,
        Fut: Future<Output = ()>,
    {
        crate::storage::write_atomic(&addr_file, format!("{addr}\n").as_bytes())?;
        std::fs::set_permissions(&addr_file, std::fs::Permissions::from_mode(0o644))?;
        let (stop_tx, stop_rx) = flume::bounded::<()>(1);
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || runtime.block_on(serve(stop_rx)));
        let thread = match thread {
            Ok(t) => t,
            Err(e) => {
                let _ = std::fs::remove_file(&addr_file);
                return Err(e);
            }
        };
        Ok(Self { addr, addr_file, stop: Some(stop_tx), thread: Some(thread) })
    }

    /// The address it listens on (port 0 resolved).
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops the server and waits for its thread; idempotent.
    pub(crate) fn shut(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        // Only ours: another node on the same data directory may have written its own.
        if std::fs::read_to_string(&self.addr_file).is_ok_and(|s| s.trim() == self.addr.to_string())
        {
            let _ = std::fs::remove_file(&self.addr_file);
        }
    }
}

impl Drop for ServerThread {
    fn drop(&mut self) {
        self.shut();
    }
}
