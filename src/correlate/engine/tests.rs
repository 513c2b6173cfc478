//! Tests of the streaming engine on small synthetic transactions (the builder is
//! `record`'s).

use super::*;
use crate::correlate::record::tests::{ip, ms, sa, Tx};
use crate::tcp::StreamPos;

/// An engine over `files` with no links sidecars, the vantages it sees, and what it
/// emitted so far.
struct Run {
    engine: Engine,
    files: Vec<String>,
    links: Vec<Option<HostLinks>>,
    vantages: Vec<Vantage>,
    paths: Vec<RequestPath>,
}

impl Run {
    /// One vantage per `(file index, interface)`.
    fn new(cfg: EngineConfig, files: &[&str], vantages: &[(usize, &str)]) -> Run {
        let files: Vec<String> = files.iter().map(|f| f.to_string()).collect();
        let links = vec![None; files.len()];
        let vantages = vantages
            .iter()
            .map(|&(f, i)| Vantage {
                file: files[f].clone(),
                file_index: f,
                interface: i.into(),
                ifindex: None,
            })
            .collect();
        Run {
            engine: Engine::new(cfg, &files, &links),
            files,
            links,
            vantages,
            paths: Vec::new(),
        }
    }

    /// One capture, one interface, default limits.
    fn single() -> Run {
        Run::new(EngineConfig::default(), &["proxy.pcap"], &[(0, "eth0")])
    }

    fn ingest(&mut self, t: &HttpTransaction, now: i64) {
        self.engine.ingest(&mut t.clone(), &self.vantages, Ts(now));
    }

    /// Advances; returns how many paths it emitted.
    fn advance(&mut self, now: i64, pending: Option<i64>) -> usize {
        let ctx = context(&self.vantages, &self.files, &self.links);
        let before = self.paths.len();
        let paths = &mut self.paths;
        self.engine
            .advance(Ts(now), pending.map(Ts), &ctx, &mut |p| paths.push(p));
        self.paths.len() - before
    }

    /// Finishes; returns how many paths it emitted, and the tail.
    fn finish(&mut self) -> (usize, Tail) {
        let ctx = context(&self.vantages, &self.files, &self.links);
        let before = self.paths.len();
        let paths = &mut self.paths;
        let tail = self.engine.finish(&ctx, &mut |p| paths.push(p));
        (self.paths.len() - before, tail)
    }

    /// The emitted path whose root is transaction `tx`.
    fn path_of(&self, tx: u64) -> &RequestPath {
        let found: Vec<&RequestPath> = self
            .paths
            .iter()
            .filter(|p| p.root_transaction == tx)
            .collect();
        assert_eq!(found.len(), 1, "one path with root transaction {tx}");
        found[0]
    }
}

/// The URIs of a path's HTTP hops with their parents' URIs, in hop order.
fn tree(p: &RequestPath) -> Vec<(String, Option<String>)> {
    p.hops
        .iter()
        .filter(|h| h.kind == HopKind::Http)
        .map(|h| {
            let parent = h
                .parent
                .map(|i| p.hops[i].uri.clone().expect("an HTTP parent"));
            (h.uri.clone().expect("an HTTP hop has a URI"), parent)
        })
        .collect()
}

fn at_pos(tx: &Tx, id: u64, seq: u32, ack: u32) -> HttpTransaction {
    let mut t = tx.build(id);
    t.request.as_mut().expect("a request").wire_pos = Some(StreamPos { seq, ack });
    t
}

fn owned(v: &[(&str, Option<&str>)]) -> Vec<(String, Option<String>)> {
    v.iter()
        .map(|(u, p)| (u.to_string(), p.map(str::to_string)))
        .collect()
}

