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
    // The oldest SYNs went first: the last three of the flood are the ones left.
    assert_eq!(r.closed.len(), 47);
    assert!(r.closed.windows(2).all(|w| w[0] < w[1]));
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
    assert!(t.syn_order.len() <= 2 * t.len() + 1024);
}
