//! `flowtrace agent` and `flowtrace collect`: per-host agents publish records of
//! their HTTP exchanges to NATS JetStream; one collector merges every host's stream
//! into the streaming engine (docs/live.md, "Several hosts").
//!
//! **Stream.** One JetStream stream per deployment (`--stream`, default `FLOWTRACE`)
//! with subjects per host: `flowtrace.<host>.records` (the envelopes of
//! `flowtrace::remote`) and `flowtrace.<host>.hello` (the host's interfaces, read by
//! the collector when it starts); the first token is the stream's name in lower case,
//! since two streams on one server may not share subjects. File storage, so records
//! survive a server restart.
//!
//! **Delivery.** The agent publishes one envelope at a time and waits for the
//! server's acknowledgement; a failed publish is retried with the same `Nats-Msg-Id`,
//! so a publish that did land is dropped by the stream's duplicate window. Between the
//! capture and the publisher sits a bounded queue: live, a full queue drops envelopes
//! (counted, and the count is sent); replaying a file, the reader waits.
//!
//! **Restarts of the collector.** The engine's state (clock estimates, rarity of
//! header values, summaries) is not something a consumer's acknowledgement can
//! restore, so the collector rebuilds it by reading the stream from its start
//! (an ordered consumer) and keeps, beside `-o FILE`, a checkpoint of how many paths
//! and bytes it had written and flushed (`FILE.state`). Restarted, it truncates the
//! file to the checkpoint, skips that many paths of the replay and goes on: the
//! replay releases envelopes in the same order (by time, then host), so it makes
//! the same paths in the same order. Envelopes already taken (a redelivery) are
//! skipped by their (run, number).
//!
//! **Secrets.** Credentials come from a file (`--creds FILE` or
//! `FLOWTRACE_NATS_CREDS`): a `.creds` file (JWT and nkey seed) or an nkey seed file.
//! A URL with a user or password is refused: argv is readable by every user of the
//! host (`ps`, `/proc/PID/cmdline`) and stays in shell history. Nothing secret is
//! printed.

use super::live::{Capture, LiveCaptureArgs};
use super::stream::BatchSink;
use super::{html, selection, DrawArgs, FormatArg, PcapArgs};
use anyhow::{anyhow, bail, Context as _, Result};
use async_nats::jetstream::{self, stream};
use flowtrace::anomaly::{AnomalyLog, Stats};
use flowtrace::correlate::{Engine, EngineConfig, RequestPath};
use flowtrace::links::HostLinks;
use flowtrace::pipeline::{Pipeline, PipelineConfig};
use flowtrace::remote::{self, AgentBatcher, Envelope, HostEvent, Merger, SegmentPolicy};
use flowtrace::render::paths::PathWriter;
use flowtrace::render::{sanitize, Format};
use flowtrace::time::Ts;
use futures_util::StreamExt;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Where agents and the collector meet.
#[derive(clap::Args, Debug, Clone)]
pub(crate) struct NatsArgs {
    /// NATS server URL (nats://HOST:PORT, or tls://HOST:PORT for TLS). No user or
    /// password in it: use --creds.
    #[arg(long, value_name = "URL")]
    nats: String,
    /// NATS credentials: a .creds file (JWT and nkey seed) or an nkey seed file.
    /// Default: the file named by FLOWTRACE_NATS_CREDS, if set.
    #[arg(long, value_name = "FILE")]
    creds: Option<PathBuf>,
    /// CA certificate (PEM) to verify a tls:// server with, besides the system's.
    #[arg(long, value_name = "FILE")]
    tls_ca: Option<PathBuf>,
    /// JetStream stream of the deployment (one per deployment; subjects per host).
    #[arg(long, default_value = "FLOWTRACE", value_name = "NAME")]
    stream: String,
}

impl NatsArgs {
    /// The subjects' first token: the stream's name in lower case (`FLOWTRACE` ->
    /// `flowtrace.<host>.records`), so that two deployments on one server, whose
    /// streams may not share subjects, differ by `--stream` alone.
    fn prefix(&self) -> Result<String> {
        let name = &self.stream;
        if name.is_empty()
            || name.len() > 32
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            bail!(
                "--stream {:?}: use 1 to 32 letters, digits, '-' or '_'",
                sanitize(name)
            );
        }
        Ok(name.to_ascii_lowercase())
    }

    fn subject(&self, host: &str, kind: &str) -> Result<String> {
        Ok(format!("{}.{host}.{kind}", self.prefix()?))
    }
}

