//! Tests of `record`, and a small transaction builder the other correlation
//! submodules' tests share.

use super::*;
use crate::http::{Request, Response};
use crate::tcp::Handshake;

/// Nanoseconds of `n` milliseconds.
pub(crate) fn ms(n: i64) -> i64 {
    n * 1_000_000
}

/// A socket address from text.
pub(crate) fn sa(s: &str) -> SocketAddr {
    s.parse().expect("socket address")
}

/// An IP address from text.
pub(crate) fn ip(s: &str) -> IpAddr {
    s.parse().expect("IP address")
}

fn headers(list: &[(String, String)]) -> Headers {
    let mut h = Headers::default();
    for (n, v) in list {
        h.push(n.as_bytes(), v.as_bytes());
    }
    h
}

/// A response: status, body bytes, headers, first and last byte (ns).
pub(crate) type RespSpec = (u16, u64, Vec<(String, String)>, i64, i64);

/// A synthetic transaction: `GET uri` from 10.0.0.1:40000 to 10.0.0.2:80, request
/// over [0, 1] ms, a 200 with a 100-byte body over [5, 6] ms, TTL 64, unless changed.
#[derive(Clone)]
pub(crate) struct Tx {
    pub method: String,
    pub uri: String,
    pub req_headers: Vec<(String, String)>,
    /// First and last request byte (ns).
    pub req: (i64, i64),
    pub resp: Option<RespSpec>,
    pub client: SocketAddr,
    pub server: SocketAddr,
    pub syn: Option<i64>,
    pub index_in_conn: u32,
    pub ttl: Option<u8>,
    pub vantage: u32,
}

impl Tx {
    pub fn get(uri: &str) -> Tx {
        Tx {
            method: "GET".into(),
            uri: uri.into(),
            req_headers: Vec::new(),
            req: (0, ms(1)),
            resp: Some((200, 100, Vec::new(), ms(5), ms(6))),
            client: sa("10.0.0.1:40000"),
            server: sa("10.0.0.2:80"),
            syn: None,
            index_in_conn: 0,
            ttl: Some(64),
            vantage: 0,
        }
    }

    pub fn method(mut self, m: &str) -> Tx {
        self.method = m.into();
        self
    }

    pub fn header(mut self, n: &str, v: &str) -> Tx {
        self.req_headers.push((n.into(), v.into()));
        self
    }

    pub fn resp_header(mut self, n: &str, v: &str) -> Tx {
        self.resp
            .as_mut()
            .expect("has a response")
            .2
            .push((n.into(), v.into()));
        self
    }

    pub fn status(mut self, s: u16) -> Tx {
        self.resp.as_mut().expect("has a response").0 = s;
        self
    }

    pub fn body(mut self, b: u64) -> Tx {
        self.resp.as_mut().expect("has a response").1 = b;
        self
    }

    pub fn no_response(mut self) -> Tx {
        self.resp = None;
        self
    }

    /// Request first/last byte and response first/last byte (ns).
    pub fn at(mut self, q0: i64, q1: i64, r0: i64, r1: i64) -> Tx {
        self.req = (q0, q1);
        if let Some(r) = self.resp.as_mut() {
            r.3 = r0;
            r.4 = r1;
        }
        self
    }

    pub fn between(mut self, client: &str, server: &str) -> Tx {
        self.client = sa(client);
        self.server = sa(server);
        self
    }

    pub fn ttl(mut self, ttl: u8) -> Tx {
        self.ttl = Some(ttl);
        self
    }

    pub fn build(&self, id: u64) -> HttpTransaction {
        HttpTransaction {
            id,
            conn_id: id,
            vantage: self.vantage,
            client: self.client,
            server: self.server,
            request: Some(Request {
                method: self.method.clone().into(),
                uri: self.uri.clone(),
                version: "HTTP/1.1",
                headers: headers(&self.req_headers),
                body_bytes: 0,
                first_ts: Ts(self.req.0),
                last_ts: Ts(self.req.1),
                incomplete: false,
                wire_pos: None,
            }),
            response: self
                .resp
                .as_ref()
                .map(|(status, body, h, r0, r1)| Response {
                    status: *status,
                    reason: "OK".into(),
                    version: "HTTP/1.1",
                    headers: headers(h),
                    body_bytes: *body,
                    first_ts: Ts(*r0),
                    last_ts: Ts(*r1),
                    incomplete: false,
                }),
            interim: Vec::new(),
            index_in_conn: self.index_in_conn,
            conn_seq: [None, None],
            handshake: Handshake {
                syn: self.syn.map(Ts),
                ..Handshake::default()
            },
            conn_ttl: [self.ttl, None],
            segments: Vec::new(),
            socks_target: None,
        }
    }

