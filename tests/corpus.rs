//! The shared corpus: parity with tshark's HTTP transactions, and no panic on any file.

use crate::util::{corpus, flowtrace, json_doc, Tx};
use std::collections::HashMap;
use std::fs;
use std::path::Path;

/// One request/response pair as tshark paired them.
#[derive(Debug, Clone)]
struct Pair {
    client: String,
    server: String,
    method: String,
    uri: String,
    status: u16,
}

fn addr(ip: &str, port: &str) -> String {
    if ip.contains(':') {
        format!("[{ip}]:{port}")
    } else {
        format!("{ip}:{port}")
    }
}

/// Reads `<file>.tshark.tsv` into request/response pairs: a response's `link_frame`
/// names its request's frame; several pipelined requests can share a frame, so the
/// first request of that frame not yet paired is taken.
fn tshark_pairs(tsv: &Path) -> Vec<Pair> {
    let text = fs::read_to_string(tsv).unwrap();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split('\t').collect();
    let col = |name: &str| header.iter().position(|h| *h == name).unwrap();
    let (kind, frame, src, sport, dst, dport) = (
        col("kind"),
        col("frame"),
        col("src"),
        col("sport"),
        col("dst"),
        col("dport"),
    );
    let (method, uri, status, link) = (col("method"), col("uri"), col("status"), col("link_frame"));
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split('\t').collect()).collect();
    let mut requests_by_frame: HashMap<&str, Vec<(usize, bool)>> = HashMap::new();
    for (i, r) in rows.iter().enumerate() {
        if r[kind] == "request" {
            requests_by_frame
                .entry(r[frame])
                .or_default()
                .push((i, false));
        }
    }
    let mut pairs = Vec::new();
    for r in &rows {
        if r[kind] != "response" || r[link].is_empty() {
            continue;
        }
        let Some(reqs) = requests_by_frame.get_mut(r[link]) else {
            continue;
        };
        let Some(slot) = reqs.iter_mut().find(|(_, used)| !used) else {
            continue;
        };
        // Interim responses (1xx) do not consume the request.
        let status: u16 = r[status].parse().unwrap_or(0);
        if !(100..200).contains(&status) || status == 101 {
            slot.1 = true;
        }
        let q = &rows[slot.0];
        pairs.push(Pair {
            client: addr(q[src], q[sport]),
            server: addr(q[dst], q[dport]),
            method: q[method].to_string(),
            uri: q[uri].to_string(),
            status,
        });
    }
    pairs
}

fn matches(p: &Pair, t: &Tx) -> bool {
    t.client == p.client
        && t.server == p.server
        && t.method.as_deref() == Some(p.method.as_str())
        && t.uri.as_deref() == Some(p.uri.as_str())
        && (t.status == Some(p.status) || t.interim.contains(&p.status))
}

