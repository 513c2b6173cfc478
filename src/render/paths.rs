//! Request paths as a text tree and summary, JSON lines or one JSON document, written
//! as the paths come (docs/output.md has the contract).

use super::{sanitize, Format, Summary};
use crate::correlate::{Hop, HopKind, Report, RequestPath, Tail, Translation, PATH_SCHEMA_VERSION};
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
                .map(|c| format!("  confidence {c:.2}"))
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

/// Writes one path as an indented tree.
pub fn write_path(out: &mut impl Write, p: &RequestPath) -> io::Result<()> {
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
    writeln!(
        out,
        "path {}  {}  {} .. {}  {:.3} ms{vip}",
        p.id,
        p.status,
        p.start_ts,
        p.end_ts,
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
pub fn write_report(out: &mut impl Write, r: &Report) -> io::Result<()> {
    for p in &r.paths {
        write_path(out, p)?;
    }
    write_summary(out, r)
}

/// Writes the summary of a report (its paths are not read).
pub fn write_summary(out: &mut impl Write, r: &Report) -> io::Result<()> {
    let s = &r.summary;
    writeln!(out)?;
    writeln!(
        out,
        "{} paths: {} complete, {} partial, {} failed",
        s.paths, s.complete, s.partial, s.failed
    )?;
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
            h.from,
            h.to,
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
            f.last_advert_before,
            f.first_sign_after,
            f.failed_paths.len()
        )?;
        for fp in &f.failed_paths {
            writeln!(out, "  path {} at {}: {}", fp.path, fp.start_ts, fp.reason)?;
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
        writeln!(
            out,
            "clock {}: {:+.6} s ± {:.6} s ({}, {} connections)",
            sanitize(&c.capture),
            c.offset_s,
            c.uncertainty_s,
            c.method,
            c.samples
        )?;
    }
    Ok(())
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
        })
    }

    /// Writes one path.
    pub fn path(&mut self, p: &RequestPath) -> io::Result<()> {
        match self.format {
            Format::Text => write_path(&mut self.out, p)?,
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
                write_summary(&mut self.out, &report)?;
                let nonzero: Vec<String> = run
                    .stats
                    .iter()
                    .filter(|(_, v)| *v > 0)
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect();
                writeln!(self.out, "counters: {}", nonzero.join(" "))?;
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
