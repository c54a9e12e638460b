//! The command line: clap arguments and human/JSON output. No protocol or storage logic.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use anyhow::{bail, Context, Result};

use crate::output::{say, StdoutClosed};
use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use crate::config::{self, REQUESTS_INFLIGHT_DEFAULT};
use crate::crypto::{Encryption, FileId, NetworkSecret, NodeId};
use crate::dht::Key;
use crate::node::{
    self, clock, DhtQuery, DhtServerOptions, GetError, GetOptions, Handle, Node, NodeOptions,
    NodeSecurity, PeerAddr,
};
use crate::service;
use crate::storage::{self, layout, Catalog};
use crate::transfer::Strategy;

/// FuryMesh: a thread-per-core peer-to-peer seed server.
#[derive(Debug, Parser)]
#[command(name = "furymesh", version, about, propagate_version = true)]
pub struct Cli {
    /// Data directory (catalog of published files, resume state). Default: $FURYMESH_HOME,
    /// else the platform data directory.
    #[arg(long, global = true, env = "FURYMESH_HOME", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Print machine-readable JSON on stdout instead of human output.
    #[arg(long, global = true)]
    pub json: bool,
    /// Private network: a file holding the network's pre-shared secret (at least 16 bytes,
    /// e.g. from `openssl rand -hex 32`). Nodes without the same secret can neither connect
    /// nor use this node's DHT. Applies to seed, get, dht and bench.
    #[arg(long, global = true, env = "FURYMESH_NETWORK_SECRET", value_name = "FILE")]
    pub network_secret: Option<PathBuf>,
    /// Configuration file (TOML): the node's runtime knobs at the top (timeouts, pool
    /// sizes, DHT timings; listed in tuning.md) and every `seed` option in a `[seed]`
    /// table; every key optional. Default: DATA_DIR/config.toml if it exists. Flags and
    /// FURYMESH_* variables override it; `furymesh config` prints the result.
    #[arg(long, global = true, env = "FURYMESH_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Log lines on stderr as text or as one JSON object per line. `RUST_LOG` filters them
    /// (default `info`).
    #[arg(
        long,
        global = true,
        env = "FURYMESH_LOG_FORMAT",
        default_value = "text",
        value_name = "FORMAT"
    )]
    pub log_format: service::LogFormat,
    #[command(subcommand)]
    pub command: Command,
    /// Options whose value came from their `FURYMESH_*` environment variable, by argument
    /// name (`listen`) → variable name (`FURYMESH_LISTEN`); filled by
    /// [`Cli::parse_noting_environment`], empty after a plain `Parser::parse`.
    #[arg(skip)]
    pub from_environment: std::collections::BTreeMap<String, String>,
}

impl Cli {
    /// Parses the process's arguments like `Parser::parse` (printing clap's message and
    /// exiting on a mistake) and notes which options their `FURYMESH_*` variable set, so
    /// `furymesh config` can say where each value came from.
    pub fn parse_noting_environment() -> Self {
        Self::try_parse_noting_environment(std::env::args_os()).unwrap_or_else(|e| e.exit())
    }

    /// [`Cli::parse_noting_environment`] of `args` (the first is the program name),
    /// returning clap's error instead of exiting.
    pub fn try_parse_noting_environment<I, T>(args: I) -> Result<Self, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        use clap::{CommandFactory, FromArgMatches};
        let cmd = Self::command();
        let matches = cmd.clone().try_get_matches_from(args)?;
        let mut cli = Self::from_arg_matches(&matches)?;
        let mut env = std::collections::BTreeMap::new();
        let mut note = |c: &clap::Command, m: &clap::ArgMatches| {
            for arg in c.get_arguments() {
                let id = arg.get_id().as_str();
                let from_env = m.ids().any(|i| i.as_str() == id)
                    && m.value_source(id) == Some(clap::parser::ValueSource::EnvVariable);
                if let (true, Some(var)) = (from_env, arg.get_env()) {
                    env.insert(id.to_owned(), var.to_string_lossy().into_owned());
                }
            }
        };
        note(&cmd, &matches);
        if let Some((name, sub)) = matches.subcommand() {
            if let Some(c) = cmd.find_subcommand(name) {
                note(c, sub);
            }
        }
        cli.from_environment = env;
        Ok(cli)
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create the data directory and the node identity (an RSA-4096 key, mode 0600).
    Init,
    /// Print this node's ID (first 160 bits of SHA-256 of its public key, 40 hex characters).
    Id,
    /// Chunk and hash files (directories recursively) and add them to the catalog. Files are
    /// served in place, never copied.
    Publish(PublishArgs),
    /// Remove files and collections from the catalog (by ID or by the path they were
    /// published from): a running `seed` on this data directory stops serving and
    /// announcing them within a second. The files themselves are not touched.
    Unpublish(UnpublishArgs),
    /// List published files.
    Ls,
    /// Serve every published file until SIGINT/SIGTERM.
    Seed(SeedArgs),
    /// Print the configuration `seed` would run with (same flags as `seed`): the
    /// configuration file, FURYMESH_* variables and flags applied over the defaults, as a
    /// file you could use as DATA_DIR/config.toml.
    Config(SeedArgs),
    /// Show the `seed` running on this data directory, through its control API (the
    /// address and token it wrote there): identity, addresses, files, traffic, DHT.
    Status,
    /// List the downloads running inside the `seed` on this data directory (started with
    /// `get --detach` or through the control API), with progress; or pause, resume or
    /// cancel one.
    Downloads(DownloadsArgs),
    /// Download a file from a peer, verifying every chunk; rerun to resume.
    Get(GetArgs),
    /// Publish, seed and download a generated 256 MiB file on loopback, and check it.
    Demo(DemoArgs),
    /// Run a swarm scenario on loopback and measure it against this machine's limits
    /// (raw loopback TCP, memcpy, SHA-256, AES-256-GCM), all in the same run.
    Bench(BenchArgs),
    /// Operator tools for the DHT.
    #[command(subcommand)]
    Dht(DhtCommandArgs),
}

#[derive(Debug, Subcommand)]
pub enum DhtCommandArgs {
    /// Send a DHT PING to a node and print its node ID and the round-trip time.
    Ping {
        /// The node's DHT address (its seed's listen address: same port, UDP).
        #[arg(value_parser = parse_addr, value_name = "HOST:PORT")]
        addr: SocketAddr,
    },
    /// Find the providers of a file through the DHT.
    FindProviders {
        /// The file ID as `publish` printed it (64 hex characters).
        #[arg(value_parser = parse_file_id, value_name = "FILE_ID")]
        file_id: FileId,
        #[command(flatten)]
        bootstrap: BootstrapArgs,
    },
    /// Find the nodes closest to a node ID (40 hex characters).
    FindNode {
        /// The node ID to look for (40 hex characters, as `furymesh id` prints one).
        #[arg(value_name = "ID")]
        id: NodeId,
        #[command(flatten)]
        bootstrap: BootstrapArgs,
    },
}

#[derive(Debug, Args)]
pub struct BootstrapArgs {
    /// A DHT node to join through (repeatable). Default: the seed running on the data
    /// directory, so the query starts from that node's routing table.
    #[arg(long = "bootstrap", value_parser = parse_addr, value_name = "HOST:PORT")]
    pub addrs: Vec<SocketAddr>,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 10)]
    pub timeout_secs: u64,
}

#[derive(Debug, Args)]
pub struct PublishArgs {
    /// Files or directories to publish.
    #[arg(required = true, value_name = "PATH")]
    pub paths: Vec<PathBuf>,
    /// Chunk size, a multiple of 4 KiB between 4 KiB and 16 MiB (e.g. 512KiB, 1MiB).
    /// Default: picked per file, about 2,048 chunks, 256 KiB to 16 MiB (1 GiB → 512 KiB).
    #[arg(long, value_parser = parse_chunk_size)]
    pub chunk_size: Option<u32>,
    /// Inside a directory, leave out (with a warning) what a release cannot carry safely —
    /// symlinks leaving the directory, special files, unreadable files — instead of
    /// refusing them (then the command fails and no collection is recorded).
    #[arg(long)]
    pub skip_unsafe: bool,
    /// Put this node in the printed links as a pinned peer at HOST:PORT (the address its
    /// `seed` listens on, as downloaders reach it; repeatable).
    #[arg(long, value_name = "HOST:PORT")]
    pub link_peer: Vec<crate::link::HostPort>,
    /// Put this DHT node in the printed links (repeatable).
    #[arg(long, value_name = "HOST:PORT")]
    pub link_bootstrap: Vec<crate::link::HostPort>,
    /// Put this HTTP mirror URL in the printed links (repeatable; carried for HTTP
    /// mirrors, not fetched from by `get` yet).
    #[arg(long, value_name = "URL")]
    pub link_web_seed: Vec<String>,
}

#[derive(Debug, Args)]
pub struct DownloadsArgs {
    #[command(subcommand)]
    pub action: Option<DownloadAction>,
}

/// What `furymesh downloads` does to one download of the running node.
#[derive(Debug, Subcommand)]
pub enum DownloadAction {
    /// Stop a download's transfers, keeping its verified chunks; `resume` continues it.
    Pause {
        #[arg(value_name = "DOWNLOAD_ID")]
        id: u64,
    },
    /// Continue a paused download.
    Resume {
        #[arg(value_name = "DOWNLOAD_ID")]
        id: u64,
    },
    /// Stop a download and forget it (its partial file and resume state stay on disk until
    /// a storage cleanup or a `get` of the same output picks them up).
    Cancel {
        #[arg(value_name = "DOWNLOAD_ID")]
        id: u64,
    },
}

#[derive(Debug, Args)]
pub struct UnpublishArgs {
    /// File IDs (64 hex characters); collection IDs (`c-` and 64 hex characters: the
    /// collection and the files it brought, i.e. those still published from inside its
    /// directory that no other collection lists; see --keep-files); published files'
    /// paths; or a directory: every file published from under it, and the collections made
    /// only of those files.
    #[arg(required = true, value_name = "ID|PATH")]
    pub targets: Vec<String>,
    /// For a collection ID: take back the collection alone and keep its files published
    /// (each still downloadable by its file ID).
    #[arg(long)]
    pub keep_files: bool,
}

