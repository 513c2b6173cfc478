//! Regression checks over request paths (`flowtrace check`): an expectation file
//! written by `--bless` and edited by hand, and rules an operator states in words.
//!
//! The expectation (TOML, documented in docs/check.md) holds what should not change
//! between captures of the same stack: path counts by status, path shapes (the hop
//! sequence by role and host, with the VIP holder), root statuses, the VIP holders in
//! order, the backends that answer, the NAT translations (client ports, which are
//! ephemeral, written `*`), and the p99 latency of each role with a tolerance factor.
//! Shapes and translations may use `*` as a wildcard. Timestamps, ids and client ports
//! never appear in it.

use crate::correlate::{Hop, HopKind, Report, RequestPath, Role};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Why a check could not run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CheckError {
    /// The expectation file is not valid.
    #[error("invalid expectation: {0}")]
    Expectation(String),
    /// A rule is not understood.
    #[error("rule {rule:?} not understood: {why}; see docs/check.md for the rule language")]
    Rule {
        /// The rule as written.
        rule: String,
        /// What is wrong.
        why: String,
    },
}

/// Path counts by status; absent ones are not checked.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Counts {
    /// All paths.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub paths: Option<u64>,
    /// Complete paths.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub complete: Option<u64>,
    /// Partial paths.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub partial: Option<u64>,
    /// Failed paths.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failed: Option<u64>,
}

/// How many paths have a shape.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Shape {
    /// `status: vip(holder) > role@host > ...` (`*` matches anything).
    pub path: String,
    /// Paths expected with it.
    pub count: u64,
}

/// An expectation file.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Expectation {
    /// Free text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Rules checked too (kept by `--bless`).
    #[serde(default)]
    pub rules: Vec<String>,
    /// Relative tolerance on counts (0.01 = 1 %); 0 when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count_tolerance: Option<f64>,
    /// Hosts that held the VIP, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub vip_holders: Vec<String>,
    /// Backends (`ip:port`) that answer complete paths.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub backends: Vec<String>,
    /// NAT translations seen (`KIND@host before -> after`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nat: Vec<String>,
    /// Allowed p99 latency as a multiple of the expected one (default 3; 1 ms slack).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_factor: Option<f64>,
    /// Paths by status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub counts: Option<Counts>,
    /// Paths by the status the client got (`none` when it got no response).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub statuses: BTreeMap<String, u64>,
    /// p99 latency (ms) of each hop role.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub latency_p99_ms: BTreeMap<String, f64>,
    /// Path shapes and how many paths have each.
    #[serde(default, rename = "shape", skip_serializing_if = "Vec::is_empty")]
    pub shapes: Vec<Shape>,
}

/// `*` matches any run of characters; everything else literally.
pub fn glob(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let mut rest = text;
    for (i, part) in parts.iter().enumerate() {
        if i == 0 {
            match rest.strip_prefix(part) {
                Some(r) => rest = r,
                None => return false,
            }
        } else if i == parts.len() - 1 {
            return rest.ends_with(part);
        } else {
            match rest.find(part) {
                Some(at) => rest = &rest[at + part.len()..],
                None => return false,
            }
        }
    }
    true
}

