//! Running `seed` as a service: the configuration file, the effective configuration that
//! `furymesh config` prints, and logging.
//!
//! **The configuration file** is `--config FILE` (or `$FURYMESH_CONFIG`), else
//! `DATA_DIR/config.toml` when it exists. Its top-level keys are the node's runtime knobs
//! ([`NodeConfig`]); its `[seed]` table holds every `seed` option ([`SeedFile`]). For each
//! `seed` option the command line wins, then the option's `FURYMESH_*` environment
//! variable, then the file, then the built-in default (the order of systemd units,
//! kubo and nginx: a file for the host, flags for the one run).
//!
//! **Logs** go through `tracing` on stderr: `RUST_LOG` filters them (default `info`),
//! `--log-format json` writes one JSON object per line (for journald or a log shipper).
//! `seed`'s text lines carry a UTC timestamp and a level; the one-shot commands print the
//! bare message, as before.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::config::{self, NodeConfig};
use crate::crypto::Encryption;
use crate::storage::layout;

/// `--log-format`: how log lines are written on stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines (`seed`: timestamp, level, message).
    #[default]
    Text,
    /// One JSON object per line: `timestamp`, `level`, `fields.message`, `target`.
    Json,
}

/// Installs the process's log subscriber (once, before anything logs). `daemon`: the
/// command is a long-running service (`seed`), whose text lines get a timestamp and a
/// level. A closed or failing stderr drops lines and never panics (`seed 2>&1 | head -1`).
pub fn init_logging(format: LogFormat, daemon: bool) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .log_internal_errors(false);
    // A second call (tests in one process) keeps the first subscriber.
    let _ = match (format, daemon) {
        (LogFormat::Json, _) => builder.json().with_current_span(false).try_init(),
        (LogFormat::Text, true) => builder.with_target(false).try_init(),
        (LogFormat::Text, false) => {
            builder.without_time().with_level(false).with_target(false).try_init()
        }
    };
}

/// A byte count or rate in the file: a number of bytes, or a string with a unit
/// (`"8MiB"`, `"100KB"`, as on the command line).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ByteValue {
    Bytes(u64),
    Text(String),
}

/// The `[seed]` table of the configuration file: every `seed` option, each optional.
/// Values are written as on the command line (addresses `HOST:PORT`, rates with units).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SeedFile {
    /// `--listen`.
    pub listen: Option<String>,
    /// `--shards`.
    pub shards: Option<usize>,
    /// `--bootstrap` (a list).
    pub bootstrap: Option<Vec<String>>,
    /// `--max-upload-rate`, bytes per second.
    pub max_upload_rate: Option<ByteValue>,
    /// `--max-peer-upload-rate`, bytes per second.
    pub max_peer_upload_rate: Option<ByteValue>,
    /// `--encryption`: `"on"` or `"off"`.
    pub encryption: Option<String>,
    /// `--api`: `"HOST:PORT"` or `"off"`.
    pub api: Option<String>,
    /// `--http`: the public HTTP gateway, `"HOST:PORT"` or `"off"`.
    pub http: Option<String>,
    /// `--network-secret`: the private network's secret file.
    pub network_secret: Option<PathBuf>,
    /// `--webrtc`: the UDP `HOST:PORT` WebRTC data channels are answered on.
    pub webrtc: Option<String>,
    /// `--stun` (a list of `HOST:PORT`): STUN servers for server-reflexive candidates.
    pub stun: Option<Vec<String>>,
    /// `--turn` (`HOST:PORT`): the TURN server relayed candidates are allocated on.
    pub turn: Option<String>,
    /// `--turn-user`: its user name (the password comes from the command line, the
    /// environment or `turn_credentials`, never from this file).
    pub turn_user: Option<String>,
    /// `--turn-credentials`: a file with the TURN user name and password, one a line.
    pub turn_credentials: Option<PathBuf>,
}

/// A parsed configuration file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConfigFile {
    /// Where it was read from (`None`: no file, built-in defaults).
    pub path: Option<PathBuf>,
    /// The node's runtime knobs (top-level keys), validated.
    pub node: NodeConfig,
    /// The `[seed]` table, not yet parsed into addresses and rates (see [`SeedSettings`]).
    pub seed: SeedFile,
}

