//! Command-line behaviour: formats, stdin, gzip, several files, exit codes, golden
//! outputs of the shipped captures.

use crate::util::{
    corpus, flowtrace, flowtrace_in_repo, flowtrace_stdin, golden, json_doc, repo, temp_dir, Doc,
};
use std::fs;
use std::io::Write;
use std::process::{Command, Stdio};

const KEEPALIVE: &str = "captures/synthetic/keepalive.pcap";

#[test]
fn golden_text_and_json_of_shipped_capture() {
    let run = flowtrace_in_repo(["pcap", KEEPALIVE]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    golden("keepalive/transactions.txt", &run.stdout);
    let run = flowtrace_in_repo(["pcap", KEEPALIVE, "--format", "json", "--headers"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    golden("keepalive/transactions.json", &run.stdout);
}

#[test]
fn stdin_equals_file() {
    let path = repo().join(KEEPALIVE);
    let from_file = flowtrace([
        "pcap".as_ref(),
        "--format".as_ref(),
        "jsonl".as_ref(),
        path.as_os_str(),
    ]);
    let out = flowtrace_stdin(
        ["pcap", "--format", "jsonl", "-"],
        &fs::read(&path).unwrap(),
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let strip = |s: &str| s.replace(path.to_str().unwrap(), "-");
    assert_eq!(strip(&from_file.stdout), out.stdout);
}

#[test]
fn gzip_is_detected_by_content() {
    let dir = temp_dir("gzip");
    let gz = dir.join("keepalive.cap"); // no telling extension
    let mut enc =
        flate2::write::GzEncoder::new(fs::File::create(&gz).unwrap(), flate2::Compression::fast());
    enc.write_all(&fs::read(repo().join(KEEPALIVE)).unwrap())
        .unwrap();
    enc.finish().unwrap();
    let plain = json_doc(&[&repo().join(KEEPALIVE)]);
    let zipped = json_doc(&[&gz]);
    assert_eq!(plain.transactions.len(), zipped.transactions.len());
    assert!(plain.transactions.len() > 20);
    assert_eq!(plain.stat("frames"), zipped.stat("frames"));
}

#[test]
fn jsonl_lines_then_summary() {
    let run = flowtrace_in_repo(["pcap", KEEPALIVE, "--format", "jsonl"]);
    let lines: Vec<serde_json::Value> = run
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let (last, txs) = lines.split_last().unwrap();
    assert_eq!(last["type"], "summary");
    assert!(last["stats"]["frames"].as_u64().unwrap() > 100);
    assert!(txs.iter().all(|t| t["type"] == "transaction"));
    assert_eq!(
        txs.len() as u64,
        last["stats"]["http_transactions"].as_u64().unwrap()
    );
}

#[test]
fn several_files_merge_in_time_order() {
    let Some(root) = corpus() else { return };
    let a = root.join("http/get.pcap");
    let b = root.join("http/post.pcap");
    let both = json_doc(&[&a, &b]);
    let (one, two) = (json_doc(&[&a]), json_doc(&[&b]));
    assert_eq!(
        both.transactions.len(),
        one.transactions.len() + two.transactions.len()
    );
    let files: std::collections::BTreeSet<_> = both
        .transactions
        .iter()
        .map(|t| t.capture.file.clone())
        .collect();
    assert_eq!(files.len(), 2);
    assert_eq!(both.stat("files"), 2);
}

#[test]
fn truncated_file_keeps_what_precedes_the_cut() {
    let dir = temp_dir("truncated");
    let bytes = fs::read(repo().join(KEEPALIVE)).unwrap();
    let cut = dir.join("cut.pcap");
    fs::write(&cut, &bytes[..bytes.len() / 2 + 7]).unwrap();
    let run = flowtrace([
        "pcap".as_ref(),
        "--format".as_ref(),
        "json".as_ref(),
        cut.as_os_str(),
    ]);
    assert_eq!(run.code, 0);
    assert!(
        run.stderr.contains("cut off in the middle of a record"),
        "{}",
        run.stderr
    );
    let doc: Doc = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(doc.warnings.len(), 1);
    assert!(!doc.transactions.is_empty());
}

#[test]
fn errors_exit_2_with_one_line() {
    let dir = temp_dir("errors");
    let empty = dir.join("empty.pcap");
    fs::write(&empty, b"").unwrap();
    let text = dir.join("notes.txt");
    fs::write(&text, b"hello, this is not a capture").unwrap();
    // Issue 17: a pcapng section header cut right after its byte-order magic (12
    // bytes) used to panic reading the version that follows.
    let cut_shb = dir.join("cut-shb.pcapng");
    fs::write(
        &cut_shb,
        [
            0x0a, 0x0d, 0x0d, 0x0a, 0x1c, 0, 0, 0, 0x4d, 0x3c, 0x2b, 0x1a,
        ],
    )
    .unwrap();
    for (path, words) in [
        (dir.join("missing.pcap"), "cannot read"),
        (empty, "ends inside the capture file header"),
        (text, "not a pcap or pcapng file"),
        (cut_shb, "ends inside the capture file header"),
    ] {
        let run = flowtrace(["pcap".as_ref(), path.as_os_str()]);
        assert_eq!(run.code, 2, "{}", path.display());
        assert!(
            run.stderr.contains(words),
            "{}: {}",
            path.display(),
            run.stderr
        );
        assert!(run
            .stderr
            .contains(path.file_name().unwrap().to_str().unwrap()));
        assert_eq!(run.stderr.lines().count(), 1);
        // Issue 14: the cause is printed once ("(os error 2)" used to come twice).
        assert!(
            run.stderr.matches("(os error").count() <= 1,
            "{}",
            run.stderr
        );
    }
    let run = flowtrace(["pcap", "--idle-timeout", "-1", "x"]);
    assert_eq!(run.code, 2);
}

#[test]
fn links_sidecar_names_sll2_interfaces() {
    let Some(root) = corpus() else { return };
    let dir = temp_dir("links");
    let cap = dir.join("any.pcap");
    fs::copy(root.join("linktype/simple_http_sll2.pcap"), &cap).unwrap();
    let without = json_doc(&[&cap]);
    assert_eq!(without.transactions[0].capture.interface, "ifindex 1");
    fs::write(
        dir.join("any.links.json"),
        r#"[{"ifindex":1,"ifname":"lo","address":"00:00:00:00:00:00","addr_info":[{"local":"127.0.0.1"}]}]"#,
    )
    .unwrap();
    let with = json_doc(&[&cap]);
    assert_eq!(with.transactions[0].capture.interface, "lo");
    let bad = dir.join("bad.json");
    fs::write(&bad, "{}").unwrap();
    let run = flowtrace([
        "pcap".as_ref(),
        "--links".as_ref(),
        bad.as_os_str(),
        cap.as_os_str(),
    ]);
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("ip -j addr"), "{}", run.stderr);
}

#[test]
fn broken_pipe_is_success() {
    let Some(root) = corpus() else { return };
    let mut child = Command::new(env!("CARGO_BIN_EXE_flowtrace"))
        .args(["pcap", "--format", "jsonl"])
        .arg(root.join("http/http-packets2.pcap"))
        .arg(repo().join(KEEPALIVE))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[cfg(target_os = "linux")]
mod live {
    use crate::util::flowtrace;
    use std::process::Command;

    #[test]
    fn missing_interface_is_a_clear_error() {
        let run = flowtrace([
            "live",
            "-i",
            "nosuchif0",
            "--duration",
            "1",
            "--no-progress",
        ]);
        assert_eq!(run.code, 2, "{}", run.stderr);
        assert!(
            run.stderr.contains("cannot capture on nosuchif0"),
            "{}",
            run.stderr
        );
        assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);
    }

    fn is_root() -> bool {
        Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| o.stdout.starts_with(b"0\n"))
    }

    /// Without privileges the message says what to grant; with CAP_NET_RAW and
    /// CAP_NET_ADMIN on the binary an unprivileged user captures.
    #[test]
    fn capabilities_instead_of_root() {
        if !is_root()
            || Command::new("setpriv").arg("--help").output().is_err()
            || Command::new("setcap").arg("-h").output().is_err()
        {
            eprintln!("\n*** SKIPPED: needs root, setpriv and setcap ***\n");
            return;
        }
        // Under /tmp, not the checkout: the unprivileged user must be able to reach it
        // (a checkout under /root is not).
        let dir = std::env::temp_dir().join(format!("flowtrace-caps-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let bin = dir.join("flowtrace");
        std::fs::copy(env!("CARGO_BIN_EXE_flowtrace"), &bin).unwrap();
        let as_nobody = |extra: &[&str]| {
            Command::new("setpriv")
                .args([
                    "--reuid=65534",
                    "--regid=65534",
                    "--clear-groups",
                    "--inh-caps=-all",
                ])
                .arg(&bin)
                .args(["live", "-i", "lo", "--duration", "1", "--no-progress"])
                .args(extra)
                .output()
                .unwrap()
        };
        let out = as_nobody(&[]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(
            stderr.contains("CAP_NET_RAW") && stderr.contains("setcap"),
            "{stderr}"
        );
        let set = Command::new("setcap")
            .arg("cap_net_raw,cap_net_admin=eip")
            .arg(&bin)
            .output()
            .unwrap();
        if !set.status.success() {
            eprintln!(
                "\n*** SKIPPED: setcap failed here: {} ***\n",
                String::from_utf8_lossy(&set.stderr)
            );
            return;
        }
        let out = as_nobody(&[]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stdout).contains("interface lo:"));
    }
}

/// Issue 17: `flowtrace live -Z USER` opens the interfaces as root, then runs as
/// USER: its ids (all four: real, effective, saved, file system) and groups are
/// USER's while it captures, and the -w file is created as USER (in a directory
/// only root may write to, it cannot be).
#[cfg(all(target_os = "linux", feature = "live"))]
#[test]
fn live_drops_privileges_after_opening() {
    use std::process::{Command, Stdio};
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0\n"));
    let nobody = Command::new("id").args(["-u", "nobody"]).output();
    if !root || !nobody.is_ok_and(|o| o.stdout.starts_with(b"65534\n")) {
        eprintln!("\n*** SKIPPED: -Z needs root and the user nobody (65534) ***\n");
        return;
    }
    let dir = std::env::temp_dir().join(format!("flowtrace-dropz-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(dir.join("mine")).unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        fs::set_permissions(dir.join("mine"), fs::Permissions::from_mode(0o755)).unwrap();
        std::os::unix::fs::chown(dir.join("mine"), Some(65534), Some(65534)).unwrap();
    }
    let saved = dir.join("mine").join("run.pcapng");
    let child = Command::new(env!("CARGO_BIN_EXE_flowtrace"))
        .args([
            "live",
            "-i",
            "lo",
            "-Z",
            "nobody",
            "--duration",
            "2",
            "--no-progress",
            "-w",
        ])
        .arg(&saved)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(800));
    let status = fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .map(|l| {
                l[name.len()..]
                    .split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .unwrap_or_default()
    };
    assert_eq!(field("Uid:"), "65534 65534 65534 65534", "{status}");
    assert_eq!(field("Gid:"), "65534 65534 65534 65534", "{status}");
    assert_eq!(field("Groups:"), "65534", "{status}");
    assert_eq!(field("CapEff:"), "0000000000000000", "{status}");
    assert!(
        stderr.contains("running as nobody (uid 65534, gid 65534)"),
        "{stderr}"
    );
    {
        use std::os::unix::fs::MetadataExt;
        assert_eq!(fs::metadata(&saved).unwrap().uid(), 65534);
    }
    // Where only root may write, the -w file cannot be created once root is gone.
    let run = flowtrace([
        "live".as_ref(),
        "-i".as_ref(),
        "lo".as_ref(),
        "-Z".as_ref(),
        "nobody".as_ref(),
        "--duration".as_ref(),
        "1".as_ref(),
        "--no-progress".as_ref(),
        "-w".as_ref(),
        dir.join("denied.pcapng").as_os_str(),
    ]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(!dir.join("denied.pcapng").exists());
    let run = flowtrace([
        "live",
        "-i",
        "lo",
        "-Z",
        "no-such-user-x",
        "--duration",
        "1",
    ]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr
            .contains("cannot drop privileges to user no-such-user-x: no such user"),
        "{}",
        run.stderr
    );
    let _ = fs::remove_dir_all(&dir);
}

/// Issue 14: completions and man pages come from the clap definition.
#[test]
fn completions_and_man_pages() {
    for shell in ["bash", "zsh", "fish"] {
        let run = flowtrace(["completions", shell]);
        assert_eq!(run.code, 0, "{shell}: {}", run.stderr);
        assert!(
            run.stdout.contains("flowtrace") && run.stdout.contains("--paths"),
            "{shell}"
        );
    }
    let run = flowtrace(["man"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stdout.contains(".TH flowtrace 1"), "{}", run.stdout);
    let dir = temp_dir("man");
    let run = flowtrace(["man".as_ref(), "--dir".as_ref(), dir.as_os_str()]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let pcap = fs::read_to_string(dir.join("flowtrace-pcap.1")).unwrap();
    assert!(pcap.contains("\\-\\-svg"), "{pcap}");
    assert!(dir.join("flowtrace.1").exists());
}

/// Issue 14: `live --list` names each interface with its addresses (loopback has
/// 127.0.0.1 on every Linux host), in text and as JSON lines.
#[cfg(feature = "live")]
#[test]
fn live_lists_interfaces_with_addresses() {
    let run = flowtrace(["live", "--list"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stdout
            .lines()
            .any(|l| l.contains(" lo ") && l.contains("127.0.0.1")),
        "{}",
        run.stdout
    );
    let run = flowtrace(["live", "--list", "--format", "jsonl"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let lo = run
        .stdout
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|v| v["ifname"] == "lo")
        .expect("lo listed");
    assert!(lo["addresses"]
        .as_array()
        .unwrap()
        .iter()
        .any(|a| a == "127.0.0.1"));
}

/// Issue 14: text shows wall-clock times (local zone by default, `--utc`), with the
/// date once, and tcpdump's other choices; JSON keeps epoch seconds.
#[test]
fn time_formats() {
    let first_line = |args: &[&str], tz: &str| {
        let out = Command::new(env!("CARGO_BIN_EXE_flowtrace"))
            .args(["pcap", KEEPALIVE])
            .args(args)
            .current_dir(repo())
            .env("TZ", tz)
            .output()
            .unwrap();
        assert!(out.status.success());
        String::from_utf8(out.stdout).unwrap()
    };
    let utc = first_line(&[], "UTC");
    let mut lines = utc.lines();
    let date = lines.next().unwrap();
    assert!(
        date.starts_with("date ") && date.ends_with("(UTC+00:00)"),
        "{date}"
    );
    let clock: String = lines.next().unwrap().chars().take(15).collect();
    assert!(
        clock.as_bytes()[2] == b':' && clock.as_bytes()[8] == b'.',
        "{clock}"
    );
    // The date line is printed once for a capture within one day.
    assert_eq!(utc.matches("date ").count(), 1);
    // Local time: a zone 5:30 east of UTC moves the clock; --utc undoes it.
    let east = first_line(&[], "XST-5:30");
    assert!(
        east.starts_with("date ") && east.contains("(UTC+05:30)"),
        "{east}"
    );
    assert_ne!(east.lines().nth(1), utc.lines().nth(1));
    let forced = first_line(&["--utc"], "XST-5:30");
    assert_eq!(forced.lines().nth(1), utc.lines().nth(1));
    assert!(forced.starts_with("date ") && forced.lines().next().unwrap().ends_with("(UTC)"));
    let epoch = first_line(&["--time-format", "epoch"], "UTC");
    let t: f64 = epoch.split_whitespace().next().unwrap().parse().unwrap();
    assert!(t > 1e9, "{epoch}");
    let iso = first_line(&["--time-format", "iso", "--utc"], "UTC");
    assert!(
        iso.split_whitespace().next().unwrap().ends_with("+00:00"),
        "{iso}"
    );
    let rel = first_line(&["--time-format", "relative"], "UTC");
    assert!(rel.starts_with("+0.000000 "), "{rel}");
    let delta = first_line(&["--time-format", "delta"], "UTC");
    assert!(delta
        .lines()
        .take_while(|l| !l.is_empty())
        .all(|l| l.starts_with('+')));
    // JSON keeps epoch numbers whatever the text shows.
    let json = first_line(&["--format", "json", "--time-format", "iso"], "UTC");
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert!(v["transactions"][0]["request_ts"].as_f64().unwrap() > 1e9);
}

/// `--threads` changes how the work is spread, never the output: every format, with
/// headers, over several captures merged (transaction ids and order included).
#[test]
fn threads_change_nothing_in_the_output() {
    let dir = repo().join("captures/highconc-2000");
    let files: Vec<String> = ["A", "B", "client", "router"]
        .iter()
        .map(|h| dir.join(format!("{h}.pcap.gz")).display().to_string())
        .collect();
    for format in [
        &["--format", "text"][..],
        &["--format", "json"],
        &["--format", "jsonl", "--headers"],
    ] {
        let run = |threads: &str| {
            let mut args = vec!["pcap", "--threads", threads];
            args.extend(files.iter().map(String::as_str));
            args.extend(format);
            let r = flowtrace(args);
            assert_eq!(r.code, 0, "{}", r.stderr);
            r.stdout
        };
        let one = run("1");
        assert!(
            one.lines().count() > 10_000,
            "{format:?}: {} lines",
            one.lines().count()
        );
        assert!(one == run("2"), "{format:?}: --threads 2 differs from 1");
        assert!(one == run("3"), "{format:?}: --threads 3 differs from 1");
    }
    let zero = flowtrace(["pcap", "--threads", "0", files[0].as_str()]);
    assert_eq!(zero.code, 2, "{}", zero.stderr);
}

/// A plain pcap file is read through a memory map; cut shorter while it is read (a
/// `tcpdump -W` ring overwriting its oldest file), the next page read past the new
/// end raises SIGBUS. The run must end with exit code 2 and a message saying so, not
/// die of the signal. The reader is stopped (SIGSTOP) once the file is in its maps,
/// the file truncated, the reader continued; a reader that finished before it was
/// caught (a starved test thread) is tried again.
#[cfg(target_os = "linux")]
#[test]
fn a_mapped_file_cut_short_under_the_reader_is_a_clear_error() {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    use std::time::{Duration, Instant};
    let dir = fs::canonicalize(temp_dir("mapped-cut-short")).unwrap();
    // 120 MB of 60-byte frames (zeros: not IP, so each is a counted skip and the
    // run is only reading): long enough to be caught while it reads.
    let frames = 1_600_000u32;
    let mut bytes = Vec::with_capacity(24 + frames as usize * 76);
    for field in [0xa1b2_c3d4u32, 0x0004_0002, 0, 0, 65_535, 1] {
        bytes.extend_from_slice(&field.to_le_bytes());
    }
    for i in 0..frames {
        for field in [1_700_000_000 + i / 1_000_000, i % 1_000_000, 60, 60] {
            bytes.extend_from_slice(&field.to_le_bytes());
        }
        bytes.extend_from_slice(&[0u8; 60]);
    }
    /// Kills the child if the test fails while it is stopped.
    struct Reaper(Option<std::process::Child>);
    impl Drop for Reaper {
        fn drop(&mut self) {
            if let Some(c) = self.0.as_mut() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
    for attempt in 1..=5 {
        let path = dir.join(format!("ring-file-{attempt}.pcap"));
        fs::write(&path, &bytes).unwrap();
        let mut child = Reaper(Some(
            Command::new(env!("CARGO_BIN_EXE_flowtrace"))
                .args([
                    "pcap",
                    "--format",
                    "jsonl",
                    "-o",
                    "/dev/null",
                    "--threads",
                    "1",
                ])
                .arg(&path)
                .stderr(Stdio::piped())
                .spawn()
                .unwrap(),
        ));
        let id = child.0.as_ref().unwrap().id();
        let pid = Pid::from_raw(id as i32);
        let maps = format!("/proc/{id}/maps");
        let name = path.to_string_lossy().into_owned();
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut caught = false;
        while Instant::now() < deadline {
            if fs::read_to_string(&maps).is_ok_and(|m| m.contains(&name)) {
                kill(pid, Signal::SIGSTOP).unwrap();
                caught = true;
                break;
            }
            if child.0.as_mut().unwrap().try_wait().unwrap().is_some() {
                break;
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        if !caught {
            eprintln!("attempt {attempt}: the reader finished before it was caught");
            let _ = fs::remove_file(&path);
            continue;
        }
        fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(4096)
            .unwrap();
        kill(pid, Signal::SIGCONT).unwrap();
        let out = child.0.take().unwrap().wait_with_output().unwrap();
        let _ = fs::remove_file(&path);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{:?}: {stderr}", out.status);
        assert!(
            stderr.contains("truncated or rewritten while being read"),
            "{stderr}"
        );
        return;
    }
    panic!("the reader finished before it was caught, five times");
}
