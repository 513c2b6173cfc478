use super::*;

#[derive(Default)]
struct Recorder {
    events: Vec<(u64, Dir, String)>,
    closed: Vec<u64>,
}

impl StreamSink for Recorder {
    type Conn = ();
    fn open(&mut self, _meta: &ConnMeta) {}
    fn data(
        &mut self,
        _: &mut (),
        meta: &ConnMeta,
        dir: Dir,
        _: Ts,
        data: &[u8],
        _: StreamPos,
    ) -> bool {
        self.events
            .push((meta.id, dir, String::from_utf8_lossy(data).into_owned()));
        true
    }
    fn gap(&mut self, _: &mut (), meta: &ConnMeta, dir: Dir, _: Ts, len: u64) {
        self.events.push((meta.id, dir, format!("<gap {len}>")));
    }
    fn end(&mut self, _: &mut (), meta: &ConnMeta, dir: Dir, _: Ts, how: End) {
        self.events.push((meta.id, dir, format!("<{how:?}>")));
    }
    fn close(&mut self, _: (), meta: &ConnMeta, _: Ts) {
        self.closed.push(meta.id);
    }
}

fn seg(sp: u16, dp: u16, seq: u32, ack: u32, flags: u8, payload: &[u8]) -> TcpSegment<'_> {
    TcpSegment {
        src_port: sp,
        dst_port: dp,
        seq,
        ack,
        flags,
        window: 1000,
        payload,
        missing: 0,
        ttl: 64,
    }
}

const SYN: u8 = TcpSegment::SYN;
const ACK: u8 = TcpSegment::ACK;
const FIN: u8 = TcpSegment::FIN;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn handshake_orients_and_times() {
    let mut t = TcpTable::new(TcpConfig::default());
    let mut r = Recorder::default();
    let (mut st, mut log) = (Stats::default(), AnomalyLog::default());
    let (c, s) = (ip("198.18.0.2"), ip("198.18.1.231"));
    // SYN-ACK seen first (capture reordering) still orients correctly.
    t.segment(
        &mut r,
        Ts(10),
        0,
        s,
        c,
        &seg(8000, 40000, 500, 101, SYN | ACK, b""),
        &mut st,
        &mut log,
    );
    t.segment(
        &mut r,
        Ts(11),
        0,
        c,
        s,
        &seg(40000, 8000, 100, 0, SYN, b""),
        &mut st,
        &mut log,
    );
    t.segment(
        &mut r,
        Ts(12),
        0,
        c,
        s,
        &seg(40000, 8000, 101, 501, ACK, b"GET"),
        &mut st,
        &mut log,
    );
    t.segment(
        &mut r,
        Ts(13),
        0,
        s,
        c,
        &seg(8000, 40000, 501, 104, ACK, b"200"),
        &mut st,
        &mut log,
    );
    assert_eq!(
        r.events,
        vec![
            (0, Dir::ToServer, "GET".into()),
            (0, Dir::ToClient, "200".into())
        ]
    );
    assert_eq!(st.tcp_connections, 1);
}

#[test]
fn vantage_points_are_separate_connections() {
    let mut t = TcpTable::new(TcpConfig::default());
    let mut r = Recorder::default();
    let (mut st, mut log) = (Stats::default(), AnomalyLog::default());
    let (c, s) = (ip("10.0.0.1"), ip("10.0.0.2"));
    for v in [0, 1] {
        t.segment(
            &mut r,
            Ts(1),
            v,
            c,
            s,
            &seg(5000, 80, 1, 0, SYN, b""),
            &mut st,
            &mut log,
        );
        t.segment(
            &mut r,
            Ts(2),
            v,
            c,
            s,
            &seg(5000, 80, 2, 0, ACK, b"x"),
            &mut st,
            &mut log,
        );
    }
    assert_eq!(t.len(), 2);
    assert_eq!(st.tcp_retransmitted, 0);
}

