//! The streaming run behind `--paths` (and, with its own capture loop, `flowtrace
//! live`): reading, decoding, reassembly and HTTP on one thread, correlation and
//! output on the other, joined by a bounded channel.
//!
//! The split follows the cost: the two halves take about the same time (the
//! correlation half somewhat more; docs/PERFORMANCE.md), and what crosses the channel
//! is what the engine needs anyway (completed transactions, new capture points,
//! VRRP/ARP changes and the two times the engine's floor needs), moved, not copied.
//! Batches are large (1024 frames) because each one wakes the other thread: 64-frame
//! batches spent a sixth of the run in scheduler and lock waits. The bound keeps a slow
//! consumer from letting transactions pile up: the reader then waits.

use super::{engine_config, load_names, open, CaptureArgs, Opened};
use anyhow::{anyhow, Result};
use flowtrace::anomaly::{AnomalyLog, Stats};
use flowtrace::capture::Warning;
use flowtrace::correlate::names::Names;
use flowtrace::correlate::{Context as Correlation, Engine, RequestPath, Tail};
use flowtrace::http::HttpTransaction;
use flowtrace::links::HostLinks;
use flowtrace::pipeline::{GratuitousArp, Pipeline, Vantage, VrrpRun};
use flowtrace::render::{sanitize, Summary};
use flowtrace::time::Ts;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};

/// Frames between two batches sent to the engine.
const FRAMES_PER_BATCH: u64 = 1024;
/// Transactions that make a batch go before its frames are all read: a batch of
/// 1,024 frames of pipelined requests holds tens of thousands (a million pipelined
/// requests with `--paths` peaked at 421 MiB, most of it in batches in flight).
const TRANSACTIONS_PER_BATCH: usize = 2048;
/// Batches in flight between the threads.
const BATCHES_IN_FLIGHT: usize = 8;

/// What a streamed run leaves besides its paths.
pub(crate) struct Streamed {
    pub(crate) tail: Tail,
    pub(crate) stats: Stats,
    pub(crate) anomalies: AnomalyLog,
    pub(crate) files: Vec<String>,
    pub(crate) vantages: Vec<Vantage>,
    pub(crate) warnings: Vec<Warning>,
    pub(crate) vrrp: Vec<VrrpRun>,
    pub(crate) garp: Vec<GratuitousArp>,
}

impl Streamed {
    pub(crate) fn summary(&self) -> Summary<'_> {
        Summary {
            inputs: &self.files,
            vantages: &self.vantages,
            warnings: &self.warnings,
            stats: &self.stats,
            anomalies: &self.anomalies,
            vrrp: &self.vrrp,
            gratuitous_arp: &self.garp,
        }
    }
}

/// One message from the reader to the engine.
pub(crate) struct Batch {
    transactions: Vec<HttpTransaction>,
    /// Capture points first seen since the last batch (the list only grows).
    new_vantages: Vec<Vantage>,
    /// The VRRP runs, when they changed.
    vrrp: Option<Vec<VrrpRun>>,
    /// Gratuitous ARPs seen since the last batch (the list only grows).
    new_garp: Vec<GratuitousArp>,
    /// The newest packet time (live: or the wall clock when no packet comes).
    now: Ts,
    /// The oldest request still waiting for its response.
    pending: Option<Ts>,
    /// The input ended: nothing follows.
    last: bool,
}

/// The reader's half of the channel: sends what the pipeline completed, with what
/// changed since the last batch.
pub(crate) struct Batcher {
    tx: SyncSender<Batch>,
    vantages_sent: usize,
    garp_sent: usize,
    vrrp_sig: (usize, u64),
    max_wait: i64,
}

impl Batcher {
    /// A batcher over `tx`; `max_wait` is the engine's `max_request_duration_ns`.
    pub(crate) fn new(tx: SyncSender<Batch>, max_wait: i64) -> Batcher {
        Batcher {
            tx,
            vantages_sent: 0,
            garp_sent: 0,
            vrrp_sig: (0, 0),
            max_wait,
        }
    }

