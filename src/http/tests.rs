use super::*;
use crate::tcp::{Handshake, StreamPos};

fn meta() -> ConnMeta {
    ConnMeta {
        id: 7,
        vantage: 0,
        client: "198.18.0.2:40000".parse().unwrap(),
        server: "198.18.1.231:8000".parse().unwrap(),
        first_ts: Ts(0),
        last_ts: Ts(0),
        syn_seen: true,
        handshake: Handshake::default(),
        // The handshake was seen: both directions are visible.
        first_seq: [Some(1), Some(1)],
        first_ttl: [None; 2],
    }
}

/// Feeds (direction, bytes) chunks, closes the connection, returns the transactions.
fn run(chunks: &[(Dir, &[u8])]) -> (Vec<HttpTransaction>, Stats) {
    let mut a = HttpAnalyzer::new();
    let m = meta();
    let mut c = a.open(&m);
    for (i, (dir, bytes)) in chunks.iter().enumerate() {
        a.data(
            &mut c,
            &m,
            *dir,
            Ts(i as i64 * 1000),
            bytes,
            StreamPos::default(),
        );
    }
    a.close(c, &m, Ts(1_000_000));
    (a.completed, a.stats)
}

fn summary(t: &HttpTransaction) -> String {
    format!(
        "{} {} -> {}",
        t.request.as_ref().map(|r| &*r.method).unwrap_or("-"),
        t.request.as_ref().map(|r| r.uri.as_str()).unwrap_or("-"),
        t.response
            .as_ref()
            .map(|r| r.status.to_string())
            .unwrap_or("-".into())
    )
}

use Dir::{ToClient as S, ToServer as C};

