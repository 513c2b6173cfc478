//! The HTML report (`--html`) in a real headless Chromium: the page's own self-test
//! (`#selftest`) records errors, console errors and policy violations from before its
//! script runs, drives the table (filter, sort, pages, a click), and writes a JSON
//! verdict into the DOM, which `--dump-dom` hands back; these tests compare it with the
//! JSON output of the same run. Also: hostile wire text stays text, and the reviewed
//! screenshots in fixtures/html/ (rewritten with FLOWTRACE_BLESS=1).

use crate::util::{exchange_pcap, flowtrace_in_repo, repo, scenario_captures, temp_dir};
use serde::Deserialize;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Chromium headless with a fresh profile in `dir`, no network services, and `extra`
/// flags, on `url`; returns its standard output.
fn run_chromium(chromium: &Path, dir: &Path, extra: &[String], url: &str) -> String {
    let out = Command::new("timeout")
        .arg("120")
        .arg(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-extensions",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", dir.join("profile").display()))
        .args(extra)
        .arg(url)
        .output()
        .expect("run chromium");
    assert!(
        out.status.success(),
        "chromium failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The page's verdict (`#ft-selftest`, written by src/render/html/report.js).
#[derive(Deserialize, Debug)]
struct Verdict {
    paths: usize,
    meta_paths: usize,
    table_rows: usize,
    view: usize,
    failed: usize,
    summary_failed: usize,
    uri_matches: usize,
    role_matches: Option<usize>,
    host_matches: Option<usize>,
    sorted_desc: bool,
    slowest_first: Option<usize>,
    page_after_next: usize,
    first_row_text: Option<Vec<String>>,
    detail_path: Option<usize>,
    detail_svg: usize,
    detail_not_kept_note: bool,
    kept: Vec<usize>,
    kept_detail_images: Option<usize>,
    vip_failed_marks: usize,
    vip_lanes: usize,
    topology_images: usize,
    external_refs: usize,
    errors: Vec<String>,
}

#[derive(Deserialize, Debug)]
struct ImageVerdict {
    images: usize,
    decoded: usize,
    errors: Vec<String>,
}

/// The text of `<pre id="ID">` in a DOM dump, unescaped.
fn pre(dom: &str, id: &str) -> Option<String> {
    let start = dom.find(&format!("<pre id=\"{id}\">"))? + id.len() + 11;
    let end = start + dom[start..].find("</pre>")?;
    Some(
        dom[start..end]
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&nbsp;", "\u{a0}")
            .replace("&amp;", "&"),
    )
}

/// Loads `page#selftest&PARAMS` and returns both verdicts.
fn selftest(chromium: &Path, dir: &Path, page: &Path, params: &str) -> (Verdict, ImageVerdict) {
    let dom = run_chromium(
        chromium,
        dir,
        &[
            "--dump-dom".into(),
            // Lets the images decode before the DOM is dumped (virtual time: no wait).
            "--virtual-time-budget=10000".into(),
        ],
        &format!("file://{}#selftest{params}", page.display()),
    );
    let v = pre(&dom, "ft-selftest").unwrap_or_else(|| {
        panic!(
            "no self-test verdict in the page (did its script run?):\n{}",
            &dom[dom.len().saturating_sub(2000)..]
        )
    });
    let i = pre(&dom, "ft-selftest-images").expect("no image verdict");
    (
        serde_json::from_str(&v).unwrap_or_else(|e| panic!("{e}: {v}")),
        serde_json::from_str(&i).unwrap_or_else(|e| panic!("{e}: {i}")),
    )
}

/// Runs `flowtrace pcap --html` (with the paths as JSON to a file, the same pass) on a
/// shipped scenario; returns the page and the JSON document.
fn report(scenario: &str, dir: &Path, extra: &[&str]) -> (PathBuf, Value) {
    let page = dir.join("report.html");
    let json = dir.join("paths.json");
    let mut args: Vec<String> = vec![
        "pcap".into(),
        "--no-progress".into(),
        "--format".into(),
        "json".into(),
        "-o".into(),
        json.display().to_string(),
        "--html".into(),
        page.display().to_string(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    args.extend(scenario_captures(scenario));
    let run = flowtrace_in_repo(&args);
    assert_eq!(run.code, 0, "{scenario}: {}", run.stderr);
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let n = doc["paths"].as_array().unwrap().len();
    assert!(
        run.stderr
            .contains(&format!("flowtrace: wrote {} ({n} paths)", page.display())),
        "{}",
        run.stderr
    );
    assert!(
        !dir.join("report.html.tmp").exists(),
        "the temporary file is left"
    );
    (page, doc)
}

fn root_uri(p: &Value) -> &str {
    p["hops"][0]["uri"].as_str().unwrap_or("")
}

/// The common checks of a verdict against the run's JSON.
fn check(v: &Verdict, images: &ImageVerdict, doc: &Value, uri: &str, server: Option<&str>) {
    let paths = doc["paths"].as_array().unwrap();
    assert!(v.errors.is_empty(), "page errors: {:?}", v.errors);
    assert!(images.errors.is_empty(), "page errors: {:?}", images.errors);
    assert_eq!(v.paths, paths.len());
    assert_eq!(v.meta_paths, paths.len());
    assert_eq!(v.view, paths.len(), "every path in the table");
    assert_eq!(v.table_rows, paths.len().min(100), "one page of rows");
    let failed = paths.iter().filter(|p| p["status"] == "failed").count();
    assert_eq!(v.failed, failed, "status filter");
    assert_eq!(v.summary_failed, failed);
    let matching = paths
        .iter()
        .filter(|p| root_uri(p).to_lowercase().contains(&uri.to_lowercase()))
        .count();
    assert_eq!(v.uri_matches, matching, "URI filter {uri:?}");
    let backend = paths
        .iter()
        .filter(|p| {
            p["hops"]
                .as_array()
                .unwrap()
                .iter()
                .any(|h| h["role"] == "backend")
        })
        .count();
    assert_eq!(v.role_matches, Some(backend), "role filter");
    if let Some(server) = server {
        let at = paths
            .iter()
            .filter(|p| {
                p["hops"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|h| h["server"].as_str().is_some_and(|s| s.contains(server)))
            })
            .count();
        assert!(at > 0 && at < paths.len());
        assert_eq!(v.host_matches, Some(at), "host filter {server:?}");
    }
    assert!(v.sorted_desc, "sorted by latency");
    let dur = |p: &Value| p["end_ts"].as_f64().unwrap() - p["start_ts"].as_f64().unwrap();
    let max = paths.iter().map(dur).fold(f64::MIN, f64::max);
    let slowest = v.slowest_first.expect("a first row") as u64;
    let first = paths.iter().find(|p| p["id"] == slowest).unwrap();
    assert!(
        (dur(first) - max).abs() < 2e-6,
        "path {slowest} is not the slowest"
    );
    if paths.len() > 100 {
        assert_eq!(v.page_after_next, 1, "next page");
    }
    let row = v.first_row_text.as_ref().expect("a first row");
    let first = paths.iter().min_by_key(|p| p["id"].as_u64()).unwrap();
    assert_eq!(row[0], first["id"].to_string());
    assert_eq!(row[5], root_uri(first));
    assert_eq!(v.detail_path, first["id"].as_u64().map(|x| x as usize));
    assert!(v.detail_svg >= 2, "a click shows the chain diagram");
    assert!(!v.kept.is_empty(), "the run kept paths with their packets");
    assert_eq!(
        v.detail_not_kept_note,
        !v.kept.contains(&v.detail_path.unwrap())
    );
    assert!(
        v.kept_detail_images.unwrap() >= 3,
        "ladder, swimlanes, chain"
    );
    assert_eq!(images.images, images.decoded, "every diagram decodes");
    assert!(images.images >= 4);
    assert_eq!(v.topology_images, 1);
    assert_eq!(v.external_refs, 0, "no external src/href");
    assert_eq!(v.vip_lanes, doc["vip_timeline"].as_array().unwrap().len());
}

/// Nothing in the page names a resource outside it: no `src=`/`href=` but fragments,
/// no `url(` or `@import` in the style, and a policy that forbids fetching.
fn assert_self_contained(page: &Path) {
    let text = std::fs::read_to_string(page).unwrap();
    let markup = &text[..text.find("id=\"ft-rows\"").unwrap()];
    for bad in ["src=\"http", "href=\"http", "url(", "@import", "<link"] {
        assert!(!markup.contains(bad), "{bad} in the page head");
    }
    assert!(markup.contains("default-src 'none'"));
    for (i, _) in text.match_indices("href=") {
        assert!(text[i..].starts_with("href=\"#"), "{}", &text[i..i + 40]);
    }
}

#[test]
fn html_report_of_failover_in_chromium() {
    let dir = temp_dir("html-failover");
    let (page, doc) = report("failover", &dir, &[]);
    assert_self_contained(&page);
    let Some(chromium) = crate::util::chromium("the HTML report was not tested in a browser")
    else {
        return;
    };
    let uri = "/API/items/18";
    let (v, images) = selftest(&chromium, &dir, &page, &format!("&uri={uri}&role=backend"));
    check(&v, &images, &doc, uri, None);
    assert!(
        v.failed > 0 && v.vip_failed_marks == 1,
        "failed requests marked"
    );
    assert!(v.vip_lanes >= 2, "the VIP moved");
}

#[test]
fn html_report_of_highconc_in_chromium() {
    let dir = temp_dir("html-highconc");
    // Kept: the three slowest and every failed (none here).
    let (page, doc) = report("highconc-2000", &dir, &["--slowest", "3", "--failed"]);
    let Some(chromium) = crate::util::chromium("the HTML report was not tested in a browser")
    else {
        return;
    };
    let server = "198.19.12.3:";
    let (v, images) = selftest(
        &chromium,
        &dir,
        &page,
        &format!("&uri=q=1&role=backend&host={server}"),
    );
    check(&v, &images, &doc, "q=1", Some(server));
    assert_eq!(v.kept.len(), 3);
}

/// A URI, Host and Server that would break out of a `<script>` element or run script
/// if written as markup: the page holds them only as JSON escapes, and Chromium shows
/// them as text without running anything (the policy would report a blocked script or
/// image as an error).
#[test]
fn html_report_escapes_wire_text() {
    let dir = temp_dir("html-hostile");
    let cap = dir.join("hostile.pcap");
    let uri = "/</script><svg/onload=alert(1)><img/src=x>&amp;<!--";
    let request = format!("GET {uri} HTTP/1.1\r\nHost: </script><script>alert(2)</script>\r\n\r\n");
    exchange_pcap(
        &cap,
        request.as_bytes(),
        b"HTTP/1.1 200 OK\r\nServer: </title><svg onload=alert(3)>\r\nContent-Length: 2\r\n\r\nok",
    );
    let page = dir.join("hostile.html");
    let run = flowtrace_in_repo([
        "pcap".as_ref(),
        "--no-progress".as_ref(),
        "--path".as_ref(),
        "0".as_ref(),
        "--html".as_ref(),
        page.as_os_str(),
        cap.as_os_str(),
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stdout.contains("path 0"), "stdout keeps the paths");
    let text = std::fs::read_to_string(&page).unwrap();
    for bad in [
        "<svg/onload",
        "<img/src",
        "<script>alert",
        "onload=alert(3)>",
        "<!--",
    ] {
        assert!(!text.contains(bad), "{bad:?} in the page");
    }
    // The page's own four scripts, and no other element closes.
    assert_eq!(text.matches("</script>").count(), 4);
    assert!(text.contains("\\u003c/script\\u003e\\u003csvg/onload=alert(1)\\u003e"));
    let Some(chromium) = crate::util::chromium("the HTML report was not tested in a browser")
    else {
        return;
    };
    let dom = run_chromium(
        &chromium,
        &dir,
        &["--dump-dom".into(), "--virtual-time-budget=10000".into()],
        &format!("file://{}#selftest&uri=svg/onload", page.display()),
    );
    let v: Verdict = serde_json::from_str(&pre(&dom, "ft-selftest").expect("a verdict")).unwrap();
    assert!(v.errors.is_empty(), "page errors: {:?}", v.errors);
    assert_eq!(v.paths, 1);
    assert_eq!(v.uri_matches, 1);
    assert_eq!(v.first_row_text.unwrap()[5], uri, "the URI shown as text");
    assert_eq!(v.kept, vec![0]);
    let images: ImageVerdict =
        serde_json::from_str(&pre(&dom, "ft-selftest-images").expect("a verdict")).unwrap();
    assert!(images.errors.is_empty(), "{:?}", images.errors);
    assert_eq!(images.images, images.decoded);
    // Nothing the wire wrote became an element.
    let body = &dom[dom.find("<body").unwrap()..];
    assert!(!body.contains("<svg/onload") && !body.contains("<svg onload"));
    assert!(!body.contains("<img/src") && !body.contains("<img src=\"x"));
}

/// Screenshots of the report (the table, a failed path's detail, the VIP timeline; the
/// last two with `&alone`, as headless Chromium's screenshots of a scrolled page are
/// blank): each renders to a PNG; FLOWTRACE_BLESS=1 writes them, reduced to 64 colours
/// (with Debian's `pngquant` when present), to fixtures/html/ for review, and the first
/// to docs/img/report.png.
#[test]
fn html_report_screenshots() {
    let Some(chromium) = crate::util::chromium("the HTML report was not tested in a browser")
    else {
        return;
    };
    let dir = temp_dir("html-screens");
    let (page, doc) = report("failover", &dir, &[]);
    let failed = doc["paths"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["status"] == "failed")
        .expect("a failed path")["id"]
        .clone();
    let bless = std::env::var_os("FLOWTRACE_BLESS").is_some();
    for (name, fragment) in [
        ("report", String::new()),
        ("failed-path", format!("#path={failed}&alone")),
        ("vip-timeline", "#vip&alone".to_string()),
    ] {
        let png = dir.join(format!("{name}.png"));
        run_chromium(
            &chromium,
            &dir,
            &[
                format!("--screenshot={}", png.display()),
                "--window-size=1200,800".into(),
                "--virtual-time-budget=5000".into(),
            ],
            &format!("file://{}{fragment}", page.display()),
        );
        let bytes = std::fs::read(&png).unwrap_or_else(|e| panic!("{name}: no PNG: {e}"));
        assert!(bytes.starts_with(b"\x89PNG") && bytes.len() > 5_000);
        if bless {
            let dest = repo().join("fixtures/html").join(format!("{name}.png"));
            std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
            let reduced = Command::new("pngquant")
                .args(["--force", "--strip", "64", "--output"])
                .arg(&dest)
                .arg(&png)
                .status()
                .is_ok_and(|s| s.success());
            if !reduced {
                std::fs::copy(&png, &dest).unwrap();
            }
            if name == "report" {
                std::fs::copy(&dest, repo().join("docs/img/report.png")).unwrap();
            }
        }
    }
    for f in ["report", "failed-path", "vip-timeline"] {
        let p = repo().join("fixtures/html").join(format!("{f}.png"));
        let len = std::fs::metadata(&p)
            .unwrap_or_else(|e| panic!("{}: {e} (FLOWTRACE_BLESS=1 writes it)", p.display()))
            .len();
        assert!(len < 150_000, "{}: {len} bytes", p.display());
    }
}

/// A page that cannot be written is an error (exit 2) named after the file, and no
/// partial page is left.
#[test]
fn html_report_unwritable_is_an_error() {
    let dir = temp_dir("html-unwritable");
    let page = dir.join("missing-dir").join("report.html");
    let mut args = vec![
        "pcap".to_string(),
        "--no-progress".into(),
        "--html".into(),
        page.display().to_string(),
    ];
    args.extend(scenario_captures("single-request"));
    let run = flowtrace_in_repo(&args);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("cannot create"), "{}", run.stderr);
    assert!(!page.exists());
}
