//! Command-line flags (clap) turned into a validated run of the library.

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use flowtrace::anomaly::Stats;
use flowtrace::capture::FileSource;
use flowtrace::correlate::{correlate, Input};
use flowtrace::links::{self, HostLinks};
use flowtrace::pipeline::{Pipeline, PipelineConfig};
use flowtrace::render::{Format, Summary, Writer};
use flowtrace::tcp::TcpConfig;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::fs::File;
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
    /// time-ordered stream and print their HTTP transactions.
    Pcap(PcapArgs),
}

#[derive(ValueEnum, Clone, Copy, Debug)]
enum FormatArg {
    Text,
    Json,
    Jsonl,
}

#[derive(clap::Args, Debug)]
struct PcapArgs {
    /// Capture files, typically one per host.
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// Interface names for SLL2 captures: `ip -j addr` output of the capturing host,
    /// as CAPTURE=FILE (or just FILE with a single capture). Without it,
    /// `<capture>.links.json` beside the capture is used when present.
    #[arg(long, value_name = "[CAPTURE=]FILE")]
    links: Vec<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = FormatArg::Text)]
    format: FormatArg,
    /// Write output to FILE instead of stdout.
    #[arg(short, long, value_name = "FILE")]
    output: Option<PathBuf>,
    /// Include request and response headers in JSON records.
    #[arg(long)]
    headers: bool,
    /// Print request paths (correlated across captures, NAT, proxies and the VIP)
    /// instead of per-capture-point transactions.
    #[arg(long)]
    paths: bool,
    /// A capture's clock offset in seconds (subtracted from its timestamps), as
    /// CAPTURE=SECONDS; overrides the estimate. Repeatable.
    #[arg(long, value_name = "CAPTURE=SECONDS")]
    offset: Vec<String>,
    /// Score the paths against a lab ground truth (truth.jsonl) and print precision
    /// and recall instead of the paths (implies --paths).
    #[arg(long, value_name = "FILE")]
    truth: Option<PathBuf>,
    /// Close TCP connections idle this many seconds (capture time).
    #[arg(long, default_value_t = 300.0, value_name = "SECS")]
    idle_timeout: f64,
    /// Verify TCP checksums and count mismatches (segments are used all the same:
    /// offloads make checksums on Linux captures look wrong).
    #[arg(long)]
    verify_checksums: bool,
    /// Never show a progress bar (it is shown only when stderr is a terminal).
    #[arg(long)]
    no_progress: bool,
}

/// Parses the flags and runs the command.
pub fn run() -> Result<ExitCode> {
    let cli = Cli::parse();
    match cli.command {
        Command::Pcap(args) => pcap(args),
    }
}