#[test]
fn port_reuse_starts_a_new_generation() {
    let mut t = TcpTable::new(TcpConfig::default());
    let mut r = Recorder::default();
    let (mut st, mut log) = (Stats::default(), AnomalyLog::default());
    let (c, s) = (ip("10.0.0.1"), ip("10.0.0.2"));
    t.segment(
        &mut r,
        Ts(1),
        0,
        c,
        s,
        &seg(5000, 80, 1, 0, SYN, b""),
        &mut st,
        &mut log,
    );
    t.segment(
        &mut r,
        Ts(2),
        0,
        c,
        s,
        &seg(5000, 80, 2, 0, ACK | FIN, b"a"),
        &mut st,
        &mut log,
    );
    t.segment(
        &mut r,
        Ts(3),
        0,
        s,
        c,
        &seg(80, 5000, 9, 4, ACK | FIN, b""),
        &mut st,
        &mut log,
    );
    t.segment(
        &mut r,
        Ts(4),
        0,
        c,
        s,
        &seg(5000, 80, 9000, 0, SYN, b""),
        &mut st,
        &mut log,
    );
    t.segment(
        &mut r,
        Ts(5),
        0,
        c,
        s,
        &seg(5000, 80, 9001, 0, ACK, b"b"),
        &mut st,
        &mut log,
    );
    assert_eq!(st.tcp_port_reuse, 1);
    assert_eq!(r.closed, vec![0]);
    assert_eq!(
        r.events.last().unwrap(),
        &(1, Dir::ToServer, "b".to_string())
    );
}

#[test]
fn idle_connections_are_evicted() {
    let cfg = TcpConfig {
        idle_timeout_ns: 10_000_000_000,
        ..TcpConfig::default()
    };
    let mut t = TcpTable::new(cfg);
    let mut r = Recorder::default();
    let (mut st, mut log) = (Stats::default(), AnomalyLog::default());
    let (c, s) = (ip("10.0.0.1"), ip("10.0.0.2"));
    t.segment(
        &mut r,
        Ts(0),
        0,
        c,
        s,
        &seg(5000, 80, 1, 0, ACK, b"x"),
        &mut st,
        &mut log,
    );
    t.segment(
        &mut r,
        Ts(20_000_000_000),
        0,
        c,
        s,
        &seg(5001, 80, 1, 0, ACK, b"y"),
        &mut st,
        &mut log,
    );
    assert_eq!(t.len(), 1);
    assert_eq!((st.tcp_evicted, st.tcp_midstream), (1, 2));
    assert_eq!(r.closed, vec![0]);
}

#[test]
fn rst_ends_both_directions() {
    let mut t = TcpTable::new(TcpConfig::default());
    let mut r = Recorder::default();
    let (mut st, mut log) = (Stats::default(), AnomalyLog::default());
    let (c, s) = (ip("10.0.0.1"), ip("10.0.0.2"));
    t.segment(
        &mut r,
        Ts(1),
        0,
        c,
        s,
        &seg(5000, 80, 1, 0, SYN, b""),
        &mut st,
        &mut log,
    );
    t.segment(
        &mut r,
        Ts(2),
        0,
        s,
        c,
        &seg(80, 5000, 1, 2, TcpSegment::RST | ACK, b""),
        &mut st,
        &mut log,
    );
    assert_eq!(st.tcp_rst, 1);
    assert!(r.events.iter().any(|e| e.2 == "<Rst>"));
}

#[test]
fn seq_number_ordering_wraps() {
    assert_eq!(SeqNumber(5) - SeqNumber(u32::MAX), 6);
    assert_eq!(SeqNumber(u32::MAX) - SeqNumber(5), -6);
    assert_eq!(SeqNumber(u32::MAX) + 2, SeqNumber(1));
}