#[derive(Debug, Args)]
pub struct SeedArgs {
    /// Address to listen on (every shard listens on it with SO_REUSEPORT). Default:
    /// 0.0.0.0:7420.
    #[arg(long, env = "FURYMESH_LISTEN", value_parser = parse_addr, value_name = "HOST:PORT")]
    pub listen: Option<SocketAddr>,
    /// Number of shards (pinned executors). Default: the available cores.
    #[arg(long, env = "FURYMESH_SHARDS", value_parser = clap::value_parser!(u32).range(1..=4096), value_name = "N")]
    pub shards: Option<u32>,
    /// Also accept WebRTC data channels: every shard answers offers on this UDP address
    /// (SO_REUSEPORT; port 0 picks one, printed at start), and the provider records say so.
    /// Downloaders reach it with `get --transport webrtc --peer HOST:PORT`, or through the
    /// DHT (`get --transport webrtc|auto --bootstrap`). Also `webrtc` in config.toml's
    /// `[seed]`. Default: off.
    #[arg(long, env = "FURYMESH_WEBRTC", value_parser = parse_addr, value_name = "HOST:PORT")]
    pub webrtc: Option<SocketAddr>,
    /// A STUN server (RFC 8489) the WebRTC socket asks for its address outside a NAT, kept
    /// fresh and offered to peers as a server-reflexive candidate beside the host one
    /// (repeatable; in the environment, comma-separated; `stun = [...]` in config.toml's
    /// `[seed]`). Default: none (host candidates only).
    #[arg(long, env = "FURYMESH_STUN", value_delimiter = ',', value_parser = parse_addr, value_name = "HOST:PORT")]
    pub stun: Vec<SocketAddr>,
    #[command(flatten)]
    pub turn: TurnArgs,
    /// Take no TCP connections (with `--webrtc`): peers reach this node over WebRTC only,
    /// and its provider records say so. The DHT still runs on the listen address.
    #[arg(long, env = "FURYMESH_NO_TCP")]
    pub no_tcp: bool,
    /// A DHT node to join through (repeatable; in the environment, comma-separated).
    /// Without one, the node starts a network (or rejoins through the routing table it
    /// saved last time).
    #[arg(long, env = "FURYMESH_BOOTSTRAP", value_delimiter = ',', value_parser = parse_addr, value_name = "HOST:PORT")]
    pub bootstrap: Vec<SocketAddr>,
    /// Upload limit for the whole node, in bytes per second (8MiB, 100KB, …).
    #[arg(long, env = "FURYMESH_MAX_UPLOAD_RATE", value_parser = parse_rate, value_name = "BYTES")]
    pub max_upload_rate: Option<u64>,
    /// Upload limit per connection, in bytes per second.
    #[arg(long, env = "FURYMESH_MAX_PEER_UPLOAD_RATE", value_parser = parse_rate, value_name = "BYTES")]
    pub max_peer_upload_rate: Option<u64>,
    /// AES-256-GCM on every connection (`on`, the default), or plaintext records (`off`:
    /// only as an explicit choice for public mirrors and benchmarks; peers are still
    /// authenticated and chunks still hashed). Both sides must use the same setting.
    #[arg(long, env = "FURYMESH_ENCRYPTION", value_parser = parse_encryption, value_name = "on|off")]
    pub encryption: Option<Encryption>,
    /// Control API and Prometheus `/metrics` (HTTP): `HOST:PORT`, or `off`. Default
    /// 127.0.0.1:7421; when the default port is taken (by another seed on another data
    /// directory), the node runs without an API and says so, while an address you chose
    /// that cannot be bound is an error. Its bearer token is DATA_DIR/api.token; reads need
    /// it only off loopback, changes always.
    #[arg(long, env = "FURYMESH_API", value_parser = parse_api, value_name = "HOST:PORT|off")]
    pub api: Option<ApiBind>,
    /// Public HTTP gateway: published files at http://HOST:PORT/files/FILE_ID and
    /// collections at /c/COLLECTION_ID/PATH, for curl and browsers, with no token (it
    /// serves only what is published); with --webrtc too, each file's share page at
    /// /f/FILE_ID (the link to hand out). It answers anyone who can reach it, also on a
    /// private network (--network-secret). `HOST:PORT` or `off` (the default).
    #[arg(long, env = "FURYMESH_HTTP", value_parser = parse_api, value_name = "HOST:PORT|off")]
    pub http: Option<ApiBind>,
}

impl SeedArgs {
    /// The options given on the command line or in the environment (`from_environment`:
    /// those a `FURYMESH_*` variable gave, see [`Cli::from_environment`]), for
    /// [`SeedSettings::resolve`](crate::service::SeedSettings::resolve).
    fn flags(
        &self,
        network_secret: Option<&Path>,
        from_environment: &std::collections::BTreeMap<String, String>,
    ) -> service::SeedFlags {
        service::SeedFlags {
            from_environment: from_environment.clone(),
            listen: self.listen,
            shards: self.shards.map(|n| n as usize),
            bootstrap: self.bootstrap.clone(),
            max_upload_rate: self.max_upload_rate,
            max_peer_upload_rate: self.max_peer_upload_rate,
            encryption: self.encryption,
            api: self.api.map(ApiBind::addr),
            http: self.http.map(ApiBind::addr),
            network_secret: network_secret.map(Path::to_owned),
            webrtc: self.webrtc,
            stun: self.stun.clone(),
            turn: self.turn.turn,
            turn_user: self.turn.turn_user.clone(),
            turn_password: self.turn.turn_password.clone(),
            turn_credentials: self.turn.turn_credentials.clone(),
        }
    }
}

/// A TURN server and its long-term credentials, for `seed` and `get`.
#[derive(Debug, Clone, Args)]
pub struct TurnArgs {
    /// A TURN server (RFC 8656, over UDP) to allocate a relay on: its relayed address is
    /// offered to peers as a candidate beside the host and server-reflexive ones, so that
    /// two nodes whose NATs let no peer in (symmetric NATs, firewalls dropping direct UDP)
    /// still connect, through it. A seed keeps its allocation (and its NAT mapping) fresh;
    /// a get allocates before each offer signaled through the DHT. Needs credentials:
    /// `--turn-credentials`, or `--turn-user` with `--turn-password`. Also `turn` in
    /// config.toml's `[seed]`. Default: none (no relayed candidates).
    #[arg(long, env = "FURYMESH_TURN", value_parser = parse_addr, value_name = "HOST:PORT")]
    pub turn: Option<SocketAddr>,
    /// The TURN long-term credential's user name (RFC 8489 §9.2). The credential flags
    /// mean nothing without a TURN server (`--turn`, or `turn` in config.toml).
    #[arg(
        long,
        env = "FURYMESH_TURN_USER",
        conflicts_with = "turn_credentials",
        value_name = "USER"
    )]
    pub turn_user: Option<String>,
    /// The TURN password. On a command line it shows in `ps`: prefer the environment
    /// variable or `--turn-credentials`. Never logged.
    #[arg(long, env = "FURYMESH_TURN_PASSWORD", hide_env_values = true, value_name = "PASSWORD")]
    pub turn_password: Option<node::TurnPassword>,
    /// A file with the TURN user name on its first line and the password on its second
    /// (keep it readable by the node's user only). Also `turn_credentials` in config.toml's
    /// `[seed]`.
    #[arg(long, env = "FURYMESH_TURN_CREDENTIALS", value_name = "FILE")]
    pub turn_credentials: Option<PathBuf>,
}

impl TurnArgs {
    /// The TURN server with its credentials, `None` without `--turn`.
    fn server(&self) -> Result<Option<node::TurnServer>> {
        let Some(addr) = self.turn else { return Ok(None) };
        service::turn_server(
            addr,
            self.turn_user.as_deref(),
            self.turn_password.as_ref().map(node::TurnPassword::expose),
            self.turn_credentials.as_deref(),
        )
        .map(Some)
    }
}

/// `seed --api`: an address, or off.
#[derive(Debug, Clone, Copy)]
pub enum ApiBind {
    On(SocketAddr),
    Off,
}

impl ApiBind {
    fn addr(self) -> Option<SocketAddr> {
        match self {
            Self::On(a) => Some(a),
            Self::Off => None,
        }
    }
}

fn parse_api(s: &str) -> Result<ApiBind, String> {
    Ok(service::parse_api(s)?.map_or(ApiBind::Off, ApiBind::On))
}

#[derive(Debug, Args)]
pub struct EncryptionArg {
    /// AES-256-GCM on every connection (`on`), or plaintext records (`off`: only as an
    /// explicit choice for public mirrors and benchmarks; peers are still authenticated and
    /// chunks still hashed). Both sides must use the same setting.
    #[arg(long = "encryption", default_value = "on", value_parser = parse_encryption, value_name = "on|off")]
    pub value: Encryption,
}