impl ConfigFile {
    /// Reads `explicit` (`--config`; an error if it cannot be read), else
    /// `DATA_DIR/config.toml` if it exists, else the defaults.
    ///
    /// Errors name the file and the key: unknown keys, wrong types and knobs outside
    /// their range ([`NodeConfig::validate`]) are refused, never ignored.
    pub fn load(explicit: Option<&Path>, data_dir: Option<&Path>) -> Result<Self> {
        let path = match (explicit, data_dir) {
            (Some(p), _) => p.to_owned(),
            (None, Some(d)) if layout::config_path(d).exists() => layout::config_path(d),
            _ => return Ok(Self::default()),
        };
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read the configuration {}", path.display()))?;
        let mut c = Self::parse(&text)
            .with_context(|| format!("invalid configuration {}", path.display()))?;
        c.path = Some(path);
        Ok(c)
    }

    /// Parses the text of a configuration file (see [`ConfigFile::load`]).
    pub fn parse(text: &str) -> Result<Self> {
        let mut table: toml::Table = toml::from_str(text)?;
        let seed = match table.remove("seed") {
            None => SeedFile::default(),
            Some(toml::Value::Table(t)) => t.try_into().context("in [seed]")?,
            Some(_) => bail!("`seed` must be a table ([seed])"),
        };
        let node: NodeConfig = table.try_into()?;
        node.validate()?;
        Ok(Self { path: None, node, seed })
    }
}

/// Where an effective `seed` setting came from. In JSON: `"command_line"`, `"file"`,
/// `"default"`, or `{"environment": "FURYMESH_…"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// The command line.
    CommandLine,
    /// The option's environment variable (named).
    Environment(String),
    /// The configuration file's `[seed]` table.
    File,
    /// Built in.
    Default,
}

/// The `seed` options as given on the command line (or in the environment); `None`: not
/// given there.
#[derive(Debug, Clone, Default)]
pub struct SeedFlags {
    pub listen: Option<SocketAddr>,
    pub shards: Option<usize>,
    pub bootstrap: Vec<SocketAddr>,
    pub max_upload_rate: Option<u64>,
    pub max_peer_upload_rate: Option<u64>,
    pub encryption: Option<Encryption>,
    /// `Some(None)`: `--api off`.
    pub api: Option<Option<SocketAddr>>,
    /// `Some(None)`: `--http off`.
    pub http: Option<Option<SocketAddr>>,
    pub network_secret: Option<PathBuf>,
    pub webrtc: Option<SocketAddr>,
    pub stun: Vec<SocketAddr>,
    pub turn: Option<SocketAddr>,
    pub turn_user: Option<String>,
    pub turn_password: Option<crate::node::TurnPassword>,
    pub turn_credentials: Option<PathBuf>,
    /// The options above that a `FURYMESH_*` variable gave rather than the command line:
    /// option name (`listen`) → variable name (`FURYMESH_LISTEN`).
    pub from_environment: BTreeMap<String, String>,
}

/// Which layer gave an option, before the environment is told from the command line.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Layer {
    Flag,
    File,
    Default,
}

/// What `seed` runs with: each option resolved (command line, environment, file, default)
/// and where it came from.
#[derive(Debug, Clone, Serialize)]
pub struct SeedSettings {
    pub listen: SocketAddr,
    /// `None`: one shard per available core.
    pub shards: Option<usize>,
    pub bootstrap: Vec<SocketAddr>,
    /// Bytes per second; `None`: unlimited.
    pub max_upload_rate: Option<u64>,
    /// Bytes per second; `None`: unlimited.
    pub max_peer_upload_rate: Option<u64>,
    #[serde(serialize_with = "encryption_text")]
    pub encryption: Encryption,
    /// `None`: `--api off` (`"off"` in JSON).
    #[serde(serialize_with = "api_text")]
    pub api: Option<SocketAddr>,
    /// The API address is the built-in default (a taken default port is skipped with a
    /// warning; a chosen one is an error).
    #[serde(skip)]
    pub api_is_default: bool,
    /// The public HTTP gateway's address; `None`: off (the default; `"off"` in JSON).
    #[serde(serialize_with = "api_text")]
    pub http: Option<SocketAddr>,
    pub network_secret: Option<PathBuf>,
    /// UDP address WebRTC data channels are answered on; `None`: no WebRTC.
    pub webrtc: Option<SocketAddr>,
    /// STUN servers (RFC 8489) the WebRTC socket learns its address outside a NAT from.
    pub stun: Vec<SocketAddr>,
    /// The TURN server (RFC 8656) relayed candidates are allocated on, with its
    /// credentials (shown as `USER@HOST:PORT`, never the password); `None`: no relay.
    #[serde(serialize_with = "turn_text")]
    pub turn: Option<crate::node::TurnServer>,
    /// Where the TURN credentials were read from, if from a file.
    pub turn_credentials: Option<PathBuf>,
    /// Option name → where its value came from.
    pub sources: BTreeMap<&'static str, Source>,
}

