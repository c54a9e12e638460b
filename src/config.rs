//! Every tunable and every hard bound, in one place, with its unit last in its name.
//!
//! Defaults are what `furymesh` uses when a flag is not given; `tuning.md` documents each
//! one with its measured effect (a test checks that every knob appears there).

use std::time::Duration;

/// Default chunk size in bytes (whitepaper: 512 KiB).
pub const CHUNK_SIZE_DEFAULT_BYTES: u32 = 512 * 1024;
/// Chunks per file the automatic chunk size aims for (see [`auto_chunk_size`]).
pub const AUTO_CHUNKS_TARGET: u64 = 2048;
/// Smallest chunk size `publish` picks by itself: below this, per-chunk costs (a request, a
/// header, a hash finalisation, a write) show: 64 KiB chunks cost the downloader 1.3x the
/// CPU per GiB of 512 KiB chunks (tuning.md).
pub const AUTO_CHUNK_SIZE_MIN_BYTES: u32 = 256 * 1024;

/// The chunk size `publish` uses when `--chunk-size` is not given: the power of two that
/// gives about `AUTO_CHUNKS_TARGET` chunks, between `AUTO_CHUNK_SIZE_MIN_BYTES` and
/// `CHUNK_SIZE_MAX_BYTES`. A 1 GiB file gets the whitepaper's 512 KiB; a 100 MiB file
/// 256 KiB chunks (400 of them, plenty to spread over many peers); a 100 GiB file 16 MiB
/// (6,400 chunks, a 200 KiB manifest).
pub fn auto_chunk_size(file_bytes: u64) -> u32 {
    let ideal = file_bytes.div_ceil(AUTO_CHUNKS_TARGET).next_power_of_two();
    ideal.clamp(AUTO_CHUNK_SIZE_MIN_BYTES as u64, CHUNK_SIZE_MAX_BYTES as u64) as u32
}

/// Smallest accepted chunk size: 4 KiB keeps per-chunk overhead (a request, a header, a
/// hash) below 2%.
pub const CHUNK_SIZE_MIN_BYTES: u32 = 4 * 1024;
/// Largest accepted chunk size. A chunk is the unit of verification, so a receiver buffers a
/// whole one per request in flight.
pub const CHUNK_SIZE_MAX_BYTES: u32 = 16 * 1024 * 1024;

/// Allocations below this many bytes come from malloc's arenas instead of their own
/// mmap (glibc's `M_MMAP_THRESHOLD`, set by the node at start): twice the largest chunk, so
/// a chunk buffer is reused memory, not fresh pages. 32 MiB is also glibc's ceiling for it
/// on 64-bit.
pub const ALLOCATOR_MMAP_THRESHOLD_BYTES: usize = 2 * CHUNK_SIZE_MAX_BYTES as usize;

/// Free memory at the top of a malloc arena beyond this many bytes goes back to the kernel
/// (glibc's `M_TRIM_THRESHOLD`, set by the node at start). Below it the pages stay mapped
/// for the next chunk buffer; see tuning.md, "Allocator tuning".
pub const ALLOCATOR_TRIM_THRESHOLD_BYTES: usize = 2 * CHUNK_SIZE_MAX_BYTES as usize;
/// Most chunks one file may have: bounds a manifest to 32 MiB of hashes.
pub const CHUNKS_PER_FILE_MAX: u32 = 1 << 20;

/// Largest frame body (the FlatBuffer, not a chunk payload) a downloader accepts: a
/// manifest with `CHUNKS_PER_FILE_MAX` hashes plus room for its other fields.
pub const RESPONSE_BODY_MAX_BYTES: u32 = CHUNKS_PER_FILE_MAX * 32 + 64 * 1024;
/// Largest frame body a seeder accepts from a client. Requests are tiny; anything bigger is
/// an attack or a bug and closes the connection.
pub const REQUEST_BODY_MAX_BYTES: u32 = 4 * 1024;

/// Burst a bandwidth limit lets through at once (`--max-upload-rate`,
/// `--max-peer-upload-rate`, `--max-download-rate`), as time at the limit's rate: a tenth of
/// a second, so the burst is 1% of a 10 s transfer at any rate, and long enough to absorb
/// a late timer wake-up (a few ms) without losing throughput. See [`throttle_burst_bytes`].
pub const THROTTLE_BURST: Duration = Duration::from_millis(100);
/// Smallest burst of a bandwidth limit: below 10 KB/s a tenth of a second would be pieces
/// of a few hundred bytes, one write each.
pub const THROTTLE_BURST_MIN_BYTES: u64 = 1024;
/// Largest burst of a bandwidth limit: above 80 MB/s the burst is less than
/// `THROTTLE_BURST` (a shorter burst only costs more timer wake-ups).
pub const THROTTLE_BURST_MAX_BYTES: u64 = 8 << 20;
/// Largest piece of a chunk the seeder charges to its upload limits and writes at once: a
/// chunk bigger than the limit's burst goes out in pieces as tokens allow (the first bytes
/// leave at once, not after the whole chunk's wait), so a downloader sees bytes flow.
pub const THROTTLE_PIECE_MAX_BYTES: u64 = 256 << 10;