#[test]
fn keep_alive_sequence() {
    let (t, stats) = run(&[
        (C, b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n"),
        (S, b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"),
        (C, b"GET /b HTTP/1.1\r\nHost: x\r\n\r\n"),
        (S, b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"),
    ]);
    let s: Vec<_> = t.iter().map(summary).collect();
    assert_eq!(s, vec!["GET /a -> 200", "GET /b -> 404"]);
    assert_eq!(t[0].response.as_ref().unwrap().body_bytes, 5);
    assert_eq!(t[0].request.as_ref().unwrap().header("host"), Some("x"));
    assert_eq!(
        (
            stats.http_requests,
            stats.http_responses,
            stats.http_unanswered
        ),
        (2, 2, 0)
    );
}

#[test]
fn pipelined_requests_in_one_segment() {
    let (t, _) = run(&[
        (C, b"GET /1 HTTP/1.1\r\n\r\nGET /2 HTTP/1.1\r\n\r\nHEAD /3 HTTP/1.1\r\n\r\n"),
        (
            S,
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nyesHTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n",
        ),
    ]);
    let s: Vec<_> = t.iter().map(summary).collect();
    assert_eq!(s, vec!["GET /1 -> 200", "GET /2 -> 200", "HEAD /3 -> 200"]);
    assert_eq!(
        t[2].response.as_ref().unwrap().body_bytes,
        0,
        "HEAD response has no body"
    );
}

#[test]
fn chunked_bodies_split_anywhere() {
    let body: &[u8] = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nWiki\r\n5;x=y\r\npedia\r\n0\r\nTrailer: 1\r\n\r\n";
    for split in 1..body.len() {
        let (a, b) = body.split_at(split);
        let (t, stats) = run(&[
            (
                C,
                b"POST /p HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
            ),
            (S, a),
            (S, b),
        ]);
        assert_eq!(t.len(), 1, "split {split}");
        let resp = t[0].response.as_ref().unwrap();
        assert_eq!((resp.status, resp.body_bytes), (200, 9), "split {split}");
        assert_eq!(t[0].request.as_ref().unwrap().body_bytes, 3);
        assert_eq!(stats.http_parse_errors, 0);
    }
}

#[test]
fn continue_and_bodiless_statuses() {
    let (t, stats) = run(&[
        (
            C,
            b"POST /up HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n",
        ),
        (S, b"HTTP/1.1 100 Continue\r\n\r\n"),
        (C, b"abc"),
        (S, b"HTTP/1.1 204 No Content\r\n\r\n"),
        (C, b"GET /c HTTP/1.1\r\n\r\n"),
        (
            S,
            b"HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n",
        ),
    ]);
    let s: Vec<_> = t.iter().map(summary).collect();
    assert_eq!(s, vec!["POST /up -> 204", "GET /c -> 304"]);
    assert_eq!(t[0].interim, vec![100]);
    assert_eq!(t[0].request.as_ref().unwrap().body_bytes, 3);
    assert_eq!(stats.http_interim_responses, 1);
}

#[test]
fn close_delimited_http10_response() {
    let mut a = HttpAnalyzer::new();
    let m = meta();
    let mut c = a.open(&m);
    a.data(
        &mut c,
        &m,
        C,
        Ts(1),
        b"GET / HTTP/1.0\r\n\r\n",
        StreamPos::default(),
    );
    a.data(
        &mut c,
        &m,
        S,
        Ts(2),
        b"HTTP/1.0 200 OK\r\nServer: BaseHTTP/0.6\r\n\r\nwelcome ",
        StreamPos::default(),
    );
    a.data(&mut c, &m, S, Ts(3), b"from 8888", StreamPos::default());
    assert!(a.completed.is_empty(), "not complete before the FIN");
    a.end(&mut c, &m, S, Ts(4), End::Fin);
    assert_eq!(a.completed.len(), 1);
    let r = a.completed[0].response.as_ref().unwrap();
    assert_eq!((r.body_bytes, r.last_ts), (17, Ts(4)));
    assert_eq!(r.version, "HTTP/1.0");
}

#[test]
fn gap_inside_body_keeps_framing() {
    let mut a = HttpAnalyzer::new();
    let m = meta();
    let mut c = a.open(&m);
    a.data(
        &mut c,
        &m,
        C,
        Ts(1),
        b"GET /1 HTTP/1.1\r\n\r\nGET /2 HTTP/1.1\r\n\r\n",
        StreamPos::default(),
    );
    a.data(
        &mut c,
        &m,
        S,
        Ts(2),
        b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nab",
        StreamPos::default(),
    );
    a.gap(&mut c, &m, S, Ts(3), 5);
    a.data(
        &mut c,
        &m,
        S,
        Ts(4),
        b"abcHTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n",
        StreamPos::default(),
    );
    let s: Vec<_> = a.completed.iter().map(summary).collect();
    assert_eq!(s, vec!["GET /1 -> 200", "GET /2 -> 201"]);
    assert!(a.completed[0].response.as_ref().unwrap().incomplete);
    assert!(!a.completed[1].response.as_ref().unwrap().incomplete);
}

#[test]
fn gap_in_headers_resyncs_at_next_message() {
    let mut a = HttpAnalyzer::new();
    let m = meta();
    let mut c = a.open(&m);
    a.data(
        &mut c,
        &m,
        C,
        Ts(1),
        b"GET /lost HTTP/1.1\r\nHo",
        StreamPos::default(),
    );
    a.gap(&mut c, &m, C, Ts(2), 100);
    a.data(
        &mut c,
        &m,
        C,
        Ts(3),
        b"tail of headers\r\n\r\nGET /next HTTP/1.1\r\n\r\n",
        StreamPos::default(),
    );
    a.data(
        &mut c,
        &m,
        S,
        Ts(4),
        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
        StreamPos::default(),
    );
    a.data(
        &mut c,
        &m,
        S,
        Ts(5),
        b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n",
        StreamPos::default(),
    );
    let s: Vec<_> = a.completed.iter().map(summary).collect();
    // The cut request is still reported (its start line survived), marked incomplete.
    assert_eq!(s, vec!["GET /lost -> 200", "GET /next -> 404"]);
    assert!(a.completed[0].request.as_ref().unwrap().incomplete);
    assert!(!a.completed[1].request.as_ref().unwrap().incomplete);
    assert!(a.stats.http_resyncs >= 1);
}

#[test]
fn upgrade_stops_parsing() {
    let (t, stats) = run(&[
        (
            C,
            b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
        ),
        (
            S,
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n\x81\x05hello",
        ),
        (C, b"\x81\x85garbage"),
    ]);
    assert_eq!(
        t.iter().map(summary).collect::<Vec<_>>(),
        vec!["GET /ws -> 101"]
    );
    assert_eq!((stats.http_upgrades, stats.http_parse_errors), (1, 0));
}

#[test]
fn roles_swap_when_the_syn_side_answers() {
    let (t, _) = run(&[
        (S, b"GET /x HTTP/1.1\r\n\r\n"),
        (C, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"),
    ]);
    assert_eq!(t.len(), 1);
    assert_eq!(t[0].client, meta().server);
    assert_eq!(summary(&t[0]), "GET /x -> 200");
}

#[test]
fn non_http_stream_is_muted() {
    let mut a = HttpAnalyzer::new();
    let m = meta();
    let mut c = a.open(&m);
    assert!(!a.data(
        &mut c,
        &m,
        C,
        Ts(1),
        b"\x16\x03\x01\x02\x00",
        StreamPos::default()
    ));
    assert_eq!(a.stats.http_non_http_streams, 1);
}

#[test]
fn unanswered_requests_are_emitted_at_close() {
    let (t, stats) = run(&[(C, b"GET /a HTTP/1.1\r\n\r\n")]);
    assert_eq!(t.len(), 1);
    assert!(t[0].response.is_none());
    assert_eq!(stats.http_unanswered, 1);
}

#[test]
fn header_block_split_across_segments() {
    let (t, _) = run(&[
        (C, b"GET /split HTTP/1.1\r\nHost: a"),
        (C, b"b\r\nX-Forwarded-For: 1.2.3.4\r\n"),
        (C, b"\r\n"),
        (S, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"),
    ]);
    let req = t[0].request.as_ref().unwrap();
    assert_eq!(req.header("Host"), Some("ab"));
    assert_eq!(req.header("x-forwarded-for"), Some("1.2.3.4"));
}

#[test]
fn oversized_header_block_is_bounded() {
    let mut a = HttpAnalyzer::new();
    let m = meta();
    let mut c = a.open(&m);
    a.data(
        &mut c,
        &m,
        C,
        Ts(1),
        b"GET / HTTP/1.1\r\n",
        StreamPos::default(),
    );
    let filler = vec![b'a'; 8192];
    for _ in 0..20 {
        a.data(&mut c, &m, C, Ts(2), &filler, StreamPos::default());
    }
    assert_eq!(a.stats.http_header_overflows, 1);
}

#[test]
fn chunk_size_overflow_is_an_error_not_a_panic() {
    let (t, stats) = run(&[
        (
            C,
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nFFFFFFFFFFFFFFFFF\r\n",
        ),
        (S, b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n"),
    ]);
    assert!(stats.http_parse_errors >= 1);
    assert_eq!(t.len(), 1);
}

mod props {
    use super::*;
    use proptest::prelude::*;

    /// Bytes that are often UTF-8 and sometimes not, with multi-byte characters that
    /// a cut between two headers may split.
    fn header_bytes() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            any::<String>().prop_map(String::into_bytes),
            proptest::collection::vec(any::<u8>(), 0..12),
            proptest::collection::vec(prop_oneof![Just(0xC3u8), Just(0xA9), Just(b'a')], 0..6),
        ]
    }

    proptest! {
        /// One UTF-8 check for the block keeps exactly what one check per name and
        /// value keeps.
        #[test]
        fn headers_builder_equals_push(pairs in proptest::collection::vec((header_bytes(), header_bytes()), 0..8)) {
            let mut one_by_one = crate::http::Headers::default();
            let mut built = crate::http::HeadersBuilder::default();
            for (name, value) in &pairs {
                one_by_one.push(name, value);
                built.push(name, value);
            }
            prop_assert_eq!(built.finish(), one_by_one);
        }
    }

    const CONVERSATION: (&[u8], &[u8]) = (
        b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nPOST /b HTTP/1.1\r\nContent-Length: 4\r\n\r\nbody\
GET /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabcHTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n\
5\r\nhello\r\n0\r\n\r\nHTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n",
    );

    fn chunks(data: &[u8], cuts: &[usize]) -> Vec<Vec<u8>> {
        let mut points: Vec<usize> = cuts.iter().map(|c| c % (data.len() + 1)).collect();
        points.sort_unstable();
        points.dedup();
        let mut out = Vec::new();
        let mut last = 0;
        for p in points.into_iter().chain(std::iter::once(data.len())) {
            if p > last {
                out.push(data[last..p].to_vec());
                last = p;
            }
        }
        out
    }

    proptest! {
        /// However the streams are segmented, the same transactions come out.
        #[test]
        fn segmentation_does_not_matter(req_cuts in prop::collection::vec(any::<usize>(), 0..12),
                                        resp_cuts in prop::collection::vec(any::<usize>(), 0..12)) {
            let mut feed: Vec<(Dir, Vec<u8>)> = Vec::new();
            for c in chunks(CONVERSATION.0, &req_cuts) { feed.push((C, c)); }
            for c in chunks(CONVERSATION.1, &resp_cuts) { feed.push((S, c)); }
            let borrowed: Vec<(Dir, &[u8])> = feed.iter().map(|(d, c)| (*d, c.as_slice())).collect();
            let (t, stats) = run(&borrowed);
            let s: Vec<_> = t.iter().map(summary).collect();
            prop_assert_eq!(s, vec!["GET /a -> 200", "POST /b -> 201", "GET /c -> 204"]);
            prop_assert_eq!(&t[2].interim, &vec![100]);
            prop_assert_eq!(stats.http_parse_errors, 0);
        }

        /// Arbitrary bytes, gaps and ends in any order never panic.
        #[test]
        fn arbitrary_input_never_panics(ops in prop::collection::vec(
            (0u8..4, any::<bool>(), prop::collection::vec(any::<u8>(), 0..64), 0u64..100), 0..40)) {
            let mut a = HttpAnalyzer::new();
            let m = meta();
            let mut c = a.open(&m);
            for (i, (op, to_server, bytes, n)) in ops.into_iter().enumerate() {
                let dir = if to_server { C } else { S };
                let ts = Ts(i as i64);
                match op {
                    0 => { a.data(&mut c, &m, dir, ts, &bytes, StreamPos::default()); }
                    1 => { let mut b = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n".to_vec(); b.extend(bytes); a.data(&mut c, &m, dir, ts, &b, StreamPos::default()); }
                    2 => a.gap(&mut c, &m, dir, ts, n),
                    _ => a.end(&mut c, &m, dir, ts, End::Fin),
                }
            }
            a.close(c, &m, Ts(1_000));
        }
    }
}

const GET_A: &[u8] = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n";

/// An analyzer with one connection on which `GET /a` was sent at 1 µs, the capture
/// having shown the client's direction and, when `reply_seen`, the server's.
fn waiting_request(reply_seen: bool) -> (HttpAnalyzer, HttpConn, ConnMeta) {
    let mut a = HttpAnalyzer::new();
    let m = ConnMeta {
        first_seq: [None, None],
        ..meta()
    };
    let mut c = a.open(&m);
    a.direction_seen(&mut c, &m, Dir::ToServer, Ts(0));
    if reply_seen {
        a.direction_seen(&mut c, &m, Dir::ToClient, Ts(0));
    }
    send(&mut a, &mut c, &m, Dir::ToServer, 1_000, GET_A);
    (a, c, m)
}

fn send(a: &mut HttpAnalyzer, c: &mut HttpConn, m: &ConnMeta, dir: Dir, ts: i64, data: &[u8]) {
    a.data(c, m, dir, Ts(ts), data, StreamPos::default());
}

/// A connection whose replies are captured elsewhere (one-way here): each request
/// is done once the next one is sent, and one left waiting holds correlation back
/// for the grace time only.
#[test]
fn one_way_connection_does_not_hold_correlation() {
    let (mut a, mut c, m) = waiting_request(false);
    assert!(a.completed.is_empty(), "the first request waits");
    assert_eq!(a.pending_floor(Ts(2_000), i64::MAX), Some(Ts(1_000)));
    send(&mut a, &mut c, &m, Dir::ToServer, 5_000, GET_A);
    assert_eq!(a.completed.len(), 1, "the next request ends the first");
    assert!(a.completed[0].response.is_none());
    assert_eq!(a.pending_floor(Ts(6_000), i64::MAX), Some(Ts(5_000)));
    // Past the grace time the waiting request no longer holds the floor.
    let later = Ts(5_000 + ONE_WAY_GRACE_NS + 1);
    assert_eq!(a.pending_floor(later, i64::MAX), None);
    assert_eq!(a.stats.http_pending_one_way, 1);
}

/// Once the other direction shows up, waiting requests wait their full time.
#[test]
fn reply_direction_seen_late_makes_requests_wait_fully() {
    let (mut a, mut c, m) = waiting_request(false);
    a.direction_seen(&mut c, &m, Dir::ToClient, Ts(2_000));
    let later = Ts(1_000 + ONE_WAY_GRACE_NS + 1);
    assert_eq!(a.pending_floor(later, i64::MAX), Some(Ts(1_000)));
    let ok = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
    send(&mut a, &mut c, &m, Dir::ToClient, 3_000, ok);
    assert_eq!(a.completed.len(), 1);
    assert_eq!(
        a.completed[0].response.as_ref().map(|r| r.status),
        Some(200)
    );
    assert_eq!(a.pending_floor(later, i64::MAX), None);
}

/// A gap in the replies (packets the capture lost) means the responses of the
/// requests still waiting may be gone: they hold correlation back for the grace time
/// only.
#[test]
fn reply_gap_shortens_the_wait() {
    let (mut a, mut c, m) = waiting_request(true);
    let later = Ts(1_000 + ONE_WAY_GRACE_NS + 1);
    assert_eq!(
        a.pending_floor(Ts(2_000), i64::MAX),
        Some(Ts(1_000)),
        "it waits"
    );
    a.gap(&mut c, &m, Dir::ToClient, Ts(3_000), 100);
    assert_eq!(a.pending_floor(later, i64::MAX), None, "not past the grace");
    assert_eq!(a.stats.http_pending_one_way, 1);
    // Without the gap it would have waited the full time.
    let (mut b, _, _) = waiting_request(true);
    assert_eq!(b.pending_floor(later, i64::MAX), Some(Ts(1_000)));
}

/// A request after which its connection carried nothing (not even an ACK) past the
/// grace time stops holding correlation back; one the server acknowledged (a slow
/// server) keeps waiting.
#[test]
fn silent_connection_releases_its_request_acknowledged_one_waits() {
    let later = Ts(1_000 + ONE_WAY_GRACE_NS + 1);
    for acked in [false, true] {
        let (mut a, c, mut m) = waiting_request(true);
        m.last_ts = if acked { Ts(1_500) } else { Ts(1_000) };
        let waiting = a.waiting_past_grace(later, 64);
        assert_eq!(waiting.len(), 1);
        assert_eq!(waiting[0].1, (m.vantage, m.client, m.server));
        a.release_if_silent(waiting[0].0, &c, &m);
        let floor = a.pending_floor(later, i64::MAX);
        if acked {
            assert_eq!(floor, Some(Ts(1_000)), "acknowledged: it waits");
            assert_eq!(a.stats.http_pending_silent, 0);
        } else {
            assert_eq!(floor, None, "silent: released");
            assert_eq!(a.stats.http_pending_silent, 1);
        }
    }
}

/// After a gap, a request whose request line is longer than the segment that starts
/// it (a long URI) is still found: its first segment has no ` HTTP/1.` to check.
#[test]
fn gap_then_request_line_longer_than_a_segment() {
    let mut a = HttpAnalyzer::new();
    let m = meta();
    let mut c = a.open(&m);
    a.data(
        &mut c,
        &m,
        C,
        Ts(1),
        b"GET /a HTTP/1.1\r\n\r\n",
        StreamPos::default(),
    );
    a.data(
        &mut c,
        &m,
        S,
        Ts(2),
        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
        StreamPos::default(),
    );
    a.gap(&mut c, &m, C, Ts(3), 1200);
    let uri = format!("/long?{}", "x".repeat(3000));
    let line = format!("GET {uri} HTTP/1.1\r\nHost: h\r\n\r\n");
    for (i, part) in line.as_bytes().chunks(1000).enumerate() {
        a.data(&mut c, &m, C, Ts(4 + i as i64), part, StreamPos::default());
    }
    a.data(
        &mut c,
        &m,
        S,
        Ts(9),
        b"HTTP/1.1 204 No Content\r\n\r\n",
        StreamPos::default(),
    );
    a.close(c, &m, Ts(10));
    let s: Vec<_> = a.completed.iter().map(summary).collect();
    assert_eq!(
        s,
        vec!["GET /a -> 200".to_string(), format!("GET {uri} -> 204")]
    );
}

/// Without the waiting-request bookkeeping (transactions-only runs), nothing holds
/// the floor, and the transactions are those of an analyzer that keeps it.
#[test]
fn without_pending_floor_tracks_nothing_and_completes_the_same() {
    let run = |mut a: HttpAnalyzer| {
        let m = ConnMeta {
            first_seq: [None, None],
            ..meta()
        };
        let mut c = a.open(&m);
        a.direction_seen(&mut c, &m, Dir::ToServer, Ts(0));
        a.direction_seen(&mut c, &m, Dir::ToClient, Ts(0));
        send(&mut a, &mut c, &m, Dir::ToServer, 1_000, GET_A);
        send(&mut a, &mut c, &m, Dir::ToServer, 2_000, GET_A);
        let floor = a.pending_floor(Ts(3_000), i64::MAX);
        let reply = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
        send(&mut a, &mut c, &m, Dir::ToClient, 4_000, reply);
        send(&mut a, &mut c, &m, Dir::ToClient, 5_000, reply);
        let done: Vec<_> = a
            .completed
            .iter()
            .map(|t| {
                let q = t.request.as_ref().unwrap();
                let r = t.response.as_ref().unwrap();
                (t.id, q.first_ts, r.status, r.last_ts)
            })
            .collect();
        (floor, done, a.pending_floor(Ts(6_000), i64::MAX))
    };
    let (floor, done, after) = run(HttpAnalyzer::new());
    assert_eq!(floor, Some(Ts(1_000)));
    assert_eq!(after, None);
    assert_eq!(done.len(), 2);
    let (floor, untracked, _) = run(HttpAnalyzer::new().without_pending_floor());
    assert_eq!(floor, None, "nothing tracked");
    assert_eq!(untracked, done);
}

/// Keeping only the Host header: the same Host (the first, cut as `All` cuts it,
/// within the kept headers), the same framing, the same counters.
#[test]
fn keeping_only_host_gives_the_same_host_and_counters() {
    let long = "v".repeat(MAX_HEADER_VALUE + 10);
    let many: String = (0..MAX_KEPT_HEADERS)
        .map(|i| format!("X-{i}: {i}\r\n"))
        .collect();
    let requests = [
        format!("GET /a HTTP/1.1\r\nX-Long: {long}\r\nhOsT: first\r\nHost: second\r\n\r\n")
            .into_bytes(),
        format!("GET /b HTTP/1.1\r\nHost: {long}\r\n\r\n").into_bytes(),
        b"GET /c HTTP/1.1\r\nAccept: */*\r\n\r\n".to_vec(),
        // Past the kept headers: not kept either way.
        format!("GET /d HTTP/1.1\r\n{many}Host: late\r\n\r\n").into_bytes(),
        b"POST /e HTTP/1.1\r\nHost: h\xc3\r\nContent-Length: 3\r\n\r\nabc".to_vec(),
    ];
    let run = |kept: KeptHeaders| {
        let mut a = HttpAnalyzer::new().keeping_headers(kept);
        let m = meta();
        let mut c = a.open(&m);
        for (i, r) in requests.iter().enumerate() {
            let ts = Ts(i as i64 * 2_000);
            send(&mut a, &mut c, &m, Dir::ToServer, ts.0, r);
            let reply = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
            send(&mut a, &mut c, &m, Dir::ToClient, ts.0 + 1_000, reply);
        }
        let hosts: Vec<_> = a
            .completed
            .iter()
            .map(|t| {
                let q = t.request.as_ref().unwrap();
                let r = t.response.as_ref().unwrap();
                (q.header("host").map(str::to_owned), q.body_bytes, r.last_ts)
            })
            .collect();
        (hosts, a.stats, a.completed)
    };
    let (all, all_stats, all_t) = run(KeptHeaders::All);
    let (host, host_stats, host_t) = run(KeptHeaders::Host);
    assert_eq!(all.len(), requests.len());
    assert_eq!(all[0].0.as_deref(), Some("first"));
    assert_eq!(all[2].0, None);
    assert_eq!(all[3].0, None);
    assert_eq!(all[4].0.as_deref(), Some("h\u{fffd}"));
    assert_eq!(host, all);
    assert_eq!(host_stats, all_stats);
    assert!(host_stats.http_headers_dropped >= 3);
    assert_eq!(host_t[0].request.as_ref().unwrap().headers.len(), 1);
    assert!(all_t[0].request.as_ref().unwrap().headers.len() > 1);
}
