//! Command-line flags (clap) turned into a validated run of the library.

mod html;
#[cfg(feature = "live")]
mod live;
#[cfg(feature = "nats")]
mod nats;
mod stream;

use stream::stream_paths;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use flowtrace::anomaly::Stats;
use flowtrace::capture::FileSource;
use flowtrace::check::{self, Expectation};
use flowtrace::correlate::{EngineConfig, Report, Tail};
use flowtrace::http::KeptHeaders;
use flowtrace::links::{self, HostLinks};
use flowtrace::pipeline::{Pipeline, PipelineConfig, Vantage};
use flowtrace::render::paths::{Highlights as PathHighlights, PathWriter};
use flowtrace::render::{sanitize, Format, OutputFile, Summary, Writer};
use flowtrace::tcp::TcpConfig;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::{self, BufWriter, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

/// flowtrace: request paths from packet captures.
#[derive(Parser, Debug)]
#[command(version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Read pcap/pcapng files (optionally gzip-compressed; `-` is stdin) as one
    /// time-ordered stream and print their HTTP transactions, or (--paths) the
    /// request paths across captures, NAT, proxies and the VIP.
    Pcap(PcapArgs),
    /// Check the request paths of captures against an expectation file and rules:
    /// exit 0 when they hold, 1 with a diff when not, 2 on error.
    Check(CheckArgs),
    /// Capture on live interfaces and print each request path as it completes.
    #[cfg(feature = "live")]
    Live(live::LiveArgs),
    /// Capture on this host (or replay a capture file) and publish compact records of
    /// its HTTP exchanges to NATS JetStream for `flowtrace collect`.
    #[cfg(feature = "nats")]
    Agent(nats::AgentArgs),
    /// Read every agent's records from NATS JetStream and write the request paths
    /// across all hosts, as `flowtrace pcap --paths` writes them.
    #[cfg(feature = "nats")]
    Collect(nats::CollectArgs),
    /// Print a shell completion script (e.g. `flowtrace completions bash >
    /// /etc/bash_completion.d/flowtrace`).
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff; `flowtrace man | man -l -`), or with --dir write
    /// flowtrace.1 and one page per command (flowtrace-pcap.1, ...) into DIR.
    Man {
        /// Write the pages into DIR instead of printing the main one.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
}

#[derive(ValueEnum, Clone, Copy, Debug)]
pub(crate) enum FormatArg {
    Text,
    Json,
    Jsonl,
}

/// `--time-format`: tcpdump's choices of how text shows a time.
#[derive(ValueEnum, Clone, Copy, Debug)]
pub(crate) enum TimeStyleArg {
    /// 14:02:05.137301, with a `date` line when the date changes.
    Clock,
    /// Seconds since the Unix epoch.
    Epoch,
    /// RFC 3339 date and time with the zone's offset.
    Iso,
    /// Seconds since the first time shown.
    Relative,
    /// Seconds since the previous line's time.
    Delta,
}

/// How text output shows times (JSON always has epoch seconds).
#[derive(clap::Args, Debug, Clone)]
pub(crate) struct TimeArgs {
    /// How text output shows times.
    #[arg(long, value_enum, default_value_t = TimeStyleArg::Clock, value_name = "STYLE")]
    time_format: TimeStyleArg,
    /// Show times in UTC instead of the local time zone.
    #[arg(long)]
    utc: bool,
}

impl TimeArgs {
    pub(crate) fn format(&self) -> flowtrace::render::TimeFormat {
        use flowtrace::render::TimeStyle;
        let style = match self.time_format {
            TimeStyleArg::Clock => TimeStyle::Clock,
            TimeStyleArg::Epoch => TimeStyle::Epoch,
            TimeStyleArg::Iso => TimeStyle::Iso,
            TimeStyleArg::Relative => TimeStyle::Relative,
            TimeStyleArg::Delta => TimeStyle::Delta,
        };
        flowtrace::render::TimeFormat::new(style, self.utc)
    }
}

/// What every command that reads captures takes.
#[derive(clap::Args, Debug)]
pub(crate) struct CaptureArgs {
    /// Capture files, typically one per host (`-` is standard input).
    files: Vec<PathBuf>,
    /// Interface names for SLL2 captures: `ip -j addr` output of the capturing host,
    /// as CAPTURE=FILE (or just FILE with a single capture). Without it,
    /// `<capture>.links.json` beside the capture is used when present.
    #[arg(long, value_name = "[CAPTURE=]FILE")]
    links: Vec<String>,
    /// A capture's clock offset in seconds (subtracted from its timestamps), as
    /// CAPTURE=SECONDS; overrides the estimate. Repeatable.
    #[arg(long, value_name = "CAPTURE=SECONDS")]
    offset: Vec<String>,
    /// Topology file (TOML): host and service names, and roles that override the
    /// inferred ones (docs/correlation.md).
    #[arg(long, value_name = "FILE")]
    names: Option<PathBuf>,
    /// Close TCP connections idle this many seconds (capture time).
    #[arg(long, default_value_t = 300.0, value_name = "SECS")]
    idle_timeout: f64,
    #[command(flatten)]
    limits: LimitArgs,
    /// Verify TCP checksums and count mismatches (segments are used all the same:
    /// offloads make checksums on Linux captures look wrong).
    #[arg(long)]
    verify_checksums: bool,
    /// Never show a progress bar (it is shown only when stderr is a terminal).
    #[arg(long)]
    no_progress: bool,
    /// Longest a proxy may take between receiving a request and sending it upstream
    /// (a longer gap is not linked).
    #[arg(long, default_value_t = 30.0, value_name = "SECS")]
    max_proxy_delay: f64,
    /// Longest a request may wait for its response and still hold back correlation's
    /// decisions (one that waits longer is counted as `http_pending_overdue`).
    #[arg(long, default_value_t = 30.0, value_name = "SECS")]
    max_request_duration: f64,
    /// Most exchanges correlation holds at once (past it, it decides what it has,
    /// counted as forced rounds). Lowered to fit a quarter of --memory-budget at
    /// 3,200 bytes an exchange (41,943 in 512M).
    #[arg(long, default_value_t = 200_000, value_name = "N")]
    max_open_exchanges: usize,
}

