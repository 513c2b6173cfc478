//! Request paths as a text tree and summary (JSON is the serialised
//! [`crate::correlate::Report`]; its contract is in docs/output.md).

use super::sanitize;
use crate::correlate::{Hop, Report, RequestPath};
use std::io::{self, Write};

fn hop_line(h: &Hop) -> String {
    match h.kind {
        "nat" => {
            let (b, a) = (h.before.expect("nat hop"), h.after.expect("nat hop"));
            let what = match h.translation {
                Some("SNAT") => format!("{} -> {}", b.client, a.client),
                Some("DNAT") => format!("{} -> {}", b.server, a.server),
                _ => format!(
                    "{} -> {} / {} -> {}",
                    b.client, a.client, b.server, a.server
                ),
            };
            format!(
                "{} {what}  [{} {} -> {}]",
                h.translation.unwrap_or("NAT"),
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
                h.role.as_deref().unwrap_or("?").to_string()
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