    /// Sends one batch (blocking while the engine is `BATCHES_IN_FLIGHT` behind);
    /// false when the engine side has hung up.
    pub(crate) fn send(&mut self, p: &mut Pipeline, now: Ts, last: bool) -> bool {
        let pending = p.pending_floor(now, self.max_wait);
        let sig = (p.vrrp().len(), p.vrrp().iter().map(|r| r.adverts).sum());
        let batch = Batch {
            transactions: p.drain().collect(),
            new_vantages: p.vantages()[self.vantages_sent..].to_vec(),
            vrrp: (sig != self.vrrp_sig).then(|| p.vrrp().to_vec()),
            new_garp: p.gratuitous_arps()[self.garp_sent..].to_vec(),
            now,
            pending,
            last,
        };
        self.vantages_sent = p.vantages().len();
        self.garp_sent = p.gratuitous_arps().len();
        self.vrrp_sig = sig;
        self.tx.send(batch).is_ok()
    }
}

/// Where a capture loop sends what its pipeline completed: the correlation thread
/// (`flowtrace live`) or the publisher (`flowtrace agent`).
pub(crate) trait BatchSink {
    /// Sends one batch; false when the other side has hung up.
    fn send(&mut self, p: &mut Pipeline, now: Ts, last: bool) -> bool;
}

impl BatchSink for Batcher {
    fn send(&mut self, p: &mut Pipeline, now: Ts, last: bool) -> bool {
        Batcher::send(self, p, now, last)
    }
}

/// A channel between the reader and the engine, bounded so that a slow engine
/// makes the reader wait instead of letting transactions pile up.
pub(crate) fn channel() -> (SyncSender<Batch>, Receiver<Batch>) {
    sync_channel(BATCHES_IN_FLIGHT)
}

/// What the engine side leaves when the input has ended.
pub(crate) struct EngineEnd {
    pub(crate) tail: Tail,
    pub(crate) vantages: Vec<Vantage>,
    pub(crate) vrrp: Vec<VrrpRun>,
    pub(crate) garp: Vec<GratuitousArp>,
}

/// The engine's half: ingests each batch, advances the floor, and hands every path
/// to `each` with the time it became final; on the last batch, finishes. Stops at
/// the first error of `each`; `Ok(None)` when the reader hung up before the end.
pub(crate) fn correlate_batches(
    rx: &Receiver<Batch>,
    engine: &mut Engine,
    files: &[String],
    links: &[Option<HostLinks>],
    names: Option<&Names>,
    paths_out: &AtomicUsize,
    mut each: impl FnMut(RequestPath, Ts) -> Result<()>,
) -> Result<Option<EngineEnd>> {
    let mut vantages: Vec<Vantage> = Vec::new();
    let mut vrrp: Vec<VrrpRun> = Vec::new();
    let mut garp: Vec<GratuitousArp> = Vec::new();
    let mut done: Vec<RequestPath> = Vec::new();
    while let Ok(batch) = rx.recv() {
        vantages.extend(batch.new_vantages);
        if let Some(v) = batch.vrrp {
            vrrp = v;
        }
        garp.extend(batch.new_garp);
        for mut t in batch.transactions {
            engine.ingest(&mut t, &vantages, batch.now);
        }
        let ctx = Correlation {
            vantages: &vantages,
            files,
            links,
            names,
            vrrp: &vrrp,
            garp: &garp,
        };
        if batch.last {
            let tail = engine.finish(&ctx, &mut |p| done.push(p));
            for p in done.drain(..) {
                each(p, batch.now)?;
            }
            return Ok(Some(EngineEnd {
                tail,
                vantages,
                vrrp,
                garp,
            }));
        }
        engine.advance(batch.now, batch.pending, &ctx, &mut |p| done.push(p));
        for p in done.drain(..) {
            each(p, batch.now)?;
        }
        paths_out.store(engine.paths_emitted(), Ordering::Relaxed);
    }
    Ok(None)
}