/// The limits of the state every capturing command keeps (`pcap`, `live`, `agent`).
#[derive(clap::Args, Debug, Clone)]
pub(crate) struct LimitArgs {
    /// Memory for all the state flowtrace keeps, in bytes (suffixes K, M, G in powers
    /// of 1024: 512M, 1G), shared out: correlation's in-flight exchanges at most a
    /// quarter, IP fragment reassembly a sixteenth, with --svg the segment journal
    /// for diagrams an eighth, and the TCP connections (with their buffered bytes and
    /// HTTP parsers) the rest. Each part evicts its oldest state to stay within its
    /// share, counted: half-open connections first, then those idle longest
    /// (`tcp_evicted_half_open`, `tcp_evicted_established`), partial datagrams
    /// (`ip_fragments_evicted`), connections' segment summaries
    /// (`segments_evicted`); correlation decides early (`forced_rounds`). Peak RSS
    /// stays within it plus about 64 MiB (docs/hostile.md).
    #[arg(long, default_value = "512M", value_name = "BYTES", value_parser = parse_bytes)]
    pub(crate) memory_budget: u64,
    /// Most TCP connections tracked at once (within the memory budget). When the
    /// table is full, the oldest half-open connections (a SYN flood's) make room;
    /// when none is left, new connections are counted in `tcp_untracked` and not
    /// followed.
    #[arg(long, default_value_t = 1_000_000, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) max_connections: u64,
}

/// Bytes of in-flight correlation state per typical open exchange, measured
/// (`flowtrace::correlate::engine::EXCHANGE_BYTES`).
const EXCHANGE_BYTES: u64 = flowtrace::correlate::engine::EXCHANGE_BYTES as u64;

/// How many typical open exchanges (at most `max_open_exchanges`, at least one
/// unless that is 0) correlation may hold in `bytes`.
pub(crate) fn exchanges_within(bytes: u64, max_open_exchanges: usize) -> usize {
    (max_open_exchanges as u64).min((bytes / EXCHANGE_BYTES).max(1)) as usize
}

impl LimitArgs {
    /// Correlation's part of the budget: `max_open_exchanges` exchanges, at most a
    /// quarter of the budget; returns the number of exchanges that fit.
    pub(crate) fn open_exchanges(&self, max_open_exchanges: usize) -> usize {
        exchanges_within(self.memory_budget / 4, max_open_exchanges)
    }

    /// Correlation's part of the budget in bytes (the engine's `max_open_bytes`):
    /// what [`LimitArgs::open_exchanges`] typical exchanges take.
    pub(crate) fn open_bytes(&self, max_open_exchanges: usize) -> usize {
        (self.open_exchanges(max_open_exchanges) as u64 * EXCHANGE_BYTES) as usize
    }

    /// The pipeline's limits: fragment reassembly a sixteenth of the budget, the
    /// segment journal an eighth when `keep_segments` (diagrams), and the TCP table
    /// what correlation's part (for `max_open_exchanges`; 0 when nothing
    /// correlates) and those leave. Links and checksums are the caller's.
    pub(crate) fn pipeline_config(
        &self,
        idle_timeout: f64,
        max_open_exchanges: usize,
        keep_segments: bool,
    ) -> PipelineConfig {
        let budget = self.memory_budget;
        let correlation = self.open_bytes(max_open_exchanges) as u64;
        let fragments = budget / 16;
        let journal = if keep_segments { budget / 8 } else { 0 };
        PipelineConfig {
            tcp: TcpConfig {
                idle_timeout_ns: (idle_timeout * 1e9) as i64,
                max_connections: self.max_connections as usize,
                memory_budget: budget.saturating_sub(correlation + fragments + journal) as usize,
                ..TcpConfig::default()
            },
            links: Vec::new(),
            verify_checksums: false,
            keep_segments,
            fragment_budget: fragments as usize,
            journal_budget: journal as usize,
        }
    }
}

/// A byte count with an optional binary suffix: `1048576`, `64K`, `512M`, `1G`,
/// `1GiB`.
pub(crate) fn parse_bytes(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(digits);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{text:?}: expected a number of bytes, such as 512M or 1G"))?;
    let shift = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 0,
        "K" | "KB" | "KIB" => 10,
        "M" | "MB" | "MIB" => 20,
        "G" | "GB" | "GIB" => 30,
        "T" | "TB" | "TIB" => 40,
        _ => {
            return Err(format!(
                "{text:?}: unknown unit {unit:?} (use K, M, G or T)"
            ))
        }
    };
    let bytes = n
        .checked_mul(1 << shift)
        .ok_or_else(|| format!("{text:?}: too large"))?;
    if bytes < 1 << 20 {
        return Err(format!("{text:?}: the memory budget must be at least 1M"));
    }
    Ok(bytes)
}

/// Where `--svg` without a directory draws.
pub(crate) const DEFAULT_SVG_DIR: &str = "flowtrace-diagrams";

/// `--svg DIR` takes the next argument when it is given without one, so `--svg
/// dump.pcap` would draw into the capture: refuse a DIR that is an existing file.
pub(crate) fn check_svg_dir(dir: &Option<PathBuf>) -> Result<()> {
    if let Some(dir) = dir {
        if dir.is_file() {
            bail!(
                "--svg {0}: {0} is a file, not a directory (to draw into {DEFAULT_SVG_DIR}/, put \
                 --svg after the captures or write --svg={DEFAULT_SVG_DIR})",
                dir.display()
            );
        }
    }
    Ok(())
}

fn secs_ns(flag: &str, secs: f64) -> Result<i64> {
    if !secs.is_finite() || secs <= 0.0 {
        bail!("--{flag} must be a positive number of seconds");
    }
    Ok((secs * 1e9).min(1e17) as i64)
}

