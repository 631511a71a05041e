//! Service addresses: a ClusterIP from the service CIDR and NodePorts from 30000–32767, as the
//! Kubernetes API server allocates them. An explicit request is honoured when it is free and in
//! range, and refused with Kubernetes' reason otherwise. Allocation is deterministic (a seed from
//! the Service's name picks where the search starts), so a recreated Service tends to get the
//! address it had, and tests can predict it.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

/// The lowest NodePort (Kubernetes' default range).
pub const NODE_PORT_MIN: u16 = 30000;
/// The highest NodePort.
pub const NODE_PORT_MAX: u16 = 32767;

/// A block of service addresses: `10.96.0.0/16`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServiceRange {
    /// The network address.
    pub base: Ipv4Addr,
    /// The prefix length (at most 30).
    pub prefix: u8,
}

impl ServiceRange {
    /// How many addresses the block holds.
    pub fn size(self) -> u32 {
        1u32 << (32 - u32::from(self.prefix.min(30)))
    }

    /// The `n`th address of the block.
    pub fn nth(self, n: u32) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.base).wrapping_add(n))
    }

    /// Whether `ip` is an address Services may have (not the network or broadcast address).
    pub fn holds(self, ip: Ipv4Addr) -> bool {
        let offset = u32::from(ip).wrapping_sub(u32::from(self.base));
        offset > 0 && offset < self.size() - 1
    }

    /// The address the cluster DNS Service has (the tenth, as in Kubernetes' defaults).
    pub fn dns(self) -> Ipv4Addr {
        self.nth(10)
    }

    /// Addresses never handed out on request of nobody: the first (the `kubernetes` Service's
    /// in Kubernetes) and the DNS address.
    pub fn reserved(self) -> [Ipv4Addr; 2] {
        [self.nth(1), self.dns()]
    }
}

/// Decides a Service's ClusterIP. `requested` is what its spec asks for (None: allocate);
/// `used` holds every other Service's address.
pub fn cluster_ip(
    range: ServiceRange,
    requested: Option<Ipv4Addr>,
    used: &BTreeSet<Ipv4Addr>,
    seed: u64,
) -> Result<Ipv4Addr, String> {
    if let Some(ip) = requested {
        if !range.holds(ip) {
            return Err(format!(
                "spec.clusterIP: Invalid value: \"{ip}\": provided IP is not in the valid range. The range of valid IPs is {}/{}",
                range.base, range.prefix
            ));
        }
        if used.contains(&ip) {
            return Err(format!(
                "spec.clusterIP: Invalid value: \"{ip}\": provided IP is already allocated"
            ));
        }
        return Ok(ip);
    }
    let size = u64::from(range.size());
    // Usable offsets are 1 ..= size - 2.
    let usable = size.saturating_sub(2).max(1);
    let reserved = range.reserved();
    for step in 0..usable {
        let offset = 1 + (seed.wrapping_add(step) % usable) as u32;
        let ip = range.nth(offset);
        if !used.contains(&ip) && !reserved.contains(&ip) {
            return Ok(ip);
        }
    }
    Err(format!(
        "Internal error: failed to allocate a serviceIP: range {}/{} is full",
        range.base, range.prefix
    ))
}

/// Decides one NodePort: `requested` honoured when free and in range, else the first free port
/// from where `seed` points. A request of 0 is no request: Kubernetes reads `nodePort: 0` as
/// unset and allocates one.
pub fn node_port(requested: Option<u16>, used: &BTreeSet<u16>, seed: u64) -> Result<u16, String> {
    if let Some(port) = requested.filter(|&port| port != 0) {
        if !(NODE_PORT_MIN..=NODE_PORT_MAX).contains(&port) {
            return Err(format!(
                "spec.ports.nodePort: Invalid value: {port}: provided port is not in the valid range. The range of valid ports is {NODE_PORT_MIN}-{NODE_PORT_MAX}"
            ));
        }
        if used.contains(&port) {
            return Err(format!(
                "spec.ports.nodePort: Invalid value: {port}: provided port is already allocated"
            ));
        }
        return Ok(port);
    }
    let span = u64::from(NODE_PORT_MAX - NODE_PORT_MIN) + 1;
    for step in 0..span {
        let port = NODE_PORT_MIN + (seed.wrapping_add(step) % span) as u16;
        if !used.contains(&port) {
            return Ok(port);
        }
    }
    Err("Internal error: failed to allocate a nodePort: range is full".into())
}

