//! The ladder (the seed's `kong_nginx_at_diff_server`): one column per endpoint,
//! every TCP segment of the request's connections as an arrow in time order, labelled
//! with its flags, length and HTTP start line, coloured by phase (one per hop), with
//! retransmissions marked and runs of bare ACKs folded.

use super::draw::{Canvas, Color};
use super::{clean, hop_title, vantage_id};
use crate::correlate::{HopKind, Report, RequestPath};
use crate::decode::TcpSegment;
use crate::pipeline::Vantage;
use crate::tcp::{conn_key, SegmentSummary};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

/// Rows per page: a longer ladder continues on another SVG.
pub const ROWS_PER_PAGE: usize = 120;

const PHASE_COLORS: [Color; 6] = [
    Color::BLUE,
    Color::GREEN,
    Color::PURPLE,
    Color::RED,
    Color::GREY,
    Color::INK,
];

fn flag_names(flags: u8) -> String {
    let mut v = Vec::new();
    for (bit, name) in [
        (TcpSegment::SYN, "SYN"),
        (TcpSegment::FIN, "FIN"),
        (TcpSegment::RST, "RST"),
        (TcpSegment::PSH, "PSH"),
        (TcpSegment::ACK, "ACK"),
    ] {
        if flags & bit != 0 {
            v.push(name);
        }
    }
    v.join(", ")
}

struct Row<'a> {
    seg: &'a SegmentSummary,
    /// Clock-corrected time.
    t: i64,
    phase: usize,
    folded: usize,
    retransmission: bool,
}

