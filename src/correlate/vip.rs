//! The VRRP virtual address: which router held it when, and its moves (failovers).

use super::engine::Context;
use super::report::{FailedPath, Failover, VipHolding};
use crate::time::Ts;
use std::net::IpAddr;

/// How long after a holding's last advert the same sender's next run still extends it
/// (adverts seen by several captures, or a short gap).
const SAME_HOLDING_GAP_NS: i64 = 3_000_000_000;
/// Failed paths this close to a failover are listed with it.
pub const FAILOVER_WINDOW_NS: i64 = 5_000_000_000;

/// Which host owns `ip`, by the links sidecars.
fn host_owning(ctx: &Context<'_>, ip: IpAddr) -> Option<String> {
    ctx.links.iter().enumerate().find_map(|(f, l)| {
        l.as_ref()?
            .links
            .iter()
            .any(|link| link.addresses.contains(&ip))
            .then(|| ctx.host(f))
    })
}

/// The timeline from the VRRP runs seen so far.
pub fn timeline(ctx: &Context<'_>) -> Vec<VipHolding> {
    let mut out: Vec<VipHolding> = Vec::new();
    let mut runs: Vec<_> = ctx.vrrp.iter().collect();
    runs.sort_by_key(|r| r.first_ts);
    for r in runs {
        for vip in &r.addresses {
            if let Some(h) = out
                .iter_mut()
                .rev()
                .find(|h| h.vip == *vip && h.vrid == r.vrid)
            {
                if h.holder_ip == r.source
                    && h.priority == r.priority
                    && r.first_ts.0 <= h.to.0 + SAME_HOLDING_GAP_NS
                {
                    h.to = h.to.max(r.last_ts);
                    h.adverts += r.adverts;
                    continue;
                }
            }
            out.push(VipHolding {
                vip: *vip,
                vrid: r.vrid,
                holder: host_owning(ctx, r.source).unwrap_or_else(|| r.source.to_string()),
                holder_ip: r.source,
                priority: r.priority,
                from: r.first_ts,
                to: r.last_ts,
                adverts: r.adverts,
            });
        }
    }
    out
}

/// The host holding `vip` at `ts`: the latest holding that started by then.
pub fn holder_at(timeline: &[VipHolding], vip: IpAddr, ts: Ts) -> Option<String> {
    timeline
        .iter()
        .filter(|h| h.vip == vip && h.from <= ts && h.priority > 0)
        .max_by_key(|h| h.from)
        .map(|h| h.holder.clone())
}

/// VIP moves, each with the failed paths (of `failed`: id, start, reason) around it.
pub fn failovers(
    ctx: &Context<'_>,
    timeline: &[VipHolding],
    failed: &[FailedPath],
) -> Vec<Failover> {
    let mut out = Vec::new();
    let mut vips: Vec<IpAddr> = timeline.iter().map(|h| h.vip).collect();
    vips.sort();
    vips.dedup();
    for vip in vips {
        let holdings: Vec<&VipHolding> = timeline
            .iter()
            .filter(|h| h.vip == vip && h.priority > 0)
            .collect();
        for w in holdings.windows(2) {
            if w[0].holder == w[1].holder {
                continue;
            }
            // A gratuitous ARP for the VIP can be the first sign of the new holder.
            let garp = ctx
                .garp
                .iter()
                .filter(|g| g.ip == vip && g.ts > w[0].to)
                .map(|g| g.ts)
                .min();
            let first_sign = garp.map_or(w[1].from, |g| g.min(w[1].from));
            let window = (
                w[0].to.0 - FAILOVER_WINDOW_NS,
                first_sign.0 + FAILOVER_WINDOW_NS,
            );
            let failed_paths = failed
                .iter()
                .filter(|p| p.start_ts.0 >= window.0 && p.start_ts.0 <= window.1)
                .cloned()
                .collect();
            out.push(Failover {
                vip,
                from: w[0].holder.clone(),
                to: w[1].holder.clone(),
                last_advert_before: w[0].to,
                first_sign_after: first_sign,
                failed_paths,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests;
