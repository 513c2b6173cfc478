//! Scoring request paths against the lab's ground truth (`truth.jsonl`, schema in
//! docs/lab.md): precision and recall of whole paths and of each link.
//!
//! A truth request is matched to the path whose first hop has the same client
//! address and port and VIP, taking requests on one client connection in order. Then
//! each link is checked:
//!
//! - `gateway_host`: the first hop's server is on the host whose gateway took it;
//! - `gateway_upstream`: the gateway's upstream hop has the truth's connection (as the
//!   gateway sent it, before NAT);
//! - `nginx_host`: that hop's server is on the host whose Nginx took it;
//! - `nginx_upstream`: Nginx's upstream hop has the truth's connection;
//! - `backend`: that hop's server is the replica that answered.
//!
//! A path is exactly right when every link is right and it has no other HTTP hop.
//! Failed requests (no gateway in the truth) are right when the path has only its
//! first hop and no response.

use crate::correlate::{HopKind, Report, RequestPath};
use serde::Serialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;

/// Precision and recall of one kind of link (or of whole paths).
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct Score {
    /// Right ones.
    pub correct: usize,
    /// Ones flowtrace produced.
    pub produced: usize,
    /// Ones in the truth.
    pub expected: usize,
    /// correct / produced.
    pub precision: f64,
    /// correct / expected.
    pub recall: f64,
}

impl Score {
    fn finish(mut self) -> Score {
        self.precision = if self.produced == 0 {
            1.0
        } else {
            self.correct as f64 / self.produced as f64
        };
        self.recall = if self.expected == 0 {
            1.0
        } else {
            self.correct as f64 / self.expected as f64
        };
        self
    }
}

/// The score of a run.
#[derive(Clone, Debug, Serialize)]
pub struct ScoreReport {
    /// Truth requests.
    pub truth_requests: usize,
    /// Paths flowtrace produced.
    pub paths: usize,
    /// Whole paths.
    pub paths_exact: Score,
    /// Per link kind.
    pub links: BTreeMap<&'static str, Score>,
    /// The first wrong paths, with what differs.
    pub mistakes: Vec<String>,
}

/// Why the truth file could not be used.
#[derive(Debug, thiserror::Error)]
#[error("truth line {line}: {detail}")]
pub struct TruthError {
    /// 1-based line.
    pub line: usize,
    /// What is wrong.
    pub detail: String,
}

struct Truth {
    id: u64,
    client: SocketAddr,
    vip: SocketAddr,
    t_start: f64,
    gateway_host: Option<String>,
    gateway_upstream: Option<(SocketAddr, SocketAddr)>,
    nginx_host: Option<String>,
    nginx_upstream: Option<(SocketAddr, SocketAddr)>,
    backend: Option<SocketAddr>,
}

fn addr(v: &serde_json::Value, key: &str) -> Option<SocketAddr> {
    v.get(key)?.as_str()?.parse().ok()
}

fn conn(v: &serde_json::Value, key: &str) -> Option<(SocketAddr, SocketAddr)> {
    let c = v.get(key)?;
    Some((addr(c, "src")?, addr(c, "dst")?))
}

fn parse_truth(text: &str) -> Result<Vec<Truth>, TruthError> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let err = |detail: &str| TruthError {
            line: i + 1,
            detail: detail.to_string(),
        };
        let v: serde_json::Value = serde_json::from_str(line).map_err(|e| err(&e.to_string()))?;
        let client = v.get("client").ok_or_else(|| err("no client"))?;
        out.push(Truth {
            id: v.get("id").and_then(|x| x.as_u64()).unwrap_or(i as u64),
            client: addr(client, "src").ok_or_else(|| err("no client.src"))?,
            vip: addr(client, "dst").ok_or_else(|| err("no client.dst"))?,
            t_start: v.get("t_start").and_then(|x| x.as_f64()).unwrap_or(0.0),
            gateway_host: v
                .pointer("/gateway/server")
                .and_then(|x| x.as_str())
                .map(str::to_owned),
            gateway_upstream: conn(&v, "gateway_upstream"),
            nginx_host: v
                .pointer("/nginx/server")
                .and_then(|x| x.as_str())
                .map(str::to_owned),
            nginx_upstream: conn(&v, "nginx_upstream"),
            backend: v
                .pointer("/python/addr")
                .and_then(|x| x.as_str())
                .and_then(|s| s.parse().ok()),
        });
    }
    Ok(out)
}

const LINKS: [&str; 5] = [
    "gateway_host",
    "gateway_upstream",
    "nginx_host",
    "nginx_upstream",
    "backend",
];