/// The engine's limits from the flags.
pub(crate) fn engine_config(args: &CaptureArgs, offsets: Vec<Option<f64>>) -> Result<EngineConfig> {
    if args.max_open_exchanges == 0 {
        bail!("--max-open-exchanges must be at least 1");
    }
    Ok(EngineConfig {
        max_proxy_delay_ns: secs_ns("max-proxy-delay", args.max_proxy_delay)?,
        max_request_duration_ns: secs_ns("max-request-duration", args.max_request_duration)?,
        max_open_exchanges: args.limits.open_exchanges(args.max_open_exchanges),
        max_open_bytes: args.limits.open_bytes(args.max_open_exchanges),
        offset_overrides: offsets,
        ..EngineConfig::default()
    })
}

#[derive(clap::Args, Debug)]
pub(crate) struct PcapArgs {
    #[command(flatten)]
    capture: CaptureArgs,
    /// Output format.
    #[arg(long, value_enum, default_value_t = FormatArg::Text)]
    format: FormatArg,
    /// Write output to FILE instead of stdout.
    #[arg(short, long, value_name = "FILE")]
    output: Option<PathBuf>,
    /// Include request and response headers in JSON records.
    #[arg(long)]
    headers: bool,
    /// Threads for transaction output: 1 does everything on one thread; N of 2 or
    /// more leave gzip decompression and the output's system calls to others and,
    /// with --format json or jsonl, shard TCP reassembly and HTTP by connection over
    /// N threads, the reading thread one of them (the output is the same bytes in
    /// every case).
    /// Default: the machine's cores. (--paths always reads on one thread and
    /// correlates on another.)
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    threads: Option<u16>,
    #[command(flatten)]
    times: TimeArgs,
    /// Print request paths (correlated across captures, NAT, proxies and the VIP)
    /// instead of per-capture-point transactions.
    #[arg(long)]
    paths: bool,
    /// With --paths: print every path as it is final, then the summary (the default
    /// when the output is not a terminal).
    #[arg(long, conflicts_with = "summary")]
    all: bool,
    /// With --paths: print the summary first, then only the slowest and the failed
    /// paths (--top of each; the default on a terminal).
    #[arg(long)]
    summary: bool,
    /// Print only paths whose every link is at least this sure (0..1; the others are
    /// counted in the summary). Diagrams and --html are not filtered.
    #[arg(long, value_name = "CONFIDENCE")]
    min_confidence: Option<f64>,
    /// With the summary first: how many of the slowest and of the failed paths to show.
    #[arg(long, default_value_t = 5, value_name = "N")]
    top: usize,
    /// Score the paths against a lab ground truth (truth.jsonl) and print precision
    /// and recall instead of the paths (implies --paths).
    #[arg(long, value_name = "FILE")]
    truth: Option<PathBuf>,
    /// Draw diagrams into DIR (default: ./flowtrace-diagrams; implies --paths):
    /// topology.svg, and for each chosen path path-ID-chain.svg, path-ID-ladder.svg
    /// (more pages: -ladder-2.svg, ...) and path-ID-swimlanes.svg. The files written
    /// are listed at the end.
    #[arg(long, value_name = "DIR", num_args = 0..=1, default_missing_value = DEFAULT_SVG_DIR)]
    svg: Option<PathBuf>,
    /// Write a self-contained HTML report to FILE (implies --paths): summary, a table
    /// of every path (sort, filter), each path's chain and hops (and its ladder and
    /// swimlanes when kept, as for --svg), the topology and the VIP timeline.
    #[arg(long, value_name = "FILE")]
    html: Option<PathBuf>,
    /// With --svg: also write topology.dot and path-ID.dot (Graphviz).
    #[arg(long, requires = "svg")]
    dot: bool,
    /// With --svg: also write topology.mmd and path-ID.mmd (Mermaid).
    #[arg(long, requires = "svg")]
    mermaid: bool,
    /// Paths to draw, by id (repeatable). Default: the slowest complete path with the
    /// most hops, and the first failed one.
    #[arg(long = "path", value_name = "ID")]
    path_ids: Vec<usize>,
    /// Draw the paths whose URI matches PATTERN (`*` wildcard).
    #[arg(long, value_name = "PATTERN")]
    uri: Option<String>,
    /// Draw the N slowest paths.
    #[arg(long, value_name = "N")]
    slowest: Option<usize>,
    /// Draw the failed paths.
    #[arg(long)]
    failed: bool,
}

#[derive(clap::Args, Debug)]
struct CheckArgs {
    #[command(flatten)]
    capture: CaptureArgs,
    /// The expectation file (TOML, docs/check.md).
    #[arg(long, value_name = "FILE")]
    expect: Option<PathBuf>,
    /// Write (or rewrite) the expectation file from the captures instead of checking;
    /// rules already in it are kept.
    #[arg(long, requires = "expect")]
    bless: bool,
    /// A rule to check besides the expectation's (repeatable), e.g.
    /// "no 5xx", "every path passes vip, gateway, load_balancer, backend".
    #[arg(long, value_name = "RULE")]
    rule: Vec<String>,
    /// `text` (a FAIL line per difference) or `json` ({"checks": N, "failures": [...]}).
    #[arg(long, value_enum, default_value_t = FormatArg::Text)]
    format: FormatArg,
}

/// Parses the flags and runs the command.
pub fn run() -> Result<ExitCode> {
    let cli = Cli::parse();
    match cli.command {
        Command::Pcap(args) => pcap(args),
        Command::Check(args) => check_cmd(args),
        #[cfg(feature = "live")]
        Command::Live(args) => live::run(args),
        #[cfg(feature = "nats")]
        Command::Agent(args) => nats::agent(args),
        #[cfg(feature = "nats")]
        Command::Collect(args) => nats::collect(args),
        Command::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut cmd, "flowtrace", &mut io::stdout().lock());
            Ok(ExitCode::SUCCESS)
        }
        Command::Man { dir } => man(dir),
    }
}