/// A full table makes room by evicting half-open connections, oldest first; real
/// connections (handshake done, or carrying data) are never evicted for it, and a
/// new connection is refused only when nothing half-open is left.
#[test]
fn full_table_evicts_half_open_oldest_first() {
    let mut t = TcpTable::new(TcpConfig {
        max_connections: 4,
        ..TcpConfig::default()
    });
    let mut r = Recorder::default();
    let (mut st, mut log) = (Stats::default(), AnomalyLog::default());
    let server = ip("198.18.1.231");
    let mut at = 0;
    let mut send = |t: &mut TcpTable<()>,
                    r: &mut Recorder,
                    st: &mut Stats,
                    from: &str,
                    port: u16,
                    to_server: bool,
                    seq: u32,
                    ack: u32,
                    flags: u8,
                    data: &[u8]| {
        at += 1;
        let (src, dst, sp, dp) = if to_server {
            (ip(from), server, port, 80)
        } else {
            (server, ip(from), 80, port)
        };
        t.segment(
            r,
            Ts(at),
            0,
            src,
            dst,
            &seg(sp, dp, seq, ack, flags, data),
            st,
            &mut log,
        );
    };
    // A real connection: handshake completed.
    send(
        &mut t, &mut r, &mut st, "10.0.0.1", 1000, true, 100, 0, SYN, b"",
    );
    send(
        &mut t,
        &mut r,
        &mut st,
        "10.0.0.1",
        1000,
        false,
        500,
        101,
        SYN | ACK,
        b"",
    );
    send(
        &mut t, &mut r, &mut st, "10.0.0.1", 1000, true, 101, 501, ACK, b"",
    );
    // A flood of 50 SYNs (answered by SYN-ACKs, never completed).
    for i in 0..50u16 {
        send(
            &mut t,
            &mut r,
            &mut st,
            "203.0.113.9",
            2000 + i,
            true,
            7,
            0,
            SYN,
            b"",
        );
        send(
            &mut t,
            &mut r,
            &mut st,
            "203.0.113.9",
            2000 + i,
            false,
            9,
            8,
            SYN | ACK,
            b"",
        );
    }
    assert_eq!(t.len(), 4);
    assert_eq!(st.tcp_evicted_half_open, 47);
    assert_eq!(st.tcp_untracked, 0);
    // The oldest SYNs went first: the last three of the flood are the ones left
    // (ids 1 to 50 were the flood's); the sink never heard of them.
    let mut left: Vec<u64> = t
        .conns
        .values()
        .filter_map(|s| match s {
            Slot::HalfOpen(h) => Some(h.id),
            Slot::Open(_) => None,
        })
        .collect();
    left.sort_unstable();
    assert_eq!(left, vec![48, 49, 50]);
    assert!(r.closed.is_empty());
    // A second real connection is tracked, and the first still delivers data.
    send(
        &mut t, &mut r, &mut st, "10.0.0.2", 1001, true, 300, 0, SYN, b"",
    );
    send(
        &mut t,
        &mut r,
        &mut st,
        "10.0.0.2",
        1001,
        false,
        600,
        301,
        SYN | ACK,
        b"",
    );
    send(
        &mut t, &mut r, &mut st, "10.0.0.2", 1001, true, 301, 601, ACK, b"GET /b",
    );
    send(
        &mut t, &mut r, &mut st, "10.0.0.1", 1000, true, 101, 501, ACK, b"GET /a",
    );
    let data: Vec<&str> = r.events.iter().map(|e| e.2.as_str()).collect();
    assert_eq!(data, vec!["GET /b", "GET /a"]);
    // Two more real connections fill the table with established ones, after which
    // nothing half-open is left and a new connection is refused.
    for (n, port) in [(3u32, 1002u16), (4, 1003)] {
        let c = format!("10.0.0.{n}");
        send(&mut t, &mut r, &mut st, &c, port, true, 10, 0, SYN, b"");
        send(&mut t, &mut r, &mut st, &c, port, true, 11, 0, ACK, b"x");
    }
    assert_eq!(st.tcp_untracked, 0);
    send(
        &mut t, &mut r, &mut st, "10.0.0.9", 1009, true, 10, 0, SYN, b"",
    );
    assert_eq!((st.tcp_untracked, t.len()), (1, 4));
    assert_eq!(t.half_open(), 0);
}

/// A half-open connection is one small hash-table slot (measured here, quoted in
/// docs/hostile.md); a full one is a slot and a box.
#[test]
fn half_open_entries_are_small() {
    let slot = TcpTable::<crate::http::HttpConn>::slot_bytes();
    let conn = TcpTable::<crate::http::HttpConn>::conn_bytes();
    println!("slot {slot} bytes, full connection box {conn} bytes");
    assert!(slot <= 96, "{slot}");
    assert!(conn > 4 * slot, "{conn}");
}

