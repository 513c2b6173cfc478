//! Diagrams: hostile wire text is escaped, every SVG is well-formed XML, the shipped
//! scenarios' diagrams match their reviewed goldens, and Chromium renders them.

use crate::util::{
    exchange_pcap, flowtrace, flowtrace_in_repo, flowtrace_stdin, golden, repo, scenario_captures,
    temp_dir,
};
use std::path::{Path, PathBuf};

/// Writes a pcap with one HTTP exchange whose URI, headers and Server hold markup.
fn hostile_capture(path: &Path) {
    let request = b"GET /<script>alert(\"x\")</script>&]]>?q='\"<b> HTTP/1.1\r\nHost: evil\"<>&\r\nX-Request-ID: ]]><script>\r\n\r\n";
    let response =
        b"HTTP/1.1 200 OK\r\nServer: <svg onload=alert(1)>\r\nContent-Length: 2\r\n\r\nok";
    exchange_pcap(path, request, response);
}

fn assert_safe_svg(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    let doc = roxmltree::Document::parse(&text)
        .unwrap_or_else(|e| panic!("{}: not well-formed XML: {e}", path.display()));
    for n in doc.descendants() {
        let name = n.tag_name().name();
        assert!(
            name != "script" && name != "foreignObject" && name != "a",
            "{}: <{name}> element",
            path.display()
        );
        for a in n.attributes() {
            assert!(
                !a.name().starts_with("on"),
                "{}: event attribute {}",
                path.display(),
                a.name()
            );
            assert!(
                !a.value().contains("javascript:"),
                "{}: javascript URL",
                path.display()
            );
        }
    }
    doc.descendants()
        .filter_map(|n| n.text())
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn wire_text_is_escaped_in_every_output() {
    let dir = temp_dir("hostile");
    let cap = dir.join("hostile.pcap");
    hostile_capture(&cap);
    let out = dir.join("svg");
    let run = flowtrace([
        "pcap".as_ref(),
        "--svg".as_ref(),
        out.as_os_str(),
        "--dot".as_ref(),
        "--mermaid".as_ref(),
        cap.as_os_str(),
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let mut texts = String::new();
    let mut svgs = 0;
    for e in std::fs::read_dir(&out).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "svg") {
            texts.push_str(&assert_safe_svg(&p));
            svgs += 1;
        }
    }
    assert_eq!(svgs, 4, "topology, chain, ladder, swimlanes");
    // The markup survives as text, escaped, rather than being dropped.
    assert!(
        texts.contains("/<script>alert(\"x\")</script>&]]>"),
        "{texts}"
    );
    assert!(texts.contains("<svg onload=alert(1"), "{texts}");
    let dot = std::fs::read_to_string(out.join("path-0.dot")).unwrap();
    assert!(dot.contains("\\\"x\\\""), "{dot}");
    // Every label ends at its own closing quote: quotes inside are escaped.
    for line in dot.lines().filter(|l| l.contains("label=\"")) {
        let inner = &line[line.find("label=\"").unwrap() + 7..];
        let bytes = inner.as_bytes();
        let close = (0..bytes.len())
            .find(|&i| bytes[i] == b'"' && (i == 0 || bytes[i - 1] != b'\\'))
            .unwrap();
        assert!(
            matches!(bytes.get(close + 1), Some(b']') | Some(b',')),
            "unescaped quote in {line}"
        );
    }
    let mmd = std::fs::read_to_string(out.join("path-0.mmd")).unwrap();
    assert!(
        mmd.contains("&lt;script&gt;") && !mmd.contains("<script>"),
        "{mmd}"
    );
}

/// The default diagrams of every shipped scenario, compared with reviewed goldens in
/// fixtures/<scenario>/svg/ (FLOWTRACE_BLESS=1 rewrites them).
#[test]
fn golden_diagrams_of_every_scenario() {
    for name in [
        "single-request",
        "cross-server",
        "keepalive-500",
        "failover",
        "highconc-2000",
        "no-forward-headers",
    ] {
        let out = temp_dir(&format!("svg-{name}"));
        let mut args = vec![
            "pcap".to_string(),
            "--svg".into(),
            out.display().to_string(),
        ];
        args.extend(scenario_captures(name));
        let run = flowtrace_in_repo(&args);
        assert_eq!(run.code, 0, "{name}: {}", run.stderr);
        let mut written: Vec<PathBuf> = std::fs::read_dir(&out)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        written.sort();
        assert!(written.len() >= 4, "{name}: {written:?}");
        for p in &written {
            assert_safe_svg(p);
            let file = p.file_name().unwrap().to_str().unwrap();
            golden(
                &format!("{name}/svg/{file}"),
                &std::fs::read_to_string(p).unwrap(),
            );
        }
        if std::env::var_os("FLOWTRACE_BLESS").is_none() {
            let expected = std::fs::read_dir(repo().join("fixtures").join(name).join("svg"))
                .unwrap()
                .count();
            assert_eq!(
                expected,
                written.len(),
                "{name}: the set of diagrams changed"
            );
        }
    }
}

/// Each kind of diagram opens in headless Chromium and renders to a PNG.
#[test]
fn diagrams_render_in_chromium() {
    let Some(chromium) = crate::util::chromium("SVGs were not rendered") else {
        return;
    };
    let dir = temp_dir("chromium");
    for svg in [
        "topology.svg",
        "path-0-chain.svg",
        "path-0-ladder.svg",
        "path-0-swimlanes.svg",
    ] {
        let src = repo().join("fixtures/cross-server/svg").join(svg);
        let png = dir.join(svg.replace(".svg", ".png"));
        let profile = dir.join(format!("profile-{svg}"));
        let out = std::process::Command::new(&chromium)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--hide-scrollbars",
                "--window-size=1600,1200",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg(format!("--screenshot={}", png.display()))
            .arg(format!("file://{}", src.display()))
            .output()
            .expect("run chromium");
        assert!(
            out.status.success(),
            "{svg}: chromium failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let bytes = std::fs::read(&png).unwrap_or_else(|e| panic!("{svg}: no PNG: {e}"));
        assert!(
            bytes.starts_with(b"\x89PNG") && bytes.len() > 5_000,
            "{svg}: PNG of {} bytes",
            bytes.len()
        );
    }
}

/// Diagrams come from the same single pass as the paths: `--svg` works on standard
/// input (nothing is read twice) and draws what it draws from the file, and asking
/// for diagrams does not change the paths printed.
#[test]
fn svg_from_stdin_in_one_pass() {
    let file = repo().join("captures/cross-server/A.pcap.gz");
    let from_file = temp_dir("svg-one-pass-file");
    let run = flowtrace([
        "pcap".as_ref(),
        "--slowest".as_ref(),
        "1".as_ref(),
        "--svg".as_ref(),
        from_file.as_os_str(),
        file.as_os_str(),
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let plain = flowtrace(["pcap".as_ref(), "--paths".as_ref(), file.as_os_str()]);
    assert_eq!(plain.code, 0, "{}", plain.stderr);
    assert_eq!(run.stdout, plain.stdout, "--svg changed the paths printed");
    let from_stdin = temp_dir("svg-one-pass-stdin");
    let out = flowtrace_stdin(
        [
            "pcap".as_ref(),
            "--slowest".as_ref(),
            "1".as_ref(),
            "--svg".as_ref(),
            from_stdin.as_os_str(),
            "-".as_ref(),
        ],
        &std::fs::read(&file).unwrap(),
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let names = |d: &Path| {
        let mut v: Vec<String> = std::fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        v.sort();
        v
    };
    assert_eq!(names(&from_file), names(&from_stdin));
    assert!(names(&from_stdin)
        .iter()
        .any(|n| n.ends_with("-ladder.svg")));
    for n in names(&from_file) {
        let a = std::fs::read_to_string(from_file.join(&n)).unwrap();
        let b = std::fs::read_to_string(from_stdin.join(&n)).unwrap();
        // Only the capture's name differs ("-" for standard input).
        let a = a.replace(file.to_str().unwrap(), "-");
        if a != b {
            // Names may be cut to fit a box: compare the segment rows instead.
            let rows = |s: &str| s.matches("<line").count();
            assert_eq!(rows(&a), rows(&b), "{n} differs from stdin");
        }
    }
}

/// Issue 14: `flowtrace pcap dump.pcap --svg` works as typed: the diagrams go to
/// ./flowtrace-diagrams and the files written are listed; `--svg dump.pcap` (the
/// capture taken for the directory) is refused with a hint, not drawn into.
#[test]
fn svg_without_a_directory_draws_into_the_default_one() {
    let dir = temp_dir("svg-default");
    let dump = dir.join("dump.pcap.gz");
    std::fs::copy(repo().join("captures/single-request/A.pcap.gz"), &dump).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_flowtrace"))
        .args(["pcap", "dump.pcap.gz", "--svg"])
        .current_dir(&dir)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let drawn = dir.join("flowtrace-diagrams");
    assert!(drawn.join("topology.svg").is_file());
    assert!(
        stderr.contains("to flowtrace-diagrams: topology.svg path-0-chain.svg"),
        "{stderr}"
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_flowtrace"))
        .args(["pcap", "--svg", "dump.pcap.gz"])
        .current_dir(&dir)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr.contains("is a file, not a directory"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}