/// A client's request to the proxy 10.0.0.2 and the upstream request it caused
/// (started after the inbound request, answered before the inbound response, from
/// the proxy's address) make one path: gateway, then backend under it.
#[test]
fn proxy_exchange_and_its_upstream_make_one_path() {
    let mut run = Run::single();
    let inbound =
        Tx::get("/g")
            .between("10.0.0.1:40000", "10.0.0.2:80")
            .at(0, ms(1), ms(10), ms(11));
    let upstream = Tx::get("/u")
        .between("10.0.0.2:50000", "10.0.0.3:8080")
        .at(ms(1) + 100_000, ms(2), ms(9), ms(10))
        .body(200);
    // In completion order, the upstream first.
    run.ingest(&upstream.build(2), ms(10));
    run.ingest(&inbound.build(1), ms(11));
    assert_eq!(run.advance(ms(11), None), 0, "the floor is 100 ms back");
    let (n, tail) = run.finish();
    assert_eq!(n, 1);
    assert_eq!(run.engine.open_exchanges(), 0);

    let p = run.path_of(1);
    assert_eq!(p.status, PathStatus::Complete);
    assert_eq!((p.start_ts, p.end_ts), (Ts(0), Ts(ms(11))));
    assert_eq!(p.hops.len(), 2);
    assert_eq!(tree(p), owned(&[("/g", None), ("/u", Some("/g"))]));
    let (g, u) = (&p.hops[0], &p.hops[1]);
    assert_eq!((g.kind, u.kind), (HopKind::Http, HopKind::Http));
    assert_eq!(u.parent, Some(0));
    assert_eq!(g.role, Some(Role::Gateway));
    assert_eq!(u.role, Some(Role::Backend));
    assert_eq!(u.client, Some(sa("10.0.0.2:50000")));
    assert_eq!(u.server, Some(sa("10.0.0.3:8080")));
    assert_eq!(g.host.as_deref(), Some("proxy"));
    assert!(g.confidence.is_none(), "the root has no link");
    assert!(u.confidence.is_some_and(|c| c > 0.5), "{:?}", u.confidence);
    assert!(!u.evidence.is_empty());
    // 10 ms inbound of which 8.9 ms upstream.
    assert_eq!(g.latency_ms, Some(11.0));
    assert_eq!(g.self_ms, Some(2.1));

    assert_eq!(tail.engine.views, 2);
    assert_eq!(tail.engine.exchanges, 2);
    assert_eq!(tail.engine.links, 1);
    assert_eq!(tail.engine.retries, 0);
    assert_eq!(tail.summary.paths, 1);
    assert_eq!(tail.summary.complete, 1);
    let role_of = |a: &str| {
        tail.address_book
            .iter()
            .find(|e| e.ip == ip(a))
            .and_then(|e| e.role.clone())
    };
    assert_eq!(role_of("10.0.0.2"), Some(Role::Gateway));
    assert_eq!(role_of("10.0.0.3"), Some(Role::Backend));
}

/// Issue 13: a two-armed proxy receives on one address and sends from another; its
/// upstream is linked once the two are known to be one proxy (one host's addresses
/// from its links sidecar, or one service name in the topology file), and not before.
#[test]
fn a_two_armed_proxy_links_through_its_aliases() {
    let inbound =
        Tx::get("/g")
            .between("10.0.0.1:40000", "10.0.0.2:80")
            .at(0, ms(1), ms(10), ms(11));
    let upstream = Tx::get("/g").between("10.1.0.2:50000", "10.1.0.3:8080").at(
        ms(1) + 100_000,
        ms(2),
        ms(9),
        ms(10),
    );
    let run_with = |aliases: &[&str]| {
        let mut run = Run::single();
        let group: Vec<IpAddr> = aliases.iter().map(|a| ip(a)).collect();
        run.engine.add_alias_group(&group);
        run.ingest(&upstream.build(2), ms(10));
        run.ingest(&inbound.build(1), ms(11));
        run.finish();
        run
    };
    let apart = run_with(&[]);
    assert_eq!(apart.paths.len(), 2, "no shared address: two paths");
    let one = run_with(&["10.0.0.2", "10.1.0.2"]);
    assert_eq!(one.paths.len(), 1);
    assert_eq!(
        tree(one.path_of(1)),
        owned(&[("/g", None), ("/g", Some("/g"))])
    );
    // Too many addresses for one proxy: left out, and counted.
    let many: Vec<String> = (0..20).map(|i| format!("10.2.0.{i}")).collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    let mut run = Run::single();
    run.engine
        .add_alias_group(&many.iter().map(|a| ip(a)).collect::<Vec<_>>());
    assert_eq!(run.engine.stats().alias_groups_not_kept, 1);
}

