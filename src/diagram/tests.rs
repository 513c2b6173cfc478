use super::draw::{Canvas, Color};
use super::*;
use crate::time::Ts;

#[test]
fn clean_shortens_and_strips_controls() {
    assert_eq!(clean("abc", 10), "abc");
    assert_eq!(clean("abcdefghij", 5), "abcd…");
    assert_eq!(clean("a\u{1b}[31mb\u{0}", 40), "a\\x1b[31mb\\x00");
}

#[test]
fn hostile_text_is_escaped_into_valid_xml() {
    let hostile = "/<script>alert(\"x\")</script>&]]>'\u{7}";
    let mut c = Canvas::new(400, 100);
    c.text(10, 10, &clean(hostile, 200), 12, Color::INK);
    c.rect(0, 0, 10, 10, Color::WHITE, Color::INK);
    let svg = c.finish();
    let doc = roxmltree::Document::parse(&svg).expect("well-formed SVG");
    assert!(doc.descendants().all(|n| n.tag_name().name() != "script"));
    assert!(doc
        .descendants()
        .all(|n| n.attributes().all(|a| !a.name().starts_with("on"))));
    let text: String = doc.descendants().filter_map(|n| n.text()).collect();
    assert!(
        text.contains("/<script>alert(\"x\")</script>&]]>'\\x07"),
        "{text}"
    );
}

fn path(id: usize, ms: i64, status: PathStatus, hops: usize) -> RequestPath {
    let hops = (0..hops)
        .map(|i| {
            let mut h = Hop::new(i, i.checked_sub(1), HopKind::Http);
            h.role = Some(crate::correlate::Role::Backend);
            h.uri = Some(format!("/item/{id}"));
            h.latency_ms = Some(ms as f64);
            h
        })
        .collect();
    RequestPath {
        schema_version: crate::correlate::PATH_SCHEMA_VERSION,
        id,
        status,
        start_ts: Ts(1_000),
        end_ts: Ts(1_000 + ms * 1_000_000),
        vip: None,
        hops,
        root_transaction: id as u64,
        segments: Vec::new(),
    }
}

/// The keeper holds at most what it may draw, whatever the number of paths, and
/// chooses what a sort of all paths would.
#[test]
fn keeper_keeps_the_slowest_in_bounded_memory() {
    let mut k = Keeper::new(Selection {
        slowest: Some(3),
        ..Selection::default()
    });
    for i in 0..10_000 {
        // Durations 0..997 ms, several paths per duration.
        k.offer(&path(i, (i as i64 * 7919) % 997, PathStatus::Complete, 1));
        assert!(k.slowest.len() <= 3);
    }
    let (kept, topology) = k.finish(&[]);
    let took: Vec<i64> = kept
        .iter()
        .map(|p| (p.end_ts.0 - p.start_ts.0) / 1_000_000)
        .collect();
    assert_eq!(took, vec![996, 996, 996]);
    // Ties keep the earlier paths, as a stable sort would.
    let ids: Vec<usize> = kept.iter().map(|p| p.id).collect();
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(ids, sorted);
    // Every path went into the map, none of them is held for it.
    assert_eq!(topology.graph.edge_count(), 1);
    let e = topology.graph.edge_indices().next().unwrap();
    assert_eq!(topology.graph[e].requests, 10_000);
}

/// By default: the complete path with the most hops (the slowest of those), and the
/// first failed path; URI and id choices are bounded by MAX_PATHS.
#[test]
fn keeper_default_and_bounded_choices() {
    let mut k = Keeper::new(Selection::default());
    k.offer(&path(0, 50, PathStatus::Complete, 2));
    k.offer(&path(1, 10, PathStatus::Failed, 1));
    k.offer(&path(2, 5, PathStatus::Complete, 3));
    k.offer(&path(3, 900, PathStatus::Complete, 1));
    k.offer(&path(4, 7, PathStatus::Failed, 1));
    let (kept, _) = k.finish(&[]);
    assert_eq!(kept.iter().map(|p| p.id).collect::<Vec<_>>(), vec![2, 1]);

    let mut k = Keeper::new(Selection {
        uri: Some("/item/*".into()),
        ids: vec![7, 3],
        ..Selection::default()
    });
    for i in 0..1000 {
        k.offer(&path(i, 1, PathStatus::Complete, 1));
    }
    assert!(k.by_uri.len() <= MAX_PATHS);
    let (kept, _) = k.finish(&[]);
    assert_eq!(kept.len(), MAX_PATHS);
    assert_eq!(kept[0].id, 7, "ids come first, in the order asked");
    assert_eq!(kept[1].id, 3);
}