/// The addresses LoadBalancer Services get (`--lb-pool`, as MetalLB's or k3s' pools): the
/// first and last address, inclusive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoadBalancerPool {
    /// The first address.
    pub first: Ipv4Addr,
    /// The last address.
    pub last: Ipv4Addr,
}

impl std::str::FromStr for LoadBalancerPool {
    type Err = String;

    /// `10.200.0.1-10.200.0.50`, or a block `10.200.0.0/28` (all its addresses but the network
    /// and broadcast ones), or one address.
    fn from_str(text: &str) -> Result<Self, String> {
        let address = |part: &str| {
            part.trim().parse::<Ipv4Addr>().map_err(|_| {
                format!("{part:?} is not an IPv4 address (e.g. 10.200.0.1-10.200.0.50)")
            })
        };
        let (first, last) = if let Some((first, last)) = text.split_once('-') {
            (address(first)?, address(last)?)
        } else if let Some((base, prefix)) = text.split_once('/') {
            let prefix: u32 = prefix
                .parse()
                .ok()
                .filter(|p| (8..=30).contains(p))
                .ok_or_else(|| format!("{text:?}: the prefix must be between 8 and 30"))?;
            let mask = u32::MAX << (32 - prefix);
            let network = u32::from(address(base)?) & mask;
            (
                Ipv4Addr::from(network + 1),
                Ipv4Addr::from((network | !mask) - 1),
            )
        } else {
            let one = address(text)?;
            (one, one)
        };
        if first > last {
            return Err(format!("{text:?}: the first address comes after the last"));
        }
        Ok(LoadBalancerPool { first, last })
    }
}

impl std::fmt::Display for LoadBalancerPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.first, self.last)
    }
}

impl LoadBalancerPool {
    /// Whether `ip` is in the pool.
    pub fn holds(self, ip: Ipv4Addr) -> bool {
        (self.first..=self.last).contains(&ip)
    }
}

/// Decides a LoadBalancer Service's address: the one it has while it is still in the pool and
/// no older Service holds it, else the one `spec.loadBalancerIP` asks for (refused outside the
/// pool or when taken), else the lowest free one.
pub fn load_balancer_ip(
    pool: LoadBalancerPool,
    current: Option<Ipv4Addr>,
    requested: Option<Ipv4Addr>,
    used: &BTreeSet<Ipv4Addr>,
) -> Result<Ipv4Addr, String> {
    if let Some(ip) = requested {
        if !pool.holds(ip) {
            return Err(format!(
                "spec.loadBalancerIP: Invalid value: \"{ip}\": not in the load-balancer pool {pool}"
            ));
        }
        if used.contains(&ip) {
            return Err(format!(
                "spec.loadBalancerIP: Invalid value: \"{ip}\": already allocated"
            ));
        }
        return Ok(ip);
    }
    if let Some(ip) = current.filter(|ip| pool.holds(*ip) && !used.contains(ip)) {
        return Ok(ip);
    }
    (u32::from(pool.first)..=u32::from(pool.last))
        .map(Ipv4Addr::from)
        .find(|ip| !used.contains(ip))
        .ok_or_else(|| format!("no free address in the load-balancer pool {pool}"))
}

/// What a Service may ask for by name that no other Service may hold.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Claim {
    /// `spec.clusterIP` (and the first of `spec.clusterIPs`).
    ClusterIp(String),
    /// `spec.ports[].nodePort`.
    NodePort(u64),
    /// `spec.loadBalancerIP`, or the address a LoadBalancer Service was given.
    LoadBalancerIp(String),
}

