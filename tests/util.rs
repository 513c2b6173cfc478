//! Helpers: run the flowtrace binary, find the shared corpus, parse JSON output.

#![allow(dead_code)]

use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Output of one flowtrace run.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

pub fn flowtrace<I, S>(args: I) -> Run
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let out: Output = Command::new(env!("CARGO_BIN_EXE_flowtrace"))
        // Text shows local times: goldens are written in UTC wherever tests run.
        .env("TZ", "UTC")
        .args(args)
        .output()
        .expect("run flowtrace");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Runs flowtrace with `input` on its standard input.
pub fn flowtrace_stdin<I, S>(args: I, input: &[u8]) -> Run
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    use std::io::Write;
    use std::process::Stdio;
    let mut child = Command::new(env!("CARGO_BIN_EXE_flowtrace"))
        // Text shows local times: goldens are written in UTC wherever tests run.
        .env("TZ", "UTC")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run flowtrace");
    // Written from another thread: flowtrace may fill its stdout before it has read
    // all of its input.
    let mut stdin = child.stdin.take().expect("piped stdin");
    let input = input.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let out = child.wait_with_output().expect("run flowtrace");
    writer.join().expect("stdin writer").expect("write stdin");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The shared capture corpus, `../shared/pcaps` beside the checkout. In CI it must
/// exist; elsewhere a test that cannot find it says so loudly and returns `None`.
pub fn corpus() -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/pcaps");
    if p.join("MANIFEST.tsv").is_file() {
        return Some(p);
    }
    if std::env::var_os("CI").is_some() {
        panic!("../shared/pcaps is missing: the corpus tests cannot run");
    }
    eprintln!("\n*** SKIPPED: ../shared/pcaps not found; corpus tests did not run ***\n");
    None
}

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[derive(Deserialize, Debug)]
pub struct CaptureRef {
    pub file: String,
    pub interface: String,
}

#[derive(Deserialize, Debug)]
pub struct Tx {
    pub id: u64,
    pub capture: CaptureRef,
    pub client: String,
    pub server: String,
    pub method: Option<String>,
    pub uri: Option<String>,
    pub status: Option<u16>,
    pub interim: Vec<u16>,
    pub request_ts: Option<f64>,
    pub response_ts: Option<f64>,
    pub response_end_ts: Option<f64>,
    pub incomplete: bool,
}

#[derive(Deserialize, Debug)]
pub struct Doc {
    pub transactions: Vec<Tx>,
    pub stats: serde_json::Map<String, serde_json::Value>,
    pub warnings: Vec<serde_json::Value>,
    pub vrrp: Vec<serde_json::Value>,
    pub gratuitous_arp: Vec<serde_json::Value>,
    pub vantages: Vec<serde_json::Value>,
}

impl Doc {
    pub fn stat(&self, name: &str) -> u64 {
        self.stats
            .get(name)
            .and_then(|v| v.as_u64())
            .unwrap_or_else(|| panic!("no counter {name}"))
    }
}

/// Runs `flowtrace pcap --format json` on `files`; panics unless it exits 0.
pub fn json_doc(files: &[&Path]) -> Doc {
    let mut args: Vec<std::ffi::OsString> = vec!["pcap".into(), "--format".into(), "json".into()];
    args.extend(files.iter().map(|f| f.as_os_str().to_owned()));
    let run = flowtrace(&args);
    assert_eq!(run.code, 0, "flowtrace failed on {files:?}: {}", run.stderr);
    serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("bad JSON for {files:?}: {e}"))
}

/// Runs flowtrace with the repository as working directory (so paths in output are
/// relative and golden files are stable).
pub fn flowtrace_in_repo<I, S>(args: I) -> Run
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    flowtrace_in_repo_with(args, &[])
}

/// [`flowtrace_in_repo`] with `vars` set in its environment.
pub fn flowtrace_in_repo_with<I, S>(args: I, vars: &[(&str, &str)]) -> Run
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let out: Output = Command::new(env!("CARGO_BIN_EXE_flowtrace"))
        // Text shows local times: goldens are written in UTC wherever tests run.
        .env("TZ", "UTC")
        .envs(vars.iter().copied())
        .args(args)
        .current_dir(repo())
        .output()
        .expect("run flowtrace");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Compares `actual` with the golden file `fixtures/<name>`; `FLOWTRACE_BLESS=1`
/// rewrites it instead.
pub fn golden(name: &str, actual: &str) {
    let path = repo().join("fixtures").join(name);
    if std::env::var_os("FLOWTRACE_BLESS").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (run with FLOWTRACE_BLESS=1 to create it)",
            path.display()
        )
    });
    if expected != actual {
        let diff: Vec<String> = expected
            .lines()
            .zip(actual.lines())
            .enumerate()
            .filter(|(_, (a, b))| a != b)
            .take(5)
            .map(|(i, (a, b))| format!("line {}:\n  golden: {a}\n  actual: {b}", i + 1))
            .collect();
        panic!(
            "{} differs from the output ({} vs {} lines):\n{}\n(FLOWTRACE_BLESS=1 rewrites it; review the diff)",
            path.display(),
            expected.lines().count(),
            actual.lines().count(),
            diff.join("\n")
        );
    }
}

