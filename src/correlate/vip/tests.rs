use super::*;
use crate::correlate::record::tests::{ip, ms};
use crate::links::{HostLinks, Link};
use crate::pipeline::{GratuitousArp, VrrpRun};

const VIP: &str = "10.0.0.100";
const A: &str = "10.0.0.11";
const B: &str = "10.0.0.12";

fn secs(s: i64) -> Ts {
    Ts(s * 1_000_000_000)
}

/// A run of adverts once a second from `source` over [`from`, `to`] s.
fn run(source: &str, priority: u8, from: i64, to: i64) -> VrrpRun {
    VrrpRun {
        vrid: 51,
        source: ip(source),
        priority,
        addresses: vec![ip(VIP)],
        first_ts: secs(from),
        last_ts: secs(to),
        adverts: (to - from + 1) as u64,
    }
}

fn garp(at: Ts, addr: &str) -> GratuitousArp {
    GratuitousArp {
        ts: at,
        vantage: 0,
        ip: ip(addr),
        mac: "02:00:00:00:00:01".into(),
    }
}

fn links(addrs: &[&str]) -> Option<HostLinks> {
    Some(HostLinks {
        path: "x.links.json".into(),
        links: vec![Link {
            ifindex: 2,
            ifname: "eth0".into(),
            mac: None,
            master: None,
            addresses: addrs.iter().map(|a| ip(a)).collect(),
        }],
    })
}

struct World {
    files: Vec<String>,
    links: Vec<Option<HostLinks>>,
    vrrp: Vec<VrrpRun>,
    garp: Vec<GratuitousArp>,
}

impl World {
    /// Captures on routers r1 (owning A) and r2 (owning B), and a client host.
    fn new(vrrp: Vec<VrrpRun>) -> World {
        World {
            files: vec![
                "caps/r1.pcapng".into(),
                "caps/r2.pcap.gz".into(),
                "client.pcap".into(),
            ],
            links: vec![links(&[A, VIP]), links(&[B]), None],
            vrrp,
            garp: Vec::new(),
        }
    }

    fn ctx(&self) -> Context<'_> {
        Context {
            vantages: &[],
            files: &self.files,
            links: &self.links,
            names: None,
            vrrp: &self.vrrp,
            garp: &self.garp,
        }
    }

    fn timeline(&self) -> Vec<VipHolding> {
        timeline(&self.ctx())
    }
}

fn holders(t: &[VipHolding]) -> Vec<(&str, i64, i64, u64)> {
    t.iter()
        .map(|h| {
            (
                h.holder.as_str(),
                h.from.0 / 1_000_000_000,
                h.to.0 / 1_000_000_000,
                h.adverts,
            )
        })
        .collect()
}

#[test]
fn holders_are_named_by_the_links_sidecars_else_by_address() {
    let w = World::new(vec![run(A, 100, 0, 5)]);
    let t = w.timeline();
    assert_eq!(holders(&t), vec![("r1", 0, 5, 6)]);
    assert_eq!(
        (t[0].vip, t[0].vrid, t[0].holder_ip, t[0].priority),
        (ip(VIP), 51, ip(A), 100)
    );
    let mut w = World::new(vec![run("10.0.0.99", 100, 0, 5)]);
    assert_eq!(w.timeline()[0].holder, "10.0.0.99");
    w.links.clear();
    w.vrrp = vec![run(A, 100, 0, 5)];
    assert_eq!(w.timeline()[0].holder, A);
}

#[test]
fn runs_of_one_sender_close_together_make_one_holding() {
    // Out of order, 2 s apart (within 3 s): one holding.
    let w = World::new(vec![run(A, 100, 7, 9), run(A, 100, 0, 5)]);
    assert_eq!(holders(&w.timeline()), vec![("r1", 0, 9, 9)]);
    // Exactly 3 s after the last advert still extends it; later does not.
    let w = World::new(vec![run(A, 100, 0, 5), run(A, 100, 8, 9)]);
    assert_eq!(holders(&w.timeline()).len(), 1);
    let mut late = run(A, 100, 8, 9);
    late.first_ts = Ts(secs(8).0 + 1);
    let w = World::new(vec![run(A, 100, 0, 5), late]);
    assert_eq!(holders(&w.timeline()).len(), 2);
    // An overlapping run (another capture saw the same adverts) does not shorten it.
    let w = World::new(vec![run(A, 100, 0, 10), run(A, 100, 2, 4)]);
    assert_eq!(holders(&w.timeline()), vec![("r1", 0, 10, 14)]);
}

#[test]
fn a_new_sender_or_priority_starts_a_new_holding() {
    let w = World::new(vec![
        run(A, 100, 0, 5),
        run(B, 90, 6, 9),
        run(B, 110, 10, 12),
    ]);
    let t = w.timeline();
    assert_eq!(
        holders(&t),
        vec![("r1", 0, 5, 6), ("r2", 6, 9, 4), ("r2", 10, 12, 3)]
    );
    assert_eq!(t[2].priority, 110);
}

#[test]
fn each_virtual_address_and_router_id_has_its_own_holdings() {
    let mut two = run(A, 100, 0, 5);
    two.addresses.push(ip("10.0.0.101"));
    let mut other_vrid = run(A, 100, 6, 8);
    other_vrid.vrid = 52;
    let t = World::new(vec![two, other_vrid]).timeline();
    let keys: Vec<(IpAddr, u8)> = t.iter().map(|h| (h.vip, h.vrid)).collect();
    assert_eq!(
        keys,
        vec![(ip(VIP), 51), (ip("10.0.0.101"), 51), (ip(VIP), 52)]
    );
}