/// The addresses and ports `service` holds or asks for, each with the field that says so.
/// `nodePort: 0` asks for nothing (Kubernetes allocates a port for it), so it claims nothing.
pub fn claims(service: &serde_json::Value) -> Vec<(String, Claim)> {
    let spec = &service["spec"];
    let mut claims = Vec::new();
    if let Some(ip) = spec["clusterIP"].as_str()
        && !ip.is_empty()
        && ip != "None"
    {
        claims.push((
            "spec.clusterIP".to_string(),
            Claim::ClusterIp(ip.to_string()),
        ));
    }
    for (index, port) in spec["ports"].as_array().into_iter().flatten().enumerate() {
        if let Some(n) = port["nodePort"].as_u64().filter(|&n| n != 0) {
            claims.push((format!("spec.ports[{index}].nodePort"), Claim::NodePort(n)));
        }
    }
    if let Some(ip) = spec["loadBalancerIP"].as_str().filter(|ip| !ip.is_empty()) {
        claims.push((
            "spec.loadBalancerIP".to_string(),
            Claim::LoadBalancerIp(ip.to_string()),
        ));
    } else if let Some(ip) = service["status"]["loadBalancer"]["ingress"][0]["ip"].as_str() {
        claims.push((
            "status.loadBalancer.ingress".to_string(),
            Claim::LoadBalancerIp(ip.to_string()),
        ));
    }
    claims
}

/// An explicit address or port in `wanted` (index, field) that another Service holds, and who.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Taken {
    /// Which of the wanted Services asks for it.
    pub index: usize,
    /// The field asking (`spec.clusterIP`, `spec.ports[1].nodePort`).
    pub field: String,
    /// The value asked for.
    pub value: String,
    /// Who holds it (`Service demo/web`).
    pub holder: String,
}

/// The explicit requests among `wanted` Services (name, manifest) that collide with each other
/// or with what `existing` Services (name, object) hold: Kubernetes refuses them at create time
/// ("provided IP is already allocated"); refusing them before anything is written keeps a
/// commit from being half applied. A Service is never in conflict with itself, and of two
/// wanted Services asking for the same thing the first keeps it.
pub fn taken(
    existing: &[(String, &serde_json::Value)],
    wanted: &[(String, &serde_json::Value)],
) -> Vec<Taken> {
    let mut holders: std::collections::BTreeMap<Claim, String> = std::collections::BTreeMap::new();
    for (name, object) in existing {
        if wanted.iter().any(|(w, _)| w == name) {
            continue;
        }
        for (_, claim) in claims(object) {
            holders.entry(claim).or_insert_with(|| name.clone());
        }
    }
    let mut found = Vec::new();
    for (index, (name, manifest)) in wanted.iter().enumerate() {
        for (field, claim) in claims(manifest) {
            match holders.get(&claim) {
                Some(holder) if holder != name => {
                    let value = match &claim {
                        Claim::ClusterIp(ip) | Claim::LoadBalancerIp(ip) => ip.clone(),
                        Claim::NodePort(n) => n.to_string(),
                    };
                    found.push(Taken {
                        index,
                        field,
                        value,
                        holder: holder.clone(),
                    });
                }
                Some(_) => {}
                None => {
                    holders.insert(claim, name.clone());
                }
            }
        }
    }
    found
}

/// Kubernetes' words for a request another Service holds.
pub fn taken_message(taken: &Taken) -> String {
    let what = if taken.field.ends_with("nodePort") {
        "port"
    } else {
        "IP"
    };
    format!(
        "Invalid value: \"{}\": provided {what} is already allocated (held by {})",
        taken.value, taken.holder
    )
}

