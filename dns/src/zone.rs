//! The cluster's records, decided from Services, their ready endpoints and Pods: a pure
//! function of those objects, rebuilt whole when they change and swapped in at once, so a
//! query never sees half an update.
//!
//! What is answered follows Kubernetes' DNS specification (as CoreDNS implements it):
//!
//! | name | record |
//! |---|---|
//! | `svc.ns.svc.D` | A: the ClusterIP; headless: every ready endpoint; ExternalName: CNAME |
//! | `_port._proto.svc.ns.svc.D` | SRV per named port (headless: one per endpoint) |
//! | `host.svc.ns.svc.D` | A: a headless endpoint (its pod's hostname, else its dashed IP) |
//! | `a-b-c-d.ns.pod.D` | A: a pod with that IP in that namespace |
//! | `d.c.b.a.in-addr.arpa` | PTR for ClusterIPs and pod IPs |
//!
//! A name that exists without records of the asked type is NODATA (NOERROR, no answers), one
//! that does not exist is NXDOMAIN; both carry the zone's SOA so resolvers cache the absence
//! for the short TTL. Names outside the cluster domain and the reverse zones of the service
//! and pod ranges are not ours: [`Lookup::NotOurs`].

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};

use hickory_proto::rr::rdata::{A, AAAA, CNAME, NS, PTR, SOA, SRV};
use hickory_proto::rr::{LowerName, Name, RData, Record, RecordType};

/// What the zone is built for.
#[derive(Clone, Debug)]
pub struct ZoneConfig {
    /// The cluster domain (`cluster.local`).
    pub domain: String,
    /// The TTL of every answer, and of remembered absences.
    pub ttl: u32,
    /// The service CIDR (its reverse zone is ours).
    pub service_cidr: (Ipv4Addr, u8),
    /// The pod CIDR (its reverse zone is ours).
    pub pod_cidr: (Ipv4Addr, u8),
    /// The DNS service's address (`ns.dns.D`, the zone's name server).
    pub dns_ip: Ipv4Addr,
}

/// A Service port as DNS publishes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortInfo {
    /// The port's name; unnamed ports get no SRV record.
    pub name: String,
    /// `tcp`, `udp` or `sctp` (lower case, as in the SRV name).
    pub protocol: String,
    /// The port number.
    pub port: u16,
}

/// What a Service's name stands for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServiceTarget {
    /// A virtual address (ClusterIP, NodePort, LoadBalancer).
    ClusterIp(Vec<IpAddr>),
    /// `clusterIP: None`: the ready endpoints themselves.
    Headless,
    /// An alias for a name outside the cluster.
    ExternalName(String),
}

/// One ready endpoint of a Service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointInfo {
    /// The pod's address.
    pub ip: IpAddr,
    /// The pod's hostname when its subdomain is this Service (StatefulSet pods).
    pub hostname: Option<String>,
    /// The ports it serves (target ports, by the Service port's name).
    pub ports: Vec<PortInfo>,
}

/// A Service, with its ready endpoints.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceInfo {
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// What its name resolves to.
    pub target: ServiceTarget,
    /// Its ports.
    pub ports: Vec<PortInfo>,
    /// Its ready endpoints (used when headless).
    pub endpoints: Vec<EndpointInfo>,
}

/// A pod with an address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodInfo {
    /// Its namespace.
    pub namespace: String,
    /// Its address.
    pub ip: IpAddr,
}