/// The same request seen at two capture points (same TCP sequence and
/// acknowledgement numbers, both addresses translated) is one exchange with a NAT hop,
/// ordered by TTL whatever the order it arrived in.
#[test]
fn one_request_at_two_capture_points_is_one_exchange_with_a_nat_hop() {
    let mut run = Run::new(
        EngineConfig::default(),
        &["fw.pcap"],
        &[(0, "outside"), (0, "inside")],
    );
    let outside = Tx::get("/nat")
        .between("10.0.0.1:40000", "192.168.0.10:80")
        .at(ms(1), ms(2), ms(10), ms(11));
    // The inner interface's timestamps run 20 us ahead of the outer one's: time
    // alone would put it first, the TTL a router lowered puts it second.
    let mut inside = Tx::get("/nat")
        .between("10.0.1.1:30000", "10.0.2.5:8080")
        .at(
            ms(1) - 20_000,
            ms(2) - 20_000,
            ms(10) - 20_000,
            ms(11) - 20_000,
        )
        .ttl(63);
    inside.vantage = 1;
    // The inner view arrives first too.
    run.ingest(&at_pos(&inside, 2, 1_000, 77), ms(11));
    run.ingest(&at_pos(&outside, 1, 1_000, 77), ms(11));
    // Another request on other sequence numbers is another exchange.
    let other = Tx::get("/other")
        .between("10.0.0.1:40001", "192.168.0.10:80")
        .at(ms(20), ms(21), ms(25), ms(26));
    run.ingest(&at_pos(&other, 3, 5_000, 77), ms(26));
    let (n, tail) = run.finish();
    assert_eq!(n, 2);
    assert_eq!(tail.engine.views, 3);
    assert_eq!(tail.engine.exchanges, 2);

    let p = &run.paths[0];
    assert_eq!(p.hops.len(), 2, "{:#?}", p.hops);
    let (h, nat) = (&p.hops[0], &p.hops[1]);
    assert_eq!(h.kind, HopKind::Http);
    assert_eq!(h.client, Some(sa("10.0.0.1:40000")), "the outer view first");
    assert_eq!(h.server, Some(sa("192.168.0.10:80")));
    assert_eq!(h.seen_at.len(), 2);
    assert_eq!(h.seen_at[0].capture.interface, "outside");
    assert_eq!(h.seen_at[1].capture.interface, "inside");
    assert_eq!(nat.kind, HopKind::Nat);
    assert_eq!(nat.parent, Some(0));
    assert_eq!(nat.translation, Some(Translation::SnatDnat));
    assert_eq!(
        nat.before,
        Some(Endpoints {
            client: sa("10.0.0.1:40000"),
            server: sa("192.168.0.10:80"),
        })
    );
    assert_eq!(
        nat.after,
        Some(Endpoints {
            client: sa("10.0.1.1:30000"),
            server: sa("10.0.2.5:8080"),
        })
    );
    assert_eq!(
        nat.capture_before.as_ref().map(|c| c.interface.as_str()),
        Some("outside")
    );
    assert_eq!(
        nat.capture_after.as_ref().map(|c| c.interface.as_str()),
        Some("inside")
    );
    assert_eq!(nat.ts, Some(Ts(ms(1) - 20_000)));
    // The path's times are the outer view's.
    assert_eq!((p.start_ts, p.end_ts), (Ts(ms(1)), Ts(ms(11))));
    assert_eq!(run.paths[1].hops.len(), 1);
    assert_eq!(run.paths[1].hops[0].uri.as_deref(), Some("/other"));
}