/// `flowtrace man`: the manual pages, from the clap definition.
fn man(dir: Option<PathBuf>) -> Result<ExitCode> {
    let cmd = <Cli as clap::CommandFactory>::command();
    let Some(dir) = dir else {
        clap_mangen::Man::new(cmd).render(&mut io::stdout().lock())?;
        return Ok(ExitCode::SUCCESS);
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut written = Vec::new();
    let mut page = |name: String, cmd: clap::Command| -> Result<()> {
        let path = dir.join(format!("{name}.1"));
        let mut buf = Vec::new();
        clap_mangen::Man::new(cmd).title(name).render(&mut buf)?;
        std::fs::write(&path, buf).with_context(|| format!("cannot write {}", path.display()))?;
        written.push(path.display().to_string());
        Ok(())
    };
    for sub in cmd.get_subcommands() {
        let name = format!("flowtrace-{}", sub.get_name());
        page(name, sub.clone())?;
    }
    page("flowtrace".into(), cmd)?;
    eprintln!("flowtrace: wrote {}", written.join(" "));
    Ok(ExitCode::SUCCESS)
}

fn load_links(args: &CaptureArgs) -> Result<Vec<Option<HostLinks>>> {
    let mut out: Vec<Option<HostLinks>> = vec![None; args.files.len()];
    for spec in &args.links {
        let (capture, file) = match spec.split_once('=') {
            Some((c, f)) => (Some(PathBuf::from(c)), PathBuf::from(f)),
            None => (None, PathBuf::from(spec)),
        };
        let index = match capture {
            Some(c) => args.files.iter().position(|f| *f == c).with_context(|| {
                format!("--links {spec}: {} is not one of the captures", c.display())
            })?,
            None if args.files.len() == 1 => 0,
            None => bail!("--links {spec}: with several captures, say which: --links CAPTURE=FILE"),
        };
        out[index] = Some(HostLinks::load(&file)?);
    }
    for (i, capture) in args.files.iter().enumerate() {
        if out[i].is_none() && capture.as_os_str() != "-" {
            if let Some(path) = links::find_beside(capture) {
                out[i] = Some(HostLinks::load(&path)?);
            }
        }
    }
    Ok(out)
}

/// Reads the topology file of `--names`.
pub(crate) fn load_names(
    path: &Option<PathBuf>,
) -> Result<Option<flowtrace::correlate::names::Names>> {
    let Some(path) = path else { return Ok(None) };
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let names = flowtrace::correlate::names::Names::parse(&text)
        .map_err(|e| anyhow::anyhow!("{}: invalid topology file: {e}", path.display()))?;
    Ok(Some(names))
}

fn parse_offsets(args: &CaptureArgs) -> Result<Vec<Option<f64>>> {
    let mut out = vec![None; args.files.len()];
    for spec in &args.offset {
        let (capture, secs) = spec
            .rsplit_once('=')
            .with_context(|| format!("--offset {spec}: expected CAPTURE=SECONDS"))?;
        let secs: f64 = secs
            .parse()
            .ok()
            .filter(|s: &f64| s.is_finite())
            .with_context(|| format!("--offset {spec}: {secs:?} is not a number of seconds"))?;
        let index = args
            .files
            .iter()
            .position(|f| f.as_os_str() == capture)
            .with_context(|| format!("--offset {spec}: {capture} is not one of the captures"))?;
        out[index] = Some(secs);
    }
    Ok(out)
}

/// The captures opened and the pipeline set up, flags validated.
struct Opened {
    source: FileSource,
    pipeline: Pipeline,
    links: Vec<Option<HostLinks>>,
    offsets: Vec<Option<f64>>,
    progress: Option<ProgressBar>,
}

/// Opens the captures; `keep_segments`: record segment summaries for diagrams.
fn open(args: &CaptureArgs, keep_segments: bool) -> Result<Opened> {
    open_with(args, keep_segments, false)
}

/// As [`open`]; `read_ahead`: each file is read (and decompressed) on a thread of its
/// own.
fn open_with(args: &CaptureArgs, keep_segments: bool, read_ahead: bool) -> Result<Opened> {
    if args.files.is_empty() {
        bail!("no capture file given: name one or more (`-` reads standard input)");
    }
    if args.idle_timeout.is_nan() || args.idle_timeout <= 0.0 {
        bail!("--idle-timeout must be a positive number of seconds");
    }
    let offsets = parse_offsets(args)?;
    let links = load_links(args)?;
    let source = if read_ahead {
        FileSource::open_reading_ahead(&args.files)?
    } else {
        FileSource::open(&args.files)?
    };
    let pipeline = Pipeline::new(PipelineConfig {
        links: links.clone(),
        verify_checksums: args.verify_checksums,
        ..args
            .limits
            .pipeline_config(args.idle_timeout, args.max_open_exchanges, keep_segments)
    });
    let progress =
        (!args.no_progress && io::stderr().is_terminal()).then(|| match source.progress().1 {
            Some(t) => ProgressBar::with_draw_target(Some(t), ProgressDrawTarget::stderr())
                .with_style(
                    ProgressStyle::with_template(
                        "{bar:40} {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta} {msg}",
                    )
                    .expect("valid template"),
                ),
            None => ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr()),
        });
    Ok(Opened {
        source,
        pipeline,
        links,
        offsets,
        progress,
    })
}

/// Reads every frame, handing completed transactions to `each`.
fn read_all(
    o: &mut Opened,
    stats: &mut Stats,
    mut each: impl FnMut(&mut Pipeline) -> Result<()>,
) -> Result<()> {
    let mut frames: u64 = 0;
    while let Some((frame, interfaces)) = o.source.next_frame(stats)? {
        o.pipeline.push(&frame, interfaces);
        frames += 1;
        if o.pipeline.has_completed() {
            each(&mut o.pipeline)?;
        }
        if frames.is_multiple_of(65_536) {
            if let Some(bar) = &o.progress {
                bar.set_position(o.source.progress().0);
                bar.set_message(format!(
                    "{frames} frames, {} open connections",
                    o.pipeline.open_connections()
                ));
            }
        }
    }
    o.pipeline.finish();
    each(&mut o.pipeline)?;
    if let Some(bar) = o.progress.take() {
        bar.finish_and_clear();
    }
    for w in o.source.warnings() {
        eprintln!(
            "flowtrace: warning: {}: {}",
            sanitize(&w.file),
            sanitize(&w.message)
        );
    }
    Ok(())
}

