//! Request paths as a text tree and summary, JSON lines or one JSON document, written
//! as the paths come (docs/output.md has the contract).

use super::{sanitize, Format, Summary, TimeFormat};
use crate::correlate::{
    ClockMethod, Hop, HopKind, Report, RequestPath, Tail, Translation, PATH_SCHEMA_VERSION,
};
use serde::Serialize;
use std::io::{self, Write};

fn hop_line(h: &Hop) -> String {
    match h.kind {
        HopKind::Nat => {
            let (b, a) = (h.before.expect("nat hop"), h.after.expect("nat hop"));
            let what = match h.translation {
                Some(Translation::Snat) => format!("{} -> {}", b.client, a.client),
                Some(Translation::Dnat) => format!("{} -> {}", b.server, a.server),
                _ => format!(
                    "{} -> {} / {} -> {}",
                    b.client, a.client, b.server, a.server
                ),
            };
            format!(
                "{} {what}  [{} {} -> {}]",
                h.translation.map_or("NAT", |t| t.as_str()),
                sanitize(h.host.as_deref().unwrap_or("?")),
                sanitize(
                    h.capture_before
                        .as_ref()
                        .map(|c| c.interface.as_str())
                        .unwrap_or("?")
                ),
                sanitize(
                    h.capture_after
                        .as_ref()
                        .map(|c| c.interface.as_str())
                        .unwrap_or("?")
                ),
            )
        }
        _ => {
            let status = h
                .status
                .map(|s| s.to_string())
                .unwrap_or_else(|| "---".into());
            let timing = match (h.latency_ms, h.self_ms) {
                (Some(l), Some(s)) if (l - s).abs() > 0.0005 => {
                    format!("{l:.3} ms (self {s:.3} ms)")
                }
                (Some(l), _) => format!("{l:.3} ms"),
                _ => "no response".into(),
            };
            let conf = h
                .confidence
                .filter(|c| *c < 0.9)
                .map(|c| match h.alternatives.first() {
                    Some(a) => format!(
                        "  ambiguous: confidence {c:.2}, {} alternative(s), the nearest {:.2} points behind ({} -> {})",
                        h.alternatives.len(),
                        a.behind,
                        a.client,
                        a.server
                    ),
                    None => format!("  confidence {c:.2}"),
                })
                .unwrap_or_default();
            format!(
                "{} -> {}  {} {}  {status}  {timing}  {}{}  [{} {}]{conf}",
                h.client.map(|c| c.to_string()).unwrap_or_default(),
                h.server.map(|c| c.to_string()).unwrap_or_default(),
                sanitize(h.method.as_deref().unwrap_or("-")),
                sanitize(h.uri.as_deref().unwrap_or("-")),
                h.role.as_ref().map_or("?", |r| r.as_str()).to_string()
                    + &h.name
                        .as_deref()
                        .map(|n| format!(" \"{}\"", sanitize(n)))
                        .unwrap_or_default(),
                h.product
                    .as_deref()
                    .map(|p| format!(" ({})", sanitize(p)))
                    .unwrap_or_default(),
                h.capture
                    .as_ref()
                    .map(|c| sanitize(&c.file).into_owned())
                    .unwrap_or_default(),
                h.capture
                    .as_ref()
                    .map(|c| sanitize(&c.interface).into_owned())
                    .unwrap_or_default(),
            ) + &format!("  on {}", h.host.as_deref().unwrap_or("?"))
        }
    }
}

/// Writes one path as an indented tree, its times as `times` says.
pub fn write_path(out: &mut impl Write, p: &RequestPath, times: &mut TimeFormat) -> io::Result<()> {
    let vip = p
        .vip
        .as_ref()
        .map(|v| {
            format!(
                "  VIP {} held by {}",
                v.address,
                sanitize(v.holder.as_deref().unwrap_or("?"))
            )
        })
        .unwrap_or_default();
    if let Some(date) = times.date_line(p.start_ts) {
        writeln!(out, "{date}")?;
    }
    writeln!(
        out,
        "path {}  {}  {} .. {}  {:.3} ms{vip}",
        p.id,
        p.status,
        times.line_start(p.start_ts),
        times.point(p.end_ts),
        (p.end_ts.0 - p.start_ts.0) as f64 / 1e6
    )?;
    let mut depth = vec![0usize; p.hops.len()];
    for h in &p.hops {
        let d = h.parent.map(|q| depth[q] + 1).unwrap_or(1);
        depth[h.id] = d;
        writeln!(out, "{}{}", "  ".repeat(d), hop_line(h))?;
    }
    Ok(())
}