#[derive(Debug, Args)]
pub struct GetArgs {
    /// What to download, as `publish` printed it: a file ID (64 hex characters), a
    /// collection ID (`c-` and 64 hex characters: every file of a release, into the
    /// directory -o names) or a `furymesh:` link (whose peers, bootstrap nodes and name are
    /// used as if given with --peer, --bootstrap and -o).
    #[arg(value_name = "ID|LINK")]
    pub target: String,
    /// A peer to download from (repeatable: all of them at once). `NODE_ID@HOST:PORT` pins
    /// the node it must prove to be; plain `HOST:PORT` trusts whichever node answers first
    /// (its ID is in the report). With neither a peer nor a bootstrap node (here or in a
    /// link), `get` joins the DHT through the seed running on the data directory.
    #[arg(long, value_parser = parse_peer, value_name = "[NODE_ID@]HOST:PORT")]
    pub peer: Vec<PeerAddr>,
    /// Find providers through the DHT, joining through this node (repeatable), and download
    /// from all of them (with any --peer given too). Default, when no --peer is given either:
    /// the seed running on the data directory.
    #[arg(long, value_parser = parse_addr, value_name = "HOST:PORT")]
    pub bootstrap: Vec<SocketAddr>,
    /// Chunk order: rarest-first or round-robin.
    #[arg(long, default_value = "rarest-first", value_name = "STRATEGY")]
    pub strategy: Strategy,
    /// Peers that get requests at once, the best by measured throughput, latency and errors.
    #[arg(long, default_value_t = 16, value_name = "N")]
    pub max_peers: usize,
    /// Serve the chunks verified so far on this address while downloading, so other
    /// downloaders can fetch from this one (partial seeding).
    #[arg(long, value_parser = parse_addr, value_name = "HOST:PORT")]
    pub listen: Option<SocketAddr>,
    /// Where to write the file. It appears only once the whole file is verified; until then
    /// the data lives in PATH.furymesh-partial and the resume state in PATH.furymesh-resume.
    /// For a collection: the directory to download into. Default: the link's name.
    ///
    /// `-o -` streams the file to standard output in order as its chunks verify
    /// (`get ID -o - | tar x`): chunks are fetched in file order within a reorder window
    /// (64 MiB), nothing unverified is ever written, progress and the report
    /// (--json) go to stderr. A stream is not resumable: nothing is kept on disk, and an
    /// interrupted or failed stream (exit 130 or 1, a verified but truncated output) starts
    /// over when run again. Exit 141 if the reader goes away first. Not for collections.
    #[arg(short, long, value_name = "PATH")]
    pub output: Option<PathBuf>,
    /// Replace PATH if it exists.
    #[arg(long)]
    pub force: bool,
    /// Connections: one per peer, or this many spread over the peers if more, but no more
    /// than there are chunks to fetch. Default: the available cores.
    #[arg(long, value_name = "N")]
    pub connections: Option<usize>,
    /// Most chunk requests in flight per connection (each window grows from 2 to the
    /// measured bandwidth-delay product, up to this).
    #[arg(long, default_value_t = REQUESTS_INFLIGHT_DEFAULT, value_parser = clap::value_parser!(u32).range(1..=config::REQUESTS_INFLIGHT_MAX as i64))]
    pub window: u32,
    /// Make verified data durable and save the resume state after this many bytes (and at
    /// least every 250 ms). Smaller: less to re-hash after a crash, more fsyncs.
    #[arg(long, default_value = "16MiB", value_parser = config::parse_bytes, value_name = "BYTES")]
    pub save_every: u64,
    /// Download limit in bytes per second (8MiB, 100KB, …).
    #[arg(long, value_parser = parse_rate, value_name = "BYTES")]
    pub max_download_rate: Option<u64>,
    /// How to reach the peers: `tcp`; `webrtc` (each `--peer` is then a seeder's `--webrtc`
    /// UDP address: a data channel, the same handshake and records inside; providers found
    /// through `--bootstrap` whose records offer WebRTC are signaled through the DHT);
    /// `auto` (TCP, and a data channel when TCP cannot connect or a provider's record
    /// offers no TCP).
    #[arg(long, default_value = "tcp", value_name = "auto|tcp|webrtc")]
    pub transport: node::TransportChoice,
    /// A STUN server (RFC 8489) asked for this node's address outside its NAT before each
    /// WebRTC offer signaled through the DHT, offered as a server-reflexive candidate
    /// (repeatable). Default: none (host candidates only).
    #[arg(long, value_parser = parse_addr, value_name = "HOST:PORT")]
    pub stun: Vec<SocketAddr>,
    #[command(flatten)]
    pub turn: TurnArgs,
    /// Hand the download to the `seed` running on this data directory (through its control
    /// API) and return at once with its download ID; `furymesh downloads` follows it. The
    /// node runs it with its own settings and resumes it after a restart. Without --peer
    /// the node finds providers through its own DHT. File IDs and links only.
    #[arg(long, conflicts_with_all = ["listen", "bootstrap"])]
    pub detach: bool,
    /// An HTTP(S) mirror of the file (repeatable; a link's `web-seed=` too): chunks are
    /// fetched from it with Range requests (RFC 9110; BEP 19's web seeds) beside the peers,
    /// each verified against the manifest, which still comes from a peer. A mirror that
    /// serves wrong bytes is banned like a corrupt peer; one that ignores ranges, errs,
    /// redirects in a loop or stalls is dropped with a note (and its `error` in --json)
    /// while the download goes on. Single files only: ignored for a collection.
    #[arg(long = "web-seed", value_parser = node::parse_web_seed, value_name = "URL")]
    pub web_seed: Vec<String>,
    #[command(flatten)]
    pub encryption: EncryptionArg,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Size of the generated file.
    #[arg(long, default_value = "256MiB", value_parser = config::parse_bytes)]
    pub size: u64,
    /// Shards for the seeder and connections for the downloader. Default: available cores.
    #[arg(long)]
    pub shards: Option<usize>,
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct BenchArgs {
    #[command(subcommand)]
    pub tool: Option<BenchCommand>,
    /// Seeders, each its own node on loopback.
    #[arg(long, default_value_t = 1)]
    pub seeders: usize,
    /// Downloaders, each fetching the whole file from every seeder at once.
    #[arg(long, default_value_t = 1)]
    pub downloaders: usize,
    /// File size.
    #[arg(long, default_value = "256MiB", value_parser = config::parse_bytes)]
    pub size: u64,
    /// Chunk size (default: automatic for the file size).
    #[arg(long, value_parser = parse_chunk_size)]
    pub chunk_size: Option<u32>,
    /// Shards per seeder. Default: the available cores.
    #[arg(long)]
    pub shards: Option<usize>,
    /// Connections per downloader. Default: the available cores.
    #[arg(long)]
    pub connections: Option<usize>,
    /// Most chunk requests in flight per connection.
    #[arg(long, default_value_t = REQUESTS_INFLIGHT_DEFAULT, value_parser = clap::value_parser!(u32).range(1..=config::REQUESTS_INFLIGHT_MAX as i64))]
    pub window: u32,
    /// Chunk order: rarest-first or round-robin.
    #[arg(long, default_value = "rarest-first")]
    pub strategy: Strategy,
    /// Upload limit of each seeder, in bytes per second.
    #[arg(long, value_parser = parse_rate, value_name = "BYTES")]
    pub max_upload_rate: Option<u64>,
    /// Transport between peers (only tcp so far).
    #[arg(long, default_value = "tcp", value_parser = ["tcp"])]
    pub transport: String,
    #[command(flatten)]
    pub encryption: EncryptionArg,
    /// Also write result.json, throughput.svg and latency.svg into this directory.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Copy a file over plain loopback TCP (no framing, hashing or FlatBuffers) into an
    /// output file: the ceiling `get` is measured against.
    RawTcp {
        /// File to send.
        file: PathBuf,
        /// Where the receiver writes it.
        #[arg(short, long)]
        output: PathBuf,
        /// Parallel connections (the file is split into equal ranges).
        #[arg(long, default_value_t = 2)]
        connections: usize,
    },
    /// SHA-256 throughput of one core over 512 KiB chunks (the chunk verification limit).
    Sha256 {
        /// Bytes to hash.
        #[arg(long, default_value = "1GiB", value_parser = config::parse_bytes)]
        bytes: u64,
    },
}

fn parse_chunk_size(s: &str) -> Result<u32, String> {
    config::validate_chunk_size(config::parse_bytes(s)?)
}

fn parse_rate(s: &str) -> Result<u64, String> {
    service::parse_rate(s)
}

fn parse_file_id(s: &str) -> Result<FileId, String> {
    s.parse().map_err(|e: crate::crypto::ParseFileIdError| e.to_string())
}

fn parse_encryption(s: &str) -> Result<Encryption, String> {
    service::parse_encryption(s)
}

/// `HOST:PORT` or `NODE_ID@HOST:PORT`.
fn parse_peer(s: &str) -> Result<PeerAddr, String> {
    s.parse()
}

fn parse_addr(s: &str) -> Result<SocketAddr, String> {
    node::resolve_addr(s)
}

/// The data directory: `--data-dir`, else `$FURYMESH_HOME` (both via clap), else the
/// platform's data directory.
/// The data directory, made absolute: paths recorded under it (collections, manifests)
/// must stay valid when another command runs from another working directory.
fn data_dir(cli: &Cli) -> Result<PathBuf> {
    let dir = match &cli.data_dir {
        Some(d) => d.clone(),
        None => layout::default_data_dir()
            .context("no data directory: pass --data-dir or set FURYMESH_HOME")?,
    };
    std::path::absolute(&dir).with_context(|| format!("cannot make {} absolute", dir.display()))
}

/// Runs a parsed command line. Returns the process exit code.
pub fn run(cli: Cli) -> Result<i32> {
    // As servers do: the soft descriptor limit (often 1,024) up to the hard one; the
    // seeder sizes its pools from what this leaves.
    node::raise_open_files_limit();
    match &cli.command {
        Command::Init => init(&data_dir(&cli)?, cli.json),
        Command::Id => id(&data_dir(&cli)?, cli.json),
        Command::Publish(a) => publish(&data_dir(&cli)?, a, cli.json),
        Command::Unpublish(a) => unpublish(&data_dir(&cli)?, a, cli.json),
        Command::Ls => ls(&data_dir(&cli)?, cli.json),
        Command::Status => status(&data_dir(&cli)?, cli.json),
        Command::Downloads(a) => downloads(&data_dir(&cli)?, a, cli.json),
        Command::Seed(a) => seed(&cli, a),
        Command::Config(a) => show_config(&cli, a),
        Command::Get(a) => get(&data_dir(&cli)?, a, network(&cli)?, node_config(&cli)?, cli.json),
        Command::Dht(d) => dht(&cli, d, network(&cli)?),
        Command::Demo(a) => crate::demo::run(
            &data_dir(&cli)?,
            a.size,
            a.shards.unwrap_or_else(node::available_cores),
            cli.json,
        ),
        Command::Bench(BenchArgs { tool: None, .. }) => {
            let Command::Bench(b) = &cli.command else { unreachable!("matched above") };
            bench(&data_dir(&cli)?, b, network(&cli)?, cli.json)
        }
        Command::Bench(BenchArgs {
            tool: Some(BenchCommand::RawTcp { file, output, connections }),
            ..
        }) => {
            let r = crate::bench::raw_tcp_copy(file, output, *connections)?;
            print_json_or(cli.json, &r, || {
                format!(
                    "raw loopback TCP: {} bytes in {:.3} s = {:.1} MB/s",
                    r.bytes,
                    r.seconds,
                    r.bytes_per_sec / 1e6
                )
            })?;
            Ok(0)
        }
        Command::Bench(BenchArgs { tool: Some(BenchCommand::Sha256 { bytes }), .. }) => {
            let r = crate::bench::sha256_throughput(*bytes);
            print_json_or(cli.json, &r, || {
                format!(
                    "sha256: {} bytes in {:.3} s = {:.1} MB/s on one core",
                    r.bytes,
                    r.seconds,
                    r.bytes_per_sec / 1e6
                )
            })?;
            Ok(0)
        }
    }
}

/// The `--network-secret`, read.
/// The node configuration from `--config`, or the defaults.
fn node_config(cli: &Cli) -> Result<config::NodeConfig> {
    Ok(config_file(cli)?.node)
}

/// The configuration file: `--config`, else DATA_DIR/config.toml, else the defaults.
fn config_file(cli: &Cli) -> Result<service::ConfigFile> {
    service::ConfigFile::load(cli.config.as_deref(), data_dir(cli).ok().as_deref())
}

/// What `seed` runs with: the configuration file under the flags and environment.
fn seed_settings(cli: &Cli, a: &SeedArgs) -> Result<(service::ConfigFile, service::SeedSettings)> {
    let file = config_file(cli)?;
    let settings = service::SeedSettings::resolve(
        &a.flags(cli.network_secret.as_deref(), &cli.from_environment),
        &file.seed,
    )
    .with_context(|| match &file.path {
        Some(p) => format!("invalid configuration {}", p.display()),
        None => "invalid configuration".into(),
    })?;
    Ok((file, settings))
}

/// `furymesh config`: the effective configuration of `seed`.
fn show_config(cli: &Cli, a: &SeedArgs) -> Result<i32> {
    let (file, settings) = seed_settings(cli, a)?;
    if cli.json {
        let v = serde_json::json!({
            "config_file": file.path,
            "node": file.node,
            "seed": settings,
        });
        print_json_or(true, &v, String::new)?;
    } else {
        say(service::effective_toml(&file, &settings)?.trim_end())?;
    }
    Ok(0)
}

fn network(cli: &Cli) -> Result<Option<NetworkSecret>> {
    cli.network_secret.as_deref().map(node::read_network_secret).transpose()
}

/// The node's identity (created on first use) with its session key (kept in `dir` between
/// commands while fresh).
fn security(
    dir: &Path,
    network: Option<NetworkSecret>,
    encryption: Encryption,
) -> Result<Arc<NodeSecurity>> {
    let (identity, _) = node::load_or_create_identity(dir)?;
    NodeSecurity::with_session_file(identity, network, encryption, dir)
        .context("cannot certify a session key")
}

fn bench(dir: &Path, b: &BenchArgs, network: Option<NetworkSecret>, json: bool) -> Result<i32> {
    let cores = node::available_cores();
    let scenario = crate::bench::Scenario {
        seeders: b.seeders,
        downloaders: b.downloaders,
        file_bytes: b.size,
        chunk_size_bytes: b.chunk_size,
        seeder_shards: b.shards.unwrap_or(cores).max(1),
        connections_per_downloader: b.connections.unwrap_or(cores).max(1),
        window: b.window,
        strategy: b.strategy.to_string(),
        max_upload_rate_bytes: b.max_upload_rate,
        transport: "tcp",
        encryption: b.encryption.value == Encryption::On,
    };
    let security = security(dir, network, b.encryption.value)?;
    let quiet = json || !std::io::stderr().is_terminal();
    let report = crate::bench::run_scenario(scenario, security, &|line| {
        if !quiet {
            tracing::info!("bench: {line}");
        }
    })?;
    if let Some(dir) = &b.out {
        for f in crate::bench::write_out(&report, dir)? {
            if !json {
                tracing::info!("bench: wrote {}", f.display());
            }
        }
    }
    print_json_or(json, &report, || crate::bench::table(&report))?;
    Ok(0)
}

/// Prints a command's result: `value` as one line of JSON with `--json`, else the human
/// text. A closed stdout is not an error here: the command's work is done, so its exit code
/// stays what it would have been had the output been read.
fn print_json_or<T: Serialize>(
    json: bool,
    value: &T,
    human: impl FnOnce() -> String,
) -> Result<()> {
    let printed = if json {
        say(&serde_json::to_string(value).context("cannot serialize the output")?)
    } else {
        say(&human())
    };
    match printed {
        Err(e) if e.is::<StdoutClosed>() => Ok(()),
        other => other,
    }
}

fn init(dir: &Path, json: bool) -> Result<i32> {
    std::fs::create_dir_all(layout::catalog_dir(dir))
        .with_context(|| format!("cannot create {}", dir.display()))?;
    let (identity, created) = node::load_or_create_identity(dir)?;
    let node_id = identity.node_id();
    let v = serde_json::json!({
        "data_dir": dir,
        "node_id": node_id.to_string(),
        "identity": layout::identity_path(dir),
        "created": created,
    });
    print_json_or(json, &v, || {
        format!(
            "data directory ready: {}\nnode ID {node_id} ({})",
            dir.display(),
            if created { "new identity" } else { "existing identity kept" }
        )
    })?;
    Ok(0)
}

fn id(dir: &Path, json: bool) -> Result<i32> {
    let identity = node::load_identity(dir)?;
    let node_id = identity.node_id();
    let v = serde_json::json!({
        "node_id": node_id.to_string(),
        "identity": layout::identity_path(dir),
    });
    print_json_or(json, &v, || node_id.to_string())?;
    Ok(0)
}

/// A bar on stderr when it is a terminal, nothing otherwise.
fn progress_bar(total: u64, what: &str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template(
            "{msg} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        )
        .expect("static template")
        .progress_chars("=> "),
    );
    bar.set_message(what.to_owned());
    bar
}

/// One published file as `publish --json` and `ls --json` print it.
#[derive(Serialize)]
struct PublishedJson {
    file_id: String,
    /// The path as UTF-8 (bytes that are not UTF-8 shown as U+FFFD).
    path: String,
    /// The path's exact bytes in hex, only when it is not UTF-8 (Linux file names are
    /// bytes; JSON strings are not).
    #[serde(skip_serializing_if = "Option::is_none")]
    path_hex: Option<String>,
    /// The path for people: bytes that are not UTF-8 escaped as `\xNN`.
    #[serde(skip)]
    shown: String,
    size: u64,
    chunk_size: u32,
    chunks: u32,
    /// Payload bytes of it the running node has served since it started (`ls` with a node
    /// running on the data directory; absent otherwise).
    #[serde(skip_serializing_if = "Option::is_none")]
    served_bytes: Option<u64>,
    /// Chunks of it the running node has served since it started (as `served_bytes`).
    #[serde(skip_serializing_if = "Option::is_none")]
    served_chunks: Option<u64>,
    /// `ls`: `ok`, `changed` or `missing` (the file on disk is not what was published, so
    /// seeders refuse its chunks: republish it).
    #[serde(skip_serializing_if = "Option::is_none")]
    state: Option<&'static str>,
}

impl PublishedJson {
    fn of(e: &storage::CatalogEntry) -> Self {
        let path = e.path.as_os_str();
        Self {
            file_id: e.info.file_id.to_hex(),
            path: path.to_string_lossy().into_owned(),
            path_hex: path.to_str().is_none().then(|| hex::encode(path.as_bytes())),
            shown: shown(&e.path),
            size: e.info.size,
            chunk_size: e.info.chunk_size,
            chunks: e.info.chunk_count(),
            served_bytes: None,
            served_chunks: None,
            state: None,
        }
    }
}

/// `n` and the noun, singular for one: `1 file`, `2 files` (`noun` is the singular; the
/// plural adds an `s`).
fn count(n: impl Into<u64>, noun: &str) -> String {
    let n = n.into();
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

/// A path for a person to read: UTF-8 as is, every other byte as `\xNN`, so two names that
/// differ only in such bytes still look different (`caf\xE9.txt` and `café.txt`).
fn shown(path: &Path) -> String {
    let mut s = String::new();
    for chunk in path.as_os_str().as_bytes().utf8_chunks() {
        s.push_str(chunk.valid());
        for b in chunk.invalid() {
            s.push_str(&format!("\\x{b:02X}"));
        }
    }
    s
}

/// One recorded collection as `publish --json` and `ls --json` print it.
#[derive(Serialize)]
struct CollectionJson {
    /// `c-` and 64 hex characters.
    collection_id: String,
    name: String,
    /// The directory published (publish) or the encoded collection (ls).
    path: String,
    files: usize,
    /// Total size of the files, in bytes.
    size: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    link: Option<String>,
    /// `ls`: `ok`, or `changed` when one of its files is not as published (changed or
    /// missing on disk, or unpublished): its downloads would fail.
    #[serde(skip_serializing_if = "Option::is_none")]
    state: Option<&'static str>,
}

/// The links `publish` prints: the ID and name, plus the peers, bootstrap nodes and web
/// seeds its `--link-*` flags give (peers pinned to this data directory's node ID).
struct LinkTemplate {
    peers: Vec<crate::link::LinkPeer>,
    bootstrap: Vec<crate::link::HostPort>,
    web_seeds: Vec<String>,
}

impl LinkTemplate {
    fn new(dir: &Path, a: &PublishArgs) -> Result<Self> {
        let peers = if a.link_peer.is_empty() {
            Vec::new()
        } else {
            let node_id = node::load_identity(dir)
                .context("--link-peer names this node: it needs an identity (furymesh init)")?
                .node_id();
            a.link_peer
                .iter()
                .map(|addr| crate::link::LinkPeer { node_id, addr: addr.clone() })
                .collect()
        };
        for w in &a.link_web_seed {
            let probe = format!("furymesh:{}?web-seed={}", "0".repeat(64), w);
            probe
                .parse::<crate::link::Link>()
                .map_err(|e| anyhow::anyhow!("--link-web-seed: {e}"))?;
        }
        Ok(Self { peers, bootstrap: a.link_bootstrap.clone(), web_seeds: a.link_web_seed.clone() })
    }

    fn link(&self, id: crate::crypto::ContentId, name: &str) -> String {
        crate::link::Link {
            id,
            name: crate::link::check_name(name).is_ok().then(|| name.to_owned()),
            peers: self.peers.clone(),
            bootstrap: self.bootstrap.clone(),
            web_seeds: self.web_seeds.clone(),
        }
        .to_string()
    }
}

/// `publish --json`: the files, each with its link, then the collections recorded.
#[derive(Serialize)]
#[serde(untagged)]
enum PublishRow {
    File {
        #[serde(flatten)]
        file: PublishedJson,
        link: String,
    },
    Collection(CollectionJson),
}

fn publish(dir: &Path, a: &PublishArgs, json: bool) -> Result<i32> {
    use crate::crypto::ContentId;
    let links = LinkTemplate::new(dir, a)?;
    let mut catalog =
        Catalog::load(dir).with_context(|| format!("cannot read catalog in {}", dir.display()))?;
    // Sizing the bar walks the tree once more: only worth it when a bar is shown.
    let total = if std::io::stderr().is_terminal() { storage::total_bytes(&a.paths) } else { 0 };
    let bar = progress_bar(total, "hashing");
    let started = clock::now();
    let skip = a.skip_unsafe;
    let policy = if skip { storage::UnsafePolicy::Skip } else { storage::UnsafePolicy::Refuse };
    let outcome =
        storage::publish_tree(&mut catalog, &a.paths, a.chunk_size, policy, &|n| bar.inc(n));
    bar.finish_and_clear();
    for (path, why) in &outcome.skipped {
        note!("furymesh publish: warning: skipped {}: {why}", path.display());
    }
    let (mut rows, mut failed, mut hashed, mut reused, mut files) = (Vec::new(), 0, 0u64, 0, 0);
    let mut human = String::new();
    let direct: std::collections::HashSet<PathBuf> = a
        .paths
        .iter()
        .filter(|p| !p.is_dir())
        .filter_map(|p| std::fs::canonicalize(p).ok())
        .collect();
    for r in outcome.files {
        match r {
            Ok(p) => {
                if p.reused {
                    reused += 1;
                } else {
                    hashed += p.entry.info.size;
                }
                files += 1;
                let f = PublishedJson::of(&p.entry);
                let link = links.link(ContentId::file(p.entry.info.file_id), &p.entry.info.name);
                human.push_str(&format!("{}  {:>12}  {}\n", f.file_id, f.size, f.shown));
                if direct.contains(&p.entry.path) {
                    human.push_str(&format!("  link: {link}\n"));
                }
                rows.push(PublishRow::File { file: f, link });
            }
            Err(e) => {
                failed += 1;
                note!("furymesh publish: {e}");
            }
        }
    }
    let secs = started.elapsed().as_secs_f64();
    human.push_str(&format!(
        "published {} ({} unchanged), hashed {:.1} MiB in {:.2} s ({:.0} MB/s)",
        count(files as u64, "file"),
        reused,
        hashed as f64 / (1 << 20) as f64,
        secs,
        hashed as f64 / secs.max(1e-9) / 1e6
    ));
    for c in outcome.collections {
        match c {
            Ok(c) => {
                let id = ContentId::collection(c.id);
                let link = links.link(id, &c.name);
                human.push_str(&format!(
                    "\ncollection {id}  {}, {} bytes  {}\n  link: {link}",
                    count(c.collection.entries.len() as u64, "file"),
                    c.collection.total_size(),
                    shown(&c.dir),
                ));
                rows.push(PublishRow::Collection(CollectionJson {
                    collection_id: id.to_string(),
                    name: c.name,
                    path: c.dir.to_string_lossy().into_owned(),
                    files: c.collection.entries.len(),
                    size: c.collection.total_size(),
                    link: Some(link),
                    state: None,
                }));
            }
            // Its files are published; why there is no collection is said (a refused
            // entry already failed the command above).
            Err(why) => note!("furymesh publish: warning: {why}"),
        }
    }
    if files > 0 {
        sync_running_node(dir, "publish");
    }
    print_json_or(json, &rows, || human)?;
    if files == 0 && failed == 0 {
        bail!("no regular files found under the given paths");
    }
    Ok(if failed > 0 { 1 } else { 0 })
}

fn unpublish(dir: &Path, a: &UnpublishArgs, json: bool) -> Result<i32> {
    use crate::crypto::ContentId;
    let (mut catalog, lock) = Catalog::load_for_update(dir)
        .with_context(|| format!("cannot update the catalog in {}", dir.display()))?;
    let (mut removed, mut missing) = (Vec::new(), 0);
    let (mut files, mut collections) = (0u64, 0u64);
    for t in &a.targets {
        // A file or collection ID, else a path as published (canonical, as the catalog
        // keeps it): a file, or a directory (every file published from under it, and the
        // collections made only of those files).
        let ids: Vec<FileId> = match t.parse::<ContentId>() {
            Ok(c) => catalog.takeback(&c.id, a.keep_files),
            Err(_) => {
                let path = std::fs::canonicalize(t).unwrap_or_else(|_| PathBuf::from(t));
                if path.is_dir() {
                    under_dir(&catalog, &path)
                } else {
                    catalog.entries().filter(|e| e.path == path).map(|e| e.info.file_id).collect()
                }
            }
        };
        let before = removed.len();
        for id in ids {
            let is_collection = catalog.get(&id).is_some_and(|e| e.is_collection());
            if catalog.remove(&id)? {
                if is_collection {
                    collections += 1;
                    removed.push(ContentId::collection(id).to_string());
                } else {
                    files += 1;
                    removed.push(id.to_hex());
                }
            }
        }
        if removed.len() == before {
            missing += 1;
            note!("furymesh unpublish: {t} is not published in {}", dir.display());
        }
    }
    // The node reads the catalog without the lock; released first all the same, so that
    // nothing it does can wait on this command.
    drop(lock);
    if !removed.is_empty() {
        sync_running_node(dir, "unpublish");
    }
    print_json_or(json, &removed, || {
        let mut s: String = removed.iter().map(|id| format!("{id}\n")).collect();
        let mut parts = Vec::new();
        if files > 0 || collections == 0 {
            parts.push(count(files, "file"));
        }
        if collections > 0 {
            parts.push(count(collections, "collection"));
        }
        s.push_str(&format!("unpublished {}", parts.join(" and ")));
        s
    })?;
    Ok(if missing > 0 { 1 } else { 0 })
}

/// The catalog's files published from under directory `dir` (canonical), then the
/// collections every entry of which is one of them (a collection that shares files with
/// another directory's stays).
fn under_dir(catalog: &Catalog, dir: &Path) -> Vec<FileId> {
    let files: std::collections::HashSet<FileId> = catalog
        .entries()
        .filter(|e| !e.is_collection() && e.path.starts_with(dir))
        .map(|e| e.info.file_id)
        .collect();
    let collections = catalog.entries().filter(|e| e.is_collection());
    let mut ids: Vec<FileId> = files.iter().copied().collect();
    for e in collections {
        let Ok(c) = storage::read_collection(e) else {
            continue;
        };
        if !c.entries.is_empty() && c.entries.iter().all(|m| files.contains(&m.file_id)) {
            ids.push(e.info.file_id);
        }
    }
    ids
}

fn ls(dir: &Path, json: bool) -> Result<i32> {
    use crate::crypto::ContentId;
    if !dir.is_dir() {
        note!(
            "furymesh ls: warning: no data directory at {} (nothing published there; check \
             --data-dir, or run `furymesh init`)",
            dir.display()
        );
    }
    let catalog = Catalog::load(dir)?;
    for (p, why) in &catalog.skipped {
        note!("furymesh ls: skipping unreadable manifest {}: {why}", p.display());
    }
    let served = served_by_running_node(dir);
    let (mut files, mut colls): (Vec<_>, Vec<_>) =
        catalog.entries().partition(|e| !e.is_collection());
    files.sort_by(|a, b| a.path.cmp(&b.path));
    colls.sort_by(|a, b| a.info.name.cmp(&b.info.name));
    let mut human: Vec<String> = Vec::new();
    let mut rows: Vec<serde_json::Value> = Vec::new();
    let mut intact = std::collections::HashSet::new();
    let mut changed = 0u64;
    for e in &files {
        let mut p = PublishedJson::of(e);
        let state = e.state();
        p.state = Some(state.as_str());
        let mut line = format!("{}  {:>12}  {}", p.file_id, p.size, p.shown);
        if let Some((bytes, chunks)) =
            served.as_ref().map(|m| m.get(&p.file_id).copied().unwrap_or_default())
        {
            (p.served_bytes, p.served_chunks) = (Some(bytes), Some(chunks));
            line.push_str(&format!("  (served {bytes} bytes, {})", count(chunks, "chunk")));
        }
        match state.advice() {
            Some(why) => {
                changed += 1;
                line.push_str(&format!("\n    {}: {why}", state.as_str().to_uppercase()));
            }
            None => {
                intact.insert(e.info.file_id);
            }
        }
        human.push(line);
        rows.push(serde_json::to_value(&p)?);
    }
    for e in colls {
        // Read back from its encoding (checked like a peer's): what the seeder serves.
        let c = match storage::read_collection(e) {
            Ok(c) => c,
            Err(why) => {
                note!("furymesh ls: skipping collection {}: {why}", e.path.display());
                continue;
            }
        };
        let id = ContentId::collection(e.info.file_id);
        let broken = c.entries.iter().filter(|m| !intact.contains(&m.file_id)).count();
        let mut line = format!(
            "{id}  {:>12}  {}/ ({})",
            c.total_size(),
            e.info.name,
            count(c.entries.len() as u64, "file")
        );
        if broken > 0 {
            line.push_str(&format!(
                "\n    CHANGED: {broken} of its files changed on disk since publish, went \
                 missing or were unpublished: downloads of it fail; publish the directory again"
            ));
        }
        human.push(line);
        rows.push(serde_json::to_value(CollectionJson {
            collection_id: id.to_string(),
            name: e.info.name.clone(),
            path: e.path.to_string_lossy().into_owned(),
            files: c.entries.len(),
            size: c.total_size(),
            link: None,
            state: Some(if broken > 0 { "changed" } else { "ok" }),
        })?);
    }
    if changed > 0 {
        note!(
            "furymesh ls: warning: {} changed on disk since publish (seeders refuse {}); \
             republish or unpublish {}",
            count(changed, "file"),
            if changed == 1 { "it" } else { "them" },
            if changed == 1 { "it" } else { "them" },
        );
    }
    print_json_or(json, &rows, || human.join("\n"))?;
    Ok(0)
}

/// The client of the node running on `dir`, with a clear error when none runs (and a
/// clearer one when a seed runs there with its API off).
fn api_client(dir: &Path) -> Result<crate::api::ApiClient> {
    crate::api::ApiClient::for_data_dir(dir).map_err(|e| {
        let seed_runs = storage::LockFile::try_acquire(&layout::seed_lock_path(dir))
            .is_ok_and(|held| held.is_none());
        if seed_runs && matches!(e, crate::api::ClientError::NotRunning(_)) {
            anyhow::anyhow!(
                "a seed runs on {} but its control API is off (start it with --api HOST:PORT)",
                dir.display()
            )
        } else {
            e.into()
        }
    })
}

/// The DHT address of the seed running on `dir` (its listen address: the DHT's UDP port is
/// the TCP port; an unspecified IP becomes loopback), for commands given no bootstrap node:
/// they join the DHT through that node, so their lookups start from its routing table.
///
/// Errors: no node runs on `dir`, its API is off, it does not answer, or it runs without a
/// DHT; each message says which.
fn running_seed_dht(dir: &Path) -> Result<SocketAddr> {
    let node = api_client(dir)?.get("/api/node")?;
    if node["dht_table_size"].is_null() {
        bail!("the seed running on {} runs without a DHT", dir.display());
    }
    let addr: SocketAddr = node["listen_addresses"][0]
        .as_str()
        .and_then(|a| a.parse().ok())
        .with_context(|| format!("the seed running on {} has no listen address", dir.display()))?;
    Ok(match addr.ip() {
        std::net::IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, addr.port()))
        }
        std::net::IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, addr.port()))
        }
        _ => addr,
    })
}