fn output(path: &Option<PathBuf>) -> Result<BufWriter<Box<dyn Write>>> {
    Ok(BufWriter::with_capacity(1 << 16, output_raw(path)?))
}

/// `-o FILE` or standard output, unbuffered. Any thread may write it (standard
/// output's handle locks it at each write: write it in large pieces, through a
/// buffer).
fn output_raw(path: &Option<PathBuf>) -> Result<Box<dyn Write + Send>> {
    Ok(match path {
        Some(p) => Box::new(
            OutputFile::create(p).with_context(|| format!("cannot create {}", p.display()))?,
        ),
        None => Box::new(io::stdout()),
    })
}

fn pcap(args: PcapArgs) -> Result<ExitCode> {
    let format = match args.format {
        FormatArg::Text => Format::Text,
        FormatArg::Json => Format::Json,
        FormatArg::Jsonl => Format::Jsonl,
    };
    if args.paths || args.truth.is_some() || args.svg.is_some() || args.html.is_some() {
        return paths(args, format);
    }
    let threads = args.threads.map_or_else(
        || std::thread::available_parallelism().map_or(1, |n| n.get()),
        usize::from,
    );
    let mut opened = open_with(&args.capture, false, threads > 1)?;
    // Transactions only: nothing asks how far correlation may decide.
    opened.pipeline.without_pending_floor();
    if !args.headers {
        // A record without header lists shows only the Host header.
        opened.pipeline.keeping_headers(KeptHeaders::Host);
    }
    if threads > 1 && format != Format::Text {
        // The merging shard writes the output itself, 1 MiB at a time: handing
        // its bytes to the calling thread (`write_behind`) was one more copy of the
        // whole output and one more thread on the cores (docs/PERFORMANCE.md,
        // session 29).
        let out = BufWriter::with_capacity(WRITE_CHUNK, output_raw(&args.output)?);
        write_transactions_sharded(&args, format, &mut opened, threads, out)?;
        return Ok(ExitCode::SUCCESS);
    }
    let out = output_raw(&args.output)?;
    if threads > 1 {
        write_behind(out, |chunks| {
            write_transactions(&args, format, &mut opened, chunks)
        })?;
    } else {
        write_transactions(
            &args,
            format,
            &mut opened,
            BufWriter::with_capacity(1 << 16, out),
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Every transaction of the captures, then the summary, written to `out`.
fn write_transactions<W: Write>(
    args: &PcapArgs,
    format: Format,
    opened: &mut Opened,
    out: W,
) -> Result<()> {
    let mut writer = Writer::new(out, format, args.headers)?.with_times(args.times.format());
    let mut stats = Stats::default();
    read_all(opened, &mut stats, |p| {
        Ok(p.emit(|t, v| writer.transaction(t, v))?)
    })?;
    let pipeline = &opened.pipeline;
    let mut all = pipeline.stats();
    all.merge(&stats);
    all.files = args.capture.files.len() as u64;
    let inputs = opened.source.file_names();
    let anomalies = pipeline.anomalies();
    let summary = Summary {
        inputs: &inputs,
        vantages: pipeline.vantages(),
        warnings: opened.source.warnings(),
        stats: &all,
        anomalies: &anomalies,
        vrrp: pipeline.vrrp(),
        gratuitous_arp: pipeline.gratuitous_arps(),
    };
    writer.finish(&summary)?;
    Ok(())
}

/// As [`write_transactions`], with TCP and HTTP sharded by connection over
/// `shards` threads (JSON formats: text lines carry state from one to the next, the
/// date line); the bytes are the same as one thread's (`pipeline::run_sharded`).
fn write_transactions_sharded<W: Write + Send>(
    args: &PcapArgs,
    format: Format,
    opened: &mut Opened,
    shards: usize,
    out: W,
) -> Result<()> {
    let writer = Writer::new(out, format, args.headers)?.with_times(args.times.format());
    let tcp = args
        .capture
        .limits
        .pipeline_config(
            args.capture.idle_timeout,
            args.capture.max_open_exchanges,
            false,
        )
        .tcp;
    let mut stats = Stats::default();
    let progress = opened.progress.take();
    let run = flowtrace::pipeline::run_sharded(
        &mut opened.pipeline,
        &mut opened.source,
        &mut stats,
        shards,
        tcp,
        writer,
        args.headers,
        |frames, source| {
            if let Some(bar) = &progress {
                bar.set_position(source.progress().0);
                bar.set_message(format!("{frames} frames"));
            }
        },
    )?;
    if let Some(bar) = progress {
        bar.finish_and_clear();
    }
    for w in opened.source.warnings() {
        eprintln!(
            "flowtrace: warning: {}: {}",
            sanitize(&w.file),
            sanitize(&w.message)
        );
    }
    let pipeline = &opened.pipeline;
    let mut all = run.stats;
    all.merge(&stats);
    all.files = args.capture.files.len() as u64;
    let inputs = opened.source.file_names();
    let summary = Summary {
        inputs: &inputs,
        vantages: pipeline.vantages(),
        warnings: opened.source.warnings(),
        stats: &all,
        anomalies: &run.anomalies,
        vrrp: pipeline.vrrp(),
        gratuitous_arp: pipeline.gratuitous_arps(),
    };
    run.writer.finish(&summary)?;
    Ok(())
}

/// Bytes handed to the writing thread at a time (and written at a time by a
/// sharded run's merger). 1 MiB writes into ext4's page cache took 0.04 s of system
/// time for 241 MiB against 0.05 s at 256 KiB, and 0.06 s at 64 KiB (`dd`, session
/// 34); 2 and 4 MiB took 0.25-0.58 s.
const WRITE_CHUNK: usize = flowtrace::render::RECORD_BUFFER;
/// Chunks in flight: a slow output (a full disk, a slow pipe) makes the work wait
/// instead of letting output pile up in memory (at most 4 MiB).
const WRITE_CHUNKS_IN_FLIGHT: usize = 4;

/// Output gathered into large chunks that another thread writes.
struct ChunkWriter {
    buf: Vec<u8>,
    tx: std::sync::mpsc::SyncSender<Vec<u8>>,
    spare: std::sync::mpsc::Receiver<Vec<u8>>,
}

impl ChunkWriter {
    fn ship(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let next = self
            .spare
            .try_recv()
            .unwrap_or_else(|_| Vec::with_capacity(WRITE_CHUNK));
        let full = std::mem::replace(&mut self.buf, next);
        // A closed channel means the writing thread stopped on an error, which it
        // reports itself.
        self.tx
            .send(full)
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the output stopped"))
    }
}

impl Write for ChunkWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= WRITE_CHUNK {
            self.ship()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.ship()
    }
}

/// Runs `work` on a second thread, writing what it writes to `out` on this one
/// (text output with more than one thread; a sharded run's merger writes itself):
/// the output's system calls
/// (copying every byte into the page cache, or waiting for a pipe's reader) leave the
/// thread that reads, parses and formats. The bytes and their order are the same as
/// with one thread.
///
/// What crosses is large byte chunks, recycled: handing the transactions themselves
/// to a formatting thread was measured slower than one thread on small-packet traffic
/// (their memory, allocated on one core and read and freed on the other, made every
/// allocation a cache miss; docs/PERFORMANCE.md).
fn write_behind(
    mut out: Box<dyn Write>,
    work: impl FnOnce(&mut ChunkWriter) -> Result<()> + Send,
) -> Result<()> {
    let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(WRITE_CHUNKS_IN_FLIGHT);
    let (spare_tx, spare_rx) = std::sync::mpsc::channel::<Vec<u8>>();
    std::thread::scope(|scope| {
        let worker = scope.spawn(move || {
            let mut chunks = ChunkWriter {
                buf: Vec::with_capacity(WRITE_CHUNK),
                tx,
                spare: spare_rx,
            };
            work(&mut chunks)?;
            chunks.ship()?;
            Ok::<(), anyhow::Error>(())
        });
        let mut written: io::Result<()> = Ok(());
        for mut chunk in rx.iter() {
            written = out.write_all(&chunk);
            if written.is_err() {
                break;
            }
            chunk.clear();
            // The worker may have finished: then the chunk is dropped here.
            let _ = spare_tx.send(chunk);
        }
        drop(rx);
        if written.is_ok() {
            written = out.flush();
        }
        let worked = worker
            .join()
            .map_err(|_| anyhow::anyhow!("the reading thread panicked"))?;
        // The output's error first: the worker's is then only "the output stopped".
        written.context("cannot write output")?;
        worked
    })
}

/// A whole run correlated into request paths (all kept: for checks, the scorer and
/// diagrams).
pub(crate) struct Correlated {
    report: Report,
}

/// Every path of the run, with the report around them.
pub(crate) fn correlated(args: &CaptureArgs) -> Result<Correlated> {
    let mut paths = Vec::new();
    let s = stream_paths(args, false, |p| {
        paths.push(p);
        Ok(())
    })?;
    Ok(Correlated {
        report: s.tail.into_report(paths),
    })
}

/// The paths `--path`, `--uri`, `--slowest` and `--failed` ask to draw.
/// With `--html` and no choice, the report keeps the packets of the 10 slowest paths
/// and of the failed ones (at most [`flowtrace::diagram::MAX_PATHS`] in all), so that
/// the paths a reader opens first have their ladder and swimlanes.
pub(crate) fn selection(args: &PcapArgs) -> flowtrace::diagram::Selection {
    let nothing_asked =
        args.path_ids.is_empty() && args.uri.is_none() && args.slowest.is_none() && !args.failed;
    if nothing_asked && args.html.is_some() {
        return flowtrace::diagram::Selection {
            ids: Vec::new(),
            uri: None,
            slowest: Some(10),
            failed: true,
        };
    }
    flowtrace::diagram::Selection {
        ids: args.path_ids.clone(),
        uri: args.uri.clone(),
        slowest: args.slowest,
        failed: args.failed,
    }
}

/// Draws the paths `keeper` kept and the topology into `dir`, and says which files
/// it wrote. `tail` gives the address book, the clock offsets and the VIP holders.
pub(crate) fn draw(
    args: &DrawArgs,
    dir: &std::path::Path,
    keeper: flowtrace::diagram::Keeper,
    tail: Tail,
    vantages: &[Vantage],
) -> Result<()> {
    use flowtrace::diagram::{self, export};
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let write = |name: String, text: &str| -> Result<()> {
        let path = dir.join(&name);
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))
    };
    let (kept, topology) = keeper.finish(&tail.vip_timeline);
    let report = tail.into_report(Vec::new());
    let mut written = vec!["topology.svg".to_string()];
    write("topology.svg".into(), &topology.svg())?;
    if args.dot {
        write("topology.dot".into(), &export::topology_dot(&topology))?;
        written.push("topology.dot".into());
    }
    if args.mermaid {
        write("topology.mmd".into(), &export::topology_mermaid(&topology))?;
        written.push("topology.mmd".into());
    }
    for p in &kept {
        let id = p.id;
        write(format!("path-{id}-chain.svg"), &diagram::chain(&report, p))?;
        written.push(format!("path-{id}-chain.svg"));
        for (page, svg) in diagram::ladder(&report, p, vantages, &p.segments)
            .iter()
            .enumerate()
        {
            let name = if page == 0 {
                format!("path-{id}-ladder.svg")
            } else {
                format!("path-{id}-ladder-{}.svg", page + 1)
            };
            write(name.clone(), svg)?;
            written.push(name);
        }
        write(
            format!("path-{id}-swimlanes.svg"),
            &diagram::swimlanes(&report, p, vantages, &p.segments),
        )?;
        written.push(format!("path-{id}-swimlanes.svg"));
        if args.dot {
            write(format!("path-{id}.dot"), &export::path_dot(p))?;
            written.push(format!("path-{id}.dot"));
        }
        if args.mermaid {
            write(format!("path-{id}.mmd"), &export::path_mermaid(p))?;
            written.push(format!("path-{id}.mmd"));
        }
    }
    eprintln!(
        "flowtrace: wrote {} file(s) to {}: {}",
        written.len(),
        dir.display(),
        written.join(" ")
    );
    Ok(())
}

