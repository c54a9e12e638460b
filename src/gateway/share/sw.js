// FuryMesh share page's service worker (served as /f/sw.js, scope /f/): turns the page's
// verified chunks into an ordinary browser download, streamed to disk as they come, for
// browsers without the File System Access API.
//
// The page registers a download here over a MessageChannel ({furymesh: 'save', token,
// name, size} with the channel's port), then navigates a hidden iframe to
// /f/FILE_ID/save/TOKEN. This worker answers that navigation with a Response whose body is
// a ReadableStream and whose headers make it a download (Content-Disposition: attachment,
// Content-Length). The stream pulls: every time it has room (4 MiB queued at most) it asks
// the page for one more chunk ({pull: 1}), and the page answers with the next chunk in file
// order (an ArrayBuffer, transferred, not copied), or {end: true}, or {abort: reason}. The
// page sends nothing it was not asked for, so the whole file is never in memory: what the
// browser has not yet written to disk waits in the page, and the page stops fetching
// chunks when too much waits. If the download is cancelled in the browser, the page hears
// {cancel: reason} and stops.
//
// Nothing else goes through this worker: every other request in its scope is left to the
// network. A token is good for one download, once.
'use strict';

const QUEUE_BYTES = 4 << 20;
const saves = new Map(); // token -> {port, name, size}
const SAVE_PATH = /^\/f\/[0-9a-f]{64}\/save\/([0-9a-f]{32})$/;

self.addEventListener('install', () => self.skipWaiting());

self.addEventListener('message', (e) => {
  const m = e.data;
  if (!m || typeof m !== 'object') return;
  // {furymesh: 'ping'} needs no answer: the event keeps this worker alive mid-download.
  if (m.furymesh === 'save' && e.ports[0] && typeof m.token === 'string' && /^[0-9a-f]{32}$/.test(m.token)
      && Number.isSafeInteger(m.size) && m.size >= 0) {
    saves.set(m.token, { port: e.ports[0], name: String(m.name || 'download'), size: m.size });
    e.ports[0].postMessage({ ready: true });
  }
});

self.addEventListener('fetch', (e) => {
  const url = new URL(e.request.url);
  if (url.origin !== self.location.origin) return;
  const m = SAVE_PATH.exec(url.pathname);
  if (!m || !saves.has(m[1])) return;
  const save = saves.get(m[1]);
  saves.delete(m[1]);
  e.respondWith(download(save));
});

// RFC 8187 `filename*` value: UTF-8, percent-encoded beyond the attribute characters.
function encodeName(name) {
  return encodeURIComponent(name).replace(/['()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);
}

function download({ port, name, size }) {
  let asked = null; // the stream's pull() waiting for the page's answer
  const stream = new ReadableStream({
    start(controller) {
      port.onmessage = (e) => {
        const d = e.data;
        const answer = asked;
        asked = null;
        try {
          if (d instanceof ArrayBuffer) controller.enqueue(new Uint8Array(d));
          else if (d && d.end) { controller.close(); port.close(); }
          else if (d && d.abort) { controller.error(new Error(String(d.abort))); port.close(); }
        } catch (_) {
          // The stream is closed or errored already (the download was cancelled).
        }
        if (answer) answer();
      };
      port.postMessage({ started: true });
    },
    pull() {
      return new Promise((resolve) => {
        asked = resolve;
        port.postMessage({ pull: 1 });
      });
    },
    cancel(reason) {
      port.postMessage({ cancel: String(reason || 'the download was cancelled') });
      port.close();
    },
  }, new ByteLengthQueuingStrategy({ highWaterMark: QUEUE_BYTES }));
  const ascii = name.replace(/[^\x20-\x7e]|["\\]/g, '_');
  return new Response(stream, {
    headers: {
      'Content-Type': 'application/octet-stream',
      'Content-Length': String(size),
      'Content-Disposition': `attachment; filename="${ascii}"; filename*=UTF-8''${encodeName(name)}`,
      'X-Content-Type-Options': 'nosniff',
    },
  });
}
