//! `flowtrace live`: request paths from live interfaces, printed as they complete.
//!
//! Transactions are kept for a sliding window (`--window`); every second the window is
//! correlated and the paths whose last packet is older than `--settle` are printed
//! once (a path's client exchange ends last, after its upstream hops). Older
//! transactions leave the window, so memory stays flat over hours; the TCP table
//! evicts idle connections as for files.

use super::{correlated, diagrams, CaptureArgs, FormatArg, PcapArgs};
use anyhow::{bail, Context, Result};
use flowtrace::anomaly::Stats;
use flowtrace::capture::live::{LiveOptions, LiveSource, LiveStats, Received};
use flowtrace::capture::pcapng_writer::PcapngWriter;
use flowtrace::capture::Frame;
use flowtrace::correlate::{correlate, Input, RequestPath};
use flowtrace::http::HttpTransaction;
use flowtrace::pipeline::{Pipeline, PipelineConfig};
use flowtrace::tcp::TcpConfig;
use flowtrace::time::Ts;
use indicatif::{ProgressBar, ProgressDrawTarget};
use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufWriter, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(clap::Args, Debug)]
pub(crate) struct LiveArgs {
    /// Interfaces, as `flowtrace live eth0 br-x` (or with -i).
    #[arg(value_name = "IFACE")]
    positional: Vec<String>,
    /// Interface to capture on (repeatable; `any` for all). Default: any.
    #[arg(short = 'i', long = "interface", value_name = "IFACE")]
    interfaces: Vec<String>,
    /// BPF filter, as tcpdump takes it (e.g. 'tcp port 8000 or vrrp').
    #[arg(short = 'f', long = "filter", value_name = "BPF")]
    filter: Option<String>,
    /// Snap length in bytes.
    #[arg(short = 's', long = "snapshot-length", default_value_t = 262_144)]
    snaplen: i32,
    /// Do not put the interfaces into promiscuous mode.
    #[arg(short = 'p', long = "no-promiscuous-mode")]
    no_promisc: bool,
    /// Kernel buffer size, KiB.
    #[arg(short = 'B', long = "buffer-size", default_value_t = 8192)]
    buffer_kib: i32,
    /// Also save what was captured to FILE (pcapng, with interface names).
    #[arg(short = 'w', value_name = "FILE")]
    write: Option<PathBuf>,
    /// Stop after COUNT packets.
    #[arg(short = 'c', value_name = "COUNT")]
    count: Option<u64>,
    /// Stop after SECS seconds.
    #[arg(long, value_name = "SECS")]
    duration: Option<f64>,
    /// One line per path (text), or one JSON object per line (jsonl).
    #[arg(long, value_enum, default_value_t = FormatArg::Text)]
    format: FormatArg,
    /// Write paths to FILE instead of stdout.
    #[arg(short, long, value_name = "FILE")]
    output: Option<PathBuf>,
    /// Print a path once its last packet is this many seconds old.
    #[arg(long, default_value_t = 2.0, value_name = "SECS")]
    settle: f64,
    /// Keep transactions this many seconds for correlation.
    #[arg(long, default_value_t = 10.0, value_name = "SECS")]
    window: f64,
    /// On exit, write every path and the summary to FILE as one JSON document.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// On exit, draw diagrams into DIR from the -w file (requires -w).
    #[arg(long, value_name = "DIR", requires = "write")]
    svg: Option<PathBuf>,
    /// Close TCP connections idle this many seconds.
    #[arg(long, default_value_t = 120.0, value_name = "SECS")]
    idle_timeout: f64,
    /// Topology file (TOML): host and service names, roles (docs/correlation.md).
    #[arg(long, value_name = "FILE")]
    names: Option<PathBuf>,
    /// Never show the status line (it is shown only when stderr is a terminal).
    #[arg(long)]
    no_progress: bool,
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "live".into())
}

struct Emitter {
    out: BufWriter<Box<dyn Write>>,
    jsonl: bool,
    emitted: HashMap<u64, Ts>,
    next_id: usize,
    kept: Option<Vec<RequestPath>>,
}

impl Emitter {
    fn path(&mut self, mut p: RequestPath) -> Result<()> {
        self.emitted.insert(p.root_transaction, p.end_ts);
        p.id = self.next_id;
        self.next_id += 1;
        if self.jsonl {
            let mut v = serde_json::to_value(&p)?;
            v["type"] = "path".into();
            serde_json::to_writer(&mut self.out, &v)?;
            writeln!(self.out)?;
        } else {
            flowtrace::render::paths::write_path(&mut self.out, &p)?;
        }
        self.out.flush()?;
        if let Some(k) = &mut self.kept {
            k.push(p);
        }
        Ok(())
    }
}

