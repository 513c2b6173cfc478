//! The HTML report (`flowtrace pcap --html FILE`): one self-contained page with the
//! summary, a table of every path (sort, filter, pages of 100 rows), a detail panel per
//! path (a chain diagram drawn by the page, the hop list, and the ladder and swimlanes
//! of the paths the run kept with their packets), the topology map and the VIP
//! timeline with failed requests marked.
//!
//! # Bounded memory
//!
//! [`HtmlWriter`] writes each path's row to `FILE.tmp` as the path is final and keeps
//! nothing of it; [`HtmlWriter::finish`] appends the rest (the summary, the diagrams,
//! the script) and renames the file into place. The page's order is: head and style,
//! the rows, the rest of the data, the script; the script runs once all are parsed.
//!
//! # Wire text
//!
//! Everything from the wire goes into two `<script type="application/json">` islands
//! (`ft-rows`, `ft-meta`) with `<`, `>` and `&` written as `\u003c`, `\u003e`,
//! `\u0026`, so no URI can close the element. The script builds the DOM with
//! `textContent` and `createElementNS`, never from markup; the server-side SVGs (already
//! escaped by [`crate::diagram`]) are shown as `<img>` from blob URLs, where no script
//! of theirs could run. A Content-Security-Policy (`default-src 'none'`, the page's
//! scripts by nonce, images from `blob:` only) forbids any fetch and any injected
//! script.
//!
//! # Row format (`ft-rows`, one JSON array)
//!
//! A row: `id`, `t` (start, epoch seconds), `d` (total ms), `s` (`c`omplete,
//! `p`artial, `f`ailed), `m`, `u`, `st` (the client's method, URI and HTTP status),
//! `v` (`[VIP, holder]`), `h` (hops). A hop: `i` (id), `p` (parent), `k` (`n` for a
//! NAT hop); HTTP hops: `r` (role), `h` (host), `n` (name), `pr` (product), `c`, `s`
//! (client and server address), `m`, `u` (only when they differ from the client's),
//! `st`, `l` (latency ms), `sf` (self ms), `cf` (link confidence), `cp` (capture
//! point, an index into `captures` of `ft-meta`); NAT hops: `h`, `t` (SNAT, DNAT,
//! ...), `b`, `a` (`[client, server]` before and after). Absent values are left out.

use crate::correlate::{HopKind, PathStatus, RequestPath, Tail};
use serde::Serialize;
use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

const CSS: &str = include_str!("html/report.css");
const JS: &str = include_str!("html/report.js");
const BODY: &str = include_str!("html/body.html");

/// The diagrams of one path the run kept with its packets (SVG documents).
#[derive(Serialize, Clone, Debug)]
pub struct KeptDiagrams {
    /// Path id.
    pub id: usize,
    /// The path chain.
    pub chain: String,
    /// The ladder, one SVG per page.
    pub ladder: Vec<String>,
    /// The swimlanes.
    pub swimlanes: String,
}

/// What the page shows besides the rows.
pub struct Page<'a> {
    /// Summary, VIP timeline, failovers, clock offsets, address book.
    pub tail: &'a Tail,
    /// Capture files read.
    pub inputs: &'a [String],
    /// The topology map (SVG).
    pub topology_svg: &'a str,
    /// Diagrams of the kept paths.
    pub kept: &'a [KeptDiagrams],
    /// The program and version that wrote the page.
    pub generator: &'a str,
}

/// Writes `<`, `>` and `&` as JSON escapes: JSON written through it can sit inside a
/// `<script>` element (those bytes only occur inside JSON strings).
struct ScriptSafe<W: Write>(W);

impl<W: Write> Write for ScriptSafe<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut start = 0;
        for (i, b) in buf.iter().enumerate() {
            let esc: &[u8] = match b {
                b'<' => b"\\u003c",
                b'>' => b"\\u003e",
                b'&' => b"\\u0026",
                _ => continue,
            };
            self.0.write_all(&buf[start..i])?;
            self.0.write_all(esc)?;
            start = i + 1;
        }
        self.0.write_all(&buf[start..])?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

fn is_false(b: &bool) -> bool {
    !*b
}

#[derive(Serialize)]
struct RowHop<'a> {
    i: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    p: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    k: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    r: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    h: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    n: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pr: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    c: Option<SocketAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    s: Option<SocketAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    m: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    u: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    st: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    l: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sf: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cf: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cp: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    t: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    b: Option<[SocketAddr; 2]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    a: Option<[SocketAddr; 2]>,
}

