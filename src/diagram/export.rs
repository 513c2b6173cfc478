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

/// The topology in DOT: a cluster per host.
pub fn topology_dot(t: &Topology) -> String {
    let mut out = String::from(
        "digraph topology {\n  rankdir=TB;\n  node [shape=box, fontname=monospace];\n",
    );
    let hosts = t.hosts();
    for (k, h) in hosts.iter().enumerate() {
        out.push_str(&format!(
            "  subgraph cluster_{k} {{\n    label=\"host {}\";\n",
            dot_escape(h)
        ));
        for i in t
            .graph
            .node_indices()
            .filter(|i| t.graph[*i].role != "client" && &t.graph[*i].host == h)
        {
            let n = &t.graph[i];
            out.push_str(&format!(
                "    n{} [label=\"{}\\n{}\"];\n",
                i.index(),
                dot_escape(&n.role),
                dot_escape(&n.address)
            ));
        }
        out.push_str("  }\n");
    }
    for i in t
        .graph
        .node_indices()
        .filter(|i| t.graph[*i].role == "client")
    {
        out.push_str(&format!(
            "  n{} [label=\"client\\n{}\"];\n",
            i.index(),
            dot_escape(&t.graph[i].address)
        ));
    }
    for (v, holders) in &t.vips {
        out.push_str(&format!(
            "  vip [label=\"VIP {}\\nheld by {}\", style=filled, fillcolor=lightyellow];\n",
            dot_escape(v),
            dot_escape(&holders.join(", then "))
        ));
    }
    for e in (&t.graph).edge_references() {
        let w = e.weight();
        out.push_str(&format!(
            "  n{} -> n{} [label=\"{} req, p50 {:.2} ms\"];\n",
            e.source().index(),
            e.target().index(),
            w.requests,
            w.median_ms()
        ));
    }
    out.push_str("}\n");
    out
}

/// The topology as a Mermaid flowchart.
pub fn topology_mermaid(t: &Topology) -> String {
    let mut out = String::from("flowchart TD\n");
    let hosts = t.hosts();
    for (k, h) in hosts.iter().enumerate() {
        out.push_str(&format!(
            "  subgraph host{k}[\"host {}\"]\n",
            mermaid_escape(h)
        ));
        for i in t
            .graph
            .node_indices()
            .filter(|i| t.graph[*i].role != "client" && &t.graph[*i].host == h)
        {
            let n = &t.graph[i];
            out.push_str(&format!(
                "    n{}[\"{}<br/>{}\"]\n",
                i.index(),
                mermaid_escape(&n.role),
                mermaid_escape(&n.address)
            ));
        }
        out.push_str("  end\n");
    }
    for i in t
        .graph
        .node_indices()
        .filter(|i| t.graph[*i].role == "client")
    {
        out.push_str(&format!(
            "  n{}[\"client<br/>{}\"]\n",
            i.index(),
            mermaid_escape(&t.graph[i].address)
        ));
    }
    for e in (&t.graph).edge_references() {
        let w = e.weight();
        out.push_str(&format!(
            "  n{} -->|\"{} req, p50 {:.2} ms\"| n{}\n",
            e.source().index(),
            w.requests,
            w.median_ms(),
            e.target().index()
        ));
    }
    out
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
