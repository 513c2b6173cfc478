//! `flowtrace live`: request paths from live interfaces, printed as they complete.
//!
//! Transactions go into the streaming correlation engine as they complete, and each
//! path is printed the moment it is final (the engine's floor: the oldest request
//! still waiting for its response, else the newest packet; with no traffic the wall
//! clock moves it on). Memory is what is in flight; the TCP table evicts idle
//! connections as for files.

use super::{diagrams_only, stream, CaptureArgs, FormatArg, PcapArgs};
use anyhow::{bail, Context, Result};
use flowtrace::anomaly::Stats;
use flowtrace::capture::live::{LiveOptions, LiveSource, LiveStats, Received};
use flowtrace::capture::pcapng_writer::PcapngWriter;
use flowtrace::capture::{Frame, Interfaces};
use flowtrace::correlate::{Engine, EngineConfig, RequestPath, Tail};
use flowtrace::links::HostLinks;
use flowtrace::pipeline::{Pipeline, PipelineConfig};
use flowtrace::render::sanitize;
use flowtrace::time::Ts;
use indicatif::{ProgressBar, ProgressDrawTarget};
use std::fs::File;
use std::io::{self, BufWriter, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How live capture reads interfaces: shared by `flowtrace live` and `flowtrace
/// agent` (tcpdump's option names).
#[derive(clap::Args, Debug)]
pub(crate) struct LiveCaptureArgs {
    /// Interface to capture on (repeatable; `any` for all). Default: any.
    #[arg(short = 'i', long = "interface", value_name = "IFACE")]
    pub(crate) interfaces: Vec<String>,
    /// BPF filter, as tcpdump takes it (e.g. 'tcp port 8000 or vrrp').
    #[arg(short = 'f', long = "filter", value_name = "BPF")]
    pub(crate) filter: Option<String>,
    /// Snap length in bytes.
    #[arg(short = 's', long = "snapshot-length", default_value_t = 262_144)]
    pub(crate) snaplen: i32,
    /// Do not put the interfaces into promiscuous mode.
    #[arg(short = 'p', long = "no-promiscuous-mode")]
    pub(crate) no_promisc: bool,
    /// Kernel buffer size, KiB.
    #[arg(short = 'B', long = "buffer-size", default_value_t = 8192)]
    pub(crate) buffer_kib: i32,
    /// Also save what was captured to FILE (pcapng, with interface names).
    #[arg(short = 'w', value_name = "FILE")]
    pub(crate) write: Option<PathBuf>,
    /// With -w: start a new file once the current one is larger than SIZE million
    /// bytes, as tcpdump's -C: FILE, then FILE1, FILE2, ... (each a whole pcapng with
    /// its links sidecar).
    #[arg(short = 'C', value_name = "SIZE", requires = "write")]
    pub(crate) file_size: Option<f64>,
    /// With -C: a ring of N files, FILE0 .. FILE{N-1} (zero-padded), the oldest
    /// overwritten, as tcpdump's -W.
    #[arg(short = 'W', value_name = "N", requires = "file_size", value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) file_count: Option<u32>,
    /// After opening the interfaces, become USER (its groups, group and id) for
    /// the rest of the run, as tcpdump's -Z; the -w file is created as USER.
    /// Ignored, with a note, when not running as root (capabilities on the binary).
    #[arg(short = 'Z', long = "relinquish-privileges", value_name = "USER")]
    pub(crate) user: Option<String>,
    /// Stop after COUNT packets.
    #[arg(short = 'c', value_name = "COUNT")]
    pub(crate) count: Option<u64>,
    /// Stop after SECS seconds.
    #[arg(long, value_name = "SECS")]
    pub(crate) duration: Option<f64>,
    /// Close TCP connections idle this many seconds.
    #[arg(long, default_value_t = 120.0, value_name = "SECS")]
    pub(crate) idle_timeout: f64,
    #[command(flatten)]
    pub(crate) limits: super::LimitArgs,
}

#[derive(clap::Args, Debug)]
pub(crate) struct LiveArgs {
    /// Interfaces, as `flowtrace live eth0 br-x` (or with -i).
    #[arg(value_name = "IFACE")]
    positional: Vec<String>,
    #[command(flatten)]
    pub(crate) capture: LiveCaptureArgs,
    /// One line per path (text), or one JSON object per line (jsonl).
    #[arg(long, value_enum, default_value_t = FormatArg::Text)]
    format: FormatArg,
    /// Write paths to FILE instead of stdout.
    #[arg(short, long, value_name = "FILE")]
    output: Option<PathBuf>,
    /// Longest a request may wait for its response and still hold back the paths
    /// of the others.
    #[arg(long, default_value_t = 30.0, value_name = "SECS")]
    max_request_duration: f64,
    /// Longest a proxy may take between receiving a request and sending it upstream
    /// (a longer gap is not linked).
    #[arg(long, default_value_t = 30.0, value_name = "SECS")]
    max_proxy_delay: f64,
    /// Most exchanges held at once for correlation.
    #[arg(long, default_value_t = 200_000, value_name = "N")]
    max_open_exchanges: usize,
    /// Write every path and the summary to FILE as one JSON document: the paths as
    /// they are final (nothing is held for it), the summary at the end.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// On exit, draw diagrams into DIR (default: ./flowtrace-diagrams) from the -w
    /// file (requires -w).
    #[arg(
        long,
        value_name = "DIR",
        requires = "write",
        num_args = 0..=1,
        default_missing_value = super::DEFAULT_SVG_DIR
    )]
    svg: Option<PathBuf>,
    /// Topology file (TOML): host and service names, roles (docs/correlation.md).
    #[arg(long, value_name = "FILE")]
    names: Option<PathBuf>,
    /// Never show the status line (it is shown only when stderr is a terminal).
    #[arg(long)]
    no_progress: bool,
    #[command(flatten)]
    times: super::TimeArgs,
    /// List this host's interfaces with their index, MAC, bridge and addresses, and
    /// exit (tcpdump -D); `--format jsonl` gives one JSON object per interface.
    #[arg(short = 'D', long = "list")]
    list: bool,
}

