use super::*;
use crate::correlate::record::tests::{ms, Tx};
use crate::correlate::record::NameBook;
use crate::time::Ts;
use std::rc::Rc;

/// The inbound exchange at the proxy 10.0.0.2: request over [0, 1] ms, response over
/// [10, 11] ms.
fn inbound() -> Tx {
    Tx::get("/g")
        .between("10.0.0.1:40000", "10.0.0.2:80")
        .at(0, ms(1), ms(10), ms(11))
}

/// The proxy's upstream exchange, tightly nested: it starts when the inbound request
/// ends and its response ends when the inbound response starts (no timing penalty).
fn upstream() -> Tx {
    Tx::get("/u")
        .between("10.0.0.2:50000", "10.0.0.3:8080")
        .at(ms(1), ms(2), ms(9), ms(10))
        .body(200)
}

/// Background traffic: `n` exchanges with unique URIs, X-Request-Ids and body sizes,
/// a User-Agent and a response header they all share, and URI `/common` in every
/// other one.
fn background(n: usize, names: &mut NameBook) -> Rarity {
    let mut r = Rarity::new();
    for i in 0..n {
        let uri = if i % 2 == 0 {
            "/common".to_string()
        } else {
            format!("/bg{i}")
        };
        let m = Tx::get(&uri)
            .header("X-Request-Id", &format!("bg{i}"))
            .header("User-Agent", "common")
            .resp_header("X-Common", "1")
            .body(1000 + i as u64)
            .msg(names);
        r.add(&m);
    }
    r
}

struct Scorer {
    names: NameBook,
    rarity: Rarity,
    habits: UriHabits,
}

impl Scorer {
    fn new() -> Scorer {
        let mut names = NameBook::default();
        let rarity = background(16, &mut names);
        Scorer {
            names,
            rarity,
            habits: UriHabits::new(),
        }
    }

    fn views(
        &mut self,
        u: &Tx,
        g: &Tx,
    ) -> (
        crate::correlate::record::View,
        crate::correlate::record::View,
    ) {
        (u.view(1, 0, &mut self.names), g.view(2, 0, &mut self.names))
    }

    /// Both scores of `u` (one view) under `g`, with the reasons when `why` is given.
    fn scored(&mut self, u: &Tx, g: &Tx, why: Option<&mut Vec<String>>) -> Scores {
        let (uv, gv) = self.views(u, g);
        let up = Upstream {
            first: &uv,
            last: &uv,
        };
        scores(
            &up,
            &Inbound { last: &gv },
            &self.rarity,
            &self.habits,
            &self.names,
            why,
        )
    }

    /// Points above [`CANDIDATE_BASE`] of `u` (one view) under `g`.
    fn points(&mut self, u: &Tx, g: &Tx) -> f64 {
        self.scored(u, g, None).assign - CANDIDATE_BASE
    }

    fn both(&mut self, u: &Tx, g: &Tx) -> Scores {
        self.scored(u, g, None)
    }

    fn why(&mut self, u: &Tx, g: &Tx) -> Vec<String> {
        let mut why = Vec::new();
        self.scored(u, g, Some(&mut why));
        why
    }
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9
}

// --- nesting ---

fn is_nested(u: &Tx, g: &Tx, tolerance: i64) -> bool {
    let mut names = NameBook::default();
    let (uv, gv) = (u.view(1, 0, &mut names), g.view(2, 0, &mut names));
    nested(
        &Upstream {
            first: &uv,
            last: &uv,
        },
        &Inbound { last: &gv },
        tolerance,
    )
}

/// `t` seen at another interface (vantage 1) than the others (vantage 0): the clock
/// tolerance is between interfaces.
fn elsewhere(mut t: Tx) -> Tx {
    t.vantage = 1;
    t
}

