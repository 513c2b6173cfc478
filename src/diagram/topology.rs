//! The topology map (the seed's `network_structure`): hosts as regions, the VIP over
//! the servers that held it, services as nodes (by role, inferred from traffic), and
//! the observed traffic as edges with request counts and median latency. The graph is
//! a petgraph `StableGraph`; the layout puts roles in tiers and hosts in columns.

use super::clean;
use super::draw::{Canvas, Color};
use crate::correlate::{HopKind, Report, RequestPath};
use petgraph::stable_graph::{NodeIndex, StableGraph};
use petgraph::visit::{EdgeRef, IntoEdgeReferences};
use std::collections::BTreeMap;

/// A service (or client) in the map.
#[derive(Clone, Debug)]
pub struct Node {
    /// Role: client, gateway, load_balancer, proxy, backend, unanswered.
    pub role: String,
    /// Host it runs on (client nodes: the capture that saw them first).
    pub host: String,
    /// Its address as its peers reached it.
    pub address: String,
    /// Software, when known.
    pub product: Option<String>,
}

/// Traffic between two services.
#[derive(Clone, Debug, Default)]
pub struct Traffic {
    /// Requests.
    pub requests: u64,
    /// Latency of each, ms (at the callee).
    pub latencies_ms: Vec<f64>,
}

impl Traffic {
    /// Median latency, ms.
    pub fn median_ms(&self) -> f64 {
        let mut v = self.latencies_ms.clone();
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(0.0)
    }
}

/// The observed topology.
pub struct Topology {
    /// Services and the traffic between them.
    pub graph: StableGraph<Node, Traffic>,
    /// Each VIP with its holders in order.
    pub vips: Vec<(String, Vec<String>)>,
}

fn tier(role: &str) -> usize {
    match role {
        "client" => 0,
        "gateway" => 2,
        "load_balancer" | "proxy" => 3,
        "backend" => 4,
        _ => 5,
    }
}

/// Builds the topology from every path.
pub fn topology(report: &Report) -> Topology {
    let mut graph: StableGraph<Node, Traffic> = StableGraph::new();
    // One node per (host, address); a request that got no answer counts toward the
    // service at that address, whatever role its answered requests show.
    let mut index: BTreeMap<(bool, String, String), NodeIndex> = BTreeMap::new();
    let mut node = |graph: &mut StableGraph<Node, Traffic>, n: Node| {
        let key = (n.role == "client", n.host.clone(), n.address.clone());
        let i = *index
            .entry(key)
            .or_insert_with(|| graph.add_node(n.clone()));
        if graph[i].role == "unanswered" && n.role != "unanswered" {
            graph[i] = n;
        }
        i
    };
    let mut edges: BTreeMap<(NodeIndex, NodeIndex), Traffic> = BTreeMap::new();
    for p in &report.paths {
        let mut server_of: BTreeMap<usize, NodeIndex> = BTreeMap::new();
        for h in p.hops.iter().filter(|h| h.kind == HopKind::Http) {
            let last = h.seen_at.last();
            let server = node(
                &mut graph,
                Node {
                    role: h.role.clone().unwrap_or_default(),
                    host: h.host.clone().unwrap_or_default(),
                    address: last.map(|s| s.server.to_string()).unwrap_or_default(),
                    product: h.product.clone(),
                },
            );
            server_of.insert(h.id, server);
            let from = match h.parent.and_then(|q| server_of.get(&q).copied()) {
                Some(parent) => parent,
                None => {
                    let first = h.seen_at.first();
                    node(
                        &mut graph,
                        Node {
                            role: "client".into(),
                            host: first
                                .map(|s| crate::correlate::host_of(&s.capture.file))
                                .unwrap_or_default(),
                            address: first.map(|s| s.client.ip().to_string()).unwrap_or_default(),
                            product: None,
                        },
                    )
                }
            };
            let t = edges.entry((from, server)).or_default();
            t.requests += 1;
            if let Some(l) = h.latency_ms {
                t.latencies_ms.push(l);
            }
        }
    }
    for ((a, b), t) in edges {
        graph.add_edge(a, b, t);
    }
    let mut vips: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for h in report.vip_timeline.iter().filter(|h| h.priority > 0) {
        let holders = vips.entry(h.vip.to_string()).or_default();
        if holders.last() != Some(&h.holder) {
            holders.push(h.holder.clone());
        }
    }
    Topology {
        graph,
        vips: vips.into_iter().collect(),
    }
}

impl Topology {
    /// Hosts with services, in the order the map draws them.
    pub fn hosts(&self) -> Vec<String> {
        let mut hosts: Vec<String> = self
            .graph
            .node_weights()
            .filter(|n| n.role != "client")
            .map(|n| n.host.clone())
            .collect();
        hosts.sort();
        hosts.dedup();
        hosts
    }

