//! The service proxy's rules, decided purely: Services and their ready endpoints in, an
//! nftables rule set out ([`Ruleset`]), and the script that turns one rule set into another
//! touching only what changed ([`script`]).
//!
//! Everything lives in one table of our own, `ip shipshape`, so removing the table removes
//! every rule we added and nothing else. The shape follows kube-proxy's nftables mode:
//!
//! - a verdict map `service-ips` (address . protocol . port → the Service port's chain) and
//!   `service-nodeports` (protocol . port, for local destinations, loopback included);
//! - a chain per Service port that picks an endpoint with `numgen random` (evenly), or the
//!   endpoint a client already has under `sessionAffinity: ClientIP`;
//! - a chain per endpoint that DNATs to it;
//! - masquerading for traffic that would otherwise come back the wrong way: from outside the
//!   pod network (the host, loopback, NodePorts) and from a pod to a pod of its own node (the
//!   reply would skip the host when bridged traffic is not filtered);
//! - a `no-endpoints` map that rejects connections to Service ports nothing serves, so a
//!   client is refused at once instead of waiting.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr};

use shipshape_actors::service_view::{EndpointSubset, ServiceKind, ServiceView};

use crate::Cidr;

/// The table every rule lives in.
pub const TABLE: &str = "shipshape";

/// The packet mark bit asking for masquerade (kube-proxy uses 0x4000; ours is apart so the two
/// can share a host).
const MASQUERADE_MARK: u32 = 0x0040_0000;

/// What the rules are built for.
#[derive(Clone, Debug)]
pub struct ProxyConfig {
    /// The pod network: traffic from outside it is masqueraded.
    pub pod_cidr: Cidr,
    /// Each node's share of it (a /24): pod-to-pod traffic within one is masqueraded.
    pub node_prefix: u8,
    /// The cluster DNS service address and where the DNS server listens for it (a node
    /// gateway, port 53).
    pub dns: Option<(Ipv4Addr, Ipv4Addr)>,
}

/// A complete rule set: the per-Service chains and the map elements pointing at them. The
/// fixed base (hooks, maps, helper chains) is not in it; [`script`] writes that on a full sync.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ruleset {
    /// Chain name → its rules, in order.
    pub chains: BTreeMap<String, Vec<String>>,
    /// `service-ips` elements: key → verdict.
    pub service_ips: BTreeMap<String, String>,
    /// `service-nodeports` elements: key → verdict.
    pub node_ports: BTreeMap<String, String>,
    /// `no-endpoints` elements (rejected).
    pub no_endpoints: BTreeSet<String>,
    /// Affinity sets: name → timeout in seconds.
    pub affinity_sets: BTreeMap<String, u32>,
}

/// A Service with the ready endpoints that back it.
#[derive(Clone, Debug)]
pub struct ProxiedService {
    /// The Service.
    pub service: ServiceView,
    /// Its Endpoints' ready subsets.
    pub subsets: Vec<EndpointSubset>,
}

fn protocol(text: &str) -> Option<&'static str> {
    match text.to_ascii_uppercase().as_str() {
        "TCP" => Some("tcp"),
        "UDP" => Some("udp"),
        "SCTP" => Some("sctp"),
        _ => None,
    }
}

fn v4(ips: &[IpAddr]) -> impl Iterator<Item = Ipv4Addr> + '_ {
    ips.iter().filter_map(|ip| match ip {
        IpAddr::V4(v4) => Some(*v4),
        IpAddr::V6(_) => None,
    })
}

/// The subnet of `prefix` bits holding `ip`.
fn subnet_of(ip: Ipv4Addr, prefix: u8) -> String {
    let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
    format!("{}/{prefix}", Ipv4Addr::from(u32::from(ip) & mask))
}