/// The answer to one question.
#[derive(Debug, PartialEq)]
pub enum Lookup<'a> {
    /// The records of the asked type (or the CNAME standing for the name).
    Records(Vec<&'a Record>),
    /// The name exists but has no records of that type.
    NoData(&'a Record),
    /// The name does not exist in a zone of ours; the zone's SOA for the authority section.
    NxDomain(&'a Record),
    /// The name is in no zone of ours.
    NotOurs,
}

/// One of the zones served: its apex and SOA.
#[derive(Debug)]
struct Apex {
    name: LowerName,
    soa: Record,
}

/// Every record the cluster publishes, by name.
#[derive(Debug)]
pub struct Zone {
    /// Names that exist, with their records (empty: a name that exists only because names
    /// below it do).
    names: HashMap<LowerName, Vec<Record>>,
    /// The cluster domain first, then the reverse zones.
    apexes: Vec<Apex>,
}

/// What one Service or pod puts in the zone: its names with their records, and the names
/// between them and the apex, which exist because of them. Built once per change of that
/// object and kept, so a change to one Service does not rebuild the names of every other.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Contribution {
    names: Vec<(LowerName, Vec<Record>)>,
}

impl Zone {
    /// The zone for these Services and Pods; `serial` numbers the version (the SOA serial).
    pub fn build<'a>(
        config: &ZoneConfig,
        serial: u32,
        services: impl IntoIterator<Item = &'a ServiceInfo>,
        pods: impl IntoIterator<Item = &'a PodInfo>,
    ) -> Zone {
        let shape = Shape::new(config);
        let parts: Vec<Contribution> = services
            .into_iter()
            .map(|s| shape.service(s))
            .chain(pods.into_iter().map(|p| shape.pod(p)))
            .collect();
        Zone::assemble(config, serial, &parts)
    }

    /// The zone made of these contributions. Where two claim the reverse name of one address,
    /// the first keeps it: give Services' contributions before pods'.
    pub fn assemble<'a>(
        config: &ZoneConfig,
        serial: u32,
        parts: impl IntoIterator<Item = &'a Contribution>,
    ) -> Zone {
        let shape = Shape::new(config);
        let mut names: HashMap<LowerName, Vec<Record>> = HashMap::new();
        let mut apexes = Vec::new();
        let server = shape.name(&format!("ns.dns.{}", shape.domain));
        let hostmaster = shape.name(&format!("hostmaster.{}", shape.domain));
        if let (Some(server), Some(hostmaster)) = (server, hostmaster) {
            for apex in &shape.apexes {
                let name = Name::from(apex.clone());
                let soa = SOA::new(
                    server.clone(),
                    hostmaster.clone(),
                    serial,
                    7200,
                    1800,
                    86400,
                    config.ttl,
                );
                let soa = Record::from_rdata(name.clone(), config.ttl, RData::SOA(soa));
                let ns = Record::from_rdata(name, config.ttl, RData::NS(NS(server.clone())));
                names.insert(apex.clone(), vec![soa.clone(), ns]);
                apexes.push(Apex {
                    name: apex.clone(),
                    soa,
                });
            }
            let record = Record::from_rdata(server, config.ttl, RData::A(A(config.dns_ip)));
            for (name, records) in shape.contribution(vec![record]).names {
                names.entry(name).or_default().extend(records);
            }
        }
        for part in parts {
            for (name, records) in &part.names {
                let entry = names.entry(name.clone()).or_default();
                for record in records {
                    // One PTR per address: the first claimant keeps it.
                    if record.record_type() == RecordType::PTR
                        && entry.iter().any(|r| r.record_type() == RecordType::PTR)
                    {
                        continue;
                    }
                    entry.push(record.clone());
                }
            }
        }
        Zone { names, apexes }
    }

    /// Answers a question about `name` of type `qtype`.
    pub fn lookup(&self, name: &LowerName, qtype: RecordType) -> Lookup<'_> {
        let Some(apex) = self.apexes.iter().find(|apex| apex.name.zone_of(name)) else {
            return Lookup::NotOurs;
        };
        let Some(records) = self.names.get(name) else {
            return Lookup::NxDomain(&apex.soa);
        };
        let matching: Vec<&Record> = records
            .iter()
            .filter(|r| qtype == RecordType::ANY || r.record_type() == qtype)
            .collect();
        if !matching.is_empty() {
            return Lookup::Records(matching);
        }
        // An alias answers every type with itself (the resolver follows it).
        let alias: Vec<&Record> = records
            .iter()
            .filter(|r| r.record_type() == RecordType::CNAME)
            .collect();
        if !alias.is_empty() {
            return Lookup::Records(alias);
        }
        Lookup::NoData(&apex.soa)
    }

    /// How many names exist (records or not).
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// Whether no name exists (never: the apexes always do).
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
}