/// A path goes out from `advance` once the floor (the oldest pending request, else the
/// watermark, less the lateness) has passed its end by two tolerances, not while an
/// older pending request holds the floor; rounds wait for the floor to move
/// `round_ns`; `finish` emits the rest, each exchange once.
#[test]
fn paths_stream_out_as_the_floor_passes_them() {
    let cfg = EngineConfig::default();
    let (late, tol) = (cfg.lateness_ns, cfg.tolerance_ns);
    assert_eq!((late, tol, cfg.round_ns), (ms(100), 200_000, ms(20)));
    let mut run = Run::single();
    // A: request at 0, response over [5, 6] ms.
    let a = Tx::get("/a").at(0, ms(1), ms(5), ms(6));
    run.ingest(&a.build(1), ms(6));
    // The watermark is far on, but a request at 50 ms still waits: floor -50 ms.
    assert_eq!(run.advance(ms(500), Some(ms(50))), 0);
    assert_eq!(run.engine.stats().rounds, 1);
    // Floor 6.4 ms (A's end plus two tolerances): decided, but still held.
    assert_eq!(run.advance(ms(500), Some(late + ms(6) + 2 * tol)), 0);
    assert_eq!(run.engine.stats().rounds, 2);
    assert_eq!(run.engine.open_exchanges(), 1);
    // The floor moved less than a round: no round, whatever it would release.
    assert_eq!(run.advance(ms(500), Some(late + ms(20))), 0);
    assert_eq!(run.engine.stats().rounds, 2);
    // A round later the pending request is answered: the watermark decides.
    assert_eq!(run.advance(late + ms(30), None), 1);
    assert_eq!(run.engine.stats().rounds, 3);
    assert_eq!(run.engine.open_exchanges(), 0);
    assert_eq!(run.paths[0].root_transaction, 1);
    assert_eq!(run.paths[0].id, 0);
    assert_eq!(run.engine.paths_emitted(), 1);

    // B and C come in; the floor never passes C before the end.
    let b = Tx::get("/b").between("10.0.0.7:40000", "10.0.0.2:80").at(
        ms(200),
        ms(201),
        ms(210),
        ms(211),
    );
    let c = Tx::get("/c")
        .between("10.0.0.8:40000", "10.0.0.2:80")
        .at(ms(400), ms(401), ms(410), ms(411))
        .status(503);
    run.ingest(&b.build(2), ms(211));
    run.ingest(&c.build(3), ms(411));
    // Floor 220 ms: past B's end (211 ms), before C's request.
    assert_eq!(run.advance(ms(411), Some(ms(320))), 1, "B only");
    assert_eq!(run.paths[1].root_transaction, 2);
    // A floor behind the last round's takes no round.
    assert_eq!(run.advance(ms(411), Some(ms(100))), 0);
    assert_eq!(run.engine.stats().rounds, 4);
    let (n, tail) = run.finish();
    assert_eq!(n, 1);
    assert_eq!(run.paths[2].root_transaction, 3);
    assert_eq!(run.paths[2].status, PathStatus::Failed);
    let ids: Vec<usize> = run.paths.iter().map(|p| p.id).collect();
    assert_eq!(ids, [0, 1, 2]);
    assert_eq!(tail.engine.views, 3);
    assert_eq!(tail.engine.exchanges, 3);
    assert_eq!(tail.engine.late_views, 0);
    assert_eq!(tail.summary.paths, 3);
    assert_eq!(tail.summary.failed, 1);
    assert_eq!(tail.anomalies.len(), 1, "{:?}", tail.anomalies);
    assert!(tail.anomalies[0].contains("/c"), "{:?}", tail.anomalies);
}

/// Two concurrent requests through one proxy, each with one upstream request whose
/// timing nests it in exactly one of them: each upstream goes under its own parent,
/// streamed with the pending floor a pipeline would give.
#[test]
fn concurrent_requests_each_get_their_own_upstream() {
    let mut run = Run::single();
    let g1 = Tx::get("/g1")
        .between("10.0.0.1:40001", "10.0.0.2:80")
        .at(0, ms(1), ms(20), ms(21));
    let g2 =
        Tx::get("/g2")
            .between("10.0.0.5:40002", "10.0.0.2:80")
            .at(ms(2), ms(3), ms(40), ms(41));
    // U1 starts before G2 (more than a tolerance): only under G1.
    let u1 = Tx::get("/u1")
        .between("10.0.0.2:50001", "10.0.0.3:8080")
        .at(ms(1) + 200_000, ms(1) + 500_000, ms(18), ms(19));
    // U2 ends after G1's response: only under G2.
    let u2 = Tx::get("/u2")
        .between("10.0.0.2:50002", "10.0.0.3:8080")
        .at(ms(3) + 200_000, ms(3) + 500_000, ms(38), ms(39));
    // Completion order, each with the oldest request then still waiting.
    let steps: [(&Tx, u64, i64, Option<i64>); 4] = [
        (&u1, 3, ms(19), Some(0)),
        (&g1, 1, ms(21), Some(ms(2))),
        (&u2, 4, ms(39), Some(ms(2))),
        (&g2, 2, ms(41), None),
    ];
    for (tx, id, now, pending) in steps {
        run.ingest(&tx.build(id), now);
        assert_eq!(run.advance(now, pending), 0, "the floor is behind");
    }
    // The floor passes G1's path (ends at 21 ms) but not G2's (41 ms).
    assert_eq!(run.advance(ms(130), None), 1);
    assert_eq!(run.paths[0].root_transaction, 1);
    let (n, tail) = run.finish();
    assert_eq!(n, 1);
    assert_eq!(tail.engine.links, 2);
    assert_eq!(tail.engine.exchanges, 4);
    assert_eq!(
        tree(run.path_of(1)),
        owned(&[("/g1", None), ("/u1", Some("/g1"))])
    );
    assert_eq!(
        tree(run.path_of(2)),
        owned(&[("/g2", None), ("/u2", Some("/g2"))])
    );
    for p in &run.paths {
        assert_eq!(p.status, PathStatus::Complete);
        assert_eq!(p.hops[1].parent, Some(0));
        assert_eq!(p.hops[1].role, Some(Role::Backend));
        assert_eq!(p.hops[0].role, Some(Role::Gateway));
    }
}