/// The rules for these Services.
pub fn ruleset(config: &ProxyConfig, services: &[ProxiedService]) -> Ruleset {
    let mut rules = Ruleset::default();
    if let Some((service_ip, gateway)) = config.dns {
        let chain = "cluster-dns".to_string();
        rules.chains.insert(
            chain.clone(),
            vec![
                format!("meta l4proto udp dnat to {gateway}:53"),
                format!("meta l4proto tcp dnat to {gateway}:53"),
            ],
        );
        for proto in ["udp", "tcp"] {
            rules.service_ips.insert(
                format!("{service_ip} . {proto} . 53"),
                format!("goto {chain}"),
            );
        }
    }
    for proxied in services {
        let service = &proxied.service;
        let node_ported = matches!(
            service.kind,
            ServiceKind::NodePort | ServiceKind::LoadBalancer
        );
        if !matches!(
            service.kind,
            ServiceKind::ClusterIp | ServiceKind::NodePort | ServiceKind::LoadBalancer
        ) {
            continue;
        }
        for port in &service.ports {
            let Some(proto) = protocol(&port.protocol) else {
                continue;
            };
            let id = format!(
                "{}/{}/{proto}/{}",
                service.namespace, service.name, port.port
            );
            let backends: Vec<(Ipv4Addr, u16)> = proxied
                .subsets
                .iter()
                .flat_map(|subset| {
                    let target = subset
                        .ports
                        .iter()
                        .find(|(name, _, p)| *name == port.name && protocol(p) == Some(proto))
                        .map(|(_, target, _)| *target);
                    target.into_iter().flat_map(move |target| {
                        subset.addresses.iter().filter_map(move |a| match a.ip {
                            IpAddr::V4(ip) => Some((ip, target)),
                            IpAddr::V6(_) => None,
                        })
                    })
                })
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect();
            let addresses: Vec<Ipv4Addr> = v4(&service.cluster_ips)
                .chain(v4(&service.load_balancer_ips))
                .collect();
            if backends.is_empty() {
                for address in &addresses {
                    rules
                        .no_endpoints
                        .insert(format!("{address} . {proto} . {}", port.port));
                }
                if node_ported && let Some(node_port) = port.node_port {
                    rules
                        .no_endpoints
                        .insert(format!("nodeport . {proto} . {node_port}"));
                }
                continue;
            }
            let service_chain = format!("svc/{id}");
            let mut service_rules = vec![format!(
                "ip saddr != {} jump mark-for-masquerade",
                config.pod_cidr
            )];
            let mut picks = Vec::new();
            for (index, (ip, target)) in backends.iter().enumerate() {
                let endpoint_chain = format!("sep/{id}/{ip}/{target}");
                let mut endpoint_rules = vec![format!(
                    "ip saddr {} jump mark-for-masquerade",
                    subnet_of(*ip, config.node_prefix)
                )];
                if let Some(timeout) = service.affinity_seconds {
                    let set = format!("affinity/{id}/{ip}/{target}");
                    service_rules.push(format!("ip saddr @{set} goto {endpoint_chain}"));
                    endpoint_rules.push(format!("update @{set} {{ ip saddr }}"));
                    rules.affinity_sets.insert(set, timeout);
                }
                endpoint_rules.push(format!("meta l4proto {proto} dnat to {ip}:{target}"));
                rules.chains.insert(endpoint_chain.clone(), endpoint_rules);
                picks.push(format!("{index} : goto {endpoint_chain}"));
            }
            service_rules.push(format!(
                "numgen random mod {} vmap {{ {} }}",
                backends.len(),
                picks.join(", ")
            ));
            rules.chains.insert(service_chain.clone(), service_rules);
            for address in &addresses {
                rules.service_ips.insert(
                    format!("{address} . {proto} . {}", port.port),
                    format!("goto {service_chain}"),
                );
            }
            if node_ported && let Some(node_port) = port.node_port {
                let external = format!("nodeport/{id}");
                rules.chains.insert(
                    external.clone(),
                    vec![
                        "jump mark-for-masquerade".to_string(),
                        format!("goto {service_chain}"),
                    ],
                );
                rules
                    .node_ports
                    .insert(format!("{proto} . {node_port}"), format!("goto {external}"));
            }
        }
    }
    rules
}

