//! Request paths over the lab's shipped scenarios: accuracy against the ground truth,
//! clock offsets, golden outputs, and the failover.

use crate::util::{
    flowtrace, flowtrace_in_repo, golden, repo, scenario_captures, shift_pcap, temp_dir,
};
use serde_json::Value;
use std::path::PathBuf;

/// A scenario's captures as absolute paths.
fn scenario_files(name: &str) -> Vec<PathBuf> {
    scenario_captures(name)
        .into_iter()
        .map(|f| repo().join(f))
        .collect()
}

/// Runs the scorer on a scenario and returns its JSON.
fn score(name: &str) -> Value {
    score_with(name, &[])
}

/// The same, with extra flags.
fn score_with(name: &str, extra: &[&str]) -> Value {
    let files = scenario_captures(name);
    // the realistic scenarios (issue 13) ship their truth compressed
    let mut truth = format!("captures/{name}/truth.jsonl");
    if !repo().join(&truth).exists() {
        truth.push_str(".gz");
    }
    let mut args = vec![
        "pcap".to_string(),
        "--truth".into(),
        truth,
        "--format".into(),
        "json".into(),
    ];
    args.extend(extra.iter().map(|a| a.to_string()));
    args.extend(files);
    let run = flowtrace_in_repo(&args);
    assert_eq!(run.code, 0, "{}", run.stderr);
    serde_json::from_str(&run.stdout).unwrap()
}

fn exact(v: &Value) -> (f64, f64) {
    let p = &v["paths_exact"];
    (
        p["precision"].as_f64().unwrap(),
        p["recall"].as_f64().unwrap(),
    )
}

#[test]
fn highconc_paths_at_least_99_5_percent_right() {
    let v = score("highconc-2000");
    assert_eq!(v["truth_requests"], 2000);
    let (precision, recall) = exact(&v);
    assert!(
        precision >= 0.995 && recall >= 0.995,
        "highconc-2000: precision {precision}, recall {recall}"
    );
}

#[test]
fn no_forward_headers_paths_at_least_97_percent_right() {
    let v = score("no-forward-headers");
    let (precision, recall) = exact(&v);
    assert!(
        precision >= 0.97 && recall >= 0.97,
        "no-forward-headers: precision {precision}, recall {recall}"
    );
}

/// The streaming engine decides in a sliding window what the first (batch) engine
/// decided over the whole run. Before the batch engine was removed both ran on every
/// shipped scenario: the same whole paths right on each (1, 1, 500, 400, 1996 and
/// 1987 below). Those figures stay as floors.
#[test]
fn streaming_keeps_the_batch_engines_accuracy() {
    for (name, batch_exact) in [
        ("single-request", 1),
        ("cross-server", 1),
        ("keepalive-500", 500),
        ("failover", 400),
        ("highconc-2000", 1996),
        ("no-forward-headers", 1987),
    ] {
        let v = score(name);
        let exact = v["paths_exact"]["correct"].as_u64().unwrap();
        assert!(
            exact >= batch_exact,
            "{name}: {exact} whole paths right, the batch engine had {batch_exact}"
        );
        assert_eq!(
            v["paths"], v["truth_requests"],
            "{name}: one path per request"
        );
    }
}

/// The realistic scenarios (issue 13: a few hot URIs, identical replica answers, two
/// rates, two Nginx header sets, shared container subnets, an HAProxy gateway, Docker's
/// userland proxy): the whole paths right when they were shipped are floors, so a
/// regression shows; the timing-only baseline and the calibration table are there for
/// every one. Two tests, so that the harness runs the halves side by side.
fn realistic_floors(scenarios: &[(&str, u64)]) {
    for &(name, measured) in scenarios {
        let v = score(name);
        assert_eq!(v["truth_requests"], 2000, "{name}");
        let exact = v["paths_exact"]["correct"].as_u64().unwrap();
        assert!(
            exact >= measured,
            "{name}: {exact} whole paths right, {measured} when shipped"
        );
        assert_eq!(v["paths"], 2000, "{name}: one path per request");
        let b = &v["baseline"];
        assert!(
            b["paths_exact"]["correct"].as_u64().is_some(),
            "{name}: {b}"
        );
        let c = &v["calibration"];
        let proxy_hops: u64 = ["gateway_upstream", "nginx_upstream", "userland_proxy"]
            .iter()
            .filter_map(|k| v["links"][k]["expected"].as_u64())
            .sum();
        assert!(
            c["links"].as_u64().unwrap() <= proxy_hops,
            "{name}: at most one link per proxy hop ({proxy_hops})"
        );
        assert_eq!(c["bins"].as_array().unwrap().len(), 5, "{name}");
        // Issue 13: links at confidence >= 0.9 right at least 99.5 % of the time.
        let high = &c["high"];
        let (links, right) = (
            high["links"].as_u64().unwrap(),
            high["right"].as_u64().unwrap(),
        );
        assert!(
            right * 1000 >= links * 995,
            "{name}: {right} of {links} links at confidence >= 0.9 right"
        );
    }
}

