//! Swimlanes (the seed's `request_flow_caught_packet`): one lane per capture point the
//! request crossed, the packets that start its messages (the request line and the
//! status line of every hop) as boxes with addresses, MACs, time and interface, the
//! same packet linked across lanes, and SNAT/DNAT marked where it reappears
//! rewritten; the name table beside.

use super::draw::{Canvas, Color};
use super::{clean, draw_table, name_table, vantage_id};
use crate::correlate::{HopKind, Report, RequestPath};
use crate::pipeline::Vantage;
use crate::tcp::{conn_key, mac_string, SegmentSummary};
use std::collections::HashMap;

/// Most packet columns drawn (each is one packet seen at several capture points).
pub const MAX_COLUMNS: usize = 16;

/// Draws the swimlanes of `path`.
pub fn swimlanes(
    report: &Report,
    path: &RequestPath,
    vantages: &[Vantage],
    tapped: &[SegmentSummary],
) -> String {
    // Lanes: capture points in path order.
    let mut lanes: Vec<u32> = Vec::new();
    let mut keys = std::collections::HashSet::new();
    // Where each view sits in its exchange's order (nearest the client first).
    let mut view_rank: HashMap<(u32, std::net::SocketAddr, std::net::SocketAddr), usize> =
        HashMap::new();
    for h in path.hops.iter().filter(|h| h.kind == HopKind::Http) {
        for (rank, s) in h.seen_at.iter().enumerate() {
            if let Some(v) = vantage_id(vantages, &s.capture.file, &s.capture.interface) {
                if !lanes.contains(&v) {
                    lanes.push(v);
                }
                keys.insert(conn_key(v, s.client, s.server));
                view_rank
                    .entry(conn_key(v, s.client, s.server))
                    .or_insert(rank);
            }
        }
    }
    // Packets that start an HTTP message, grouped by identity across lanes
    // (sequence and acknowledgement numbers, which NAT leaves alone).
    let mut columns: Vec<(u32, u32, Vec<&SegmentSummary>)> = Vec::new();
    let mut index: HashMap<(u32, u32), usize> = HashMap::new();
    let mut starts: Vec<&SegmentSummary> = tapped
        .iter()
        .filter(|s| s.first_line.is_some() && keys.contains(&conn_key(s.vantage, s.src, s.dst)))
        .filter(|s| {
            s.ts.0 >= path.start_ts.0 - super::MARGIN_NS
                && s.ts.0 <= path.end_ts.0 + super::MARGIN_NS
        })
        .collect();
    starts.sort_by_key(|s| (s.ts, s.vantage));
    for s in starts {
        let i = *index.entry((s.seq, s.ack)).or_insert_with(|| {
            columns.push((s.seq, s.ack, Vec::new()));
            columns.len() - 1
        });
        let col = &mut columns[i].2;
        if !col.iter().any(|x| x.vantage == s.vantage) {
            col.push(s);
        }
    }
    columns.truncate(MAX_COLUMNS);
    let table = name_table(report, path);
    let (lane_h, box_w, box_h, left, top) = (104, 250, 92, 190, 60);
    let width = left + (box_w + 30) * columns.len().max(1) as i32 + 40 + 490;
    let height = (top + lane_h * lanes.len() as i32 + 30).max(top + 20 * (table.len() as i32 + 2));
    let mut c = Canvas::new(width as u32, height as u32);
    c.text(
        16,
        14,
        &format!("path {}: the request's packets at every capture point (boxes: the same packet, left to right in time)", path.id),
        14,
        Color::INK,
    );
    for (l, v) in lanes.iter().enumerate() {
        let y = top + lane_h * l as i32;
        let vt = &vantages[*v as usize];
        c.rect(
            8,
            y,
            width - 500,
            lane_h - 6,
            if l % 2 == 0 {
                Color::OTHER
            } else {
                Color::WHITE
            },
            Color::GRID,
        );
        c.text(
            14,
            y + 8,
            &clean(&super::super::correlate::host_of(&vt.file), 18),
            13,
            Color::INK,
        );
        c.text(14, y + 28, &clean(&vt.interface, 20), 13, Color::INK);
    }
    let lane_y = |v: u32| top + lane_h * lanes.iter().position(|x| *x == v).unwrap_or(0) as i32;
    for (k, (_, _, segs)) in columns.iter().enumerate() {
        let x = left + (box_w + 30) * k as i32;
        let mut prev: Option<(&SegmentSummary, i32)> = None;
        let mut ordered = segs.clone();
        ordered.sort_by_key(|s| {
            view_rank
                .get(&conn_key(s.vantage, s.src, s.dst))
                .copied()
                .unwrap_or(usize::MAX)
        });
        // A response travels from the server's lanes back up to the client's.
        if ordered
            .first()
            .is_some_and(|s| s.first_line.as_deref().unwrap_or("").starts_with("HTTP/"))
        {
            ordered.reverse();
        }
        for s in ordered {
            let y = lane_y(s.vantage) + 4;
            let request = !s.first_line.as_deref().unwrap_or("").starts_with("HTTP/");
            c.rect(
                x,
                y,
                box_w,
                box_h,
                if request {
                    Color::CLIENT
                } else {
                    Color::BACKEND
                },
                Color::INK,
            );
            let lines = [
                clean(s.first_line.as_deref().unwrap_or(""), 34),
                format!("{} ->", s.src),
                format!("   {}", s.dst),
                match (
                    s.src_mac.as_ref().map(mac_string),
                    s.dst_mac.as_ref().map(mac_string),
                ) {
                    (Some(a), Some(b)) => format!("{a} -> {}", &b[b.len().saturating_sub(8)..]),
                    (Some(a), None) => format!("from MAC {a}"),
                    _ => "no MAC".to_string(),
                },
                format!(
                    "{}  {}",
                    s.ts,
                    clean(&vantages[s.vantage as usize].interface, 10)
                ),
            ];
            for (i, line) in lines.iter().enumerate() {
                c.text(
                    x + 6,
                    y + 4 + 17 * i as i32,
                    &clean(line, 36),
                    11,
                    Color::INK,
                );
            }
            if let Some((p, py)) = prev {
                let translated = match (p.src != s.src, p.dst != s.dst) {
                    (true, true) => "SNAT+DNAT",
                    (true, false) => "SNAT",
                    (false, true) => "DNAT",
                    _ => "",
                };
                let (from, to) = if py < y {
                    (py + box_h, y)
                } else {
                    (py, y + box_h)
                };
                let color = if translated.is_empty() {
                    Color::GREY
                } else {
                    Color::RED
                };
                c.arrow((x + box_w / 2, from), (x + box_w / 2, to), color);
                if !translated.is_empty() {
                    c.text(
                        x + box_w / 2 + 6,
                        from.min(to) - 2,
                        translated,
                        12,
                        Color::RED,
                    );
                }
            }
            prev = Some((s, y));
        }
    }
    draw_table(&mut c, width - 480, top, &table);
    c.finish()
}