/// The fixed part of the table: hooks, maps and helper chains.
fn base() -> String {
    let mark = format!("0x{MASQUERADE_MARK:08x}");
    format!(
        "table ip {TABLE} {{
  map service-ips {{ type ipv4_addr . inet_proto . inet_service : verdict; }}
  map service-nodeports {{ type inet_proto . inet_service : verdict; }}
  set no-endpoints {{ type ipv4_addr . inet_proto . inet_service; }}
  set no-endpoint-nodeports {{ type inet_proto . inet_service; }}
  chain mark-for-masquerade {{ meta mark set meta mark | {mark}; }}
  chain masquerading {{
    meta mark & {mark} == 0 return
    meta mark set meta mark ^ {mark}
    masquerade fully-random
  }}
  chain services {{
    ip daddr . meta l4proto . th dport vmap @service-ips
    fib daddr type local meta l4proto . th dport vmap @service-nodeports
  }}
  chain nat-prerouting {{ type nat hook prerouting priority dstnat; policy accept; jump services; }}
  chain nat-output {{ type nat hook output priority -100; policy accept; jump services; }}
  chain nat-postrouting {{ type nat hook postrouting priority srcnat; policy accept; jump masquerading; }}
  chain reject-unserved {{
    ip daddr . meta l4proto . th dport @no-endpoints reject
    fib daddr type local meta l4proto . th dport @no-endpoint-nodeports reject
  }}
  chain filter-input {{ type filter hook input priority -110; policy accept; ct state new jump reject-unserved; }}
  chain filter-forward {{ type filter hook forward priority -110; policy accept; ct state new jump reject-unserved; }}
  chain filter-output {{ type filter hook output priority -110; policy accept; ct state new jump reject-unserved; }}
}}
"
    )
}

fn add_chain(out: &mut String, name: &str, rules: &[String]) {
    let _ = writeln!(out, "add chain ip {TABLE} {name}");
    for rule in rules {
        let _ = writeln!(out, "add rule ip {TABLE} {name} {rule}");
    }
}

fn element_set(out: &mut String, verb: &str, set: &str, element: &str) {
    let _ = writeln!(out, "{verb} element ip {TABLE} {set} {{ {element} }}");
}

fn no_endpoint_element(element: &str) -> (&'static str, String) {
    match element.strip_prefix("nodeport . ") {
        Some(rest) => ("no-endpoint-nodeports", rest.to_string()),
        None => ("no-endpoints", element.to_string()),
    }
}