/// The burst of a bandwidth limit of `bytes_per_sec`: `THROTTLE_BURST` of it, between
/// `THROTTLE_BURST_MIN_BYTES` and `THROTTLE_BURST_MAX_BYTES`.
pub fn throttle_burst_bytes(bytes_per_sec: u64) -> u64 {
    let at_rate = (bytes_per_sec as u128 * THROTTLE_BURST.as_nanos() / 1_000_000_000) as u64;
    at_rate.clamp(THROTTLE_BURST_MIN_BYTES, THROTTLE_BURST_MAX_BYTES)
}

/// Largest data-channel message (block) FuryMesh sends by default: a chunk payload and
/// every record travel over a WebRTC data channel as messages of at most this many bytes.
/// 64 KiB is what every browser accepts (RFC 8831 §6.6 leaves the cap to the peers; the
/// SDP `max-message-size` attribute, RFC 8841, announces it).
pub const WEBRTC_BLOCK_BYTES: usize = 64 * 1024;
/// Largest block size a node may be configured to (`WEBRTC_BLOCK_BYTES` raised, up to the
/// 256 KiB browsers cap a message at), and the largest message it accepts (announced in SDP).
pub const WEBRTC_BLOCK_MAX_BYTES: usize = 256 * 1024;
/// Bytes a data channel may hold unacknowledged in SCTP before writes wait (back-pressure,
/// the W3C `bufferedAmount`); writers resume below half of it.
pub const WEBRTC_SEND_BUFFER_BYTES: usize = 1 << 20;
/// Received bytes a data channel keeps for a reader that has not taken them; beyond it the
/// rest stays in SCTP, whose receive window then slows the sender.
pub const WEBRTC_RECV_BUFFER_BYTES: usize = 1 << 20;
/// SCTP packet budget (the `rtc` crate's SCTP MTU: common header plus DATA chunks, each
/// packet one DTLS record in one UDP datagram) a seeder uses toward a peer that every
/// path leads to over loopback: its offer came from, and named, only loopback addresses,
/// and the seeder offers no TURN-relayed candidate. Loopback carries 64 KiB datagrams, and
/// TLS-style records stop at 2^14 bytes of plaintext (RFC 6347 §4.1 via RFC 5246 §6.2.1),
/// which peers may enforce. Everywhere else, and toward browsers, `rtc`'s default of 1,191
/// bytes stands: it fits a TURN-relayed IPv6 path at the minimum MTU (1,280), and FuryMesh
/// has no path-MTU discovery (RFC 8899) to learn that a larger packet would arrive.
pub const WEBRTC_LOOPBACK_SCTP_MTU: u32 = 16_384;
/// Send and receive buffer of a WebRTC UDP socket (SO_SNDBUF/SO_RCVBUF; capped at
/// net.core.wmem_max/rmem_max unless the process may force it): bursts of a whole SCTP
/// window must not be dropped by the kernel, SCTP in `rtc` recovers slowly from loss.
pub const WEBRTC_SOCKET_BUFFER_BYTES: usize = 8 << 20;
/// ICE connectivity-check interval (RFC 8445 §14.2 Ta), in milliseconds: ~60 ms to an open
/// channel on loopback instead of ~250 ms with `rtc`'s default 200 ms.
pub const WEBRTC_ICE_CHECK_INTERVAL_MS: u64 = 10;
/// How often a downloader sends its offer again until answered, in milliseconds.
pub const WEBRTC_OFFER_RETRY_MS: u64 = 250;
/// WebRTC set-ups (offer answered, data channel not open yet: ICE, DTLS, SCTP) a seeder
/// shard runs at once (admission control). An offer by datagram beyond them is answered
/// "busy", with no session made for it, and its sender offers again after the pause the
/// answer asks for; its open deadline starts once it is answered. Without a bound, a
/// flash crowd of offers starts more set-ups than finish inside their deadline, and each
/// one that times out comes back as another offer (tuning.md, the 1,000-session soak).
pub const WEBRTC_HANDSHAKES_PER_SHARD: usize = 32;
/// The pause a "busy" answer asks for before the next offer, in milliseconds (the offerer
/// waits one to two times it, at random, so a crowd told "busy" together spreads out).
pub const WEBRTC_BUSY_RETRY_MS: u64 = 200;
/// Smallest offer datagram a seeder answers (the offerer pads it): an answer is never
/// larger than its offer, so a spoofed source cannot use a seeder as an amplifier.
pub const WEBRTC_OFFER_MIN_BYTES: usize = 1200;
/// Largest signaling datagram (offer or answer) sent or accepted, in bytes.
pub const WEBRTC_SIGNAL_MAX_BYTES: usize = 4096;
/// How often a seeder's WebRTC socket asks its STUN servers (`--stun`) for its mapped
/// address again once it has one, in seconds: well inside the 30 s a NAT (Linux conntrack's
/// `nf_conntrack_udp_timeout`) keeps an idle UDP mapping, so the server-reflexive
/// candidate it offers stays true.
pub const WEBRTC_STUN_REFRESH_SECS: u64 = 15;
/// How often a STUN Binding request (RFC 8489 §6.2.1) is sent again while unanswered, in
/// milliseconds.
pub const WEBRTC_STUN_RETRY_MS: u64 = 250;
/// How long a downloader waits for its STUN servers' answers before offering without a
/// server-reflexive candidate, in milliseconds.
pub const WEBRTC_STUN_WAIT_MS: u64 = 1_500;
/// Most STUN servers a node asks (`--stun`, repeatable); each answer is checked against the
/// transaction IDs of the requests still outstanding, at most two per server.
pub const WEBRTC_STUN_SERVERS_MAX: usize = 4;