fn load_links(args: &PcapArgs) -> Result<Vec<Option<HostLinks>>> {
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

fn parse_offsets(args: &PcapArgs) -> Result<Vec<Option<f64>>> {
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

fn pcap(args: PcapArgs) -> Result<ExitCode> {
    if args.idle_timeout.is_nan() || args.idle_timeout <= 0.0 {
        bail!("--idle-timeout must be a positive number of seconds");
    }
    let offsets = parse_offsets(&args)?;
    let links = load_links(&args)?;
    let mut source = FileSource::open(&args.files)?;
    let config = PipelineConfig {
        tcp: TcpConfig {
            idle_timeout_ns: (args.idle_timeout * 1e9) as i64,
            ..TcpConfig::default()
        },
        links: links.clone(),
        verify_checksums: args.verify_checksums,
    };
    let mut pipeline = Pipeline::new(config);
    let out: Box<dyn Write> = match &args.output {
        Some(p) => {
            Box::new(File::create(p).with_context(|| format!("cannot create {}", p.display()))?)
        }
        None => Box::new(io::stdout().lock()),
    };
    let format = match args.format {
        FormatArg::Text => Format::Text,
        FormatArg::Json => Format::Json,
        FormatArg::Jsonl => Format::Jsonl,
    };
    let out = BufWriter::with_capacity(1 << 16, out);
    if args.paths || args.truth.is_some() {
        return paths(args, source, pipeline, out, format, links, offsets);
    }
    let mut writer = Writer::new(out, format, args.headers)?;

    let progress = if !args.no_progress && io::stderr().is_terminal() {
        let (_, total) = source.progress();
        let bar = match total {
            Some(t) => ProgressBar::with_draw_target(Some(t), ProgressDrawTarget::stderr())
                .with_style(
                    ProgressStyle::with_template(
                        "{bar:40} {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta} {msg}",
                    )
                    .expect("valid template"),
                ),
            None => ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr()),
        };
        Some(bar)
    } else {
        None
    };

    let mut stats = Stats::default();
    let mut frames: u64 = 0;
    while let Some((frame, interfaces)) = source.next_frame(&mut stats)? {
        pipeline.push(&frame, interfaces);
        frames += 1;
        if pipeline.has_completed() {
            pipeline.emit(|t, vantages| writer.transaction(t, vantages))?;
        }
        if frames.is_multiple_of(65_536) {
            if let Some(bar) = &progress {
                bar.set_position(source.progress().0);
                bar.set_message(format!(
                    "{frames} frames, {} open connections",
                    pipeline.open_connections()
                ));
            }
        }
    }
    pipeline.finish();
    pipeline.emit(|t, vantages| writer.transaction(t, vantages))?;
    let vantages = pipeline.vantages().to_vec();
    if let Some(bar) = progress {
        bar.finish_and_clear();
    }
    let mut all = pipeline.stats();
    all.merge(&stats);
    all.files = args.files.len() as u64;
    let inputs = source.file_names();
    let anomalies = pipeline.anomalies();
    let summary = Summary {
        inputs: &inputs,
        vantages: &vantages,
        warnings: source.warnings(),
        stats: &all,
        anomalies: &anomalies,
        vrrp: pipeline.vrrp(),
        gratuitous_arp: pipeline.gratuitous_arps(),
    };
    writer.finish(&summary)?;
    for w in source.warnings() {
        eprintln!(
            "flowtrace: warning: {}: {}",
            flowtrace::render::sanitize(&w.file),
            flowtrace::render::sanitize(&w.message)
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `--paths`: keep every transaction, then correlate them into request paths.
fn paths(
    args: PcapArgs,
    mut source: FileSource,
    mut pipeline: Pipeline,
    mut out: BufWriter<Box<dyn Write>>,
    format: Format,
    links: Vec<Option<HostLinks>>,
    offsets: Vec<Option<f64>>,
) -> Result<ExitCode> {
    let mut stats = Stats::default();
    let mut transactions = Vec::new();
    while let Some((frame, interfaces)) = source.next_frame(&mut stats)? {
        pipeline.push(&frame, interfaces);
        if pipeline.has_completed() {
            transactions.extend(pipeline.drain());
        }
    }
    pipeline.finish();
    transactions.extend(pipeline.drain());
    let files = source.file_names();
    let input = Input {
        transactions: &transactions,
        vantages: pipeline.vantages(),
        files: &files,
        links: &links,
        vrrp: pipeline.vrrp(),
        garp: pipeline.gratuitous_arps(),
        offset_overrides: &offsets,
    };
    let report = correlate(&input);
    let mut all = pipeline.stats();
    all.merge(&stats);
    all.files = args.files.len() as u64;
    let samples = pipeline.anomalies();
    for w in source.warnings() {
        eprintln!(
            "flowtrace: warning: {}: {}",
            flowtrace::render::sanitize(&w.file),
            flowtrace::render::sanitize(&w.message)
        );
    }
    if let Some(truth) = &args.truth {
        let text = std::fs::read_to_string(truth)
            .with_context(|| format!("cannot read {}", truth.display()))?;
        let scored =
            flowtrace::score::score(&report, &text).with_context(|| truth.display().to_string())?;
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
        } else {
            serde_json::to_writer(&mut out, &scored)?;
            writeln!(out)?;
        }
        out.flush()?;
        return Ok(ExitCode::SUCCESS);
    }
    match format {
        Format::Text => {
            flowtrace::render::paths::write_report(&mut out, &report)?;
            let nonzero: Vec<String> = all
                .iter()
                .filter(|(_, v)| *v > 0)
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            writeln!(out, "counters: {}", nonzero.join(" "))?;
        }
        Format::Json | Format::Jsonl => {
            let mut doc = serde_json::to_value(&report)?;
            let map = doc.as_object_mut().expect("report is an object");
            let path_anomalies = map.remove("anomalies").unwrap_or_default();
            let mut anomalies = serde_json::to_value(&samples)?;
            anomalies["paths"] = path_anomalies;
            map.insert("anomalies".into(), anomalies);
            map.insert("inputs".into(), serde_json::to_value(&files)?);
            map.insert(
                "vantages".into(),
                serde_json::to_value(pipeline.vantages())?,
            );
            map.insert("warnings".into(), serde_json::to_value(source.warnings())?);
            map.insert("stats".into(), serde_json::to_value(&all)?);
            map.insert("vrrp".into(), serde_json::to_value(pipeline.vrrp())?);
            map.insert(
                "gratuitous_arp".into(),
                serde_json::to_value(pipeline.gratuitous_arps())?,
            );
            if format == Format::Json {
                serde_json::to_writer(&mut out, &doc)?;
                writeln!(out)?;
            } else {
                let paths = map.remove("paths").unwrap_or_default();
                for p in paths.as_array().into_iter().flatten() {
                    let mut p = p.clone();
                    p["type"] = "path".into();
                    serde_json::to_writer(&mut out, &p)?;
                    writeln!(out)?;
                }
                map.insert("type".into(), "summary".into());
                serde_json::to_writer(&mut out, &doc)?;
                writeln!(out)?;
            }
        }
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}