/// The `nft -f` script that takes the table from `old` to `new`: the whole table when `old`
/// is `None` (a start, or after a failed update), else only the chains and elements that
/// differ. Chains are created before anything refers to them and deleted after nothing does.
pub fn script(old: Option<&Ruleset>, new: &Ruleset) -> String {
    let mut out = String::new();
    let empty = Ruleset::default();
    let old = match old {
        Some(old) => old,
        None => {
            // Replace whatever a previous run left, atomically: the script is one transaction.
            let _ = writeln!(out, "add table ip {TABLE}");
            let _ = writeln!(out, "delete table ip {TABLE}");
            out.push_str(&base());
            &empty
        }
    };
    for (set, timeout) in &new.affinity_sets {
        if old.affinity_sets.get(set) != Some(timeout) {
            if old.affinity_sets.contains_key(set) {
                let _ = writeln!(out, "flush set ip {TABLE} {set}");
            }
            let _ = writeln!(
                out,
                "add set ip {TABLE} {set} {{ type ipv4_addr; flags dynamic,timeout; timeout {timeout}s; }}"
            );
        }
    }
    for name in new.chains.keys() {
        if !old.chains.contains_key(name) {
            let _ = writeln!(out, "add chain ip {TABLE} {name}");
        }
    }
    for (name, rules) in &new.chains {
        if old.chains.get(name) != Some(rules) {
            if old.chains.contains_key(name) {
                let _ = writeln!(out, "flush chain ip {TABLE} {name}");
            }
            add_chain(&mut out, name, rules);
        }
    }
    for (map, old_elements, new_elements) in [
        ("service-ips", &old.service_ips, &new.service_ips),
        ("service-nodeports", &old.node_ports, &new.node_ports),
    ] {
        for (key, verdict) in old_elements {
            if new_elements.get(key) != Some(verdict) {
                element_set(&mut out, "delete", map, key);
            }
        }
        for (key, verdict) in new_elements {
            if old_elements.get(key) != Some(verdict) {
                element_set(&mut out, "add", map, &format!("{key} : {verdict}"));
            }
        }
    }
    for element in old.no_endpoints.difference(&new.no_endpoints) {
        let (set, element) = no_endpoint_element(element);
        element_set(&mut out, "delete", set, &element);
    }
    for element in new.no_endpoints.difference(&old.no_endpoints) {
        let (set, element) = no_endpoint_element(element);
        element_set(&mut out, "add", set, &element);
    }
    let gone: Vec<&String> = old
        .chains
        .keys()
        .filter(|name| !new.chains.contains_key(*name))
        .collect();
    for name in &gone {
        let _ = writeln!(out, "flush chain ip {TABLE} {name}");
    }
    for name in &gone {
        let _ = writeln!(out, "delete chain ip {TABLE} {name}");
    }
    for set in old.affinity_sets.keys() {
        if !new.affinity_sets.contains_key(set) {
            let _ = writeln!(out, "delete set ip {TABLE} {set}");
        }
    }
    out
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use shipshape_actors::service_view::{EndpointAddress, ServicePortView};

    pub(crate) fn config() -> ProxyConfig {
        ProxyConfig {
            pod_cidr: "10.244.0.0/16".parse().unwrap(),
            node_prefix: 24,
            dns: Some((Ipv4Addr::new(10, 96, 0, 10), Ipv4Addr::new(10, 244, 1, 1))),
        }
    }

    pub(crate) fn web(kind: ServiceKind, endpoints: &[&str]) -> ProxiedService {
        ProxiedService {
            service: ServiceView {
                namespace: "default".into(),
                name: "web".into(),
                kind,
                cluster_ips: vec!["10.96.0.20".parse().unwrap()],
                load_balancer_ips: vec![],
                ports: vec![ServicePortView {
                    name: "http".into(),
                    protocol: "TCP".into(),
                    port: 80,
                    node_port: Some(30080),
                }],
                affinity_seconds: None,
            },
            subsets: vec![EndpointSubset {
                addresses: endpoints
                    .iter()
                    .map(|ip| EndpointAddress {
                        ip: ip.parse().unwrap(),
                        hostname: None,
                    })
                    .collect(),
                ports: vec![("http".into(), 8080, "TCP".into())],
            }],
        }
    }

    #[test]
    fn a_cluster_ip_spreads_over_its_endpoints() {
        let rules = ruleset(
            &config(),
            &[web(ServiceKind::ClusterIp, &["10.244.1.5", "10.244.2.7"])],
        );
        assert_eq!(
            rules.service_ips["10.96.0.20 . tcp . 80"],
            "goto svc/default/web/tcp/80"
        );
        let service = &rules.chains["svc/default/web/tcp/80"];
        assert_eq!(
            service.last().unwrap(),
            "numgen random mod 2 vmap { 0 : goto sep/default/web/tcp/80/10.244.1.5/8080, 1 : goto sep/default/web/tcp/80/10.244.2.7/8080 }"
        );
        let endpoint = &rules.chains["sep/default/web/tcp/80/10.244.2.7/8080"];
        assert_eq!(
            endpoint,
            &[
                "ip saddr 10.244.2.0/24 jump mark-for-masquerade",
                "meta l4proto tcp dnat to 10.244.2.7:8080"
            ]
        );
        assert!(rules.node_ports.is_empty(), "a ClusterIP has no node port");
        assert_eq!(
            rules.service_ips["10.96.0.10 . udp . 53"],
            "goto cluster-dns"
        );
    }

    #[test]
    fn node_ports_masquerade_and_unserved_ports_are_rejected() {
        let rules = ruleset(&config(), &[web(ServiceKind::NodePort, &["10.244.1.5"])]);
        assert_eq!(
            rules.node_ports["tcp . 30080"],
            "goto nodeport/default/web/tcp/80"
        );
        let empty = ruleset(&config(), &[web(ServiceKind::NodePort, &[])]);
        assert!(empty.node_ports.is_empty());
        assert!(empty.no_endpoints.contains("10.96.0.20 . tcp . 80"));
        assert!(empty.no_endpoints.contains("nodeport . tcp . 30080"));
    }

    #[test]
    fn client_ip_affinity_remembers_each_clients_endpoint() {
        let mut sticky = web(ServiceKind::ClusterIp, &["10.244.1.5"]);
        sticky.service.affinity_seconds = Some(60);
        let rules = ruleset(&config(), &[sticky]);
        let set = "affinity/default/web/tcp/80/10.244.1.5/8080";
        assert_eq!(rules.affinity_sets[set], 60);
        assert!(rules.chains["svc/default/web/tcp/80"].contains(&format!(
            "ip saddr @{set} goto sep/default/web/tcp/80/10.244.1.5/8080"
        )));
    }

    #[test]
    fn an_update_touches_only_what_changed() {
        let before = ruleset(
            &config(),
            &[web(ServiceKind::ClusterIp, &["10.244.1.5", "10.244.2.7"])],
        );
        let after = ruleset(&config(), &[web(ServiceKind::ClusterIp, &["10.244.1.5"])]);
        let update = script(Some(&before), &after);
        assert!(!update.contains("delete table"), "{update}");
        assert!(update.contains("flush chain ip shipshape svc/default/web/tcp/80\n"));
        assert!(
            update.contains("delete chain ip shipshape sep/default/web/tcp/80/10.244.2.7/8080\n")
        );
        assert!(
            !update.contains("sep/default/web/tcp/80/10.244.1.5/8080\n"),
            "the unchanged endpoint's chain is left alone:\n{update}"
        );
        assert!(
            !update.contains("service-ips"),
            "the map element did not change"
        );
        assert_eq!(
            script(Some(&after), &after),
            "",
            "nothing changed, nothing to do"
        );
        let full = script(None, &after);
        assert!(full.starts_with("add table ip shipshape\ndelete table ip shipshape\n"));
        assert!(full.contains("add element ip shipshape service-ips { 10.96.0.20 . tcp . 80 : goto svc/default/web/tcp/80 }"));
    }
}