/// Most peer addresses one TURN allocation (`--turn`) holds permissions for (RFC 8656
/// §9): `rtc`'s client refreshes them all in one CreatePermission request, which must fit
/// in a datagram. A seeder's relay that reached it is replaced by a fresh allocation once
/// no session is open.
pub const WEBRTC_TURN_PERMISSIONS_MAX: usize = 32;
/// How long a downloader waits for its TURN allocation (`--turn`) before offering without
/// a relayed candidate, in milliseconds (an Allocate takes two round trips: the 401
/// challenge, then the authenticated request).
pub const WEBRTC_TURN_WAIT_MS: u64 = 3_000;
/// Connectivity checks ICE sends on one candidate pair before it gives the pair up: at
/// `WEBRTC_ICE_CHECK_INTERVAL_MS` apart, half a second, long enough for a relay's
/// permission (a round trip to the TURN server) to be in place before a relayed pair fails.
pub const WEBRTC_ICE_CHECKS_PER_PAIR: u16 = 50;

/// Default TCP (and later UDP) listen address of `furymesh seed`.
pub const LISTEN_DEFAULT: &str = "0.0.0.0:7420";

/// Default address of the control API and `/metrics` while `seed` runs (`seed --api`):
/// loopback only, so nothing outside the host reaches it unless asked.
pub const API_LISTEN_DEFAULT: &str = "127.0.0.1:7421";

/// Largest request body the control API reads; a larger one is refused with 413.
pub const API_BODY_MAX_BYTES: usize = 64 * 1024;

/// Connections the control API keeps open at once; more are closed at accept.
pub const API_CONNECTIONS_MAX: usize = 64;

/// Threads the control API may block at once on slow node calls (publishing hashes the
/// file; a DHT lookup waits for the network). Never a shard's thread.
pub const API_WORKERS_MAX: usize = 4;

/// How long `GET /api/dht/providers/{id}` and a download started without peers look for
/// providers through the node's DHT.
pub const API_DHT_QUERY_TIMEOUT: Duration = Duration::from_secs(5);

/// Window over which the API computes a download's rate (and so its ETA).
pub const API_RATE_WINDOW: Duration = Duration::from_secs(3);

/// Ended downloads the API remembers (listed, kept across restarts in
/// `api-downloads.json`, and cleaned up by `POST /api/storage/cleanup`); older ones are
/// forgotten.
pub const API_DOWNLOADS_ENDED_KEPT: usize = 256;

/// Connections the HTTP gateway (`seed --http`) keeps open at once; more are closed at
/// accept. Each may hold one read piece (`GATEWAY_READ_BYTES`) plus hyper's write buffer.
pub const GATEWAY_CONNECTIONS_MAX: usize = 256;

/// Bytes the gateway reads (pread) from a file per step of a response body: the bound on
/// what one connection buffers in user space, and the unit of the size/mtime re-check.
pub const GATEWAY_READ_BYTES: usize = 256 * 1024;

/// Threads the gateway may block at once in file reads (its tokio blocking pool), so a
/// cold disk never stalls the gateway's runtime thread. Never a shard's thread.
pub const GATEWAY_READERS_MAX: usize = 8;

/// A gateway connection on which no byte moved either way for this long while the server
/// waits on it (an idle keep-alive, a client that stopped reading or trickles its request)
/// is closed.
pub const GATEWAY_STALL_TIMEOUT: Duration = Duration::from_secs(60);

/// Decoded collections the gateway keeps for `/c/ID/PATH` (a collection ID names its
/// content, so a cached one is valid while it is published); more clear the cache.
pub const GATEWAY_COLLECTIONS_CACHED: usize = 16;

/// Largest SDP offer the share page's signaling (`POST /f/FILE_ID/signal`) takes, in bytes;
/// a longer body is refused with 413 before it is read whole. Chromium's offers with a
/// data channel and a few candidates are ~1 KiB.
pub const BROWSER_OFFER_MAX_BYTES: usize = 16 * 1024;