/// `10-244-1-5`: an address as one DNS label.
pub fn dashed(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string().replace('.', "-"),
        IpAddr::V6(v6) => v6.to_string().replace(':', "-"),
    }
}

/// The reverse zone covering a CIDR: the prefix rounded down to whole octets.
fn reverse_apex(base: Ipv4Addr, prefix: u8) -> String {
    let octets = base.octets();
    let whole = usize::from(prefix.min(24) / 8);
    let mut labels: Vec<String> = octets[..whole].iter().rev().map(u8::to_string).collect();
    labels.push("in-addr.arpa.".to_string());
    labels.join(".")
}

/// Turns Services and pods into their [`Contribution`]s: knows the domain, the TTL and which
/// names are zone apexes.
pub struct Shape {
    ttl: u32,
    domain: String,
    apexes: Vec<LowerName>,
}

impl Shape {
    /// The shape of zones built for `config`.
    pub fn new(config: &ZoneConfig) -> Self {
        let domain = format!("{}.", config.domain.trim_end_matches('.'));
        let mut apexes: Vec<LowerName> = Vec::new();
        for apex in [
            domain.clone(),
            reverse_apex(config.service_cidr.0, config.service_cidr.1),
            reverse_apex(config.pod_cidr.0, config.pod_cidr.1),
        ] {
            if let Ok(name) = Name::from_ascii(&apex) {
                let name = LowerName::new(&name);
                if !apexes.contains(&name) {
                    apexes.push(name);
                }
            }
        }
        Shape {
            ttl: config.ttl,
            domain,
            apexes,
        }
    }

    fn name(&self, text: &str) -> Option<Name> {
        match Name::from_ascii(text) {
            Ok(name) => Some(name),
            Err(error) => {
                tracing::debug!(name = text, %error, "not a DNS name; no record");
                None
            }
        }
    }

    fn address(&self, name: &Name, ip: IpAddr) -> Record {
        let data = match ip {
            IpAddr::V4(v4) => RData::A(A(v4)),
            IpAddr::V6(v6) => RData::AAAA(AAAA(v6)),
        };
        Record::from_rdata(name.clone(), self.ttl, data)
    }

    fn in_zone(&self, name: &LowerName) -> bool {
        self.apexes.iter().any(|apex| apex.zone_of(name))
    }

    /// Groups records by name, and makes every name between them and their apex exist.
    fn contribution(&self, records: Vec<Record>) -> Contribution {
        self.contribution_with(records, None)
    }

    fn contribution_with(&self, records: Vec<Record>, exists: Option<&Name>) -> Contribution {
        let mut names: Vec<(LowerName, Vec<Record>)> = Vec::new();
        let mut index: HashMap<LowerName, usize> = HashMap::new();
        let mut touch = |name: LowerName, names: &mut Vec<(LowerName, Vec<Record>)>| {
            *index.entry(name.clone()).or_insert_with(|| {
                names.push((name, Vec::new()));
                names.len() - 1
            })
        };
        let mut below: Vec<LowerName> = exists.map(LowerName::new).into_iter().collect();
        for record in records {
            let name = LowerName::new(&record.name);
            if !self.in_zone(&name) {
                continue;
            }
            let at = touch(name.clone(), &mut names);
            names[at].1.push(record);
            below.push(name);
        }
        for name in below {
            touch(name.clone(), &mut names);
            let mut name = name;
            while !self.apexes.contains(&name) && !name.is_root() {
                name = name.base_name();
                if self.apexes.contains(&name) {
                    break;
                }
                touch(name.clone(), &mut names);
            }
        }
        Contribution { names }
    }

    fn ptr(&self, ip: IpAddr, target: &Name) -> Option<Record> {
        let IpAddr::V4(v4) = ip else { return None };
        let o = v4.octets();
        let reverse = format!("{}.{}.{}.{}.in-addr.arpa.", o[3], o[2], o[1], o[0]);
        let name = self.name(&reverse)?;
        Some(Record::from_rdata(
            name,
            self.ttl,
            RData::PTR(PTR(target.clone())),
        ))
    }