/// A transaction whose request is behind the floor already is counted late, and kept
/// when answered; an unanswered one matching nothing held is dropped; one without a
/// request is only counted.
#[test]
fn late_transactions_are_counted_and_unanswered_ones_dropped() {
    let mut run = Run::single();
    let a = Tx::get("/a").at(0, ms(1), ms(5), ms(6));
    run.ingest(&a.build(1), ms(6));
    assert_eq!(run.advance(ms(300), None), 1, "floor 200 ms: A goes out");
    assert_eq!(run.engine.stats().late_views, 0);
    // Just at the floor is not late; before it is.
    let on_time = Tx::get("/on-time")
        .between("10.0.0.9:40000", "10.0.0.2:80")
        .at(ms(200), ms(201), ms(202), ms(203));
    run.ingest(&on_time.build(2), ms(300));
    assert_eq!(run.engine.stats().late_views, 0);
    let b = Tx::get("/b").between("10.0.0.7:40000", "10.0.0.2:80").at(
        ms(150),
        ms(151),
        ms(160),
        ms(161),
    );
    run.ingest(&b.build(3), ms(300));
    assert_eq!(run.engine.stats().late_views, 1);
    let c = Tx::get("/c")
        .between("10.0.0.8:40000", "10.0.0.2:80")
        .at(ms(100), ms(101), 0, 0)
        .no_response();
    run.ingest(&c.build(4), ms(300));
    let mut no_request = Tx::get("/x").build(5);
    no_request.request = None;
    run.ingest(&no_request, ms(300));
    let s = run.engine.stats();
    assert_eq!(
        (
            s.views,
            s.views_without_request,
            s.late_views,
            s.late_views_dropped
        ),
        (4, 1, 2, 1)
    );
    assert_eq!(s.exchanges, 3);
    assert_eq!(run.engine.open_exchanges(), 2);
    let (n, tail) = run.finish();
    assert_eq!(n, 2);
    let roots: Vec<u64> = run.paths.iter().map(|p| p.root_transaction).collect();
    assert_eq!(roots, [1, 3, 2], "emitted in start order within a round");
    assert_eq!(tail.summary.paths, 3);
    assert_eq!(tail.engine.late_views_dropped, 1);
}