/// Offers one client IP may signal per second, in the long run, to the share page's
/// signaling (each costs the seeder a peer connection until it opens or times out).
pub const BROWSER_SIGNALS_PER_S: u64 = 1;

/// Offers (and provider lookups) one client IP may signal at once before
/// [`BROWSER_SIGNALS_PER_S`] applies: a page opening its channels (a lookup, this node,
/// up to [`BROWSER_PEERS_MAX`] others) and a reload.
pub const BROWSER_SIGNAL_BURST: u64 = 16;

/// How often a seeder sends a browser session an ICE consent check (RFC 7675), in ms.
pub const BROWSER_ICE_KEEPALIVE_MS: u64 = 1_000;

/// Silence (not a byte, not an answer to a consent check) after which a browser session
/// is failed and freed, in ms: a closed tab says nothing. ICE's own default is 30 s.
pub const BROWSER_ICE_SILENCE_MS: u64 = 8_000;

/// Client IPs the signaling rate limit remembers; when full, the IPs whose budget is whole
/// again are forgotten, and if none is, new IPs are refused (429) until some are.
pub const BROWSER_SIGNAL_IPS_MAX: usize = 4096;

/// Other providers of a file the share page is handed (`GET /f/FILE_ID/peers`: found
/// through the DHT, offering WebRTC), at most: the page opens a channel to each.
pub const BROWSER_PEERS_MAX: usize = 8;

/// How long `GET /f/FILE_ID/peers` looks for providers in the DHT before it answers with
/// what it found (none: the page downloads from this node alone).
pub const BROWSER_PEERS_LOOKUP: Duration = Duration::from_secs(5);

/// How long a lookup's providers are reused for the next `GET /f/FILE_ID/peers` of the
/// same file; the last lookup's providers are the only nodes `POST
/// /f/FILE_ID/signal/NODE_ID` relays offers to.
pub const BROWSER_PEERS_TTL: Duration = Duration::from_secs(60);

/// Files whose providers the share page's gateway remembers (cleared when full).
pub const BROWSER_PEERS_FILES_MAX: usize = 1024;

/// How long a browser offer relayed to another provider through the DHT may take (a
/// lookup of the node, then two signaling round trips through its relays).
pub const BROWSER_RELAY_TIMEOUT: Duration = Duration::from_secs(15);

/// Connections one seeder shard serves at once; more are closed at accept. Keep
/// shards × this below the file-descriptor limit (`ulimit -n`).
pub const CONNECTIONS_PER_SHARD_MAX: usize = 4096;
/// Files one seeder shard keeps open; beyond this, files no connection uses are closed.
pub const OPEN_FILES_PER_SHARD_MAX: usize = 1024;
/// How often a seeder shard re-checks a published file's size and mtime (one `fstat`)
/// while it serves chunks of it: at most once per this interval per open file, not once
/// per chunk (at 2 GB/s of 512 KiB chunks that is 4,000 `fstat`s a second per shard). A
/// truncation is caught at once regardless (`sendfile` or `pread` comes up short); what
/// the interval bounds is how long a same-size or growing rewrite can be served before it
/// is refused as `FILE_CHANGED` (the downloader's hash check refuses those chunks).
pub const FILE_CHECK_INTERVAL: Duration = Duration::from_millis(50);

/// Default of `get --window`: the largest window of chunk requests in flight per connection
/// (each window starts at 2 and follows twice the measured bandwidth-delay product). At
/// 512 KiB chunks 16 requests are 8 MiB in flight, well above loopback's bandwidth-delay
/// product.
pub const REQUESTS_INFLIGHT_DEFAULT: u32 = 16;
/// Most chunk requests a downloader may ask for in flight per connection (`--window`).
pub const REQUESTS_INFLIGHT_MAX: u32 = 256;

/// Chunk writes one downloader shard keeps in flight (io_uring) while it receives and hashes
/// the next chunks. Each holds one chunk buffer.
pub const WRITES_INFLIGHT_MAX: u64 = 4;

/// How often `get` persists its resume state (after an fdatasync of the data), at most.
pub const RESUME_SAVE_INTERVAL: Duration = Duration::from_millis(250);
/// Default of `get --save-every`: verified bytes after which `get` makes its data durable
/// and persists its resume state (also at least every `RESUME_SAVE_INTERVAL`). Shards pause
/// when twice this is verified but not yet durable. A `kill -9` loses none of it: the next
/// run re-verifies unrecorded chunks by hash, so it fetches again only what was in flight.
pub const RESUME_SAVE_DEFAULT_BYTES: u64 = 16 * 1024 * 1024;

/// How long a downloader waits for a peer to connect or answer before giving up on it.
pub const PEER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long `get`'s coordinator waits for its shards once the download stopped (complete,
/// failed or interrupted) while none of them reports anything: connections blocked on a
/// read see the stop flag within 50 ms and writes in flight take milliseconds, so a shard
/// still silent after this is stuck (a lost wake-up): it is reported and left behind, the
/// state is saved and the command ends. Keeps Ctrl-C and SIGTERM within a second.
pub const SHARD_STOP_GRACE: Duration = Duration::from_millis(500);
/// How long a seeder lets a connection sit idle (no request) before closing it.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a node's Ed25519 session certificate is valid. The node re-issues it (one local
/// RSA signature) when less than half is left; peers refuse expired certificates.
pub const SESSION_KEY_VALIDITY: Duration = Duration::from_secs(24 * 3600);