fn hop_shape(p: &RequestPath, h: &Hop) -> String {
    let me = format!(
        "{}@{}",
        h.role.as_ref().map_or("?", |r| r.as_str()),
        h.host.as_deref().unwrap_or("?")
    );
    let kids = p.http_children(h.id);
    match kids.len() {
        0 => me,
        1 => format!("{me} > {}", hop_shape(p, kids[0])),
        _ => format!(
            "{me} > ({})",
            kids.iter()
                .map(|k| hop_shape(p, k))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// A path's shape: its status, the VIP holder, and the hops by role and host.
pub fn shape_of(p: &RequestPath) -> String {
    let vip = p
        .vip
        .as_ref()
        .map(|v| format!("vip({}) > ", v.holder.as_deref().unwrap_or("?")))
        .unwrap_or_default();
    format!(
        "{}: {vip}{}",
        p.status,
        p.hops.first().map(|h| hop_shape(p, h)).unwrap_or_default()
    )
}

/// The roles along a path's main chain (the VIP first when the client used one).
fn roles_of(p: &RequestPath) -> Vec<String> {
    let mut out = Vec::new();
    if p.vip.is_some() {
        out.push("vip".to_string());
    }
    let mut hop = p.hops.first();
    while let Some(h) = hop {
        out.push(h.role.as_ref().map(|r| r.to_string()).unwrap_or_default());
        hop = p.http_children(h.id).first().copied();
    }
    out
}

fn nat_strings(report: &Report) -> Vec<String> {
    let mut out: Vec<String> = report
        .paths
        .iter()
        .flat_map(|p| p.hops.iter())
        .filter(|h| h.kind == HopKind::Nat)
        .map(|h| {
            let (b, a) = (h.before.expect("nat hop"), h.after.expect("nat hop"));
            let host = h.host.as_deref().unwrap_or("?");
            let kind = h.translation.map_or("NAT", |t| t.as_str());
            let c = |s: std::net::SocketAddr| match s {
                std::net::SocketAddr::V4(v) => format!("{}:*", v.ip()),
                std::net::SocketAddr::V6(v) => format!("[{}]:*", v.ip()),
            };
            match kind {
                "SNAT" => format!("SNAT@{host} {} -> {}", c(b.client), c(a.client)),
                "DNAT" => format!("DNAT@{host} {} -> {}", b.server, a.server),
                _ => format!(
                    "{kind}@{host} {} {} -> {} {}",
                    c(b.client),
                    b.server,
                    c(a.client),
                    a.server
                ),
            }
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

fn backends_answering(report: &Report) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for p in &report.paths {
        for h in &p.hops {
            if h.kind == HopKind::Http && h.role == Some(Role::Backend) && h.status.is_some() {
                if let Some(seen) = h.seen_at.last() {
                    *out.entry(seen.server.to_string()).or_insert(0) += 1;
                }
            }
        }
    }
    out
}

fn vip_holders(report: &Report) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for h in report.vip_timeline.iter().filter(|h| h.priority > 0) {
        if out.last() != Some(&h.holder) {
            out.push(h.holder.clone());
        }
    }
    out
}

impl Expectation {
    /// Parses an expectation file (its rules may name only the built-in roles).
    pub fn parse(text: &str) -> Result<Expectation, CheckError> {
        Expectation::parse_with_roles(text, &[])
    }

    /// Parses an expectation file whose rules may also name `extra_roles` (the roles
    /// a `--names` topology file defines).
    pub fn parse_with_roles(text: &str, extra_roles: &[String]) -> Result<Expectation, CheckError> {
        let e: Expectation =
            toml::from_str(text).map_err(|e| CheckError::Expectation(e.to_string()))?;
        for r in &e.rules {
            Rule::parse_with_roles(r, extra_roles)?;
        }
        Ok(e)
    }

    /// Writes the expectation as TOML.
    pub fn to_toml(&self) -> Result<String, CheckError> {
        let body = toml::to_string(self).map_err(|e| CheckError::Expectation(e.to_string()))?;
        Ok(format!(
            "# flowtrace expectation (docs/check.md). Written by `flowtrace check --bless`;\n\
             # edit freely: `*` is a wildcard in shapes and nat, absent keys are not checked.\n{body}"
        ))
    }

    /// What the captures show now.
    pub fn from_report(report: &Report) -> Expectation {
        let s = &report.summary;
        let mut shapes: BTreeMap<String, u64> = BTreeMap::new();
        let mut statuses: BTreeMap<String, u64> = BTreeMap::new();
        for p in &report.paths {
            *shapes.entry(shape_of(p)).or_insert(0) += 1;
            let st = p
                .hops
                .first()
                .and_then(|h| h.status)
                .map_or("none".to_string(), |s| s.to_string());
            *statuses.entry(st).or_insert(0) += 1;
        }
        Expectation {
            description: None,
            rules: Vec::new(),
            count_tolerance: None,
            vip_holders: vip_holders(report),
            backends: backends_answering(report).into_keys().collect(),
            nat: nat_strings(report),
            latency_factor: None,
            counts: Some(Counts {
                paths: Some(s.paths as u64),
                complete: Some(s.complete as u64),
                partial: Some(s.partial as u64),
                failed: Some(s.failed as u64),
            }),
            statuses,
            latency_p99_ms: s
                .latency_by_role
                .iter()
                .map(|l| (l.role.to_string(), l.p99_ms))
                .collect(),
            shapes: shapes
                .into_iter()
                .map(|(path, count)| Shape { path, count })
                .collect(),
        }
    }
}

/// A rule an operator states (docs/check.md has the language).
#[derive(Clone, Debug, PartialEq)]
pub enum Rule {
    /// `every path passes vip, gateway, load_balancer, backend`
    EveryPathPasses(Vec<String>),
    /// `no 5xx`
    No5xx,
    /// `no request lost during failover`
    NoLossDuringFailover,
    /// `every backend receives traffic`
    EveryBackendReceivesTraffic,
    /// `no hop slower than 100 ms at p99`
    NoHopSlowerThan(f64),
    /// `p99 of gateway below 50 ms`
    RoleP99Below(String, f64),
    /// `failed = 0`, `complete >= 99.5%`, `paths >= 2000`
    Count {
        /// paths, complete, partial or failed.
        metric: String,
        /// =, <, <=, >, >=.
        op: String,
        /// The bound.
        value: f64,
        /// Whether the bound is a percentage of all paths.
        percent: bool,
    },
}

fn ms_value(text: &str, rule: &str) -> Result<f64, CheckError> {
    let t = text.trim().trim_end_matches("ms").trim();
    t.parse().map_err(|_| CheckError::Rule {
        rule: rule.to_string(),
        why: format!("{text:?} is not a number of milliseconds"),
    })
}

impl Rule {
    /// Parses one rule that names only the built-in roles.
    pub fn parse(text: &str) -> Result<Rule, CheckError> {
        Rule::parse_with_roles(text, &[])
    }

    /// Parses one rule; `every path passes` may also name `extra_roles`, the roles a
    /// `--names` topology file gives services (compared without regard to case).
    pub fn parse_with_roles(text: &str, extra_roles: &[String]) -> Result<Rule, CheckError> {
        let t = text.trim().to_ascii_lowercase();
        let bad = |why: &str| CheckError::Rule {
            rule: text.to_string(),
            why: why.to_string(),
        };
        if let Some(rest) = t.strip_prefix("every path passes ") {
            let roles: Vec<String> = rest
                .split([',', ' '])
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect();
            let mut known: Vec<String> = ["vip", "gateway", "load_balancer", "proxy", "backend"]
                .iter()
                .map(|r| r.to_string())
                .collect();
            for r in extra_roles {
                let r = r.to_ascii_lowercase();
                if !known.contains(&r) {
                    known.push(r);
                }
            }
            if let Some(r) = roles.iter().find(|r| !known.contains(r)) {
                return Err(bad(&format!(
                    "unknown role {r:?} (known: {}; a --names file can define more)",
                    known.join(", ")
                )));
            }
            return Ok(Rule::EveryPathPasses(roles));
        }
        match t.as_str() {
            "no 5xx" => return Ok(Rule::No5xx),
            "no request lost during failover" => return Ok(Rule::NoLossDuringFailover),
            "every backend receives traffic" => return Ok(Rule::EveryBackendReceivesTraffic),
            _ => {}
        }
        if let Some(rest) = t.strip_prefix("no hop slower than ") {
            let n = rest
                .strip_suffix("at p99")
                .ok_or_else(|| bad("expected `... at p99`"))?;
            return Ok(Rule::NoHopSlowerThan(ms_value(n, text)?));
        }
        if let Some(rest) = t.strip_prefix("p99 of ") {
            let (role, bound) = rest
                .split_once(" below ")
                .ok_or_else(|| bad("expected `p99 of ROLE below N ms`"))?;
            return Ok(Rule::RoleP99Below(
                role.trim().to_string(),
                ms_value(bound, text)?,
            ));
        }
        for op in [">=", "<=", "=", "<", ">"] {
            if let Some((metric, value)) = t.split_once(op) {
                let metric = metric.trim();
                if !["paths", "complete", "partial", "failed"].contains(&metric) {
                    return Err(bad(&format!(
                        "unknown count {metric:?} (paths, complete, partial, failed)"
                    )));
                }
                let v = value.trim();
                let (number, percent) = match v.strip_suffix('%') {
                    Some(n) => (n.trim(), true),
                    None => (v, false),
                };
                let value = number
                    .parse()
                    .map_err(|_| bad(&format!("{v:?} is not a number")))?;
                return Ok(Rule::Count {
                    metric: metric.to_string(),
                    op: op.to_string(),
                    value,
                    percent,
                });
            }
        }
        Err(bad("no rule of that form"))
    }
}

/// What a check found.
#[derive(Clone, Debug, Default, Serialize)]
pub struct CheckOutcome {
    /// Checks made.
    pub checks: usize,
    /// One readable line per difference.
    pub failures: Vec<String>,
}

impl CheckOutcome {
    fn expect(&mut self, ok: bool, failure: impl FnOnce() -> String) {
        self.checks += 1;
        if !ok {
            self.failures.push(failure());
        }
    }
}

fn within(expected: u64, actual: u64, tolerance: f64) -> bool {
    (actual as f64 - expected as f64).abs() <= tolerance * expected as f64
}

/// Checks `report` against an expectation and rules; the expectation's rules may
/// name `extra_roles` besides the built-in ones (see [`Rule::parse_with_roles`]).
pub fn check(
    report: &Report,
    expect: Option<&Expectation>,
    extra_rules: &[Rule],
    extra_roles: &[String],
) -> Result<CheckOutcome, CheckError> {
    let mut out = CheckOutcome::default();
    let mut rules: Vec<Rule> = extra_rules.to_vec();
    if let Some(e) = expect {
        for r in &e.rules {
            rules.push(Rule::parse_with_roles(r, extra_roles)?);
        }
        check_expectation(report, e, &mut out);
    }
    for r in &rules {
        check_rule(report, r, expect, &mut out);
    }
    Ok(out)
}

fn check_expectation(report: &Report, e: &Expectation, out: &mut CheckOutcome) {
    let tol = e.count_tolerance.unwrap_or(0.0);
    let s = &report.summary;
    if let Some(c) = &e.counts {
        for (name, want, got) in [
            ("paths", c.paths, s.paths),
            ("complete", c.complete, s.complete),
            ("partial", c.partial, s.partial),
            ("failed", c.failed, s.failed),
        ] {
            if let Some(want) = want {
                out.expect(within(want, got as u64, tol), || {
                    format!("counts.{name}: expected {want}, found {got}")
                });
            }
        }
    }
    // Shapes: each pattern's count is the paths matching it (first pattern wins).
    let mut actual: BTreeMap<String, u64> = BTreeMap::new();
    for p in &report.paths {
        *actual.entry(shape_of(p)).or_insert(0) += 1;
    }
    if !e.shapes.is_empty() {
        let mut matched = vec![0u64; e.shapes.len()];
        for (shape, n) in &actual {
            match e.shapes.iter().position(|x| glob(&x.path, shape)) {
                Some(i) => matched[i] += n,
                None => out.expect(false, || format!("shape not expected: {shape} ({n} paths)")),
            }
        }
        for (x, got) in e.shapes.iter().zip(matched) {
            out.expect(within(x.count, got, tol), || {
                format!("shape {}: expected {} paths, found {got}", x.path, x.count)
            });
        }
    }
    if !e.statuses.is_empty() {
        let mut got: BTreeMap<String, u64> = BTreeMap::new();
        for p in &report.paths {
            let st = p
                .hops
                .first()
                .and_then(|h| h.status)
                .map_or("none".to_string(), |s| s.to_string());
            *got.entry(st).or_insert(0) += 1;
        }
        for (st, want) in &e.statuses {
            let n = got.get(st).copied().unwrap_or(0);
            out.expect(within(*want, n, tol), || {
                format!("status {st}: expected {want} paths, found {n}")
            });
        }
        for (st, n) in &got {
            if !e.statuses.contains_key(st) {
                out.expect(false, || format!("status {st} not expected ({n} paths)"));
            }
        }
    }
    if !e.vip_holders.is_empty() {
        let got = vip_holders(report);
        out.expect(got == e.vip_holders, || {
            format!("VIP holders: expected {:?}, found {got:?}", e.vip_holders)
        });
    }
    if !e.backends.is_empty() {
        let got = backends_answering(report);
        for b in &e.backends {
            out.expect(got.contains_key(b), || {
                format!("backend {b} answered no request")
            });
        }
        for (b, n) in &got {
            if !e.backends.iter().any(|x| glob(x, b)) {
                out.expect(false, || format!("backend {b} not expected ({n} requests)"));
            }
        }
    }
    if !e.nat.is_empty() {
        let got = nat_strings(report);
        for pattern in &e.nat {
            out.expect(got.iter().any(|g| glob(pattern, g)), || {
                format!("NAT translation missing: {pattern}")
            });
        }
        for g in &got {
            if !e.nat.iter().any(|p| glob(p, g)) {
                out.expect(false, || format!("NAT translation not expected: {g}"));
            }
        }
    }
    let factor = e.latency_factor.unwrap_or(3.0);
    for (role, want) in &e.latency_p99_ms {
        match s.latency_by_role.iter().find(|l| l.role.as_str() == role) {
            Some(l) => out.expect(l.p99_ms <= want * factor + 1.0, || {
                format!(
                    "p99 of {role}: {:.3} ms, above {want:.3} ms x {factor} + 1 ms = {:.3} ms",
                    l.p99_ms,
                    want * factor + 1.0
                )
            }),
            None => out.expect(false, || {
                format!("no {role} hop seen (expected p99 {want} ms)")
            }),
        }
    }
}

fn check_rule(report: &Report, rule: &Rule, expect: Option<&Expectation>, out: &mut CheckOutcome) {
    let s = &report.summary;
    match rule {
        Rule::EveryPathPasses(roles) => {
            let bad: Vec<&RequestPath> = report
                .paths
                .iter()
                .filter(|p| {
                    let got = roles_of(p);
                    let mut it = got.iter();
                    !roles.iter().all(|r| it.any(|g| g.eq_ignore_ascii_case(r)))
                })
                .collect();
            out.expect(bad.is_empty(), || {
                format!(
                    "every path passes {}: {} path(s) do not, e.g. path {} ({})",
                    roles.join(", "),
                    bad.len(),
                    bad[0].id,
                    shape_of(bad[0])
                )
            });
        }
        Rule::No5xx => {
            let bad: Vec<(usize, u16)> = report
                .paths
                .iter()
                .flat_map(|p| {
                    p.hops
                        .iter()
                        .filter_map(move |h| h.status.filter(|s| *s >= 500).map(|s| (p.id, s)))
                })
                .collect();
            out.expect(bad.is_empty(), || {
                format!(
                    "no 5xx: {} hop(s) answered 5xx, e.g. path {} ({})",
                    bad.len(),
                    bad[0].0,
                    bad[0].1
                )
            });
        }
        Rule::NoLossDuringFailover => {
            let lost: Vec<String> = report
                .failovers
                .iter()
                .flat_map(|f| {
                    f.failed_paths
                        .iter()
                        .map(move |p| format!("path {} ({}): {}", p.path, f.to, p.reason))
                })
                .collect();
            out.expect(lost.is_empty(), || {
                format!(
                    "no request lost during failover: {} lost, e.g. {}",
                    lost.len(),
                    lost[0]
                )
            });
        }
        Rule::EveryBackendReceivesTraffic => {
            let got = backends_answering(report);
            let mut seen: Vec<String> = report
                .paths
                .iter()
                .flat_map(|p| p.hops.iter())
                .filter(|h| h.role == Some(Role::Backend))
                .filter_map(|h| h.seen_at.last().map(|s| s.server.to_string()))
                .collect();
            if let Some(e) = expect {
                seen.extend(e.backends.iter().cloned());
            }
            seen.sort();
            seen.dedup();
            let idle: Vec<&String> = seen.iter().filter(|b| !got.contains_key(*b)).collect();
            out.expect(!seen.is_empty() && idle.is_empty(), || {
                if seen.is_empty() {
                    "every backend receives traffic: no backend seen at all".to_string()
                } else {
                    format!("every backend receives traffic: {idle:?} answered nothing")
                }
            });
        }
        Rule::NoHopSlowerThan(limit) => {
            for l in &s.latency_by_role {
                out.expect(l.p99_ms <= *limit, || {
                    format!(
                        "no hop slower than {limit} ms at p99: {} p99 is {:.3} ms",
                        l.role, l.p99_ms
                    )
                });
            }
        }
        Rule::RoleP99Below(role, limit) => {
            match s.latency_by_role.iter().find(|l| l.role.as_str() == role) {
                Some(l) => out.expect(l.p99_ms < *limit, || {
                    format!("p99 of {role} below {limit} ms: it is {:.3} ms", l.p99_ms)
                }),
                None => out.expect(false, || {
                    format!("p99 of {role} below {limit} ms: no {role} hop seen")
                }),
            }
        }
        Rule::Count {
            metric,
            op,
            value,
            percent,
        } => {
            let n = match metric.as_str() {
                "paths" => s.paths,
                "complete" => s.complete,
                "partial" => s.partial,
                _ => s.failed,
            } as f64;
            let got = if *percent {
                100.0 * n / (s.paths.max(1) as f64)
            } else {
                n
            };
            let ok = match op.as_str() {
                "=" => (got - value).abs() < 1e-9,
                "<" => got < *value,
                "<=" => got <= *value,
                ">" => got > *value,
                _ => got >= *value,
            };
            let unit = if *percent { "%" } else { "" };
            out.expect(ok, || {
                format!("{metric} {op} {value}{unit}: it is {got}{unit}")
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globbing() {
        assert!(glob("a*c", "abbbc"));
        assert!(glob("*", "anything"));
        assert!(glob(
            "SNAT@* *:* -> 198.18.1.1:*",
            "SNAT@router 198.18.0.137:* -> 198.18.1.1:*"
        ));
        assert!(!glob("a*c", "abd"));
        assert!(glob("exact", "exact"));
        assert!(!glob("exact", "exactly"));
    }

    #[test]
    fn rule_language() {
        assert_eq!(
            Rule::parse("every path passes vip, gateway, load_balancer, backend").unwrap(),
            Rule::EveryPathPasses(vec![
                "vip".into(),
                "gateway".into(),
                "load_balancer".into(),
                "backend".into()
            ])
        );
        assert_eq!(Rule::parse("No 5xx").unwrap(), Rule::No5xx);
        assert_eq!(
            Rule::parse("no hop slower than 100 ms at p99").unwrap(),
            Rule::NoHopSlowerThan(100.0)
        );
        assert_eq!(
            Rule::parse("p99 of gateway below 20ms").unwrap(),
            Rule::RoleP99Below("gateway".into(), 20.0)
        );
        assert!(matches!(
            Rule::parse("complete >= 99.5%").unwrap(),
            Rule::Count { percent: true, .. }
        ));
        assert!(matches!(
            Rule::parse("failed = 0").unwrap(),
            Rule::Count { percent: false, .. }
        ));
        assert!(Rule::parse("every path passes vip, kong").is_err());
        // Issue 14: a role a --names file defines is known (any case).
        assert_eq!(
            Rule::parse_with_roles("every path passes vip, Kong", &["kong".into()]).unwrap(),
            Rule::EveryPathPasses(vec!["vip".into(), "kong".into()])
        );
        assert!(Rule::parse("make it fast").is_err());
        assert!(Rule::parse("bogus >= 1").is_err());
    }

    #[test]
    fn expectation_round_trips() {
        let e = Expectation {
            description: Some("x".into()),
            rules: vec!["no 5xx".into()],
            vip_holders: vec!["A".into()],
            counts: Some(Counts {
                paths: Some(3),
                ..Counts::default()
            }),
            statuses: [("200".to_string(), 3)].into_iter().collect(),
            latency_p99_ms: [("gateway".to_string(), 1.5)].into_iter().collect(),
            shapes: vec![Shape {
                path: "complete: vip(A) > gateway@A".into(),
                count: 3,
            }],
            ..Expectation::default()
        };
        let text = e.to_toml().unwrap();
        assert_eq!(Expectation::parse(&text).unwrap(), e);
        assert!(Expectation::parse("unknown_key = 1").is_err());
    }
}
