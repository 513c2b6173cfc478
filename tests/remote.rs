//! Agents' records (issue 15): the engine fed from decoded records of each host's
//! capture gives the paths `flowtrace pcap --paths` gives for the captures together.

use crate::util::{flowtrace, repo};
use flowtrace::correlate::{Engine, EngineConfig};
use flowtrace::links::HostLinks;
use flowtrace::pipeline::PipelineConfig;
use flowtrace::remote::{self, AgentBatcher, Envelope, Merger, SegmentPolicy};
use serde_json::Value;
use std::path::{Path, PathBuf};

/// The paths of `flowtrace pcap --paths --format jsonl` over `files`, as JSON values,
/// with each capture file named by its host (as the collector names them).
pub fn pcap_paths(files: &[PathBuf]) -> Vec<Value> {
    let mut args = vec![
        "pcap".to_string(),
        "--paths".into(),
        "--format".into(),
        "jsonl".into(),
    ];
    args.extend(files.iter().map(|f| f.display().to_string()));
    let run = flowtrace(&args);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let mut text = run.stdout;
    for f in files {
        let host = f
            .file_name()
            .unwrap()
            .to_string_lossy()
            .replace(".pcap.gz", "");
        text = text.replace(&format!("\"{}\"", f.display()), &format!("\"{host}\""));
    }
    paths_of_jsonl(&text)
}

/// The `{"type":"path"}` lines of JSON-lines output.
pub fn paths_of_jsonl(text: &str) -> Vec<Value> {
    text.lines()
        .map(|l| serde_json::from_str::<Value>(l).expect("a JSON line"))
        .filter(|v| v["type"] == "path")
        .collect()
}

/// Paths compared as sets, with a readable difference. Left out: ids (paths
/// finishing together may come in another order) and the evidence sentences, which
/// weigh a shared value by how rare it was among the exchanges seen when the link was
/// decided (`correlate::link::Rarity`). Times are compared within 20 µs: another
/// host's times are corrected by the clock offset as estimated when the path was
/// decided, which is refined as samples come in. Both depend on how far ingestion
/// had run ahead of the decision, which batching changes (file batches of 1,024
/// frames of both captures; an agent's batches of its own host). Everything else,
/// hops, links, confidences, roles, VIP holders, statuses, must be equal.
pub fn assert_same_paths(got: &[Value], want: &[Value]) {
    fn strip(v: &mut Value, times: &mut Vec<f64>) {
        match v {
            Value::Object(o) => {
                for k in ["id", "type", "evidence"] {
                    if k != "id" || o.contains_key("hops") {
                        o.remove(k);
                    }
                }
                for (k, x) in o.iter_mut() {
                    if k == "ts" || k.ends_with("_ts") {
                        times.push(x.as_f64().unwrap_or(0.0));
                        *x = Value::Null;
                    } else {
                        strip(x, times);
                    }
                }
            }
            Value::Array(a) => a.iter_mut().for_each(|x| strip(x, times)),
            _ => {}
        }
    }
    let split = |v: &Value| {
        let mut v = v.clone();
        let mut times = Vec::new();
        strip(&mut v, &mut times);
        (v.to_string(), times)
    };
    let mut g: Vec<(String, Vec<f64>)> = got.iter().map(split).collect();
    let w: Vec<(String, Vec<f64>)> = want.iter().map(split).collect();
    let mut missing = Vec::new();
    for (shape, times) in &w {
        let close = |(s, t): &(String, Vec<f64>)| {
            s == shape
                && t.len() == times.len()
                && t.iter().zip(times).all(|(a, b)| (a - b).abs() <= 20e-6)
        };
        match g.iter().position(close) {
            Some(i) => {
                g.swap_remove(i);
            }
            None => missing.push(shape.clone()),
        }
    }
    assert!(
        missing.is_empty() && g.is_empty(),
        "{} paths, {} expected; {} missing, e.g. {:?}; {} extra, e.g. {:?}",
        got.len(),
        want.len(),
        missing.len(),
        missing.first(),
        g.len(),
        g.first()
    );
}

fn links_beside(capture: &Path) -> Option<HostLinks> {
    flowtrace::links::find_beside(capture).map(|p| HostLinks::load(&p).unwrap())
}