    fn srv(&self, base: &Name, port: &PortInfo, weight: u16, target: &Name) -> Option<Record> {
        if port.name.is_empty() {
            return None;
        }
        let name = self.name(&format!("_{}._{}.{}", port.name, port.protocol, base))?;
        let data = SRV::new(0, weight, port.port, target.clone());
        Some(Record::from_rdata(name, self.ttl, RData::SRV(data)))
    }

    /// What a Service publishes.
    pub fn service(&self, service: &ServiceInfo) -> Contribution {
        let text = format!("{}.{}.svc.{}", service.name, service.namespace, self.domain);
        let Some(base) = self.name(&text) else {
            return Contribution::default();
        };
        let mut records = Vec::new();
        match &service.target {
            ServiceTarget::ClusterIp(ips) => {
                for ip in ips {
                    records.push(self.address(&base, *ip));
                    records.extend(self.ptr(*ip, &base));
                }
                for port in &service.ports {
                    records.extend(self.srv(&base, port, 100, &base));
                }
            }
            ServiceTarget::Headless => {
                let count = u16::try_from(service.endpoints.len().max(1)).unwrap_or(u16::MAX);
                let weight = (100 / count).max(1);
                let mut named: Vec<Record> = Vec::new();
                for endpoint in &service.endpoints {
                    records.push(self.address(&base, endpoint.ip));
                    let label = endpoint
                        .hostname
                        .clone()
                        .unwrap_or_else(|| dashed(endpoint.ip));
                    let Some(host) = self.name(&format!("{label}.{base}")) else {
                        continue;
                    };
                    records.push(self.address(&host, endpoint.ip));
                    let ptr = self.ptr(endpoint.ip, &host);
                    // A pod's own hostname is the better reverse name.
                    if endpoint.hostname.is_some() {
                        named.extend(ptr);
                    } else {
                        records.extend(ptr);
                    }
                    for port in &endpoint.ports {
                        records.extend(self.srv(&base, port, weight, &host));
                    }
                }
                named.extend(records);
                records = named;
            }
            ServiceTarget::ExternalName(target) => {
                let target = format!("{}.", target.trim_end_matches('.'));
                if let Some(target) = self.name(&target) {
                    records.push(Record::from_rdata(
                        base.clone(),
                        self.ttl,
                        RData::CNAME(CNAME(target)),
                    ));
                }
            }
        }
        // The Service's name exists even when nothing backs it yet.
        self.contribution_with(records, Some(&base))
    }