fn encryption_text<S: serde::Serializer>(e: &Encryption, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(if *e == Encryption::On { "on" } else { "off" })
}

fn turn_text<S: serde::Serializer>(
    t: &Option<crate::node::TurnServer>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => s.collect_str(&format_args!("{}@{}", t.username, t.addr)),
        None => s.serialize_none(),
    }
}

fn api_text<S: serde::Serializer>(a: &Option<SocketAddr>, s: S) -> Result<S::Ok, S::Error> {
    match a {
        Some(a) => s.collect_str(a),
        None => s.serialize_str("off"),
    }
}

/// Parses `"on"`/`"off"`.
pub fn parse_encryption(s: &str) -> Result<Encryption, String> {
    match s {
        "on" => Ok(Encryption::On),
        "off" => Ok(Encryption::Off),
        _ => Err(format!("{s:?}: expected `on` or `off`")),
    }
}

/// Parses `seed --api` and `seed --http`: `"off"` or an address.
pub fn parse_api(s: &str) -> Result<Option<SocketAddr>, String> {
    if s == "off" {
        return Ok(None);
    }
    crate::node::resolve_addr(s).map(Some)
}

/// Parses a rate (`"8MiB"`, `"100KB/s"`, or bytes): above zero.
pub fn parse_rate(s: &str) -> Result<u64, String> {
    match config::parse_bytes(s.trim_end_matches("/s"))? {
        0 => Err("a rate must be above zero".into()),
        n => Ok(n),
    }
}

impl SeedSettings {
    /// Resolves every `seed` option: `flags` (command line or environment) first, then
    /// the file's `[seed]` table, then the defaults. Errors name the bad key of the file.
    pub fn resolve(flags: &SeedFlags, file: &SeedFile) -> Result<Self> {
        let mut sources = BTreeMap::new();
        let mut pick = |name: &'static str, flag: bool, in_file: bool| {
            let (layer, source) = if flag {
                let s = match flags.from_environment.get(name) {
                    Some(var) => Source::Environment(var.clone()),
                    None => Source::CommandLine,
                };
                (Layer::Flag, s)
            } else if in_file {
                (Layer::File, Source::File)
            } else {
                (Layer::Default, Source::Default)
            };
            sources.insert(name, source);
            layer
        };
        let bad = |key: &str, e: String| anyhow::anyhow!("[seed] {key}: {e}");
        let rate = |key: &str, v: &ByteValue| match v {
            ByteValue::Bytes(0) => Err(bad(key, "a rate must be above zero".into())),
            ByteValue::Bytes(n) => Ok(*n),
            ByteValue::Text(t) => parse_rate(t).map_err(|e| bad(key, e)),
        };