/// Tells the node running on `dir`, if any, to take the catalog as `publish` or
/// `unpublish` (`cmd`) just wrote it (`POST /api/catalog/sync`), so the command returns only
/// once the node serves the change. With no node running there is nothing to tell (a node
/// started later reads the catalog); a node whose API is off, or that does not answer,
/// still picks the change up through its catalog watch within a second, and a warning says
/// so.
fn sync_running_node(dir: &Path, cmd: &str) {
    let Ok(client) = crate::api::ApiClient::for_data_dir(dir) else { return };
    match client.request("POST", "/api/catalog/sync", None) {
        Ok(v) => {
            let n = |k: &str| v[k].as_u64().unwrap_or(0);
            let mut what = count(n("files"), "file");
            if n("collections") > 0 {
                what.push_str(&format!(" and {}", count(n("collections"), "collection")));
            }
            note!(
                "furymesh {cmd}: the node running here (API http://{}) serves {what} now",
                client.addr()
            )
        }
        Err(crate::api::ClientError::NotRunning(_)) => {}
        Err(e) => note!(
            "furymesh {cmd}: warning: the node running here did not confirm the change ({e}); \
             it picks it up through its catalog watch"
        ),
    }
}

/// What the node running on `dir` has served of each file since it started, by file ID
/// (hex): (payload bytes, chunks). None when no node answers.
fn served_by_running_node(dir: &Path) -> Option<std::collections::HashMap<String, (u64, u64)>> {
    let list = crate::api::ApiClient::for_data_dir(dir).ok()?.get("/api/files").ok()?;
    Some(
        list.as_array()?
            .iter()
            .filter_map(|f| {
                let n = |k: &str| f[k].as_u64().unwrap_or(0);
                Some((f["file_id"].as_str()?.to_owned(), (n("served_bytes"), n("served_chunks"))))
            })
            .collect(),
    )
}