/// The scripts as nftables itself reads them: `nft -c` checks a script against the kernel
/// without committing anything, so this runs wherever nft and root are (CI) and changes nothing.
#[cfg(test)]
mod kernel_check {
    use super::tests::*;
    use super::*;

    fn check(script: &str) -> Option<Result<(), String>> {
        use std::io::Write as _;
        let mut child = std::process::Command::new("nft")
            .args(["-c", "-f", "-"])
            .stdin(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .ok()?;
        child.stdin.take()?.write_all(script.as_bytes()).ok()?;
        let output = child.wait_with_output().ok()?;
        if !output.status.success()
            && String::from_utf8_lossy(&output.stderr).contains("Operation not permitted")
        {
            return None;
        }
        Some(if output.status.success() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&output.stderr).into_owned())
        })
    }

    #[test]
    fn nftables_accepts_the_full_table_and_an_update() {
        let mut sticky = web(ServiceKind::NodePort, &["10.244.1.5", "10.244.2.7"]);
        sticky.service.affinity_seconds = Some(60);
        let before = ruleset(&config(), &[sticky, web(ServiceKind::ClusterIp, &[])]);
        let after = ruleset(&config(), &[web(ServiceKind::NodePort, &["10.244.1.5"])]);
        let full = script(None, &before);
        let update = script(Some(&before), &after);
        let Some(result) = check(&format!("{full}{update}")) else {
            if std::env::var_os("CI").is_some() {
                panic!("CI runs as root with nftables installed: nft must check the rules");
            }
            eprintln!("skipped: nft not installed or not root");
            return;
        };
        if let Err(error) = result {
            panic!("nft refused the rules: {error}\n{full}{update}");
        }
    }
}