#[derive(clap::Args, Debug)]
pub(crate) struct AgentArgs {
    #[command(flatten)]
    nats: NatsArgs,
    /// This host's name in the paths (letters, digits, `-` and `_`).
    #[arg(long, value_name = "NAME")]
    host: String,
    /// Replay this capture file as if it were captured live (instead of interfaces).
    #[arg(long, value_name = "FILE", conflicts_with_all = ["interfaces", "filter", "write"])]
    read: Option<PathBuf>,
    /// Interface names for an SLL2 capture given with --read (`ip -j addr` output);
    /// default: `<capture>.links.json` beside it.
    #[arg(long, value_name = "FILE", requires = "read")]
    links: Option<PathBuf>,
    #[command(flatten)]
    capture: LiveCaptureArgs,
    /// Envelopes held while the server is unreachable (live: past it they are
    /// dropped and counted; replaying a file, reading waits).
    #[arg(long, default_value_t = 1024, value_name = "N")]
    buffer: usize,
    /// Which exchanges carry segment summaries (for the collector's ladders and
    /// swimlanes): none, selected (failed, slow, one in 64), all.
    #[arg(long, value_enum, default_value_t = SegmentsArg::Selected)]
    segments: SegmentsArg,
    /// How long records stay in the stream (when this agent creates it).
    #[arg(long, default_value_t = 86_400.0, value_name = "SECS")]
    retention: f64,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum SegmentsArg {
    None,
    Selected,
    All,
}

#[derive(clap::Args, Debug)]
pub(crate) struct CollectArgs {
    #[command(flatten)]
    nats: NatsArgs,
    /// Output format: text, json (one document) or jsonl.
    #[arg(long, value_enum, default_value_t = FormatArg::Text)]
    format: FormatArg,
    /// Write paths to FILE instead of stdout; a checkpoint beside it (FILE.state)
    /// lets a restarted collector go on without repeating or losing a path.
    #[arg(short, long, value_name = "FILE")]
    output: Option<PathBuf>,
    /// At the end, draw diagrams into DIR (default: ./flowtrace-diagrams).
    #[arg(long, value_name = "DIR", num_args = 0..=1, default_missing_value = super::DEFAULT_SVG_DIR)]
    svg: Option<PathBuf>,
    /// At the end, write the HTML report to FILE.
    #[arg(long, value_name = "FILE")]
    html: Option<PathBuf>,
    /// Stop (and write the summary) after SECS without a new record.
    #[arg(long, value_name = "SECS")]
    exit_when_idle: Option<f64>,
    /// A host silent this long (wall clock) while others are heard from stops
    /// holding their paths back and is reported late.
    #[arg(long, default_value_t = 10.0, value_name = "SECS")]
    max_host_lag: f64,
    /// How long to wait at the start for a first host to announce itself.
    #[arg(long, default_value_t = 60.0, value_name = "SECS")]
    wait_hosts: f64,
    /// Memory for the collector's state, in bytes (suffixes K, M, G in powers of
    /// 1024: 512M, 1G). Correlation's in-flight exchanges take at most half (the
    /// collector keeps no TCP state; the rest is for the records being merged, the
    /// diagrams' selection and output buffers): past it, a round decides everything
    /// that has arrived, counted in `forced_rounds`.
    #[arg(long, default_value = "512M", value_name = "BYTES", value_parser = super::parse_bytes)]
    memory_budget: u64,
    #[command(flatten)]
    times: super::TimeArgs,
}

/// The collector's engine: correlation's in-flight exchanges bounded by half of
/// `memory_budget` (`--memory-budget`), counted in exchanges and in bytes.
fn collect_engine_config(memory_budget: u64) -> EngineConfig {
    let defaults = EngineConfig::default();
    let fit = super::exchanges_within(memory_budget / 2, defaults.max_open_exchanges);
    EngineConfig {
        max_open_exchanges: fit,
        max_open_bytes: fit * flowtrace::correlate::engine::EXCHANGE_BYTES,
        ..defaults
    }
}

fn wall() -> Ts {
    Ts(std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64))
}

/// A host name is a subject token: nothing that would change the subject.
fn check_host(host: &str) -> Result<()> {
    if host.is_empty()
        || host.len() > 64
        || !host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        bail!(
            "--host {:?}: use 1 to 64 letters, digits, '-' or '_' (it is part of a NATS subject)",
            sanitize(host)
        );
    }
    Ok(())
}

/// Refuses a URL carrying credentials (argv and shell history are not secret).
fn check_url(url: &str) -> Result<()> {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?']).next().unwrap_or("");
    if authority.contains('@') {
        bail!(
            "--nats: the URL carries a user or password; the command line is readable by \
             every user of this host (ps, /proc/PID/cmdline) and stays in shell history: \
             put the credentials in a file and give --creds FILE (or FLOWTRACE_NATS_CREDS)"
        );
    }
    Ok(())
}

/// Connects, retrying for 30 s while no server answers (an agent started before its
/// server); a server that refuses the credentials, or TLS that fails, ends it at once
/// with what to check.
async fn connect(args: &NatsArgs, name: &str) -> Result<jetstream::Context> {
    use async_nats::ConnectErrorKind as Kind;
    check_url(&args.nats)?;
    let creds = args
        .creds
        .clone()
        .or_else(|| std::env::var_os("FLOWTRACE_NATS_CREDS").map(PathBuf::from));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let opts = options(args, name, creds.as_deref()).await?;
        let e = match opts.connect(args.nats.as_str()).await {
            Ok(client) => return Ok(jetstream::new(client)),
            Err(e) => e,
        };
        // rustls' refusal of the server's certificate comes as an I/O error.
        let tls = e.kind() == Kind::Tls || e.to_string().contains("certificate");
        match e.kind() {
            _ if tls => bail!(
                "TLS with the NATS server at {} failed ({e:#}): a server certificate from a \
                 private CA needs --tls-ca FILE",
                args.nats
            ),
            Kind::AuthorizationViolation | Kind::Authentication => bail!(
                "the NATS server at {} refused this client ({e}): {}",
                args.nats,
                if creds.is_some() {
                    "the credentials file is not one the server accepts"
                } else {
                    "it requires credentials: give --creds FILE (or FLOWTRACE_NATS_CREDS)"
                }
            ),
            _ if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            _ => {
                return Err(anyhow::Error::new(e).context(format!(
                    "no NATS server answered at {} within 30 s",
                    args.nats
                )))
            }
        }
    }
}