/// Two exchanges of one connection at one interface never nest, even when the
/// later one lies inside the earlier one's interval (pipelined requests whose
/// responses end in one segment).
#[test]
fn exchanges_of_one_connection_never_nest() {
    let first = Tx::get("/a")
        .between("10.0.0.1:40000", "10.0.0.2:80")
        .at(0, ms(1), ms(5), ms(9));
    let pipelined =
        Tx::get("/b")
            .between("10.0.0.1:40000", "10.0.0.2:80")
            .at(ms(1), ms(2), ms(8), ms(9));
    assert!(!is_nested(&pipelined, &first, 0));
    assert!(!is_nested(&pipelined, &first, ms(1)));
    // Another connection from the same client, the same times: nested.
    let other =
        Tx::get("/b")
            .between("10.0.0.1:40001", "10.0.0.2:80")
            .at(ms(1), ms(2), ms(8), ms(9));
    assert!(is_nested(&other, &first, 0));
}

#[test]
fn nested_needs_the_same_method() {
    assert!(is_nested(&upstream(), &inbound(), 0));
    assert!(!is_nested(&upstream().method("POST"), &inbound(), 0));
    assert!(is_nested(
        &upstream().method("POST"),
        &inbound().method("POST"),
        0
    ));
}

/// Issue 13: nginx with proxy_cache fetches a HEAD request upstream with GET; the
/// other way round (and any other change) is not a proxy's doing.
#[test]
fn a_head_may_go_upstream_as_a_get() {
    assert!(is_nested(&upstream(), &inbound().method("HEAD"), 0));
    assert!(!is_nested(&upstream().method("HEAD"), &inbound(), 0));
    assert!(!is_nested(
        &upstream().method("DELETE"),
        &inbound().method("HEAD"),
        0
    ));
}

#[test]
fn a_child_starting_before_the_parents_request_is_rejected() {
    let tol = ms(1);
    let g = inbound().at(ms(5), ms(6), ms(20), ms(21));
    let u = |start| upstream().at(start, start + 10, ms(15), ms(16));
    assert!(is_nested(&u(ms(5)), &g, 0));
    assert!(!is_nested(&u(ms(5) - 1), &g, 0));
    assert!(
        is_nested(&elsewhere(u(ms(5) - tol)), &g, tol),
        "within tolerance"
    );
    assert!(!is_nested(&elsewhere(u(ms(5) - tol - 1)), &g, tol));
    // One interface, one clock: no tolerance.
    assert!(!is_nested(&u(ms(5) - 1), &g, tol));
}

#[test]
fn a_child_ending_after_the_parents_response_is_rejected() {
    let tol = ms(1);
    let g = inbound(); // response ends at 11 ms
    let u = |end| upstream().at(ms(1), ms(2), ms(3), end);
    assert!(is_nested(&u(ms(11)), &g, 0));
    assert!(!is_nested(&u(ms(11) + 1), &g, 0));
    assert!(is_nested(&elsewhere(u(ms(12))), &g, tol));
    assert!(!is_nested(&elsewhere(u(ms(12) + 1)), &g, tol));
    // One interface, one clock: no tolerance (issue 15: the next request of a
    // keep-alive connection answered within it is not nested).
    assert!(!is_nested(&u(ms(11) + 1), &g, tol));
}

#[test]
fn an_unanswered_child_must_start_before_the_parents_response_ends() {
    let g = inbound();
    let u = |start| upstream().no_response().at(start, start + 1, 0, 0);
    assert!(is_nested(&u(ms(11)), &g, 0));
    assert!(!is_nested(&u(ms(13)), &g, ms(1)));
}

#[test]
fn an_unanswered_parent_is_open_until_it_arrived() {
    let mut names = NameBook::default();
    let mut gv = inbound().no_response().view(2, 0, &mut names);
    gv.arrived = Ts(ms(20));
    let check = |u: Tx, tol: i64, names: &mut NameBook| {
        let uv = u.view(1, 0, names);
        nested(
            &Upstream {
                first: &uv,
                last: &uv,
            },
            &Inbound { last: &gv },
            tol,
        )
    };
    let late = |start| upstream().at(start, start + 1, ms(100), ms(101));
    assert!(
        check(late(ms(20)), 0, &mut names),
        "its own response may end any time"
    );
    assert!(!check(late(ms(20) + 1), 0, &mut names));
    assert!(check(elsewhere(late(ms(21))), ms(1), &mut names));
    assert!(!check(elsewhere(late(ms(21) + 1)), ms(1), &mut names));
    assert!(!check(late(ms(20) + 1), ms(1), &mut names), "one interface");
}