/// Scores `report` against the truth in `truth_jsonl`.
pub fn score(report: &Report, truth_jsonl: &str) -> Result<ScoreReport, TruthError> {
    let truth = parse_truth(truth_jsonl)?;
    // Paths by the client's connection, in time order.
    let mut by_client: BTreeMap<(SocketAddr, SocketAddr), Vec<&RequestPath>> = BTreeMap::new();
    for p in &report.paths {
        if let Some(root) = p.hops.first() {
            if let (Some(c), Some(s)) = (root.client, root.server) {
                by_client.entry((c, s)).or_default().push(p);
            }
        }
    }
    // Paths are emitted as they become final, not in the order they started.
    for list in by_client.values_mut() {
        list.sort_by_key(|p| (p.start_ts, p.id));
    }
    let mut truth_by_client: BTreeMap<(SocketAddr, SocketAddr), Vec<&Truth>> = BTreeMap::new();
    for t in &truth {
        truth_by_client
            .entry((t.client, t.vip))
            .or_default()
            .push(t);
    }
    let mut links: BTreeMap<&'static str, Score> =
        LINKS.iter().map(|l| (*l, Score::default())).collect();
    let mut exact = Score {
        produced: report.paths.len(),
        expected: truth.len(),
        ..Score::default()
    };
    // Links flowtrace produced, over all paths.
    for p in &report.paths {
        let root = &p.hops[0];
        if root.role.is_some() && p.hops.len() > 1 {
            links.get_mut("gateway_host").expect("known").produced += 1;
        }
        for g in p.http_children(0) {
            links.get_mut("gateway_upstream").expect("known").produced += 1;
            links.get_mut("nginx_host").expect("known").produced += 1;
            for n in p.http_children(g.id) {
                links.get_mut("nginx_upstream").expect("known").produced += 1;
                links.get_mut("backend").expect("known").produced += 1;
                let _ = n;
            }
        }
    }
    let mut mistakes = Vec::new();
    for (key, mut ts) in truth_by_client {
        ts.sort_by(|a, b| a.t_start.total_cmp(&b.t_start));
        let paths = by_client.get(&key).cloned().unwrap_or_default();
        for (i, t) in ts.iter().enumerate() {
            for (name, present) in [
                ("gateway_host", t.gateway_host.is_some()),
                ("gateway_upstream", t.gateway_upstream.is_some()),
                ("nginx_host", t.nginx_host.is_some()),
                ("nginx_upstream", t.nginx_upstream.is_some()),
                ("backend", t.backend.is_some()),
            ] {
                if present {
                    links.get_mut(name).expect("known").expected += 1;
                }
            }
            let Some(p) = paths.get(i) else {
                if mistakes.len() < 20 {
                    mistakes.push(format!("truth {}: no path for client {}", t.id, t.client));
                }
                continue;
            };
            let mut wrong = Vec::new();
            let root = &p.hops[0];
            let http_hops = p.hops.iter().filter(|h| h.kind == HopKind::Http).count();
            let gw = p.http_children(0);
            let gw = (gw.len() == 1).then(|| gw[0]);
            let ng = gw.and_then(|g| {
                let c = p.http_children(g.id);
                (c.len() == 1).then(|| c[0])
            });
            let mut check = |name: &'static str, ok: bool, expected: bool, what: String| {
                if ok {
                    links.get_mut(name).expect("known").correct += 1;
                } else if expected {
                    wrong.push(what);
                }
            };
            if let Some(h) = &t.gateway_host {
                check(
                    "gateway_host",
                    root.host.as_deref() == Some(h.as_str()) && gw.is_some(),
                    true,
                    format!("gateway on {:?}, truth {h}", root.host),
                );
            }
            if let Some((src, dst)) = t.gateway_upstream {
                let ok = gw.is_some_and(|g| g.client == Some(src) && g.server == Some(dst));
                check(
                    "gateway_upstream",
                    ok,
                    true,
                    format!(
                        "gateway upstream {:?}, truth {src} -> {dst}",
                        gw.map(|g| (g.client, g.server))
                    ),
                );
            }
            if let Some(h) = &t.nginx_host {
                let ok = gw.is_some_and(|g| g.host.as_deref() == Some(h.as_str()));
                check(
                    "nginx_host",
                    ok,
                    true,
                    format!("nginx on {:?}, truth {h}", gw.and_then(|g| g.host.clone())),
                );
            }
            if let Some((src, dst)) = t.nginx_upstream {
                let ok = ng.is_some_and(|n| n.client == Some(src) && n.server == Some(dst));
                check(
                    "nginx_upstream",
                    ok,
                    true,
                    format!(
                        "nginx upstream {:?}, truth {src} -> {dst}",
                        ng.map(|n| (n.client, n.server))
                    ),
                );
            }
            if let Some(b) = t.backend {
                let ok = ng.is_some_and(|n| n.seen_at.last().map(|s| s.server) == Some(b));
                check(
                    "backend",
                    ok,
                    true,
                    format!(
                        "backend {:?}, truth {b}",
                        ng.and_then(|n| n.seen_at.last().map(|s| s.server))
                    ),
                );
            }
            let failed_truth = t.gateway_host.is_none();
            let shape_ok = if failed_truth {
                http_hops == 1 && root.status.is_none()
            } else {
                http_hops == 3
            };
            if !shape_ok {
                wrong.push(format!("{http_hops} HTTP hops"));
            }
            if wrong.is_empty() {
                exact.correct += 1;
            } else if mistakes.len() < 20 {
                mistakes.push(format!(
                    "truth {} (path {}): {}",
                    t.id,
                    p.id,
                    wrong.join("; ")
                ));
            }
        }
    }
    Ok(ScoreReport {
        truth_requests: truth.len(),
        paths: report.paths.len(),
        paths_exact: exact.finish(),
        links: links.into_iter().map(|(k, v)| (k, v.finish())).collect(),
        mistakes,
    })
}