fn status(dir: &Path, json: bool) -> Result<i32> {
    let client = api_client(dir)?;
    let node = client.get("/api/node")?;
    let stats = client.get("/api/stats")?;
    let v = serde_json::json!({ "api": client.addr().to_string(), "node": node, "stats": stats });
    print_json_or(json, &v, || {
        let n = |k: &str| node.get(k).cloned().unwrap_or_default();
        let s = |k: &str| stats.get(k).and_then(|v| v.as_u64()).unwrap_or(0);
        let listen: Vec<String> = n("listen_addresses")
            .as_array()
            .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect())
            .unwrap_or_default();
        format!(
            "node {} (furymesh {}), up {:.0} s, API http://{}\n\
             listening on {} ({}, encryption {}){}\n\
             {} published, {}{}; {}\n\
             connections: {} open, {} accepted, {} failed the handshake\n\
             served: {} chunks, {} bytes; downloads running: {}",
            n("node_id").as_str().unwrap_or("?"),
            n("version").as_str().unwrap_or("?"),
            n("uptime_seconds").as_f64().unwrap_or(0.0),
            client.addr(),
            listen.join(", "),
            count(n("shards").as_u64().unwrap_or(0), "shard"),
            n("encryption").as_str().unwrap_or("?"),
            n("http_gateway")
                .as_str()
                .map(|u| format!("\nHTTP gateway {u}/files/FILE_ID"))
                .unwrap_or_default(),
            count(n("files_published").as_u64().unwrap_or(0), "file"),
            count(n("collections_published").as_u64().unwrap_or(0), "collection"),
            match n("files_changed").as_u64().unwrap_or(0) {
                0 => String::new(),
                c => format!(
                    " ({} changed on disk since publish: refused and not announced; `furymesh ls` names {})",
                    count(c, "file"),
                    if c == 1 { "it" } else { "them" }
                ),
            },
            match n("dht_table_size").as_u64() {
                Some(c) => format!("DHT table {}", count(c, "contact")),
                None => "no DHT".to_owned(),
            },
            s("connections_open"),
            s("connections"),
            s("handshakes_failed"),
            s("chunks_served"),
            s("payload_bytes_from_map") + s("payload_bytes_sealed"),
            s("downloads_active"),
        )
    })?;
    Ok(0)
}

