use super::*;
use crate::correlate::EngineConfig;
use crate::links::Link;
use proptest::prelude::*;

fn exchange(id: u64, req_first: i64) -> ExchangeRec {
    ExchangeRec {
        id,
        vantage: 0,
        client: "198.18.0.10:40000".parse().unwrap(),
        server: "198.18.1.10:80".parse().unwrap(),
        req_first,
        req_len_ns: 1_000,
        wire_pos: Some((1_000_000, 2_000_000)),
        resp: Some((500_000, 900_000)),
        syn: Some(-300_000),
        index_in_conn: 0,
        conn_seq: [Some(999_999), Some(1_999_999)],
        ttl: Some(64),
        digest: H64(0x0123_4567_89ab_cdef),
        msg: Some(MsgRec {
            digest: H64(0x0123_4567_89ab_cdef),
            method: "GET".into(),
            uri: "/api/orders?id=7".into(),
            uri_hash: H64(u64::MAX),
            req_pairs: vec![PairRec(H64(1), H64(2), true)],
            xff: Some(vec!["198.18.0.10".parse().unwrap()]),
            real_ip: Some(None),
            resp: Some(RespRec {
                status: 200,
                body_bytes: 512,
                pairs: vec![PairRec(H64(3), H64(4), true)],
                addrs: vec![(
                    PairRec(H64(5), H64(6), true),
                    "10.0.0.3:8888".parse().unwrap(),
                )],
                backend_server: true,
                server: Some("nginx".into()),
                kong: false,
                says_forwarded: true,
            }),
        }),
        segments: vec![SegmentRec {
            dt: -300_000,
            src_mac: Some([2, 0, 0, 0, 0, 1]),
            dst_mac: None,
            src: "198.18.0.10:40000".parse().unwrap(),
            dst: "198.18.1.10:80".parse().unwrap(),
            flags: 0x02,
            seq: 999_999,
            ack: 0,
            len: 0,
            first_line: None,
        }],
    }
}

fn envelope(host: &str, seq: u64, now: i64, items: Vec<Item>, last: bool) -> Envelope {
    Envelope {
        version: RECORD_VERSION,
        host: host.into(),
        run: 7,
        seq,
        sent_wall: now,
        now,
        pending: None,
        last,
        items,
    }
}

fn vantage_item() -> Item {
    Item::Vantage(VantageRec {
        id: 0,
        interface: "eth0".into(),
        ifindex: None,
    })
}

/// Every kind of item survives encoding and decoding unchanged.
#[test]
fn envelope_round_trips() {
    let links = HostLinks {
        path: "live".into(),
        links: vec![Link {
            ifindex: 2,
            ifname: "eth0".into(),
            mac: Some("02:00:00:00:00:01".into()),
            master: None,
            addresses: vec!["198.18.1.10".parse().unwrap()],
        }],
    };
    let env = Envelope {
        pending: Some(1_700_000_000_000_000_000),
        ..envelope(
            "serverA",
            3,
            1_700_000_000_123_456_789,
            vec![
                Item::Hello(Hello {
                    agent_version: "0.1.0".into(),
                    links,
                }),
                vantage_item(),
                Item::HeaderNames(vec![(H64(1), "X-Request-Id".into())]),
                Item::Vrrp(vec![(
                    0,
                    VrrpRec {
                        vrid: 51,
                        source: "198.18.1.10".parse().unwrap(),
                        priority: 150,
                        addresses: vec!["198.18.1.100".parse().unwrap()],
                        first_ts: 1,
                        last_ts: 2,
                        adverts: 3,
                    },
                )]),
                Item::Garp(GarpRec {
                    ts: 5,
                    vantage: 0,
                    ip: "198.18.1.100".parse().unwrap(),
                    mac: "02:00:00:00:00:01".into(),
                }),
                Item::Exchange(exchange(1, 1_700_000_000_100_000_000)),
                Item::Dropped(4),
            ],
            false,
        )
    };
    let bytes = encode(&env).unwrap();
    assert_eq!(decode(&bytes).unwrap(), env);
}

