//! The topology and a path as Graphviz DOT and Mermaid, for docs and GitHub. Labels
//! are escaped for each format (wire text can hold quotes, brackets and newlines).

use super::topology::{path_nodes, Topology};
use crate::correlate::RequestPath;
use petgraph::visit::{EdgeRef, IntoEdgeReferences};

fn dot_escape(s: &str) -> String {
    super::clean(s, 120)
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
}

/// Mermaid labels are quoted; quotes and markup characters become entities.
fn mermaid_escape(s: &str) -> String {
    super::clean(s, 120)
        .replace('&', "&amp;")
        .replace('"', "&quot;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace(['[', ']', '{', '}', '|'], "_")
}

/// How one text format writes a topology's parts; [`topology_in`] walks the topology
/// once for every format.
trait TopologySyntax {
    fn escape(s: &str) -> String;
    fn header(out: &mut String);
    fn host_open(out: &mut String, k: usize, host: &str);
    fn host_close(out: &mut String);
    /// A node: `indent` inside a host, `lines` already escaped.
    fn node(out: &mut String, indent: &str, id: usize, lines: [&str; 2]);
    /// VIP number `k`.
    fn vip(out: &mut String, k: usize, vip: &str, holders: &str);
    fn edge(out: &mut String, from: usize, to: usize, label: &str);
    fn footer(out: &mut String);
}

struct Dot;

impl TopologySyntax for Dot {
    fn escape(s: &str) -> String {
        dot_escape(s)
    }
    fn header(out: &mut String) {
        out.push_str(
            "digraph topology {\n  rankdir=TB;\n  node [shape=box, fontname=monospace];\n",
        );
    }
    fn host_open(out: &mut String, k: usize, host: &str) {
        out.push_str(&format!(
            "  subgraph cluster_{k} {{\n    label=\"host {host}\";\n"
        ));
    }
    fn host_close(out: &mut String) {
        out.push_str("  }\n");
    }
    fn node(out: &mut String, indent: &str, id: usize, [a, b]: [&str; 2]) {
        out.push_str(&format!("{indent}n{id} [label=\"{a}\\n{b}\"];\n"));
    }
    fn vip(out: &mut String, k: usize, vip: &str, holders: &str) {
        out.push_str(&format!(
            "  vip{k} [label=\"VIP {vip}\\nheld by {holders}\", style=filled, fillcolor=lightyellow];\n"
        ));
    }
    fn edge(out: &mut String, from: usize, to: usize, label: &str) {
        out.push_str(&format!("  n{from} -> n{to} [label=\"{label}\"];\n"));
    }
    fn footer(out: &mut String) {
        out.push_str("}\n");
    }
}

struct Mermaid;

impl TopologySyntax for Mermaid {
    fn escape(s: &str) -> String {
        mermaid_escape(s)
    }
    fn header(out: &mut String) {
        out.push_str("flowchart TD\n");
    }
    fn host_open(out: &mut String, k: usize, host: &str) {
        out.push_str(&format!("  subgraph host{k}[\"host {host}\"]\n"));
    }
    fn host_close(out: &mut String) {
        out.push_str("  end\n");
    }
    fn node(out: &mut String, indent: &str, id: usize, [a, b]: [&str; 2]) {
        out.push_str(&format!("{indent}n{id}[\"{a}<br/>{b}\"]\n"));
    }
    fn vip(out: &mut String, k: usize, vip: &str, holders: &str) {
        out.push_str(&format!("  vip{k}[\"VIP {vip}<br/>held by {holders}\"]\n"));
    }
    fn edge(out: &mut String, from: usize, to: usize, label: &str) {
        out.push_str(&format!("  n{from} -->|\"{label}\"| n{to}\n"));
    }
    fn footer(_: &mut String) {}
}

/// The topology in syntax `S`: a cluster per host with its services, the clients, the
/// VIPs with their holders, and the traffic as labelled edges.
fn topology_in<S: TopologySyntax>(t: &Topology) -> String {
    let mut out = String::new();
    S::header(&mut out);
    for (k, h) in t.hosts().iter().enumerate() {
        S::host_open(&mut out, k, &S::escape(h));
        for i in t
            .graph
            .node_indices()
            .filter(|i| t.graph[*i].role != "client" && &t.graph[*i].host == h)
        {
            let n = &t.graph[i];
            let lines = [S::escape(&n.role), S::escape(&n.address)];
            S::node(&mut out, "    ", i.index(), [&lines[0], &lines[1]]);
        }
        S::host_close(&mut out);
    }
    for i in t
        .graph
        .node_indices()
        .filter(|i| t.graph[*i].role == "client")
    {
        let address = S::escape(&t.graph[i].address);
        S::node(&mut out, "  ", i.index(), ["client", &address]);
    }
    for (k, (v, holders)) in t.vips.iter().enumerate() {
        S::vip(
            &mut out,
            k,
            &S::escape(v),
            &S::escape(&holders.join(", then ")),
        );
    }
    for e in (&t.graph).edge_references() {
        let w = e.weight();
        let label = format!("{} req, p50 {:.2} ms", w.requests, w.median_ms());
        S::edge(&mut out, e.source().index(), e.target().index(), &label);
    }
    S::footer(&mut out);
    out
}

/// The topology in DOT: a cluster per host.
pub fn topology_dot(t: &Topology) -> String {
    topology_in::<Dot>(t)
}

/// The topology as a Mermaid flowchart.
pub fn topology_mermaid(t: &Topology) -> String {
    topology_in::<Mermaid>(t)
}

/// A path in DOT.
pub fn path_dot(p: &RequestPath) -> String {
    let mut out = format!(
        "digraph path_{} {{\n  rankdir=TB;\n  node [shape=box, fontname=monospace];\n",
        p.id
    );
    for (id, parent, label) in path_nodes(p) {
        out.push_str(&format!("  h{id} [label=\"{}\"];\n", dot_escape(&label)));
        if let Some(q) = parent {
            out.push_str(&format!("  h{q} -> h{id};\n"));
        }
    }
    out.push_str("}\n");
    out
}

/// A path as a Mermaid flowchart.
pub fn path_mermaid(p: &RequestPath) -> String {
    let mut out = String::from("flowchart TD\n");
    for (id, parent, label) in path_nodes(p) {
        out.push_str(&format!("  h{id}[\"{}\"]\n", mermaid_escape(&label)));
        if let Some(q) = parent {
            out.push_str(&format!("  h{q} --> h{id}\n"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diagram::topology::{Node, Traffic};
    use petgraph::stable_graph::StableGraph;

    /// A gateway named by hostile wire text, its client, and two VIPs.
    fn topology() -> Topology {
        let mut graph = StableGraph::new();
        let node = |role: &str, host: &str, address: &str| Node {
            role: role.into(),
            host: host.into(),
            address: address.into(),
            product: None,
        };
        let gw = graph.add_node(node("gateway", "A\"]} x", "10.0.0.1:80<b>\n"));
        let client = graph.add_node(node("client", "A", "10.0.0.9"));
        let mut traffic = Traffic {
            requests: 3,
            ..Traffic::default()
        };
        traffic.latency_us.record(1500).unwrap();
        graph.add_edge(client, gw, traffic);
        Topology {
            graph,
            vips: vec![
                ("10.0.0.100".into(), vec!["A".into(), "B".into()]),
                ("10.0.0.200".into(), vec!["B".into()]),
            ],
        }
    }

    #[test]
    fn dot_has_every_part_and_escapes_wire_text() {
        let dot = topology_dot(&topology());
        assert!(
            dot.starts_with("digraph topology {") && dot.ends_with("}\n"),
            "{dot}"
        );
        assert!(dot.contains("label=\"host A\\\"]} x\";"), "{dot}");
        assert!(dot.contains("10.0.0.1:80<b>\\\\x0a\"]"), "{dot}");
        assert!(dot.contains("n1 [label=\"client\\n10.0.0.9\"];"), "{dot}");
        assert!(dot.contains("vip0 [label=\"VIP 10.0.0.100\\nheld by A, then B\""));
        assert!(dot.contains("vip1 [label=\"VIP 10.0.0.200\\nheld by B\""));
        assert!(
            dot.contains("n1 -> n0 [label=\"3 req, p50 1.50 ms\"];"),
            "{dot}"
        );
        // Every quote left is one of the syntax's own: labels stay closed.
        for line in dot.lines() {
            assert_eq!(
                line.replace("\\\"", "").matches('"').count() % 2,
                0,
                "{line}"
            );
        }
    }

    #[test]
    fn mermaid_has_every_part_and_escapes_wire_text() {
        let mmd = topology_mermaid(&topology());
        assert!(mmd.starts_with("flowchart TD\n"), "{mmd}");
        assert!(mmd.contains("10.0.0.1:80&lt;b&gt;"), "{mmd}");
        assert!(!mmd.contains("<b>") && !mmd.contains("\"]} x"), "{mmd}");
        assert!(mmd.contains("  vip0[\"VIP 10.0.0.100<br/>held by A, then B\"]"));
        assert!(mmd.contains("  vip1[\"VIP 10.0.0.200<br/>held by B\"]"));
        assert!(mmd.contains("  n1 -->|\"3 req, p50 1.50 ms\"| n0"), "{mmd}");
    }
}
