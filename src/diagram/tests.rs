use super::draw::{Canvas, Color};
use super::*;

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
