//! Diagrams like the seed's, drawn from packets: a path chain, a ladder of TCP
//! segments, swimlanes of one request across capture points, and a topology map, in
//! SVG (plotters' SVG backend); the topology and paths also as Graphviz DOT and
//! Mermaid.
//!
//! Everything that came off the wire (URIs, headers, interface and file names) is
//! untrusted: it goes through [`clean`], which replaces control characters (not
//! allowed in XML even when escaped) and shortens it, and plotters escapes `<`, `>`,
//! `&` and quotes. No script, link or foreign object is ever written.

mod draw;
pub mod export;
mod ladder;
mod swimlanes;
mod topology;

use crate::correlate::{Hop, HopKind, PathStatus, Report, RequestPath};
use crate::pipeline::{Tap, Vantage};
use crate::time::Ts;
use draw::{Canvas, Color};
pub use ladder::ladder;
pub use swimlanes::swimlanes;
pub use topology::{topology, Topology};

/// Which paths to draw.
#[derive(Clone, Debug, Default)]
pub struct Selection {
    /// Path ids.
    pub ids: Vec<usize>,
    /// Paths whose first URI matches this (`*` wildcard).
    pub uri: Option<String>,
    /// The slowest N paths.
    pub slowest: Option<usize>,
    /// The failed paths.
    pub failed: bool,
}

/// Most paths drawn in one run (each gives three files).
pub const MAX_PATHS: usize = 20;

/// The ids of the paths to draw: what `sel` asks for, or by default the slowest
/// complete path (and the first failed one, if any failed).
pub fn select(report: &Report, sel: &Selection) -> Vec<usize> {
    let mut out: Vec<usize> = sel
        .ids
        .iter()
        .copied()
        .filter(|&i| i < report.paths.len())
        .collect();
    if let Some(pattern) = &sel.uri {
        out.extend(
            report
                .paths
                .iter()
                .filter(|p| {
                    p.hops
                        .first()
                        .and_then(|h| h.uri.as_deref())
                        .is_some_and(|u| crate::check::glob(pattern, u))
                })
                .map(|p| p.id),
        );
    }
    if let Some(n) = sel.slowest {
        let mut by_time: Vec<&RequestPath> = report.paths.iter().collect();
        by_time.sort_by_key(|p| std::cmp::Reverse(p.end_ts.0 - p.start_ts.0));
        out.extend(by_time.into_iter().take(n).map(|p| p.id));
    }
    if sel.failed {
        out.extend(
            report
                .paths
                .iter()
                .filter(|p| p.status == PathStatus::Failed)
                .map(|p| p.id),
        );
    }
    let nothing_asked =
        sel.ids.is_empty() && sel.uri.is_none() && sel.slowest.is_none() && !sel.failed;
    if nothing_asked {
        if let Some(p) = report
            .paths
            .iter()
            .filter(|p| p.status == PathStatus::Complete)
            .max_by_key(|p| {
                (
                    p.hops.iter().filter(|h| h.kind == HopKind::Http).count(),
                    p.end_ts.0 - p.start_ts.0,
                )
            })
        {
            out.push(p.id);
        }
        if let Some(p) = report.paths.iter().find(|p| p.status == PathStatus::Failed) {
            out.push(p.id);
        }
    }
    let mut seen = std::collections::HashSet::new();
    out.retain(|id| seen.insert(*id));
    out.truncate(MAX_PATHS);
    out
}

/// A tap recording every segment of the connections of the chosen paths, at every
/// capture point that saw them, in their time window.
pub fn tap_for(report: &Report, ids: &[usize], vantages: &[Vantage]) -> Tap {
    let mut tap = Tap {
        limit: 200_000,
        window: (Ts(i64::MAX), Ts(i64::MIN)),
        ..Tap::default()
    };
    for &id in ids {
        let p = &report.paths[id];
        // A connection's segments may come well before and after the request
        // (handshake, teardown of keep-alive connections): a generous window.
        tap.window.0 = tap.window.0.min(Ts(p.start_ts.0 - 2_000_000_000));
        tap.window.1 = tap.window.1.max(Ts(p.end_ts.0 + 2_000_000_000));
        for h in p.hops.iter().filter(|h| h.kind == HopKind::Http) {
            for s in &h.seen_at {
                if let Some(v) = vantage_id(vantages, &s.capture.file, &s.capture.interface) {
                    tap.connections.insert(Tap::key(v, s.client, s.server));
                }
            }
        }
    }
    tap
}