/// Signed DHT announcements a node verifies per second (token bucket, burst of one second's
/// worth). Each costs an RSA-4096 and an Ed25519 verification (~0.1 ms); beyond the budget
/// announcements are dropped unverified, so a flood of forged ones cannot take a core.
pub const DHT_ANNOUNCE_VERIFICATIONS_PER_S: u32 = 500;

/// How often `seed` looks whether the catalog directory changed (files published or
/// unpublished by other commands), and so how soon they are served or withdrawn.
pub const CATALOG_WATCH_INTERVAL: Duration = Duration::from_secs(1);

/// How often `seed` checks each published file on disk (one `stat` per file: size and
/// mtime against the catalog) and withdraws from the DHT those that changed or went
/// missing since publish (the seeder refuses their chunks anyway). The API checks too
/// whenever it lists files, so what it shows is always current.
pub const PUBLISHED_CHECK_INTERVAL: Duration = Duration::from_secs(10);

/// How often a seeder saves its DHT routing table (also at shutdown).
pub const DHT_TABLE_SAVE_INTERVAL: Duration = Duration::from_secs(60);
/// DHT events a node keeps for its readers; older ones are dropped. A seeder reads events
/// only to count them, so this only bounds memory.
pub const DHT_EVENTS_QUEUED_MAX: usize = 1024;
/// Datagrams `furymesh dht ping` sends before giving up, each waited on for
/// `DHT_PING_TIMEOUT`.
pub const DHT_PING_TRIES: u32 = 3;
/// How long `furymesh dht ping` waits for each pong.
pub const DHT_PING_TIMEOUT: Duration = Duration::from_secs(1);
/// First pause before `get --bootstrap` runs a provider lookup that found nothing again (the
/// network may still be forming); the pause doubles up to `DHT_PROVIDER_RETRY_MAX`.
pub const DHT_PROVIDER_RETRY_MIN: Duration = Duration::from_millis(250);
/// Longest pause between two provider lookups of `get --bootstrap`.
pub const DHT_PROVIDER_RETRY_MAX: Duration = Duration::from_secs(2);
/// How long `get --bootstrap` keeps looking for providers before it gives up.
pub const DHT_PROVIDERS_SEARCH_TIMEOUT: Duration = Duration::from_secs(15);
/// Receive buffer asked for the DHT's UDP socket: room for a burst of ~700 full datagrams
/// (the kernel caps it at `net.core.rmem_max`).
pub const DHT_RECV_BUFFER_BYTES: usize = 1 << 20;
/// Relays a WebRTC signal is tried through (the target's closest nodes, then the target
/// itself), one after the other (ARCHITECTURE.md, "Signaling through the DHT").
pub const DHT_SIGNAL_RELAYS: usize = 3;
/// How long a signal waits for its relay's answer before it is sent again (once), then the
/// next relay is tried.
pub const DHT_SIGNAL_TIMEOUT: Duration = Duration::from_millis(1000);
/// How long a relay remembers a signal it passed on, waiting for the target's reply.
pub const DHT_SIGNAL_RELAY_TIMEOUT: Duration = Duration::from_secs(3);
/// Signals a relay holds for targets at once; more are answered "not relayed".
pub const DHT_SIGNAL_PENDING_MAX: usize = 256;
/// Signals a node relays per second, all sources together (each source is already held to
/// the DHT's per-IP rate limit).
pub const DHT_SIGNAL_RELAYS_PER_S: u64 = 200;
/// How often a node that accepts WebRTC looks itself up, which keeps it in touch with the
/// nodes closest to it (its relays) and its NAT mappings toward them open.
pub const DHT_SIGNAL_KEEPALIVE: Duration = Duration::from_secs(20);
/// Bytes of send buffers a seeder shard keeps at most (`node::send_buffers`): a chunk that
/// is encrypted, paced or sent on a data channel is pread whole into a buffer taken from
/// the shard's pool and given back once written; when the budget is lent out, connections
/// wait their turn. Bounds the seeder's memory however many connections it serves (1,000
/// downloaders of 64 KiB chunks held ~64 MiB in per-connection buffers before); one chunk
/// larger than the budget is still served, alone.
pub const SEND_BUFFER_BUDGET_PER_SHARD_BYTES: usize = 16 * 1024 * 1024;
/// Pending connections the kernel queues on each shard's listener before `accept`.
pub const LISTEN_BACKLOG_CONNECTIONS: i32 = 1024;

/// Memory glommio may register for I/O per executor. Small because the default memlock
/// limit on many hosts is 8 MiB for the whole process (see tuning.md).
pub const IO_MEMORY_PER_SHARD_BYTES: usize = 512 * 1024;