    /// The map as SVG.
    pub fn svg(&self) -> String {
        const NODE_W: i32 = 210;
        const NODE_H: i32 = 58;
        const TIER_H: i32 = 150;
        let hosts = self.hosts();
        // Column slots: per host, as many as its widest tier.
        let mut slots: BTreeMap<(String, usize), Vec<NodeIndex>> = BTreeMap::new();
        for i in self.graph.node_indices() {
            let n = &self.graph[i];
            let host = if n.role == "client" {
                String::new()
            } else {
                n.host.clone()
            };
            slots.entry((host, tier(&n.role))).or_default().push(i);
        }
        let width_of = |host: &str| {
            slots
                .iter()
                .filter(|((h, _), _)| h == host)
                .map(|(_, v)| v.len())
                .max()
                .unwrap_or(1) as i32
        };
        let mut host_x: BTreeMap<String, (i32, i32)> = BTreeMap::new();
        let mut x = 40;
        for h in &hosts {
            let w = width_of(h) * (NODE_W + 20) + 20;
            host_x.insert(h.clone(), (x, w));
            x += w + 40;
        }
        let total_w = x.max(600);
        let clients = slots.get(&(String::new(), 0)).map_or(0, |v| v.len()) as i32;
        let width = total_w.max(clients * (NODE_W + 20) + 80);
        let deepest = self
            .graph
            .node_weights()
            .map(|n| tier(&n.role))
            .max()
            .unwrap_or(0) as i32;
        let height = 60 + TIER_H * (deepest + 1);
        let mut pos: BTreeMap<NodeIndex, (i32, i32)> = BTreeMap::new();
        for ((host, t), nodes) in &slots {
            let (x0, w) = if host.is_empty() {
                (40, width - 80)
            } else {
                host_x[host]
            };
            let n = nodes.len() as i32;
            let span = n * (NODE_W + 20) - 20;
            for (k, idx) in nodes.iter().enumerate() {
                let nx = x0 + (w - span) / 2 + k as i32 * (NODE_W + 20);
                pos.insert(*idx, (nx, 60 + TIER_H * *t as i32));
            }
        }
        let mut c = Canvas::new(width as u32, height as u32);
        c.text(
            16,
            14,
            "topology: services by role and host, observed requests and median latency",
            14,
            Color::INK,
        );
        for (h, (x0, w)) in &host_x {
            c.rect(
                *x0,
                60 + TIER_H * 2 - 40,
                *w,
                TIER_H * (deepest - 1).max(1),
                Color::OTHER,
                Color::GRID,
            );
            c.text(
                *x0 + 8,
                60 + TIER_H * 2 - 34,
                &format!("host {}", clean(h, 24)),
                13,
                Color::INK,
            );
        }
        for (vip, holders) in &self.vips {
            let y = 60 + TIER_H;
            c.rect(40, y, width - 80, NODE_H, Color::VIP, Color::INK);
            let roles: Vec<String> = holders
                .iter()
                .enumerate()
                .map(|(i, h)| {
                    format!(
                        "{} {}",
                        clean(h, 16),
                        if i == 0 {
                            "(master)"
                        } else {
                            "(after failover)"
                        }
                    )
                })
                .collect();
            c.text(52, y + 10, &format!("VIP {vip} (VRRP)"), 14, Color::INK);
            c.text(52, y + 32, &roles.join(", "), 12, Color::INK);
        }
        for e in (&self.graph).edge_references() {
            let (a, b) = (pos[&e.source()], pos[&e.target()]);
            let mut from = (a.0 + NODE_W / 2, a.1 + NODE_H);
            if self.graph[e.source()].role == "client" && !self.vips.is_empty() {
                // Clients reach the services through the VIP.
                let vip_y = 60 + TIER_H;
                c.arrow(from, (from.0, vip_y), Color::BLUE);
                from = (b.0 + NODE_W / 2, vip_y + NODE_H);
            }
            let to = (b.0 + NODE_W / 2, b.1);
            c.arrow(from, to, Color::BLUE);
            let t = e.weight();
            // A third of the way: crossing edges keep their labels apart.
            let mid = (from.0 + (to.0 - from.0) / 3, from.1 + (to.1 - from.1) / 3);
            c.text(
                mid.0 + 4,
                mid.1 - 6,
                &format!("{} req, p50 {:.2} ms", t.requests, t.median_ms()),
                11,
                Color::BLUE,
            );
        }
        for i in self.graph.node_indices() {
            let n = &self.graph[i];
            let (x, y) = pos[&i];
            let fill = match n.role.as_str() {
                "client" => Color::CLIENT,
                "gateway" => Color::GATEWAY,
                "load_balancer" => Color::BALANCER,
                "backend" => Color::BACKEND,
                _ => Color::OTHER,
            };
            c.rect(x, y, NODE_W, NODE_H, fill, Color::INK);
            c.text(
                x + 8,
                y + 8,
                &clean(
                    &format!(
                        "{}{}",
                        n.role,
                        n.product
                            .as_deref()
                            .map(|p| format!(" ({p})"))
                            .unwrap_or_default()
                    ),
                    26,
                ),
                13,
                Color::INK,
            );
            c.text(x + 8, y + 30, &clean(&n.address, 26), 12, Color::INK);
        }
        c.finish()
    }
}

/// A path's hops as (id, parent, label) for the text exports.
pub(super) fn path_nodes(p: &RequestPath) -> Vec<(usize, Option<usize>, String)> {
    p.hops
        .iter()
        .map(|h| {
            let label = match h.kind {
                HopKind::Nat => {
                    let (b, a) = (h.before.expect("nat"), h.after.expect("nat"));
                    format!(
                        "{} on {}: {} {} -> {} {}",
                        h.translation.map_or("NAT", |t| t.as_str()),
                        h.host.as_deref().unwrap_or("?"),
                        b.client,
                        b.server,
                        a.client,
                        a.server
                    )
                }
                _ => format!(
                    "{} on {}: {} -> {} {} {} {}",
                    h.role.as_deref().unwrap_or("?"),
                    h.host.as_deref().unwrap_or("?"),
                    h.client.map(|c| c.to_string()).unwrap_or_default(),
                    h.server.map(|c| c.to_string()).unwrap_or_default(),
                    h.method.as_deref().unwrap_or("-"),
                    h.uri.as_deref().unwrap_or("-"),
                    h.status.map_or("---".to_string(), |s| s.to_string())
                ),
            };
            (h.id, h.parent, label)
        })
        .collect()
}