fn downloads(dir: &Path, a: &DownloadsArgs, json: bool) -> Result<i32> {
    let client = api_client(dir)?;
    if let Some(action) = &a.action {
        let (verb, id, method, path) = match action {
            DownloadAction::Pause { id } => {
                ("paused", id, "POST", format!("/api/downloads/{id}/pause"))
            }
            DownloadAction::Resume { id } => {
                ("resumed", id, "POST", format!("/api/downloads/{id}/resume"))
            }
            DownloadAction::Cancel { id } => {
                ("cancelled", id, "DELETE", format!("/api/downloads/{id}"))
            }
        };
        let v = client.request(method, &path, None)?;
        print_json_or(json, &v, || format!("download {id} {verb}"))?;
        return Ok(0);
    }
    let list = client.get("/api/downloads")?;
    let rows = list.as_array().cloned().unwrap_or_default();
    print_json_or(json, &list, || {
        if rows.is_empty() {
            return "no downloads".into();
        }
        rows.iter()
            .map(|d| {
                let (done, total) =
                    (d["done_bytes"].as_u64().unwrap_or(0), d["total_bytes"].as_u64().unwrap_or(0));
                let mut line = format!(
                    "{:>3}  {:<10} {:>5.1}%  {}/{} bytes  {:.1} MB/s  {}  -> {}",
                    d["id"],
                    d["state"].as_str().unwrap_or("?"),
                    if total == 0 { 0.0 } else { done as f64 * 100.0 / total as f64 },
                    done,
                    total,
                    d["rate_bytes_per_s"].as_f64().unwrap_or(0.0) / 1e6,
                    d["file_id"].as_str().unwrap_or("?"),
                    d["output"].as_str().unwrap_or("?"),
                );
                // Why it failed (or the warning of a completed one), on its own line.
                if let Some(why) = d["error"].as_str() {
                    let what = if d["state"] == "failed" { "failed" } else { "note" };
                    line.push_str(&format!("\n     {what}: {why}"));
                }
                line
            })
            .collect::<Vec<_>>()
            .join("\n")
    })?;
    Ok(0)
}

/// A flag that turns true on SIGINT or SIGTERM.
fn stop_on_signals() -> Result<Arc<AtomicBool>> {
    let flag = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, flag.clone()).context("cannot install signal handler")?;
    }
    Ok(flag)
}

fn seed(cli: &Cli, a: &SeedArgs) -> Result<i32> {
    let dir = &data_dir(cli)?;
    let json = cli.json;
    let (file, s) = seed_settings(cli, a)?;
    let config = file.node;
    let network = s.network_secret.as_deref().map(node::read_network_secret).transpose()?;
    // Stamped before the catalog is read: whatever is published from here on (even before
    // the node listens) changes the directory's mtime after this and is synced.
    let catalog_stamp = catalog_stamp(dir);
    let catalog =
        Catalog::load(dir).with_context(|| format!("cannot read catalog in {}", dir.display()))?;
    for (p, why) in &catalog.skipped {
        note!("furymesh seed: skipping unreadable manifest {}: {why}", p.display());
    }
    if catalog.is_empty() {
        note!(
            "furymesh seed: warning: nothing published in {} yet; files published while \
             seeding are served within a second",
            dir.display()
        );
    }
    let shards = s.shards.unwrap_or_else(node::available_cores).max(1);
    let signals = signal_channel()?;
    let files = catalog.entries().cloned().collect::<Vec<_>>();
    let collections = files.iter().filter(|e| e.is_collection()).count() as u64;
    let n = files.len() as u64 - collections;
    let security = security(dir, network, s.encryption)?;
    let lock_path = layout::seed_lock_path(dir);
    // A probe (`status` asking whether a seed runs) holds the lock for microseconds: a
    // few tries tell it from a running seed.
    let mut held = None;
    for _ in 0..5 {
        held = storage::LockFile::try_acquire(&lock_path)
            .with_context(|| format!("cannot take {}", lock_path.display()))?;
        if held.is_some() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(40));
    }
    let _seed_lock = held.with_context(|| {
        format!(
            "another `furymesh seed` is already running on {} (it holds {}): stop it \
                 first, or give this one its own --data-dir",
            dir.display(),
            lock_path.display()
        )
    })?;
    let node_id = security.node_id();
    let dht = DhtServerOptions {
        bootstrap: s.bootstrap.clone(),
        table_path: Some(layout::dht_table_path(dir)),
        provide: files.iter().map(|e| Key::from_file_id(&e.info.file_id)).collect(),
        read_only: false,
    };
    let opts = NodeOptions {
        dht: Some(dht),
        upload_rate_bytes: s.max_upload_rate,
        peer_upload_rate_bytes: s.max_peer_upload_rate,
        data_dir: Some(dir.to_owned()),
        config,
        webrtc: s.webrtc,
        stun: s.stun.clone(),
        turn: s.turn.clone(),
        accept_tcp: !a.no_tcp,
        ..NodeOptions::new(Some(s.listen), shards, security)
    };
    let node = Node::start(files.into_iter().map(Into::into).collect(), &opts)?;
    // The gateway and the API first: "listening on" says the whole node is up (scripts and
    // service managers wait for it), and a kill right after it cannot cut their start.
    let private = s.network_secret.is_some();
    let gateway = start_gateway(&node.handle(), dir, s.http, s.webrtc.is_some(), private)?;
    let http = gateway.as_ref().map(|g| g.addr());
    let api = start_api(&node.handle(), dir, s.api, s.api_is_default, http)?;
    tracing::info!(
        "furymesh seed: listening on {} ({}, {}{}, node {node_id}, encryption {})",
        node.addr().map(|a| a.to_string()).unwrap_or_default(),
        count(shards as u64, "shard"),
        count(n, "file"),
        if collections > 0 {
            format!(", {}", count(collections, "collection"))
        } else {
            String::new()
        },
        if s.encryption == Encryption::On { "on" } else { "OFF" }
    );
    if let Some(w) = node.handle().webrtc_addr() {
        tracing::info!("furymesh seed: webrtc on udp {w} ({})", count(shards as u64, "shard"));
        if let Some(t) = &s.turn {
            tracing::info!(
                "furymesh seed: relayed candidates from turn {} (user {})",
                t.addr,
                t.username
            );
        }
    }
    let cpu0 = node::process_cpu_seconds();
    serve_until_signal(&node.handle(), dir, catalog_stamp, &signals);
    if let Some(g) = gateway {
        g.stop();
    }
    // The API first: its downloads stop (state saved) while the shards still run.
    if let Some(api) = api {
        api.stop();
    }
    let stats = node.shutdown();
    let cpu = node::process_cpu_seconds() - cpu0;
    let mut v = serde_json::to_value(&stats)?;
    v["cpu_seconds"] = cpu.into();
    let s = &stats.serving;
    print_json_or(json, &v, || {
        format!(
            "furymesh seed: stopped after {} connections ({} failed the handshake), {} chunks ({} bytes sealed, {} plaintext), {} errors",
            s.connections, s.handshakes_failed, s.chunks_served, s.payload_bytes_sealed, s.payload_bytes_from_map, s.error_replies
        )
    })?;
    Ok(0)
}

