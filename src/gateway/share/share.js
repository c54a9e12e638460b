// FuryMesh share page: downloads one published file from the seeder that served this page
// and from the other seeders it found in its DHT, over one WebRTC data channel each,
// verifying every chunk with WebCrypto before it counts.
//
// Several seeders: the page asks this node for the file's other providers that offer
// WebRTC (`GET /f/ID/peers`) and signals each through this node (`POST /f/ID/signal/NODE`:
// the node relays the offer through its DHT, the provider answers with a session of its own
// and the page then talks to it directly). Chunks are spread by pulling: each channel takes
// the next missing chunk whenever its window has room, so every seeder serves and a faster
// one serves more. The page trusts no seeder: a chunk counts only once its hash matches the
// manifest, and a seeder that sends a corrupt one while others are open is dropped for the
// rest of the download.
//
// The page speaks the node's peer wire inside the channel (ARCHITECTURE.md, "Browser
// peers"): frames are `len u32 LE || Message FlatBuffer`; a CHUNK_RESPONSE is followed by
// `payload_len` raw bytes. DTLS encrypts the channel; there is no node handshake. Everything
// that comes from the network is hostile: every length is bounded, every offset checked,
// the manifest is trusted only once its SHA-256 equals the file ID, and a chunk only once
// its SHA-256 equals the manifest's hash for it.
'use strict';

