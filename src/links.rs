//! The links sidecar: `ip -j addr` output of the capturing host.
//!
//! `tcpdump -i any` writes Linux SLL2 frames that store only an interface index, and
//! indexes are per host (per network namespace). The JSON that `ip -j addr` prints on
//! that host names them, and its addresses tell which host owns which IP. flowtrace
//! finds it with `--links CAPTURE=FILE`, or beside the capture as
//! `<capture>.links.json` (also `<stem>.links.json`, with `.gz`, `.pcap` and `.pcapng`
//! taken off the capture's name).

use crate::error::LinksError;
use serde::{Deserialize, Serialize};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

/// One interface of the capturing host.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Link {
    /// Interface index.
    pub ifindex: u32,
    /// Interface name.
    pub ifname: String,
    /// MAC address, as `ip` prints it.
    pub mac: Option<String>,
    /// The bridge it is enslaved to, if any.
    pub master: Option<String>,
    /// Its addresses.
    pub addresses: Vec<IpAddr>,
}

/// Every interface of one capturing host.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct HostLinks {
    /// Where the sidecar came from.
    pub path: String,
    /// The interfaces.
    pub links: Vec<Link>,
}

impl HostLinks {
    /// Parses `ip -j addr` JSON.
    pub fn parse(json: &str, path: &Path) -> Result<HostLinks, LinksError> {
        let err = |detail: String| LinksError::Format {
            path: path.to_owned(),
            detail,
        };
        let value: serde_json::Value =
            serde_json::from_str(json).map_err(|e| err(e.to_string()))?;
        let array = value
            .as_array()
            .ok_or_else(|| err("expected a JSON array of interfaces".into()))?;
        let mut links = Vec::new();
        for item in array {
            let Some(ifindex) = item.get("ifindex").and_then(|v| v.as_u64()) else {
                // `ip -j addr` can print empty objects for interfaces it filtered.
                continue;
            };
            let ifname = item
                .get("ifname")
                .and_then(|v| v.as_str())
                .ok_or_else(|| err(format!("interface {ifindex} has no ifname")))?;
            let addresses = item
                .get("addr_info")
                .and_then(|v| v.as_array())
                .map(|a| {
                    a.iter()
                        .filter_map(|ai| ai.get("local")?.as_str()?.parse().ok())
                        .collect()
                })
                .unwrap_or_default();
            links.push(Link {
                ifindex: u32::try_from(ifindex)
                    .map_err(|_| err(format!("ifindex {ifindex} too large")))?,
                ifname: ifname.to_owned(),
                mac: item
                    .get("address")
                    .and_then(|v| v.as_str())
                    .map(str::to_owned),
                master: item
                    .get("master")
                    .and_then(|v| v.as_str())
                    .map(str::to_owned),
                addresses,
            });
        }
        Ok(HostLinks {
            path: path.display().to_string(),
            links,
        })
    }

    /// Reads and parses a sidecar file.
    pub fn load(path: &Path) -> Result<HostLinks, LinksError> {
        let text = std::fs::read_to_string(path).map_err(|source| LinksError::Io {
            path: path.to_owned(),
            source,
        })?;
        HostLinks::parse(&text, path)
    }

    /// The interface with index `ifindex`.
    pub fn by_index(&self, ifindex: u32) -> Option<&Link> {
        self.links.iter().find(|l| l.ifindex == ifindex)
    }
}

/// The sidecar paths tried for a capture, in order.
pub fn candidates(capture: &Path) -> Vec<PathBuf> {
    let name = capture
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut out = vec![capture.with_file_name(format!("{name}.links.json"))];
    let mut stem = name.as_str();
    for suffix in [".gz", ".pcapng", ".pcap", ".cap"] {
        if let Some(s) = stem.strip_suffix(suffix) {
            stem = s;
            out.push(capture.with_file_name(format!("{stem}.links.json")));
        }
    }
    out
}

/// Finds the conventional sidecar beside `capture`, if there is one.
pub fn find_beside(capture: &Path) -> Option<PathBuf> {
    candidates(capture).into_iter().find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"[{"ifindex":1,"ifname":"lo","flags":["LOOPBACK"],"address":"00:00:00:00:00:00",
      "addr_info":[{"family":"inet","local":"127.0.0.1","prefixlen":8}]},
      {"ifindex":7,"link_index":6,"ifname":"veth-a","master":"mdk","address":"02:00:00:00:00:07","addr_info":[]},
      {}]"#;

    #[test]
    fn parses_ip_j_addr() {
        let h = HostLinks::parse(SAMPLE, Path::new("a.links.json")).unwrap();
        assert_eq!(h.links.len(), 2);
        assert_eq!(h.by_index(7).unwrap().ifname, "veth-a");
        assert_eq!(h.by_index(7).unwrap().master.as_deref(), Some("mdk"));
        assert_eq!(
            h.by_index(1).unwrap().addresses,
            vec!["127.0.0.1".parse::<IpAddr>().unwrap()]
        );
    }

    #[test]
    fn rejects_non_array() {
        assert!(matches!(
            HostLinks::parse("{}", Path::new("x")),
            Err(LinksError::Format { .. })
        ));
        assert!(HostLinks::parse("not json", Path::new("x")).is_err());
    }

    #[test]
    fn candidate_names() {
        let c = candidates(Path::new("/d/serverA.pcap.gz"));
        assert_eq!(
            c,
            vec![
                PathBuf::from("/d/serverA.pcap.gz.links.json"),
                PathBuf::from("/d/serverA.pcap.links.json"),
                PathBuf::from("/d/serverA.links.json"),
            ]
        );
    }
}