/// The client's options: name, timeouts, credentials, TLS.
async fn options(
    args: &NatsArgs,
    name: &str,
    creds: Option<&Path>,
) -> Result<async_nats::ConnectOptions> {
    let mut opts = async_nats::ConnectOptions::new()
        .name(name)
        .connection_timeout(Duration::from_secs(5));
    if let Some(path) = creds {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the credentials file {}", path.display()))?;
        if text.contains("BEGIN NATS USER JWT") {
            opts = opts
                .credentials_file(path)
                .await
                .with_context(|| format!("{}: not a NATS credentials file", path.display()))?;
        } else {
            let seed = text.trim();
            if !seed.starts_with("SU") {
                bail!(
                    "{}: neither a .creds file nor an nkey user seed (SU...)",
                    path.display()
                );
            }
            opts = opts.nkey(seed.to_string());
        }
    }
    if args.nats.starts_with("tls://") {
        opts = opts.require_tls(true);
    }
    if let Some(ca) = &args.tls_ca {
        if !ca.is_file() {
            bail!("--tls-ca {}: no such file", ca.display());
        }
        opts = opts.add_root_certificates(ca.clone());
    }
    Ok(opts)
}

/// The deployment's stream, created when missing.
async fn ensure_stream(
    js: &jetstream::Context,
    args: &NatsArgs,
    retention: f64,
) -> Result<stream::Stream> {
    let name = &args.stream;
    js.get_or_create_stream(stream::Config {
        name: name.to_string(),
        subjects: vec![args.subject("*", "records")?, args.subject("*", "hello")?],
        storage: stream::StorageType::File,
        max_age: Duration::from_secs_f64(retention),
        // A re-sent envelope (a publish retried after a lost acknowledgement, a
        // restarted --read replay) within this window is dropped by the server.
        duplicate_window: Duration::from_secs(600),
        ..Default::default()
    })
    .await
    .with_context(|| format!("cannot open or create the JetStream stream {name}"))
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the NATS client's runtime")
}

/// The capture side's end of the publisher's queue.
struct Outbox {
    batcher: AgentBatcher,
    tx: SyncSender<Envelope>,
    /// Live: drop when full (counted); replay: wait.
    wait: bool,
    dropped: Arc<AtomicU64>,
    /// Batches offered since the last envelope, and when that was (live).
    offered: u32,
    last_envelope: Instant,
}

/// Live, the capture loop offers a batch every 256 packets and every 100 ms (as for
/// `flowtrace live`'s engine); an agent makes an envelope of every
/// `BATCHES_PER_ENVELOPE` of them (4,096 packets), or of what came in 100 ms. Each
/// envelope is published and acknowledged before the next: at the lab's maximum
/// rate server A's agent made 144 envelopes a second of 256 packets, the
/// acknowledgements could not keep up under load, and the queue (and the paths'
/// delay) grew through the run.
const BATCHES_PER_ENVELOPE: u32 = 16;
/// The longest a live agent holds what completed before it makes an envelope.
const ENVELOPE_EVERY: Duration = Duration::from_millis(100);

impl Outbox {
    fn put(&mut self, env: Envelope) -> bool {
        if self.wait {
            return self.tx.send(env).is_ok();
        }
        match self.tx.try_send(env) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                true
            }
            Err(TrySendError::Disconnected(_)) => false,
        }
    }
}

impl BatchSink for Outbox {
    fn send(&mut self, p: &mut Pipeline, now: Ts, last: bool) -> bool {
        self.offered += 1;
        if !last
            && self.offered < BATCHES_PER_ENVELOPE
            && self.last_envelope.elapsed() < ENVELOPE_EVERY
        {
            return true;
        }
        self.offered = 0;
        self.last_envelope = Instant::now();
        let dropped = self.dropped.load(Ordering::Relaxed);
        let env = self.batcher.envelope(p, now, wall(), last, dropped);
        self.put(env)
    }
}

/// Publishes envelopes in order, each acknowledged before the next; retries a
/// failed one (same message id) until it lands or `stop` is set.
fn publish_all(
    rt: &tokio::runtime::Runtime,
    js: &jetstream::Context,
    nats: &NatsArgs,
    rx: Receiver<Envelope>,
    stop: &AtomicBool,
) -> Result<u64> {
    let mut sent = 0u64;
    while let Ok(env) = rx.recv() {
        let subject = nats.subject(&env.host, "records")?;
        let id = remote::message_id(&env);
        let payload = remote::encode(&env)?;
        let mut delay = Duration::from_millis(100);
        loop {
            let attempt = rt.block_on(async {
                let ack = js
                    .send_publish(
                        subject.clone(),
                        jetstream::message::PublishMessage::build()
                            .payload(payload.clone().into())
                            .message_id(id.clone()),
                    )
                    .await?;
                tokio::time::timeout(Duration::from_secs(2), ack)
                    .await
                    .map_err(|_| anyhow!("no acknowledgement within 2 s"))?
                    .map_err(anyhow::Error::from)
            });
            match attempt {
                Ok(_) => break,
                Err(e) if !stop.load(Ordering::Relaxed) => {
                    eprintln!("flowtrace: warning: publish failed, retrying: {e:#}");
                    std::thread::sleep(delay);
                    delay = (delay * 2).min(Duration::from_secs(2));
                }
                Err(e) => return Err(e.context("publish failed while stopping")),
            }
        }
        sent += 1;
    }
    Ok(sent)
}

/// The run id of a replay: the same file replayed again is the same run, so its
/// envelopes have the same message ids and the stream drops the re-sends.
fn replay_run(host: &str, path: &Path) -> Result<u64> {
    use std::hash::{Hash, Hasher};
    let meta =
        std::fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut h = rustc_hash::FxHasher::default();
    host.hash(&mut h);
    path.canonicalize()
        .unwrap_or_else(|_| path.to_path_buf())
        .hash(&mut h);
    meta.len().hash(&mut h);
    meta.modified()
        .ok()
        .and_then(|m| m.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_nanos())
        .hash(&mut h);
    Ok(h.finish())
}