/// `--list`: the interfaces live capture can name, with what names a host by them.
fn list_interfaces(args: &LiveArgs) -> Result<ExitCode> {
    let host = flowtrace::capture::live::host_links();
    let mut out = super::output(&args.output)?;
    for l in &host.links {
        if matches!(args.format, FormatArg::Text) {
            let addrs: Vec<String> = l.addresses.iter().map(|a| a.to_string()).collect();
            writeln!(
                out,
                "{:>3} {:16} {:17} {}{}",
                l.ifindex,
                sanitize(&l.ifname),
                l.mac.as_deref().unwrap_or("-"),
                if addrs.is_empty() {
                    "no address".to_string()
                } else {
                    addrs.join(" ")
                },
                l.master
                    .as_deref()
                    .map(|m| format!("  (bridge {})", sanitize(m)))
                    .unwrap_or_default()
            )?;
        } else {
            serde_json::to_writer(&mut out, l)?;
            writeln!(out)?;
        }
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "live".into())
}

struct Emitter {
    out: BufWriter<Box<dyn Write + Send>>,
    jsonl: bool,
    next_id: usize,
    /// `--json FILE`: the document, its paths written as they come (nothing kept).
    json: Option<JsonDoc>,
    /// Paths printed more than 2 s (capture time) after their response ended.
    late: u64,
    /// How text shows times.
    times: flowtrace::render::TimeFormat,
}

impl Emitter {
    /// Paths to `-o FILE` or stdout (text, or jsonl for `--format jsonl|json`), and
    /// into `--json FILE`.
    fn new(args: &LiveArgs) -> Result<Emitter> {
        let out: Box<dyn Write + Send> = match &args.output {
            Some(p) => {
                Box::new(File::create(p).with_context(|| format!("cannot create {}", p.display()))?)
            }
            None => Box::new(io::stdout()),
        };
        Ok(Emitter {
            out: BufWriter::new(out),
            jsonl: matches!(args.format, FormatArg::Jsonl | FormatArg::Json),
            next_id: 0,
            json: args.json.as_deref().map(JsonDoc::create).transpose()?,
            late: 0,
            times: args.times.format(),
        })
    }