/// Most entries a collection may hold (`publish DIR`, `get c-…`); a peer's collection with
/// more is refused before anything is written.
pub const COLLECTION_ENTRIES_MAX: usize = 1 << 20;
/// Largest encoded collection accepted, in bytes (the blob `get c-…` fetches first and
/// holds in memory): about 300,000 entries of 200-byte paths.
pub const COLLECTION_BYTES_MAX: u64 = 64 * 1024 * 1024;
/// Longest relative path of a collection entry, in bytes (Linux `PATH_MAX`).
pub const COLLECTION_PATH_MAX_BYTES: usize = 4096;
/// Longest component (file or directory name) of a collection entry, in bytes (Linux
/// `NAME_MAX`).
pub const COLLECTION_NAME_MAX_BYTES: usize = 255;
/// Files of a collection `get` downloads at once, all over the same node and peers: enough
/// to hide one file's manifest round trip and handshakes behind another's transfer.
pub const COLLECTION_FILES_PARALLEL: usize = 4;
/// `get -o -` (standard output): the reorder window, in bytes of chunks, counted from the
/// first chunk not yet written out. Chunks are requested in file order and only inside the
/// window, so a fast peer runs at most this far ahead of a slow one holding the next chunk,
/// and the verified chunks held in memory (plus the requests in flight) never exceed it.
/// At least [`STREAM_WINDOW_CHUNKS_MIN`] chunks whatever the chunk size.
pub const STREAM_WINDOW_BYTES: u64 = 64 * 1024 * 1024;
/// Smallest reorder window of `get -o -`, in chunks (16 MiB chunks: 64 MiB held at most).
pub const STREAM_WINDOW_CHUNKS_MIN: u32 = 4;

/// Requests a web seed (`get --web-seed`) may have queued at its HTTP thread at once, in
/// chunks: at most this, and at most the scheduler's window for it. The thread fetches them
/// one after another on one keep-alive connection, so more would only hold chunks back
/// from faster sources.
pub const WEB_SEED_REQUESTS_INFLIGHT_MAX: u32 = 4;
/// Web seeds one download may use (`--web-seed`, a link's, the API's `web_seeds`): each
/// is a thread and a connection of its own.
pub const WEB_SEEDS_PER_DOWNLOAD_MAX: usize = 16;
/// Redirects a web seed's client follows per request (a longer chain, a loop among them,
/// is that web seed's error).
pub const WEB_SEED_REDIRECTS_MAX: u32 = 5;
/// A web seed's thread reports progress every this many bytes of a chunk body, so a mirror
/// sending a big chunk slowly is not taken for a stalled one.
pub const WEB_SEED_PROGRESS_BYTES: u64 = 256 * 1024;

/// The reorder window of a stream of `chunk_size`-byte chunks, in chunks.
pub fn stream_window_chunks(chunk_size: u32) -> u32 {
    let chunks = STREAM_WINDOW_BYTES / u64::from(chunk_size.max(1));
    (chunks.min(u64::from(u32::MAX)) as u32).max(STREAM_WINDOW_CHUNKS_MIN)
}

/// Checks a chunk size given on the command line.
pub fn validate_chunk_size(bytes: u64) -> Result<u32, String> {
    if !(CHUNK_SIZE_MIN_BYTES as u64..=CHUNK_SIZE_MAX_BYTES as u64).contains(&bytes) {
        return Err(format!(
            "chunk size must be between {} and {} bytes, got {bytes}",
            CHUNK_SIZE_MIN_BYTES, CHUNK_SIZE_MAX_BYTES
        ));
    }
    if bytes % 4096 != 0 {
        return Err(format!("chunk size must be a multiple of 4096 bytes, got {bytes}"));
    }
    Ok(bytes as u32)
}

/// Parses a byte count with an optional unit: `512KiB`, `8MiB`, `100KB`, `1G`, `4096`.
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().map_err(|_| format!("not a byte count: {s:?}"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1000,
        "kib" => 1 << 10,
        "m" | "mb" => 1000 * 1000,
        "mib" => 1 << 20,
        "g" | "gb" => 1000 * 1000 * 1000,
        "gib" => 1 << 30,
        other => {
            return Err(format!("unknown unit {other:?} in {s:?} (use KiB, MiB, GiB, KB, MB, GB)"))
        }
    };
    n.checked_mul(mult).ok_or_else(|| format!("byte count too large: {s:?}"))
}

#[cfg(test)]
mod tests {
    use super::NodeConfig;

    #[test]
    fn node_config_defaults_and_test_config_are_valid() {
        NodeConfig::default().validate().unwrap();
        NodeConfig::test_small().validate().unwrap();
    }