/// What the reader hands back when it is done.
struct ReaderEnd {
    stats: Stats,
    anomalies: AnomalyLog,
    warnings: Vec<Warning>,
}

/// Reads every capture through the pipeline and the streaming correlation engine,
/// handing each request path to `each` as soon as it is final (with its segment
/// summaries when `keep_segments`, for diagrams).
pub(crate) fn stream_paths(
    args: &CaptureArgs,
    keep_segments: bool,
    mut each: impl FnMut(RequestPath) -> Result<()>,
) -> Result<Streamed> {
    let o = open(args, keep_segments)?;
    let names = load_names(&args.names)?;
    let files = o.source.file_names();
    let cfg = engine_config(args, o.offsets.clone())?;
    let max_wait = cfg.max_request_duration_ns;
    let links = o.links.clone();
    let mut engine = Engine::new(cfg, &files, &links);
    if let Some(n) = &names {
        for group in n.alias_groups() {
            engine.add_alias_group(&group);
        }
    }
    let paths_out = AtomicUsize::new(0);
    let (tx, rx) = channel();
    let files_n = args.files.len() as u64;

    std::thread::scope(|scope| -> Result<Streamed> {
        let reader = std::thread::Builder::new()
            .name("flowtrace-read".into())
            .spawn_scoped(scope, || {
                read(o, Batcher::new(tx, max_wait), files_n, &paths_out)
            })?;
        let ended = correlate_batches(
            &rx,
            &mut engine,
            &files,
            &links,
            names.as_ref(),
            &paths_out,
            |p, _| each(p),
        );
        // Dropping the receiver stops a reader that is still sending.
        drop(rx);
        let end = reader
            .join()
            .map_err(|_| anyhow!("the capture reader thread panicked"))?;
        let ended = ended?;
        let end = end?;
        let Some(ended) = ended else {
            return Err(anyhow!(
                "the capture reader stopped before the end of input"
            ));
        };
        for w in &end.warnings {
            eprintln!(
                "flowtrace: warning: {}: {}",
                sanitize(&w.file),
                sanitize(&w.message)
            );
        }
        Ok(Streamed {
            tail: ended.tail,
            stats: end.stats,
            anomalies: end.anomalies,
            files: files.clone(),
            vantages: ended.vantages,
            warnings: end.warnings,
            vrrp: ended.vrrp,
            garp: ended.garp,
        })
    })
}

/// The reader thread: frames through the pipeline, batches to the engine. Stops
/// early (without error) when the engine side hung up.
fn read(
    mut o: Opened,
    mut batcher: Batcher,
    files: u64,
    paths_out: &AtomicUsize,
) -> Result<ReaderEnd> {
    let mut stats = Stats::default();
    let mut frames: u64 = 0;
    let mut now = Ts(i64::MIN);
    loop {
        let ended = match o.source.next_frame(&mut stats)? {
            Some((frame, interfaces)) => {
                o.pipeline.push(&frame, interfaces);
                now = now.max(frame.ts);
                frames += 1;
                false
            }
            None => {
                o.pipeline.finish();
                true
            }
        };
        if (ended
            || frames.is_multiple_of(FRAMES_PER_BATCH)
            || o.pipeline.completed_len() >= TRANSACTIONS_PER_BATCH)
            && !batcher.send(&mut o.pipeline, now, ended)
        {
            break;
        }
        if ended {
            break;
        }
        if frames.is_multiple_of(65_536) {
            if let Some(bar) = &o.progress {
                bar.set_position(o.source.progress().0);
                bar.set_message(format!(
                    "{frames} frames, {} open connections, {} paths",
                    o.pipeline.open_connections(),
                    paths_out.load(Ordering::Relaxed)
                ));
            }
        }
    }
    if let Some(bar) = o.progress.take() {
        bar.finish_and_clear();
    }
    let mut all = o.pipeline.stats();
    all.merge(&stats);
    all.files = files;
    Ok(ReaderEnd {
        stats: all,
        anomalies: o.pipeline.anomalies(),
        warnings: o.source.warnings().to_vec(),
    })
}