        let listen = match pick("listen", flags.listen.is_some(), file.listen.is_some()) {
            Layer::Flag => flags.listen.unwrap(),
            Layer::File => crate::node::resolve_addr(file.listen.as_deref().unwrap())
                .map_err(|e| bad("listen", e))?,
            Layer::Default => {
                crate::node::resolve_addr(config::LISTEN_DEFAULT).map_err(anyhow::Error::msg)?
            }
        };
        let shards = match pick("shards", flags.shards.is_some(), file.shards.is_some()) {
            Layer::Flag => flags.shards,
            Layer::File => match file.shards {
                Some(0) => return Err(bad("shards", "must be at least 1".into())),
                n => n,
            },
            Layer::Default => None,
        };
        // A list of `HOST:PORT`s from the file, resolved now (a flag's were by clap).
        let resolve_all = |key: &str, list: &Option<Vec<String>>| {
            list.iter()
                .flatten()
                .map(|a| crate::node::resolve_addr(a).map_err(|e| bad(key, e)))
                .collect::<Result<Vec<SocketAddr>>>()
        };
        let bootstrap =
            match pick("bootstrap", !flags.bootstrap.is_empty(), file.bootstrap.is_some()) {
                Layer::Flag => flags.bootstrap.clone(),
                Layer::File => resolve_all("bootstrap", &file.bootstrap)?,
                Layer::Default => Vec::new(),
            };
        let max_upload_rate = match pick(
            "max_upload_rate",
            flags.max_upload_rate.is_some(),
            file.max_upload_rate.is_some(),
        ) {
            Layer::Flag => flags.max_upload_rate,
            Layer::File => Some(rate("max_upload_rate", file.max_upload_rate.as_ref().unwrap())?),
            Layer::Default => None,
        };
        let max_peer_upload_rate = match pick(
            "max_peer_upload_rate",
            flags.max_peer_upload_rate.is_some(),
            file.max_peer_upload_rate.is_some(),
        ) {
            Layer::Flag => flags.max_peer_upload_rate,
            Layer::File => {
                Some(rate("max_peer_upload_rate", file.max_peer_upload_rate.as_ref().unwrap())?)
            }
            Layer::Default => None,
        };
        let encryption =
            match pick("encryption", flags.encryption.is_some(), file.encryption.is_some()) {
                Layer::Flag => flags.encryption.unwrap(),
                Layer::File => parse_encryption(file.encryption.as_deref().unwrap())
                    .map_err(|e| bad("encryption", e))?,
                Layer::Default => Encryption::On,
            };
        let (api, api_is_default) = match pick("api", flags.api.is_some(), file.api.is_some()) {
            Layer::Flag => (flags.api.unwrap(), false),
            Layer::File => {
                (parse_api(file.api.as_deref().unwrap()).map_err(|e| bad("api", e))?, false)
            }
            Layer::Default => (
                Some(
                    crate::node::resolve_addr(config::API_LISTEN_DEFAULT)
                        .map_err(anyhow::Error::msg)?,
                ),
                true,
            ),
        };
        let http = match pick("http", flags.http.is_some(), file.http.is_some()) {
            Layer::Flag => flags.http.unwrap(),
            Layer::File => parse_api(file.http.as_deref().unwrap()).map_err(|e| bad("http", e))?,
            Layer::Default => None,
        };
        let network_secret = match pick(
            "network_secret",
            flags.network_secret.is_some(),
            file.network_secret.is_some(),
        ) {
            Layer::Flag => flags.network_secret.clone(),
            Layer::File => file.network_secret.clone(),
            Layer::Default => None,
        };
        let webrtc = match pick("webrtc", flags.webrtc.is_some(), file.webrtc.is_some()) {
            Layer::Flag => flags.webrtc,
            Layer::File => Some(
                crate::node::resolve_addr(file.webrtc.as_deref().unwrap())
                    .map_err(|e| bad("webrtc", e))?,
            ),
            Layer::Default => None,
        };
        let stun = match pick("stun", !flags.stun.is_empty(), file.stun.is_some()) {
            Layer::Flag => flags.stun.clone(),
            Layer::File => resolve_all("stun", &file.stun)?,
            Layer::Default => Vec::new(),
        };
        let turn_addr = match pick("turn", flags.turn.is_some(), file.turn.is_some()) {
            Layer::Flag => flags.turn,
            Layer::File => Some(
                crate::node::resolve_addr(file.turn.as_deref().unwrap())
                    .map_err(|e| bad("turn", e))?,
            ),
            Layer::Default => None,
        };
        // Credentials from the command line or the environment first, else the file's.
        let flag_creds = flags.turn_user.is_some() || flags.turn_credentials.is_some();
        let (turn_user, turn_credentials) = if flag_creds {
            (flags.turn_user.clone(), flags.turn_credentials.clone())
        } else {
            (file.turn_user.clone(), file.turn_credentials.clone())
        };
        let turn = turn_addr
            .map(|a| {
                turn_server(
                    a,
                    turn_user.as_deref(),
                    flags.turn_password.as_ref().map(crate::node::TurnPassword::expose),
                    turn_credentials.as_deref(),
                )
            })
            .transpose()?;
        let turn_credentials = turn.as_ref().and(turn_credentials);
        Ok(Self {
            listen,
            shards,
            bootstrap,
            max_upload_rate,
            max_peer_upload_rate,
            encryption,
            api,
            api_is_default,
            http,
            network_secret,
            webrtc,
            stun,
            turn,
            turn_credentials,
            sources,
        })
    }

    /// The settings as a `[seed]` table a configuration file could hold.
    pub fn to_table(&self) -> toml::Table {
        let mut t = toml::Table::new();
        let s = |v: String| toml::Value::String(v);
        t.insert("listen".into(), s(self.listen.to_string()));
        if let Some(n) = self.shards {
            t.insert("shards".into(), toml::Value::Integer(n as i64));
        }
        t.insert(
            "bootstrap".into(),
            toml::Value::Array(self.bootstrap.iter().map(|a| s(a.to_string())).collect()),
        );
        for (k, v) in [
            ("max_upload_rate", self.max_upload_rate),
            ("max_peer_upload_rate", self.max_peer_upload_rate),
        ] {
            if let Some(v) = v {
                t.insert(k.into(), toml::Value::Integer(v.min(i64::MAX as u64) as i64));
            }
        }
        t.insert(
            "encryption".into(),
            s(if self.encryption == Encryption::On { "on" } else { "off" }.into()),
        );
        t.insert("api".into(), s(self.api.map_or("off".into(), |a| a.to_string())));
        t.insert("http".into(), s(self.http.map_or("off".into(), |a| a.to_string())));
        if let Some(p) = &self.network_secret {
            t.insert("network_secret".into(), s(p.display().to_string()));
        }
        if let Some(w) = self.webrtc {
            t.insert("webrtc".into(), s(w.to_string()));
        }
        if !self.stun.is_empty() {
            t.insert(
                "stun".into(),
                toml::Value::Array(self.stun.iter().map(|a| s(a.to_string())).collect()),
            );
        }
        if let Some(turn) = &self.turn {
            t.insert("turn".into(), s(turn.addr.to_string()));
            match &self.turn_credentials {
                Some(p) => t.insert("turn_credentials".into(), s(p.display().to_string())),
                None => t.insert("turn_user".into(), s(turn.username.clone())),
            };
        }
        t
    }
}

