//! Issue 16: `--threads N` shards TCP and HTTP over N threads; the output must be
//! the bytes of a one-thread run (`--threads 1`), record order, ids, connection
//! numbers, counters and anomaly samples included.

use crate::hostile::{flood_capture, fragmented_connections};
use crate::util::{flowtrace_in_repo_with, golden, repo, scenario_captures, temp_dir, Doc};
use std::ffi::OsString;
use std::path::PathBuf;

/// Runs `pcap ARGS FILES --threads N` (in the repository: FILES may be relative to
/// it) for N = 1, 2, 3, and for 2 and 3 again with connections moved between
/// shards every 64 frames (the rebalancing the front does as loads change, made
/// constant), and asserts the outputs are identical; returns the one-thread
/// output.
fn same_with_any_threads(files: &[PathBuf], args: &[&str]) -> String {
    let mut outputs = Vec::new();
    for threads in ["1", "2", "3", "2 churning", "3 churning"] {
        let (n, churn) = match threads.split_once(' ') {
            Some((n, _)) => (n, true),
            None => (threads, false),
        };
        let mut a: Vec<OsString> = vec!["pcap".into()];
        a.extend(args.iter().map(OsString::from));
        a.extend(["--threads".into(), n.into()]);
        a.extend(files.iter().map(|f| f.as_os_str().to_owned()));
        let vars: &[(&str, &str)] = if churn {
            &[(flowtrace::pipeline::CHURN_VARIABLE, "1")]
        } else {
            &[]
        };
        let run = flowtrace_in_repo_with(&a, vars);
        assert_eq!(
            run.code, 0,
            "{files:?} {args:?} --threads {threads}: {}",
            run.stderr
        );
        outputs.push((threads, run.stdout));
    }
    let (_, one) = &outputs[0];
    for (threads, out) in &outputs[1..] {
        if out != one {
            let line = one
                .lines()
                .zip(out.lines())
                .position(|(a, b)| a != b)
                .unwrap_or(one.lines().count().min(out.lines().count()));
            panic!(
                "{files:?} {args:?}: --threads {threads} differs from --threads 1 at line {}:\n  1: {}\n  {threads}: {}",
                line + 1,
                one.lines().nth(line).unwrap_or("<end>"),
                out.lines().nth(line).unwrap_or("<end>"),
            );
        }
    }
    outputs.swap_remove(0).1
}

fn doc(json: &str) -> Doc {
    serde_json::from_str(json).expect("one JSON document")
}

/// Every shipped scenario (all its capture points in one run: several files, so
/// several capture points and files merged by time), as JSON lines and as JSON
/// with headers; and with a short idle timeout, so that time sweeps close
/// connections with requests pending in the middle of the run (the part of the
/// order that sharding must rebuild from several tables).
#[test]
fn every_shipped_scenario_is_the_same_with_any_threads() {
    let dirs: Vec<String> = std::fs::read_dir(repo().join("captures"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|d| d != "synthetic" && d != "lab")
        .collect();
    assert!(dirs.len() >= 10, "{dirs:?}");
    let mut idled_out = 0;
    for dir in dirs {
        let files: Vec<PathBuf> = scenario_captures(&dir).iter().map(PathBuf::from).collect();
        if files.is_empty() {
            continue;
        }
        let lines = same_with_any_threads(&files, &["--format", "jsonl"]);
        assert!(
            lines.lines().count() > 2,
            "{dir}: transactions to compare:\n{lines}"
        );
        let json = same_with_any_threads(&files, &["--format", "json", "--headers"]);
        let d = doc(&json);
        assert!(!d.transactions.is_empty(), "{dir}");
        let swept = same_with_any_threads(&files, &["--format", "json", "--idle-timeout", "0.05"]);
        idled_out += doc(&swept).stat("tcp_evicted");
    }
    assert!(idled_out > 100, "{idled_out} connections idled out in all");
}

/// The shipped synthetic capture against its reviewed golden, with two threads.
#[test]
fn keepalive_golden_with_two_threads() {
    let file = PathBuf::from("captures/synthetic/keepalive.pcap");
    let json = same_with_any_threads(&[file], &["--format", "json", "--headers"]);
    golden("keepalive/transactions.json", &json);
}

/// A SYN flood around real connections (about 70,000 connections opened in every
/// shard: connection numbers that the merger must rebuild from the shards'), and real connections whose data travels in IP fragments
/// inside a flood of fragments that never complete (reassembled before the
/// connection's shard is known).
#[test]
fn floods_and_fragments_are_the_same_with_any_threads() {
    let (path, _, floods) = flood_capture("threads-syn-flood", 20_000, 200);
    let json = same_with_any_threads(&[path], &["--format", "json"]);
    let d = doc(&json);
    assert_eq!(d.transactions.len(), 20);
    assert!(
        d.stat("tcp_connections") > floods,
        "{}",
        d.stat("tcp_connections")
    );

    let (pcap, _, _) = fragmented_connections(
        40,
        |k| {
            format!(
                "POST /frag/{k} HTTP/1.1\r\nHost: app\r\nContent-Length: 300\r\n\r\n{}",
                "x".repeat(300)
            )
        },
        64,
        1,
    );
    let path = temp_dir("threads-fragments").join("fragments.pcap");
    pcap.write(&path);
    let json = same_with_any_threads(&[path], &["--format", "json", "--headers"]);
    let d = doc(&json);
    assert_eq!(d.transactions.len(), 40);
    assert!(d.stat("ip_reassembled") >= 40);
}

/// A run over several files of which some are memory-mapped (plain pcap) and some
/// are not (gzip): the same bytes with any threads, and the same transactions as a
/// run over the compressed originals.
#[test]
fn mapped_and_read_files_mixed_are_the_same_with_any_threads() {
    let originals: Vec<PathBuf> = scenario_captures("real-seed-max")
        .iter()
        .map(PathBuf::from)
        .collect();
    assert!(originals.len() >= 3, "{originals:?}");
    let dir = temp_dir("threads-mapped-mixed");
    let mut mixed = Vec::new();
    for (i, gz) in originals.iter().enumerate() {
        if i % 2 == 1 {
            mixed.push(repo().join(gz));
            continue;
        }
        let mut plain = Vec::new();
        std::io::Read::read_to_end(
            &mut flate2::read::MultiGzDecoder::new(std::fs::File::open(repo().join(gz)).unwrap()),
            &mut plain,
        )
        .unwrap();
        let name = gz.file_name().unwrap().to_string_lossy().replace(".gz", "");
        let path = dir.join(name);
        std::fs::write(&path, plain).unwrap();
        mixed.push(path);
    }
    let from_mixed = doc(&same_with_any_threads(&mixed, &["--format", "json"]));
    let from_gz = doc(&same_with_any_threads(&originals, &["--format", "json"]));
    assert!(from_gz.transactions.len() > 1_000);
    let key = |d: &Doc| -> Vec<String> {
        d.transactions
            .iter()
            .map(|t| {
                format!(
                    "{} {} {} {:?} {:?} {:?} {:?} {:?} {}",
                    t.id,
                    t.client,
                    t.server,
                    t.method,
                    t.uri,
                    t.status,
                    t.request_ts,
                    t.response_end_ts,
                    t.incomplete
                )
            })
            .collect()
    };
    assert_eq!(key(&from_mixed), key(&from_gz));
    assert_eq!(
        from_mixed.stat("tcp_segments"),
        from_gz.stat("tcp_segments")
    );
}