/// Starts the control API for `seed --api` (`None`: off). The built-in default address
/// (`is_default`) is skipped with a warning when taken; a chosen address that cannot be
/// bound is an error.
fn start_api(
    handle: &Handle,
    dir: &Path,
    api: Option<SocketAddr>,
    is_default: bool,
    http_gateway: Option<SocketAddr>,
) -> Result<Option<crate::api::ApiServer>> {
    let Some(bind) = api else { return Ok(None) };
    let explicit = !is_default;
    let opts = crate::api::ApiOptions { bind, data_dir: dir.to_owned(), http_gateway };
    match crate::api::ApiServer::start(handle.clone(), &opts) {
        Ok(api) => {
            tracing::info!(
                "furymesh seed: API on http://{} (token in {})",
                api.addr(),
                layout::api_token_path(dir).display()
            );
            Ok(Some(api))
        }
        Err(e) if !explicit && e.kind() == std::io::ErrorKind::AddrInUse => {
            note!(
                "furymesh seed: warning: no control API: {bind} is in use (another seed?); \
                 pass --api HOST:PORT to choose another address"
            );
            Ok(None)
        }
        Err(e) => Err(anyhow::Error::new(e)
            .context(format!("cannot start the control API on {bind} (--api off to run without)"))),
    }
}

/// Starts the public HTTP gateway for `seed --http` (`None`: off), saying where the files
/// and (with `webrtc`) their share pages are, and warning that it serves outside a
/// `private` network.
fn start_gateway(
    handle: &Handle,
    dir: &Path,
    http: Option<SocketAddr>,
    webrtc: bool,
    private: bool,
) -> Result<Option<crate::gateway::GatewayServer>> {
    let Some(bind) = http else { return Ok(None) };
    let opts = crate::gateway::GatewayOptions { bind, data_dir: dir.to_owned() };
    let g = crate::gateway::GatewayServer::start(handle.clone(), &opts).with_context(|| {
        format!("cannot start the HTTP gateway on {bind} (--http off to run without)")
    })?;
    tracing::info!("furymesh seed: HTTP gateway on http://{}/files/FILE_ID", g.addr());
    if webrtc {
        tracing::info!(
            "furymesh seed: share pages (the links to hand out) at http://{}/f/FILE_ID{}",
            g.addr(),
            if g.addr().ip().is_unspecified() { ", with this host's name or address" } else { "" }
        );
    }
    if private {
        note!(
            "furymesh seed: warning: --http serves every published file to anyone who can \
             reach {}, outside the private network (--network-secret)",
            g.addr()
        );
    }
    Ok(Some(g))
}

/// SIGINT, SIGTERM and SIGHUP as messages (a thread of signal-hook's waits for them).
fn signal_channel() -> Result<crossbeam_channel::Receiver<i32>> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP])
        .context("cannot install signal handlers")?;
    let (tx, rx) = crossbeam_channel::unbounded();
    std::thread::Builder::new()
        .name("furymesh-signals".into())
        .spawn(move || {
            for sig in signals.forever() {
                if tx.send(sig).is_err() {
                    return;
                }
            }
        })
        .context("cannot start the signal thread")?;
    Ok(rx)
}

/// The catalog directory's mtime (it changes with every manifest written or removed).
fn catalog_stamp(dir: &Path) -> Option<std::time::SystemTime> {
    std::fs::metadata(layout::catalog_dir(dir)).and_then(|m| m.modified()).ok()
}

/// Serves until SIGINT or SIGTERM. Keeps the node in step with the data directory's
/// catalog meanwhile: `furymesh publish` and `unpublish` run by anyone against the same
/// directory take effect within `NodeConfig::catalog_watch_interval_ms` (the catalog directory's mtime
/// changes with every manifest written or removed; `seen` is its stamp from before the
/// node read the catalog), and at once on SIGHUP.
fn serve_until_signal(
    node: &Handle,
    dir: &Path,
    mut seen: Option<std::time::SystemTime>,
    signals: &crossbeam_channel::Receiver<i32>,
) {
    let stamp = || catalog_stamp(dir);
    // Files changed on disk since publish are withdrawn from the DHT (and said once).
    let mut checked = clock::now();
    let mut reported = std::collections::HashSet::new();
    loop {
        if checked.elapsed() >= config::PUBLISHED_CHECK_INTERVAL {
            checked = clock::now();
            let bad = node.check_published();
            for (id, state) in &bad {
                if reported.insert(*id) {
                    let path = node.published_entry(id).map(|e| shown(&e.path)).unwrap_or_default();
                    note!(
                        "furymesh seed: warning: {path} ({id}): {}",
                        state.advice().unwrap_or_default()
                    );
                }
            }
            reported.retain(|id| bad.contains_key(id));
        }
        let sync = match signals.recv_timeout(node.config().catalog_watch_interval()) {
            Ok(signal_hook::consts::SIGHUP) => true,
            Ok(_) | Err(crossbeam_channel::RecvTimeoutError::Disconnected) => return,
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => {
                let now = stamp();
                let changed = now != seen;
                seen = now;
                changed
            }
        };
        if sync {
            match node.sync_catalog() {
                Ok((0, 0)) => {}
                Ok((added, removed)) => {
                    tracing::info!("furymesh seed: catalog changed: {added} files served anew, {removed} no longer")
                }
                Err(e) => note!("furymesh seed: warning: cannot reload the catalog: {e}"),
            }
        }
    }
}

fn dht(cli: &Cli, d: &DhtCommandArgs, network: Option<NetworkSecret>) -> Result<i32> {
    let json = cli.json;
    let (q, b) = match d {
        DhtCommandArgs::Ping { addr } => {
            let p = node::ping(*addr, network)?;
            print_json_or(json, &p, || {
                format!("{} is node {} (rtt {:.2} ms)", p.addr, p.node_id, p.rtt_ms)
            })?;
            return Ok(0);
        }
        DhtCommandArgs::FindProviders { file_id, bootstrap } => {
            (DhtQuery::FindProviders(Key::from_file_id(file_id)), bootstrap)
        }
        DhtCommandArgs::FindNode { id, bootstrap } => (DhtQuery::FindNode(*id), bootstrap),
    };
    let limit = std::time::Duration::from_secs(b.timeout_secs);
    let via = if b.addrs.is_empty() {
        let dir = data_dir(cli)?;
        let seed = running_seed_dht(&dir).context(
            "no --bootstrap given, and no seed to join the DHT through (give --bootstrap HOST:PORT)",
        )?;
        note!("furymesh dht: joining through the seed running on {} ({seed})", dir.display());
        vec![seed]
    } else {
        b.addrs.clone()
    };
    let answer = node::query(&via, q, network, limit)?;
    print_json_or(json, &answer, || {
        let mut s: String =
            answer.contacts.iter().map(|c| format!("{}  {}\n", c.node_id, c.addr)).collect();
        s.push_str(&format!(
            "{} found in {} rounds ({} requests, {} responses)",
            answer.contacts.len(),
            answer.rounds,
            answer.requests_sent,
            answer.responses_received
        ));
        s
    })?;
    Ok(if answer.contacts.is_empty() { 1 } else { 0 })
}

/// What `get` was given, with a link's parts merged into the flags.
struct GetTarget {
    id: crate::crypto::ContentId,
    peers: Vec<PeerAddr>,
    bootstrap: Vec<SocketAddr>,
    output: PathBuf,
    /// `--web-seed`s, then the link's.
    web_seeds: Vec<String>,
}

/// Reads `get`'s ID or link and merges a link's peers, bootstrap nodes and name with the
/// flags (peers' host names are resolved here). Errors name the bad part.
fn get_target(dir: &Path, a: &GetArgs) -> Result<GetTarget> {
    let (id, link) = parse_get_target(&a.target)?;
    let mut peers = a.peer.clone();
    let mut bootstrap = a.bootstrap.clone();
    let mut web_seeds = a.web_seed.clone();
    let mut name = None;
    if let Some(l) = link {
        for w in &l.web_seeds {
            web_seeds
                .push(node::parse_web_seed(w).map_err(|e| anyhow::anyhow!("link web seed: {e}"))?);
        }
        for p in &l.peers {
            peers.push(p.to_string().parse().map_err(|e| anyhow::anyhow!("link peer {p}: {e}"))?);
        }
        for b in &l.bootstrap {
            bootstrap.push(
                parse_addr(&b.to_string())
                    .map_err(|e| anyhow::anyhow!("link bootstrap {b}: {e}"))?,
            );
        }
        name = l.name;
    }
    if peers.is_empty() && bootstrap.is_empty() {
        // The seed running on this data directory, if any, is the way into the DHT.
        let seed = running_seed_dht(dir).context(
            "nowhere to download from: give --peer or --bootstrap (or a link that carries \
             them), or run `furymesh seed` on this data directory to find providers through it",
        )?;
        note!("furymesh get: finding providers through the seed running here ({seed})");
        bootstrap.push(seed);
    }
    let output = match (&a.output, name) {
        (Some(o), _) => o.clone(),
        (None, Some(n)) => PathBuf::from(n),
        (None, None) => bail!("-o PATH is needed (only a link with a name supplies one)"),
    };
    // A file goes into an existing directory (a collection's directory is created).
    if id.kind == crate::crypto::IdKind::File && output.as_os_str() != "-" {
        let parent =
            output.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        if !parent.is_dir() {
            bail!(
                "cannot write {}: the directory {} does not exist",
                output.display(),
                parent.display()
            );
        }
    }
    let mut seen = std::collections::HashSet::new();
    web_seeds.retain(|w| seen.insert(w.clone()));
    if web_seeds.len() > config::WEB_SEEDS_PER_DOWNLOAD_MAX {
        bail!("at most {} web seeds per download", config::WEB_SEEDS_PER_DOWNLOAD_MAX);
    }
    Ok(GetTarget { id, peers, bootstrap, output, web_seeds })
}

/// `get --detach`: the download runs inside the node on `dir` (`POST /api/downloads`).
fn get_detached(dir: &Path, a: &GetArgs, json: bool) -> Result<i32> {
    let (id, link) = parse_get_target(&a.target)?;
    if id.kind == crate::crypto::IdKind::Collection {
        bail!("--detach takes file IDs and links to files; run `get` of a collection in the foreground");
    }
    let mut peers: Vec<String> = a.peer.iter().map(ToString::to_string).collect();
    let mut web_seeds = a.web_seed.clone();
    let mut name = None;
    if let Some(l) = link {
        if !l.bootstrap.is_empty() {
            note!("furymesh get: the node uses its own DHT: the link's bootstrap nodes are not passed on");
        }
        peers.extend(l.peers.iter().map(ToString::to_string));
        for w in &l.web_seeds {
            web_seeds
                .push(node::parse_web_seed(w).map_err(|e| anyhow::anyhow!("link web seed: {e}"))?);
        }
        name = l.name;
    }
    let output = match (&a.output, name) {
        (Some(o), _) => o.clone(),
        (None, Some(n)) => PathBuf::from(n),
        (None, None) => bail!("-o PATH is needed (only a link with a name supplies one)"),
    };
    // The node resolves paths from its own working directory: send an absolute one.
    let output = std::path::absolute(&output)
        .with_context(|| format!("cannot make {} absolute", output.display()))?;
    let client = api_client(dir).context("--detach hands the download to a running node")?;
    let mut body = serde_json::json!({
        "file_id": id.id.to_hex(),
        "peers": peers,
        "output": output,
        "force": a.force,
    });
    if let Some(c) = a.connections {
        body["connections"] = c.into();
    }
    if let Some(r) = a.max_download_rate {
        body["max_download_rate"] = r.into();
    }
    if !web_seeds.is_empty() {
        body["web_seeds"] = web_seeds.into();
    }
    let v = client.request("POST", "/api/downloads", Some(&body))?;
    print_json_or(json, &v, || {
        format!(
            "download {} started in the node (API http://{}): {} -> {}\n\
             follow it with `furymesh downloads`",
            v["id"],
            client.addr(),
            id.id,
            output.display()
        )
    })?;
    Ok(0)
}