pub(crate) fn agent(args: AgentArgs) -> Result<ExitCode> {
    check_host(&args.host)?;
    if !args.retention.is_finite() || args.retention <= 0.0 {
        bail!("--retention must be a positive number of seconds");
    }
    if args.buffer == 0 {
        bail!("--buffer must be at least 1");
    }
    let segments = match args.segments {
        SegmentsArg::None => SegmentPolicy::None,
        SegmentsArg::Selected => SegmentPolicy::Selected,
        SegmentsArg::All => SegmentPolicy::All,
    };
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    ctrlc::set_handler(move || flag.store(true, Ordering::Relaxed))
        .context("cannot install the Ctrl-C handler")?;
    let rt = runtime()?;
    let js = rt.block_on(async {
        let js = connect(&args.nats, &format!("flowtrace agent {}", args.host)).await?;
        ensure_stream(&js, &args.nats, args.retention).await?;
        Ok::<_, anyhow::Error>(js)
    })?;
    let (tx, rx) = sync_channel::<Envelope>(args.buffer);
    let dropped = Arc::new(AtomicU64::new(0));
    let max_wait = 30_000_000_000;
    let (sent, dropped_n) = std::thread::scope(|scope| -> Result<(u64, u64)> {
        let publisher = scope.spawn(|| publish_all(&rt, &js, &args.nats, rx, &stop));
        let captured = (|| -> Result<()> {
            match &args.read {
                Some(path) => {
                    let links = match &args.links {
                        Some(l) => Some(HostLinks::load(l)?),
                        None => flowtrace::links::find_beside(path)
                            .map(|p| HostLinks::load(&p))
                            .transpose()?,
                    };
                    let run = replay_run(&args.host, path)?;
                    let mut batcher = AgentBatcher::new(
                        &args.host,
                        run,
                        links.clone().unwrap_or_default(),
                        max_wait,
                        segments,
                    );
                    hello(
                        &rt,
                        &js,
                        &args.nats,
                        &batcher_hello(&args.host, run, links.clone()),
                    )?;
                    let txr = tx.clone();
                    let config = PipelineConfig {
                        links: vec![links],
                        ..args.capture.limits.pipeline_config(
                            args.capture.idle_timeout,
                            0,
                            segments != SegmentPolicy::None,
                        )
                    };
                    // Replaying a file, the reader waits for the publisher.
                    remote::read_capture(path, &mut batcher, config, |env| txr.send(env).is_ok())
                        .with_context(|| format!("cannot read {}", path.display()))?;
                    Ok(())
                }
                None => live_agent(
                    &args,
                    &rt,
                    &js,
                    &stop,
                    tx.clone(),
                    dropped.clone(),
                    segments,
                ),
            }
        })();
        drop(tx);
        let sent = publisher
            .join()
            .map_err(|_| anyhow!("the publisher thread panicked"))??;
        captured?;
        Ok((sent, dropped.load(Ordering::Relaxed)))
    })?;
    eprintln!(
        "flowtrace: agent {}: {sent} envelopes published, {dropped_n} dropped (buffer full)",
        sanitize(&args.host)
    );
    Ok(ExitCode::SUCCESS)
}

fn batcher_hello(host: &str, run: u64, links: Option<HostLinks>) -> Envelope {
    Envelope {
        version: remote::RECORD_VERSION,
        host: host.to_string(),
        run,
        seq: 0,
        sent_wall: wall().0,
        now: 0,
        pending: None,
        last: false,
        items: vec![remote::Item::Hello(remote::Hello {
            agent_version: env!("CARGO_PKG_VERSION").to_string(),
            links: links.unwrap_or_default(),
        })],
    }
}

/// Publishes the host's interfaces on its hello subject (the collector reads the
/// latest when it starts).
fn hello(
    rt: &tokio::runtime::Runtime,
    js: &jetstream::Context,
    nats: &NatsArgs,
    env: &Envelope,
) -> Result<()> {
    let payload = remote::encode(env)?;
    let subject = nats.subject(&env.host, "hello")?;
    rt.block_on(async {
        js.publish(subject, payload.into()).await?.await?;
        Ok::<_, anyhow::Error>(())
    })
    .context("cannot publish this host's interfaces")
}

#[cfg(feature = "live")]
fn live_agent(
    args: &AgentArgs,
    rt: &tokio::runtime::Runtime,
    js: &jetstream::Context,
    stop: &Arc<AtomicBool>,
    tx: SyncSender<Envelope>,
    dropped: Arc<AtomicU64>,
    segments: SegmentPolicy,
) -> Result<()> {
    let mut interfaces = args.capture.interfaces.clone();
    if interfaces.is_empty() {
        interfaces.push("any".into());
    }
    let (mut capture, links) = Capture::open(
        &args.capture,
        interfaces,
        &args.host,
        0,
        segments != SegmentPolicy::None,
        stop.clone(),
        false,
    )?;
    // A live run is new every time: its start names it.
    let run = wall().0 as u64;
    hello(
        rt,
        js,
        &args.nats,
        &batcher_hello(&args.host, run, Some(links.clone())),
    )?;
    let mut out = Outbox {
        batcher: AgentBatcher::new(&args.host, run, links, 30_000_000_000, segments),
        tx,
        wait: false,
        dropped,
        offered: 0,
        last_envelope: Instant::now(),
    };
    let paths = AtomicUsize::new(0);
    let hung_up = capture.read(&args.capture, stop, &mut out, &paths)?;
    capture.pipeline.finish();
    if !hung_up {
        out.send(&mut capture.pipeline, capture.latest, true);
    }
    let Capture { source, saver, .. } = capture;
    let (stats, errors) = source.finish();
    if let Some(w) = saver {
        w.finish()?;
    }
    for s in &stats {
        eprintln!(
            "interface {}: {} received, {} dropped by the kernel, {} by the interface",
            sanitize(&s.name),
            s.received,
            s.dropped,
            s.if_dropped
        );
    }
    for e in &errors {
        eprintln!("flowtrace: warning: a capture ended: {e:#}");
    }
    Ok(())
}