    pub fn msg(&self, names: &mut NameBook) -> Msg {
        Msg::from_transaction(&self.build(0), names)
    }

    /// Its view in capture `file`, arriving at its last byte, unshifted.
    pub fn view(&self, id: u64, file: usize, names: &mut NameBook) -> View {
        let t = self.build(id);
        let arrived = Ts(self.resp.as_ref().map_or(self.req.1, |r| r.4));
        let msg = Rc::new(Msg::from_transaction(&t, names));
        View::new(&t, file, arrived, 0, msg).expect("has a request")
    }
}

fn msg(t: &Tx) -> Msg {
    t.msg(&mut NameBook::default())
}

// --- hashing helpers ---

#[test]
fn hash_of_is_deterministic_and_keeps_part_boundaries() {
    assert_eq!(hash_of(&[b"a", b"bc"]), hash_of(&[b"a", b"bc"]));
    assert_ne!(hash_of(&[b"a", b"bc"]), hash_of(&[b"a", b"bd"]));
    // Parts are length-prefixed: moving a boundary changes the hash.
    assert_ne!(hash_of(&[b"ab", b"c"]), hash_of(&[b"a", b"bc"]));
    assert_ne!(hash_of(&[b"abc"]), hash_of(&[b"abc", b""]));
}

#[test]
fn lower_hash_ignores_ascii_case_only() {
    assert_eq!(lower_hash("X-Request-ID"), lower_hash("x-request-id"));
    assert_ne!(lower_hash("x-request-id"), lower_hash("x-request-idx"));
    assert_ne!(lower_hash("x-request-id"), lower_hash("x_request_id"));
}

#[test]
fn header_name_case_does_not_change_evidence_but_value_case_does() {
    let a = msg(&Tx::get("/").header("X-Request-ID", "abc"));
    let b = msg(&Tx::get("/").header("x-request-id", "abc"));
    let c = msg(&Tx::get("/").header("x-request-id", "ABC"));
    assert_eq!(a.req_pairs[0].pair, b.req_pairs[0].pair);
    assert!(a.req_has(&b.req_pairs[0]));
    assert!(!a.req_has(&c.req_pairs[0]));
}

#[test]
fn hop_by_hop_and_forwarding_headers_are_not_evidence() {
    let m = msg(&Tx::get("/")
        .header("HOST", "example")
        .header("Connection", "keep-alive")
        .header("X-Forwarded-For", "1.2.3.4")
        .header("X-Real-IP", "1.2.3.4")
        .header("Via", "1.1 proxy")
        .header("User-Agent", "curl/8")
        .resp_header("Transfer-Encoding", "chunked")
        .resp_header("Content-Type", "text/plain"));
    let mut names = NameBook::default();
    let ua = Tx::get("/").header("user-agent", "curl/8").msg(&mut names);
    assert_eq!(m.req_pairs.len(), 1, "only User-Agent is evidence");
    assert_eq!(m.req_pairs[0].name, lower_hash("user-agent"));
    assert!(m.req_has(&ua.req_pairs[0]));
    let r = m.resp.as_ref().unwrap();
    assert_eq!(r.pairs.len(), 1);
    assert_eq!(r.pairs[0].name, lower_hash("content-type"));
    // ...but the forwarding headers are parsed on their own.
    assert!(m.xff.is_some() && m.real_ip.is_some());
}

#[test]
fn only_the_first_header_of_a_name_is_matched() {
    let twice = msg(&Tx::get("/").header("X-A", "1").header("X-A", "2"));
    assert!(twice.req_pairs[0].first);
    assert!(!twice.req_pairs[1].first);
    let one = msg(&Tx::get("/").header("X-A", "1"));
    let two = msg(&Tx::get("/").header("X-A", "2"));
    assert!(twice.req_has(&one.req_pairs[0]));
    assert!(
        !twice.req_has(&two.req_pairs[0]),
        "second X-A is not what get() finds"
    );
    let rtwice = msg(&Tx::get("/").resp_header("X-B", "1").resp_header("X-B", "2"));
    let r2 = msg(&Tx::get("/").resp_header("X-B", "2"));
    let r1 = msg(&Tx::get("/").resp_header("X-B", "1"));
    let resp = rtwice.resp.as_ref().unwrap();
    assert!(resp.has(&r1.resp.as_ref().unwrap().pairs[0]));
    assert!(!resp.has(&r2.resp.as_ref().unwrap().pairs[0]));
}