fn syn_from(i: u32) -> (IpAddr, TcpSegment<'static>) {
    let src = IpAddr::from([203, 0, (i >> 16) as u8, (i >> 8) as u8]);
    (src, seg(1024 + (i & 0xff) as u16, 80, i, 0, SYN, b""))
}

/// A flood larger than the memory budget allows: the table stops growing (its
/// accounted bytes stay within the budget), the oldest SYNs are evicted and
/// counted, and a real connection opened in the middle of it, which completes its
/// handshake, keeps its data.
#[test]
fn memory_budget_evicts_half_open_and_keeps_the_real_connection() {
    let budget = 64 << 10;
    let mut t = TcpTable::new(TcpConfig {
        memory_budget: budget,
        ..TcpConfig::default()
    });
    let mut r = Recorder::default();
    let (mut st, mut log) = (Stats::default(), AnomalyLog::default());
    let server = ip("198.18.1.231");
    let client = ip("10.0.0.1");
    let flood = 20_000u32;
    for i in 0..flood {
        let (src, s) = syn_from(i);
        t.segment(
            &mut r,
            Ts(i64::from(i)),
            0,
            src,
            server,
            &s,
            &mut st,
            &mut log,
        );
        if i == flood / 2 {
            let at = Ts(i64::from(i));
            t.segment(
                &mut r,
                at,
                0,
                client,
                server,
                &seg(1000, 80, 100, 0, SYN, b""),
                &mut st,
                &mut log,
            );
            t.segment(
                &mut r,
                at,
                0,
                server,
                client,
                &seg(80, 1000, 500, 101, SYN | ACK, b""),
                &mut st,
                &mut log,
            );
            t.segment(
                &mut r,
                at,
                0,
                client,
                server,
                &seg(1000, 80, 101, 501, ACK, b""),
                &mut st,
                &mut log,
            );
        }
        assert!(t.memory_bytes() <= budget, "{} at {i}", t.memory_bytes());
    }
    let end = Ts(i64::from(flood));
    t.segment(
        &mut r,
        end,
        0,
        client,
        server,
        &seg(1000, 80, 101, 501, ACK, b"GET /real"),
        &mut st,
        &mut log,
    );
    assert_eq!(st.tcp_untracked, 0);
    assert!(
        st.tcp_evicted_half_open > u64::from(flood) / 2,
        "{}",
        st.tcp_evicted_half_open
    );
    assert_eq!(
        st.tcp_evicted_half_open + t.half_open() as u64,
        u64::from(flood),
        "every flood SYN is tracked or counted as evicted"
    );
    assert_eq!(st.tcp_evicted_established, 0);
    assert!(r.events.iter().any(|e| e.2 == "GET /real"));
    let (meta_ack, rtt) = {
        let (_, m) = t
            .conn_mut(
                0,
                SocketAddr::new(client, 1000),
                SocketAddr::new(server, 80),
            )
            .unwrap();
        (m.handshake.ack, m.handshake.rtt_ns())
    };
    assert_eq!((meta_ack, rtt), (Some(Ts(i64::from(flood / 2))), Some(0)));
    assert!(log
        .samples
        .iter()
        .any(|a| a.kind == "tcp_evicted_half_open"));
}