/// What `draw` takes of the flags.
pub(crate) struct DrawArgs {
    pub(crate) dot: bool,
    pub(crate) mermaid: bool,
}

impl PcapArgs {
    fn draw_args(&self) -> DrawArgs {
        DrawArgs {
            dot: self.dot,
            mermaid: self.mermaid,
        }
    }
}

/// Correlates `args`' captures in one pass and draws the diagrams into `dir`,
/// printing nothing else (`flowtrace live --svg` over its `-w` file).
pub(crate) fn diagrams_only(args: &PcapArgs, dir: &std::path::Path) -> Result<()> {
    let mut keeper = flowtrace::diagram::Keeper::new(selection(args));
    let s = stream_paths(&args.capture, true, |p| {
        keeper.offer(&p);
        Ok(())
    })?;
    draw(&args.draw_args(), dir, keeper, s.tail, &s.vantages)
}

fn paths(args: PcapArgs, format: Format) -> Result<ExitCode> {
    check_svg_dir(&args.svg)?;
    if let Some(m) = args.min_confidence {
        if !(0.0..=1.0).contains(&m) {
            bail!("--min-confidence must be between 0 and 1");
        }
    }
    if let Some(truth) = &args.truth {
        return score_run(&args, truth, format);
    }
    // On a terminal the summary comes first, then the slowest and failed paths
    // (bounded); otherwise paths go out as they are final and the summary last.
    // Either way only the paths the diagrams may draw are kept whole.
    let summary_first = format == Format::Text
        && !args.all
        && (args.summary || (args.output.is_none() && io::stdout().is_terminal()));
    let mut out = Some(output(&args.output)?);
    let mut writer = match summary_first {
        true => None,
        false => Some(
            PathWriter::new(out.take().expect("one output"), format)?
                .with_times(args.times.format())
                .with_min_confidence(args.min_confidence),
        ),
    };
    let mut highlights = summary_first
        .then(|| PathHighlights::new(args.top).with_min_confidence(args.min_confidence));
    let mut keeper = (args.svg.is_some() || args.html.is_some())
        .then(|| flowtrace::diagram::Keeper::new(selection(&args)));
    let mut page = args.html.as_deref().map(html::create).transpose()?;
    let s = stream_paths(&args.capture, keeper.is_some(), |p| {
        if let Some(k) = &mut keeper {
            k.offer(&p);
        }
        if let Some(h) = &mut highlights {
            h.offer(&p);
        }
        if let Some(w) = &mut writer {
            w.path(&p)?;
        }
        if let Some(h) = &mut page {
            h.path(&p)?;
        }
        Ok(())
    })?;
    if let Some(w) = writer {
        w.finish(&s.tail, &s.summary())?;
    }
    if let (Some(h), Some(mut out)) = (highlights, out) {
        h.write(&mut out, &s.tail, &s.summary(), &mut args.times.format())?;
        out.flush()?;
    }
    if let (Some(file), Some(page), Some(keeper)) = (&args.html, page, &keeper) {
        html::finish(file, page, keeper.clone(), &s)?;
    }
    if let (Some(dir), Some(keeper)) = (&args.svg, keeper) {
        draw(&args.draw_args(), dir, keeper, s.tail, &s.vantages)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// `--truth`: scores every path against the lab's ground truth (the scorer holds
/// all paths: a lab tool, for runs of lab size).
fn score_run(args: &PcapArgs, truth: &std::path::Path, format: Format) -> Result<ExitCode> {
    let c = correlated(&args.capture)?;
    let mut out = output(&args.output)?;
    let text = read_truth(truth).with_context(|| format!("cannot read {}", truth.display()))?;
    let scored =
        flowtrace::score::score(&c.report, &text).with_context(|| truth.display().to_string())?;
    if format == Format::Text {
        let line = |name: &str, s: &flowtrace::score::Score| {
            format!(
                "{name:18} precision {:7.3} %  recall {:7.3} %  ({} right of {} produced, {} expected)",
                s.precision * 100.0,
                s.recall * 100.0,
                s.correct,
                s.produced,
                s.expected
            )
        };
        writeln!(
            out,
            "{} truth requests, {} paths",
            scored.truth_requests, scored.paths
        )?;
        writeln!(out, "{}", line("whole paths", &scored.paths_exact))?;
        for (k, v) in &scored.links {
            writeln!(out, "{}", line(k, v))?;
        }
        for m in &scored.mistakes {
            writeln!(out, "  {m}")?;
        }
        if let Some(b) = &scored.baseline {
            writeln!(
                out,
                "baseline (timing only, Hungarian; {} exchanges, {} candidate pairs, {} links, {} chunks): {} paths",
                b.exchanges, b.candidate_pairs, b.linked, b.chunks, b.paths
            )?;
            writeln!(out, "{}", line("  whole paths", &b.paths_exact))?;
            for (k, v) in &b.links {
                writeln!(out, "{}", line(&format!("  {k}"), v))?;
            }
        }
        if let Some(c) = &scored.calibration {
            let pct = |x: Option<f64>| x.map_or("-".to_string(), |x| format!("{:.1} %", x * 100.0));
            writeln!(
                out,
                "calibration: {} links with a confidence, {} right ({})",
                c.links,
                c.right,
                pct((c.links > 0).then(|| c.right as f64 / c.links as f64))
            )?;
            for b in &c.bins {
                let close = if b.to >= 1.0 { ']' } else { ')' };
                writeln!(
                    out,
                    "  confidence [{:.2}, {:.2}{close}  {:6} links  {:6} right  {}",
                    b.from,
                    b.to,
                    b.links,
                    b.right,
                    pct(b.share_right)
                )?;
            }
            writeln!(
                out,
                "  confidence >= {:.2}: {} links ({} of all), {} right ({})",
                c.high.confidence,
                c.high.links,
                pct(c.high.share_of_links),
                c.high.right,
                pct(c.high.share_right)
            )?;
        }
    } else {
        serde_json::to_writer(&mut out, &scored)?;
        writeln!(out)?;
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// The truth file's text; gzip-compressed when it starts with gzip's magic (the
/// realistic scenarios ship `truth.jsonl.gz`).
fn read_truth(path: &std::path::Path) -> Result<String> {
    use std::io::Read;
    let bytes = std::fs::read(path)?;
    if bytes.starts_with(&[0x1f, 0x8b]) {
        let mut text = String::new();
        flate2::read::MultiGzDecoder::new(&bytes[..]).read_to_string(&mut text)?;
        Ok(text)
    } else {
        Ok(String::from_utf8(bytes)?)
    }
}

fn check_cmd(args: CheckArgs) -> Result<ExitCode> {
    if args.expect.is_none() && args.rule.is_empty() {
        bail!("nothing to check: give --expect FILE and/or --rule RULE");
    }
    // Roles a --names file defines may be named in rules besides the built-in ones.
    let named_roles: Vec<String> = load_names(&args.capture.names)?
        .map(|n| n.services.into_values().filter_map(|s| s.role).collect())
        .unwrap_or_default();
    // Rules are parsed before the captures are read, so a typo fails fast.
    let mut rules = Vec::new();
    for r in &args.rule {
        rules.push(
            check::Rule::parse_with_roles(r, &named_roles)
                .with_context(|| format!("--rule {r:?}"))?,
        );
    }
    let existing = match &args.expect {
        Some(path) if path.exists() || !args.bless => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            Some(
                Expectation::parse_with_roles(&text, &named_roles)
                    .with_context(|| path.display().to_string())?,
            )
        }
        _ => None,
    };
    let c = correlated(&args.capture)?;
    if args.bless {
        let path = args
            .expect
            .as_ref()
            .expect("clap requires --expect with --bless");
        let mut blessed = Expectation::from_report(&c.report);
        if let Some(old) = &existing {
            blessed.description = old.description.clone();
            blessed.rules = old.rules.clone();
            blessed.latency_factor = old.latency_factor;
        }
        std::fs::write(path, blessed.to_toml()?)
            .with_context(|| format!("cannot write {}", path.display()))?;
        eprintln!("flowtrace: wrote {}", path.display());
        return Ok(ExitCode::SUCCESS);
    }
    let outcome = check::check(&c.report, existing.as_ref(), &rules, &named_roles)?;
    let mut out = io::stdout().lock();
    if !matches!(args.format, FormatArg::Text) {
        serde_json::to_writer(&mut out, &outcome)?;
        writeln!(out)?;
        return Ok(if outcome.failures.is_empty() {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        });
    }
    for line in &outcome.failures {
        // Shapes name hosts and interfaces, which come from capture files.
        writeln!(out, "FAIL {}", sanitize(line))?;
    }
    writeln!(
        out,
        "{}: {} checks, {} failed",
        if outcome.failures.is_empty() {
            "ok"
        } else {
            "FAILED"
        },
        outcome.checks,
        outcome.failures.len()
    )?;
    Ok(if outcome.failures.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

#[cfg(test)]
mod tests {
    use super::{parse_bytes, LimitArgs, EXCHANGE_BYTES};

    #[test]
    fn memory_budget_takes_binary_suffixes_and_refuses_the_rest() {
        assert_eq!(parse_bytes("512M"), Ok(512 << 20));
        assert_eq!(parse_bytes("1G"), Ok(1 << 30));
        assert_eq!(
            parse_bytes("64KiB").map_err(|e| e.contains("at least 1M")),
            Err(true)
        );
        assert_eq!(parse_bytes("2097152"), Ok(2 << 20));
        assert_eq!(parse_bytes("3gb"), Ok(3 << 30));
        for bad in ["", "M", "12X", "1.5G", "-1M", "99999999999T"] {
            assert!(parse_bytes(bad).is_err(), "{bad}");
        }
    }

    /// Correlation keeps at most a quarter of the budget, fragments a sixteenth, the
    /// segment journal an eighth with diagrams; the TCP table has the rest.
    #[test]
    fn budget_is_shared_between_correlation_fragments_journal_and_tcp() {
        let limits = |budget: u64| LimitArgs {
            memory_budget: budget,
            max_connections: 10,
        };
        let big = limits(512 << 20);
        // 200,000 measured exchanges would not fit a quarter of 512 MiB: lowered.
        let fit = (128 << 20) / EXCHANGE_BYTES as usize;
        assert_eq!(big.open_exchanges(200_000), fit);
        assert_eq!(big.open_exchanges(1_000), 1_000);
        assert_eq!(big.open_bytes(1_000), 1_000 * EXCHANGE_BYTES as usize);
        let c = big.pipeline_config(1.0, 200_000, false);
        assert_eq!(
            c.tcp.memory_budget,
            (512 << 20) - fit * EXCHANGE_BYTES as usize - (32 << 20)
        );
        assert_eq!((c.fragment_budget, c.journal_budget), (32 << 20, 0));
        let svg = big.pipeline_config(1.0, 200_000, true);
        assert_eq!(svg.journal_budget, 64 << 20);
        assert_eq!(svg.tcp.memory_budget, c.tcp.memory_budget - (64 << 20));
        let small = limits(64 << 20);
        assert_eq!(
            small.open_exchanges(200_000) as u64,
            (16 << 20) / EXCHANGE_BYTES
        );
        let agent = small.pipeline_config(1.0, 0, false);
        assert_eq!(agent.tcp.memory_budget, (64 << 20) - (4 << 20));
        assert_eq!(agent.tcp.max_connections, 10);
        for budget in [1 << 20, 64 << 20, 512 << 20, 1 << 30] {
            let c = limits(budget).pipeline_config(1.0, 200_000, true);
            let correlation = limits(budget).open_exchanges(200_000) as u64 * EXCHANGE_BYTES;
            let total = c.tcp.memory_budget + c.fragment_budget + c.journal_budget;
            assert_eq!(total as u64 + correlation, budget);
        }
    }
}