/// The effective configuration as the text of a configuration file: the node's knobs at
/// the top, the `[seed]` table after them, and a comment naming what was not a default.
pub fn effective_toml(file: &ConfigFile, seed: &SeedSettings) -> Result<String> {
    let mut table = toml::Table::try_from(&file.node)?;
    table.insert("seed".into(), toml::Value::Table(seed.to_table()));
    let mut out = String::from("# furymesh: effective configuration of `seed`\n");
    match &file.path {
        Some(p) => out.push_str(&format!("# configuration file: {}\n", p.display())),
        None => out.push_str("# configuration file: none (built-in defaults)\n"),
    }
    for (name, source) in &seed.sources {
        let from = match source {
            Source::Default => continue,
            Source::File => "the file".to_owned(),
            Source::CommandLine => "the command line".to_owned(),
            Source::Environment(var) => format!("the environment variable {var}"),
        };
        out.push_str(&format!("# seed.{name} from {from}\n"));
    }
    out.push('\n');
    out.push_str(&toml::to_string(&table)?);
    Ok(out)
}

/// The TURN server at `addr` with credentials from `file`, or from `user` and `password`.
pub(crate) fn turn_server(
    addr: SocketAddr,
    user: Option<&str>,
    password: Option<&str>,
    file: Option<&Path>,
) -> Result<crate::node::TurnServer> {
    match (file, user, password) {
        (Some(f), _, _) => crate::node::TurnServer::from_credentials_file(addr, f)
            .with_context(|| format!("TURN credentials {}", f.display())),
        (None, Some(u), Some(p)) => {
            Ok(crate::node::TurnServer::new(addr, u.to_owned(), p.to_owned()))
        }
        _ => bail!(
            "--turn {addr} needs credentials: --turn-credentials FILE, or --turn-user with \
             --turn-password (or FURYMESH_TURN_PASSWORD)"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_then_flags_then_defaults() {
        let file = ConfigFile::parse(
            "peer_timeout_ms = 3000\n[seed]\nlisten = \"127.0.0.1:9000\"\nmax_upload_rate = \"8MiB\"\nencryption = \"off\"\napi = \"off\"\nhttp = \"127.0.0.1:9080\"\n",
        )
        .unwrap();
        assert_eq!(file.node.peer_timeout_ms, 3000);
        let flags =
            SeedFlags { listen: Some("127.0.0.1:9100".parse().unwrap()), ..Default::default() };
        let s = SeedSettings::resolve(&flags, &file.seed).unwrap();
        assert_eq!(s.listen, "127.0.0.1:9100".parse::<SocketAddr>().unwrap());
        assert_eq!(s.sources["listen"], Source::CommandLine);
        assert_eq!(s.max_upload_rate, Some(8 << 20));
        assert_eq!(s.sources["max_upload_rate"], Source::File);
        assert_eq!(s.encryption, Encryption::Off);
        assert_eq!(s.api, None);
        assert_eq!(s.http, Some("127.0.0.1:9080".parse().unwrap()));
        assert_eq!(s.sources["http"], Source::File);
        assert_eq!(s.shards, None);
        assert_eq!(s.sources["shards"], Source::Default);
        let from_env = SeedFlags {
            shards: Some(2),
            from_environment: [("shards".to_owned(), "FURYMESH_SHARDS".to_owned())].into(),
            ..Default::default()
        };
        let e = SeedSettings::resolve(&from_env, &file.seed).unwrap();
        assert_eq!(e.sources["shards"], Source::Environment("FURYMESH_SHARDS".into()));
        assert!(effective_toml(&file, &e)
            .unwrap()
            .contains("# seed.shards from the environment variable FURYMESH_SHARDS"));
        // What `furymesh config` prints reads back as the same settings.
        let text = effective_toml(&file, &s).unwrap();
        let again = ConfigFile::parse(&text).unwrap();
        let s2 = SeedSettings::resolve(&SeedFlags::default(), &again.seed).unwrap();
        assert_eq!(
            (s2.listen, s2.max_upload_rate, s2.api, s2.http),
            (s.listen, s.max_upload_rate, s.api, s.http)
        );
        assert_eq!(again.node, file.node);
    }

    #[test]
    fn turn_credentials_come_from_flags_or_a_file_and_the_password_is_never_shown() {
        let dir = tempfile::tempdir().unwrap();
        let creds = dir.path().join("turn");
        std::fs::write(&creds, "alice\ns3cret-pw\n").unwrap();
        let file = ConfigFile::parse(&format!(
            "[seed]\nturn = \"192.0.2.1:3478\"\nturn_credentials = \"{}\"\n",
            creds.display()
        ))
        .unwrap();
        let s = SeedSettings::resolve(&SeedFlags::default(), &file.seed).unwrap();
        let turn = s.turn.clone().unwrap();
        assert_eq!((turn.addr.port(), turn.username.as_str()), (3478, "alice"));
        assert_eq!(s.sources["turn"], Source::File);
        let shown = serde_json::to_string(&s).unwrap() + &effective_toml(&file, &s).unwrap();
        assert!(shown.contains("alice@192.0.2.1:3478") && !shown.contains("s3cret-pw"));
        // The effective configuration reads back as the same relay.
        let again = ConfigFile::parse(&effective_toml(&file, &s).unwrap()).unwrap();
        let s2 = SeedSettings::resolve(&SeedFlags::default(), &again.seed).unwrap();
        assert_eq!(s2.turn, s.turn);
        // A user from the file, the password from the environment (a flag).
        let file =
            ConfigFile::parse("[seed]\nturn = \"192.0.2.1:3478\"\nturn_user = \"bob\"\n").unwrap();
        let flags = SeedFlags { turn_password: Some("pw".parse().unwrap()), ..Default::default() };
        assert!(!format!("{flags:?}").contains("\"pw\""));
        let s = SeedSettings::resolve(&flags, &file.seed).unwrap();
        assert_eq!(s.turn.unwrap().username, "bob");
        // A server without credentials is an error, not an anonymous allocation.
        assert!(SeedSettings::resolve(&SeedFlags::default(), &file.seed).is_err());
        let flags =
            SeedFlags { turn: Some("192.0.2.1:3478".parse().unwrap()), ..Default::default() };
        assert!(SeedSettings::resolve(&flags, &SeedFile::default()).is_err());
    }

    #[test]
    fn bad_files_name_the_key() {
        let err = |t: &str| {
            let e = ConfigFile::parse(t)
                .and_then(|f| SeedSettings::resolve(&SeedFlags::default(), &f.seed))
                .unwrap_err();
            format!("{e:#}")
        };
        assert!(err("[seed]\nlisten = \"nowhere\"\n").contains("listen"));
        assert!(err("[seed]\nlisten_on = \"1.2.3.4:1\"\n").contains("listen_on"));
        assert!(err("[seed]\nmax_upload_rate = 0\n").contains("max_upload_rate"));
        assert!(err("[seed]\nencryption = \"maybe\"\n").contains("encryption"));
        assert!(err("seed = 3\n").contains("seed"));
        assert!(err("peer_timeout_ms = 1\n").contains("peer_timeout_ms"));
        assert!(err("no_such_knob = 1\n").contains("no_such_knob"));
    }
}