#[test]
fn namebook_keeps_the_first_spelling_and_falls_back_to_the_hash() {
    let mut names = NameBook::default();
    Tx::get("/").header("X-Trace-Id", "1").msg(&mut names);
    Tx::get("/").header("x-trace-id", "2").msg(&mut names);
    assert_eq!(names.name(lower_hash("x-trace-id")), "X-Trace-Id");
    assert_eq!(names.name(0x1234), "#0000000000001234");
}

// --- Msg::from_transaction ---

#[test]
fn xff_keeps_the_addresses_that_parse() {
    let m = msg(&Tx::get("/").header(
        "X-Forwarded-For",
        " 203.0.113.7, bogus,2001:db8::1 ,10.0.0.1",
    ));
    assert_eq!(
        m.xff.as_deref(),
        Some(&[ip("203.0.113.7"), ip("2001:db8::1"), ip("10.0.0.1")][..])
    );
    let none_parse = msg(&Tx::get("/").header("x-forwarded-for", "unknown"));
    assert_eq!(none_parse.xff.as_deref(), Some(&[][..]));
    assert!(msg(&Tx::get("/")).xff.is_none());
    // Only the first X-Forwarded-For header is read.
    let two = msg(&Tx::get("/")
        .header("X-Forwarded-For", "1.1.1.1")
        .header("X-Forwarded-For", "2.2.2.2"));
    assert_eq!(two.xff.as_deref(), Some(&[ip("1.1.1.1")][..]));
}

#[test]
fn real_ip_distinguishes_absent_from_unparsable() {
    assert_eq!(
        msg(&Tx::get("/").header("X-Real-IP", " 10.1.2.3 ")).real_ip,
        Some(Some(ip("10.1.2.3")))
    );
    assert_eq!(
        msg(&Tx::get("/").header("x-real-ip", "nope")).real_ip,
        Some(None)
    );
    assert_eq!(msg(&Tx::get("/")).real_ip, None);
}

#[test]
fn response_fields_server_kong_and_backend_addresses() {
    let m = msg(&Tx::get("/")
        .status(503)
        .body(42)
        .resp_header("Server", "nginx/1.25.3")
        .resp_header("Server", "second")
        .resp_header("Date", "Mon, 01 Jan 2024 10:00:00 GMT")
        .resp_header("Backend-Server", "10.0.0.3:8888, [2001:db8::5]:81"));
    let r = m.resp.as_ref().unwrap();
    assert_eq!((r.status, r.body_bytes), (503, 42));
    assert_eq!(r.server.as_deref(), Some("nginx/1.25.3"));
    assert!(r.backend_server);
    assert!(!r.kong);
    let addrs: Vec<SocketAddr> = r.addrs.iter().map(|(_, a)| *a).collect();
    assert_eq!(addrs, vec![sa("10.0.0.3:8888"), sa("[2001:db8::5]:81")]);
    // The address's pair is the Backend-Server header's.
    assert_eq!(r.addrs[0].0.name, lower_hash("backend-server"));
    assert!(r.has(&r.addrs[0].0));

    let plain = msg(&Tx::get("/"));
    let r = plain.resp.as_ref().unwrap();
    assert!(!r.backend_server && !r.kong && r.server.is_none() && r.addrs.is_empty());
}

#[test]
fn kong_from_via_or_x_kong_headers() {
    let via = msg(&Tx::get("/").resp_header("Via", "1.1 Kong/3.4.0"));
    assert!(via.resp.as_ref().unwrap().kong);
    let x = msg(&Tx::get("/").resp_header("X-Kong-Upstream-Latency", "3"));
    assert!(x.resp.as_ref().unwrap().kong);
    let other_via = msg(&Tx::get("/").resp_header("Via", "1.1 varnish"));
    assert!(!other_via.resp.as_ref().unwrap().kong);
    // The prefix alone is not a Kong header.
    let bare = msg(&Tx::get("/").resp_header("X-Kong-", "1"));
    assert!(!bare.resp.as_ref().unwrap().kong);
}