#[test]
fn an_inbound_view_without_a_request_nests_nothing() {
    let mut names = NameBook::default();
    let uv = upstream().view(1, 0, &mut names);
    let mut gv = inbound().view(2, 0, &mut names);
    let mut t = inbound().build(2);
    t.request = None;
    gv.msg = Rc::new(Msg::from_transaction(&t, &mut names));
    assert!(!nested(
        &Upstream {
            first: &uv,
            last: &uv
        },
        &Inbound { last: &gv },
        ms(100)
    ));
}

// --- rarity ---

#[test]
fn rarer_values_weigh_more_bits() {
    let mut names = NameBook::default();
    let r = background(16, &mut names);
    let uri = |s: &str| Tx::get(s).msg(&mut NameBook::default()).uri_hash;
    let pair = |n: &str, v: &str| {
        Tx::get("/")
            .header(n, v)
            .msg(&mut NameBook::default())
            .req_pairs[0]
            .pair
    };
    assert!(close(r.bits(ValueKind::Uri, uri("/common")), 1.0)); // 8 of 16
    assert!(close(r.bits(ValueKind::Uri, uri("/bg1")), 4.0)); // 1 of 16
    assert!(close(r.bits(ValueKind::Uri, uri("/never")), 4.0)); // unseen: as if once
    assert!(close(
        r.bits(ValueKind::Request, pair("User-Agent", "common")),
        0.0
    ));
    assert!(close(
        r.bits(ValueKind::Request, pair("x-request-id", "bg3")),
        4.0
    ));
    assert!(close(r.bits(ValueKind::Body, 1003), 4.0));
}

#[test]
fn rarity_kinds_are_counted_apart() {
    let mut r = Rarity::new();
    let m = Tx::get("/").body(7).msg(&mut NameBook::default());
    for _ in 0..8 {
        r.add(&m);
    }
    assert!(close(r.bits(ValueKind::Body, 7), 0.0));
    assert!(close(r.bits(ValueKind::Uri, 7), 3.0));
    assert!(close(r.bits(ValueKind::Response, 7), 3.0));
}

#[test]
fn an_empty_rarity_gives_no_bits_and_bits_are_capped() {
    assert!(close(Rarity::new().bits(ValueKind::Uri, 1), 0.0));
    let mut names = NameBook::default();
    let mut r = Rarity::new();
    for i in 0..5000 {
        r.add(&Tx::get(&format!("/{i}")).msg(&mut names));
    }
    // log2(5000) > 12.
    assert!(close(r.bits(ValueKind::Uri, 12345), 12.0));
}

#[test]
fn values_leaving_the_window_are_uncounted() {
    let mut names = NameBook::default();
    let a = Tx::get("/a").body(1).msg(&mut names);
    let b = Tx::get("/b").body(2).msg(&mut names);
    let uri_a = a.uri_hash;
    let mut r = Rarity::new();
    for _ in 0..Rarity::WINDOW {
        r.add(&a);
    }
    assert!(close(r.bits(ValueKind::Uri, uri_a), 0.0));
    for _ in 0..Rarity::WINDOW / 2 {
        r.add(&b);
    }
    // Half the window is `a` now, whatever was added before.
    assert!(close(r.bits(ValueKind::Uri, uri_a), 1.0));
    assert!(close(r.bits(ValueKind::Uri, b.uri_hash), 1.0));
    for _ in 0..Rarity::WINDOW / 2 {
        r.add(&b);
    }
    assert!(close(r.bits(ValueKind::Uri, b.uri_hash), 0.0));
    assert!(
        close(r.bits(ValueKind::Uri, uri_a), 12.0),
        "gone: as if unseen"
    );
}

// --- scoring ---

#[test]
fn a_tight_candidate_without_shared_values_scores_the_base() {
    let mut s = Scorer::new();
    // 10 for being a candidate, 1 for the same status, 1 bit against the other URI
    // (a proxy that has taught nothing yet).
    assert!(close(s.points(&upstream(), &inbound()), 10.0));
}

