//! `flowtrace agent` and `flowtrace collect` through a real nats-server (issue 15).
//!
//! Each test starts its own nats-server with JetStream on a free loopback port and a
//! temporary store, and stops it by its PID. Without nats-server the tests say so
//! and pass, unless FLOWTRACE_REQUIRE_NATS=1 (scripts/test.sh sets it as root, where
//! scripts/setup.sh installs it).

use crate::remote::{assert_same_paths, paths_of_jsonl, pcap_paths};
use crate::util::repo;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

struct NatsServer {
    child: Child,
    port: u16,
    store: PathBuf,
}

fn nats_server_bin() -> Option<PathBuf> {
    for dir in ["/usr/sbin", "/usr/bin", "/usr/local/bin", "/usr/local/sbin"] {
        let p = Path::new(dir).join("nats-server");
        if p.is_file() {
            return Some(p);
        }
    }
    None
}

/// nats-server, or `None` (with a loud message) when it is not installed and not
/// required.
fn require_nats() -> Option<PathBuf> {
    match nats_server_bin() {
        Some(p) => Some(p),
        None if std::env::var("FLOWTRACE_REQUIRE_NATS").as_deref() == Ok("1") => {
            panic!("nats-server is not installed and FLOWTRACE_REQUIRE_NATS=1 (scripts/setup.sh installs it)")
        }
        None => {
            eprintln!(
                "\n*** SKIPPED: nats-server not found (apt-get install nats-server); agent/collect tests did not run ***\n"
            );
            None
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl NatsServer {
    fn start(bin: &Path, store: &Path, port: u16) -> NatsServer {
        let child = Command::new(bin)
            .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
            .arg(store)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nats-server");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "nats-server did not listen on {port}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        NatsServer {
            child,
            port,
            store: store.to_path_buf(),
        }
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Kills it (by its PID) and starts it again on the same port and store.
    fn restart(&mut self, bin: &Path) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
        let again = NatsServer::start(bin, &self.store, self.port);
        let old = std::mem::replace(self, again);
        std::mem::forget(old);
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("flowtrace-nats-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn flowtrace_cmd() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_flowtrace"));
    c.env("TZ", "UTC").env_remove("FLOWTRACE_NATS_CREDS");
    c
}

fn run(c: &mut Command) -> Output {
    let out = c.output().expect("run flowtrace");
    assert!(
        out.status.success(),
        "{:?} failed: {}",
        c,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn agent_read(url: &str, host: &str, capture: &Path) -> Output {
    run(flowtrace_cmd()
        .args(["agent", "--nats", url, "--host", host, "--read"])
        .arg(capture))
}

fn collect_args(url: &str, out: &Path) -> Vec<String> {
    vec![
        "collect".into(),
        "--nats".into(),
        url.into(),
        "--format".into(),
        "jsonl".into(),
        "-o".into(),
        out.display().to_string(),
        "--exit-when-idle".into(),
        "1".into(),
    ]
}

fn failover() -> (PathBuf, PathBuf) {
    let dir = repo().join("captures/failover");
    (dir.join("A.pcap.gz"), dir.join("B.pcap.gz"))
}

/// Two agents replay the two servers' captures; the collector writes exactly the
/// paths `flowtrace pcap --paths` gives for both files, and replaying a capture again
/// adds nothing (the stream drops the re-sent message ids).
#[test]
fn two_agents_and_a_collector_give_the_paths_of_both_captures() {
    let Some(bin) = require_nats() else { return };
    let dir = temp_dir("paths");
    let server = NatsServer::start(&bin, &dir.join("js"), free_port());
    let (a, b) = failover();
    agent_read(&server.url(), "A", &a);
    agent_read(&server.url(), "B", &b);
    agent_read(&server.url(), "A", &a);
    let out = dir.join("paths.jsonl");
    let c = run(flowtrace_cmd().args(collect_args(&server.url(), &out)));
    let stderr = String::from_utf8_lossy(&c.stderr);
    let got = paths_of_jsonl(&std::fs::read_to_string(&out).unwrap());
    let want = pcap_paths(&[a, b]);
    assert_eq!(got.len(), want.len(), "{stderr}");
    assert_same_paths(&got, &want);
    assert!(stderr.contains("0 redelivered"), "{stderr}");
    assert!(
        !dir.join("paths.jsonl.state").exists(),
        "a finished run leaves no checkpoint"
    );
    drop(server);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Waits until `path` exists (the collector's first checkpoint).
fn wait_for(path: &Path, secs: u64) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !path.exists() {
        assert!(
            Instant::now() < deadline,
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The collector killed with SIGKILL after it has written paths, then started again:
/// every path is in the output exactly once. The nats-server killed and restarted
/// under a running collector: the collector reconnects and finishes the same.
#[test]
fn restarts_of_the_collector_and_the_server_lose_and_repeat_nothing() {
    let Some(bin) = require_nats() else { return };
    let dir = temp_dir("restart");
    let mut server = NatsServer::start(&bin, &dir.join("js"), free_port());
    let (a, b) = failover();
    agent_read(&server.url(), "A", &a);
    agent_read(&server.url(), "B", &b);
    let want = pcap_paths(&[a.clone(), b.clone()]);

    // kill -9 the collector once it has checkpointed some paths.
    let out = dir.join("paths.jsonl");
    let state = dir.join("paths.jsonl.state");
    let mut args = collect_args(&server.url(), &out);
    *args.last_mut().unwrap() = "30".into();
    let mut first = flowtrace_cmd()
        .args(&args)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for(&state, 20);
    first.kill().unwrap();
    first.wait().unwrap();
    // The last line may be cut (killed mid-write, past the checkpoint): the restart
    // cuts it off.
    let text = std::fs::read_to_string(&out).unwrap();
    let whole: String = text
        .split_inclusive('\n')
        .filter(|l| l.ends_with('\n'))
        .collect();
    let before = paths_of_jsonl(&whole).len();
    assert!(
        before > 0 && before < want.len(),
        "killed midway: {before} of {} paths written",
        want.len()
    );
    run(flowtrace_cmd().args(collect_args(&server.url(), &out)));
    let got = paths_of_jsonl(&std::fs::read_to_string(&out).unwrap());
    assert_eq!(got.len(), want.len());
    assert_same_paths(&got, &want);

    // Restart nats-server under a running collector.
    let out2 = dir.join("paths2.jsonl");
    let mut args = collect_args(&server.url(), &out2);
    *args.last_mut().unwrap() = "4".into();
    let collector = flowtrace_cmd()
        .args(&args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for(&dir.join("paths2.jsonl.state"), 20);
    server.restart(&bin);
    // An agent replaying again after the restart: its envelopes are duplicates.
    agent_read(&server.url(), "B", &b);
    let done = collector.wait_with_output().unwrap();
    assert!(
        done.status.success(),
        "{}",
        String::from_utf8_lossy(&done.stderr)
    );
    let got = paths_of_jsonl(&std::fs::read_to_string(&out2).unwrap());
    assert_eq!(
        got.len(),
        want.len(),
        "{}",
        String::from_utf8_lossy(&done.stderr)
    );
    assert_same_paths(&got, &want);
    drop(server);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Credentials never go on the command line: a URL with a password is refused
/// before anything connects, and the password is not echoed.
#[test]
fn a_password_in_the_url_is_refused() {
    let out = flowtrace_cmd()
        .args([
            "collect",
            "--nats",
            "nats://user:hunter2@127.0.0.1:1",
            "--exit-when-idle",
            "1",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--creds"), "{err}");
    assert!(!err.contains("hunter2"), "{err}");
    let out = flowtrace_cmd()
        .args([
            "agent",
            "--nats",
            "nats://127.0.0.1:1",
            "--host",
            "a.b",
            "--read",
            "x",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--host"));
}