/// Each host's capture read as its agent would, through the encoder.
fn agent_messages(host: &str, capture: &Path) -> Vec<Vec<u8>> {
    let mut batcher = AgentBatcher::new(
        host,
        1,
        links_beside(capture).unwrap_or_default(),
        30_000_000_000,
        SegmentPolicy::Selected,
    );
    let mut out = Vec::new();
    remote::read_capture(
        capture,
        &mut batcher,
        PipelineConfig {
            links: vec![links_beside(capture)],
            keep_segments: true,
            ..PipelineConfig::default()
        },
        |env| {
            out.push(remote::encode(&env).unwrap());
            true
        },
    )
    .unwrap();
    out
}

/// The collector's side without NATS: decoded envelopes, interleaved as `order`
/// says, merged and correlated.
fn collect(hosts: &[(&str, &Path)], messages: Vec<(usize, Vec<u8>)>) -> Vec<Value> {
    let hl: Vec<(String, Option<HostLinks>)> = hosts
        .iter()
        .map(|(h, c)| (h.to_string(), links_beside(c)))
        .collect();
    let mut merger = Merger::new(&hl, i64::MAX);
    let mut engine = Engine::new(EngineConfig::default(), merger.files(), merger.links());
    let mut paths = Vec::new();
    for (_, bytes) in messages {
        let env: Envelope = remote::decode(&bytes).unwrap();
        merger.push(env, 0);
        merger.step(&mut engine, &mut |p| paths.push(p));
    }
    merger.finish(&mut engine, &mut |p| paths.push(p));
    paths
        .iter()
        .map(|p| serde_json::to_value(p).unwrap())
        .collect()
}

fn scenario(name: &str) -> (PathBuf, PathBuf) {
    let dir = repo().join("captures").join(name);
    (dir.join("A.pcap.gz"), dir.join("B.pcap.gz"))
}

/// The two hosts' records, however they interleave on the way, give the paths of
/// `flowtrace pcap --paths A B` (the failover scenario: 400 requests across a VIP
/// move, Kong on A, Nginx on B).
#[test]
fn records_from_two_hosts_give_the_paths_of_both_captures() {
    for name in ["cross-server", "failover"] {
        let (a, b) = scenario(name);
        let want = pcap_paths(&[a.clone(), b.clone()]);
        assert!(!want.is_empty());
        let ma = agent_messages("A", &a);
        let mb = agent_messages("B", &b);
        let hosts = [("A", a.as_path()), ("B", b.as_path())];
        // All of A first, then all of B: B holds A's records back.
        let serial: Vec<(usize, Vec<u8>)> = ma
            .iter()
            .cloned()
            .map(|m| (0, m))
            .chain(mb.iter().cloned().map(|m| (1, m)))
            .collect();
        assert_same_paths(&collect(&hosts, serial), &want);
        // Alternating, as two live agents would publish.
        let mut alternating = Vec::new();
        for i in 0..ma.len().max(mb.len()) {
            if let Some(m) = mb.get(i) {
                alternating.push((1, m.clone()));
            }
            if let Some(m) = ma.get(i) {
                alternating.push((0, m.clone()));
            }
        }
        assert_same_paths(&collect(&hosts, alternating), &want);
    }
}

/// What a request costs on the wire in records. The target is at most 1 KB;
/// measured here: about 1.7 KB, because the failover scenario sees each request at
/// about ten capture points of the two hosts (each NAT and bridge side), ten exchange
/// records per request (docs/live.md). This guards against growth past 2 KB.
#[test]
fn records_cost_per_request() {
    let (a, b) = scenario("failover");
    let messages: Vec<Vec<u8>> = agent_messages("A", &a)
        .into_iter()
        .chain(agent_messages("B", &b))
        .collect();
    let bytes: usize = messages.iter().map(Vec::len).sum();
    // The same envelopes without segment summaries.
    let mut exchanges = 0;
    let bare: usize = messages
        .iter()
        .map(|m| {
            let mut env = remote::decode(m).unwrap();
            for item in &mut env.items {
                if let remote::Item::Exchange(x) = item {
                    exchanges += 1;
                    x.segments.clear();
                }
            }
            remote::encode(&env).unwrap().len()
        })
        .sum();
    let requests = pcap_paths(&[a.clone(), b.clone()]).len();
    eprintln!(
        "{requests} requests, {exchanges} exchange records: {} bytes per request, {} without \
         segment summaries",
        bytes / requests,
        bare / requests
    );
    assert!(bare < bytes, "segment summaries were sent");
    // Issue 15's target: at most 1 KB a request on the wire.
    assert!(
        bytes / requests <= 1024,
        "{} bytes per request",
        bytes / requests
    );
}