/// With nothing half-open left, the budget evicts the established connections idle
/// longest: each is closed (its sink state emitted) and counted.
#[test]
fn memory_budget_evicts_established_idle_longest_first() {
    let budget = 256 << 10;
    let mut t = TcpTable::new(TcpConfig {
        memory_budget: budget,
        ..TcpConfig::default()
    });
    let mut r = Recorder::default();
    let (mut st, mut log) = (Stats::default(), AnomalyLog::default());
    let server = ip("198.18.1.231");
    let chunk = vec![b'x'; 1000];
    // Each connection buffers 8 KB ahead of a hole: 40 of them pass the budget.
    for i in 0..40u16 {
        let c = IpAddr::from([10, 0, 0, i as u8]);
        let at = Ts(i64::from(i) * 10);
        t.segment(
            &mut r,
            at,
            0,
            c,
            server,
            &seg(2000 + i, 80, 0, 0, ACK, b"GET /"),
            &mut st,
            &mut log,
        );
        for k in 0..8u32 {
            t.segment(
                &mut r,
                at,
                0,
                c,
                server,
                &seg(2000 + i, 80, 100 + k * 1000, 0, ACK, &chunk),
                &mut st,
                &mut log,
            );
        }
        assert!(
            t.memory_bytes() <= budget + (16 << 10),
            "{}",
            t.memory_bytes()
        );
    }
    assert!(st.tcp_evicted_established > 0);
    // The oldest went first: every closed id is below every id still tracked.
    let open_min = t
        .conns
        .values()
        .filter_map(|s| match s {
            Slot::Open(c) => Some(c.meta.id),
            Slot::HalfOpen(_) => None,
        })
        .min()
        .unwrap();
    assert_eq!(r.closed.len() as u64, st.tcp_evicted_established);
    assert!(r.closed.iter().all(|id| *id < open_min));
    // Their buffered bytes were delivered (with the hole as a gap) at eviction.
    assert!(r.events.iter().any(|e| e.0 == 0 && e.2.starts_with("<gap")));
}

/// A SYN with a new ISN on a half-open 4-tuple is a new generation.
#[test]
fn half_open_port_reuse_is_a_new_connection() {
    let mut t = TcpTable::new(TcpConfig::default());
    let mut r = Recorder::default();
    let (mut st, mut log) = (Stats::default(), AnomalyLog::default());
    let (c, s) = (ip("10.0.0.1"), ip("10.0.0.2"));
    t.segment(
        &mut r,
        Ts(1),
        0,
        c,
        s,
        &seg(1000, 80, 5, 0, SYN, b""),
        &mut st,
        &mut log,
    );
    t.segment(
        &mut r,
        Ts(2),
        0,
        c,
        s,
        &seg(1000, 80, 5, 0, SYN, b""),
        &mut st,
        &mut log,
    );
    assert_eq!((st.tcp_connections, st.tcp_port_reuse), (1, 0));
    t.segment(
        &mut r,
        Ts(3),
        0,
        c,
        s,
        &seg(1000, 80, 900, 0, SYN, b""),
        &mut st,
        &mut log,
    );
    assert_eq!((st.tcp_connections, st.tcp_port_reuse, t.len()), (2, 1, 1));
    t.segment(
        &mut r,
        Ts(4),
        0,
        c,
        s,
        &seg(1000, 80, 901, 0, ACK, b"hi"),
        &mut st,
        &mut log,
    );
    let (_, m) = t
        .conn_mut(0, SocketAddr::new(c, 1000), SocketAddr::new(s, 80))
        .unwrap();
    assert_eq!((m.id, m.first_seq[0], m.first_ts), (1, Some(900), Ts(3)));
    assert_eq!(r.events, vec![(1, Dir::ToServer, "hi".to_string())]);
}

/// Connections last seen at the largest capture time can still be evicted for the
/// budget (the eviction cutoff once excluded the largest value: the eviction loop
/// then never ended).
#[test]
fn memory_budget_evicts_connections_at_the_end_of_time() {
    let budget = 64 << 10;
    let mut t = TcpTable::new(TcpConfig {
        memory_budget: budget,
        ..TcpConfig::default()
    });
    let mut r = Recorder::default();
    let (mut st, mut log) = (Stats::default(), AnomalyLog::default());
    let server = ip("198.18.1.231");
    let chunk = vec![b'x'; 1000];
    for i in 0..20u16 {
        let c = IpAddr::from([10, 0, 1, i as u8]);
        let at = Ts(i64::MAX);
        let first = seg(3000 + i, 80, 0, 0, ACK, b"GET /");
        t.segment(&mut r, at, 0, c, server, &first, &mut st, &mut log);
        for k in 0..8u32 {
            let ahead = seg(3000 + i, 80, 100 + k * 1000, 0, ACK, &chunk);
            t.segment(&mut r, at, 0, c, server, &ahead, &mut st, &mut log);
        }
    }
    assert!(st.tcp_evicted_established > 0);
    assert!(
        t.memory_bytes() <= budget + (16 << 10),
        "{}",
        t.memory_bytes()
    );
}
