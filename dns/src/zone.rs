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

use std::collections::{HashMap, HashSet};
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

impl Zone {
    /// The zone for these Services and Pods; `serial` numbers the version (the SOA serial).
    pub fn build<'a>(
        config: &ZoneConfig,
        serial: u32,
        services: impl IntoIterator<Item = &'a ServiceInfo>,
        pods: impl IntoIterator<Item = &'a PodInfo>,
    ) -> Zone {
        let mut builder = Builder::new(config, serial);
        let mut ptr_claimed: HashSet<IpAddr> = HashSet::new();
        for service in services {
            builder.service(service, &mut ptr_claimed);
        }
        for pod in pods {
            builder.pod(pod, &ptr_claimed);
        }
        builder.finish()
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

struct Builder {
    ttl: u32,
    domain: String,
    names: HashMap<LowerName, Vec<Record>>,
    apexes: Vec<Apex>,
}

impl Builder {
    fn new(config: &ZoneConfig, serial: u32) -> Self {
        let domain = format!("{}.", config.domain.trim_end_matches('.'));
        let mut builder = Builder {
            ttl: config.ttl,
            domain: domain.clone(),
            names: HashMap::new(),
            apexes: Vec::new(),
        };
        let server = builder.name(&format!("ns.dns.{domain}"));
        let hostmaster = builder.name(&format!("hostmaster.{domain}"));
        let apexes = [
            domain.clone(),
            reverse_apex(config.service_cidr.0, config.service_cidr.1),
            reverse_apex(config.pod_cidr.0, config.pod_cidr.1),
        ];
        for apex in apexes {
            let (Some(name), Some(server), Some(hostmaster)) =
                (builder.name(&apex), server.clone(), hostmaster.clone())
            else {
                continue;
            };
            if builder
                .apexes
                .iter()
                .any(|a| a.name == LowerName::new(&name))
            {
                continue;
            }
            let soa = SOA::new(
                server.clone(),
                hostmaster,
                serial,
                7200,
                1800,
                86400,
                config.ttl,
            );
            let soa = Record::from_rdata(name.clone(), config.ttl, RData::SOA(soa));
            builder.apexes.push(Apex {
                name: LowerName::new(&name),
                soa: soa.clone(),
            });
            builder.insert(soa);
            builder.insert(Record::from_rdata(
                name.clone(),
                config.ttl,
                RData::NS(NS(server)),
            ));
        }
        if let Some(server) = server {
            builder.insert(Record::from_rdata(
                server,
                config.ttl,
                RData::A(A(config.dns_ip)),
            ));
        }
        builder
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

    /// Adds a record, and makes every name between it and its zone's apex exist.
    fn insert(&mut self, record: Record) {
        let mut name = LowerName::new(&record.name);
        self.names.entry(name.clone()).or_default().push(record);
        loop {
            if self.apexes.iter().any(|apex| apex.name == name) || name.is_root() {
                return;
            }
            name = name.base_name();
            self.names.entry(name.clone()).or_default();
        }
    }

    fn ptr(&mut self, ip: IpAddr, target: &Name) {
        let IpAddr::V4(v4) = ip else { return };
        let o = v4.octets();
        let reverse = format!("{}.{}.{}.{}.in-addr.arpa.", o[3], o[2], o[1], o[0]);
        if let Some(name) = self.name(&reverse) {
            let lower = LowerName::new(&name);
            if self.apexes.iter().any(|apex| apex.name.zone_of(&lower)) {
                self.insert(Record::from_rdata(
                    name,
                    self.ttl,
                    RData::PTR(PTR(target.clone())),
                ));
            }
        }
    }

    fn srv(&mut self, base: &Name, port: &PortInfo, weight: u16, target: &Name) {
        if port.name.is_empty() {
            return;
        }
        let text = format!("_{}._{}.{}", port.name, port.protocol, base);
        if let Some(name) = self.name(&text) {
            let data = SRV::new(0, weight, port.port, target.clone());
            self.insert(Record::from_rdata(name, self.ttl, RData::SRV(data)));
        }
    }

    fn service(&mut self, service: &ServiceInfo, ptr_claimed: &mut HashSet<IpAddr>) {
        let text = format!("{}.{}.svc.{}", service.name, service.namespace, self.domain);
        let Some(base) = self.name(&text) else { return };
        // The Service's name exists even when nothing backs it yet.
        self.names.entry(LowerName::new(&base)).or_default();
        self.insert_ancestors(&base);
        match &service.target {
            ServiceTarget::ClusterIp(ips) => {
                for ip in ips {
                    let record = self.address(&base, *ip);
                    self.insert(record);
                    self.ptr(*ip, &base);
                }
                for port in &service.ports {
                    self.srv(&base, port, 100, &base);
                }
            }
            ServiceTarget::Headless => {
                let count = u16::try_from(service.endpoints.len().max(1)).unwrap_or(u16::MAX);
                let weight = (100 / count).max(1);
                for endpoint in &service.endpoints {
                    let record = self.address(&base, endpoint.ip);
                    self.insert(record);
                    let label = endpoint
                        .hostname
                        .clone()
                        .unwrap_or_else(|| dashed(endpoint.ip));
                    let Some(host) = self.name(&format!("{label}.{base}")) else {
                        continue;
                    };
                    let record = self.address(&host, endpoint.ip);
                    self.insert(record);
                    if endpoint.hostname.is_some() || !ptr_claimed.contains(&endpoint.ip) {
                        self.ptr(endpoint.ip, &host);
                        ptr_claimed.insert(endpoint.ip);
                    }
                    for port in &endpoint.ports {
                        self.srv(&base, port, weight, &host);
                    }
                }
            }
            ServiceTarget::ExternalName(target) => {
                let target = format!("{}.", target.trim_end_matches('.'));
                if let Some(target) = self.name(&target) {
                    self.insert(Record::from_rdata(
                        base.clone(),
                        self.ttl,
                        RData::CNAME(CNAME(target)),
                    ));
                }
            }
        }
    }

    fn insert_ancestors(&mut self, name: &Name) {
        let mut lower = LowerName::new(name);
        while !self.apexes.iter().any(|apex| apex.name == lower) && !lower.is_root() {
            lower = lower.base_name();
            self.names.entry(lower.clone()).or_default();
        }
    }

    fn pod(&mut self, pod: &PodInfo, ptr_claimed: &HashSet<IpAddr>) {
        let text = format!("{}.{}.pod.{}", dashed(pod.ip), pod.namespace, self.domain);
        let Some(name) = self.name(&text) else { return };
        let record = self.address(&name, pod.ip);
        self.insert(record);
        if !ptr_claimed.contains(&pod.ip) {
            self.ptr(pod.ip, &name);
        }
    }

    fn finish(mut self) -> Zone {
        // PTRs are one per address: a pod that several Services publish keeps the first.
        for records in self.names.values_mut() {
            let mut seen_ptr = false;
            records.retain(|r| {
                if r.record_type() != RecordType::PTR {
                    return true;
                }
                !std::mem::replace(&mut seen_ptr, true)
            });
        }
        Zone {
            names: self.names,
            apexes: self.apexes,
        }
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
