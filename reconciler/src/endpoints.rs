//! The Endpoints decision: which pod addresses and ports back a Service.
//!
//! As Kubernetes' endpoints controller: the pods the Service selects that have an address;
//! ready ones serve, not-ready ones are listed apart (`notReadyAddresses`) unless the Service
//! publishes them anyway; terminating pods are left out. A Service port's `targetPort` may name a
//! container port, and pods may resolve that name to different numbers, so addresses are grouped
//! into subsets by the ports they resolve to.

use std::collections::BTreeMap;

/// Where a Service port sends traffic on the pod.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TargetPort {
    /// A port number.
    Number(i32),
    /// A container port's name.
    Named(String),
}

/// One port of a Service.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServicePort {
    /// The port's name (may be empty when there is one port).
    pub name: String,
    /// TCP, UDP or SCTP.
    pub protocol: String,
    /// Where it goes on the pod.
    pub target: TargetPort,
}

/// A pod as the Endpoints decision sees it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct EndpointPod {
    /// The pod's name.
    pub name: String,
    /// Its address, once it has one.
    pub ip: Option<String>,
    /// The node it runs on.
    pub node: Option<String>,
    /// Whether its Ready condition is true.
    pub ready: bool,
    /// Whether it is being deleted.
    pub terminating: bool,
    /// Its containers' named ports: name → (number, protocol).
    pub named_ports: BTreeMap<String, (i32, String)>,
    /// `spec.hostname` and `spec.subdomain`: a pod whose subdomain is the Service is known
    /// by its hostname under it (`web-0.web.ns.svc`).
    pub hostname: Option<(String, String)>,
}

/// An address in an Endpoints subset.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Address {
    /// The pod's IP.
    pub ip: String,
    /// The pod's name.
    pub pod: String,
    /// Its node.
    pub node: Option<String>,
    /// Its hostname under the Service, when its subdomain is the Service.
    pub hostname: Option<String>,
}

/// A resolved port: (name, number, protocol).
pub type ResolvedPort = (String, i32, String);

/// Addresses that share the same resolved ports.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Subset {
    /// Ready addresses, by IP.
    pub ready: Vec<Address>,
    /// Addresses not ready yet, by IP.
    pub not_ready: Vec<Address>,
    /// The ports, by name.
    pub ports: Vec<ResolvedPort>,
}

