//! The topology map (the seed's `network_structure`): hosts as regions, the VIP over
//! the servers that held it, services as nodes (by role, inferred from traffic), and
//! the observed traffic as edges with request counts and median latency. The graph is
//! a petgraph `StableGraph`; the layout puts roles in tiers and hosts in columns.

use super::clean;
use super::draw::{Canvas, Color};
use crate::correlate::{HopKind, Report, RequestPath, VipHolding};
use hdrhistogram::Histogram;
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
#[derive(Clone, Debug)]
pub struct Traffic {
    /// Requests.
    pub requests: u64,
    /// Latencies at the callee, microseconds (HdrHistogram, 3 significant digits: a
    /// map of a long run in bounded memory).
    pub latency_us: Histogram<u64>,
}

impl Default for Traffic {
    fn default() -> Self {
        Traffic {
            requests: 0,
            latency_us: Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid bounds"),
        }
    }
}

impl Traffic {
    /// Median latency, ms (0 when no request was answered).
    pub fn median_ms(&self) -> f64 {
        if self.latency_us.is_empty() {
            return 0.0;
        }
        self.latency_us.value_at_quantile(0.5) as f64 / 1e3
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
    let mut b = TopologyBuilder::default();
    for p in &report.paths {
        b.add(p);
    }
    b.finish(&report.vip_timeline)
}

/// Most services (nodes) in a map: past it, traffic to new addresses is counted in
/// no edge (a scan of a /16 must not grow the map without bound).
pub const MAX_NODES: usize = 4096;

/// The topology of a run built path by path, as paths stream by: nodes and edges
/// only, never the paths.
#[derive(Clone, Default)]
pub struct TopologyBuilder {
    graph: StableGraph<Node, Traffic>,
    /// One node per (is client, host, address).
    index: BTreeMap<(bool, String, String), NodeIndex>,
    edges: BTreeMap<(NodeIndex, NodeIndex), Traffic>,
    /// Hops left out because the map was full.
    pub hops_not_drawn: u64,
}

impl TopologyBuilder {
    fn node(&mut self, n: Node) -> Option<NodeIndex> {
        let key = (n.role == "client", n.host.clone(), n.address.clone());
        let i = match self.index.get(&key) {
            Some(i) => *i,
            None if self.index.len() >= MAX_NODES => return None,
            None => {
                let i = self.graph.add_node(n.clone());
                self.index.insert(key, i);
                i
            }
        };
        // A request that got no answer counts toward the service at that address,
        // whatever role its answered requests show.
        if self.graph[i].role == "unanswered" && n.role != "unanswered" {
            self.graph[i] = n;
        }
        Some(i)
    }

    /// Adds the hops of one path.
    pub fn add(&mut self, p: &RequestPath) {
        let mut server_of: BTreeMap<usize, NodeIndex> = BTreeMap::new();
        for h in p.hops.iter().filter(|h| h.kind == HopKind::Http) {
            let last = h.seen_at.last();
            let Some(server) = self.node(Node {
                role: h.role.as_ref().map(|r| r.to_string()).unwrap_or_default(),
                host: h.host.clone().unwrap_or_default(),
                address: last.map(|s| s.server.to_string()).unwrap_or_default(),
                product: h.product.clone(),
            }) else {
                self.hops_not_drawn += 1;
                continue;
            };
            server_of.insert(h.id, server);
            let from = match h.parent.map(|q| server_of.get(&q).copied()) {
                Some(Some(parent)) => Some(parent),
                // Its parent was left out (the map is full): so is this hop, rather
                // than drawn as called by a client.
                Some(None) => None,
                None => {
                    let first = h.seen_at.first();
                    self.node(Node {
                        role: "client".into(),
                        host: first
                            .map(|s| crate::correlate::host_of(&s.capture.file))
                            .unwrap_or_default(),
                        address: first.map(|s| s.client.ip().to_string()).unwrap_or_default(),
                        product: None,
                    })
                }
            };
            let Some(from) = from else {
                self.hops_not_drawn += 1;
                continue;
            };
            let t = self.edges.entry((from, server)).or_default();
            t.requests += 1;
            if let Some(l) = h.latency_ms {
                let us = (l * 1e3).round().clamp(1.0, 3_600_000_000.0) as u64;
                t.latency_us.saturating_record(us);
            }
        }
    }

    /// The map, with the VIP holders of `vip_timeline`.
    pub fn finish(self, vip_timeline: &[VipHolding]) -> Topology {
        let mut graph = self.graph;
        for ((a, b), t) in self.edges {
            graph.add_edge(a, b, t);
        }
        let mut vips: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for h in vip_timeline.iter().filter(|h| h.priority > 0) {
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
                    h.role.as_ref().map_or("?", |r| r.as_str()),
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