/// An exchange costs a few hundred bytes, not kilobytes: hashes are 8 raw bytes and
/// later times are small differences.
#[test]
fn an_exchange_is_compact() {
    let mut x = exchange(1, 1_700_000_000_100_000_000);
    x.segments.clear();
    let bytes = encode(&envelope("A", 0, 0, vec![Item::Exchange(x)], false)).unwrap();
    assert!(bytes.len() < 200, "{} bytes", bytes.len());
}

/// A record of another layout is refused by version, not misread.
#[test]
fn other_versions_are_refused() {
    let mut env = envelope("A", 0, 0, Vec::new(), false);
    env.version = RECORD_VERSION + 1;
    let bytes = encode(&env).unwrap();
    match decode(&bytes) {
        Err(RemoteError::Version { found }) => assert_eq!(found, RECORD_VERSION + 1),
        other => panic!("expected a version error, got {other:?}"),
    }
}

/// Cut or padded records are errors naming their length.
#[test]
fn truncated_and_padded_records_are_errors() {
    let bytes = encode(&envelope("A", 0, 0, vec![vantage_item()], false)).unwrap();
    for cut in 0..bytes.len() {
        assert!(decode(&bytes[..cut]).is_err(), "cut at {cut}");
    }
    let mut padded = bytes.clone();
    padded.push(0);
    let e = decode(&padded).unwrap_err().to_string();
    assert!(e.contains("1 bytes after the record"), "{e}");
}

proptest! {
    /// Arbitrary bytes never panic the decoder.
    #[test]
    fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = decode(&bytes);
    }
}

fn engine(hosts: usize) -> Engine {
    let files: Vec<String> = (0..hosts).map(|i| format!("h{i}")).collect();
    Engine::new(EngineConfig::default(), &files, &vec![None; hosts])
}

/// Envelopes are released only behind the slowest host's watermark, and a
/// redelivered envelope is skipped.
#[test]
fn merger_waits_for_the_slowest_host_and_skips_redeliveries() {
    let hosts = vec![("A".to_string(), None), ("B".to_string(), None)];
    let mut m = Merger::new(&hosts, 5_000_000_000);
    let mut e = engine(2);
    let mut paths = Vec::new();
    let t0 = 1_700_000_000_000_000_000;
    assert!(m.push(
        envelope(
            "A",
            0,
            t0 + 10_000_000,
            vec![vantage_item(), Item::Exchange(exchange(1, t0))],
            false
        ),
        0
    ));
    m.step(&mut e, &mut |p| paths.push(p));
    assert_eq!(m.held(), 1, "B has sent nothing: A's envelope waits");
    assert!(!m.push(envelope("A", 0, t0 + 10_000_000, Vec::new(), false), 0));
    assert_eq!(m.stats().duplicates, 1);
    assert!(m.push(envelope("B", 0, t0 + 20_000_000, Vec::new(), false), 0));
    m.step(&mut e, &mut |p| paths.push(p));
    assert_eq!(m.held(), 1, "B's envelope is ahead of A's watermark");
    assert_eq!(m.stats().exchanges, 1);
    assert!(!m.push(envelope("C", 0, t0, Vec::new(), false), 0));
    assert_eq!(m.stats().unknown_host, 1);
    m.finish(&mut e, &mut |p| paths.push(p));
    assert_eq!(paths.len(), 1);
    assert_eq!(m.held(), 0);
}

/// A host silent past the allowed lag while another is heard from stops holding the
/// others, is reported late, and is back when it sends again; when every host is
/// silent (the server between them and the collector), none is late.
#[test]
fn a_silent_host_is_late_after_the_lag() {
    let hosts = vec![("A".to_string(), None), ("B".to_string(), None)];
    let lag = 2_000_000_000;
    let mut m = Merger::new(&hosts, lag);
    let mut e = engine(2);
    let t0 = 1_700_000_000_000_000_000;
    m.push(envelope("A", 0, t0, vec![vantage_item()], false), 0);
    m.push(envelope("B", 0, t0, vec![vantage_item()], false), 0);
    assert!(
        m.check_lag(10 * lag).is_empty(),
        "all silent: nobody is late"
    );
    m.push(envelope("A", 1, t0 + 5_000_000_000, Vec::new(), false), lag);
    assert!(m.check_lag(lag).is_empty(), "within the lag");
    m.step(&mut e, &mut |_| {});
    assert_eq!(m.watermark(), Ts(t0), "B holds the watermark");
    m.push(
        envelope("A", 2, t0 + 5_000_000_000, Vec::new(), false),
        lag + 1,
    );
    assert_eq!(m.check_lag(lag + 1), vec![HostEvent::Late("B".into())]);
    m.step(&mut e, &mut |_| {});
    assert_eq!(
        m.watermark(),
        Ts(t0 + 5_000_000_000),
        "B no longer holds it"
    );
    assert_eq!(m.late_hosts(), vec!["B".to_string()]);
    m.push(
        envelope("B", 1, t0 + 1_000_000_000, Vec::new(), false),
        lag + 2,
    );
    assert_eq!(m.stats().late_envelopes, 1);
    assert_eq!(m.check_lag(lag + 2), vec![HostEvent::Back("B".into())]);
}