#[derive(Serialize)]
struct Row<'a> {
    id: usize,
    t: crate::time::Ts,
    d: f64,
    s: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    m: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    u: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    st: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    v: Option<(String, Option<&'a str>)>,
    h: Vec<RowHop<'a>>,
}

#[derive(Serialize)]
struct Meta<'a> {
    generator: &'a str,
    inputs: &'a [String],
    paths: usize,
    captures: &'a [(String, String)],
    summary: &'a crate::correlate::PathSummary,
    vip_timeline: &'a [crate::correlate::VipHolding],
    failovers: &'a [crate::correlate::Failover],
    clock_offsets: &'a [crate::correlate::ClockOffset],
    clock_offset_changes: &'a [crate::correlate::OffsetChange],
    address_book: &'a [crate::correlate::AddressEntry],
    anomalies: &'a [String],
    topology: &'a str,
    kept: &'a [KeptDiagrams],
    #[serde(skip_serializing_if = "is_false")]
    truncated_anomalies: bool,
}

/// Writes the HTML report: rows as paths come (to `FILE.tmp`), the rest and the rename
/// at [`HtmlWriter::finish`]. Dropped unfinished, it removes its temporary file.
pub struct HtmlWriter {
    out: Option<ScriptSafe<BufWriter<File>>>,
    tmp: PathBuf,
    dest: PathBuf,
    nonce: String,
    written: usize,
    /// Capture points (file, interface) in order of first use, and their index.
    captures: Vec<(String, String)>,
    capture_index: HashMap<(String, String), usize>,
}

/// A nonce for the page's Content-Security-Policy: unguessable by whoever wrote the
/// captures (std's randomly keyed hasher over the time and the process id).
fn nonce() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
    );
    h.write_u32(std::process::id());
    let a = h.finish();
    h.write_u64(a);
    format!("{a:016x}{:016x}", h.finish())
}

impl HtmlWriter {
    /// Starts the page for `dest` (written to `dest` + `.tmp` until finished).
    pub fn create(dest: &Path) -> io::Result<HtmlWriter> {
        let mut tmp = dest.as_os_str().to_owned();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        let file = File::create(&tmp)?;
        let mut w = HtmlWriter {
            out: Some(ScriptSafe(BufWriter::with_capacity(1 << 16, file))),
            tmp,
            dest: dest.to_path_buf(),
            nonce: nonce(),
            written: 0,
            captures: Vec::new(),
            capture_index: HashMap::new(),
        };
        let head = head(&w.nonce);
        let out = w.raw();
        out.write_all(head.as_bytes())?;
        out.write_all(b"<script type=\"application/json\" id=\"ft-rows\">[")?;
        Ok(w)
    }

    /// The file underneath, unescaped (for markup the page itself writes).
    fn raw(&mut self) -> &mut BufWriter<File> {
        &mut self.out.as_mut().expect("not finished").0
    }

    fn capture(&mut self, file: &str, interface: &str) -> usize {
        let key = (file.to_string(), interface.to_string());
        if let Some(i) = self.capture_index.get(&key) {
            return *i;
        }
        let i = self.captures.len();
        self.captures.push(key.clone());
        self.capture_index.insert(key, i);
        i
    }

    /// Writes one path's row.
    pub fn path(&mut self, p: &RequestPath) -> io::Result<()> {
        let root = p.hops.first();
        let (rm, ru) = (
            root.and_then(|h| h.method.as_deref()),
            root.and_then(|h| h.uri.as_deref()),
        );
        let mut hops = Vec::with_capacity(p.hops.len());
        for h in &p.hops {
            let mut hop = RowHop {
                i: h.id,
                p: h.parent,
                k: None,
                r: None,
                h: h.host.as_deref(),
                n: None,
                pr: None,
                c: None,
                s: None,
                m: None,
                u: None,
                st: None,
                l: None,
                sf: None,
                cf: None,
                cp: None,
                t: None,
                b: None,
                a: None,
            };
            match h.kind {
                HopKind::Nat => {
                    hop.k = Some("n");
                    hop.t = h.translation.map(|t| t.as_str());
                    hop.b = h.before.map(|e| [e.client, e.server]);
                    hop.a = h.after.map(|e| [e.client, e.server]);
                }
                HopKind::Http => {
                    hop.r = h.role.as_ref().map(|r| r.as_str());
                    hop.n = h.name.as_deref();
                    hop.pr = h.product.as_deref();
                    hop.c = h.client;
                    hop.s = h.server;
                    hop.m = h.method.as_deref().filter(|m| Some(*m) != rm);
                    hop.u = h.uri.as_deref().filter(|u| Some(*u) != ru);
                    hop.st = h.status;
                    hop.l = h.latency_ms;
                    hop.sf = h.self_ms;
                    hop.cf = h.confidence.filter(|c| *c < 0.9995);
                    hop.cp = h
                        .capture
                        .as_ref()
                        .map(|c| self.capture(&c.file, &c.interface));
                }
            }
            hops.push(hop);
        }
        let row = Row {
            id: p.id,
            t: p.start_ts,
            d: ((p.end_ts.0 - p.start_ts.0) as f64 / 1e3).round() / 1e3,
            s: match p.status {
                PathStatus::Complete => "c",
                PathStatus::Partial => "p",
                PathStatus::Failed => "f",
            },
            m: rm,
            u: ru,
            st: root.and_then(|h| h.status),
            v: p.vip
                .as_ref()
                .map(|v| (v.address.to_string(), v.holder.as_deref())),
            h: hops,
        };
        let written = self.written;
        let out = self.out.as_mut().expect("not finished");
        if written > 0 {
            out.write_all(b",\n")?;
        }
        serde_json::to_writer(&mut *out, &row)?;
        self.written += 1;
        Ok(())
    }