/// Draws the ladder of `path`; one SVG per page.
pub fn ladder(
    report: &Report,
    path: &RequestPath,
    vantages: &[Vantage],
    tapped: &[SegmentSummary],
) -> Vec<String> {
    // One view per hop: where its client sent it (the first capture point).
    let hops: Vec<_> = path
        .hops
        .iter()
        .filter(|h| h.kind == HopKind::Http)
        .collect();
    let mut phase_of: HashMap<(u32, SocketAddr, SocketAddr), usize> = HashMap::new();
    let mut columns: Vec<IpAddr> = Vec::new();
    for (i, h) in hops.iter().enumerate() {
        let Some(view) = h.seen_at.first() else {
            continue;
        };
        if let Some(v) = vantage_id(vantages, &view.capture.file, &view.capture.interface) {
            phase_of.insert(conn_key(v, view.client, view.server), i);
        }
        for ip in [view.client.ip(), view.server.ip()] {
            if !columns.contains(&ip) {
                columns.push(ip);
            }
        }
    }
    let offset_of = |vantage: u32| -> i64 {
        let file = &vantages[vantage as usize].file;
        report
            .clock_offsets
            .iter()
            .find(|o| &o.capture == file)
            .map_or(0, |o| (o.offset_s * 1e9) as i64)
    };
    let window = (
        path.start_ts.0 - super::MARGIN_NS,
        path.end_ts.0 + super::MARGIN_NS,
    );
    let mut segs: Vec<(&SegmentSummary, usize, i64)> = tapped
        .iter()
        .filter_map(|s| {
            let phase = *phase_of.get(&conn_key(s.vantage, s.src, s.dst))?;
            let t = s.ts.0 - offset_of(s.vantage);
            (t >= window.0 && t <= window.1).then_some((s, phase, t))
        })
        .collect();
    segs.sort_by_key(|(s, _, t)| (*t, s.vantage));
    // Fold runs of bare ACKs; mark retransmissions.
    let mut rows: Vec<Row> = Vec::new();
    let mut high: HashMap<(SocketAddr, SocketAddr), u32> = HashMap::new();
    for (s, phase, t) in &segs {
        let bare_ack =
            s.len == 0 && s.flags & (TcpSegment::SYN | TcpSegment::FIN | TcpSegment::RST) == 0;
        if bare_ack {
            if let Some(last) = rows.last_mut() {
                let l = last.seg;
                if last.phase == *phase
                    && l.src == s.src
                    && l.dst == s.dst
                    && l.len == 0
                    && l.flags == s.flags
                {
                    last.folded += 1;
                    continue;
                }
            }
        }
        let end = s.seq.wrapping_add(s.len);
        let seen = high.get(&(s.src, s.dst)).copied();
        let retransmission = s.len > 0 && seen.is_some_and(|h| end.wrapping_sub(h) as i32 <= 0);
        if s.len > 0 && seen.is_none_or(|h| end.wrapping_sub(h) as i32 > 0) {
            high.insert((s.src, s.dst), end);
        }
        rows.push(Row {
            seg: s,
            t: *t,
            phase: *phase,
            folded: 1,
            retransmission,
        });
    }
    let t0 = segs.first().map_or(0, |(_, _, t)| *t);
    let names: HashMap<IpAddr, String> = report
        .address_book
        .iter()
        .map(|e| (e.ip, e.name.clone()))
        .collect();
    let pages: Vec<&[Row]> = if rows.is_empty() {
        vec![&[][..]]
    } else {
        rows.chunks(ROWS_PER_PAGE).collect()
    };
    let page_count = pages.len();
    pages
        .into_iter()
        .enumerate()
        .map(|(page, rows)| {
            let col_w = 190;
            let left = 120;
            let header = 130 + 18 * hops.len() as i32;
            let row_h = 24;
            let width = left + col_w * columns.len().max(1) as i32 + 40;
            let height = header + row_h * rows.len() as i32 + 40;
            let mut c = Canvas::new(width as u32, height as u32);
            c.text(
                16,
                12,
                &format!(
                    "path {}: every TCP segment of its connections (page {} of {page_count})",
                    path.id,
                    page + 1
                ),
                15,
                Color::INK,
            );
            for (i, h) in hops.iter().enumerate() {
                let color = PHASE_COLORS[i % PHASE_COLORS.len()];
                c.line((16, 44 + 18 * i as i32), (40, 44 + 18 * i as i32), color, 3);
                c.text(
                    48,
                    37 + 18 * i as i32,
                    &format!(
                        "{} {} {}  {}",
                        i + 1,
                        clean(h.method.as_deref().unwrap_or("-"), 8),
                        clean(h.uri.as_deref().unwrap_or("-"), 40),
                        hop_title(h)
                    ),
                    12,
                    Color::INK,
                );
            }
            let col_x = |ip: IpAddr| {
                left + col_w * columns.iter().position(|c| *c == ip).unwrap_or(0) as i32 + col_w / 2
            };
            let top = header - 50;
            for ip in &columns {
                let x = col_x(*ip);
                c.text_centered(
                    x,
                    top,
                    &clean(names.get(ip).map(String::as_str).unwrap_or("?"), 24),
                    12,
                    Color::INK,
                );
                c.text_centered(x, top + 16, &ip.to_string(), 12, Color::INK);
                c.line((x, top + 36), (x, height - 20), Color::GRID, 2);
            }
            for (r, row) in rows.iter().enumerate() {
                let y = header + row_h * r as i32 + 12;
                let s = row.seg;
                let (x1, x2) = (col_x(s.src.ip()), col_x(s.dst.ip()));
                let color = if row.retransmission {
                    Color::RED
                } else {
                    PHASE_COLORS[row.phase % PHASE_COLORS.len()]
                };
                let ms = (row.t - t0) as f64 / 1e6;
                c.text(8, y - 7, &format!("{ms:9.3} ms"), 11, Color::GREY);
                if x1 == x2 {
                    c.arrow((x1 - 40, y), (x1 + 40, y), color);
                } else {
                    c.arrow((x1, y), (x2, y), color);
                }
                let mut label = flag_names(s.flags);
                if s.len > 0 {
                    label.push_str(&format!(" len={}", s.len));
                }
                if row.folded > 1 {
                    label.push_str(&format!(" x{}", row.folded));
                }
                if row.retransmission {
                    label.push_str(" RETRANSMISSION");
                }
                if let Some(line) = &s.first_line {
                    label.push_str(&format!("  {}", clean(line, 48)));
                }
                let lx = x1.min(x2) + 6;
                c.text(lx, y - 15, &clean(&label, 80), 11, color);
            }
            c.finish()
        })
        .collect()
}
