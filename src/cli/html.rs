//! `--html FILE`: the report page, written beside the paths in the same pass
//! (`flowtrace::render::html` has the page; this draws the kept paths' diagrams for it).

use super::stream::Streamed;
use anyhow::{Context, Result};
use flowtrace::diagram::{self, Keeper};
use flowtrace::render::html::{HtmlWriter, KeptDiagrams, Page};
use std::path::Path;

/// Starts the page at `file`.
pub(crate) fn create(file: &Path) -> Result<HtmlWriter> {
    HtmlWriter::create(file).with_context(|| format!("cannot create {}.tmp", file.display()))
}

/// Finishes the page: the summary of `s`, the topology and the kept paths' diagrams
/// from `keeper`; says what it wrote on stderr.
pub(crate) fn finish(file: &Path, writer: HtmlWriter, keeper: Keeper, s: &Streamed) -> Result<()> {
    let (paths, topology) = keeper.finish(&s.tail.vip_timeline);
    let report = s.tail.clone().into_report(Vec::new());
    let kept: Vec<KeptDiagrams> = paths
        .iter()
        .map(|p| KeptDiagrams {
            id: p.id,
            chain: diagram::chain(&report, p),
            ladder: diagram::ladder(&report, p, &s.vantages, &p.segments),
            swimlanes: diagram::swimlanes(&report, p, &s.vantages, &p.segments),
        })
        .collect();
    let n = writer
        .finish(&Page {
            tail: &s.tail,
            inputs: &s.files,
            topology_svg: &topology.svg(),
            kept: &kept,
            generator: concat!("flowtrace ", env!("CARGO_PKG_VERSION")),
        })
        .with_context(|| format!("cannot write {}", file.display()))?;
    eprintln!("flowtrace: wrote {} ({n} paths)", file.display());
    Ok(())
}