    /// Ends the `--json FILE` document with the run's summary.
    fn finish_json(
        &mut self,
        live_stats: &[LiveStats],
        packets: u64,
        stats: &Stats,
        tail: &Tail,
    ) -> Result<()> {
        let Some(j) = self.json.take() else {
            return Ok(());
        };
        j.finish(&summary_value(
            serde_json::json!({ "interfaces": live_stats, "packets": packets, "paths_printed_late": self.late }),
            stats,
            tail,
        ))
    }

    fn path(&mut self, p: RequestPath, now: Ts) -> Result<()> {
        if now.0 - p.end_ts.0 > 2_000_000_000 {
            self.late += 1;
        }
        self.next_id = self.next_id.max(p.id + 1);
        if self.jsonl {
            let mut v = serde_json::to_value(&p)?;
            v["type"] = "path".into();
            serde_json::to_writer(&mut self.out, &v)?;
            writeln!(self.out)?;
        } else {
            flowtrace::render::paths::write_path(&mut self.out, &p, &mut self.times)?;
        }
        if let Some(j) = &mut self.json {
            j.path(&p)?;
        }
        Ok(())
    }
}

/// The `--json FILE` document, written as the run goes: `{"schema_version":N,
/// "paths":[...], <the summary's members>}`. It is closed however the run ends: a
/// run cut short by an error leaves `"complete":false` and no summary, still valid
/// JSON.
struct JsonDoc {
    out: BufWriter<File>,
    paths: usize,
    closed: bool,
}

impl JsonDoc {
    fn create(path: &std::path::Path) -> Result<JsonDoc> {
        let mut out = BufWriter::new(
            File::create(path).with_context(|| format!("cannot create {}", path.display()))?,
        );
        write!(
            out,
            "{{\"schema_version\":{},\"paths\":[",
            flowtrace::correlate::PATH_SCHEMA_VERSION
        )?;
        Ok(JsonDoc {
            out,
            paths: 0,
            closed: false,
        })
    }

    fn path(&mut self, p: &RequestPath) -> Result<()> {
        if self.paths > 0 {
            self.out.write_all(b",")?;
        }
        serde_json::to_writer(&mut self.out, p)?;
        self.paths += 1;
        Ok(())
    }

    /// Ends the document with the members of `rest` (a JSON object).
    fn finish(mut self, rest: &serde_json::Value) -> Result<()> {
        self.closed = true;
        let rest = serde_json::to_string(rest)?;
        let members = rest
            .strip_prefix('{')
            .and_then(|r| r.strip_suffix('}'))
            .unwrap_or("");
        if members.is_empty() {
            write!(self.out, "],\"complete\":true}}")?;
        } else {
            write!(self.out, "],\"complete\":true,{members}}}")?;
        }
        self.out.flush()?;
        Ok(())
    }
}

impl Drop for JsonDoc {
    fn drop(&mut self) {
        if !self.closed {
            // Best effort: the error that cut the run short is reported already.
            let _ = self.out.write_all(b"],\"complete\":false}");
            let _ = self.out.flush();
        }
    }
}