/// A gap in a run's numbering is counted as missing.
#[test]
fn gaps_in_a_run_are_counted() {
    let mut m = Merger::new(&[("A".to_string(), None)], 1);
    m.push(envelope("A", 0, 1, Vec::new(), false), 0);
    m.push(envelope("A", 3, 2, Vec::new(), false), 0);
    assert_eq!(m.stats().missing, 2);
}

/// Hosts whose clocks are skewed by a known amount and that share no exchange: the
/// collector takes their offsets from the clock samples (the least delayed sample of
/// each, against the server's time of storing it, however late it is read), reports them per host with their source and number of samples, and leaves
/// a replayed file's host (packet times not on its agent's clock) without one.
#[test]
fn skewed_hosts_get_their_offsets_from_clock_samples() {
    let names = ["A", "B", "C", "D"];
    let hosts: Vec<(String, Option<HostLinks>)> =
        names.iter().map(|h| (h.to_string(), None)).collect();
    let mut m = Merger::new(&hosts, 60_000_000_000);
    let mut e = engine(4);
    // Agent clock minus the collector's: A +3 ms, B +2.5 s, C -1.2 s; D replays a
    // capture of a year ago.
    let skew = [3_000_000i64, 2_500_000_000, -1_200_000_000, 0];
    let t0 = 1_700_000_000_000_000_000i64;
    let n = 50u64;
    for i in 0..n {
        let true_send = t0 + i as i64 * 100_000_000;
        // Delays of 1 to 30 ms; each host's least is 1 ms.
        for (h, name) in names.iter().enumerate() {
            let delay = 1_000_000 + ((i as i64 * 7 + h as i64 * 13) % 30) * 1_000_000;
            let delay = if i == 10 + h as u64 { 1_000_000 } else { delay };
            let sent = true_send + skew[h];
            let packets = if *name == "D" {
                sent - 365 * 86_400 * 1_000_000_000
            } else {
                sent - 50_000_000
            };
            let mut env = envelope(name, i, packets, vec![vantage_item()], false);
            env.sent_wall = sent;
            // The server's time of storing it is the reference, not the
            // collector's wall clock when it reads (here: a day later).
            assert!(m.push_stored(env, true_send + 86_400_000_000_000, true_send + delay));
        }
        m.step(&mut e, &mut |_| {});
    }
    let clocks = m.agent_clocks();
    assert!(
        clocks[3].is_none(),
        "a replay's packets are not on its clock"
    );
    for h in 0..3 {
        let c = clocks[h].expect("samples");
        assert_eq!(c.samples, n);
        // Offset less the least delay (1 ms).
        let want = (skew[h] - 1_000_000) as f64 / 1e9;
        assert!((c.offset_s - want).abs() < 1e-9, "{h}: {}", c.offset_s);
    }
    let tail = m.finish(&mut e, &mut |_| {});
    let o = &tail.clock_offsets;
    assert_eq!(o[0].method, crate::correlate::ClockMethod::Reference);
    for h in 1..3 {
        assert_eq!(o[h].method, crate::correlate::ClockMethod::AgentClock);
        let want = (skew[h] - skew[0]) as f64 / 1e9;
        assert!(
            (o[h].offset_s - want).abs() < 1e-9,
            "{h}: {}",
            o[h].offset_s
        );
        assert_eq!(o[h].samples, n as usize);
        assert_eq!(o[h].agent_clock.map(|c| c.samples), Some(n));
    }
    assert_eq!(o[3].method, crate::correlate::ClockMethod::None);
    assert!(o[3].agent_clock.is_none());
    // In the summary JSON, per host.
    let v = serde_json::to_value(&o[1]).unwrap();
    assert_eq!(v["method"], "agent_clock");
    assert_eq!(v["agent_clock"]["samples"], n);
}