/// Writes every path, then the summary.
pub fn write_report(out: &mut impl Write, r: &Report, times: &mut TimeFormat) -> io::Result<()> {
    for p in &r.paths {
        write_path(out, p, times)?;
    }
    write_summary(out, r, times)
}

/// Writes the summary of a report (its paths are not read).
pub fn write_summary(out: &mut impl Write, r: &Report, times: &mut TimeFormat) -> io::Result<()> {
    let s = &r.summary;
    writeln!(out)?;
    writeln!(
        out,
        "{} paths: {} complete, {} partial, {} failed",
        s.paths, s.complete, s.partial, s.failed
    )?;
    if !s.failed_by_reason.is_empty() {
        let list: Vec<String> = s
            .failed_by_reason
            .iter()
            .map(|(reason, n)| format!("{n} {reason}"))
            .collect();
        writeln!(out, "failed: {}", list.join(", "))?;
    }
    for l in &s.latency_by_role {
        writeln!(
            out,
            "  {:14} {:6} hops  p50 {:8.3} ms  p90 {:8.3} ms  p99 {:8.3} ms  max {:8.3} ms",
            l.role, l.count, l.p50_ms, l.p90_ms, l.p99_ms, l.max_ms
        )?;
    }
    if !s.slowest.is_empty() {
        let list: Vec<String> = s
            .slowest
            .iter()
            .map(|(id, ms)| format!("path {id} {ms:.3} ms"))
            .collect();
        writeln!(out, "slowest: {}", list.join(", "))?;
    }
    for h in &r.vip_timeline {
        writeln!(
            out,
            "VIP {} (vrid {}) held by {} ({} priority {}) {} .. {}, {} adverts",
            h.vip,
            h.vrid,
            sanitize(&h.holder),
            h.holder_ip,
            h.priority,
            times.point(h.from),
            times.point(h.to),
            h.adverts
        )?;
    }
    for f in &r.failovers {
        writeln!(
            out,
            "failover of {}: {} -> {} between {} and {}; {} failed request(s) around it",
            f.vip,
            sanitize(&f.from),
            sanitize(&f.to),
            times.point(f.last_advert_before),
            times.point(f.first_sign_after),
            f.failed_paths.len()
        )?;
        for fp in &f.failed_paths {
            writeln!(
                out,
                "  path {} at {}: {}",
                fp.path,
                times.point(fp.start_ts),
                fp.reason
            )?;
        }
    }
    for c in &r.clock_offset_changes {
        writeln!(
            out,
            "clock {}: offset changed from {:+.6} s to {:+.6} s after {} paths had been printed",
            sanitize(&c.capture),
            c.from_s,
            c.to_s,
            c.after_paths
        )?;
    }
    for c in &r.clock_offsets {
        let unit = if c.method == ClockMethod::AgentClock {
            "clock samples"
        } else {
            "connections"
        };
        write!(
            out,
            "clock {}: {:+.6} s ± {:.6} s ({}, {} {unit})",
            sanitize(&c.capture),
            c.offset_s,
            c.uncertainty_s,
            c.method,
            c.samples
        )?;
        match &c.agent_clock {
            Some(a) => writeln!(
                out,
                "; agent clock {:+.6} s against the NATS server's ({} samples, delays within {:.6} s)",
                a.offset_s, a.samples, a.delay_spread_s
            )?,
            None => writeln!(out)?,
        }
    }
    Ok(())
}