#[test]
fn a_shared_uri_raises_the_score_by_its_rarity() {
    let mut s = Scorer::new();
    let base = s.points(&upstream(), &inbound());
    let rare = s.points(
        &Tx {
            uri: "/g".into(),
            ..upstream()
        },
        &inbound(),
    );
    // 1 + its bits, and no longer the bit against another URI.
    assert!(close(rare - base, 1.0 + 4.0 + 1.0), "{}", rare - base);
    let g = Tx {
        uri: "/common".into(),
        ..inbound()
    };
    let common = s.points(
        &Tx {
            uri: "/common".into(),
            ..upstream()
        },
        &g,
    );
    assert!(close(common - base, 1.0 + 1.0 + 1.0), "{}", common - base);
    assert!(s.why(
        &Tx {
            uri: "/g".into(),
            ..upstream()
        },
        &inbound()
    )[0]
    .starts_with("same method and URI (4.0 bits)"));
}

#[test]
fn forwarded_for_and_real_ip_naming_the_inbound_client_count_others_cost() {
    let mut s = Scorer::new();
    let base = s.points(&upstream(), &inbound());
    let xff = |v: &str| upstream().header("X-Forwarded-For", v);
    assert!(close(
        s.points(&xff("192.0.2.1, 10.0.0.1"), &inbound()) - base,
        2.0
    ));
    assert!(close(s.points(&xff("10.9.9.9"), &inbound()) - base, -10.0));
    assert!(close(s.points(&xff("unknown"), &inbound()) - base, -10.0));
    let real = |v: &str| upstream().header("X-Real-IP", v);
    assert!(close(s.points(&real("10.0.0.1"), &inbound()) - base, 1.0));
    assert!(close(s.points(&real("10.9.9.9"), &inbound()) - base, -10.0));
    assert!(close(s.points(&real("garbage"), &inbound()) - base, -10.0));
    let why = s.why(&xff("10.0.0.1"), &inbound());
    assert!(
        why.iter().any(|w| w == "X-Forwarded-For names 10.0.0.1"),
        "{why:?}"
    );
}

#[test]
fn a_propagated_request_header_adds_its_bits_a_common_one_nothing() {
    let mut s = Scorer::new();
    let base = s.points(&upstream(), &inbound());
    let both = |n: &str, v: &str| (upstream().header(n, v), inbound().header(n, v));
    let (u, g) = both("X-Request-Id", "abc");
    assert!(close(s.points(&u, &g) - base, 4.0));
    let why = s.why(&u, &g);
    assert!(
        why.iter()
            .any(|w| w == "request header X-Request-Id propagated (4.0 bits)"),
        "{why:?}"
    );
    let (u, g) = both("User-Agent", "common");
    assert!(close(s.points(&u, &g) - base, 0.0));
    let u = upstream().header("X-Request-Id", "abc");
    let g = inbound().header("X-Request-Id", "xyz");
    assert!(close(s.points(&u, &g) - base, 0.0));
}

#[test]
fn response_status_body_and_headers() {
    let mut s = Scorer::new();
    let base = s.points(&upstream(), &inbound());
    // Status: +1 when equal (in the base), -3 when different, 0 for a gateway error.
    assert!(close(
        s.points(&upstream(), &inbound().status(500)) - base,
        -4.0
    ));
    assert!(close(
        s.points(&upstream(), &inbound().status(502)) - base,
        -1.0
    ));
    assert!(close(
        s.points(&upstream(), &inbound().status(504)) - base,
        -1.0
    ));
    // Same body size: its bits (unseen size: 4; a size every exchange has: 0).
    assert!(close(
        s.points(&upstream().body(100), &inbound()) - base,
        4.0
    ));
    let mut common = Scorer::new();
    for _ in 0..48 {
        common
            .rarity
            .add(&Tx::get("/x").body(100).msg(&mut NameBook::default()));
    }
    let cbase = common.points(&upstream(), &inbound());
    let cbits = common.points(&upstream().body(100), &inbound()) - cbase;
    assert!(close(cbits, (64.0f64 / 48.0).log2()), "{cbits}"); // 48 of 64
                                                               // A propagated response header.
    let u = upstream().resp_header("X-Upstream-Id", "q1");
    let g = inbound().resp_header("X-Upstream-Id", "q1");
    assert!(close(s.points(&u, &g) - base, 4.0));
    let u = upstream().resp_header("X-Common", "1");
    let g = inbound().resp_header("X-Common", "1");
    assert!(close(s.points(&u, &g) - base, 0.0));
}