/// Past `max_open_exchanges` a round decides everything that has arrived, whatever
/// holds the floor, and counts itself forced.
#[test]
fn too_many_open_exchanges_force_a_round() {
    let cfg = EngineConfig {
        max_open_exchanges: 2,
        ..EngineConfig::default()
    };
    let mut run = Run::new(cfg, &["proxy.pcap"], &[(0, "eth0")]);
    let g = Tx::get("/g")
        .between("10.0.0.1:40000", "10.0.0.2:80")
        .at(0, ms(1), ms(10), ms(11));
    let u = Tx::get("/u")
        .between("10.0.0.2:50000", "10.0.0.3:8080")
        .at(ms(2), ms(3), ms(8), ms(9));
    let other = Tx::get("/other")
        .between("10.0.0.4:40000", "10.0.0.9:80")
        .at(ms(4), ms(5), ms(6), ms(7));
    run.ingest(&u.build(2), ms(9));
    run.ingest(&g.build(1), ms(11));
    assert_eq!(run.advance(ms(11), Some(0)), 0, "two held: not forced");
    assert_eq!(run.engine.stats().forced_rounds, 0);
    run.ingest(&other.build(3), ms(11));
    assert_eq!(run.advance(ms(11), Some(0)), 2, "three held: forced");
    let s = run.engine.stats();
    assert_eq!((s.forced_rounds, s.links, s.peak_open_exchanges), (1, 1, 3));
    assert_eq!(run.engine.open_exchanges(), 0);
    assert_eq!(
        tree(run.path_of(1)),
        owned(&[("/g", None), ("/u", Some("/g"))])
    );
    assert_eq!(tree(run.path_of(3)), owned(&[("/other", None)]));
    // The forced floor is not kept: a request that follows is on time, and an
    // unanswered one is reported, not dropped.
    let next = Tx::get("/next")
        .between("10.0.0.5:40000", "10.0.0.9:80")
        .at(ms(20), ms(21), ms(22), ms(23));
    run.ingest(&next.build(4), ms(23));
    let lost = Tx::get("/lost")
        .between("10.0.0.6:40000", "10.0.0.9:80")
        .at(ms(24), ms(25), ms(26), ms(27));
    let mut lost = lost.build(5);
    lost.response = None;
    run.ingest(&lost, ms(27));
    let s = run.engine.stats();
    assert_eq!((s.late_views, s.late_views_dropped), (0, 0));
    let (n, _) = run.finish();
    assert_eq!(n, 2);
}

/// Past `max_open_bytes` a round is forced as past `max_open_exchanges`: two
/// exchanges with URIs and headers at the HTTP stage's bounds pass a bound that two
/// small ones stay under; `open_bytes` counts each one's size and gives it back
/// when its path is emitted.
#[test]
fn large_exchanges_force_a_round_by_their_bytes() {
    let small = Tx::get("/s")
        .between("10.0.0.1:40000", "10.0.0.9:80")
        .at(0, ms(1), ms(2), ms(3));
    let mut fat = Tx::get(&format!("/fat/{}", "u".repeat(64 << 10)))
        .between("10.0.0.4:40000", "10.0.0.9:80")
        .at(ms(4), ms(5), ms(6), ms(7))
        .build(3);
    let mut h = crate::http::Headers::default();
    for i in 0..crate::http::MAX_KEPT_HEADERS {
        h.push(format!("X-Fat-{i}").as_bytes(), &[b'v'; 1024]);
    }
    fat.request.as_mut().expect("a request").headers = h;
    let bound = 8 << 10;
    let cfg = EngineConfig {
        max_open_bytes: bound,
        ..EngineConfig::default()
    };
    let mut run = Run::new(cfg, &["proxy.pcap"], &[(0, "eth0")]);
    run.ingest(&small.build(1), ms(3));
    let one = run.engine.open_bytes();
    assert!(
        (EXCHANGE_OVERHEAD..2 * EXCHANGE_OVERHEAD).contains(&one),
        "{one}"
    );
    let second =
        Tx::get("/t")
            .between("10.0.0.2:40000", "10.0.0.9:80")
            .at(ms(1), ms(2), ms(2), ms(3));
    run.ingest(&second.build(2), ms(3));
    assert_eq!(run.engine.open_exchanges(), 2);
    assert_eq!(
        run.advance(ms(3), Some(0)),
        0,
        "under the bound: not forced"
    );
    assert!(run.engine.open_bytes() <= bound);
    run.ingest(&fat, ms(7));
    // The URI is cut at 2 KiB, each header kept as two hashes: a fat exchange is
    // bounded too, but larger than the two small ones together.
    let fat_bytes = run.engine.open_bytes() - 2 * one;
    assert!(fat_bytes > 2 * one && fat_bytes < 8 << 10, "{fat_bytes}");
    assert!(run.engine.open_bytes() > bound);
    assert_eq!(run.advance(ms(7), Some(0)), 3, "over the bound: forced");
    assert_eq!(run.engine.stats().forced_rounds, 1);
    assert_eq!(
        (run.engine.open_exchanges(), run.engine.open_bytes()),
        (0, 0)
    );
    assert!(run.engine.peak_open_bytes() > bound);
}

/// Every URI of every emitted path's HTTP hops, sorted.
fn uris(run: &Run) -> Vec<String> {
    let mut v: Vec<String> = run
        .paths
        .iter()
        .flat_map(|p| p.hops.iter().filter_map(|h| h.uri.clone()))
        .collect();
    v.sort();
    v
}