#[test]
fn digest_and_uri_hash() {
    let base = Tx::get("/a").header("X-A", "1");
    assert_eq!(msg(&base).digest, msg(&base.clone()).digest);
    assert_ne!(
        msg(&base).digest,
        msg(&Tx::get("/b").header("X-A", "1")).digest
    );
    assert_ne!(
        msg(&base).digest,
        msg(&base.clone().header("X-B", "2")).digest
    );
    assert_ne!(msg(&base).digest, msg(&base.clone().status(404)).digest);
    assert_ne!(msg(&base).digest, msg(&base.clone().body(7)).digest);
    // Times and addresses are not content.
    let moved = base
        .clone()
        .at(ms(10), ms(11), ms(20), ms(21))
        .between("1.1.1.1:1", "2.2.2.2:2");
    assert_eq!(msg(&base).digest, msg(&moved).digest);

    assert_eq!(
        msg(&base).uri_hash,
        msg(&Tx::get("/a").method("POST")).uri_hash
    );
    assert_ne!(msg(&base).uri_hash, msg(&Tx::get("/b")).uri_hash);
    let mut t = base.build(1);
    t.request = None;
    let m = Msg::from_transaction(&t, &mut NameBook::default());
    assert!(!m.has_request);
    assert_eq!((m.uri_hash, &*m.method, &*m.uri), (0, "", ""));
    assert!(m.resp.is_some());
}

#[test]
fn long_uris_are_cut_at_a_char_boundary_but_hashed_whole() {
    let head = "a".repeat(2047);
    let one = msg(&Tx::get(&format!("{head}éX")));
    let two = msg(&Tx::get(&format!("{head}éY")));
    assert_eq!(&*one.uri, format!("{head}…"));
    assert_eq!(one.uri, two.uri);
    assert_ne!(one.uri_hash, two.uri_hash);
    let fits = "b".repeat(2048);
    assert_eq!(&*msg(&Tx::get(&fits)).uri, fits);
}

// --- View ---

#[test]
fn view_start_is_the_syn_for_a_connections_first_request_only() {
    let mut names = NameBook::default();
    let mut t = Tx::get("/").at(ms(10), ms(11), ms(20), ms(21));
    t.syn = Some(ms(8));
    assert_eq!(t.view(1, 0, &mut names).start, Ts(ms(8)));
    t.index_in_conn = 1;
    assert_eq!(t.view(1, 0, &mut names).start, Ts(ms(10)));
    t.index_in_conn = 0;
    t.syn = Some(ms(12)); // a SYN after the request: not this request's.
    assert_eq!(t.view(1, 0, &mut names).start, Ts(ms(10)));
    t.syn = None;
    assert_eq!(t.view(1, 0, &mut names).start, Ts(ms(10)));
}

#[test]
fn view_times_shift_and_reshift() {
    let mut names = NameBook::default();
    let tx = Tx::get("/").at(ms(10), ms(11), ms(20), ms(21)).build(7);
    let msg = Rc::new(Msg::from_transaction(&tx, &mut names));
    let v = View::new(&tx, 2, Ts(ms(30)), ms(3), msg.clone()).unwrap();
    assert_eq!((v.tx, v.file, v.ttl, v.shift), (7, 2, 64, ms(3)));
    assert_eq!((v.req, v.req_end), (Ts(ms(7)), Ts(ms(8))));
    assert_eq!((v.resp, v.resp_end), (Some(Ts(ms(17))), Some(Ts(ms(18)))));
    assert_eq!((v.start, v.arrived), (Ts(ms(7)), Ts(ms(27))));
    assert_eq!(v.end(), Ts(ms(18)));

    let mut r = v.clone();
    r.reshift(-ms(2));
    let direct = View::new(&tx, 2, Ts(ms(30)), -ms(2), msg.clone()).unwrap();
    assert_eq!(
        (r.req, r.req_end, r.resp, r.resp_end, r.start, r.arrived, r.shift),
        (
            direct.req,
            direct.req_end,
            direct.resp,
            direct.resp_end,
            direct.start,
            direct.arrived,
            direct.shift
        )
    );
    assert_eq!(r.req, Ts(ms(12)));
    r.reshift(ms(3));
    assert_eq!(
        (r.req, r.arrived, r.resp_end),
        (v.req, v.arrived, v.resp_end)
    );

    // Arrival is never before the request's last byte.
    let early = View::new(&tx, 0, Ts(ms(1)), 0, msg).unwrap();
    assert_eq!(early.arrived, Ts(ms(11)));
}