#[test]
fn backend_server_naming_the_upstream_counts_naming_another_costs() {
    let mut s = Scorer::new();
    let base = s.points(&upstream(), &inbound());
    let g = |v: &str| inbound().resp_header("Backend-Server", v);
    assert!(close(
        s.points(&upstream(), &g("10.0.0.3:8080")) - base,
        2.0 + 4.0
    ));
    assert!(close(
        s.points(&upstream(), &g("10.0.0.4:8080")) - base,
        -5.0
    ));
    assert!(close(
        s.points(&upstream(), &g("10.0.0.3:8081")) - base,
        -5.0
    ));
    let why = s.why(&upstream(), &g("10.0.0.3:8080"));
    assert!(
        why.iter()
            .any(|w| w == "response header Backend-Server names the upstream 10.0.0.3:8080"),
        "{why:?}"
    );
}

#[test]
fn response_evidence_comes_from_the_upstreams_last_view() {
    let mut s = Scorer::new();
    // Where the proxy sent it, through a NAT (no header seen there), and where the
    // server received it (header and address there).
    let first = upstream().view(1, 0, &mut s.names);
    let last = upstream()
        .between("192.168.0.9:6000", "192.168.0.3:8080")
        .resp_header("X-Upstream-Id", "q1")
        .view(1, 1, &mut s.names);
    let gv = inbound()
        .resp_header("X-Upstream-Id", "q1")
        .resp_header("Backend-Server", "192.168.0.3:8080")
        .view(2, 0, &mut s.names);
    let g = Inbound { last: &gv };
    let one = scores(
        &Upstream {
            first: &first,
            last: &first,
        },
        &g,
        &s.rarity,
        &s.habits,
        &s.names,
        None,
    )
    .assign;
    let two = scores(
        &Upstream {
            first: &first,
            last: &last,
        },
        &g,
        &s.rarity,
        &s.habits,
        &s.names,
        None,
    )
    .assign;
    // One view: Backend-Server names another upstream (-5), no header match.
    // Both: header propagated (+4) and address named (+2 + bits).
    assert!(close(two - one, 5.0 + 4.0 + 2.0 + 4.0), "{}", two - one);
}

#[test]
fn timing_slack_costs_convexly_start_gaps_linearly_past_three_ms() {
    let mut s = Scorer::new();
    let base = s.points(&upstream(), &inbound());
    // The upstream response ends 1 or 2 ms before the inbound response starts.
    let end = |gap| upstream().at(ms(1), ms(2), ms(9) - gap, ms(10) - gap);
    let e1 = base - s.points(&end(ms(1)), &inbound());
    let e2 = base - s.points(&end(ms(2)), &inbound());
    assert!(close(e1, 1.0) && close(e2, 4.0), "{e1} {e2}");
    // The upstream starts 2, 3, 4 or 10 ms after the inbound request ended: squared
    // up to 3 ms (4 and 9 points), then 6 points a millisecond.
    let g = inbound().at(0, ms(1), ms(30), ms(31));
    let u = |start| upstream().at(start, start + 1, ms(30), ms(30));
    let gbase = s.points(&u(ms(1)), &g);
    let mut cost = |gap: i64| gbase - s.points(&u(ms(1) + ms(gap)), &g);
    let (s2, s3, s4, s10) = (cost(2), cost(3), cost(4), cost(10));
    assert!(
        close(s2, 4.0) && close(s3, 9.0) && close(s4, 15.0) && close(s10, 51.0),
        "{s2} {s3} {s4} {s10}"
    );
    // Starting before the inbound request ended is not a gap.
    assert!(close(s.points(&u(ms(1) - ms(1) / 2), &g), gbase));
    // A SYN earlier than the request is the upstream's start.
    let mut with_syn = u(ms(11));
    with_syn.syn = Some(ms(1));
    assert!(close(s.points(&with_syn, &g), gbase));
}