    #[test]
    fn node_config_reads_toml_with_defaults_for_missing_keys() {
        let c: NodeConfig =
            toml::from_str("peer_timeout_ms = 2500\ndht_table_save_interval_ms = 500\n").unwrap();
        assert_eq!(c.peer_timeout_ms, 2500);
        assert_eq!(c.dht_table_save_interval_ms, 500);
        assert_eq!(c.idle_timeout_ms, NodeConfig::default().idle_timeout_ms);
        // A misspelt key is an error, not silently ignored.
        let e = toml::from_str::<NodeConfig>("peer_timeout = 2500\n").unwrap_err();
        assert!(e.to_string().contains("peer_timeout"), "{e}");
        // Round trip.
        let text = toml::to_string(&NodeConfig::test_small()).unwrap();
        assert_eq!(toml::from_str::<NodeConfig>(&text).unwrap(), NodeConfig::test_small());
    }

    #[test]
    fn node_config_out_of_range_names_the_key() {
        let zero = NodeConfig { connections_per_shard_max: 0, ..NodeConfig::default() };
        assert_eq!(zero.validate().unwrap_err().field, "connections_per_shard_max");
        let spin = NodeConfig { catalog_watch_interval_ms: 0, ..NodeConfig::default() };
        assert_eq!(spin.validate().unwrap_err().field, "catalog_watch_interval_ms");
        let hang = NodeConfig { peer_timeout_ms: 3_600_000, ..NodeConfig::default() };
        let e = hang.validate().unwrap_err();
        assert_eq!((e.field, e.max), ("peer_timeout_ms", 600_000));
    }

    use super::*;

    #[test]
    fn byte_units_parse() {
        assert_eq!(parse_bytes("4096"), Ok(4096));
        assert_eq!(parse_bytes("512KiB"), Ok(512 * 1024));
        assert_eq!(parse_bytes("8MiB"), Ok(8 << 20));
        assert_eq!(parse_bytes("100KB"), Ok(100_000));
        assert!(parse_bytes("12XB").is_err());
        assert!(parse_bytes("").is_err());
        assert!(parse_bytes("99999999999999999999GiB").is_err());
    }

    #[test]
    fn auto_chunk_size_keeps_chunk_counts_sensible() {
        assert_eq!(auto_chunk_size(0), 256 << 10);
        assert_eq!(auto_chunk_size(1), 256 << 10);
        assert_eq!(auto_chunk_size(100 << 20), 256 << 10);
        assert_eq!(auto_chunk_size(1 << 30), 512 << 10);
        assert_eq!(auto_chunk_size(100 << 30), 16 << 20);
        for size in [1u64, 4095, 1 << 20, 3 << 30, 1 << 40] {
            let c = auto_chunk_size(size) as u64;
            assert!(validate_chunk_size(c).is_ok());
            assert!(size.div_ceil(c) <= CHUNKS_PER_FILE_MAX as u64);
        }
    }

    #[test]
    fn throttle_bursts_are_a_tenth_of_a_second_within_bounds() {
        assert_eq!(throttle_burst_bytes(0), THROTTLE_BURST_MIN_BYTES);
        assert_eq!(throttle_burst_bytes(10_000), THROTTLE_BURST_MIN_BYTES);
        assert_eq!(throttle_burst_bytes(1_000_000), 100_000);
        assert_eq!(throttle_burst_bytes(8 << 20), (8 << 20) / 10);
        assert_eq!(throttle_burst_bytes(u64::MAX), THROTTLE_BURST_MAX_BYTES);
    }

    #[test]
    fn chunk_size_bounds() {
        assert_eq!(validate_chunk_size(524288), Ok(524288));
        assert!(validate_chunk_size(4095).is_err());
        assert!(validate_chunk_size(5000).is_err());
        assert!(validate_chunk_size(32 << 20).is_err());
    }
}

/// The node's runtime knobs: what an operator may set per node (`seed --config FILE`, a
/// TOML table with these keys; every key optional). Protocol bounds (chunk and frame
/// limits, what a peer may send) stay constants above. Units are the last word of every
/// name. The defaults are the constants of the same name; tuning.md gives each one's
/// measured effect.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeConfig {
    /// Connections one shard serves at once (`CONNECTIONS_PER_SHARD_MAX`); also capped by
    /// the descriptor limit.
    pub connections_per_shard_max: usize,
    /// Files one shard keeps open (`OPEN_FILES_PER_SHARD_MAX`).
    pub open_files_per_shard_max: usize,
    /// How long a peer may take to connect, finish its handshake or answer
    /// (`PEER_TIMEOUT`), in milliseconds.
    pub peer_timeout_ms: u64,
    /// How long a served connection may sit without a request (`IDLE_TIMEOUT`), in
    /// milliseconds.
    pub idle_timeout_ms: u64,
    /// Longest time between two saves of a download's resume state
    /// (`RESUME_SAVE_INTERVAL`), in milliseconds.
    pub resume_save_interval_ms: u64,
    /// Signed DHT announcements verified per second (`DHT_ANNOUNCE_VERIFICATIONS_PER_S`).
    pub dht_announce_verifications_per_s: u32,
    /// How often the DHT routing table is saved (`DHT_TABLE_SAVE_INTERVAL`), in
    /// milliseconds.
    pub dht_table_save_interval_ms: u64,
    /// How often `seed` looks for catalog changes (`CATALOG_WATCH_INTERVAL`), in
    /// milliseconds.
    pub catalog_watch_interval_ms: u64,
    /// Largest data-channel message a seeder sends over WebRTC (`WEBRTC_BLOCK_BYTES`), in
    /// bytes, up to `WEBRTC_BLOCK_MAX_BYTES` (what browsers accept).
    pub webrtc_block_bytes: usize,
    /// WebRTC set-ups (offer answered, data channel not yet open) one seeder shard runs at
    /// once (`WEBRTC_HANDSHAKES_PER_SHARD`); offers by datagram beyond it are answered
    /// "busy" and admitted oldest first as set-ups finish.
    pub webrtc_handshakes_per_shard: usize,
}