#[test]
fn view_without_response_ends_when_it_arrived_and_needs_a_request() {
    let mut names = NameBook::default();
    let mut t = Tx::get("/").no_response().at(ms(1), ms(2), 0, 0);
    t.ttl = None;
    let tx = t.build(1);
    let msg = Rc::new(Msg::from_transaction(&tx, &mut names));
    let v = View::new(&tx, 0, Ts(ms(50)), 0, msg.clone()).unwrap();
    assert_eq!((v.resp, v.resp_end, v.ttl), (None, None, 0));
    assert_eq!(v.end(), Ts(ms(50)));
    let mut no_req = tx;
    no_req.request = None;
    assert!(View::new(&no_req, 0, Ts(ms(50)), 0, msg).is_none());
}

// --- order_views ---

fn ids(views: &[View]) -> Vec<u64> {
    views.iter().map(|v| v.tx).collect()
}

fn owns_nothing(_: usize, _: IpAddr) -> bool {
    false
}

#[test]
fn ttl_orders_views_before_time() {
    let mut names = NameBook::default();
    let near = Tx::get("/")
        .ttl(64)
        .at(ms(5), ms(6), ms(9), ms(10))
        .view(1, 0, &mut names);
    let far = Tx::get("/")
        .ttl(63)
        .at(ms(1), ms(2), ms(9), ms(10))
        .view(2, 1, &mut names);
    let mut v = vec![far, near];
    order_views(&mut v, &owns_nothing);
    assert_eq!(ids(&v), vec![1, 2]);
}

#[test]
fn the_host_owning_the_client_address_starts_the_chain() {
    let mut names = NameBook::default();
    let early = Tx::get("/")
        .at(ms(1), ms(2), ms(9), ms(10))
        .view(1, 0, &mut names);
    let owner = Tx::get("/")
        .between("10.9.9.9:5000", "10.0.0.2:80")
        .at(ms(3), ms(4), ms(9), ms(10))
        .view(2, 1, &mut names);
    let mut v = vec![early.clone(), owner.clone()];
    order_views(&mut v, &|file, ip| {
        file == 1 && ip == "10.9.9.9".parse::<IpAddr>().unwrap()
    });
    assert_eq!(ids(&v), vec![2, 1]);
    let mut v = vec![owner, early];
    order_views(&mut v, &owns_nothing);
    assert_eq!(ids(&v), vec![1, 2], "without an owner, the earliest first");
}

#[test]
fn same_ttl_chain_prefers_same_addresses_then_same_capture_then_time() {
    let mut names = NameBook::default();
    let a = |id, file, c: &str, s: &str, t: i64, names: &mut NameBook| {
        Tx::get("/")
            .between(c, s)
            .at(ms(t), ms(t) + 1, ms(50), ms(51))
            .view(id, file, names)
    };
    // Same addresses as the first view wins over an earlier view elsewhere.
    let mut v = vec![
        a(3, 2, "10.0.0.1:1", "10.0.0.2:80", 3, &mut names),
        a(2, 1, "10.1.0.1:2", "10.1.0.2:80", 2, &mut names),
        a(1, 0, "10.0.0.1:1", "10.0.0.2:80", 1, &mut names),
    ];
    order_views(&mut v, &owns_nothing);
    assert_eq!(ids(&v), vec![1, 3, 2]);
    // No address match: the capture the chain came through.
    let mut v = vec![
        a(1, 0, "10.0.0.1:1", "10.0.0.2:80", 1, &mut names),
        a(2, 1, "10.1.0.1:2", "10.1.0.2:80", 2, &mut names),
        a(3, 0, "10.2.0.1:3", "10.2.0.2:80", 3, &mut names),
    ];
    order_views(&mut v, &owns_nothing);
    assert_eq!(ids(&v), vec![1, 3, 2]);
    // Neither: time.
    let mut v = vec![
        a(3, 2, "10.2.0.1:3", "10.2.0.2:80", 3, &mut names),
        a(1, 0, "10.0.0.1:1", "10.0.0.2:80", 1, &mut names),
        a(2, 1, "10.1.0.1:2", "10.1.0.2:80", 2, &mut names),
    ];
    order_views(&mut v, &owns_nothing);
    assert_eq!(ids(&v), vec![1, 2, 3]);
}

#[test]
fn order_views_leaves_a_single_view_alone() {
    let mut names = NameBook::default();
    let mut v = vec![Tx::get("/").view(9, 0, &mut names)];
    order_views(&mut v, &|_, _| panic!("not asked"));
    assert_eq!(ids(&v), vec![9]);
}