    /// Rows written.
    pub fn written(&self) -> usize {
        self.written
    }

    /// Writes the rest of the page and renames it into place; returns the number of
    /// paths in it.
    pub fn finish(mut self, page: &Page<'_>) -> io::Result<usize> {
        let captures = std::mem::take(&mut self.captures);
        let meta = Meta {
            generator: page.generator,
            inputs: page.inputs,
            paths: self.written,
            captures: &captures,
            summary: &page.tail.summary,
            vip_timeline: &page.tail.vip_timeline,
            failovers: &page.tail.failovers,
            clock_offsets: &page.tail.clock_offsets,
            clock_offset_changes: &page.tail.clock_offset_changes,
            address_book: &page.tail.address_book,
            anomalies: &page.tail.anomalies,
            topology: page.topology_svg,
            kept: page.kept,
            truncated_anomalies: page.tail.anomalies_not_kept > 0,
        };
        let nonce = self.nonce.clone();
        let out = self.raw();
        out.write_all(b"]</script>\n<script type=\"application/json\" id=\"ft-meta\">")?;
        let out = self.out.as_mut().expect("not finished");
        serde_json::to_writer(&mut *out, &meta)?;
        let out = self.raw();
        out.write_all(b"</script>\n")?;
        write!(
            out,
            "<script nonce=\"{nonce}\">\n{JS}</script>\n</body>\n</html>\n"
        )?;
        let file = self
            .out
            .take()
            .expect("not finished")
            .0
            .into_inner()
            .map_err(|e| e.into_error())?;
        file.sync_all()?;
        drop(file);
        std::fs::rename(&self.tmp, &self.dest)?;
        Ok(self.written)
    }
}