/// The paths a terminal shows after the summary (summary first): the slowest and
/// the first failed ones, at most `top` of each, whatever the run's length.
pub struct Highlights {
    top: usize,
    min_confidence: Option<f64>,
    below_min_confidence: usize,
    /// The slowest so far, slowest first.
    slowest: Vec<RequestPath>,
    /// The first failed ones.
    failed: Vec<RequestPath>,
    seen: usize,
    /// The earliest start seen: relative times count from it.
    first_start: Option<crate::time::Ts>,
}

impl Highlights {
    /// Keeps at most `top` slowest and `top` failed paths.
    pub fn new(top: usize) -> Self {
        Highlights {
            top,
            min_confidence: None,
            below_min_confidence: 0,
            slowest: Vec::new(),
            failed: Vec::new(),
            seen: 0,
            first_start: None,
        }
    }

    /// Shows only paths whose every link is at least `min` sure.
    pub fn with_min_confidence(mut self, min: Option<f64>) -> Self {
        self.min_confidence = min;
        self
    }

    /// Offers one path; it is kept only when it is among those shown.
    pub fn offer(&mut self, p: &RequestPath) {
        self.seen += 1;
        if self.min_confidence.is_some_and(|m| weakest_link(p) < m) {
            self.below_min_confidence += 1;
            return;
        }
        self.first_start = Some(self.first_start.map_or(p.start_ts, |t| t.min(p.start_ts)));
        if self.top == 0 {
            return;
        }
        let took = |p: &RequestPath| p.end_ts.0 - p.start_ts.0;
        let slow =
            self.slowest.len() < self.top || self.slowest.last().is_some_and(|q| took(p) > took(q));
        if slow {
            let mut kept = p.clone();
            kept.segments = Vec::new();
            let at = self.slowest.partition_point(|q| took(q) >= took(p));
            self.slowest.insert(at, kept);
            self.slowest.truncate(self.top);
        }
        if p.status == crate::correlate::PathStatus::Failed && self.failed.len() < self.top {
            let mut kept = p.clone();
            kept.segments = Vec::new();
            self.failed.push(kept);
        }
    }

    /// Writes the summary, then the paths kept, and what was left out.
    pub fn write(
        self,
        out: &mut impl Write,
        tail: &Tail,
        run: &Summary<'_>,
        times: &mut TimeFormat,
    ) -> io::Result<()> {
        let report = tail.clone().into_report(Vec::new());
        // Times in the summary are relative to, and dated by, the run's start.
        if let Some(first) = self.first_start {
            times.anchor(first);
            if let Some(date) = times.date_line(first) {
                writeln!(out, "{date}")?;
            }
        }
        write_summary(out, &report, times)?;
        if let Some(m) = self.min_confidence {
            writeln!(
                out,
                "{} path(s) with a link below --min-confidence {m} not shown",
                self.below_min_confidence
            )?;
        }
        write_counters(out, run)?;
        let mut shown = std::collections::BTreeSet::new();
        if !self.slowest.is_empty() {
            writeln!(out, "\nthe {} slowest path(s):", self.slowest.len())?;
            for p in &self.slowest {
                write_path(out, p, times)?;
                shown.insert(p.id);
            }
        }
        let failed: Vec<&RequestPath> = self
            .failed
            .iter()
            .filter(|p| !shown.contains(&p.id))
            .collect();
        if !failed.is_empty() {
            writeln!(
                out,
                "\nfailed path(s), the first {} of {}:",
                self.failed.len(),
                report.summary.failed
            )?;
            for p in failed {
                write_path(out, p, times)?;
                shown.insert(p.id);
            }
        }
        writeln!(
            out,
            "\n{} of {} paths shown; --all prints every path (so does a pipe or -o FILE), \
             --format jsonl for programs",
            shown.len(),
            self.seen
        )
    }
}

/// The run's nonzero counters on one line.
fn write_counters(out: &mut impl Write, run: &Summary<'_>) -> io::Result<()> {
    let nonzero: Vec<String> = run
        .stats
        .iter()
        .filter(|(_, v)| *v > 0)
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    writeln!(out, "counters: {}", nonzero.join(" "))
}