/// A fresh temporary directory under target/.
pub fn temp_dir(name: &str) -> PathBuf {
    let d = repo().join("target").join("test-tmp").join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Copies a (possibly gzip-compressed) little-endian pcap to `dst` with every
/// timestamp moved by `shift_ns`: a capture taken on a host whose clock is off.
pub fn shift_pcap(src: &Path, dst: &Path, shift_ns: i64) {
    use std::io::Read;
    let raw = std::fs::read(src).unwrap();
    let mut bytes = Vec::new();
    if raw.starts_with(&[0x1f, 0x8b]) {
        flate2::read::MultiGzDecoder::new(&raw[..])
            .read_to_end(&mut bytes)
            .unwrap();
    } else {
        bytes = raw;
    }
    let magic = u32::from_le_bytes(bytes[0..4].try_into().unwrap());
    let unit: i64 = match magic {
        0xa1b2_c3d4 => 1000,
        0xa1b2_3c4d => 1,
        m => panic!("shift_pcap: unsupported magic {m:08x}"),
    };
    let per_sec = 1_000_000_000 / unit;
    let mut at = 24;
    while at + 16 <= bytes.len() {
        let word = |b: &[u8], o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap());
        let (sec, frac, caplen) = (word(&bytes, at), word(&bytes, at + 4), word(&bytes, at + 8));
        let total = i64::from(sec) * 1_000_000_000 + i64::from(frac) * unit + shift_ns;
        let (s, f) = (
            total.div_euclid(1_000_000_000),
            total.rem_euclid(1_000_000_000) / unit,
        );
        assert!(f < per_sec);
        bytes[at..at + 4].copy_from_slice(&(s as u32).to_le_bytes());
        bytes[at + 4..at + 8].copy_from_slice(&(f as u32).to_le_bytes());
        at += 16 + caplen as usize;
    }
    std::fs::write(dst, bytes).unwrap();
}

/// The four captures of a shipped lab scenario, relative to the repository.
pub fn scenario_captures(name: &str) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(repo().join("captures").join(name))
        .unwrap_or_else(|e| panic!("captures/{name}: {e}"))
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".pcap.gz"))
        .map(|p| p.strip_prefix(repo()).unwrap().display().to_string())
        .collect();
    v.sort();
    assert_eq!(
        v.len(),
        4,
        "{name}: expected client, router, A and B captures"
    );
    v
}

/// Writes a little-endian pcap with one TCP connection (10.0.0.1:40000 to
/// 10.0.0.2:80) carrying `request` and `response`: wire text a test chooses.
pub fn exchange_pcap(path: &Path, request: &[u8], response: &[u8]) {
    let mut out: Vec<u8> = vec![
        0xd4, 0xc3, 0xb2, 0xa1, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0, 0, 1, 0, 0, 0,
    ];
    let (c, s) = ([10, 0, 0, 1], [10, 0, 0, 2]);
    let mut t = 1_700_000_000_000_000u64;
    let mut push = |from_client: bool, seq: u32, ack: u32, flags: &str, payload: &[u8]| {
        let (src, dst, sp, dp) = if from_client {
            (c, s, 40000, 80)
        } else {
            (s, c, 80, 40000)
        };
        let mut b = etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .ipv4(src, dst, 64)
            .tcp(sp, dp, seq, 1000);
        for f in flags.chars() {
            b = match f {
                'S' => b.syn(),
                'P' => b.psh(),
                'A' => b.ack(ack),
                'F' => b.fin(),
                _ => b,
            };
        }
        let mut pkt = Vec::new();
        b.write(&mut pkt, payload).unwrap();
        t += 100;
        for v in [
            (t / 1_000_000) as u32,
            (t % 1_000_000) as u32,
            pkt.len() as u32,
            pkt.len() as u32,
        ] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.extend_from_slice(&pkt);
    };
    push(true, 100, 0, "S", b"");
    push(false, 500, 101, "SA", b"");
    push(true, 101, 501, "A", b"");
    push(true, 101, 501, "PA", request);
    let after_req = 101 + request.len() as u32;
    push(false, 501, after_req, "PA", response);
    push(true, after_req, 501 + response.len() as u32, "FA", b"");
    push(false, 501 + response.len() as u32, after_req + 1, "FA", b"");
    std::fs::write(path, out).unwrap();
}

/// Debian's Chromium, or `None` (said on stderr, naming `what` was not tested) when it
/// is missing. A missing Chromium fails the test in CI and when
/// FLOWTRACE_REQUIRE_CHROMIUM is set (scripts/test.sh as root): scripts/setup.sh
/// installs it there.
pub fn chromium(what: &str) -> Option<PathBuf> {
    let found = ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists());
    if found.is_none() {
        if std::env::var_os("CI").is_some()
            || std::env::var_os("FLOWTRACE_REQUIRE_CHROMIUM").is_some()
        {
            panic!("chromium is missing: scripts/setup.sh installs it");
        }
        eprintln!("\n*** SKIPPED: chromium not installed; {what} ***\n");
    }
    found
}