/// The vantage id of a capture point named by file and interface.
pub fn vantage_id(vantages: &[Vantage], file: &str, interface: &str) -> Option<u32> {
    vantages
        .iter()
        .position(|v| v.file == file && v.interface == interface)
        .map(|i| i as u32)
}

/// Makes wire text safe and short: control characters become `\xNN`, and text longer
/// than `max` characters is cut with an ellipsis.
pub fn clean(text: &str, max: usize) -> String {
    let s = crate::render::sanitize(text);
    if s.chars().count() <= max {
        return s.into_owned();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// How far before its start and after its end a path's diagrams show packets: the
/// handshake of a connection opened for it and the teardown right after it, but not
/// the other requests of a keep-alive connection.
pub const MARGIN_NS: i64 = 5_000_000;

fn hop_title(h: &Hop) -> String {
    format!(
        "{}{} on {}",
        h.role.as_deref().unwrap_or("?"),
        h.product
            .as_deref()
            .map(|p| format!(" ({})", clean(p, 20)))
            .unwrap_or_default(),
        clean(h.host.as_deref().unwrap_or("?"), 20)
    )
}

/// The path chain (the seed's `request_flow_while_docker-compose_runs_on_vm`): the
/// request as a vertical chain of hops (client, NAT, VIP and its holder, gateway,
/// load balancer, backend) with addresses, roles and latency, and the name table of
/// the addresses involved beside it.
pub fn chain(report: &Report, path: &RequestPath) -> String {
    const BOX_W: i32 = 520;
    const BOX_H: i32 = 62;
    const GAP: i32 = 34;
    enum Item<'a> {
        Client(&'a Hop),
        Vip(String),
        Nat(&'a Hop),
        Server(&'a Hop),
    }
    fn vip_item(path: &RequestPath) -> Item<'_> {
        let v = path.vip.as_ref().expect("checked by the caller");
        Item::Vip(format!(
            "VIP {} held by {}",
            v.address,
            clean(v.holder.as_deref().unwrap_or("?"), 20)
        ))
    }
    // Client, the VIP and its holder, then each HTTP hop's translations followed by
    // its server, parents before children.
    let mut ordered: Vec<Item> = Vec::new();
    if let Some(root) = path.hops.first() {
        ordered.push(Item::Client(root));
    }
    let holder = path.vip.as_ref().and_then(|v| v.holder.clone());
    for h in path.hops.iter().filter(|h| h.kind == HopKind::Http) {
        let mut vip_pending = h.parent.is_none() && path.vip.is_some();
        for n in path
            .hops
            .iter()
            .filter(|n| n.kind == HopKind::Nat && n.parent == Some(h.id))
        {
            // The VIP comes where the packet reaches its holder.
            if vip_pending && n.host == holder {
                ordered.push(vip_item(path));
                vip_pending = false;
            }
            ordered.push(Item::Nat(n));
        }
        if vip_pending {
            ordered.push(vip_item(path));
        }
        ordered.push(Item::Server(h));
    }
    let table = name_table(report, path);
    let table_w = 470;
    let width = 40 + BOX_W + 60 + table_w;
    let height_chain = 90 + ordered.len() as i32 * (BOX_H + GAP);
    let height_table = 90 + 20 * (table.len() as i32 + 1);
    let height = height_chain.max(height_table);
    let mut c = Canvas::new(width as u32, height as u32);
    c.text(
        20,
        16,
        &format!(
            "path {}  {}  {} {}  {}  {:.3} ms",
            path.id,
            path.status,
            clean(
                path.hops
                    .first()
                    .and_then(|h| h.method.as_deref())
                    .unwrap_or("-"),
                10
            ),
            clean(
                path.hops
                    .first()
                    .and_then(|h| h.uri.as_deref())
                    .unwrap_or("-"),
                60
            ),
            path.hops
                .first()
                .and_then(|h| h.status)
                .map_or("no response".to_string(), |s| s.to_string()),
            (path.end_ts.0 - path.start_ts.0) as f64 / 1e6
        ),
        15,
        Color::INK,
    );
    let x = 40;
    let mut y = 60;
    for (i, it) in ordered.iter().enumerate() {
        let (fill, title, lines): (Color, String, Vec<String>) = match it {
            Item::Client(h) => (
                Color::CLIENT,
                "client".into(),
                vec![
                    format!("{}", h.client.map(|c| c.to_string()).unwrap_or_default()),
                    format!(
                        "seen at {} {}",
                        clean(
                            h.capture.as_ref().map(|c| c.file.as_str()).unwrap_or("?"),
                            40
                        ),
                        clean(
                            h.capture
                                .as_ref()
                                .map(|c| c.interface.as_str())
                                .unwrap_or("?"),
                            16
                        )
                    ),
                ],
            ),
            Item::Vip(text) => (
                Color::VIP,
                text.clone(),
                vec!["virtual address (VRRP)".into()],
            ),
            Item::Nat(n) => {
                let (b, a) = (n.before.expect("nat"), n.after.expect("nat"));
                (
                    Color::NAT,
                    format!(
                        "{} on {}",
                        n.translation.map_or("NAT", |t| t.as_str()),
                        clean(n.host.as_deref().unwrap_or("?"), 20)
                    ),
                    vec![
                        format!("{} -> {}", b.client, b.server),
                        format!("{} -> {}", a.client, a.server),
                    ],
                )
            }
            Item::Server(h) => {
                let timing = match (h.latency_ms, h.self_ms) {
                    (Some(l), Some(s)) => format!("{l:.3} ms, self {s:.3} ms"),
                    _ => "no response".into(),
                };
                (
                    match h.role.as_deref() {
                        Some("gateway") => Color::GATEWAY,
                        Some("load_balancer") => Color::BALANCER,
                        Some("backend") => Color::BACKEND,
                        _ => Color::OTHER,
                    },
                    hop_title(h),
                    vec![
                        format!(
                            "{}  {}  {}",
                            h.seen_at
                                .last()
                                .map(|s| s.server.to_string())
                                .unwrap_or_default(),
                            h.status.map_or("---".to_string(), |s| s.to_string()),
                            timing
                        ),
                        format!(
                            "sent as {} -> {}{}",
                            h.client.map(|s| s.to_string()).unwrap_or_default(),
                            h.server.map(|s| s.to_string()).unwrap_or_default(),
                            h.confidence
                                .filter(|c| *c < 0.99)
                                .map(|c| format!("  (link confidence {c:.2})"))
                                .unwrap_or_default()
                        ),
                    ],
                )
            }
        };
        c.rect(x, y, BOX_W, BOX_H, fill, Color::INK);
        c.text(x + 10, y + 8, &title, 14, Color::INK);
        for (k, line) in lines.iter().enumerate() {
            c.text(
                x + 10,
                y + 28 + 16 * k as i32,
                &clean(line, 70),
                12,
                Color::INK,
            );
        }
        if i + 1 < ordered.len() {
            c.arrow(
                (x + BOX_W / 2, y + BOX_H),
                (x + BOX_W / 2, y + BOX_H + GAP),
                Color::INK,
            );
        }
        y += BOX_H + GAP;
    }
    draw_table(&mut c, 40 + BOX_W + 60, 60, &table);
    c.finish()
}

/// Rows (name, IP, MAC) of the address book entries for addresses the path uses.
fn name_table(report: &Report, path: &RequestPath) -> Vec<[String; 3]> {
    let mut ips = std::collections::BTreeSet::new();
    for h in &path.hops {
        for a in [h.client, h.server].into_iter().flatten() {
            ips.insert(a.ip());
        }
        for s in &h.seen_at {
            ips.insert(s.client.ip());
            ips.insert(s.server.ip());
        }
        if let (Some(b), Some(a)) = (h.before, h.after) {
            for x in [b.client, b.server, a.client, a.server] {
                ips.insert(x.ip());
            }
        }
    }
    if let Some(v) = &path.vip {
        ips.insert(v.address);
    }
    let mut rows: Vec<[String; 3]> = report
        .address_book
        .iter()
        .filter(|e| ips.contains(&e.ip))
        .map(|e| {
            [
                clean(&e.name, 24),
                e.ip.to_string(),
                e.mac.clone().unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    rows.dedup();
    rows
}

fn draw_table(c: &mut Canvas, x: i32, y: i32, rows: &[[String; 3]]) {
    let cols = [0, 190, 330];
    let w = 470;
    c.rect(x, y, w, 20, Color::HEADER, Color::INK);
    for (k, h) in ["name", "IP", "MAC"].iter().enumerate() {
        c.text(x + 6 + cols[k], y + 4, h, 12, Color::INK);
    }
    for (r, row) in rows.iter().enumerate() {
        let ry = y + 20 * (r as i32 + 1);
        c.rect(x, ry, w, 20, Color::WHITE, Color::GRID);
        for (k, cell) in row.iter().enumerate() {
            c.text(
                x + 6 + cols[k],
                ry + 4,
                &clean(cell, if k == 1 { 22 } else { 26 }),
                11,
                Color::INK,
            );
        }
    }
}

#[cfg(test)]
mod tests;