#[test]
fn the_start_gap_decides_but_barely_moves_confidence() {
    let mut s = Scorer::new();
    let g = inbound().at(0, ms(1), ms(30), ms(31));
    let u = |start| upstream().at(start, start + 1, ms(30), ms(30));
    let (near, far) = (s.both(&u(ms(1)), &g), s.both(&u(ms(11)), &g));
    assert!(close(near.assign - far.assign, 51.0));
    assert!(
        close(near.sure - far.sure, 0.002 * 100.0),
        "{near:?} {far:?}"
    );
}

#[test]
fn scores_stay_positive_and_rank_the_true_parent_first() {
    let mut s = Scorer::new();
    let u = Tx {
        uri: "/g".into(),
        ..upstream()
    }
    .header("X-Request-Id", "r1")
    .header("X-Forwarded-For", "10.0.0.1");
    let parent = inbound().header("X-Request-Id", "r1");
    let other = Tx {
        uri: "/other".into(),
        ..inbound()
    }
    .between("10.0.0.7:40001", "10.0.0.2:80")
    .header("X-Request-Id", "r2")
    .status(404);
    let (p, o) = (s.points(&u, &parent), s.points(&u, &other));
    assert!(p > o, "{p} {o}");
    assert!(o + CANDIDATE_BASE > 0.0);
}

// --- confidence ---

#[test]
fn confidence_grows_with_the_margin() {
    assert_eq!(confidence(5.0, []), 0.99, "a lone candidate");
    assert_eq!(confidence(5.0, [5.0]), 0.5, "a tie is a coin toss");
    assert_eq!(
        confidence(5.0, [8.0]),
        0.5,
        "a better rival counts as a tie, no more"
    );
    assert_eq!(confidence(8.0, [5.0]), 0.73); // 1 / (1 + 1/e)
    assert!(confidence(6.0, [5.0]) < confidence(7.0, [5.0]));
    assert_eq!(confidence(1000.0, [0.0]), 0.99);
}

/// Issue 13: the posterior is over every candidate, not the runner-up alone. Five
/// rivals each 9 points behind leave the chosen parent at 0.80 where the runner-up's
/// margin alone said 0.95 (the HAProxy gateway's wrong links at 0.92-0.97 had several
/// rivals close); far-off rivals change nothing.
#[test]
fn confidence_counts_every_close_rival() {
    assert_eq!(confidence(20.0, [11.0]), 0.95);
    assert_eq!(confidence(20.0, [11.0; 5]), 0.8);
    assert!(confidence(20.0, [11.0, 11.0]) < confidence(20.0, [11.0]));
    assert_eq!(
        confidence(20.0, [11.0, -500.0, -900.0]),
        confidence(20.0, [11.0])
    );
    let many_far = [20.0 - 30.0; 40];
    assert_eq!(confidence(20.0, many_far), 0.99);
}

/// Issue 13: a proxy that keeps URIs (learned from its unambiguous links) makes a
/// changed URI evidence against a pairing, growing with what it taught; one that
/// rewrites them makes it nothing.
#[test]
fn a_changed_uri_costs_what_the_proxy_taught() {
    let proxy = crate::correlate::record::tests::sa("10.0.0.2:80");
    let mut s = Scorer::new();
    let before = s.points(&upstream(), &inbound());
    // 10 + 1 (same status) - 1 bit against before any link.
    assert!(
        close(before, 10.0),
        "{before}: one bit against before any link"
    );
    for _ in 0..200 {
        s.habits.observe(proxy, true);
    }
    let keeper = s.points(&upstream(), &inbound());
    assert!(close(keeper, 11.0 - (202f64).log2()), "{keeper}");
    assert!(s
        .why(&upstream(), &inbound())
        .iter()
        .any(|w| w.starts_with("another URI")));
    let mut r = Scorer::new();
    for _ in 0..200 {
        r.habits.observe(proxy, false);
    }
    let rewriter = r.points(&upstream(), &inbound());
    assert!(
        rewriter > 11.0 - 0.01,
        "{rewriter}: a rewriting proxy costs nothing"
    );
    // The same URI never costs.
    let mut same_uri = upstream();
    same_uri.uri = "/g".into();
    let same = s.points(&same_uri, &inbound());
    assert!(same > 11.0, "{same}");
}