impl Drop for HtmlWriter {
    fn drop(&mut self) {
        if self.out.is_some() {
            self.out = None;
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// Everything before the rows: the policy, the error hook, the style and the page's
/// skeleton (no wire text).
fn head(nonce: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; \
         img-src blob:; style-src 'unsafe-inline'; script-src 'nonce-{nonce}'; \
         base-uri 'none'; form-action 'none'\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>flowtrace report</title>\n\
         <script nonce=\"{nonce}\">{ERROR_HOOK}</script>\n\
         <style>\n{CSS}</style>\n</head>\n<body>\n{BODY}"
    )
}

/// Records errors, console errors and policy violations for the self-test
/// (`#selftest`), before anything else runs.
const ERROR_HOOK: &str = "window.ftErrors=[];\
addEventListener('error',function(e){ftErrors.push('error: '+(e.message||e.type))});\
addEventListener('unhandledrejection',function(e){ftErrors.push('rejection: '+e.reason)});\
document.addEventListener('securitypolicyviolation',function(e){ftErrors.push('csp: '+e.violatedDirective+' '+e.blockedURI)});\
(function(){var ce=console.error;console.error=function(){ftErrors.push('console: '+Array.prototype.join.call(arguments,' '));return ce.apply(console,arguments)}})();";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn script_safe_escapes_markup() {
        let mut out = ScriptSafe(Vec::new());
        serde_json::to_writer(&mut out, &"</script><img src=x onerror=alert(1)>&").unwrap();
        let text = String::from_utf8(out.0).unwrap();
        assert_eq!(
            text,
            "\"\\u003c/script\\u003e\\u003cimg src=x onerror=alert(1)\\u003e\\u0026\""
        );
        let back: String = serde_json::from_str(&text).unwrap();
        assert_eq!(back, "</script><img src=x onerror=alert(1)>&");
    }

    fn hostile_path(id: usize) -> RequestPath {
        use crate::correlate::{Hop, Role, PATH_SCHEMA_VERSION};
        let mut root = Hop::new(0, None, HopKind::Http);
        root.role = Some(Role::Gateway);
        root.host = Some("A</script>".into());
        root.method = Some("GET".into());
        root.uri = Some(format!("/{id}</script><svg/onload=alert(1)>&"));
        root.status = Some(200);
        root.latency_ms = Some(2.5);
        root.client = Some("10.0.0.1:40000".parse().unwrap());
        root.server = Some("10.0.0.2:80".parse().unwrap());
        root.capture = Some(crate::correlate::CaptureRef {
            file: "a.pcap".into(),
            interface: "eth0".into(),
        });
        let mut child = root.clone();
        child.id = 1;
        child.parent = Some(0);
        child.role = Some(Role::Backend);
        child.uri = Some("/other".into());
        RequestPath {
            schema_version: PATH_SCHEMA_VERSION,
            id,
            status: PathStatus::Complete,
            start_ts: crate::time::Ts(1_700_000_000_000_000_000),
            end_ts: crate::time::Ts(1_700_000_000_002_500_000),
            vip: None,
            hops: vec![root, child],
            root_transaction: id as u64,
            segments: Vec::new(),
        }
    }

    fn empty_tail() -> Tail {
        Tail {
            vip_timeline: Vec::new(),
            failovers: Vec::new(),
            clock_offsets: Vec::new(),
            clock_offset_changes: Vec::new(),
            address_book: Vec::new(),
            anomalies: Vec::new(),
            anomalies_not_kept: 0,
            summary: Default::default(),
            engine: Default::default(),
        }
    }

    /// The page: its rows parse back as JSON with the wire text intact, only the
    /// page's own four scripts close, and nothing is left but the page.
    #[test]
    fn page_holds_rows_as_escaped_json() {
        let dir = std::env::temp_dir().join(format!("flowtrace-page-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let dest = dir.join("r.html");
        let mut w = HtmlWriter::create(&dest).unwrap();
        for id in 0..3 {
            w.path(&hostile_path(id)).unwrap();
        }
        assert_eq!(w.written(), 3);
        let tail = empty_tail();
        let kept = [KeptDiagrams {
            id: 1,
            chain: "<svg><text>&lt;/script&gt;</text></svg>".into(),
            ladder: vec!["<svg/>".into()],
            swimlanes: "<svg/>".into(),
        }];
        let n = w
            .finish(&Page {
                tail: &tail,
                inputs: &["a</script>.pcap".to_string()],
                topology_svg: "<svg/>",
                kept: &kept,
                generator: "test",
            })
            .unwrap();
        assert_eq!(n, 3);
        let text = std::fs::read_to_string(&dest).unwrap();
        assert!(!dir.join("r.html.tmp").exists());
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(text.matches("</script>").count(), 4);
        assert!(!text.contains("<svg/onload"));
        let island = |id: &str| -> serde_json::Value {
            let open = format!("<script type=\"application/json\" id=\"{id}\">");
            let start = text.find(&open).unwrap() + open.len();
            let end = start + text[start..].find("</script>").unwrap();
            serde_json::from_str(&text[start..end]).unwrap()
        };
        let rows = island("ft-rows");
        let rows = rows.as_array().unwrap();
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[2]["u"], "/2</script><svg/onload=alert(1)>&");
        assert_eq!(rows[2]["d"], 2.5);
        assert_eq!(rows[2]["s"], "c");
        let hops = rows[2]["h"].as_array().unwrap();
        assert_eq!(hops[0]["h"], "A</script>");
        assert_eq!(hops[0]["cp"], 0);
        assert!(hops[0].get("u").is_none(), "the root's URI is the row's");
        assert_eq!(hops[1]["u"], "/other");
        let meta = island("ft-meta");
        assert_eq!(meta["paths"], 3);
        assert_eq!(meta["captures"][0][0], "a.pcap");
        assert_eq!(meta["inputs"][0], "a</script>.pcap");
        assert_eq!(meta["kept"][0]["chain"], kept[0].chain);
    }

    #[test]
    fn nonces_differ() {
        assert_ne!(nonce(), nonce());
        assert_eq!(nonce().len(), 32);
    }

    #[test]
    fn unfinished_page_leaves_no_file() {
        let dir = std::env::temp_dir().join(format!("flowtrace-html-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let dest = dir.join("r.html");
        let w = HtmlWriter::create(&dest).unwrap();
        assert!(dir.join("r.html.tmp").exists());
        drop(w);
        assert!(!dir.join("r.html.tmp").exists());
        assert!(!dest.exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