    /// What a pod publishes: its dashed-address name and, unless a Service names it, its PTR.
    pub fn pod(&self, pod: &PodInfo) -> Contribution {
        let text = format!("{}.{}.pod.{}", dashed(pod.ip), pod.namespace, self.domain);
        let Some(name) = self.name(&text) else {
            return Contribution::default();
        };
        let mut records = vec![self.address(&name, pod.ip)];
        records.extend(self.ptr(pod.ip, &name));
        self.contribution(records)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn config() -> ZoneConfig {
        ZoneConfig {
            domain: "cluster.local".into(),
            ttl: 5,
            service_cidr: (Ipv4Addr::new(10, 96, 0, 0), 16),
            pod_cidr: (Ipv4Addr::new(10, 244, 0, 0), 16),
            dns_ip: Ipv4Addr::new(10, 96, 0, 10),
        }
    }

    fn name(text: &str) -> LowerName {
        LowerName::new(&Name::from_ascii(text).unwrap())
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn http() -> PortInfo {
        PortInfo {
            name: "http".into(),
            protocol: "tcp".into(),
            port: 80,
        }
    }

    fn web() -> ServiceInfo {
        ServiceInfo {
            namespace: "default".into(),
            name: "web".into(),
            target: ServiceTarget::ClusterIp(vec![ip("10.96.0.20")]),
            ports: vec![http()],
            endpoints: vec![],
        }
    }

    fn headless() -> ServiceInfo {
        ServiceInfo {
            namespace: "db".into(),
            name: "pg".into(),
            target: ServiceTarget::Headless,
            ports: vec![],
            endpoints: vec![
                EndpointInfo {
                    ip: ip("10.244.1.5"),
                    hostname: Some("pg-0".into()),
                    ports: vec![PortInfo {
                        name: "sql".into(),
                        protocol: "tcp".into(),
                        port: 5432,
                    }],
                },
                EndpointInfo {
                    ip: ip("10.244.2.7"),
                    hostname: None,
                    ports: vec![],
                },
            ],
        }
    }

    fn pods() -> Vec<PodInfo> {
        ["10.244.1.5", "10.244.2.7", "10.244.1.9"]
            .iter()
            .zip(["db", "db", "default"])
            .map(|(address, namespace)| PodInfo {
                namespace: namespace.into(),
                ip: ip(address),
            })
            .collect()
    }

    fn zone() -> Zone {
        let services = [
            web(),
            headless(),
            ServiceInfo {
                namespace: "default".into(),
                name: "search".into(),
                target: ServiceTarget::ExternalName("search.example.org".into()),
                ports: vec![],
                endpoints: vec![],
            },
        ];
        Zone::build(&config(), 1, &services, &pods())
    }

    fn data(lookup: Lookup<'_>) -> Vec<String> {
        match lookup {
            Lookup::Records(records) => records
                .iter()
                .map(|r| r.data.to_string())
                .collect::<Vec<_>>(),
            other => panic!("expected records, got {other:?}"),
        }
    }

    #[test]
    fn a_cluster_ip_service_answers_its_address_srv_and_ptr() {
        let zone = zone();
        let a = zone.lookup(&name("web.default.svc.cluster.local."), RecordType::A);
        assert_eq!(data(a), ["10.96.0.20"]);
        let srv = zone.lookup(
            &name("_http._tcp.web.default.svc.cluster.local."),
            RecordType::SRV,
        );
        assert_eq!(data(srv), ["0 100 80 web.default.svc.cluster.local."]);
        let ptr = zone.lookup(&name("20.0.96.10.in-addr.arpa."), RecordType::PTR);
        assert_eq!(data(ptr), ["web.default.svc.cluster.local."]);
    }

    #[test]
    fn names_are_case_insensitive() {
        let zone = zone();
        let a = zone.lookup(&name("WEB.Default.SVC.cluster.local."), RecordType::A);
        assert_eq!(data(a), ["10.96.0.20"]);
    }

    #[test]
    fn headless_services_answer_their_endpoints_and_hostnames() {
        let zone = zone();
        let mut a = data(zone.lookup(&name("pg.db.svc.cluster.local."), RecordType::A));
        a.sort();
        assert_eq!(a, ["10.244.1.5", "10.244.2.7"]);
        let host = zone.lookup(&name("pg-0.pg.db.svc.cluster.local."), RecordType::A);
        assert_eq!(data(host), ["10.244.1.5"]);
        let unnamed = zone.lookup(&name("10-244-2-7.pg.db.svc.cluster.local."), RecordType::A);
        assert_eq!(data(unnamed), ["10.244.2.7"]);
        let srv = zone.lookup(&name("_sql._tcp.pg.db.svc.cluster.local."), RecordType::SRV);
        assert_eq!(data(srv), ["0 50 5432 pg-0.pg.db.svc.cluster.local."]);
        // A pod a headless Service names is known by that name in reverse.
        let ptr = zone.lookup(&name("5.1.244.10.in-addr.arpa."), RecordType::PTR);
        assert_eq!(data(ptr), ["pg-0.pg.db.svc.cluster.local."]);
    }

    #[test]
    fn pods_answer_by_dashed_address_in_their_own_namespace() {
        let zone = zone();
        let a = zone.lookup(
            &name("10-244-1-9.default.pod.cluster.local."),
            RecordType::A,
        );
        assert_eq!(data(a), ["10.244.1.9"]);
        let wrong_namespace = zone.lookup(&name("10-244-1-9.db.pod.cluster.local."), RecordType::A);
        assert!(matches!(wrong_namespace, Lookup::NxDomain(_)));
        let ptr = zone.lookup(&name("9.1.244.10.in-addr.arpa."), RecordType::PTR);
        assert_eq!(data(ptr), ["10-244-1-9.default.pod.cluster.local."]);
    }

    #[test]
    fn external_names_are_aliases_for_every_type() {
        let zone = zone();
        for qtype in [RecordType::A, RecordType::AAAA, RecordType::CNAME] {
            let answer = zone.lookup(&name("search.default.svc.cluster.local."), qtype);
            assert_eq!(data(answer), ["search.example.org."]);
        }
    }

    #[test]
    fn absent_names_are_nxdomain_and_absent_types_nodata() {
        let zone = zone();
        assert!(matches!(
            zone.lookup(&name("nope.default.svc.cluster.local."), RecordType::A),
            Lookup::NxDomain(_)
        ));
        // The name exists; it has no IPv6 address.
        assert!(matches!(
            zone.lookup(&name("web.default.svc.cluster.local."), RecordType::AAAA),
            Lookup::NoData(_)
        ));
        // Names above existing ones exist (empty non-terminals).
        assert!(matches!(
            zone.lookup(&name("default.svc.cluster.local."), RecordType::A),
            Lookup::NoData(_)
        ));
        assert!(matches!(
            zone.lookup(&name("1.244.10.in-addr.arpa."), RecordType::PTR),
            Lookup::NoData(_)
        ));
        assert!(matches!(
            zone.lookup(&name("99.0.96.10.in-addr.arpa."), RecordType::PTR),
            Lookup::NxDomain(_)
        ));
    }

    #[test]
    fn the_apex_has_its_soa_and_name_server() {
        let zone = zone();
        let soa = data(zone.lookup(&name("cluster.local."), RecordType::SOA));
        assert!(soa[0].starts_with("ns.dns.cluster.local. hostmaster.cluster.local. 1 "));
        let ns = zone.lookup(&name("ns.dns.cluster.local."), RecordType::A);
        assert_eq!(data(ns), ["10.96.0.10"]);
    }

    #[test]
    fn other_names_are_not_ours() {
        let zone = zone();
        for other in ["example.org.", "local.", "1.1.168.192.in-addr.arpa.", "."] {
            assert_eq!(zone.lookup(&name(other), RecordType::A), Lookup::NotOurs);
        }
    }

    proptest! {
        /// Every Service and pod built into the zone answers with exactly its own address.
        #[test]
        fn every_service_and_pod_answers_its_address(
            services in proptest::collection::btree_map("[a-z][a-z0-9]{0,8}", (0u8..=255, 1u8..=254), 0..20),
            pods in proptest::collection::btree_map((1u8..=254, 1u8..=254), "[a-z]{1,5}", 0..20),
        ) {
            let services: Vec<ServiceInfo> = services
                .iter()
                .map(|(name, (c, d))| ServiceInfo {
                    namespace: "ns".into(),
                    name: name.clone(),
                    target: ServiceTarget::ClusterIp(vec![IpAddr::V4(Ipv4Addr::new(10, 96, *c, *d))]),
                    ports: vec![],
                    endpoints: vec![],
                })
                .collect();
            let pods: Vec<PodInfo> = pods
                .iter()
                .map(|((c, d), namespace)| PodInfo {
                    namespace: namespace.clone(),
                    ip: IpAddr::V4(Ipv4Addr::new(10, 244, *c, *d)),
                })
                .collect();
            let zone = Zone::build(&config(), 1, &services, &pods);
            for service in &services {
                let ServiceTarget::ClusterIp(ips) = &service.target else { unreachable!() };
                let asked = name(&format!("{}.ns.svc.cluster.local.", service.name));
                prop_assert_eq!(data(zone.lookup(&asked, RecordType::A)), vec![ips[0].to_string()]);
            }
            for pod in &pods {
                let asked = name(&format!("{}.{}.pod.cluster.local.", dashed(pod.ip), pod.namespace));
                prop_assert_eq!(data(zone.lookup(&asked, RecordType::A)), vec![pod.ip.to_string()]);
            }
        }
    }
}