#[cfg(not(feature = "live"))]
fn live_agent(
    _: &AgentArgs,
    _: &tokio::runtime::Runtime,
    _: &jetstream::Context,
    _: &Arc<AtomicBool>,
    _: SyncSender<Envelope>,
    _: Arc<AtomicU64>,
    _: SegmentPolicy,
) -> Result<()> {
    bail!("this flowtrace was built without live capture (feature `live`): use --read FILE")
}

/// The collector's checkpoint beside `-o FILE`.
#[derive(serde::Serialize, serde::Deserialize, Debug, Default)]
struct Checkpoint {
    /// Paths written and flushed.
    paths: usize,
    /// Length of the output file then.
    bytes: u64,
}

fn state_path(output: &Path) -> PathBuf {
    let mut name = output.file_name().unwrap_or_default().to_os_string();
    name.push(".state");
    output.with_file_name(name)
}

fn save_checkpoint(path: &Path, c: &Checkpoint) -> Result<()> {
    let tmp = path.with_extension("state.tmp");
    std::fs::write(&tmp, serde_json::to_vec(c)?)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))
}

/// The hosts that announced themselves, in name order, with their interfaces.
async fn hosts(
    nats: &NatsArgs,
    stream: &mut stream::Stream,
) -> Result<Vec<(String, Option<HostLinks>)>> {
    let mut subjects = stream
        .info_with_subjects(nats.subject("*", "hello")?)
        .await
        .context("cannot list the hosts of the stream")?;
    let mut names = Vec::new();
    while let Some(s) = subjects.next().await {
        let (subject, _) = s.context("cannot list the hosts of the stream")?;
        if let Some(host) = subject
            .strip_prefix(&format!("{}.", nats.prefix()?))
            .and_then(|s| s.strip_suffix(".hello"))
        {
            names.push(host.to_string());
        }
    }
    names.sort();
    let mut out = Vec::new();
    for host in names {
        let links = host_links(nats, stream, &host).await?;
        out.push((host, links));
    }
    Ok(out)
}

/// The interfaces `host` announced last on its hello subject (`None` when it has not
/// or they do not decode: the host is still merged, without naming its addresses).
async fn host_links(
    nats: &NatsArgs,
    stream: &stream::Stream,
    host: &str,
) -> Result<Option<HostLinks>> {
    let subject = nats.subject(host, "hello")?;
    let last = tokio::time::timeout(
        Duration::from_secs(5),
        stream.get_last_raw_message_by_subject(&subject),
    )
    .await;
    Ok(match last {
        Ok(Ok(m)) => match remote::decode(&m.payload) {
            Ok(env) => env.items.into_iter().find_map(|i| match i {
                remote::Item::Hello(h) => Some(h.links),
                _ => None,
            }),
            Err(e) => {
                eprintln!("flowtrace: warning: host {}: {e}", sanitize(host));
                None
            }
        },
        _ => None,
    })
}

pub(crate) fn collect(args: CollectArgs) -> Result<ExitCode> {
    super::check_svg_dir(&args.svg)?;
    let lag = super::secs_ns("max-host-lag", args.max_host_lag)?;
    let idle = args
        .exit_when_idle
        .map(|s| super::secs_ns("exit-when-idle", s).map(|ns| Duration::from_nanos(ns as u64)))
        .transpose()?;
    let wait_hosts = Duration::from_nanos(super::secs_ns("wait-hosts", args.wait_hosts)? as u64);
    let format = match args.format {
        FormatArg::Text => Format::Text,
        FormatArg::Json => Format::Json,
        FormatArg::Jsonl => Format::Jsonl,
    };
    let rt = runtime()?;
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    ctrlc::set_handler(move || flag.store(true, Ordering::Relaxed))
        .context("cannot install the Ctrl-C handler")?;
    rt.block_on(collect_async(args, format, lag, idle, wait_hosts, stop))
}

