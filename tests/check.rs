//! `flowtrace check`: the shipped expectations hold; mutated ones and a capture with a
//! hop removed fail with a diff naming the difference; errors exit 2.

use crate::util::{flowtrace_in_repo, repo, scenario_captures, temp_dir, Run};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

const SCENARIOS: [&str; 6] = [
    "single-request",
    "cross-server",
    "keepalive-500",
    "highconc-2000",
    "no-forward-headers",
    "failover",
];

fn check(name: &str, expect: &Path, extra: &[&str], files: &[String]) -> Run {
    let mut args = vec![
        "check".to_string(),
        "--expect".into(),
        expect.display().to_string(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    args.extend(files.iter().cloned());
    let _ = name;
    flowtrace_in_repo(&args)
}

fn mutated(name: &str, from: &str, to: &str) -> PathBuf {
    let text =
        std::fs::read_to_string(repo().join("fixtures").join(name).join("expect.toml")).unwrap();
    assert!(text.contains(from), "{name}: expectation lacks {from:?}");
    let dir = temp_dir(&format!("check-{name}-{}", from.len()));
    let path = dir.join("expect.toml");
    std::fs::write(&path, text.replacen(from, to, 1)).unwrap();
    path
}

#[test]
fn shipped_expectations_hold() {
    for name in SCENARIOS {
        let expect = repo().join("fixtures").join(name).join("expect.toml");
        let run = check(name, &expect, &[], &scenario_captures(name));
        assert_eq!(run.code, 0, "{name}: {}{}", run.stdout, run.stderr);
        assert!(run.stdout.contains(" 0 failed"), "{name}: {}", run.stdout);
    }
}

#[test]
fn wrong_backend_fails_naming_it() {
    let expect = mutated("highconc-2000", "198.19.2.3:8888", "198.19.2.9:8888");
    let run = check(
        "highconc-2000",
        &expect,
        &[],
        &scenario_captures("highconc-2000"),
    );
    assert_eq!(run.code, 1, "{}", run.stdout);
    assert!(
        run.stdout
            .contains("backend 198.19.2.9:8888 answered no request"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("backend 198.19.2.3:8888 not expected"),
        "{}",
        run.stdout
    );
}

#[test]
fn missing_hop_fails_naming_the_shape() {
    let expect = mutated(
        "single-request",
        "vip(A) > gateway@A > load_balancer@A > backend@A",
        "vip(A) > gateway@A > backend@A",
    );
    let run = check(
        "single-request",
        &expect,
        &[],
        &scenario_captures("single-request"),
    );
    assert_eq!(run.code, 1, "{}", run.stdout);
    assert!(
        run.stdout.contains(
            "shape not expected: complete: vip(A) > gateway@A > load_balancer@A > backend@A"
        ),
        "{}",
        run.stdout
    );
    assert!(run
        .stdout
        .contains("shape complete: vip(A) > gateway@A > backend@A: expected 1 paths, found 0"));
}

#[test]
fn tighter_threshold_fails() {
    let text = std::fs::read_to_string(repo().join("fixtures/keepalive-500/expect.toml")).unwrap();
    let dir = temp_dir("check-threshold");
    let path = dir.join("expect.toml");
    let tightened = text.replacen("rules = [", "latency_factor = 0.001\nrules = [", 1);
    std::fs::write(&path, tightened).unwrap();
    let run = check(
        "keepalive-500",
        &path,
        &[],
        &scenario_captures("keepalive-500"),
    );
    assert_eq!(run.code, 1);
    assert!(run.stdout.contains("p99 of gateway:"), "{}", run.stdout);
    let run = check(
        "keepalive-500",
        &repo().join("fixtures/keepalive-500/expect.toml"),
        &["--rule", "no hop slower than 0.5 ms at p99"],
        &scenario_captures("keepalive-500"),
    );
    assert_eq!(run.code, 1);
    assert!(
        run.stdout.contains("no hop slower than 0.5 ms at p99: "),
        "{}",
        run.stdout
    );
}

#[test]
fn failover_loses_requests() {
    let run = check(
        "failover",
        &repo().join("fixtures/failover/expect.toml"),
        &["--rule", "no request lost during failover"],
        &scenario_captures("failover"),
    );
    assert_eq!(run.code, 1);
    assert!(
        run.stdout
            .contains("no request lost during failover: 8 lost"),
        "{}",
        run.stdout
    );
}

/// Drops every TCP segment to or from `port` from an SLL2 pcap (gzip or not).
fn drop_port(src: &Path, dst: &Path, port: u16) -> usize {
    let raw = std::fs::read(src).unwrap();
    let mut bytes = Vec::new();
    flate2::read::MultiGzDecoder::new(&raw[..])
        .read_to_end(&mut bytes)
        .unwrap();
    let mut out = bytes[..24].to_vec();
    let (mut at, mut dropped) = (24, 0);
    while at + 16 <= bytes.len() {
        let caplen = u32::from_le_bytes(bytes[at + 8..at + 12].try_into().unwrap()) as usize;
        let frame = &bytes[at + 16..at + 16 + caplen];
        let ip = &frame[20.min(frame.len())..];
        let is_port = frame.len() > 20 + 24 && frame[0..2] == [0x08, 0x00] && ip[9] == 6 && {
            let tcp = &ip[usize::from(ip[0] & 0x0f) * 4..];
            u16::from_be_bytes([tcp[0], tcp[1]]) == port
                || u16::from_be_bytes([tcp[2], tcp[3]]) == port
        };
        if is_port {
            dropped += 1;
        } else {
            out.extend_from_slice(&bytes[at..at + 16 + caplen]);
        }
        at += 16 + caplen;
    }
    let mut enc = flate2::write::GzEncoder::new(
        std::fs::File::create(dst).unwrap(),
        flate2::Compression::fast(),
    );
    enc.write_all(&out).unwrap();
    enc.finish().unwrap();
    dropped
}

#[test]
fn capture_with_a_hop_removed_fails() {
    let dir = temp_dir("check-hop-removed");
    let mut files = Vec::new();
    for f in scenario_captures("cross-server") {
        let src = repo().join(&f);
        let name = src.file_name().unwrap().to_str().unwrap().to_string();
        let stem = name.trim_end_matches(".pcap.gz");
        std::fs::copy(
            src.with_file_name(format!("{stem}.links.json")),
            dir.join(format!("{stem}.links.json")),
        )
        .unwrap();
        let dst = dir.join(&name);
        if stem == "B" {
            // B's Nginx -> Python hop is gone from the capture.
            assert!(drop_port(&src, &dst, 8888) > 0);
        } else {
            std::fs::copy(&src, &dst).unwrap();
        }
        files.push(dst.display().to_string());
    }
    let run = check(
        "cross-server",
        &repo().join("fixtures/cross-server/expect.toml"),
        &[],
        &files,
    );
    assert_eq!(run.code, 1, "{}", run.stdout);
    assert!(
        run.stdout.contains("counts.complete: expected 1, found 0"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains("backend 198.19.12.3:8888 answered no request"),
        "{}",
        run.stdout
    );
}

#[test]
fn bless_writes_an_expectation_that_holds() {
    let dir = temp_dir("check-bless");
    let path = dir.join("new.toml");
    let files = scenario_captures("keepalive-500");
    let run = check("keepalive-500", &path, &["--bless"], &files);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let written = std::fs::read_to_string(&path).unwrap();
    assert!(
        written.contains("[[shape]]") && written.contains("vip_holders = [\"A\"]"),
        "{written}"
    );
    let run = check("keepalive-500", &path, &[], &files);
    assert_eq!(run.code, 0, "{}", run.stdout);
}

#[test]
fn bad_rules_and_files_exit_2() {
    let files = scenario_captures("single-request");
    let run = check(
        "single-request",
        &repo().join("fixtures/single-request/expect.toml"),
        &["--rule", "make it fast"],
        &files,
    );
    assert_eq!(run.code, 2);
    assert!(
        run.stderr.contains("not understood") && run.stderr.contains("make it fast"),
        "{}",
        run.stderr
    );
    let dir = temp_dir("check-bad");
    let bad = dir.join("bad.toml");
    std::fs::write(&bad, "counts = 3\nunknown = true\n").unwrap();
    let run = check("single-request", &bad, &[], &files);
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("invalid expectation"), "{}", run.stderr);
    let run = check("single-request", &dir.join("missing.toml"), &[], &files);
    assert_eq!(run.code, 2);
}

/// Issue 14: `every path passes` accepts the roles a `--names` topology file defines,
/// and the rule is checked against them (it fails when the role is not on the path).
#[test]
fn rules_name_roles_from_the_topology_file() {
    let dir = temp_dir("check-names");
    let names = dir.join("names.toml");
    std::fs::write(
        &names,
        "[services]\n\"198.19.1.2:8000\" = { name = \"kong-a\", role = \"edge\" }\n\"198.19.99.9:1\" = { role = \"nowhere\" }\n",
    )
    .unwrap();
    let files = scenario_captures("single-request");
    let names_arg = names.display().to_string();
    let run_rule = |rule: &str| {
        let mut args = vec![
            "check".to_string(),
            "--names".into(),
            names_arg.clone(),
            "--rule".into(),
            rule.to_string(),
        ];
        args.extend(files.iter().cloned());
        flowtrace_in_repo(&args)
    };
    let run = run_rule("every path passes Edge, load_balancer, backend");
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    let run = run_rule("every path passes nowhere");
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stdout.contains("every path passes nowhere"),
        "{}",
        run.stdout
    );
    let run = run_rule("every path passes elsewhere");
    assert_eq!(run.code, 2, "{}{}", run.stdout, run.stderr);
}