/// Explicit addresses and ports two Services of one desired set both ask for, as problems on
/// the later one (what `shipshape validate` and a sync report, before anything is written).
pub fn address_problems<'a>(
    manifests: impl IntoIterator<Item = &'a shipshape_api::load::Manifest>,
) -> Vec<shipshape_api::load::Problem> {
    let services: Vec<(&shipshape_api::load::Manifest, serde_json::Value)> = manifests
        .into_iter()
        .filter(|m| m.object.kind() == shipshape_api::Kind::Service)
        .map(|m| (m, m.object.to_json()))
        .collect();
    let named = |m: &shipshape_api::load::Manifest| {
        let key = m.object.key();
        format!("Service {}/{}", key.namespace, key.name)
    };
    let wanted: Vec<(String, &serde_json::Value)> =
        services.iter().map(|(m, v)| (named(m), v)).collect();
    taken(&[], &wanted)
        .into_iter()
        .map(|clash| {
            let (manifest, _) = &services[clash.index];
            let holder = services
                .iter()
                .find(|(m, _)| named(m) == clash.holder)
                .map_or(clash.holder.clone(), |(m, _)| {
                    format!("{} at {}:{}", clash.holder, m.file, m.line)
                });
            let key = manifest.object.key();
            shipshape_api::load::Problem {
                file: manifest.file.clone(),
                line: manifest.line,
                application: manifest.application.clone(),
                object: Some(shipshape_api::load::ObjectRef {
                    kind: "Service".into(),
                    namespace: Some(key.namespace),
                    name: Some(key.name),
                }),
                field: Some(clash.field.clone()),
                message: taken_message(&Taken { holder, ..clash }),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn range() -> ServiceRange {
        ServiceRange {
            base: Ipv4Addr::new(10, 96, 0, 0),
            prefix: 16,
        }
    }

    #[test]
    fn honours_requests_and_refuses_conflicts_as_kubernetes_does() {
        let used = BTreeSet::from([Ipv4Addr::new(10, 96, 0, 50)]);
        let asked = |ip| cluster_ip(range(), Some(ip), &used, 0);
        assert_eq!(
            asked(Ipv4Addr::new(10, 96, 3, 4)),
            Ok(Ipv4Addr::new(10, 96, 3, 4))
        );
        assert!(
            asked(Ipv4Addr::new(10, 96, 0, 50))
                .unwrap_err()
                .contains("already allocated")
        );
        assert!(
            asked(Ipv4Addr::new(10, 97, 0, 1))
                .unwrap_err()
                .contains("not in the valid range")
        );
        assert!(
            asked(Ipv4Addr::new(10, 96, 0, 0)).is_err(),
            "the network address"
        );
        assert_eq!(range().dns(), Ipv4Addr::new(10, 96, 0, 10));
    }

    #[test]
    fn node_ports_stay_in_range() {
        let used = BTreeSet::from([30000]);
        assert_eq!(node_port(None, &used, 0), Ok(30001));
        assert_eq!(node_port(Some(30080), &used, 0), Ok(30080));
        assert!(
            node_port(Some(30000), &used, 0)
                .unwrap_err()
                .contains("already allocated")
        );
        assert!(
            node_port(Some(80), &used, 0)
                .unwrap_err()
                .contains("valid range")
        );
    }

    #[test]
    fn node_port_zero_is_allocated_like_a_missing_one() {
        let used = BTreeSet::from([30000]);
        assert_eq!(node_port(Some(0), &used, 0), node_port(None, &used, 0));
        assert_eq!(node_port(Some(0), &used, 0), Ok(30001));
        // Two Services leaving the port to the cluster do not ask for the same one.
        let a = serde_json::json!({"spec": {"type": "NodePort", "ports": [{"port": 80, "nodePort": 0}]}});
        let b = serde_json::json!({"spec": {"type": "NodePort", "ports": [{"port": 81, "nodePort": 0}]}});
        assert!(claims(&a).is_empty());
        assert!(
            taken(
                &[("Service demo/a".to_string(), &a)],
                &[("Service demo/b".to_string(), &b)]
            )
            .is_empty()
        );
    }

    #[test]
    fn validate_does_not_see_node_port_zero_as_a_shared_port() {
        let service = |name: &str| {
            format!(
                "apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\nspec:\n  type: NodePort\n  ports:\n  - port: 80\n    nodePort: 0\n"
            )
        };
        let files: Vec<shipshape_api::load::SourceFile> = ["a", "b"]
            .iter()
            .map(|name| shipshape_api::load::SourceFile {
                relative: format!("{name}/svc.yaml"),
                display: format!("repo/{name}/svc.yaml"),
                bytes: service(name).into_bytes(),
            })
            .collect();
        let loaded = shipshape_api::load::load(&files);
        assert!(loaded.is_valid(), "{:?}", loaded.problems);
        assert_eq!(address_problems(&loaded.manifests), Vec::new());
    }

    #[test]
    fn a_small_range_fills_up_and_says_so() {
        let tiny = ServiceRange {
            base: Ipv4Addr::new(10, 96, 0, 0),
            prefix: 28,
        };
        let mut used = BTreeSet::new();
        while let Ok(ip) = cluster_ip(tiny, None, &used, 3) {
            assert!(tiny.holds(ip) && !tiny.reserved().contains(&ip));
            used.insert(ip);
        }
        assert_eq!(
            used.len(),
            12,
            "16 addresses: network, broadcast, .1 and DNS are not handed out"
        );
    }

    proptest! {
        #[test]
        fn allocation_never_duplicates_or_strays(seeds in proptest::collection::vec(any::<u64>(), 1..60)) {
            let small = ServiceRange { base: Ipv4Addr::new(10, 96, 0, 0), prefix: 26 };
            let mut used = BTreeSet::new();
            for seed in seeds {
                match cluster_ip(small, None, &used, seed) {
                    Ok(ip) => {
                        prop_assert!(small.holds(ip));
                        prop_assert!(!small.reserved().contains(&ip));
                        prop_assert!(used.insert(ip), "{} handed out twice", ip);
                    }
                    Err(_) => prop_assert_eq!(used.len() as u32, small.size() - 4),
                }
            }
        }
    }

    #[test]
    fn load_balancer_pools_parse_ranges_blocks_and_single_addresses() {
        let range: LoadBalancerPool = "10.200.0.1-10.200.0.3".parse().unwrap();
        assert_eq!(range.to_string(), "10.200.0.1-10.200.0.3");
        let block: LoadBalancerPool = "10.200.0.0/30".parse().unwrap();
        assert_eq!(block.to_string(), "10.200.0.1-10.200.0.2");
        assert!("10.200.0.9-10.200.0.1".parse::<LoadBalancerPool>().is_err());
        assert!("nonsense".parse::<LoadBalancerPool>().is_err());
    }

    #[test]
    fn load_balancer_addresses_stay_and_run_out_cleanly() {
        let pool: LoadBalancerPool = "10.200.0.1-10.200.0.2".parse().unwrap();
        let a = Ipv4Addr::new(10, 200, 0, 1);
        let b = Ipv4Addr::new(10, 200, 0, 2);
        assert_eq!(load_balancer_ip(pool, None, None, &BTreeSet::new()), Ok(a));
        assert_eq!(
            load_balancer_ip(pool, Some(b), None, &BTreeSet::new()),
            Ok(b),
            "kept"
        );
        assert_eq!(load_balancer_ip(pool, None, None, &[a].into()), Ok(b));
        assert!(
            load_balancer_ip(pool, None, None, &[a, b].into()).is_err(),
            "pool full"
        );
        assert!(
            load_balancer_ip(
                pool,
                None,
                Some(Ipv4Addr::new(10, 9, 9, 9)),
                &BTreeSet::new()
            )
            .is_err()
        );
        assert!(
            load_balancer_ip(pool, None, Some(a), &[a].into()).is_err(),
            "taken"
        );
    }

    #[test]
    fn explicit_requests_collide_with_holders_and_each_other_but_not_themselves() {
        let web = serde_json::json!({"spec": {"clusterIP": "10.96.0.50", "ports": [{"port": 80, "nodePort": 30080}]}});
        let again =
            serde_json::json!({"spec": {"clusterIP": "10.96.0.50", "ports": [{"port": 80}]}});
        let other = serde_json::json!({"spec": {"clusterIP": "10.96.0.51", "ports": [{"port": 81, "nodePort": 30080}]}});
        let existing = [("Service demo/web".to_string(), &web)];
        // The same Service, unchanged: no conflict.
        assert!(taken(&existing, &[("Service demo/web".to_string(), &again)]).is_empty());
        let clashes = taken(
            &existing,
            &[
                ("Service demo/api".to_string(), &again),
                ("Service demo/other".to_string(), &other),
            ],
        );
        assert_eq!(clashes.len(), 2, "{clashes:?}");
        assert_eq!(
            (
                clashes[0].index,
                clashes[0].field.as_str(),
                clashes[0].value.as_str()
            ),
            (0, "spec.clusterIP", "10.96.0.50")
        );
        assert_eq!(clashes[0].holder, "Service demo/web");
        assert_eq!(
            (clashes[1].index, clashes[1].field.as_str()),
            (1, "spec.ports[0].nodePort")
        );
        // Within one commit, the first asking keeps it.
        let inside = taken(
            &[],
            &[
                ("Service demo/a".to_string(), &web),
                ("Service demo/b".to_string(), &again),
            ],
        );
        assert_eq!(inside.len(), 1);
        assert_eq!(
            (inside[0].index, inside[0].holder.as_str()),
            (1, "Service demo/a")
        );
    }
}
