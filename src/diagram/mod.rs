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

use crate::correlate::{Hop, HopKind, PathStatus, Report, RequestPath, VipHolding};
use crate::pipeline::Vantage;
use draw::{Canvas, Color};
pub use ladder::ladder;
pub use swimlanes::swimlanes;
pub use topology::{topology, Topology, TopologyBuilder};

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

impl Selection {
    fn nothing_asked(&self) -> bool {
        self.ids.is_empty() && self.uri.is_none() && self.slowest.is_none() && !self.failed
    }
}

/// Most paths drawn in one run (each gives three files).
pub const MAX_PATHS: usize = 20;

/// Keeps the paths a run will draw, with their segments, while every path streams
/// by ([`Keeper::offer`]): what [`Selection`] asks for, or by default the slowest
/// complete path with the most hops and the first failed one. At most
/// [`MAX_PATHS`] paths per kind of choice are held at any time, so a run of any
/// length draws in bounded memory; the topology is built from every path on the way.
#[derive(Clone)]
pub struct Keeper {
    sel: Selection,
    by_id: Vec<RequestPath>,
    by_uri: Vec<RequestPath>,
    /// The slowest so far: (duration, path), at most `slowest` of them.
    slowest: Vec<(i64, RequestPath)>,
    failed: Vec<RequestPath>,
    /// Default choice: the best complete path by (HTTP hops, duration).
    best: Option<((usize, i64), RequestPath)>,
    first_failed: Option<RequestPath>,
    topology: TopologyBuilder,
}

impl Keeper {
    /// A keeper for `sel`.
    pub fn new(sel: Selection) -> Keeper {
        Keeper {
            sel,
            by_id: Vec::new(),
            by_uri: Vec::new(),
            slowest: Vec::new(),
            failed: Vec::new(),
            best: None,
            first_failed: None,
            topology: TopologyBuilder::default(),
        }
    }

    /// Sees one path; keeps a copy (with its segments) when it may be drawn.
    pub fn offer(&mut self, p: &RequestPath) {
        self.topology.add(p);
        let sel = &self.sel;
        let took = p.end_ts.0 - p.start_ts.0;
        if sel.ids.contains(&p.id) && self.by_id.len() < MAX_PATHS {
            self.by_id.push(p.clone());
        }
        if let Some(pattern) = &sel.uri {
            let matches = p
                .hops
                .first()
                .and_then(|h| h.uri.as_deref())
                .is_some_and(|u| crate::check::glob(pattern, u));
            if matches && self.by_uri.len() < MAX_PATHS {
                self.by_uri.push(p.clone());
            }
        }
        if let Some(n) = sel.slowest {
            let n = n.min(MAX_PATHS);
            // Ties keep the earlier path, as a stable sort of all paths would.
            let pos = self.slowest.partition_point(|(t, _)| *t >= took);
            if pos < n {
                self.slowest.insert(pos, (took, p.clone()));
                self.slowest.truncate(n);
            }
        }
        if sel.failed && p.status == PathStatus::Failed && self.failed.len() < MAX_PATHS {
            self.failed.push(p.clone());
        }
        if sel.nothing_asked() {
            if p.status == PathStatus::Complete {
                let hops = p.hops.iter().filter(|h| h.kind == HopKind::Http).count();
                let key = (hops, took);
                // The last of equals wins, as `Iterator::max_by_key` would choose.
                if self.best.as_ref().is_none_or(|(k, _)| key >= *k) {
                    self.best = Some((key, p.clone()));
                }
            }
            if p.status == PathStatus::Failed && self.first_failed.is_none() {
                self.first_failed = Some(p.clone());
            }
        }
    }