async fn collect_async(
    args: CollectArgs,
    format: Format,
    lag: i64,
    idle: Option<Duration>,
    wait_hosts: Duration,
    stop: Arc<AtomicBool>,
) -> Result<ExitCode> {
    let js = connect(&args.nats, "flowtrace collect").await?;
    let mut stream = ensure_stream(&js, &args.nats, 86_400.0).await?;
    let hosts = first_hosts(&args, &mut stream, wait_hosts, &stop).await?;
    eprintln!(
        "flowtrace: collecting from {} host(s): {}",
        hosts.len(),
        hosts
            .iter()
            .map(|(h, _)| sanitize(h))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let mut c = Collector::open(&args, format, &hosts, lag)?;
    let filter = args.nats.subject("*", "records")?;
    let mut messages = open_consumer(&stream, &filter, 1).await?;
    let mut quiet_since = Instant::now();
    let mut last_record = Instant::now();
    let mut probe = c.merger.probe.is_some().then(LoopProbe::default);
    while !stop.load(Ordering::Relaxed) && idle.is_none_or(|d| last_record.elapsed() < d) {
        let waiting = Instant::now();
        let next = tokio::time::timeout(Duration::from_millis(200), messages.next()).await;
        let took = Instant::now();
        if let Some(p) = &mut probe {
            p.wait += took - waiting;
        }
        match next {
            Ok(Some(Ok(m))) => {
                last_record = Instant::now();
                quiet_since = Instant::now();
                c.take(&args.nats, &stream, &m).await?;
                if let Some(p) = &mut probe {
                    p.take(&m, took.elapsed());
                }
            }
            Ok(Some(Err(e))) => {
                eprintln!("flowtrace: warning: reading the stream: {e}");
                tokio::time::sleep(Duration::from_millis(500)).await;
                messages = reopen(&mut stream, &filter, c.next_seq, messages).await;
                quiet_since = Instant::now();
            }
            Ok(None) => {
                tokio::time::sleep(Duration::from_millis(500)).await;
                messages = reopen(&mut stream, &filter, c.next_seq, messages).await;
                quiet_since = Instant::now();
            }
            // Quiet for a while: if the stream holds records beyond what was read
            // (the consumer did not survive a server restart), read on anew.
            Err(_) if quiet_since.elapsed() >= Duration::from_secs(2) => {
                quiet_since = Instant::now();
                let behind = match stream.info().await {
                    Ok(i) => i.state.last_sequence >= c.next_seq,
                    Err(_) => false,
                };
                if behind {
                    eprintln!(
                        "flowtrace: warning: the stream has records the consumer does not deliver; reading on from sequence {}",
                        c.next_seq
                    );
                    messages = reopen(&mut stream, &filter, c.next_seq, messages).await;
                }
            }
            Err(_) => {}
        }
        c.report_lag(args.max_host_lag);
        let stepping = Instant::now();
        c.step()?;
        if let Some(p) = &mut probe {
            p.stepped(stepping.elapsed());
        }
    }
    if let Some(p) = &probe {
        eprintln!("flowtrace: collector loop {}", p.summary());
    }
    c.finish(&args)
}

/// Where the collector's loop spent its wall clock (`FLOWTRACE_DELAY_STATS`):
/// waiting for the next record, taking records (decoding and merging), stepping
/// (releasing, deciding and writing), and the consumer's backlog on the server at
/// each record; with the thread's CPU time and its time waiting for a CPU.
#[derive(Default)]
struct LoopProbe {
    wait: Duration,
    taking: Duration,
    stepping: Duration,
    records: u64,
    /// Each `Collector::step`'s wall time (ns).
    step: remote::Samples,
    /// Records the server still held for the consumer as each was delivered.
    backlog: remote::Samples,
}

impl LoopProbe {
    fn take(&mut self, m: &jetstream::Message, took: Duration) {
        self.taking += took;
        self.records += 1;
        if let Ok(info) = m.info() {
            // A record counts as a second, the unit of the summary.
            self.backlog
                .push((info.pending as i64).saturating_mul(1_000_000_000));
        }
    }

    fn stepped(&mut self, took: Duration) {
        self.stepping += took;
        self.step.push(took.as_nanos() as i64);
    }

    fn summary(&self) -> serde_json::Value {
        // /proc/thread-self/schedstat: time on a CPU, time waiting on a run queue
        // (ns), time slices; the loop runs on this thread (a current-thread runtime).
        let sched: Vec<f64> = std::fs::read_to_string("/proc/thread-self/schedstat")
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|x| x.parse::<f64>().ok())
            .collect();
        serde_json::json!({
            "records": self.records,
            "wait_s": (self.wait.as_secs_f64() * 1e3).round() / 1e3,
            "take_s": (self.taking.as_secs_f64() * 1e3).round() / 1e3,
            "step_s": (self.stepping.as_secs_f64() * 1e3).round() / 1e3,
            "steps": self.step.summary(),
            "backlog_records": self.backlog.summary(),
            "thread_cpu_s": sched.first().map(|x| (x / 1e6).round() / 1e3),
            "thread_runqueue_wait_s": sched.get(1).map(|x| (x / 1e6).round() / 1e3),
        })
    }
}

