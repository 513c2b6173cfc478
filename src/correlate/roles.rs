//! Roles and products of servers, from their responses and their place in a path.

use super::record::Msg;
use super::report::Role;

/// The software a response names (a label: `Server`, or Kong by its `Via` and
/// `X-Kong-*` headers), and the role of its server, from behaviour alone:
/// `gateway` (forwards, and is the first server of the path), `load_balancer`
/// (forwards, behind another), `proxy` (no upstream hop was seen for this request,
/// but its response carries a header proxies add when they forward, or the server
/// forwarded other requests in this run), `backend` (answers, forwards nothing),
/// `unanswered`. A product name never decides a role: an nginx serving files is a
/// backend, a Python app that forwards is a load balancer.
pub(crate) fn product_and_role(
    m: &Msg,
    has_children: bool,
    is_root: bool,
    forwards_elsewhere: bool,
) -> (Option<String>, Role) {
    let resp = m.resp.as_ref();
    let kong = resp.is_some_and(|r| r.kong);
    let server = resp.and_then(|r| r.server.as_deref()).unwrap_or("");
    let product = if kong {
        Some("Kong".to_string())
    } else if server.is_empty() {
        None
    } else {
        Some(server.split('/').next().unwrap_or(server).to_string())
    };
    let role = if has_children {
        if is_root {
            Role::Gateway
        } else {
            Role::LoadBalancer
        }
    } else if resp.is_none() {
        Role::Unanswered
    } else if forwards_elsewhere || resp.is_some_and(|r| r.says_forwarded) {
        Role::Proxy
    } else {
        Role::Backend
    };
    let product = match product.as_deref() {
        Some(p) if p.starts_with("BaseHTTP") || p.starts_with("SimpleHTTP") => {
            Some("Python".into())
        }
        _ => product,
    };
    (product, role)
}

#[cfg(test)]
mod tests;
