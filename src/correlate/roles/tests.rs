use super::*;
use crate::correlate::record::tests::Tx;
use crate::correlate::record::NameBook;

fn role_of(t: Tx, has_children: bool, is_root: bool) -> (Option<String>, &'static str) {
    role_with(t, has_children, is_root, false)
}

fn role_with(
    t: Tx,
    has_children: bool,
    is_root: bool,
    forwards_elsewhere: bool,
) -> (Option<String>, &'static str) {
    let (product, role) = product_and_role(
        &t.msg(&mut NameBook::default()),
        has_children,
        is_root,
        forwards_elsewhere,
    );
    let name = match role {
        Role::Gateway => "gateway",
        Role::LoadBalancer => "load_balancer",
        Role::Proxy => "proxy",
        Role::Backend => "backend",
        Role::Unanswered => "unanswered",
        Role::Named(_) => "named",
    };
    (product, name)
}

fn server(s: &str) -> Tx {
    Tx::get("/").resp_header("Server", s)
}

/// Issue 13: the product is a label; the role comes from what the server does.
#[test]
fn kong_is_named_by_its_headers_but_its_role_is_its_place() {
    let via = Tx::get("/").resp_header("Via", "1.1 kong/3.4.0");
    assert_eq!(
        role_of(via.clone(), true, true),
        (Some("Kong".into()), "gateway")
    );
    assert_eq!(
        role_of(via.clone(), true, false),
        (Some("Kong".into()), "load_balancer")
    );
    // Via says it forwarded: without the upstream hop it is a proxy.
    assert_eq!(role_of(via, false, true), (Some("Kong".into()), "proxy"));
    // Kong answering itself (a plugin's 401: only X-Kong-Response-Latency) forwards
    // nothing: a backend for that request, or a proxy when it forwards others.
    let own = server("kong/3.4").resp_header("X-Kong-Response-Latency", "0");
    assert_eq!(
        role_of(own.clone(), false, true),
        (Some("Kong".into()), "backend")
    );
    assert_eq!(
        role_with(own, false, true, true),
        (Some("Kong".into()), "proxy")
    );
    // Headers proxies add when they forward mark a proxy whatever it is called.
    for (h, v) in [
        ("Backend-Server", "10.0.0.3:8888"),
        ("X-Upstream-Addr", "10.0.0.3:8888"),
        ("X-Kong-Upstream-Latency", "3"),
    ] {
        assert_eq!(
            role_of(server("gunicorn").resp_header(h, v), false, false).1,
            "proxy",
            "{h}"
        );
    }
    let x = server("nginx").resp_header("X-Kong-Proxy-Latency", "1");
    assert_eq!(role_of(x, true, true), (Some("Kong".into()), "gateway"));
}

#[test]
fn a_server_with_upstream_hops_is_a_gateway_at_the_root_else_a_load_balancer() {
    let t = server("nginx/1.25.3");
    assert_eq!(
        role_of(t.clone(), true, true),
        (Some("nginx".into()), "gateway")
    );
    assert_eq!(
        role_of(t, true, false),
        (Some("nginx".into()), "load_balancer")
    );
    // Whatever it names itself.
    assert_eq!(
        role_of(server("gunicorn/21"), true, false).1,
        "load_balancer"
    );
}

/// Issue 13: an nginx (or HAProxy, Envoy, Kong) serving a request itself is that
/// request's backend; it is a proxy only when it is seen forwarding other requests.
#[test]
fn a_proxy_product_serving_itself_is_a_backend_unless_seen_forwarding() {
    for s in [
        "nginx",
        "openresty/1.21 (nginx)",
        "HAProxy",
        "envoy",
        "kong/3.4",
    ] {
        assert_eq!(role_of(server(s), false, false).1, "backend", "{s}");
        assert_eq!(role_with(server(s), false, false, true).1, "proxy", "{s}");
    }
    // Named by the Server header (without Kong's own headers it is not "Kong").
    assert_eq!(
        role_of(server("kong/3.4"), false, true).0.as_deref(),
        Some("kong")
    );
}

#[test]
fn anything_else_without_upstream_hops_is_a_backend() {
    assert_eq!(
        role_of(server("gunicorn/21.2.0"), false, true),
        (Some("gunicorn".into()), "backend")
    );
    assert_eq!(
        role_of(server("Apache/2.4.58 (Unix)"), false, false),
        (Some("Apache".into()), "backend")
    );
    assert_eq!(role_of(Tx::get("/"), false, false), (None, "backend"));
    // The first Server header is the one that counts.
    let two = server("gunicorn").resp_header("Server", "nginx");
    assert_eq!(
        role_of(two, false, false),
        (Some("gunicorn".into()), "backend")
    );
}

#[test]
fn python_servers_are_named_python() {
    assert_eq!(
        role_of(server("BaseHTTP/0.6 Python/3.11.4"), false, false),
        (Some("Python".into()), "backend")
    );
    assert_eq!(
        role_of(server("SimpleHTTP/0.6 Python/3.12"), false, false)
            .0
            .as_deref(),
        Some("Python")
    );
    assert_eq!(
        role_of(server("Werkzeug/3.0 Python/3.11"), false, false)
            .0
            .as_deref(),
        Some("Werkzeug")
    );
}

#[test]
fn no_response_is_unanswered_unless_it_has_upstream_hops() {
    let t = Tx::get("/").no_response();
    assert_eq!(role_of(t.clone(), false, true), (None, "unanswered"));
    assert_eq!(role_of(t.clone(), true, true), (None, "gateway"));
    assert_eq!(role_of(t, true, false), (None, "load_balancer"));
}

/// Role names round-trip; a topology file's own role is a named variant that is
/// written as given.
#[test]
fn role_names_round_trip_and_named_roles_keep_their_name() {
    for name in ["gateway", "load_balancer", "proxy", "backend", "unanswered"] {
        let r = Role::from_name(name);
        assert!(!matches!(r, Role::Named(_)), "{name}");
        assert_eq!(r.as_str(), name);
        assert_eq!(serde_json::to_string(&r).unwrap(), format!("\"{name}\""));
    }
    let cache = Role::from_name("cache");
    assert_eq!(cache, Role::Named("cache".into()));
    assert_eq!(serde_json::to_string(&cache).unwrap(), "\"cache\"");
    assert_eq!(format!("{cache:>7}"), "  cache");
}