/// Issue 15: requests that follow each other on one keep-alive connection within
/// the interfaces' clock tolerance (200 µs: a loopback server answers in 80 µs) are
/// not a proxy's inbound and upstream exchanges: a proxy sends its upstream request
/// on a connection of its own. Each is its own path, none is lost, none linked.
#[test]
fn requests_of_one_keep_alive_connection_are_never_linked() {
    let mut run = Run::single();
    let conn = |uri: &str, t0: i64| {
        Tx::get(uri)
            .between("127.0.0.1:45352", "127.0.0.1:56979")
            .at(t0, t0 + 10_000, t0 + 60_000, t0 + 80_000)
    };
    // Back to back (a client catching up after a stall), 100 µs apart.
    for i in 0..4u64 {
        let t = conn(&format!("/item/{i}"), i as i64 * 100_000);
        run.ingest(&t.build(i + 1), i as i64 * 100_000 + 80_000);
    }
    let (n, tail) = run.finish();
    assert_eq!(n, 4, "one path per request");
    assert_eq!(uris(&run), ["/item/0", "/item/1", "/item/2", "/item/3"]);
    assert_eq!(tail.engine.links, 0);
    assert_eq!(run.engine.open_exchanges(), 0);
}

/// Issue 15: a proxy and its backend on one host and one interface (127.0.0.1:80 in,
/// 127.0.0.1:8080 upstream) answering within the clock tolerance nest in each other
/// both ways; the inbound and the upstream exchange must not each become the other's
/// parent (a cycle has no root, so neither would ever be written nor let go).
#[test]
fn exchanges_nested_in_each_other_are_not_lost_in_a_cycle() {
    let mut run = Run::single();
    let inbound = Tx::get("/g")
        .between("127.0.0.1:40000", "127.0.0.1:80")
        .at(0, 10_000, 900_000, 1_000_000);
    let upstream = Tx::get("/g")
        .between("127.0.0.1:50000", "127.0.0.1:8080")
        .at(100_000, 110_000, 800_000, 850_000);
    run.ingest(&upstream.build(2), 850_000);
    run.ingest(&inbound.build(1), 1_000_000);
    let (n, tail) = run.finish();
    assert_eq!(
        uris(&run),
        ["/g", "/g"],
        "both exchanges written, once each"
    );
    assert_eq!(n, 1, "one path: the inbound exchange and its upstream");
    assert_eq!(
        tree(run.path_of(1)),
        owned(&[("/g", None), ("/g", Some("/g"))])
    );
    assert_eq!(tail.engine.links, 1);
    assert_eq!(run.engine.open_exchanges(), 0);
}

/// Issue 15: across two interfaces the clock tolerance stays (their timestamps may
/// disagree by up to 200 µs), so an inbound exchange on one and an upstream on the
/// other can still nest in each other both ways. Whichever way they are linked,
/// neither may become the other's ancestor: both are written, once each, and let go.
#[test]
fn exchanges_nested_in_each_other_across_interfaces_are_not_lost() {
    let mut run = Run::new(
        EngineConfig::default(),
        &["proxy.pcap"],
        &[(0, "eth0"), (0, "eth1")],
    );
    // Two hosts that call each other: each exchange's client is the other's server.
    let inbound = Tx::get("/g")
        .between("10.0.0.3:40000", "10.0.0.2:80")
        .at(100_000, 110_000, 900_000, 1_000_000);
    let mut upstream = Tx::get("/g")
        .between("10.0.0.2:50000", "10.0.0.3:8080")
        .at(0, 10_000, 800_000, 850_000);
    upstream.vantage = 1;
    run.ingest(&upstream.build(2), 850_000);
    run.ingest(&inbound.build(1), 1_000_000);
    let (_, tail) = run.finish();
    assert_eq!(
        uris(&run),
        ["/g", "/g"],
        "both exchanges written, once each"
    );
    assert_eq!(run.engine.open_exchanges(), 0);
    assert!(tail.engine.links <= 1, "{}", tail.engine.links);
}

/// A correlation context with no topology file, VRRP or gratuitous ARP.
fn context<'a>(
    vantages: &'a [Vantage],
    files: &'a [String],
    links: &'a [Option<HostLinks>],
) -> Context<'a> {
    Context {
        vantages,
        files,
        links,
        names: None,
        vrrp: &[],
        garp: &[],
    }
}