(() => {
  const WINDOW_CHUNKS = 16; // requests in flight per channel
  const BODY_MAX = 64 * 1024; // largest response frame body we accept
  const CORRUPT_MAX = 3; // corrupt chunks before a channel is dropped
  const RECONNECTS_MAX = 3; // new channels after one fails mid-download
  const OPEN_TIMEOUT_MS = 20000;
  const GATHER_TIMEOUT_MS = 3000;
  const START_GRACE_MS = 2000; // after the first channel opens, how long the others may take
  const PEERS_MAX = 8; // other seeders the page signals, at most (config::BROWSER_PEERS_MAX)
  const PEERS_BODY_MAX = 4096;
  const DOMAIN = 'furymesh-file-v1\0';
  const CHUNKS_MAX = 1 << 22; // config::CHUNKS_PER_FILE_MAX is lower; a sanity bound
  // A streamed save: the chunks the page holds (asked for, arriving, or verified and
  // waiting for their turn in file order or for the browser's download to take them) span
  // at most this many bytes past the next chunk the download needs (2 chunks if larger).
  const REORDER_BYTES = 32 << 20;
  const WORKER_TIMEOUT_MS = 10000; // the service worker registers and takes the download
  const KEEPALIVE_MS = 10000; // a message to the worker so the browser keeps it running
  // MessageType and ErrorCode values (schemas/furymesh.fbs).
  const T_CHUNK_REQUEST = 0, T_CHUNK_RESPONSE = 1, T_ERROR = 6;
  const E_UNKNOWN_FILE = 1, E_CHUNK_OUT_OF_RANGE = 2, E_MALFORMED = 3, E_FILE_CHANGED = 4;

  const $ = (id) => document.getElementById(id);
  const main = $('share');
  const fileId = main.dataset.fileId;
  const name = main.dataset.name || fileId;
  const save = new URLSearchParams(location.search).get('save');

  // ---- progress on screen -----------------------------------------------------------
  // `save`: how the file reaches the disk ('file', 'stream' or 'blob', see SAVE_PATHS).
  // `seeders`: one entry per seeder tried, {node ('origin' or its node ID), state
  // ('connecting', 'open', 'closed', 'dropped', 'failed'), chunks, bytes, corrupt, error}.
  const status = { state: 'idle', save: null, bytes: 0, total: 0, chunks: 0, corrupt: 0, peers: 0, seeders: [], error: null };
  window.furymeshStatus = status;

  function setState(state, text) {
    status.state = state;
    document.body.dataset.state = state;
    $('state').textContent = text || '';
  }

  function fail(msg) {
    status.error = msg;
    setState('failed', '');
    const e = $('error');
    e.textContent = msg;
    e.hidden = false;
    $('download').disabled = false;
  }

  function human(n) {
    const u = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
    let i = 0;
    while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
    return `${i ? n.toFixed(1) : n} ${u[i]}`;
  }

  function duration(s) {
    if (!isFinite(s)) return '–';
    s = Math.ceil(s);
    if (s < 60) return `${s} s`;
    if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
    return `${Math.floor(s / 3600)} h ${Math.floor(s / 60) % 60} min`;
  }

  let started = 0;
  function showProgress() {
    const secs = Math.max((performance.now() - started) / 1000, 0.001);
    const rate = status.bytes / secs;
    $('done').textContent = human(status.bytes);
    $('total').textContent = human(status.total);
    $('rate').textContent = `${human(rate)}/s`;
    $('eta').textContent = rate > 0 ? duration((status.total - status.bytes) / rate) : '–';
    $('bar').value = status.total ? status.bytes / status.total : 1;
  }

  // ---- bytes ------------------------------------------------------------------------
  function hex(buf) {
    return Array.from(new Uint8Array(buf), (b) => b.toString(16).padStart(2, '0')).join('');
  }

  async function sha256(bytes) {
    return new Uint8Array(await crypto.subtle.digest('SHA-256', bytes));
  }

  function equalBytes(a, b) {
    if (a.length !== b.length) return false;
    let d = 0;
    for (let i = 0; i < a.length; i++) d |= a[i] ^ b[i];
    return d === 0;
  }

  // ---- the manifest: trusted only if it hashes to the file ID ------------------------
  async function fetchManifest() {
    const r = await fetch(`/f/${fileId}/manifest`);
    if (!r.ok) throw new Error(`the node has no manifest for this file (${r.status})`);
    const buf = new Uint8Array(await r.arrayBuffer());
    if (buf.length < 33 || buf.length > 33 + 32 * CHUNKS_MAX) throw new Error('bad manifest length');
    if (hex(await sha256(buf)) !== fileId) {
      throw new Error('the manifest does not hash to the file ID: refused');
    }
    for (let i = 0; i < DOMAIN.length; i++) {
      if (buf[i] !== DOMAIN.charCodeAt(i)) throw new Error('not a file manifest');
    }
    const dv = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
    const size = dv.getBigUint64(17, true);
    const chunkSize = dv.getUint32(25, true);
    const count = dv.getUint32(29, true);
    if (size > BigInt(Number.MAX_SAFE_INTEGER) || chunkSize === 0) throw new Error('bad manifest');
    const n = Number(size);
    if (count !== Math.ceil(n / chunkSize) || buf.length !== 33 + 32 * count) {
      throw new Error('inconsistent manifest');
    }
    return {
      size: n,
      chunkSize,
      count,
      hash: (i) => buf.subarray(33 + 32 * i, 33 + 32 * (i + 1)),
      len: (i) => Math.min(chunkSize, n - i * chunkSize),
    };
  }

  // ---- FlatBuffers, the few messages the page needs -----------------------------------
  // Encoding lays tables out front to back: vtable, table (a 4-byte slot per field), then
  // the strings and tables it points to, so every uoffset is positive.
  class Writer {
    constructor() { this.buf = new Uint8Array(256); this.pos = 0; }
    need(n) {
      if (this.pos + n <= this.buf.length) return;
      const b = new Uint8Array(Math.max(this.buf.length * 2, this.pos + n));
      b.set(this.buf);
      this.buf = b;
    }
    dv() { return new DataView(this.buf.buffer); }
    align(n) { while (this.pos % n) { this.need(1); this.buf[this.pos++] = 0; } }
    u16(v) { this.need(2); this.dv().setUint16(this.pos, v, true); this.pos += 2; }
    u32(v) { this.need(4); this.dv().setUint32(this.pos, v, true); this.pos += 4; }
    // fields: [[id, kind, value]], kind 'u8' | 'u16' | 'u32' | 'str' | 'table'
    table(fields) {
      this.align(4);
      const slots = Math.max(-1, ...fields.map((f) => f[0])) + 1;
      const vt = this.pos;
      const vtSize = 4 + 2 * slots;
      this.u16(vtSize);
      this.u16(4 + 4 * fields.length);
      for (let id = 0; id < slots; id++) {
        const k = fields.findIndex((f) => f[0] === id);
        this.u16(k < 0 ? 0 : 4 + 4 * k);
      }
      this.align(4);
      const tbl = this.pos;
      this.u32(tbl - vt); // soffset: the vtable sits before the table
      const refs = [];
      for (const [, kind, v] of fields) {
        const at = this.pos;
        this.u32(0);
        const dv = this.dv();
        if (kind === 'u8') dv.setUint8(at, v);
        else if (kind === 'u16') dv.setUint16(at, v, true);
        else if (kind === 'u32') dv.setUint32(at, v, true);
        else refs.push([at, kind, v]);
      }
      for (const [at, kind, v] of refs) {
        this.align(4);
        const child = kind === 'str' ? this.string(v) : this.table(v);
        this.dv().setUint32(at, child - at, true);
      }
      return tbl;
    }
    string(s) {
      const bytes = new TextEncoder().encode(s);
      this.align(4);
      const at = this.pos;
      this.u32(bytes.length);
      this.need(bytes.length + 1);
      this.buf.set(bytes, this.pos);
      this.pos += bytes.length;
      this.buf[this.pos++] = 0;
      return at;
    }
  }

  // A whole frame: length prefix and a Message body.
  function frame(message) {
    const w = new Writer();
    w.u32(0); // root offset, patched below
    const root = w.table(message);
    w.dv().setUint32(0, root, true);
    w.align(4);
    const out = new Uint8Array(4 + w.pos);
    new DataView(out.buffer).setUint32(0, w.pos, true);
    out.set(w.buf.subarray(0, w.pos), 4);
    return out;
  }

  function chunkRequest(index) {
    return frame([
      [0, 'u8', T_CHUNK_REQUEST],
      [1, 'table', [[0, 'str', fileId], [1, 'u32', index]]],
    ]);
  }

  // Reads a received body; any offset outside it throws (the peer is then dropped).
  class Reader {
    constructor(bytes) {
      this.b = bytes;
      this.dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    }
    check(at, n) {
      if (!Number.isInteger(at) || at < 0 || at + n > this.b.length) throw new Error('malformed frame');
    }
    u8(at) { this.check(at, 1); return this.dv.getUint8(at); }
    u16(at) { this.check(at, 2); return this.dv.getUint16(at, true); }
    u32(at) { this.check(at, 4); return this.dv.getUint32(at, true); }
    i32(at) { this.check(at, 4); return this.dv.getInt32(at, true); }
    root() { return this.table(0); }
    // The table a uoffset at `at` points to: [table position, vtable position, vtable size].
    table(at) {
      const t = at + this.u32(at);
      const vt = t - this.i32(t);
      const size = this.u16(vt);
      if (size < 4 || size % 2) throw new Error('malformed frame');
      this.check(vt, size);
      return { t, vt, size };
    }
    field(tab, id) {
      const o = 4 + 2 * id;
      if (o + 2 > tab.size) return 0;
      const off = this.u16(tab.vt + o);
      return off ? tab.t + off : 0;
    }
    fu8(tab, id, dflt) { const p = this.field(tab, id); return p ? this.u8(p) : dflt; }
    fu16(tab, id, dflt) { const p = this.field(tab, id); return p ? this.u16(p) : dflt; }
    fu32(tab, id, dflt) { const p = this.field(tab, id); return p ? this.u32(p) : dflt; }
    ftable(tab, id) { const p = this.field(tab, id); return p ? this.table(p) : null; }
    fstr(tab, id, max) {
      const p = this.field(tab, id);
      if (!p) return null;
      const s = p + this.u32(p);
      const len = this.u32(s);
      this.check(s + 4, len);
      return new TextDecoder().decode(this.b.subarray(s + 4, s + 4 + Math.min(len, max)));
    }
  }

  // A response body: {kind: 'chunk', index, payloadLen} | {kind: 'error', code, message, index}.
  function decodeResponse(body) {
    const r = new Reader(body);
    const m = r.root();
    const type = r.fu8(m, 0, 0);
    if (type === T_CHUNK_RESPONSE) {
      const c = r.ftable(m, 2);
      if (!c) throw new Error('chunk response without its table');
      if (r.fstr(c, 0, 64) !== fileId) throw new Error('chunk response for another file');
      return { kind: 'chunk', index: r.fu32(c, 1, 0), payloadLen: r.fu32(c, 4, 0) };
    }
    if (type === T_ERROR) {
      const e = r.ftable(m, 8);
      if (!e) throw new Error('error without its table');
      return {
        kind: 'error',
        code: r.fu16(e, 0, 0),
        message: r.fstr(e, 1, 200) || '',
        index: r.fu32(e, 3, 0),
      };
    }
    throw new Error(`unexpected message type ${type}`);
  }

  // ---- where verified chunks go --------------------------------------------------------
  // File System Access: written in place as they arrive, nothing kept in memory.
  class FileSink {
    constructor(writable) { this.w = writable; }
    async write(index, offset, bytes) { await this.w.write({ type: 'write', position: offset, data: bytes }); }
    async close() { await this.w.close(); }
    async abort() { try { await this.w.abort(); } catch (_) { /* gone already */ } }
  }

  // The last resort, without File System Access or service workers (or with
  // `?save=download`): chunks become Blob parts in file order as they arrive (the browser
  // keeps blob data out of the page, on disk when large), saved as one download at the end.
  class BlobSink {
    constructor() { this.parts = []; this.next = 0; this.waiting = new Map(); }
    async write(index, offset, bytes) {
      this.waiting.set(index, new Blob([bytes]));
      while (this.waiting.has(this.next)) {
        this.parts.push(this.waiting.get(this.next));
        this.waiting.delete(this.next);
        this.next++;
      }
    }
    async close() {
      const url = URL.createObjectURL(new Blob(this.parts, { type: 'application/octet-stream' }));
      this.parts = [];
      const a = document.createElement('a');
      a.href = url;
      a.download = name;
      document.body.append(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(url), 120000);
    }
    async abort() { this.parts = []; this.waiting.clear(); }
  }

  // A streamed download (`?save=stream`, or the default without File System Access): the
  // page's service worker (sw.js) answers a hidden iframe's navigation with a download whose
  // body it pulls from here, one chunk per pull, in file order. Chunks that arrive early,
  // or that the browser has not asked for yet, wait here; `limit()` keeps the download from
  // fetching more than REORDER_BYTES ahead of what the browser took.
  class StreamSink {
    constructor(worker, port, manifest, credit) {
      this.worker = worker;
      this.port = port;
      this.count = manifest.count;
      this.window = Math.max(2, Math.floor(REORDER_BYTES / manifest.chunkSize));
      this.waiting = new Map(); // index -> verified bytes not handed over yet
      this.next = 0; // the next chunk (file order) the browser gets
      this.credit = credit; // pulls not answered yet
      this.drained = null; // close() waiting for every chunk to be taken
      this.error = null;
      this.onAdvance = () => {}; // the download may fetch further
      this.onCancel = () => {}; // the browser cancelled the download
      this.keepalive = setInterval(() => worker.postMessage({ furymesh: 'ping' }), KEEPALIVE_MS);
      port.onmessage = (e) => this.heard(e.data || {});
    }

    heard(m) {
      if (m.pull) {
        this.credit++;
        this.flush();
      } else if (m.cancel && !this.error) {
        this.error = `the browser cancelled the download (${m.cancel})`;
        this.stop();
        this.onCancel(this.error);
      }
    }

    // Registers the worker, hands it the download and starts the browser's download; null
    // where the worker cannot take it (then the page saves through a Blob).
    static async open(manifest) {
      if (!('serviceWorker' in navigator) || !window.isSecureContext) return null;
      let port, frame;
      try {
        const reg = await navigator.serviceWorker.register('/f/sw.js', { scope: '/f/' });
        await withTimeout(navigator.serviceWorker.ready, WORKER_TIMEOUT_MS);
        const worker = reg.active;
        if (!worker) return null;
        const token = hex(crypto.getRandomValues(new Uint8Array(16)));
        const ch = new MessageChannel();
        port = ch.port1;
        // What the worker says before the sink takes the port over.
        const said = { pulls: 0 };
        const waiters = {};
        const heard = (what) => new Promise((resolve) => {
          if (said[what]) resolve(); else waiters[what] = resolve;
        });
        port.onmessage = (e) => {
          const m = e.data || {};
          if (m.pull) said.pulls++;
          for (const what of ['ready', 'started', 'cancel']) {
            if (m[what]) { said[what] = m[what]; if (waiters[what]) waiters[what](); }
          }
        };
        worker.postMessage({ furymesh: 'save', token, name, size: manifest.size }, [ch.port2]);
        await withTimeout(heard('ready'), WORKER_TIMEOUT_MS);
        frame = document.createElement('iframe');
        frame.hidden = true;
        frame.src = `/f/${fileId}/save/${token}`;
        document.body.append(frame);
        await withTimeout(heard('started'), WORKER_TIMEOUT_MS);
        if (said.cancel) throw new Error('cancelled');
        return new StreamSink(worker, port, manifest, said.pulls);
      } catch (_) {
        if (port) port.close();
        if (frame) frame.remove();
        return null;
      }
    }

    limit() { return this.next + this.window; }

    async write(index, offset, bytes) {
      if (this.error) throw new Error(this.error);
      this.waiting.set(index, bytes);
      this.flush();
    }

    // Hands over the chunks the browser asked for that are next in file order.
    flush() {
      let moved = false;
      while (this.credit > 0 && this.waiting.has(this.next)) {
        let b = this.waiting.get(this.next);
        this.waiting.delete(this.next);
        if (b.byteOffset !== 0 || b.byteLength !== b.buffer.byteLength) b = b.slice();
        this.port.postMessage(b.buffer, [b.buffer]);
        this.credit--;
        this.next++;
        moved = true;
      }
      if (this.drained && this.next === this.count) {
        this.port.postMessage({ end: true });
        this.drained();
        this.drained = null;
        this.stop();
      }
      if (moved) this.onAdvance();
    }

    // Resolves once the browser took every chunk (the download then ends whole).
    close() {
      if (this.error) return Promise.reject(new Error(this.error));
      return new Promise((resolve) => { this.drained = resolve; this.flush(); });
    }

    async abort(why) {
      if (!this.error) this.port.postMessage({ abort: why || 'the download failed' });
      this.error = this.error || why || 'the download failed';
      this.waiting.clear();
      this.stop();
    }

    stop() {
      clearInterval(this.keepalive);
    }
  }

  function withTimeout(promise, ms) {
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => reject(new Error('timed out')), ms);
      promise.then((v) => { clearTimeout(t); resolve(v); }, (e) => { clearTimeout(t); reject(e); });
    });
  }

  // ---- one data channel to the seeder ---------------------------------------------------
  function gathered(pc) {
    if (pc.iceGatheringState === 'complete') return Promise.resolve();
    return new Promise((resolve) => {
      const t = setTimeout(resolve, GATHER_TIMEOUT_MS);
      pc.addEventListener('icegatheringstatechange', () => {
        if (pc.iceGatheringState === 'complete') { clearTimeout(t); resolve(); }
      });
    });
  }

  // The other seeders of this file this node found (node IDs), at most PEERS_MAX.
  async function fetchPeers() {
    const r = await fetch(`/f/${fileId}/peers`);
    if (!r.ok) return [];
    const text = await r.text();
    if (text.length > PEERS_BODY_MAX) return [];
    const list = JSON.parse(text).peers;
    if (!Array.isArray(list)) return [];
    const ids = list.filter((n) => typeof n === 'string' && /^[0-9a-f]{40}$/.test(n));
    return [...new Set(ids)].slice(0, PEERS_MAX);
  }

  // A data channel to this node (`node` null) or to the seeder `node`, whose offer this
  // node relays through its DHT.
  async function openChannel(node) {
    const pc = new RTCPeerConnection({ iceServers: [] });
    const dc = pc.createDataChannel('furymesh', { ordered: true });
    dc.binaryType = 'arraybuffer';
    await pc.setLocalDescription(await pc.createOffer());
    await gathered(pc);
    const r = await fetch(node ? `/f/${fileId}/signal/${node}` : `/f/${fileId}/signal`, {
      method: 'POST',
      headers: { 'content-type': 'application/sdp' },
      body: pc.localDescription.sdp,
    });
    if (!r.ok) {
      pc.close();
      const why = node ? 'the node could not signal that seeder' : 'the seeder refused the connection';
      throw new Error(`${why}: ${r.status} ${(await r.text()).trim().slice(0, 300)}`);
    }
    await pc.setRemoteDescription({ type: 'answer', sdp: await r.text() });
    await new Promise((resolve, reject) => {
      const t = setTimeout(() => reject(new Error('the data channel did not open (ICE or DTLS failed)')), OPEN_TIMEOUT_MS);
      dc.onopen = () => { clearTimeout(t); resolve(); };
      dc.onclose = () => { clearTimeout(t); reject(new Error('the data channel closed before it opened')); };
    });
    return { pc, dc };
  }

  // A peer: one channel, its requests in flight (answered in order) and its deframer.
  class Peer {
    constructor(dl, pc, dc, entry) {
      this.dl = dl;
      this.pc = pc;
      this.dc = dc;
      this.entry = entry; // its row in status.seeders
      this.inflight = []; // chunk indices, in request order
      this.corrupt = 0;
      this.closed = false;
      this.queue = []; // received Uint8Arrays not consumed yet
      this.queued = 0;
      this.head = 0; // offset into queue[0]
      this.want = null; // {index, len, buf, got} while a payload comes in
      dc.onmessage = (e) => this.onData(new Uint8Array(e.data));
      dc.onclose = () => this.drop('the seeder closed the channel');
      dc.onerror = () => this.drop('the data channel failed');
      // A seeder that vanishes leaves the channel "open": only ICE's consent checks notice.
      pc.addEventListener('connectionstatechange', () => {
        if (pc.connectionState === 'failed') this.drop('the connection to the seeder failed (no answer to ICE checks)');
      });
    }

    request() {
      // The window counts requests in flight and chunks received but not yet verified and
      // written: a slow disk or hash holds the requests back, so memory stays bounded.
      if (!this.dl.started) return;
      const pendingMax = WINDOW_CHUNKS * Math.max(1, this.dl.peers.size);
      while (!this.closed && this.inflight.length < WINDOW_CHUNKS && this.dl.pending < pendingMax) {
        const i = this.dl.nextChunk();
        if (i === undefined) return;
        this.inflight.push(i);
        this.dc.send(chunkRequest(i));
      }
    }

    take(n) {
      // n bytes from the front of the queue (n <= this.queued).
      const out = new Uint8Array(n);
      let done = 0;
      while (done < n) {
        const front = this.queue[0];
        const k = Math.min(n - done, front.length - this.head);
        out.set(front.subarray(this.head, this.head + k), done);
        done += k;
        this.head += k;
        if (this.head === front.length) { this.queue.shift(); this.head = 0; }
      }
      this.queued -= n;
      return out;
    }

    onData(bytes) {
      if (this.closed) return;
      try {
        if (bytes.length) { this.queue.push(bytes); this.queued += bytes.length; }
        for (;;) {
          if (this.want) {
            const w = this.want;
            const k = Math.min(w.len - w.got, this.queued);
            if (k > 0) { w.buf.set(this.take(k), w.got); w.got += k; }
            if (w.got < w.len) return;
            this.want = null;
            this.dl.received(this, w.index, w.buf);
            continue;
          }
          if (this.queued < 4) return;
          // Look at the length without consuming it until the body is whole.
          const len = this.lengthAtHead();
          if (len > BODY_MAX) throw new Error(`a frame of ${len} bytes`);
          if (this.queued < 4 + len) return;
          this.take(4);
          const msg = decodeResponse(this.take(len));
          const index = this.inflight.shift();
          if (index === undefined) throw new Error('a response nobody asked for');
          if (msg.kind === 'chunk') {
            if (msg.index !== index || msg.payloadLen !== this.dl.manifest.len(index)) {
              throw new Error(`chunk ${msg.index} (${msg.payloadLen} bytes) answered request ${index}`);
            }
            this.want = { index, len: msg.payloadLen, buf: new Uint8Array(msg.payloadLen), got: 0 };
            if (msg.payloadLen === 0) continue;
          } else {
            this.dl.refused(this, index, msg);
          }
        }
      } catch (e) {
        this.drop(`the seeder sent something malformed: ${e.message}`);
      }
    }

    lengthAtHead() {
      const b = new Uint8Array(4);
      let got = 0, qi = 0, off = this.head;
      while (got < 4) {
        const q = this.queue[qi];
        const k = Math.min(4 - got, q.length - off);
        b.set(q.subarray(off, off + k), got);
        got += k; qi++; off = 0;
      }
      return new DataView(b.buffer).getUint32(0, true);
    }

    drop(why) {
      if (this.closed) return;
      this.closed = true;
      if (this.entry.state === 'open') this.entry.state = 'closed';
      this.entry.error = why;
      try { this.dc.close(); } catch (_) { /* already closed */ }
      try { this.pc.close(); } catch (_) { /* already closed */ }
      const lost = this.want ? [this.want.index, ...this.inflight] : [...this.inflight];
      this.inflight = [];
      this.want = null;
      this.dl.peerGone(this, why, lost);
    }
  }

  // ---- the download -----------------------------------------------------------------
  class Download {
    constructor(manifest, sink) {
      this.manifest = manifest;
      this.sink = sink;
      this.todo = Array.from({ length: manifest.count }, (_, i) => i);
      this.verified = 0;
      this.pending = 0; // chunks received, not yet verified and written
      this.have = new Uint8Array(manifest.count); // verified (a chunk asked twice counts once)
      this.peers = new Set();
      this.banned = new Set(); // seeders dropped for a corrupt chunk: never signaled again
      this.started = false; // requests begin once the channels opened (or had their chance)
      this.reconnects = 0;
      this.opened = new Promise((resolve) => { this.onFirstOpen = resolve; });
      this.finished = false;
      this.writing = Promise.resolve();
      this.resolve = null;
      this.reject = null;
    }

    // The next chunk to fetch; none while a streamed save has too much waiting (chunks lost
    // and put back are always below its limit, so the one it waits for is never held back).
    nextChunk() {
      if (this.todo.length === 0) return undefined;
      if (this.sink.limit && this.todo[0] >= this.sink.limit()) return undefined;
      return this.todo.shift();
    }

    run() {
      return new Promise(async (resolve, reject) => {
        this.resolve = resolve;
        this.reject = reject;
        if (this.manifest.count === 0) { this.finish(); return; }
        try { await this.start(); } catch (e) { this.abort(e.message); }
      });
    }

    // Opens channels to this node and to every other seeder it names, all at once; the
    // download starts when every attempt has settled, or START_GRACE_MS after the first
    // channel opened (a later one joins when it opens).
    async start() {
      setState('connecting', 'Connecting to the seeders…');
      const origin = this.attempt(null);
      const others = fetchPeers().then(
        (list) => Promise.allSettled(list.map((n) => this.attempt(n))),
        () => [],
      );
      const settled = Promise.allSettled([origin, others]);
      const grace = this.opened.then(() => new Promise((r) => setTimeout(r, START_GRACE_MS)));
      await Promise.race([settled, grace]);
      if (this.finished) return;
      if (this.peers.size === 0) {
        const errs = status.seeders.filter((s) => s.error).map((s) => s.error);
        throw new Error(errs[0] || 'no seeder could be reached');
      }
      this.started = true;
      this.showPeers();
      this.requestAll();
    }

    // One channel: to this node (`node` null) or to seeder `node` through it.
    attempt(node) {
      const entry = { node: node || 'origin', state: 'connecting', chunks: 0, bytes: 0, corrupt: 0, openMs: null, error: null };
      status.seeders.push(entry);
      const t0 = performance.now();
      return openChannel(node).then(({ pc, dc }) => {
        if (this.finished) { pc.close(); entry.state = 'closed'; return; }
        entry.state = 'open';
        entry.openMs = Math.round(performance.now() - t0);
        const p = new Peer(this, pc, dc, entry);
        p.node = node;
        this.peers.add(p);
        this.onFirstOpen();
        if (this.started) { this.showPeers(); p.request(); }
      }, (e) => {
        entry.state = 'failed';
        entry.error = e.message;
        throw e;
      });
    }

    showPeers() {
      status.peers = this.peers.size;
      const n = this.peers.size;
      setState('downloading', `Downloading from ${n} seeder${n === 1 ? '' : 's'}, checking every chunk…`);
    }

    requestAll() {
      for (const p of this.peers) p.request();
    }

    received(peer, index, bytes) {
      this.pending++;
      peer.request();
      // Verified off the receive path; the window bounds how many wait.
      sha256(bytes).then((digest) => {
        if (this.finished) return;
        if (!equalBytes(digest, this.manifest.hash(index))) {
          this.pending--;
          status.corrupt++;
          peer.corrupt++;
          peer.entry.corrupt++;
          this.todo.unshift(index);
          // With other seeders open, one lie is enough: the others fetch the rest. Alone,
          // it gets CORRUPT_MAX chances (a chunk that changed on its disk may heal).
          const others = [...this.peers].some((q) => q !== peer && !q.closed);
          if (!peer.closed && (others || peer.corrupt >= CORRUPT_MAX)) {
            if (others) this.banned.add(peer.node || 'origin');
            peer.drop(`the seeder sent ${peer.corrupt} corrupt chunk${peer.corrupt === 1 ? '' : 's'}`);
            peer.entry.state = 'dropped';
          }
          this.requestAll();
          return;
        }
        if (this.have[index]) {
          this.pending--;
          this.requestAll();
          return;
        }
        this.have[index] = 1;
        const offset = index * this.manifest.chunkSize;
        const len = bytes.length; // a streamed save hands the buffer itself to its worker
        this.writing = this.writing.then(() => this.sink.write(index, offset, bytes));
        peer.entry.chunks++;
        peer.entry.bytes += len;
        this.writing.then(() => {
          this.pending--;
          status.bytes += len;
          status.chunks++;
          this.verified++;
          showProgress();
          if (this.verified === this.manifest.count) this.finish();
          else this.requestAll();
        }, (e) => this.abort(`cannot write the file: ${e.message}`));
      }, (e) => this.abort(`cannot verify: ${e.message}`));
    }

    refused(peer, index, err) {
      this.todo.unshift(index);
      if ([E_UNKNOWN_FILE, E_CHUNK_OUT_OF_RANGE, E_MALFORMED, E_FILE_CHANGED].includes(err.code)) {
        peer.drop(`the seeder cannot serve this file (${err.message || `error ${err.code}`})`);
      } else {
        // Busy or not there yet: ask again shortly.
        setTimeout(() => peer.request(), 500);
      }
    }

    peerGone(peer, why, lost) {
      this.peers.delete(peer);
      status.peers = this.peers.size;
      this.todo.unshift(...lost);
      if (this.finished) return;
      if (this.peers.size > 0) { this.showPeers(); this.requestAll(); return; }
      if (!this.started) return; // start() decides once the attempts settle
      // The last channel is gone: signal this node again (never a seeder banned for lying).
      if (this.reconnects >= RECONNECTS_MAX || this.banned.has('origin')) { this.abort(why); return; }
      this.reconnects++;
      setState('connecting', 'Connecting to the seeder again…');
      this.attempt(null).catch((e) => this.abort(`${why}; reconnecting failed: ${e.message}`));
    }

    async finish() {
      if (this.finished) return;
      this.finished = true;
      for (const p of this.peers) { p.closed = true; try { p.dc.close(); p.pc.close(); } catch (_) { /* gone */ } }
      setState('saving', 'Saving…');
      try {
        await this.writing;
        await this.sink.close();
        this.resolve();
      } catch (e) {
        this.reject(e);
      }
    }

    async abort(why) {
      if (this.finished) return;
      this.finished = true;
      for (const p of this.peers) { p.closed = true; try { p.dc.close(); p.pc.close(); } catch (_) { /* gone */ } }
      await this.sink.abort(why);
      this.reject(new Error(why));
    }
  }

  // How the file reaches the disk, as `status.save` names it and the page says.
  const SAVE_PATHS = {
    file: 'Saving straight into the file you chose, chunk by chunk.',
    stream: 'Streaming into your downloads as chunks arrive (service worker).',
    blob: 'The browser assembles the file and saves it when every chunk is in.',
  };

  // The save dialog (File System Access) opens straight from the click, while the user's
  // gesture counts, before anything is fetched: a FileSink, null if the user cancelled,
  // undefined where there is none (or `?save=download` / `?save=stream` asks for another).
  async function pickFile() {
    if (save === 'download' || save === 'stream' || typeof window.showSaveFilePicker !== 'function') {
      return undefined;
    }
    try {
      const handle = await window.showSaveFilePicker({ suggestedName: name });
      return new FileSink(await handle.createWritable());
    } catch (e) {
      return e.name === 'AbortError' ? null : undefined;
    }
  }

  async function download() {
    $('download').disabled = true;
    $('error').hidden = true;
    status.error = null;
    if (!window.isSecureContext || !window.crypto || !crypto.subtle) {
      fail('This page needs a secure context to verify the file (WebCrypto): open it over HTTPS, or on localhost.');
      return;
    }
    if (typeof RTCPeerConnection !== 'function') {
      fail('This browser has no WebRTC.');
      return;
    }
    let sink = await pickFile();
    if (sink === null) {
      // Cancelled (a headless browser cancels every dialog): say so, and how to save
      // without one.
      setState('idle', 'Saving was cancelled. Press Download to choose a file again, or add ?save=stream to the link to save into your downloads without a dialog.');
      $('download').disabled = false;
      return;
    }
    $('progress').hidden = false;
    try {
      setState('manifest', 'Checking the manifest against the file ID…');
      const manifest = await fetchManifest();
      // Without a file handle: a download streamed through the service worker, else (no
      // worker, or `?save=download`) one the browser assembles from Blob parts.
      let kind = 'file';
      if (!sink && save !== 'download') {
        sink = await StreamSink.open(manifest);
        kind = 'stream';
      }
      if (!sink) {
        sink = new BlobSink();
        kind = 'blob';
      }
      status.save = kind;
      $('saving').textContent = SAVE_PATHS[kind];
      status.total = manifest.size;
      status.bytes = 0;
      status.chunks = 0;
      status.corrupt = 0;
      status.peers = 0;
      status.seeders = [];
      started = performance.now();
      showProgress();
      const dl = new Download(manifest, sink);
      sink.onAdvance = () => dl.requestAll();
      sink.onCancel = (why) => dl.abort(why);
      await dl.run();
      showProgress();
      setState('done', `Done: ${human(manifest.size)}, every chunk verified.`);
    } catch (e) {
      if (sink) await sink.abort(e.message);
      fail(e.message);
    }
  }

  $('download').addEventListener('click', download);
})();
