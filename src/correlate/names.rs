//! The topology file (`--names FILE`, TOML): names for hosts and services, and roles
//! that override what traffic suggests. docs/correlation.md documents it.
//!
//! ```toml
//! [hosts]                       # capture file name without extensions -> host name
//! A = "server-a"
//!
//! [services]                    # "ip:port" (or "ip") -> name and/or role
//! "198.19.1.2:8000" = { name = "kong", role = "gateway" }
//! "198.18.1.231" = { name = "vip" }
//! ```

use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;

/// A service's name and role.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Service {
    /// Name shown in paths and the address book.
    pub name: Option<String>,
    /// Role, replacing the inferred one.
    pub role: Option<String>,
}

/// The topology file.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Names {
    /// Host names by capture file stem.
    #[serde(default)]
    pub hosts: BTreeMap<String, String>,
    /// Services by "ip:port" or "ip".
    #[serde(default)]
    pub services: BTreeMap<String, Service>,
}

impl Names {
    /// Parses a topology file.
    pub fn parse(text: &str) -> Result<Names, String> {
        let names: Names = toml::from_str(text).map_err(|e| e.to_string())?;
        for key in names.services.keys() {
            if key.parse::<SocketAddr>().is_err() && key.parse::<std::net::IpAddr>().is_err() {
                return Err(format!("services: {key:?} is neither ip:port nor ip"));
            }
        }
        Ok(names)
    }

    /// The name of the host whose capture file stem is `stem`.
    pub fn host(&self, stem: &str) -> String {
        self.hosts
            .get(stem)
            .cloned()
            .unwrap_or_else(|| stem.to_string())
    }

    /// The addresses of each service name given to more than one address: one
    /// service (a two-armed proxy, a load balancer with a front and a back network)
    /// reached at one and sending from another.
    pub fn alias_groups(&self) -> Vec<Vec<std::net::IpAddr>> {
        let mut by_name: BTreeMap<&str, Vec<std::net::IpAddr>> = BTreeMap::new();
        for (key, service) in &self.services {
            let Some(name) = service.name.as_deref() else {
                continue;
            };
            let ip = key
                .parse::<SocketAddr>()
                .map(|a| a.ip())
                .or_else(|_| key.parse::<std::net::IpAddr>());
            if let Ok(ip) = ip {
                let list = by_name.entry(name).or_default();
                if !list.contains(&ip) {
                    list.push(ip);
                }
            }
        }
        by_name.into_values().filter(|g| g.len() > 1).collect()
    }

    /// The service at `addr` ("ip:port" first, then "ip").
    pub fn service(&self, addr: SocketAddr) -> Option<&Service> {
        self.services
            .get(&addr.to_string())
            .or_else(|| self.services.get(&addr.ip().to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One name on several addresses makes them one proxy's.
    #[test]
    fn one_name_on_several_addresses_is_an_alias_group() {
        let n = Names::parse(
            r#"
[services]
"10.0.0.2:80" = { name = "lb" }
"10.1.0.2" = { name = "lb" }
"10.0.0.9:80" = { name = "api" }
"10.0.0.10" = { role = "backend" }
"#,
        )
        .unwrap();
        let groups = n.alias_groups();
        assert_eq!(groups.len(), 1);
        let mut g = groups[0].clone();
        g.sort();
        assert_eq!(
            g,
            vec![
                "10.0.0.2".parse::<std::net::IpAddr>().unwrap(),
                "10.1.0.2".parse().unwrap()
            ]
        );
    }

    #[test]
    fn parse_and_lookup() {
        let n = Names::parse(
            r#"
[hosts]
A = "server-a"
[services]
"198.19.1.2:8000" = { name = "kong", role = "gateway" }
"198.18.1.231" = { name = "vip" }
"#,
        )
        .unwrap();
        assert_eq!(n.host("A"), "server-a");
        assert_eq!(n.host("B"), "B");
        assert_eq!(
            n.service("198.19.1.2:8000".parse().unwrap())
                .unwrap()
                .role
                .as_deref(),
            Some("gateway")
        );
        assert_eq!(
            n.service("198.18.1.231:8000".parse().unwrap())
                .unwrap()
                .name
                .as_deref(),
            Some("vip")
        );
        assert!(n.service("198.19.1.2:80".parse().unwrap()).is_none());
        assert!(Names::parse("[services]\n\"nope\" = {}\n").is_err());
        assert!(Names::parse("[other]\n").is_err());
    }
}