#[test]
fn http_parity_with_tshark() {
    let Some(root) = corpus() else { return };
    let mut tsvs: Vec<_> = walk(&root)
        .into_iter()
        .filter(|p| p.to_string_lossy().ends_with(".tshark.tsv"))
        .collect();
    tsvs.sort();
    assert!(
        tsvs.len() >= 40,
        "expected the corpus' TSVs, found {}",
        tsvs.len()
    );
    let (mut total, mut found) = (0usize, 0usize);
    let mut report = Vec::new();
    let mut failures = Vec::new();
    for tsv in &tsvs {
        let capture = Path::new(tsv.to_str().unwrap().strip_suffix(".tshark.tsv").unwrap());
        let pairs = tshark_pairs(tsv);
        let doc = json_doc(&[capture]);
        let mut used = vec![false; doc.transactions.len()];
        let mut hit = 0;
        let mut missing = Vec::new();
        for p in &pairs {
            // Interim statuses may match a transaction already used for its final one.
            let interim = (100..200).contains(&p.status) && p.status != 101;
            match doc
                .transactions
                .iter()
                .enumerate()
                .find(|(i, t)| (interim || !used[*i]) && matches(p, t))
            {
                Some((i, _)) => {
                    if !interim {
                        used[i] = true;
                    }
                    hit += 1;
                }
                None => missing.push(format!(
                    "{} {} {} -> {}",
                    p.client, p.method, p.uri, p.status
                )),
            }
        }
        total += pairs.len();
        found += hit;
        let name = capture.strip_prefix(&root).unwrap().display().to_string();
        report.push(format!("{name}: {hit}/{}", pairs.len()));
        if !missing.is_empty() {
            report.push(format!("  missing: {}", missing.join("; ")));
        }
        if pairs.len() >= 10 && (hit as f64) < 0.99 * pairs.len() as f64 {
            failures.push(format!("{name}: {hit}/{} below 99 %", pairs.len()));
        }
    }
    println!("{}", report.join("\n"));
    println!("corpus: {found}/{total} tshark pairs found");
    assert!(total > 150, "too few pairs: {total}");
    assert!(failures.is_empty(), "{failures:?}");
    assert!(
        found as f64 >= 0.99 * total as f64,
        "corpus parity {found}/{total} below 99 %"
    );
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn every_corpus_file_runs_without_panic() {
    let Some(root) = corpus() else { return };
    let mut files: Vec<_> = walk(&root)
        .into_iter()
        .filter(|p| {
            let s = p.to_string_lossy();
            !s.ends_with(".tsv") && !s.ends_with(".md")
        })
        .collect();
    files.sort();
    assert!(files.len() >= 80, "found {} captures", files.len());
    for f in &files {
        let run = flowtrace([
            "pcap".as_ref(),
            "--format".as_ref(),
            "json".as_ref(),
            f.as_os_str(),
        ]);
        assert!(
            run.code == 0 || run.code == 2,
            "{}: exit {} (panic?)\n{}",
            f.display(),
            run.code,
            run.stderr
        );
        assert!(
            !run.stderr.contains("panicked"),
            "{}: {}",
            f.display(),
            run.stderr
        );
        if run.code == 0 {
            let _: serde_json::Value = serde_json::from_str(&run.stdout)
                .unwrap_or_else(|e| panic!("{}: invalid JSON: {e}", f.display()));
        } else {
            assert_eq!(
                run.stderr.lines().count(),
                1,
                "{}: one-line error expected: {}",
                f.display(),
                run.stderr
            );
        }
    }
}

/// Each broken file: the exit code and the words that name its problem.
#[test]
fn malformed_files_are_named_problems() {
    let Some(root) = corpus() else { return };
    let cases: &[(&str, i32, &str)] = &[
        ("malformed/err-eof.bin", 2, "not a pcap or pcapng file"),
        (
            "malformed/pcap-invalid-version-1.pcap",
            2,
            "unsupported version 1",
        ),
        (
            "malformed/pcapng-invalid-vers-1.pcapng",
            2,
            "unsupported section header version",
        ),
        (
            "malformed/shb-option-too-long.pcapng",
            2,
            "bad pcapng header",
        ),
        (
            "malformed/fuzz-2021-10-13.pcap",
            0,
            "cut off in the middle of a record",
        ),
        (
            "malformed/test901.pcapng",
            0,
            "unsupported section header version 2",
        ),
        (
            "malformed/linktype-reserved-field-not-zero.pcap",
            0,
            "upper bits set",
        ),
    ];
    for (file, code, words) in cases {
        let path = root.join(file);
        let run = flowtrace(["pcap".as_ref(), path.as_os_str()]);
        assert_eq!(run.code, *code, "{file}: {}", run.stderr);
        assert!(
            run.stderr.contains(words),
            "{file}: stderr {:?} lacks {words:?}",
            run.stderr
        );
    }
    // Bad packets inside good files are counted, not fatal.
    let doc = json_doc(&[&root.join("malformed/ip_packet_bogus_length.pcap")]);
    assert_eq!(doc.stat("ipv4_zero_total_len"), 1);
    assert_eq!(
        doc.transactions[0].uri.as_deref(),
        Some("/ADSAdClient31.dll?GetAd=&PG=IMSCB2&AP=1007")
    );
    let doc = json_doc(&[&root.join("malformed/trunc-hdr.pcap")]);
    assert_eq!(doc.stat("link_truncated"), 1);
}