#[test]
fn realistic_paced_scenarios_keep_their_measured_accuracy() {
    realistic_floors(&[
        ("real-seed-600", 2000),
        ("real-stock-600", 2000),
        ("real-seed-samenet-600", 2000),
        ("real-stock-samenet-600", 2000),
    ]);
}

#[test]
fn realistic_unpaced_scenarios_keep_their_measured_accuracy() {
    realistic_floors(&[
        // Since the start gap's Huber cost (1,855, 1,867, 1,373, 1,836 and 1,934
        // before it: the userland relay lost 7).
        ("real-seed-max", 1918),
        ("real-stock-max", 1887),
        // 1,405 and 1,760 before the same-interface tolerance fix (session 28);
        // 1,421 before the worker-order merge (session 32).
        ("real-haproxy-stock-max", 1743),
        ("real-seed-userland-max", 1829),
        ("real-nofwd-max", 1948),
        // Both servers on the same container subnets (session 27).
        ("real-seed-samenet-max", 1975),
        ("real-stock-samenet-max", 1763),
    ]);
}

/// HAProxy keeps its order per thread, not globally (docs/correlation.md, "Worker
/// order"): the engine learns the split of its client connections and links that
/// gateway's upstreams by the merge that keeps each thread's order. The lab's
/// Kong-like gateway keeps one order: a split learned there does no better than
/// chance on the next window, and is not kept.
#[test]
fn worker_order_is_learned_only_where_a_proxy_keeps_it_per_worker() {
    for (name, kept) in [("real-haproxy-stock-max", 1), ("real-stock-max", 0)] {
        let mut args = vec![
            "pcap".to_string(),
            "--paths".into(),
            "--format".into(),
            "json".into(),
        ];
        args.extend(scenario_captures(name));
        let run = flowtrace_in_repo(&args);
        assert_eq!(run.code, 0, "{}", run.stderr);
        let v: Value = serde_json::from_str(&run.stdout).unwrap();
        let c = &v["correlation"];
        let count = |k: &str| {
            c[k].as_u64()
                .unwrap_or_else(|| panic!("{name}: {k} in {c}"))
        };
        assert_eq!(count("worker_splits_kept"), kept, "{name}: {c}");
        if kept == 0 {
            assert!(count("worker_splits_rejected") >= 1, "{name}: {c}");
            assert_eq!(count("worker_order_links"), 0, "{name}: {c}");
        } else {
            // Learned after 1,024 of the gateway's 2,000 upstreams; the merge links
            // the ones still undecided then and every one after.
            assert!(count("worker_order_links") >= 1000, "{name}: {c}");
        }
    }
}

#[test]
fn small_scenarios_are_exactly_right() {
    for name in [
        "single-request",
        "cross-server",
        "keepalive-500",
        "failover",
    ] {
        let v = score(name);
        let (precision, recall) = exact(&v);
        assert!(
            precision >= 0.99 && recall >= 0.99,
            "{name}: precision {precision}, recall {recall}"
        );
    }
}

fn paths_json(files: &[PathBuf], extra: &[&str]) -> Value {
    let mut args: Vec<std::ffi::OsString> = vec![
        "pcap".into(),
        "--paths".into(),
        "--format".into(),
        "json".into(),
    ];
    args.extend(extra.iter().map(|a| a.into()));
    args.extend(files.iter().map(|f| f.as_os_str().to_owned()));
    let run = flowtrace(&args);
    assert_eq!(run.code, 0, "{}", run.stderr);
    serde_json::from_str(&run.stdout).unwrap()
}