/// `get`'s ID or link, parsed (errors name the bad part).
fn parse_get_target(target: &str) -> Result<(crate::crypto::ContentId, Option<crate::link::Link>)> {
    if target.get(..9).is_some_and(|p| p.eq_ignore_ascii_case("furymesh:")) {
        let link: crate::link::Link = target.parse()?;
        Ok((link.id, Some(link)))
    } else {
        let id = target
            .parse::<crate::crypto::ContentId>()
            .map_err(|e| anyhow::anyhow!("{target:?}: {e}"))?;
        Ok((id, None))
    }
}

fn get(
    dir: &Path,
    a: &GetArgs,
    network: Option<NetworkSecret>,
    config: config::NodeConfig,
    json: bool,
) -> Result<i32> {
    if a.detach {
        return get_detached(dir, a, json);
    }
    let t = get_target(dir, a)?;
    if t.output.as_os_str() == "-" && t.id.kind == crate::crypto::IdKind::Collection {
        bail!(
            "c-{} is a collection: it cannot be streamed to standard output (-o -); \
             give -o DIR to download its files",
            t.id.id
        );
    }
    let security = security(dir, network, a.encryption.value)?;
    let connections = a.connections.unwrap_or_else(node::available_cores).max(1);
    // One node for this command: its shards carry the connections and, with --listen,
    // serve the verified chunks meanwhile; with --bootstrap its DHT finds the providers
    // (a read-only client, or a full DHT node on the --listen port).
    let dht = (!t.bootstrap.is_empty()).then(|| DhtServerOptions {
        read_only: a.listen.is_none(),
        ..DhtServerOptions::client(t.bootstrap.clone())
    });
    let node_opts = NodeOptions {
        data_dir: Some(dir.to_owned()),
        config,
        dht,
        stun: a.stun.clone(),
        turn: a.turn.server()?,
        ..NodeOptions::new(a.listen, connections.min(node::available_cores()), security.clone())
    };
    let node = Node::start(Vec::new(), &node_opts)
        .map_err(|e| GetError::Listen { what: e.to_string() })?;
    let resolved = node
        .handle()
        .resolve_peers(t.id.id, &t.peers)
        .context("cannot find providers through the DHT")?;
    let opts = GetOptions {
        kind: crate::crypto::IdKind::File,
        file_id: t.id.id,
        peers: resolved.peers.clone(),
        security,
        output: t.output.clone(),
        force: a.force,
        connections,
        window: a.window,
        strategy: a.strategy,
        max_peers: a.max_peers,
        serve_partial: a.listen.is_some(),
        save_every_bytes: a.save_every.max(1),
        download_rate_bytes: a.max_download_rate,
        transport: a.transport,
        web_seeds: t.web_seeds.clone(),
    };
    let stop = stop_on_signals()?;
    if t.output.as_os_str() == "-" {
        return get_stream(dir, &node, &opts, &stop, &t, &resolved, json);
    }
    if t.id.kind == crate::crypto::IdKind::Collection {
        if !t.web_seeds.is_empty() {
            note!("furymesh get: web seeds serve single files; not used for a collection");
        }
        return get_collection(dir, &node, &opts, &stop, &t, &resolved, json);
    }
    let bar = progress_bar(0, "downloading");
    let bar2 = bar.clone();
    let result = node.handle().get(
        opts,
        stop,
        Box::new(move |p| {
            bar2.set_length(p.total_bytes);
            bar2.set_position(p.done_bytes);
        }),
    );
    bar.finish_and_clear();
    match result {
        Ok(r) => {
            for w in node.handle().finish_download(&t.peers, &r) {
                note!("furymesh get: warning: {w}");
            }
            print_json_or(json, &r, || {
                let mut s = format!(
                    "{} -> {}: {} bytes fetched in {:.2} s ({:.1} MB/s), {} chunks fetched, {} reused, {} re-verified",
                    r.file_id,
                    t.output.display(),
                    r.bytes,
                    r.seconds,
                    r.bytes_per_sec / 1e6,
                    r.chunks_fetched,
                    r.chunks_reused,
                    r.chunks_reverified
                );
                for p in &r.peers {
                    s.push_str(&format!(
                        "\n  {}@{}: {} bytes, {} corrupt chunks{}{}",
                        p.node_id.as_deref().unwrap_or("?"),
                        p.addr,
                        p.bytes,
                        p.corrupt_chunks,
                        if p.banned { ", banned" } else { "" },
                        p.error.as_ref().map(|e| format!(" ({e})")).unwrap_or_default()
                    ));
                }
                for w in &r.web_seeds {
                    s.push_str(&format!(
                        "\n  web seed {}: {} bytes, {} corrupt chunks{}{}",
                        w.url,
                        w.bytes,
                        w.corrupt_chunks,
                        if w.banned { ", banned" } else { "" },
                        w.error.as_ref().map(|e| format!(" ({e})")).unwrap_or_default()
                    ));
                }
                s
            })?;
            Ok(0)
        }
        Err(e) => get_failed(dir, &resolved, e),
    }
}

/// How a failed `get` (of a file or a collection) ends: interrupted by a signal is exit
/// 130; a peer that proved to be another node than the one this data directory pinned on
/// first use gets the way out spelled; anything else is the error itself (exit 1).
fn get_failed(dir: &Path, resolved: &node::ResolvedPeers, e: GetError) -> Result<i32> {
    match e {
        GetError::Interrupted => {
            note!("furymesh get: {e}");
            Ok(130)
        }
        GetError::WrongNode { peer, what } if resolved.pinned_by_known.contains(&peer) => {
            bail!(
                "handshake with {peer} failed: {what}\n\
             {peer} proved to be another node when this data directory first used it (see \
             {}); if its identity changed on purpose, delete that line or pin the new ID \
             with --peer NODE_ID@{peer}",
                resolved
                    .known_path
                    .clone()
                    .unwrap_or_else(|| layout::known_peers_path(dir))
                    .display()
            )
        }
        e => Err(e.into()),
    }
}

/// `get ID -o -`: the file to stdout in order as it verifies, the report on stderr.
fn get_stream(
    dir: &Path,
    node: &Node,
    opts: &GetOptions,
    stop: &Arc<AtomicBool>,
    t: &GetTarget,
    resolved: &node::ResolvedPeers,
    json: bool,
) -> Result<i32> {
    use std::io::Write;
    use std::os::fd::AsFd;
    // A descriptor of its own for stdout: plain write(2)s of whole chunks, not the line
    // buffering of `std::io::Stdout`.
    let out =
        std::io::stdout().as_fd().try_clone_to_owned().context("cannot use standard output")?;
    let out: Box<dyn Write + Send> = Box::new(std::fs::File::from(out));
    let bar = progress_bar(0, "streaming");
    let bar2 = bar.clone();
    let result = node.handle().stream(opts, out, stop, &move |p| {
        bar2.set_length(p.total_bytes);
        bar2.set_position(p.done_bytes);
    });
    bar.finish_and_clear();
    let mut err = std::io::stderr().lock();
    match result {
        Ok(r) => {
            for w in node.handle().finish_download(&t.peers, &r) {
                note!("furymesh get: warning: {w}");
            }
            // stdout carries the file: the report goes to stderr (dropped if it is closed).
            let line = if json {
                serde_json::to_string(&r).context("cannot serialize the output")?
            } else {
                format!(
                    "{} -> stdout: {} bytes in {:.2} s ({:.1} MB/s), {} chunks",
                    r.file_id,
                    r.bytes,
                    r.seconds,
                    r.bytes_per_sec / 1e6,
                    r.chunks_fetched
                )
            };
            let _ = writeln!(err, "{line}");
            Ok(0)
        }
        Err(GetError::Interrupted) => {
            note!(
                "furymesh get: interrupted; a stream is not resumable (run it again to start over)"
            );
            Ok(130)
        }
        Err(e @ GetError::StdoutClosed { .. }) => {
            note!("furymesh get: {e}");
            // What a shell reports for a writer ended by SIGPIPE.
            Ok(141)
        }
        Err(e) => get_failed(dir, resolved, e),
    }
}

/// `get c-… -o DIR` (see `node::get_collection`), printing its report.
fn get_collection(
    dir: &Path,
    node: &Node,
    opts: &GetOptions,
    stop: &Arc<AtomicBool>,
    t: &GetTarget,
    resolved: &node::ResolvedPeers,
    json: bool,
) -> Result<i32> {
    let bar = progress_bar(0, "files");
    let bar2 = bar.clone();
    let result = node::get_collection(&node.handle(), opts, stop, &move |done, total| {
        bar2.set_length(total as u64);
        bar2.set_position(done as u64);
    });
    bar.finish_and_clear();
    match result {
        Ok(r) => {
            if let Err(w) = node::record_collection(dir, &r) {
                note!(
                    "furymesh get: warning: not recorded in the catalog of {}: {w}",
                    dir.display()
                );
            }
            print_json_or(json, &r, || {
                format!(
                    "{} -> {}: {} ({} bytes), {} fetched ({} bytes in {:.2} s), {} already there",
                    r.collection_id,
                    t.output.display(),
                    count(r.files as u64, "file"),
                    r.total_bytes,
                    r.files_fetched,
                    r.bytes,
                    r.seconds,
                    r.files_kept
                )
            })?;
            Ok(0)
        }
        Err(e) => get_failed(dir, resolved, e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Defaults written as text in the clap attributes match the constants tuning.md names.
    #[test]
    fn get_defaults_are_the_config_constants() {
        let id = "ab".repeat(32);
        let cli = Cli::parse_from(["furymesh", "get", &id, "--peer", "127.0.0.1:1", "-o", "x"]);
        let Command::Get(a) = cli.command else { panic!("not a get") };
        assert_eq!(a.save_every, config::RESUME_SAVE_DEFAULT_BYTES);
        assert_eq!(a.window, REQUESTS_INFLIGHT_DEFAULT);
        assert_eq!(a.encryption.value, Encryption::On);
    }
}