/// A path as a JSON line.
#[derive(Serialize)]
struct PathLine<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(flatten)]
    path: &'a RequestPath,
}

/// Writes paths as they come, in `format`, then the summary at [`PathWriter::finish`]:
/// nothing of a path is kept once written.
pub struct PathWriter<W: Write> {
    out: W,
    format: Format,
    written: usize,
    times: TimeFormat,
    min_confidence: Option<f64>,
    below_min_confidence: usize,
}

/// The least sure link of a path (1 when it has none).
pub fn weakest_link(p: &RequestPath) -> f64 {
    p.hops
        .iter()
        .filter_map(|h| h.confidence)
        .fold(1.0, f64::min)
}

impl<W: Write> PathWriter<W> {
    /// A writer of `format` to `out` (the JSON document's head is written now).
    pub fn new(mut out: W, format: Format) -> io::Result<Self> {
        if format == Format::Json {
            write!(
                out,
                "{{\"schema_version\":{PATH_SCHEMA_VERSION},\"paths\":["
            )?;
        }
        Ok(PathWriter {
            out,
            format,
            written: 0,
            times: TimeFormat::default(),
            min_confidence: None,
            below_min_confidence: 0,
        })
    }

    /// A writer that goes on after `written` paths already in `out` (a collector
    /// restarted on its output file): the JSON document's head is not written again.
    pub fn resume(out: W, format: Format, written: usize) -> Self {
        PathWriter {
            out,
            format,
            written,
            times: TimeFormat::default(),
            min_confidence: None,
            below_min_confidence: 0,
        }
    }

    /// Shows times in text output as `times` says (default: wall clock, local zone).
    pub fn with_times(mut self, times: TimeFormat) -> Self {
        self.times = times;
        self
    }

    /// Writes only paths whose every link is at least `min` sure (`--min-confidence`);
    /// the others are counted and the count is written with the summary.
    pub fn with_min_confidence(mut self, min: Option<f64>) -> Self {
        self.min_confidence = min;
        self
    }

    /// Writes one path (unless a link of it is below the minimum confidence).
    pub fn path(&mut self, p: &RequestPath) -> io::Result<()> {
        if self.min_confidence.is_some_and(|m| weakest_link(p) < m) {
            self.below_min_confidence += 1;
            return Ok(());
        }
        match self.format {
            Format::Text => write_path(&mut self.out, p, &mut self.times)?,
            Format::Jsonl => {
                serde_json::to_writer(
                    &mut self.out,
                    &PathLine {
                        kind: "path",
                        path: p,
                    },
                )?;
                writeln!(self.out)?;
            }
            Format::Json => {
                if self.written > 0 {
                    self.out.write_all(b",")?;
                }
                serde_json::to_writer(&mut self.out, p)?;
            }
        }
        self.written += 1;
        Ok(())
    }

    /// Paths written.
    pub fn written(&self) -> usize {
        self.written
    }