/// The subsets Service `service`'s Endpoints should hold, given the pods its selector matches.
/// A Service without ports (a headless one) lists its pods' addresses with no ports.
pub fn endpoints_for(
    service: &str,
    ports: &[ServicePort],
    pods: &[EndpointPod],
    publish_not_ready: bool,
) -> Vec<Subset> {
    let mut groups: BTreeMap<Vec<ResolvedPort>, Subset> = BTreeMap::new();
    for pod in pods {
        let Some(ip) = &pod.ip else { continue };
        if pod.terminating {
            continue;
        }
        let mut resolved: Vec<ResolvedPort> = ports
            .iter()
            .filter_map(|port| match &port.target {
                TargetPort::Number(n) => Some((port.name.clone(), *n, port.protocol.clone())),
                TargetPort::Named(name) => pod
                    .named_ports
                    .get(name)
                    .filter(|(_, protocol)| *protocol == port.protocol)
                    .map(|(n, _)| (port.name.clone(), *n, port.protocol.clone())),
            })
            .collect();
        if resolved.is_empty() && !ports.is_empty() {
            continue;
        }
        resolved.sort();
        let subset = groups.entry(resolved.clone()).or_default();
        subset.ports = resolved;
        let address = Address {
            ip: ip.clone(),
            pod: pod.name.clone(),
            node: pod.node.clone(),
            hostname: pod
                .hostname
                .as_ref()
                .filter(|(_, subdomain)| subdomain == service)
                .map(|(hostname, _)| hostname.clone()),
        };
        if pod.ready || publish_not_ready {
            subset.ready.push(address);
        } else {
            subset.not_ready.push(address);
        }
    }
    groups
        .into_values()
        .map(|mut subset| {
            subset.ready.sort();
            subset.not_ready.sort();
            subset
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, ip: Option<&str>, ready: bool, http: i32) -> EndpointPod {
        EndpointPod {
            name: name.into(),
            ip: ip.map(str::to_string),
            node: Some("node-1".into()),
            ready,
            terminating: false,
            named_ports: [("http".to_string(), (http, "TCP".to_string()))].into(),
            hostname: None,
        }
    }

    #[test]
    fn pods_of_the_services_subdomain_carry_their_hostname() {
        let mut named = pod("web-0", Some("10.244.0.2"), true, 8080);
        named.hostname = Some(("web-0".into(), "web".into()));
        let mut elsewhere = pod("other-0", Some("10.244.0.3"), true, 8080);
        elsewhere.hostname = Some(("other-0".into(), "other".into()));
        let subsets = endpoints_for("web", &[], &[named, elsewhere], false);
        assert_eq!(
            subsets.len(),
            1,
            "a Service without ports still lists its pods"
        );
        assert!(subsets[0].ports.is_empty());
        let hostnames: Vec<_> = subsets[0]
            .ready
            .iter()
            .map(|a| a.hostname.clone())
            .collect();
        assert_eq!(hostnames, [Some("web-0".to_string()), None]);
    }

    fn port(target: TargetPort) -> ServicePort {
        ServicePort {
            name: "web".into(),
            protocol: "TCP".into(),
            target,
        }
    }

    #[test]
    fn ready_pods_serve_and_others_wait_apart() {
        let pods = [
            pod("b", Some("10.244.0.3"), true, 8080),
            pod("a", Some("10.244.0.2"), false, 8080),
            pod("c", None, true, 8080),
        ];
        let subsets = endpoints_for("web", &[port(TargetPort::Number(8080))], &pods, false);
        assert_eq!(subsets.len(), 1);
        assert_eq!(
            subsets[0]
                .ready
                .iter()
                .map(|a| a.pod.as_str())
                .collect::<Vec<_>>(),
            ["b"]
        );
        assert_eq!(
            subsets[0]
                .not_ready
                .iter()
                .map(|a| a.pod.as_str())
                .collect::<Vec<_>>(),
            ["a"]
        );
        let published = endpoints_for("web", &[port(TargetPort::Number(8080))], &pods, true);
        assert_eq!(
            published[0].ready.len(),
            2,
            "publishNotReadyAddresses lists both as ready"
        );
        let mut leaving = pods.clone();
        leaving[0].terminating = true;
        let subsets = endpoints_for("web", &[port(TargetPort::Number(8080))], &leaving, false);
        assert!(
            subsets[0].ready.is_empty(),
            "a terminating pod stops receiving traffic"
        );
    }

    #[test]
    fn named_target_ports_group_pods_by_what_they_resolve_to() {
        let pods = [
            pod("a", Some("10.244.0.2"), true, 8080),
            pod("b", Some("10.244.0.3"), true, 9090),
            pod("c", Some("10.244.0.4"), true, 8080),
        ];
        let subsets = endpoints_for(
            "web",
            &[port(TargetPort::Named("http".into()))],
            &pods,
            false,
        );
        assert_eq!(subsets.len(), 2);
        assert_eq!(
            subsets[0].ports,
            vec![("web".to_string(), 8080, "TCP".to_string())]
        );
        assert_eq!(subsets[0].ready.len(), 2);
        assert_eq!(subsets[1].ports[0].1, 9090);
        let none = endpoints_for(
            "web",
            &[port(TargetPort::Named("grpc".into()))],
            &pods,
            false,
        );
        assert!(none.is_empty(), "a name no pod declares resolves nowhere");
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        fn pods() -> impl Strategy<Value = Vec<EndpointPod>> {
            proptest::collection::vec(
                (
                    proptest::option::of(0u8..4),
                    any::<bool>(),
                    any::<bool>(),
                    proptest::option::of(8000i32..8003),
                ),
                0..6,
            )
            .prop_map(|pods| {
                pods.into_iter()
                    .enumerate()
                    .map(|(i, (ip, ready, terminating, http))| EndpointPod {
                        name: format!("p{i}"),
                        ip: ip.map(|last| format!("10.244.0.{}", i * 4 + last as usize)),
                        node: Some("node-1".into()),
                        ready,
                        terminating,
                        named_ports: http
                            .map(|n| ("http".to_string(), (n, "TCP".to_string())))
                            .into_iter()
                            .collect(),
                        hostname: None,
                    })
                    .collect()
            })
        }

        proptest! {
            /// Endpoints never send traffic where it must not go: every listed address is a
            /// pod with that address that is not terminating; a ready address is a ready pod
            /// (unless not-ready ones are published); each pod appears once; a named port
            /// resolves to the pod's own number for that name.
            #[test]
            fn addresses_are_live_selected_pods_listed_once(
                pods in pods(),
                named in any::<bool>(),
                publish in any::<bool>(),
            ) {
                let target = if named { TargetPort::Named("http".into()) } else { TargetPort::Number(80) };
                let ports = [ServicePort { name: "web".into(), protocol: "TCP".into(), target }];
                let subsets = endpoints_for("web", &ports, &pods, publish);
                let mut seen = std::collections::HashSet::new();
                for subset in &subsets {
                    for (address, listed_ready) in subset.ready.iter().map(|a| (a, true)).chain(subset.not_ready.iter().map(|a| (a, false))) {
                        let pod = pods.iter().find(|p| p.name == address.pod).expect("a listed pod exists");
                        prop_assert_eq!(pod.ip.as_deref(), Some(address.ip.as_str()));
                        prop_assert!(!pod.terminating);
                        prop_assert!(seen.insert(address.pod.clone()), "listed twice");
                        if listed_ready {
                            prop_assert!(pod.ready || publish);
                        } else {
                            prop_assert!(!pod.ready && !publish);
                        }
                        if named {
                            let number = pod.named_ports.get("http").map(|(n, _)| *n);
                            prop_assert_eq!(subset.ports.first().map(|p| p.1), number);
                        }
                    }
                }
                // And nothing that may serve is left out.
                for pod in &pods {
                    let resolvable = !named || pod.named_ports.contains_key("http");
                    if pod.ip.is_some() && !pod.terminating && resolvable {
                        prop_assert!(seen.contains(&pod.name), "{} left out", pod.name);
                    }
                }
            }
        }
    }
}