impl Default for NodeConfig {
    fn default() -> Self {
        let ms = |d: Duration| d.as_millis() as u64;
        Self {
            connections_per_shard_max: CONNECTIONS_PER_SHARD_MAX,
            open_files_per_shard_max: OPEN_FILES_PER_SHARD_MAX,
            peer_timeout_ms: ms(PEER_TIMEOUT),
            idle_timeout_ms: ms(IDLE_TIMEOUT),
            resume_save_interval_ms: ms(RESUME_SAVE_INTERVAL),
            dht_announce_verifications_per_s: DHT_ANNOUNCE_VERIFICATIONS_PER_S,
            dht_table_save_interval_ms: ms(DHT_TABLE_SAVE_INTERVAL),
            catalog_watch_interval_ms: ms(CATALOG_WATCH_INTERVAL),
            webrtc_block_bytes: WEBRTC_BLOCK_BYTES,
            webrtc_handshakes_per_shard: WEBRTC_HANDSHAKES_PER_SHARD,
        }
    }
}

/// A [`NodeConfig`] value outside its range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field} = {value} is outside {min}..={max}")]
pub struct ConfigError {
    pub field: &'static str,
    pub value: u64,
    pub min: u64,
    pub max: u64,
}

impl NodeConfig {
    /// Checks every knob against its range: positive, and no timing so short it would spin
    /// or so long it would look like a hang.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let check = |field: &'static str, value: u64, min: u64, max: u64| {
            if (min..=max).contains(&value) {
                Ok(())
            } else {
                Err(ConfigError { field, value, min, max })
            }
        };
        check("connections_per_shard_max", self.connections_per_shard_max as u64, 1, 1 << 20)?;
        check("open_files_per_shard_max", self.open_files_per_shard_max as u64, 1, 1 << 20)?;
        check("peer_timeout_ms", self.peer_timeout_ms, 100, 600_000)?;
        check("idle_timeout_ms", self.idle_timeout_ms, 100, 86_400_000)?;
        check("resume_save_interval_ms", self.resume_save_interval_ms, 10, 60_000)?;
        check(
            "dht_announce_verifications_per_s",
            self.dht_announce_verifications_per_s.into(),
            1,
            1_000_000,
        )?;
        check("dht_table_save_interval_ms", self.dht_table_save_interval_ms, 100, 86_400_000)?;
        check("catalog_watch_interval_ms", self.catalog_watch_interval_ms, 10, 3_600_000)?;
        let max = WEBRTC_BLOCK_MAX_BYTES as u64;
        check("webrtc_block_bytes", self.webrtc_block_bytes as u64, 1024, max)?;
        check("webrtc_handshakes_per_shard", self.webrtc_handshakes_per_shard as u64, 1, 4096)
    }

    /// A small configuration for tests: few connections and maps, short timeouts, frequent
    /// saves (so failures and limits show in seconds, not minutes).
    pub fn test_small() -> Self {
        Self {
            connections_per_shard_max: 64,
            open_files_per_shard_max: 8,
            peer_timeout_ms: 2_000,
            idle_timeout_ms: 5_000,
            resume_save_interval_ms: 50,
            dht_announce_verifications_per_s: 100,
            dht_table_save_interval_ms: 1_000,
            catalog_watch_interval_ms: 100,
            webrtc_block_bytes: WEBRTC_BLOCK_BYTES,
            webrtc_handshakes_per_shard: WEBRTC_HANDSHAKES_PER_SHARD,
        }
    }

    pub fn peer_timeout(&self) -> Duration {
        Duration::from_millis(self.peer_timeout_ms)
    }

    pub fn idle_timeout(&self) -> Duration {
        Duration::from_millis(self.idle_timeout_ms)
    }

    pub fn resume_save_interval(&self) -> Duration {
        Duration::from_millis(self.resume_save_interval_ms)
    }

    pub fn dht_table_save_interval(&self) -> Duration {
        Duration::from_millis(self.dht_table_save_interval_ms)
    }

    pub fn catalog_watch_interval(&self) -> Duration {
        Duration::from_millis(self.catalog_watch_interval_ms)
    }
}