/// The shape of every path: hops with kind, parent, addresses, host, role, status;
/// sorted, since paths come out in the order they became final, which moves with
/// the clocks.
fn shape(doc: &Value) -> Vec<String> {
    let mut shapes: Vec<String> = doc["paths"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let hops: Vec<String> = p["hops"]
                .as_array()
                .unwrap()
                .iter()
                .map(|h| {
                    format!(
                        "{}:{}:{}:{}:{}:{}:{}:{}",
                        h["kind"],
                        h["parent"],
                        h["client"],
                        h["server"],
                        h["host"],
                        h["role"],
                        h["status"],
                        h["before"]
                    )
                })
                .collect();
            format!("{} {}", p["status"], hops.join(" | "))
        })
        .collect();
    shapes.sort();
    shapes
}

fn offset_of(doc: &Value, suffix: &str) -> f64 {
    doc["clock_offsets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["capture"].as_str().unwrap().ends_with(suffix))
        .unwrap_or_else(|| panic!("no offset for {suffix}"))["offset_s"]
        .as_f64()
        .unwrap()
}

#[test]
fn clock_offsets_are_recovered_and_paths_unchanged() {
    let files = scenario_files("keepalive-500");
    let base = paths_json(&files, &[]);
    let base_b = offset_of(&base, "/B.pcap.gz");
    for shift in [2.5, -0.037] {
        let dir = temp_dir(&format!("shift{shift}"));
        let mut shifted = Vec::new();
        for f in &files {
            let name = f.file_name().unwrap().to_str().unwrap();
            let stem = name.trim_end_matches(".pcap.gz");
            std::fs::copy(
                f.with_file_name(format!("{stem}.links.json")),
                dir.join(format!("{stem}.links.json")),
            )
            .unwrap();
            let dst = dir.join(format!("{stem}.pcap"));
            let ns = if stem == "B" { (shift * 1e9) as i64 } else { 0 };
            shift_pcap(f, &dst, ns);
            shifted.push(dst);
        }
        let doc = paths_json(&shifted, &[]);
        let est = offset_of(&doc, "/B.pcap") - base_b;
        assert!(
            (est - shift).abs() < 100e-6,
            "shift {shift}: estimated {est}"
        );
        same_shapes(&doc, &base, &format!("under a {shift} s shift"));
        // An override is used as given.
        let b = shifted.iter().find(|p| p.ends_with("B.pcap")).unwrap();
        let spec = format!("{}={shift}", b.display());
        let doc = paths_json(&shifted, &["--offset", &spec]);
        assert_eq!(offset_of(&doc, "/B.pcap"), shift);
        same_shapes(&doc, &base, &format!("with --offset {shift}"));
    }
}

/// Asserts both documents hold the same path shapes, naming a few that differ.
fn same_shapes(doc: &Value, base: &Value, when: &str) {
    let (a, b) = (shape(doc), shape(base));
    if a == b {
        return;
    }
    let only_a: Vec<&String> = a.iter().filter(|s| !b.contains(s)).take(3).collect();
    let only_b: Vec<&String> = b.iter().filter(|s| !a.contains(s)).take(3).collect();
    panic!(
        "paths changed {when}: {} vs {} paths; only now: {only_a:#?}; only before: {only_b:#?}",
        a.len(),
        b.len()
    );
}

#[test]
fn failover_lists_the_vip_move_and_failed_requests() {
    let files = scenario_files("failover");
    let doc = paths_json(&files, &[]);
    let f = &doc["failovers"][0];
    assert_eq!(
        (f["from"].as_str(), f["to"].as_str()),
        (Some("A"), Some("B"))
    );
    let failed = f["failed_paths"].as_array().unwrap();
    let truth_failed = std::fs::read_to_string(repo().join("captures/failover/truth.jsonl"))
        .unwrap()
        .lines()
        .filter(|l| serde_json::from_str::<Value>(l).unwrap()["ok"] == Value::Bool(false))
        .count();
    assert!(truth_failed > 0);
    assert_eq!(failed.len(), truth_failed);
    assert!(failed
        .iter()
        .all(|p| p["reason"].as_str().unwrap().contains("no response")));
    let holders: Vec<&str> = doc["vip_timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["holder"].as_str().unwrap())
        .collect();
    assert!(
        holders.starts_with(&["A"]) && holders.contains(&"B"),
        "{holders:?}"
    );
}

/// Golden outputs: the whole text and JSON of the small scenarios; for the large
/// ones the summary, the first paths and the score (a 2,000-path JSON is not
/// reviewable).
#[test]
fn golden_paths_of_every_scenario() {
    for name in [
        "single-request",
        "cross-server",
        "keepalive-500",
        "failover",
        "highconc-2000",
        "no-forward-headers",
    ] {
        let files = scenario_captures(name);
        let mut args = vec!["pcap".to_string(), "--paths".into()];
        args.extend(files.clone());
        let run = flowtrace_in_repo(&args);
        assert_eq!(run.code, 0, "{}", run.stderr);
        let mut json_args = vec![
            "pcap".to_string(),
            "--paths".into(),
            "--format".into(),
            "json".into(),
        ];
        json_args.extend(files);
        let json = flowtrace_in_repo(&json_args);
        assert_eq!(json.code, 0);
        let doc: Value = serde_json::from_str(&json.stdout).unwrap();
        if name == "single-request" || name == "cross-server" {
            golden(&format!("{name}/paths.txt"), &run.stdout);
            golden(
                &format!("{name}/paths.json"),
                &serde_json::to_string_pretty(&doc).unwrap(),
            );
        } else {
            let text = run.stdout;
            let first_paths: String = text
                .split("\npath ")
                .take(4)
                .collect::<Vec<_>>()
                .join("\npath ");
            let summary = text.split("\n\n").last().unwrap();
            golden(
                &format!("{name}/paths-head.txt"),
                &format!("{first_paths}\n"),
            );
            golden(&format!("{name}/summary.txt"), summary);
            let mut digest = doc.clone();
            let map = digest.as_object_mut().unwrap();
            let paths = map["paths"].as_array().unwrap();
            let head: Vec<Value> = paths.iter().take(3).cloned().collect();
            map.insert("paths".into(), Value::Array(head));
            map.remove("anomalies");
            map.remove("gratuitous_arp");
            golden(
                &format!("{name}/paths-head.json"),
                &serde_json::to_string_pretty(&digest).unwrap(),
            );
        }
    }
}

/// A topology file names hosts and services and overrides the inferred role.
#[test]
fn topology_file_names_and_overrides() {
    let dir = temp_dir("names");
    let names = dir.join("names.toml");
    std::fs::write(
        &names,
        "[hosts]\nA = \"server-a\"\n[services]\n\"198.19.1.2:8000\" = { name = \"kong-a\", role = \"edge\" }\n\"198.18.1.231\" = { name = \"vip\" }\n",
    )
    .unwrap();
    let files = scenario_files("cross-server");
    let doc = paths_json(&files, &["--names", names.to_str().unwrap()]);
    let root = &doc["paths"][0]["hops"][0];
    assert_eq!(
        (
            root["role"].as_str(),
            root["name"].as_str(),
            root["host"].as_str()
        ),
        (Some("edge"), Some("kong-a"), Some("server-a"))
    );
    assert_eq!(doc["paths"][0]["vip"]["holder"], "server-a");
    let vip = doc["address_book"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["ip"] == "198.18.1.231")
        .unwrap();
    assert_eq!(vip["name"], "vip");
    std::fs::write(&names, "[services]\n\"not an address\" = {}\n").unwrap();
    let mut args: Vec<std::ffi::OsString> = vec![
        "pcap".into(),
        "--paths".into(),
        "--names".into(),
        names.clone().into(),
    ];
    args.extend(files.iter().map(|f| f.as_os_str().to_owned()));
    let run = flowtrace(&args);
    assert_eq!(run.code, 2);
    assert!(
        run.stderr.contains("invalid topology file"),
        "{}",
        run.stderr
    );
}

/// Issue 14: on a terminal `--paths` prints the summary first and then only the
/// slowest and the failed paths (bounded by --top); piped, every path streams and
/// the summary comes last. script(1) (util-linux, in every Debian) gives flowtrace
/// a pseudo-terminal.
#[test]
fn summary_first_on_a_terminal_every_path_when_piped() {
    let files: Vec<String> = scenario_files("failover")
        .iter()
        .map(|f| f.display().to_string())
        .collect();
    let command = format!(
        "{} pcap --paths --no-progress --top 2 {}",
        env!("CARGO_BIN_EXE_flowtrace"),
        files.join(" ")
    );
    let out = std::process::Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .env("TZ", "UTC")
        .output()
        .expect("script(1) runs");
    assert!(out.status.success());
    let tty = String::from_utf8_lossy(&out.stdout).replace('\r', "");
    let summary_at = tty.find("400 paths: 392 complete").expect("summary");
    let first_path = tty.find("\npath ").expect("a path");
    assert!(summary_at < first_path, "{tty}");
    assert!(tty.contains("failed: 8 no response"), "{tty}");
    assert!(tty.contains("the 2 slowest path(s):"), "{tty}");
    assert!(tty.contains("failed path(s), the first 2 of 8:"), "{tty}");
    assert_eq!(tty.matches("\npath ").count(), 4, "{tty}");
    assert!(tty.contains("4 of 400 paths shown"), "{tty}");
    // Piped: every path, the summary after them.
    let mut args = vec!["pcap".to_string(), "--paths".into()];
    args.extend(files.iter().cloned());
    let piped = flowtrace(&args);
    assert_eq!(
        piped
            .stdout
            .lines()
            .filter(|l| l.starts_with("path "))
            .count(),
        400
    );
    assert!(piped.stdout.find("400 paths:").unwrap() > piped.stdout.rfind("\npath ").unwrap());
    // --summary asks for the terminal's view anywhere; --all for every path.
    args.push("--summary".into());
    let forced = flowtrace(&args);
    assert_eq!(
        forced
            .stdout
            .lines()
            .filter(|l| l.starts_with("path "))
            .count(),
        10
    );
}

/// Issue 13: a link that is not sure lists its runner-up parents (`alternatives`,
/// how far behind each scored), text marks it ambiguous, and `--min-confidence`
/// prints only paths whose every link is that sure, counting the rest.
#[test]
fn ambiguous_links_list_alternatives_and_min_confidence_filters() {
    let files = scenario_files("real-seed-max");
    let doc = paths_json(&files, &[]);
    let paths = doc["paths"].as_array().unwrap();
    let hops = paths.iter().flat_map(|p| p["hops"].as_array().unwrap());
    let (mut unsure, mut listed) = (0, 0);
    for h in hops {
        let Some(c) = h["confidence"].as_f64() else {
            continue;
        };
        let alts = h["alternatives"].as_array();
        if c >= 0.99 {
            assert!(alts.is_none(), "a sure link lists no alternatives: {h}");
            continue;
        }
        unsure += 1;
        if let Some(alts) = alts {
            listed += 1;
            assert!(alts.len() <= 3);
            let behind: Vec<f64> = alts.iter().map(|a| a["behind"].as_f64().unwrap()).collect();
            assert!(
                behind.windows(2).all(|w| w[0] <= w[1]),
                "best first: {behind:?}"
            );
            assert!(alts[0]["server"].as_str().is_some() && alts[0]["uri"].as_str().is_some());
        }
    }
    assert!(
        unsure > 100,
        "the unpaced realistic run has unsure links: {unsure}"
    );
    assert!(
        listed * 10 >= unsure * 9,
        "{listed} of {unsure} list alternatives"
    );
    // Text marks them.
    let mut args: Vec<std::ffi::OsString> = vec!["pcap".into(), "--paths".into()];
    args.extend(files.iter().map(|f| f.as_os_str().to_owned()));
    let text = flowtrace(&args).stdout;
    assert!(
        text.contains("ambiguous: confidence 0."),
        "no ambiguous mark"
    );
    // --min-confidence: the paths printed and those not shown add up.
    let strict = paths_json(&files, &["--min-confidence", "0.9"]);
    let shown = strict["paths"].as_array().unwrap().len() as u64;
    let hidden = strict["not_shown_below_min_confidence"].as_u64().unwrap();
    assert_eq!(shown + hidden, paths.len() as u64);
    assert!(shown > 0 && hidden > 0, "{shown} shown, {hidden} hidden");
    for p in strict["paths"].as_array().unwrap() {
        for h in p["hops"].as_array().unwrap() {
            assert!(h["confidence"].as_f64().unwrap_or(1.0) >= 0.9);
        }
    }
    args.extend(["--min-confidence".into(), "1.5".into()]);
    assert_eq!(flowtrace(&args).code, 2);
}