pub(crate) fn run(args: LiveArgs) -> Result<ExitCode> {
    if args.list {
        return list_interfaces(&args);
    }
    super::check_svg_dir(&args.svg)?;
    if args.svg.is_some() && args.capture.file_size.is_some() {
        // The files of a series would be read as captures of different hosts.
        bail!("--svg draws the run from its -w file: it cannot be combined with -C (a series of files); draw afterwards with `flowtrace pcap` on the file that holds the paths");
    }
    let max_wait = super::secs_ns("max-request-duration", args.max_request_duration)?;
    let engine_config = EngineConfig {
        max_request_duration_ns: max_wait,
        max_proxy_delay_ns: super::secs_ns("max-proxy-delay", args.max_proxy_delay)?,
        max_open_exchanges: args.capture.limits.open_exchanges(args.max_open_exchanges),
        max_open_bytes: args.capture.limits.open_bytes(args.max_open_exchanges),
        ..EngineConfig::default()
    };
    if args.max_open_exchanges == 0 {
        bail!("--max-open-exchanges must be at least 1");
    }
    let mut interfaces: Vec<String> = args
        .capture
        .interfaces
        .iter()
        .chain(&args.positional)
        .cloned()
        .collect();
    if interfaces.is_empty() {
        interfaces.push("any".into());
    }
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    ctrlc::set_handler(move || flag.store(true, Ordering::Relaxed))
        .context("cannot install the Ctrl-C handler")?;
    let host = hostname();
    let (mut capture, links) = Capture::open(
        &args.capture,
        interfaces,
        &host,
        args.max_open_exchanges,
        false,
        stop.clone(),
        !args.no_progress,
    )?;
    let mut emitter = Emitter::new(&args)?;
    let names = super::load_names(&args.names)?;
    let files = vec![host];
    let live_links = [Some(links)];
    let paths_out = AtomicUsize::new(0);
    // Capture and the pipeline on this thread, correlation and output on another
    // (the same split as `flowtrace pcap --paths`, src/cli/stream.rs).
    let (tx, rx) = stream::channel();
    let mut batcher = stream::Batcher::new(tx, max_wait);
    let (stats, tail, mut emitter) =
        std::thread::scope(|scope| -> Result<(Stats, Tail, Emitter)> {
            let (files, live_links, names, paths_out) =
                (&files, &live_links, names.as_ref(), &paths_out);
            let correlator = std::thread::Builder::new()
                .name("flowtrace-correlate".into())
                .spawn_scoped(scope, move || {
                    // The engine is built here: it holds Rc-shared records and never
                    // leaves this thread.
                    let mut engine = Engine::new(engine_config, files, live_links);
                    for group in names.map(|n| n.alias_groups()).unwrap_or_default() {
                        engine.add_alias_group(&group);
                    }
                    let end = stream::correlate_batches(
                        &rx,
                        &mut engine,
                        files,
                        live_links,
                        names,
                        paths_out,
                        |p, now| {
                            emitter.path(p, now)?;
                            // A path is printed the moment it is final.
                            emitter.out.flush()?;
                            Ok(())
                        },
                    );
                    emitter.out.flush()?;
                    end.map(|e| (e, emitter))
                })?;
            let hung_up = capture.read(&args.capture, &stop, &mut batcher, paths_out)?;
            capture.pipeline.finish();
            if !hung_up {
                batcher.send(&mut capture.pipeline, capture.latest, true);
            }
            drop(batcher);
            let (end, emitter) = correlator
                .join()
                .map_err(|_| anyhow::anyhow!("the correlation thread panicked"))??;
            let Some(ended) = end else {
                bail!("correlation stopped before the end of the capture");
            };
            Ok((capture.pipeline.stats(), ended.tail, emitter))
        })?;
    let Capture {
        source,
        saver,
        status,
        packets,
        ..
    } = capture;
    let (live_stats, errors) = source.finish();
    if let Some(bar) = status {
        bar.finish_and_clear();
    }
    let saved = match saver {
        Some(w) => w.finish()?,
        None => Vec::new(),
    };
    emitter.finish_json(&live_stats, packets, &stats, &tail)?;
    summary(&mut emitter, &live_stats, &stats, packets, &tail)?;
    for e in &errors {
        eprintln!("flowtrace: warning: a capture ended: {e:#}");
    }
    if let (Some(dir), [saved]) = (&args.svg, saved.as_slice()) {
        draw_from_saved(&args, saved, dir)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// What a live run's summary says, `--json FILE` and the last jsonl line alike:
/// `live` (the capture's own figures) beside the correlation's tail and the counters.
fn summary_value(live: serde_json::Value, stats: &Stats, tail: &Tail) -> serde_json::Value {
    serde_json::json!({
        "live": live,
        "summary": tail.summary,
        "vip_timeline": tail.vip_timeline,
        "failovers": tail.failovers,
        "clock_offsets": tail.clock_offsets,
        "clock_offset_changes": tail.clock_offset_changes,
        "correlation": tail.engine,
        "stats": stats,
    })
}

/// The `-w FILE` output (pcapng, with interface names, and the links sidecar beside
/// each file so that a replay names the interfaces too): one file, or with `-C` a
/// series of files, with `-W` a ring of them (tcpdump's habits).
pub(crate) struct Saver {
    base: PathBuf,
    interfaces: Vec<(String, i32, u32)>,
    sidecar: String,
    /// Start a new file once the current one is larger than this (bytes).
    limit: Option<u64>,
    /// How many files the ring keeps.
    ring: Option<u32>,
    /// Files opened so far, minus one.
    index: u64,
    current: PcapngWriter<BufWriter<File>>,
    /// The files written, oldest first (a ring keeps its last `ring`).
    files: Vec<PathBuf>,
}

impl Saver {
    /// Opens the first file for the interfaces of `source`.
    fn create(
        args: &LiveCaptureArgs,
        path: &Path,
        source: &LiveSource,
        links: &HostLinks,
    ) -> Result<Saver> {
        let interfaces: Vec<(String, i32, u32)> = source
            .interfaces()
            .0
            .iter()
            .map(|d| {
                (
                    d.name.clone().unwrap_or_default(),
                    d.linktype,
                    args.snaplen as u32,
                )
            })
            .collect();
        let sidecar: Vec<serde_json::Value> = links
            .links
            .iter()
            // With the addresses: a replay of the file then names the host owning an
            // address (the VRRP holder, a client) as the live run did.
            .map(|l| {
                let addrs: Vec<serde_json::Value> = l
                    .addresses
                    .iter()
                    .map(|a| serde_json::json!({"local": a.to_string()}))
                    .collect();
                serde_json::json!({"ifindex": l.ifindex, "ifname": l.ifname, "address": l.mac, "master": l.master, "addr_info": addrs})
            })
            .collect();
        let limit = match args.file_size {
            Some(mb) if !(mb.is_finite() && mb > 0.0) => {
                bail!("-C must be a positive size in millions of bytes")
            }
            Some(mb) => Some((mb * 1e6) as u64),
            None => None,
        };
        Saver::new(
            path,
            interfaces,
            serde_json::to_string(&sidecar)?,
            limit,
            args.file_count,
        )
    }

    fn new(
        base: &Path,
        interfaces: Vec<(String, i32, u32)>,
        sidecar: String,
        limit: Option<u64>,
        ring: Option<u32>,
    ) -> Result<Saver> {
        let first = Saver::name_of(base, limit, ring, 0);
        let current = Saver::open(&first, &interfaces, &sidecar)?;
        Ok(Saver {
            base: base.to_path_buf(),
            interfaces,
            sidecar,
            limit,
            ring,
            index: 0,
            current,
            files: vec![first],
        })
    }

    /// The name of file `index`: FILE alone without -C; FILE, FILE1, FILE2, ... with
    /// it; FILE0 .. FILE{N-1}, zero-padded to the width of N-1, with -W N.
    fn name_of(base: &Path, limit: Option<u64>, ring: Option<u32>, index: u64) -> PathBuf {
        let mut name = base.as_os_str().to_owned();
        match (limit, ring) {
            (None, _) => {}
            (Some(_), None) if index == 0 => {}
            (Some(_), None) => name.push(index.to_string()),
            (Some(_), Some(n)) => {
                let width = (n - 1).max(1).to_string().len();
                name.push(format!("{:0width$}", index % u64::from(n)));
            }
        }
        PathBuf::from(name)
    }

    fn open(
        path: &Path,
        interfaces: &[(String, i32, u32)],
        sidecar: &str,
    ) -> Result<PcapngWriter<BufWriter<File>>> {
        let file =
            File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
        let writer = PcapngWriter::new(BufWriter::with_capacity(1 << 20, file), interfaces)
            .with_context(|| format!("cannot write {}", path.display()))?;
        let side = path.with_file_name(format!(
            "{}.links.json",
            path.file_name().unwrap_or_default().to_string_lossy()
        ));
        std::fs::write(&side, sidecar)
            .with_context(|| format!("cannot write {}", side.display()))?;
        Ok(writer)
    }

    /// Appends a packet, first moving to the next file when the current one is
    /// larger than `-C` (as tcpdump checks, before writing).
    pub(crate) fn packet(&mut self, iface: u32, ts: Ts, orig_len: u32, data: &[u8]) -> Result<()> {
        if self.limit.is_some_and(|l| self.current.bytes_written() > l) {
            self.index += 1;
            let next = Saver::name_of(&self.base, self.limit, self.ring, self.index);
            let fresh = Saver::open(&next, &self.interfaces, &self.sidecar)?;
            std::mem::replace(&mut self.current, fresh)
                .finish()
                .context("cannot finish a -w file")?;
            self.files.retain(|f| *f != next);
            self.files.push(next);
        }
        self.current
            .packet(iface, ts, orig_len, data)
            .context("cannot write to the -w file")
    }

    /// Flushes the last file; the files written, oldest first.
    pub(crate) fn finish(self) -> Result<Vec<PathBuf>> {
        self.current.finish().context("cannot finish the -w file")?;
        Ok(self.files)
    }
}

/// The capture side of a live run: packets through the pipeline (and into `-w`),
/// batches to the correlation thread.
pub(crate) struct Capture {
    pub(crate) source: LiveSource,
    pub(crate) pipeline: Pipeline,
    /// The interfaces, named after this host.
    ifaces: Interfaces,
    pub(crate) saver: Option<Saver>,
    status: Option<ProgressBar>,
    pub(crate) packets: u64,
    /// The newest packet time.
    pub(crate) latest: Ts,
}

impl Capture {
    /// Opens `interfaces` as `args` say (and the `-w` file), with a pipeline whose
    /// capture points are named after `host`; returns this host's interfaces too.
    /// The memory budget keeps room for `open_exchanges` correlated exchanges (0
    /// when this process does not correlate).
    pub(crate) fn open(
        args: &LiveCaptureArgs,
        interfaces: Vec<String>,
        host: &str,
        open_exchanges: usize,
        keep_segments: bool,
        stop: Arc<AtomicBool>,
        progress: bool,
    ) -> Result<(Capture, HostLinks)> {
        let opts = LiveOptions {
            interfaces,
            filter: args.filter.clone(),
            snaplen: args.snaplen,
            promisc: !args.no_promisc,
            buffer_kib: args.buffer_kib,
        };
        let source = LiveSource::open(&opts, stop)?;
        if let Some(user) = &args.user {
            match flowtrace::capture::live::drop_privileges(user)? {
                Some(d) => eprintln!(
                    "flowtrace: running as {user} (uid {}, gid {}) from now on",
                    d.uid, d.gid
                ),
                None => eprintln!("flowtrace: not running as root: -Z {user} has nothing to drop"),
            }
        }
        let links = flowtrace::capture::live::host_links();
        let saver = match &args.write {
            Some(path) => Some(Saver::create(args, path, &source, &links)?),
            None => None,
        };
        // Name the capture points after this host, as `flowtrace pcap` names them
        // after the capture file.
        let mut ifaces = source.interfaces().clone();
        for d in &mut ifaces.0 {
            d.file_name = host.to_string();
        }
        let capture = Capture {
            pipeline: Pipeline::new(PipelineConfig {
                links: vec![Some(links.clone())],
                ..args
                    .limits
                    .pipeline_config(args.idle_timeout, open_exchanges, keep_segments)
            }),
            source,
            ifaces,
            saver,
            status: (progress && io::stderr().is_terminal())
                .then(|| ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr())),
            packets: 0,
            latest: Ts(0),
        };
        Ok((capture, links))
    }

    /// Reads until stopped (Ctrl-C or SIGTERM, `-c`, `--duration`) and the queue is
    /// drained, or until the correlation side hangs up (returns true then).
    pub(crate) fn read(
        &mut self,
        args: &LiveCaptureArgs,
        stop: &AtomicBool,
        batcher: &mut impl stream::BatchSink,
        paths_out: &AtomicUsize,
    ) -> Result<bool> {
        let started = Instant::now();
        let (mut last_tick, mut last_packet) = (Instant::now(), Instant::now());
        let tick_every = Duration::from_millis(100);
        let mut stopping = false;
        loop {
            if !stopping
                && (stop.load(Ordering::Relaxed)
                    || args.count.is_some_and(|c| self.packets >= c)
                    || args
                        .duration
                        .is_some_and(|d| started.elapsed().as_secs_f64() >= d))
            {
                // Stop reading; what is already queued is still processed (and
                // counted).
                self.source.request_stop();
                stopping = true;
            }
            match self.source.recv(Duration::from_millis(100)) {
                Received::Packet(p) => {
                    let frame = Frame {
                        ts: p.ts,
                        iface: self.source.iface_id(p.iface),
                        link: self.source.link(p.iface),
                        orig_len: p.orig_len,
                        data: &p.data,
                    };
                    self.pipeline.push(&frame, &self.ifaces);
                    if let Some(w) = &mut self.saver {
                        w.packet(p.iface as u32, p.ts, p.orig_len, &p.data)?;
                    }
                    self.packets += 1;
                    self.latest = self.latest.max(p.ts);
                    last_packet = Instant::now();
                    if self.packets.is_multiple_of(256)
                        && !batcher.send(&mut self.pipeline, self.latest, false)
                    {
                        return Ok(true);
                    }
                }
                // Once stopped, the readers end within 50 ms (their poll) and the queue
                // then reports Ended.
                Received::Nothing => {}
                Received::Ended => return Ok(false),
            }
            if !stopping && last_tick.elapsed() >= tick_every {
                last_tick = Instant::now();
                // With no traffic, time still passes: the floor follows the wall clock.
                let now = Ts(self.latest.0 + last_packet.elapsed().as_nanos() as i64);
                if !batcher.send(&mut self.pipeline, now, false) {
                    return Ok(true);
                }
                self.show_status(paths_out);
            }
        }
    }

    fn show_status(&self, paths_out: &AtomicUsize) {
        let Some(bar) = &self.status else { return };
        let drops: u64 = self
            .source
            .stats()
            .iter()
            .map(|s| s.dropped + s.if_dropped)
            .sum();
        bar.set_message(format!(
            "{} packets, {} paths, {drops} dropped, {} open connections",
            self.packets,
            paths_out.load(Ordering::Relaxed),
            self.pipeline.open_connections(),
        ));
        bar.tick();
    }
}

/// `--svg DIR`: the diagrams of the run, from its `-w` file, in one pass.
fn draw_from_saved(args: &LiveArgs, saved: &std::path::Path, dir: &std::path::Path) -> Result<()> {
    let pcap_args = PcapArgs {
        capture: CaptureArgs {
            files: vec![saved.to_path_buf()],
            links: Vec::new(),
            offset: Vec::new(),
            names: args.names.clone(),
            idle_timeout: args.capture.idle_timeout,
            limits: args.capture.limits.clone(),
            verify_checksums: false,
            no_progress: true,
            max_proxy_delay: args.max_proxy_delay,
            max_request_duration: args.max_request_duration,
            max_open_exchanges: args.max_open_exchanges,
        },
        format: FormatArg::Text,
        output: None,
        headers: false,
        threads: None,
        times: args.times.clone(),
        paths: true,
        all: true,
        summary: false,
        min_confidence: None,
        top: 0,
        truth: None,
        svg: Some(dir.to_path_buf()),
        html: None,
        dot: false,
        mermaid: false,
        path_ids: Vec::new(),
        uri: None,
        slowest: None,
        failed: false,
    };
    diagrams_only(&pcap_args, dir)
}

fn summary(
    emitter: &mut Emitter,
    live: &[LiveStats],
    stats: &Stats,
    packets: u64,
    tail: &flowtrace::correlate::Tail,
) -> Result<()> {
    if emitter.jsonl {
        let mut v = summary_value(
            serde_json::json!({ "interfaces": live, "packets": packets, "paths": emitter.next_id, "paths_printed_late": emitter.late }),
            stats,
            tail,
        );
        v["type"] = "summary".into();
        v["schema_version"] = flowtrace::correlate::PATH_SCHEMA_VERSION.into();
        serde_json::to_writer(&mut emitter.out, &v)?;
        writeln!(emitter.out)?;
    } else {
        writeln!(
            emitter.out,
            "\n{packets} packets, {} paths ({} printed more than 2 s after their response)",
            emitter.next_id, emitter.late
        )?;
        for s in live {
            writeln!(
                emitter.out,
                "interface {}: {} received, {} dropped by the kernel, {} by the interface",
                flowtrace::render::sanitize(&s.name),
                s.received,
                s.dropped,
                s.if_dropped
            )?;
        }
        let report = tail.clone().into_report(Vec::new());
        flowtrace::render::paths::write_summary(&mut emitter.out, &report, &mut emitter.times)?;
    }
    emitter.out.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::JsonDoc;

    /// The `--json` document is valid JSON whether the run finishes or is cut short.
    #[test]
    fn json_document_is_closed_however_the_run_ends() {
        let dir = std::env::temp_dir().join(format!("flowtrace-jsondoc-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let cut = dir.join("cut.json");
        drop(JsonDoc::create(&cut).unwrap());
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&cut).unwrap()).unwrap();
        assert_eq!(v["complete"], false);
        assert_eq!(v["paths"], serde_json::json!([]));
        let done = dir.join("done.json");
        JsonDoc::create(&done)
            .unwrap()
            .finish(&serde_json::json!({"summary": {"paths": 0}}))
            .unwrap();
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&done).unwrap()).unwrap();
        assert_eq!(v["complete"], true);
        assert_eq!(v["summary"]["paths"], 0);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

#[cfg(test)]
mod saver_tests {
    use super::*;

    fn packet(n: u8) -> Vec<u8> {
        vec![n; 200]
    }

    /// `-C` starts a new file past the size, `-W` keeps a ring of them; every file is a
    /// whole pcapng that reads back, with its sidecar.
    #[test]
    fn files_rotate_as_tcpdump_names_them() {
        let dir = std::env::temp_dir().join(format!("flowtrace-saver-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ifs = vec![("eth0".to_string(), 1, 65535)];
        let base = dir.join("cap.pcapng");
        // 1,000 bytes a file: the headers and four 232-byte packet blocks pass it.
        let mut series = Saver::new(&base, ifs.clone(), "[]".into(), Some(1_000), None).unwrap();
        let mut ring =
            Saver::new(&dir.join("ring"), ifs, "[]".into(), Some(1_000), Some(3)).unwrap();
        for i in 0..40u8 {
            let ts = Ts::from_parts(1_700_000_000 + i64::from(i), 0);
            series.packet(0, ts, 200, &packet(i)).unwrap();
            ring.packet(0, ts, 200, &packet(i)).unwrap();
        }
        let series = series.finish().unwrap();
        let names: Vec<String> = series
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names[..3], ["cap.pcapng", "cap.pcapng1", "cap.pcapng2"]);
        let ring = ring.finish().unwrap();
        let ring_names: Vec<String> = ring
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(ring_names.len(), 3, "{ring_names:?}");
        let mut all = ring_names.clone();
        all.sort();
        assert_eq!(all, ["ring0", "ring1", "ring2"]);
        let read = |p: &Path| {
            assert!(p
                .with_file_name(format!(
                    "{}.links.json",
                    p.file_name().unwrap().to_string_lossy()
                ))
                .is_file());
            let mut src = flowtrace::capture::FileSource::open(&[p]).unwrap();
            let mut stats = flowtrace::anomaly::Stats::default();
            let mut firsts = Vec::new();
            while let Some((f, _)) = src.next_frame(&mut stats).unwrap() {
                firsts.push(f.data[0]);
            }
            assert!(src.warnings().is_empty(), "{}", p.display());
            firsts
        };
        // The series holds every packet once, in order.
        let every: Vec<u8> = series.iter().flat_map(|p| read(p)).collect();
        assert_eq!(every, (0..40).collect::<Vec<u8>>());
        // The ring holds the newest packets, oldest file first, ending with the last.
        let kept: Vec<u8> = ring.iter().flat_map(|p| read(p)).collect();
        assert_eq!(*kept.last().unwrap(), 39);
        assert!(kept.windows(2).all(|w| w[1] == w[0] + 1), "{kept:?}");
        assert!(kept.len() < 40);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