    /// The paths to draw (ids first, then URI matches, the slowest, the failed, the
    /// default choice; each once, at most [`MAX_PATHS`]), and the topology with the
    /// VIP holders of `vip_timeline`.
    pub fn finish(self, vip_timeline: &[VipHolding]) -> (Vec<RequestPath>, Topology) {
        let mut by_id = self.by_id;
        by_id.sort_by_key(|p| self.sel.ids.iter().position(|i| *i == p.id));
        let mut out: Vec<RequestPath> = by_id;
        out.extend(self.by_uri);
        out.extend(self.slowest.into_iter().map(|(_, p)| p));
        out.extend(self.failed);
        out.extend(self.best.map(|(_, p)| p));
        out.extend(self.first_failed);
        let mut seen = std::collections::HashSet::new();
        out.retain(|p| seen.insert(p.id));
        out.truncate(MAX_PATHS);
        (out, self.topology.finish(vip_timeline))
    }
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
        h.role.as_ref().map_or("?", |r| r.as_str()),
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
    let ordered = chain_items(path);
    let table = name_table(report, path);
    let table_w = 470;
    let width = 40 + BOX_W + 60 + table_w;
    let height_chain = 90 + ordered.len() as i32 * (BOX_H + GAP);
    let height_table = 90 + 20 * (table.len() as i32 + 1);
    let height = height_chain.max(height_table);
    let mut c = Canvas::new(width as u32, height as u32);
    c.text(20, 16, &chain_heading(path), 15, Color::INK);
    let x = 40;
    let mut y = 60;
    for (i, it) in ordered.iter().enumerate() {
        let (fill, title, lines) = it.card();
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

/// One box of the chain.
enum ChainItem<'a> {
    Client(&'a Hop),
    Vip(String),
    Nat(&'a Hop),
    Server(&'a Hop),
}

/// The VIP's box (the caller checked the path has a VIP).
fn vip_item(path: &RequestPath) -> ChainItem<'_> {
    let v = path.vip.as_ref().expect("checked by the caller");
    ChainItem::Vip(format!(
        "VIP {} held by {}",
        v.address,
        clean(v.holder.as_deref().unwrap_or("?"), 20)
    ))
}

/// The chain's boxes in order: the client, the VIP and its holder, then each HTTP
/// hop's translations followed by its server, parents before children.
fn chain_items(path: &RequestPath) -> Vec<ChainItem<'_>> {
    let mut ordered: Vec<ChainItem> = Vec::new();
    if let Some(root) = path.hops.first() {
        ordered.push(ChainItem::Client(root));
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
            ordered.push(ChainItem::Nat(n));
        }
        if vip_pending {
            ordered.push(vip_item(path));
        }
        ordered.push(ChainItem::Server(h));
    }
    ordered
}

/// The chain's first line: path, status, request, response and duration.
fn chain_heading(path: &RequestPath) -> String {
    let root = path.hops.first();
    format!(
        "path {}  {}  {} {}  {}  {:.3} ms",
        path.id,
        path.status,
        clean(root.and_then(|h| h.method.as_deref()).unwrap_or("-"), 10),
        clean(root.and_then(|h| h.uri.as_deref()).unwrap_or("-"), 60),
        root.and_then(|h| h.status)
            .map_or("no response".to_string(), |s| s.to_string()),
        (path.end_ts.0 - path.start_ts.0) as f64 / 1e6
    )
}

/// A link's doubt, for a server box: nothing when sure (0.99 or more).
fn link_note(h: &Hop) -> String {
    h.confidence
        .filter(|c| *c < 0.99)
        .map(|c| {
            if c < 0.9 {
                format!(
                    "  (ambiguous link: confidence {c:.2}, {} alternative(s))",
                    h.alternatives.len()
                )
            } else {
                format!("  (link confidence {c:.2})")
            }
        })
        .unwrap_or_default()
}

impl ChainItem<'_> {
    /// The box's fill, title and lines.
    fn card(&self) -> (Color, String, Vec<String>) {
        match self {
            ChainItem::Client(h) => {
                let capture = h.capture.as_ref();
                (
                    Color::CLIENT,
                    "client".into(),
                    vec![
                        h.client.map(|c| c.to_string()).unwrap_or_default(),
                        format!(
                            "seen at {} {}",
                            clean(capture.map(|c| c.file.as_str()).unwrap_or("?"), 40),
                            clean(capture.map(|c| c.interface.as_str()).unwrap_or("?"), 16)
                        ),
                    ],
                )
            }
            ChainItem::Vip(text) => (
                Color::VIP,
                text.clone(),
                vec!["virtual address (VRRP)".into()],
            ),
            ChainItem::Nat(n) => {
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
            ChainItem::Server(h) => {
                let timing = match (h.latency_ms, h.self_ms) {
                    (Some(l), Some(s)) => format!("{l:.3} ms, self {s:.3} ms"),
                    _ => "no response".into(),
                };
                let fill = match h.role.as_ref().map(|r| r.as_str()) {
                    Some("gateway") => Color::GATEWAY,
                    Some("load_balancer") => Color::BALANCER,
                    Some("backend") => Color::BACKEND,
                    _ => Color::OTHER,
                };
                let reached = h
                    .seen_at
                    .last()
                    .map(|s| s.server.to_string())
                    .unwrap_or_default();
                let status = h.status.map_or("---".to_string(), |s| s.to_string());
                (
                    fill,
                    hop_title(h),
                    vec![
                        format!("{reached}  {status}  {timing}"),
                        format!(
                            "sent as {} -> {}{}",
                            h.client.map(|s| s.to_string()).unwrap_or_default(),
                            h.server.map(|s| s.to_string()).unwrap_or_default(),
                            link_note(h)
                        ),
                    ],
                )
            }
        }
    }
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