pub(crate) fn run(args: LiveArgs) -> Result<ExitCode> {
    if args.settle.is_nan()
        || args.settle < 0.0
        || args.window.is_nan()
        || args.window <= args.settle
    {
        bail!("--window must be longer than --settle, both in seconds");
    }
    let mut interfaces: Vec<String> = args
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
    let opts = LiveOptions {
        interfaces: interfaces.clone(),
        filter: args.filter.clone(),
        snaplen: args.snaplen,
        promisc: !args.no_promisc,
        buffer_kib: args.buffer_kib,
    };
    let source = LiveSource::open(&opts, stop.clone())?;
    let host = hostname();
    let mut saver = match &args.write {
        Some(path) => {
            let ifs: Vec<(String, i32, u32)> = source
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
            let file =
                File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
            Some(PcapngWriter::new(
                BufWriter::with_capacity(1 << 20, file),
                &ifs,
            )?)
        }
        None => None,
    };
    let links = flowtrace::capture::live::host_links();
    if let Some(w) = &args.write {
        // The saved capture gets its sidecar, so a replay names interfaces too.
        let sidecar: Vec<serde_json::Value> = links
            .links
            .iter()
            .map(|l| serde_json::json!({"ifindex": l.ifindex, "ifname": l.ifname, "address": l.mac, "addr_info": []}))
            .collect();
        let path = w.with_file_name(format!(
            "{}.links.json",
            w.file_name().unwrap_or_default().to_string_lossy()
        ));
        std::fs::write(&path, serde_json::to_string(&sidecar)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    let mut pipeline = Pipeline::new(PipelineConfig {
        tcp: TcpConfig {
            idle_timeout_ns: (args.idle_timeout * 1e9) as i64,
            ..TcpConfig::default()
        },
        links: vec![Some(links.clone())],
        verify_checksums: false,
    });
    // Name the capture points after this host, as `flowtrace pcap` names them after
    // the capture file.
    let mut ifaces = source.interfaces().clone();
    for d in &mut ifaces.0 {
        d.file_name = host.clone();
    }
    let out: Box<dyn Write> = match &args.output {
        Some(p) => {
            Box::new(File::create(p).with_context(|| format!("cannot create {}", p.display()))?)
        }
        None => Box::new(io::stdout().lock()),
    };
    let jsonl = matches!(args.format, FormatArg::Jsonl | FormatArg::Json);
    let mut emitter = Emitter {
        out: BufWriter::new(out),
        jsonl,
        emitted: HashMap::new(),
        next_id: 0,
        kept: args.json.is_some().then(Vec::new),
    };
    let status = (!args.no_progress && io::stderr().is_terminal())
        .then(|| ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr()));
    let started = Instant::now();
    let (mut packets, mut last_tick, mut latest) = (0u64, Instant::now(), Ts(0));
    let mut last_packet = Instant::now();
    let mut window: Vec<HttpTransaction> = Vec::new();
    let settle = (args.settle * 1e9) as i64;
    let keep = (args.window * 1e9) as i64;
    let names = super::load_names(&args.names)?;
    let files = vec![host.clone()];
    let live_links = [Some(links.clone())];
    let tick = |window: &mut Vec<HttpTransaction>,
                pipeline: &Pipeline,
                latest: Ts,
                last: bool,
                emitter: &mut Emitter|
     -> Result<()> {
        let report = correlate(&Input {
            transactions: window,
            vantages: pipeline.vantages(),
            files: &files,
            links: &live_links,
            vrrp: pipeline.vrrp(),
            garp: pipeline.gratuitous_arps(),
            offset_overrides: &[None],
            names: names.as_ref(),
        });
        for p in report.paths {
            if emitter.emitted.contains_key(&p.root_transaction) {
                continue;
            }
            if last || p.end_ts.0 < latest.0 - settle {
                emitter.path(p)?;
            }
        }
        if !last {
            window.retain(|t| {
                let start = t
                    .request
                    .as_ref()
                    .map(|r| r.first_ts)
                    .or(t.response.as_ref().map(|r| r.first_ts));
                start.is_none_or(|s| s.0 >= latest.0 - keep)
            });
            emitter
                .emitted
                .retain(|_, end| end.0 >= latest.0 - 2 * keep);
        }
        Ok(())
    };
    let mut stopping = false;
    let mut tick_every = Duration::from_secs(1);
    loop {
        if !stopping
            && (stop.load(Ordering::Relaxed)
                || args.count.is_some_and(|c| packets >= c)
                || args
                    .duration
                    .is_some_and(|d| started.elapsed().as_secs_f64() >= d))
        {
            // Stop reading; what is already queued is still processed (and counted).
            source.request_stop();
            stopping = true;
        }
        match source.recv(Duration::from_millis(100)) {
            Received::Packet(p) => {
                let frame = Frame {
                    ts: p.ts,
                    iface: source.iface_id(p.iface),
                    link: source.link(p.iface),
                    orig_len: p.orig_len,
                    data: &p.data,
                };
                pipeline.push(&frame, &ifaces);
                if let Some(w) = &mut saver {
                    w.packet(p.iface as u32, p.ts, p.orig_len, &p.data)?;
                }
                packets += 1;
                latest = latest.max(p.ts);
                last_packet = Instant::now();
                if pipeline.has_completed() {
                    window.extend(pipeline.drain());
                }
            }
            // Once stopped, the readers end within milliseconds and the queue then
            // reports Ended.
            Received::Nothing => {}
            Received::Ended => break,
        }
        if !stopping && last_tick.elapsed() >= tick_every {
            last_tick = Instant::now();
            // With no traffic, time still passes: settle by the wall clock too.
            let now = Ts(latest.0 + last_packet.elapsed().as_nanos() as i64);
            tick(&mut window, &pipeline, now, false, &mut emitter)?;
            // Correlating takes time under load: keep it to a fifth of the time, so
            // reading packets keeps up (paths then come out a little later).
            tick_every = Duration::from_secs(1).max(last_tick.elapsed() * 5);
            if let Some(bar) = &status {
                let drops: u64 = source
                    .stats()
                    .iter()
                    .map(|s| s.dropped + s.if_dropped)
                    .sum();
                bar.set_message(format!(
                    "{packets} packets, {} paths, {drops} dropped, {} open connections",
                    emitter.next_id,
                    pipeline.open_connections()
                ));
                bar.tick();
            }
        }
    }
    let (live_stats, errors) = source.finish();
    pipeline.finish();
    window.extend(pipeline.drain());
    tick(&mut window, &pipeline, latest, true, &mut emitter)?;
    if let Some(bar) = status {
        bar.finish_and_clear();
    }
    if let Some(w) = saver {
        w.finish()?;
    }
    let stats = pipeline.stats();
    summary(&mut emitter, &live_stats, &stats, packets)?;
    for e in &errors {
        eprintln!("flowtrace: warning: a capture ended: {e}");
    }
    if let Some(path) = &args.json {
        let doc = serde_json::json!({
            "paths": emitter.kept.take().unwrap_or_default(),
            "live": { "interfaces": live_stats, "packets": packets },
            "stats": stats,
        });
        std::fs::write(path, serde_json::to_string(&doc)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    if let (Some(dir), Some(saved)) = (&args.svg, &args.write) {
        let pcap_args = PcapArgs {
            capture: CaptureArgs {
                files: vec![saved.clone()],
                links: Vec::new(),
                offset: Vec::new(),
                names: args.names.clone(),
                idle_timeout: args.idle_timeout,
                verify_checksums: false,
                no_progress: true,
            },
            format: FormatArg::Text,
            output: None,
            headers: false,
            paths: true,
            truth: None,
            svg: Some(dir.clone()),
            dot: false,
            mermaid: false,
            path_ids: Vec::new(),
            uri: None,
            slowest: None,
            failed: false,
        };
        let c = correlated(&pcap_args.capture)?;
        diagrams(&pcap_args, &c, dir)?;
    }
    Ok(ExitCode::SUCCESS)
}

fn summary(emitter: &mut Emitter, live: &[LiveStats], stats: &Stats, packets: u64) -> Result<()> {
    if emitter.jsonl {
        let v = serde_json::json!({
            "type": "summary",
            "live": { "interfaces": live, "packets": packets, "paths": emitter.next_id },
            "stats": stats,
        });
        serde_json::to_writer(&mut emitter.out, &v)?;
        writeln!(emitter.out)?;
    } else {
        writeln!(
            emitter.out,
            "\n{packets} packets, {} paths",
            emitter.next_id
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
    }
    emitter.out.flush()?;
    Ok(())
}