/// A host that was not there when the merger started joins it: its envelopes are
/// taken, not counted as from an unknown host.
#[test]
fn a_host_joins_a_running_merger() {
    let mut m = Merger::new(&[("A".to_string(), None)], 60_000_000_000);
    let mut e = engine(1);
    let t0 = 1_700_000_000_000_000_000;
    assert!(m.push(
        envelope(
            "A",
            0,
            t0,
            vec![vantage_item(), Item::Exchange(exchange(1, t0))],
            false
        ),
        0
    ));
    assert!(!m.knows("B"));
    e.add_file("B".into(), None);
    m.add_host("B", None);
    m.add_host("B", None);
    assert_eq!(m.files(), ["A".to_string(), "B".to_string()]);
    assert!(m.push(
        envelope(
            "B",
            0,
            t0,
            vec![vantage_item(), Item::Exchange(exchange(2, t0))],
            true
        ),
        0
    ));
    let mut paths = Vec::new();
    m.step(&mut e, &mut |p| paths.push(p));
    let tail = m.finish(&mut e, &mut |p| paths.push(p));
    assert_eq!(m.stats().unknown_host, 0);
    assert_eq!(m.stats().exchanges, 2);
    assert_eq!(tail.clock_offsets.len(), 2);
    assert!(!paths.is_empty());
    assert!(m
        .vantages()
        .iter()
        .any(|v| v.file == "B" && v.file_index == 1));
}

/// The delay probe takes one sample per exchange at arrival and at release, and its
/// summary gives each stage's quantiles in seconds.
#[test]
fn delay_probe_samples_each_exchange_at_every_stage() {
    let hosts = vec![("A".to_string(), None)];
    let mut m = Merger::new(&hosts, 5_000_000_000);
    m.probe = Some(Box::default());
    let mut e = engine(1);
    let t0 = 1_700_000_000_000_000_000;
    // The exchange ends 900 µs after its request; the envelope is made 100 ms after
    // the request, stored 20 ms later and arrives 50 ms after its making.
    let mut env = envelope(
        "A",
        0,
        t0 + 100_000_000,
        vec![vantage_item(), Item::Exchange(exchange(1, t0))],
        false,
    );
    env.sent_wall = t0 + 100_000_000;
    assert!(m.push_stored(env, t0 + 150_000_000, t0 + 120_000_000));
    m.step(&mut e, &mut |_| {});
    let p = m.probe.as_ref().unwrap();
    assert_eq!(p.agent, vec![100_000_000 - 900_000]);
    assert_eq!(p.stored, vec![20_000_000]);
    assert_eq!(p.transport, vec![50_000_000]);
    assert_eq!(p.read, vec![30_000_000]);
    assert_eq!(p.held.len(), 1, "released once, behind its own watermark");
    let s = p.summary();
    assert_eq!(s["agent_end_to_envelope"]["n"], 1);
    assert_eq!(s["agent_end_to_envelope"]["p50"], 0.099);
    assert_eq!(s["envelope_to_stored"]["p99"], 0.02);
    assert_eq!(s["envelope_to_arrival"]["max"], 0.05);
    assert_eq!(s["stored_to_arrival"]["p50"], 0.03);
    assert_eq!(s["path_total"]["n"], 0);
}

/// A long run's samples stay bounded, and the kept ones are a spread of all seen.
#[test]
fn delay_samples_are_bounded_and_uniform() {
    let mut s = super::Samples::default();
    let n = 4 * super::Samples::MAX as i64;
    for x in 0..n {
        s.push(x);
    }
    assert_eq!(s.len(), super::Samples::MAX);
    assert_eq!(s.seen(), n as u64);
    let late = s.iter().filter(|&&x| x >= n / 2).count() as f64 / s.len() as f64;
    assert!(
        (0.45..0.55).contains(&late),
        "share of the second half kept: {late}"
    );
}