/// The hosts announced when the collector starts, waiting up to `wait_hosts` for a
/// first one.
async fn first_hosts(
    args: &CollectArgs,
    stream: &mut stream::Stream,
    wait_hosts: Duration,
    stop: &AtomicBool,
) -> Result<Vec<(String, Option<HostLinks>)>> {
    let started = Instant::now();
    loop {
        let h = hosts(&args.nats, stream).await?;
        if !h.is_empty() {
            return Ok(h);
        }
        if started.elapsed() >= wait_hosts || stop.load(Ordering::Relaxed) {
            bail!(
                "no agent has announced itself on stream {} within {:?}",
                args.nats.stream,
                wait_hosts
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Most hosts one collector merges (a bound against records naming ever new hosts).
const MAX_HOSTS: usize = 1024;

type Out = PathWriter<BufWriter<Box<dyn Write>>>;

/// The collector's state between messages: the merger and engine, the outputs and
/// the checkpoint.
struct Collector {
    merger: Merger,
    engine: Engine,
    writer: Out,
    keeper: Option<flowtrace::diagram::Keeper>,
    page: Option<flowtrace::render::html::HtmlWriter>,
    /// Paths made so far (the first `skip` were written by a run before a restart).
    emitted: usize,
    skip: usize,
    state: Option<PathBuf>,
    output: Option<PathBuf>,
    /// The stream sequence of the next record to read: after a server restart or a
    /// stalled consumer, reading goes on from there with a new consumer.
    next_seq: u64,
    /// Records that did not decode.
    bad: u64,
    /// Hosts that joined after the start.
    joined: usize,
}

impl Collector {
    fn open(
        args: &CollectArgs,
        format: Format,
        hosts: &[(String, Option<HostLinks>)],
        lag: i64,
    ) -> Result<Collector> {
        // Output, resumed from the checkpoint when there is one.
        let state = args.output.as_deref().map(state_path);
        let checkpoint: Checkpoint = match &state {
            Some(s) if s.exists() => serde_json::from_slice(
                &std::fs::read(s).with_context(|| format!("cannot read {}", s.display()))?,
            )
            .with_context(|| format!("{}: not a collector checkpoint", s.display()))?,
            _ => Checkpoint::default(),
        };
        let resumed = checkpoint.paths > 0 || checkpoint.bytes > 0;
        let out = BufWriter::with_capacity(1 << 16, open_output(&args.output, &checkpoint)?);
        let writer = if resumed {
            PathWriter::resume(out, format, checkpoint.paths)
        } else {
            PathWriter::new(out, format)?
        }
        .with_times(args.times.format());
        let pcap_like = draw_selection(args);
        let mut merger = Merger::new(hosts, lag);
        if std::env::var_os("FLOWTRACE_DELAY_STATS").is_some() {
            merger.probe = Some(Box::default());
        }
        let engine = Engine::new(
            collect_engine_config(args.memory_budget),
            merger.files(),
            merger.links(),
        );
        Ok(Collector {
            engine,
            merger,
            writer,
            keeper: (args.svg.is_some() || args.html.is_some())
                .then(|| flowtrace::diagram::Keeper::new(selection(&pcap_like))),
            page: args.html.as_deref().map(html::create).transpose()?,
            emitted: 0,
            skip: checkpoint.paths,
            state,
            output: args.output.clone(),
            next_seq: 1,
            bad: 0,
            joined: 0,
        })
    }

    /// Takes one record: skips a redelivery, merges a host that joined since the
    /// start, hands the envelope to the merger.
    async fn take(
        &mut self,
        nats: &NatsArgs,
        stream: &stream::Stream,
        m: &jetstream::Message,
    ) -> Result<()> {
        let now = wall().0;
        let mut stored = now;
        if let Ok(info) = m.info() {
            if info.stream_sequence < self.next_seq {
                // Delivered again by a recreated consumer: already taken.
                return Ok(());
            }
            self.next_seq = info.stream_sequence + 1;
            // The server's clock when it stored the record: the clock samples'
            // reference (the same on a replay after a restart).
            stored = i64::try_from(info.published.unix_timestamp_nanos()).unwrap_or(now);
        }
        let env = match remote::decode(&m.payload) {
            Ok(env) if m.subject.as_str() == nats.subject(&env.host, "records")? => env,
            Ok(env) => {
                self.skip_bad(m, &format!("it names host {:?}", env.host));
                return Ok(());
            }
            Err(e) => {
                self.skip_bad(m, &e.to_string());
                return Ok(());
            }
        };
        if !self.merger.knows(&env.host) {
            if self.merger.files().len() >= MAX_HOSTS {
                self.skip_bad(m, &format!("more than {MAX_HOSTS} hosts"));
                return Ok(());
            }
            let links = host_links(nats, stream, &env.host).await?;
            self.engine.add_file(env.host.clone(), links.as_ref());
            self.merger.add_host(&env.host, links);
            self.joined += 1;
            eprintln!("flowtrace: host {} joined", sanitize(&env.host));
        }
        self.merger.push_stored(env, now, stored);
        Ok(())
    }

    fn skip_bad(&mut self, m: &jetstream::Message, why: &str) {
        self.bad += 1;
        if self.bad <= 10 {
            eprintln!(
                "flowtrace: warning: record skipped ({}): {}",
                sanitize(m.subject.as_str()),
                sanitize(why)
            );
        }
    }

    fn report_lag(&mut self, max_host_lag: f64) {
        for ev in self.merger.check_lag(wall().0) {
            match ev {
                HostEvent::Late(h) => eprintln!(
                    "flowtrace: host {} is late (silent for more than {max_host_lag} s): paths go on without it",
                    sanitize(&h),
                ),
                HostEvent::Back(h) => eprintln!("flowtrace: host {} is back", sanitize(&h)),
            }
        }
    }

    /// One path: to the diagrams, the page, and the output unless a run before a
    /// restart wrote it.
    fn on_path(&mut self, p: RequestPath) -> Result<()> {
        if let Some(k) = &mut self.keeper {
            k.offer(&p);
        }
        if let Some(h) = &mut self.page {
            h.path(&p)?;
        }
        if self.emitted >= self.skip {
            self.writer.path(&p)?;
        }
        self.emitted += 1;
        Ok(())
    }

    /// Releases what the watermark allows, writes the paths that became final and
    /// checkpoints them.
    fn step(&mut self) -> Result<()> {
        let before = self.emitted;
        let mut batch = Vec::new();
        self.merger.step(&mut self.engine, &mut |p| batch.push(p));
        if !batch.is_empty() {
            let (w, f) = (self.merger.watermark().0, self.engine.floor().0);
            if let Some(probe) = &mut self.merger.probe {
                let wall = flowtrace::remote::wall_ns();
                for p in &batch {
                    probe.path_wall_watermark.push(wall - w);
                    probe.path_watermark_floor.push(w - f);
                    probe.path_floor_end.push(f - p.end_ts.0);
                    probe.path_total.push(wall - p.end_ts.0);
                }
            }
        }
        for p in batch {
            self.on_path(p)?;
        }
        if self.emitted > before && self.emitted > self.skip {
            self.writer.flush()?;
            if let (Some(s), Some(o)) = (&self.state, &self.output) {
                let bytes = std::fs::metadata(o).map(|m| m.len()).unwrap_or(0);
                save_checkpoint(
                    s,
                    &Checkpoint {
                        paths: self.emitted,
                        bytes,
                    },
                )?;
            }
        }
        Ok(())
    }

    /// Decides everything held, writes the summary, the diagrams and the page.
    fn finish(mut self, args: &CollectArgs) -> Result<ExitCode> {
        let mut rest = Vec::new();
        let tail = self.merger.finish(&mut self.engine, &mut |p| rest.push(p));
        for p in rest {
            self.on_path(p)?;
        }
        let merger = &self.merger;
        let s = super::stream::Streamed {
            tail,
            stats: Stats::default(),
            anomalies: AnomalyLog::default(),
            files: merger.files().to_vec(),
            vantages: merger.vantages().to_vec(),
            warnings: Vec::new(),
            vrrp: merger.vrrp().to_vec(),
            garp: merger.gratuitous_arps().to_vec(),
        };
        self.writer.finish(&s.tail, &s.summary())?;
        // The run is complete: a collector started again writes it anew.
        if let Some(st) = &self.state {
            let _ = std::fs::remove_file(st);
        }
        if let Some(p) = &merger.probe {
            eprintln!("flowtrace: delays {}", p.summary());
        }
        let m = merger.stats();
        eprintln!(
            "flowtrace: {} paths from {} envelopes ({} exchanges; {} redelivered and skipped, {} missing, {} dropped by agents, {} late, {} unreadable, {} from unknown hosts; {} host(s) joined after the start)",
            self.emitted, m.envelopes, m.exchanges, m.duplicates, m.missing, m.agent_dropped, m.late_envelopes, self.bad, m.unknown_host, self.joined
        );
        if let (Some(file), Some(page), Some(keeper)) = (&args.html, self.page, &self.keeper) {
            html::finish(file, page, keeper.clone(), &s)?;
        }
        if let (Some(dir), Some(keeper)) = (&args.svg, self.keeper) {
            super::draw(
                &DrawArgs {
                    dot: false,
                    mermaid: false,
                },
                dir,
                keeper,
                s.tail,
                &s.vantages,
            )?;
        }
        Ok(ExitCode::SUCCESS)
    }
}

/// The output: `-o FILE` (cut back to the checkpoint when resuming) or stdout.
fn open_output(output: &Option<PathBuf>, checkpoint: &Checkpoint) -> Result<Box<dyn Write>> {
    Ok(match output {
        Some(p) if checkpoint.paths > 0 || checkpoint.bytes > 0 => {
            let mut f = OpenOptions::new()
                .write(true)
                .open(p)
                .with_context(|| format!("cannot reopen {}", p.display()))?;
            f.set_len(checkpoint.bytes)
                .with_context(|| format!("cannot truncate {}", p.display()))?;
            std::io::Seek::seek(&mut f, std::io::SeekFrom::End(0))?;
            eprintln!(
                "flowtrace: resuming {} after {} path(s)",
                p.display(),
                checkpoint.paths
            );
            Box::new(f)
        }
        Some(p) => {
            Box::new(File::create(p).with_context(|| format!("cannot create {}", p.display()))?)
        }
        None => Box::new(std::io::stdout()),
    })
}

type Messages = jetstream::consumer::pull::Ordered;

/// An ordered consumer of the records from stream sequence `from`.
async fn open_consumer(stream: &stream::Stream, filter: &str, from: u64) -> Result<Messages> {
    let consumer = stream
        .create_consumer(jetstream::consumer::pull::OrderedConfig {
            filter_subject: filter.to_string(),
            deliver_policy: if from <= 1 {
                jetstream::consumer::DeliverPolicy::All
            } else {
                jetstream::consumer::DeliverPolicy::ByStartSequence {
                    start_sequence: from,
                }
            },
            ..Default::default()
        })
        .await
        .context("cannot read the stream")?;
    consumer.messages().await.context("cannot read the stream")
}

/// A new consumer from `from`, or the old one while the server cannot make one.
async fn reopen(stream: &mut stream::Stream, filter: &str, from: u64, old: Messages) -> Messages {
    match open_consumer(stream, filter, from).await {
        Ok(m) => m,
        Err(e) => {
            eprintln!("flowtrace: warning: {e:#}");
            old
        }
    }
}

/// The diagram selection `flowtrace pcap` makes by default (with `--html`: the
/// slowest and the failed paths).
fn draw_selection(args: &CollectArgs) -> PcapArgs {
    use clap::Parser;
    #[derive(Parser)]
    struct P {
        #[command(flatten)]
        p: PcapArgs,
    }
    let mut argv = vec!["x".to_string(), "-".to_string()];
    if let Some(h) = &args.html {
        argv.push("--html".into());
        argv.push(h.display().to_string());
    }
    P::parse_from(argv).p
}

#[cfg(test)]
mod collect_tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Probe {
        #[command(flatten)]
        collect: CollectArgs,
    }

    fn parse(extra: &[&str]) -> CollectArgs {
        let mut argv = vec!["collect", "--nats", "nats://127.0.0.1:4222"];
        argv.extend_from_slice(extra);
        Probe::try_parse_from(argv).expect("parses").collect
    }

    #[test]
    fn memory_budget_bounds_the_collectors_open_exchanges() {
        let bytes = flowtrace::correlate::engine::EXCHANGE_BYTES;
        let default = collect_engine_config(parse(&[]).memory_budget);
        assert_eq!(default.max_open_exchanges, (512 << 20) / 2 / bytes);
        let small = collect_engine_config(parse(&["--memory-budget", "64M"]).memory_budget);
        assert_eq!(small.max_open_exchanges, (64 << 20) / 2 / bytes);
        assert_eq!(small.max_open_bytes, small.max_open_exchanges * bytes);
        // A budget larger than the engine's own cap keeps the cap.
        let huge = collect_engine_config(parse(&["--memory-budget", "64G"]).memory_budget);
        assert_eq!(
            huge.max_open_exchanges,
            EngineConfig::default().max_open_exchanges
        );
        assert!(Probe::try_parse_from([
            "collect",
            "--nats",
            "nats://127.0.0.1:4222",
            "--memory-budget",
            "12X"
        ])
        .is_err());
    }
}