    /// Flushes what is buffered (live output).
    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }

    /// Writes the summary (the rest of the JSON document) and flushes.
    pub fn finish(mut self, tail: &Tail, run: &Summary<'_>) -> io::Result<W> {
        let report = tail.clone().into_report(Vec::new());
        match self.format {
            Format::Text => {
                write_summary(&mut self.out, &report, &mut self.times)?;
                if let Some(m) = self.min_confidence {
                    writeln!(
                        self.out,
                        "{} path(s) with a link below --min-confidence {m} not shown",
                        self.below_min_confidence
                    )?;
                }
                write_counters(&mut self.out, run)?;
            }
            Format::Json | Format::Jsonl => {
                let mut anomalies = serde_json::to_value(run.anomalies)?;
                anomalies["paths"] = serde_json::to_value(&tail.anomalies)?;
                anomalies["paths_not_kept"] = tail.anomalies_not_kept.into();
                let rest = serde_json::json!({
                    "vip_timeline": tail.vip_timeline,
                    "failovers": tail.failovers,
                    "clock_offsets": tail.clock_offsets,
                    "clock_offset_changes": tail.clock_offset_changes,
                    "address_book": tail.address_book,
                    "summary": tail.summary,
                    "correlation": tail.engine,
                    "anomalies": anomalies,
                    "inputs": run.inputs,
                    "vantages": run.vantages,
                    "warnings": run.warnings,
                    "stats": run.stats,
                    "vrrp": run.vrrp,
                    "gratuitous_arp": run.gratuitous_arp,
                });
                let mut rest = rest;
                if let Some(m) = self.min_confidence {
                    rest["min_confidence"] = m.into();
                    rest["not_shown_below_min_confidence"] = self.below_min_confidence.into();
                }
                let map = rest.as_object().expect("an object");
                if self.format == Format::Json {
                    self.out.write_all(b"]")?;
                    for (k, v) in map {
                        write!(self.out, ",{}:", serde_json::to_string(k)?)?;
                        serde_json::to_writer(&mut self.out, v)?;
                    }
                    writeln!(self.out, "}}")?;
                } else {
                    let mut line = serde_json::Map::new();
                    line.insert("type".into(), "summary".into());
                    line.insert("schema_version".into(), PATH_SCHEMA_VERSION.into());
                    line.extend(map.clone());
                    serde_json::to_writer(&mut self.out, &line)?;
                    writeln!(self.out)?;
                }
            }
        }
        self.out.flush()?;
        Ok(self.out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::correlate::PathStatus;
    use crate::time::Ts;

    fn path(id: usize, ms: i64, status: PathStatus, confidence: Option<f64>) -> RequestPath {
        let mut root = Hop::new(0, None, HopKind::Http);
        root.uri = Some("/".into());
        let mut child = Hop::new(1, Some(0), HopKind::Http);
        child.confidence = confidence;
        RequestPath {
            schema_version: PATH_SCHEMA_VERSION,
            id,
            status,
            start_ts: Ts(id as i64 * 1_000_000_000),
            end_ts: Ts(id as i64 * 1_000_000_000 + ms * 1_000_000),
            vip: None,
            hops: vec![root, child],
            root_transaction: id as u64,
            segments: Vec::new(),
        }
    }

    /// The summary view holds the `top` slowest (slowest first) and the first `top`
    /// failed paths, whatever the number offered.
    #[test]
    fn highlights_keep_the_slowest_and_the_first_failed() {
        let mut h = Highlights::new(3);
        for i in 0..1000 {
            let status = if i % 100 == 7 {
                PathStatus::Failed
            } else {
                PathStatus::Complete
            };
            h.offer(&path(i, (i as i64 * 37) % 1000, status, Some(1.0)));
        }
        let slow: Vec<i64> = h
            .slowest
            .iter()
            .map(|p| (p.end_ts.0 - p.start_ts.0) / 1_000_000)
            .collect();
        assert_eq!(slow, vec![999, 998, 997]);
        let failed: Vec<usize> = h.failed.iter().map(|p| p.id).collect();
        assert_eq!(failed, vec![7, 107, 207]);
        assert_eq!(h.seen, 1000);
        assert_eq!(h.first_start, Some(Ts(0)));
    }

    /// `--min-confidence` leaves out a path whose weakest link is below it, and
    /// counts it.
    #[test]
    fn min_confidence_filters_by_the_weakest_link() {
        let sure = path(1, 5, PathStatus::Complete, Some(0.95));
        let unsure = path(2, 9, PathStatus::Complete, Some(0.4));
        assert_eq!(weakest_link(&unsure), 0.4);
        let mut w = PathWriter::new(Vec::new(), Format::Jsonl)
            .unwrap()
            .with_min_confidence(Some(0.9));
        w.path(&sure).unwrap();
        w.path(&unsure).unwrap();
        assert_eq!((w.written(), w.below_min_confidence), (1, 1));
        let mut h = Highlights::new(5).with_min_confidence(Some(0.9));
        h.offer(&unsure);
        h.offer(&sure);
        assert_eq!(h.slowest.len(), 1);
        assert_eq!(h.below_min_confidence, 1);
    }
}