#[test]
fn holder_at_is_the_latest_holding_started_by_then() {
    let t = World::new(vec![
        run(A, 100, 10, 20),
        run(B, 100, 21, 30),
        run(A, 0, 31, 31),
    ])
    .timeline();
    let vip = ip(VIP);
    assert_eq!(holder_at(&t, vip, secs(9)), None);
    assert_eq!(holder_at(&t, vip, secs(10)).as_deref(), Some("r1"));
    assert_eq!(
        holder_at(&t, vip, Ts(secs(21).0 - 1)).as_deref(),
        Some("r1")
    );
    assert_eq!(holder_at(&t, vip, secs(21)).as_deref(), Some("r2"));
    // A priority-0 advert (a master resigning) does not make its sender the holder.
    assert_eq!(holder_at(&t, vip, secs(40)).as_deref(), Some("r2"));
    assert_eq!(holder_at(&t, ip("10.0.0.101"), secs(15)), None);
}

#[test]
fn a_change_of_holder_is_a_failover() {
    let w = World::new(vec![run(A, 100, 0, 10), run(B, 90, 14, 20)]);
    let t = w.timeline();
    let f = failovers(&w.ctx(), &t, &[]);
    assert_eq!(f.len(), 1);
    assert_eq!(
        (f[0].vip, f[0].from.as_str(), f[0].to.as_str()),
        (ip(VIP), "r1", "r2")
    );
    assert_eq!(
        (f[0].last_advert_before, f[0].first_sign_after),
        (secs(10), secs(14))
    );
    assert!(f[0].failed_paths.is_empty());
}

#[test]
fn the_same_holder_again_or_a_resignation_is_no_failover() {
    // A gap, then A again: no move. A priority change of one router: no move.
    let w = World::new(vec![
        run(A, 100, 0, 5),
        run(A, 100, 20, 25),
        run(A, 120, 26, 30),
    ]);
    let t = w.timeline();
    assert_eq!(t.len(), 3);
    assert!(failovers(&w.ctx(), &t, &[]).is_empty());
    // A's priority-0 advert between A and B is not a holder of its own.
    let w = World::new(vec![run(A, 100, 0, 5), run(A, 0, 6, 6), run(B, 100, 7, 9)]);
    let t = w.timeline();
    let f = failovers(&w.ctx(), &t, &[]);
    assert_eq!(f.len(), 1);
    assert_eq!((f[0].from.as_str(), f[0].to.as_str()), ("r1", "r2"));
    assert_eq!(f[0].last_advert_before, secs(5));
}

#[test]
fn a_gratuitous_arp_can_be_the_first_sign_of_the_new_holder() {
    let mut w = World::new(vec![run(A, 100, 0, 10), run(B, 90, 14, 20)]);
    w.garp = vec![
        garp(secs(9), VIP), // before the old holder's last advert
        garp(Ts(secs(10).0 + ms(500)), "10.0.0.200"), // another address
        garp(Ts(secs(11).0 + 5), VIP), // the first sign
        garp(secs(13), VIP),
    ];
    let t = w.timeline();
    let f = failovers(&w.ctx(), &t, &[]);
    assert_eq!(f[0].first_sign_after, Ts(secs(11).0 + 5));
    // One after the new holder's first advert does not move the first sign.
    w.garp = vec![garp(secs(15), VIP)];
    assert_eq!(failovers(&w.ctx(), &t, &[])[0].first_sign_after, secs(14));
}

#[test]
fn failed_paths_within_five_seconds_of_the_failover_are_listed() {
    let mut w = World::new(vec![run(A, 100, 0, 10), run(B, 90, 14, 20)]);
    w.garp = vec![garp(secs(12), VIP)];
    let t = w.timeline();
    let failed = |id, at: i64| FailedPath {
        path: id,
        start_ts: Ts(at),
        reason: "no response".into(),
    };
    // Window: [10 s - 5 s, 12 s + 5 s].
    let paths = vec![
        failed(1, secs(5).0 - 1),
        failed(2, secs(5).0),
        failed(3, secs(11).0),
        failed(4, secs(17).0),
        failed(5, secs(17).0 + ms(1)),
    ];
    let f = failovers(&w.ctx(), &t, &paths);
    let ids: Vec<usize> = f[0].failed_paths.iter().map(|p| p.path).collect();
    assert_eq!(ids, vec![2, 3, 4]);
    assert_eq!(f[0].failed_paths[0].reason, "no response");
}

#[test]
fn failovers_follow_each_move() {
    let w = World::new(vec![
        run(A, 100, 0, 10),
        run(B, 90, 12, 20),
        run(A, 100, 22, 30),
    ]);
    let t = w.timeline();
    let f = failovers(&w.ctx(), &t, &[]);
    let moves: Vec<(&str, &str)> = f.iter().map(|x| (x.from.as_str(), x.to.as_str())).collect();
    assert_eq!(moves, vec![("r1", "r2"), ("r2", "r1")]);
    assert_eq!(f[1].last_advert_before, secs(20));
}
