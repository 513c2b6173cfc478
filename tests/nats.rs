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

/// The count in the collector's last line: "(N exchanges;".
fn exchanges_of(stderr: &str) -> u64 {
    let at = stderr.rfind(" exchanges;").expect("the collector's counts");
    let start = stderr[..at].rfind('(').expect("(") + 1;
    stderr[start..at].parse().expect("a count")
}

/// Waits until `file` holds `text` (a running process's stderr).
fn wait_for_text(file: &Path, text: &str, secs: u64) -> String {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let got = std::fs::read_to_string(file).unwrap_or_default();
        if got.contains(text) {
            return got;
        }
        assert!(Instant::now() < deadline, "never said {text:?}: {got}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Issue 15: a host whose agent starts after the collector is merged without a
/// restart. The collector starts on an empty stream, A announces itself and sends,
/// then B: B's records are taken (none from an unknown host), every exchange of both
/// reaches the engine (as many as a collector started after both counts), and paths
/// hold B's capture points.
#[test]
fn a_host_that_starts_after_the_collector_is_merged() {
    let Some(bin) = require_nats() else { return };
    let dir = temp_dir("join");
    let server = NatsServer::start(&bin, &dir.join("js"), free_port());
    let (a, b) = failover();
    let out = dir.join("paths.jsonl");
    let err = dir.join("collect.err");
    let mut args = collect_args(&server.url(), &out);
    *args.last_mut().unwrap() = "5".into();
    let collector = flowtrace_cmd()
        .args(&args)
        .stderr(std::fs::File::create(&err).unwrap())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    agent_read(&server.url(), "A", &a);
    wait_for_text(&err, "collecting from 1 host(s): A", 20);
    agent_read(&server.url(), "B", &b);
    let done = collector.wait_with_output().unwrap();
    let stderr = std::fs::read_to_string(&err).unwrap();
    assert!(done.status.success(), "{stderr}");
    assert!(stderr.contains("host B joined"), "{stderr}");
    assert!(stderr.contains(" 0 from unknown hosts"), "{stderr}");
    assert!(
        stderr.contains("1 host(s) joined after the start"),
        "{stderr}"
    );
    let text = std::fs::read_to_string(&out).unwrap();
    let paths = paths_of_jsonl(&text);
    let on_b = paths
        .iter()
        .filter(|p| p.to_string().contains(r#""file":"B""#))
        .count();
    assert!(on_b > 0, "no path holds a capture point of B");
    // A collector started after both agents knows both from the start.
    let again = run(flowtrace_cmd().args(collect_args(&server.url(), &dir.join("all.jsonl"))));
    let all = String::from_utf8_lossy(&again.stderr);
    assert!(all.contains("collecting from 2 host(s): A, B"), "{all}");
    assert_eq!(exchanges_of(&stderr), exchanges_of(&all), "{stderr}\n{all}");
    drop(server);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Certificates for a TLS nats-server: a CA and a server certificate for 127.0.0.1
/// signed by it, made with openssl in `dir`. `None` (loudly) without openssl.
fn make_certs(dir: &Path) -> Option<(PathBuf, PathBuf, PathBuf)> {
    if Command::new("openssl").arg("version").output().is_err() {
        if std::env::var("FLOWTRACE_REQUIRE_NATS").as_deref() == Ok("1") {
            panic!("openssl is not installed and FLOWTRACE_REQUIRE_NATS=1");
        }
        eprintln!(
            "\n*** SKIPPED: openssl not found; the TLS and credentials test did not run ***\n"
        );
        return None;
    }
    let ssl = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    ssl(&[
        &["req", "-x509"][..],
        &ec,
        &[
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "1",
            "-subj",
            "/CN=flowtrace test CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
    ]
    .concat());
    ssl(&[
        &["req"][..],
        &ec,
        &[
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=127.0.0.1",
        ],
    ]
    .concat());
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    ssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "1",
        "-extfile",
        "server.ext",
    ]);
    Some((
        dir.join("ca.pem"),
        dir.join("server.pem"),
        dir.join("server.key"),
    ))
}

/// Issue 15: `--creds` and TLS against a nats-server that requires both (an nkey
/// user, a certificate from a private CA made for the test). With the seed file and
/// `--tls-ca` the agents and the collector give the paths of both captures; without
/// the seed, with another user's seed, or without the CA the agent exits 2 saying
/// why; the seed is never in argv (`/proc/PID/cmdline` of a running collector) nor in
/// anything printed.
#[test]
fn creds_and_tls_against_a_server_that_requires_them() {
    let Some(bin) = require_nats() else { return };
    let dir = temp_dir("auth");
    let Some((ca, cert, key)) = make_certs(&dir) else {
        return;
    };
    let user = nkeys::KeyPair::new_user();
    let seed = user.seed().unwrap();
    let seed_file = dir.join("agent.nk");
    std::fs::write(&seed_file, format!("{seed}\n")).unwrap();
    let other_file = dir.join("other.nk");
    std::fs::write(&other_file, nkeys::KeyPair::new_user().seed().unwrap()).unwrap();
    let port = free_port();
    let conf = dir.join("nats.conf");
    std::fs::write(
        &conf,
        format!(
            "listen: 127.0.0.1:{port}\njetstream {{ store_dir: {:?} }}\n\
             tls {{ cert_file: {:?}, key_file: {:?} }}\n\
             authorization {{ users = [ {{ nkey: {:?} }} ] }}\n",
            dir.join("js"),
            cert,
            key,
            user.public_key()
        ),
    )
    .unwrap();
    let child = Command::new(&bin)
        .arg("-c")
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nats-server did not listen");
        std::thread::sleep(Duration::from_millis(20));
    }
    let server = NatsServer {
        child,
        port,
        store: dir.join("js"),
    };
    let url = format!("tls://127.0.0.1:{port}");
    let (a, b) = failover();
    let agent = |host: &str, capture: &Path, creds: Option<&Path>, with_ca: bool| {
        let mut c = flowtrace_cmd();
        c.args(["agent", "--nats", &url, "--host", host, "--read"])
            .arg(capture);
        if let Some(f) = creds {
            c.arg("--creds").arg(f);
        }
        if with_ca {
            c.arg("--tls-ca").arg(&ca);
        }
        c.output().unwrap()
    };
    let refused = |out: &Output, why: &str| {
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(err.contains(why), "{why:?} not in: {err}");
        assert!(!err.contains(&seed) && !err.contains(&seed[..20]), "{err}");
    };
    // No credentials, another user's, no CA: refused, each saying why.
    let out = agent("A", &a, None, true);
    refused(&out, "authorization violation");
    refused(&out, "--creds");
    refused(
        &agent("A", &a, Some(&other_file), true),
        "authorization violation",
    );
    refused(&agent("A", &a, Some(&seed_file), false), "--tls-ca");
    for (host, capture) in [("A", &a), ("B", &b)] {
        let out = agent(host, capture, Some(&seed_file), true);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{err}");
        assert!(!err.contains(&seed[..20]), "{err}");
    }
    // The collector with the seed from the environment; its argv holds no secret.
    let out = dir.join("paths.jsonl");
    let mut args = collect_args(&url, &out);
    args.push("--tls-ca".into());
    args.push(ca.display().to_string());
    let collector = flowtrace_cmd()
        .args(&args)
        .env("FLOWTRACE_NATS_CREDS", &seed_file)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", collector.id())).unwrap();
    let done = collector.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&done.stderr);
    assert!(done.status.success(), "{err}");
    assert!(!String::from_utf8_lossy(&cmdline).contains(&seed[..20]));
    assert!(!err.contains(&seed[..20]), "{err}");
    let got = paths_of_jsonl(&std::fs::read_to_string(&out).unwrap());
    let want = pcap_paths(&[a, b]);
    assert_eq!(got.len(), want.len(), "{err}");
    assert_same_paths(&got, &want);
    drop(server);
    std::fs::remove_dir_all(&dir).unwrap();
}
