//! Roles and products of servers, from their responses and their place in a path.

use super::record::Msg;
use super::report::Role;

/// The software a response names, and the role of its server: `gateway` (Kong, or
/// the first proxy a client reaches), `load_balancer` (a proxy behind it), `backend`
/// (no upstream hop), `proxy` (a server naming a proxy product without an upstream
/// hop seen), `unanswered`.
pub(crate) fn product_and_role(
    m: &Msg,
    has_children: bool,
    is_root: bool,
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
    let role = if kong {
        Role::Gateway
    } else if resp.is_none() && !has_children {
        Role::Unanswered
    } else if has_children {
        if is_root {
            Role::Gateway
        } else {
            Role::LoadBalancer
        }
    } else {
        let s = server.to_ascii_lowercase();
        if s.contains("nginx") || s.contains("kong") || s.contains("haproxy") || s.contains("envoy")
        {
            Role::Proxy
        } else {
            Role::Backend
        }
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
