//! Pod networking through the CNI plugins Debian ships: per node a bridge and a /24 of the pod
//! CIDR (host-local IPAM keeps the allocations in the data directory), per pod a network
//! namespace in `/run/netns` wired by the bridge and loopback plugins, called exactly as the CNI
//! specification says (configuration on stdin, `CNI_*` in the environment, result on stdout).
//!
//! A pod's `hostPort`s are forwarded by the portmap plugin, chained after the bridge as CNI
//! chaining says (the bridge's result as `prevResult`, the ports as the `portMappings`
//! capability's runtimeConfig). portmap writes iptables rules (`CNI-HOSTPORT-*`, one `CNI-DN-*`
//! chain per pod) in the `ip nat` table, apart from the service proxy's own nftables table; both
//! hook the same NAT points and neither touches the other's rules.
//!
//! Every container of a pod joins the pod's namespace, so they reach each other on localhost.
//! The bridge is each node's gateway and the pods' default route: pods on different nodes of the
//! same host reach each other through the host's routes to every node's bridge.

use shipshape_api::pointer::At;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;
use tokio::sync::Mutex;

use crate::containerd::RuntimeError;
use crate::simulated::Cidr;

/// The CNI version the configuration speaks (Debian's plugins 1.1 understand it).
const CNI_VERSION: &str = "0.4.0";

/// Keeps portmap calls and the removal of its shared chains apart: every node of this process
/// shares the host's `ip nat` table, and removing `CNI-HOSTPORT-DNAT` while another node's
/// portmap adds a rule to it would fail that pod's start.
static PORTMAP: Mutex<()> = Mutex::const_new(());

/// The chains portmap shares between every pod of the host, and the jumps that enter them
/// (table `nat`, as `iptables -S` prints them). portmap creates them on its first ADD and never
/// removes them; [`NodeNetwork::remove_node`] does once no pod maps a port.
const PORTMAP_ENTRIES: [(&str, &str, &[&str]); 3] = [
    (
        "PREROUTING",
        "CNI-HOSTPORT-DNAT",
        &["-m", "addrtype", "--dst-type", "LOCAL"],
    ),
    (
        "OUTPUT",
        "CNI-HOSTPORT-DNAT",
        &["-m", "addrtype", "--dst-type", "LOCAL"],
    ),
    (
        "POSTROUTING",
        "CNI-HOSTPORT-MASQ",
        &[
            "-m",
            "comment",
            "--comment",
            "CNI portfwd requiring masquerade",
        ],
    ),
];

/// One node port forwarded to a port of a pod (a container port's `hostPort`), spelled as the
/// portmap plugin's `portMappings` capability takes it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortMapping {
    /// The node's port.
    pub host_port: u16,
    /// The pod's port it reaches.
    pub container_port: u16,
    /// `tcp`, `udp` or `sctp` (portmap wants lower case).
    pub protocol: String,
    /// The node address it is bound to; empty for every address.
    #[serde(rename = "hostIP", default, skip_serializing_if = "String::is_empty")]
    pub host_ip: String,
}

/// The ports pod `pod` maps onto its node, as the kubelet hands them to CNI: every port with a
/// `hostPort` of its containers and sidecars (init containers with `restartPolicy: Always`,
/// which run as long as the pod), protocol TCP when unset. Nothing for a hostNetwork pod: its
/// ports are the node's already.
pub fn port_mappings(pod: &Value) -> Vec<PortMapping> {
    if pod.at("/spec/hostNetwork").and_then(Value::as_bool) == Some(true) {
        return Vec::new();
    }
    let number = shipshape_actors::controllers::port_number;
    shipshape_actors::controllers::long_running_ports(pod)
        .into_iter()
        .filter_map(|port| {
            Some(PortMapping {
                host_port: number(port, "hostPort")?,
                container_port: number(port, "containerPort")?,
                protocol: port
                    .get("protocol")
                    .and_then(Value::as_str)
                    .unwrap_or("TCP")
                    .to_ascii_lowercase(),
                host_ip: port
                    .get("hostIP")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
            })
        })
        .collect()
}

/// One node's pod network.
#[derive(Clone, Debug)]
pub struct NodeNetwork {
    /// The bridge's name (`ship-node-1`; see [`bridge_name`]).
    pub bridge: String,
    /// The node's /24.
    pub subnet: Cidr,
    cni_dir: PathBuf,
    ipam_dir: PathBuf,
}

/// The bridge of node `node`: `ship-{node}` when that fits in a Linux interface name (15 bytes)
/// and the node name is a DNS label or subdomain, as every node shipshape makes is; otherwise
/// `ship-`, the name's first three characters, `_` and six base32 digits of its SHA-256
/// (`ship-wor_k2mq7a`). Cutting long names short instead made `worker-east-1` and `worker-east-2`
/// share a bridge.
///
/// Invariant: distinct nodes get distinct bridges. Short forms are distinct because they spell
/// the whole name; hashed forms differ unless 30 bits of SHA-256 collide; and the two never meet,
/// because only hashed forms contain `_`, which a DNS name cannot. The hash is SHA-256 rather
/// than std's hasher so the name stays the same across releases: a bridge outlives shipshape
/// when workloads are kept.
pub fn bridge_name(node: &str) -> String {
    /// Linux's IFNAMSIZ (16) less the terminating NUL.
    const MAX: usize = 15;
    let dns = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.';
    let short = format!("ship-{node}");
    if short.len() <= MAX && node.chars().all(dns) {
        return short;
    }
    let prefix: String = node
        .chars()
        .take(3)
        .map(|c| c.to_ascii_lowercase())
        .map(|c| if dns(c) { c } else { '-' })
        .collect();
    // Six base32 digits hold 30 bits of the digest (six hex digits would hold 24): even 256
    // nodes, a /16 pod CIDR's worth of /24s, share a bridge name about once in 30 000.
    const BASE32: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";
    let digest = Sha256::digest(node.as_bytes());
    let bits = u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]]);
    let hash: String = (0..6)
        .map(|i| char::from(BASE32[((bits >> (27 - 5 * i)) & 31) as usize]))
        .collect();
    format!("ship-{prefix}_{hash}")
}

/// The path of a pod's network namespace.
pub fn netns_path(name: &str) -> PathBuf {
    Path::new("/run/netns").join(name)
}

impl NodeNetwork {
    /// The network of node `node` with `subnet`, plugins in `cni_dir`, IPAM state under
    /// `data_dir`.
    pub fn new(node: &str, subnet: Cidr, cni_dir: &Path, data_dir: &Path) -> Self {
        Self {
            bridge: bridge_name(node),
            subnet,
            cni_dir: cni_dir.to_path_buf(),
            ipam_dir: data_dir.join("cni").join(node),
        }
    }

    /// The gateway: the bridge's own address, the node's InternalIP.
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.subnet.base) + 1)
    }

    fn bridge_config(&self) -> Value {
        let subnet = self.subnet.to_string();
        json!({
            "cniVersion": CNI_VERSION,
            "name": format!("shipshape-{}", self.bridge),
            "type": "bridge",
            "bridge": self.bridge,
            "isGateway": true,
            "isDefaultGateway": true,
            "ipMasq": false,
            "hairpinMode": true,
            "ipam": {
                "type": "host-local",
                "ranges": [[{"subnet": subnet, "gateway": self.gateway().to_string()}]],
                "dataDir": self.ipam_dir,
            },
        })
    }

    fn loopback_config() -> Value {
        json!({"cniVersion": CNI_VERSION, "name": "loopback", "type": "loopback"})
    }

    /// The portmap plugin's configuration, chained after the bridge (same network name, so
    /// its per-pod chain is found again on DEL); `prev_result` is absent on DEL. `snat` lets
    /// the node itself and the pod's neighbours on the bridge reach the port.
    fn portmap_config(&self, ports: &[PortMapping], prev_result: Option<Value>) -> Value {
        let mut config = json!({
            "cniVersion": CNI_VERSION,
            "name": format!("shipshape-{}", self.bridge),
            "type": "portmap",
            "capabilities": {"portMappings": true},
            "snat": true,
            "runtimeConfig": {"portMappings": ports},
        });
        if let (Some(prev), Some(map)) = (prev_result, config.as_object_mut()) {
            map.insert("prevResult".to_string(), prev);
        }
        config
    }

    /// Where the ports pod `id` maps are kept between its ADD and its DEL: portmap needs them
    /// to find its rules again, and the DEL may come from a later run that no longer has the pod.
    fn port_record(&self, id: &str) -> PathBuf {
        self.ipam_dir
            .join("port-mappings")
            .join(format!("{id}.json"))
    }

    /// Creates the namespace `name` for pod `id` and wires it, forwarding `ports` from the node
    /// to it: returns the pod's address. Calling it again for a wired namespace returns the
    /// address it already has (and puts its port forwarding back if a crash cut it short).
    pub async fn add_pod(
        &self,
        id: &str,
        name: &str,
        ports: &[PortMapping],
    ) -> Result<Ipv4Addr, RuntimeError> {
        let path = netns_path(name);
        if path.exists()
            && let Some(address) = address_in(name).await
        {
            if !ports.is_empty() {
                // The bridge's result is gone: portmap reads only the pod's address from it.
                let prev = json!({
                    "cniVersion": CNI_VERSION,
                    "interfaces": [{"name": "eth0", "sandbox": path}],
                    "ips": [{"version": "4", "interface": 0,
                             "address": format!("{address}/{}", self.subnet.prefix)}],
                });
                self.map_ports(id, &path, ports, prev).await?;
            }
            return Ok(address);
        }
        if !path.exists() {
            run("ip", &["netns", "add", name]).await?;
        }
        self.cni("ADD", "loopback", &Self::loopback_config(), id, &path)
            .await?;
        let result = self
            .cni("ADD", "bridge", &self.bridge_config(), id, &path)
            .await?;
        let address = result
            .at("/ips/0/address")
            .and_then(Value::as_str)
            .and_then(|a| a.split('/').next())
            .and_then(|a| a.parse().ok())
            .ok_or_else(|| {
                RuntimeError::Invalid(format!(
                    "the CNI bridge plugin returned no address for pod {id}: {result}"
                ))
            })?;
        if !ports.is_empty() {
            self.map_ports(id, &path, ports, result).await?;
        }
        Ok(address)
    }

    /// Chains portmap after the bridge for pod `id` (ADD is idempotent), recording the ports
    /// first so that a DEL finds them even if the ADD is cut short.
    async fn map_ports(
        &self,
        id: &str,
        netns: &Path,
        ports: &[PortMapping],
        prev_result: Value,
    ) -> Result<(), RuntimeError> {
        let record = self.port_record(id);
        if let Some(dir) = record.parent() {
            tokio::fs::create_dir_all(dir)
                .await
                .map_err(|e| RuntimeError::io(format!("creating {}", dir.display()), e))?;
        }
        let bytes = serde_json::to_vec(ports)
            .map_err(|e| RuntimeError::Invalid(format!("recording pod {id}'s ports: {e}")))?;
        tokio::fs::write(&record, bytes)
            .await
            .map_err(|e| RuntimeError::io(format!("writing {}", record.display()), e))?;
        let config = self.portmap_config(ports, Some(prev_result));
        let _one = PORTMAP.lock().await;
        self.cni("ADD", "portmap", &config, id, netns).await?;
        Ok(())
    }

    /// Removes pod `id`'s port forwarding, if it has any recorded.
    async fn unmap_ports(&self, id: &str, netns: &Path) -> Result<(), RuntimeError> {
        let record = self.port_record(id);
        let Ok(bytes) = tokio::fs::read(&record).await else {
            return Ok(());
        };
        // An unreadable record still names a pod with ports: portmap's DEL removes the pod's
        // chain by its name whatever ports it is given, so one stands in for them.
        let ports: Vec<PortMapping> = serde_json::from_slice(&bytes)
            .ok()
            .filter(|p: &Vec<PortMapping>| !p.is_empty())
            .unwrap_or_else(|| {
                vec![PortMapping {
                    host_port: 1,
                    container_port: 1,
                    protocol: "tcp".to_string(),
                    host_ip: String::new(),
                }]
            });
        {
            let _one = PORTMAP.lock().await;
            self.cni(
                "DEL",
                "portmap",
                &self.portmap_config(&ports, None),
                id,
                netns,
            )
            .await?;
        }
        tokio::fs::remove_file(&record)
            .await
            .map_err(|e| RuntimeError::io(format!("removing {}", record.display()), e))
    }

    /// Unwires pod `id` (its port forwarding goes, its address goes back to the pool) and
    /// removes its namespace. Safe to call for a pod that is half set up or already gone.
    pub async fn remove_pod(&self, id: &str, name: &str) -> Result<(), RuntimeError> {
        let path = netns_path(name);
        // portmap first, as CNI deletes a chain in reverse; its failure still frees the rest.
        let unmapped = self.unmap_ports(id, &path).await;
        self.cni("DEL", "bridge", &self.bridge_config(), id, &path)
            .await?;
        if path.exists() {
            let _ = self
                .cni("DEL", "loopback", &Self::loopback_config(), id, &path)
                .await;
            run("ip", &["netns", "delete", name]).await?;
        }
        unmapped
    }

    /// Removes the bridge and the address pool (when the node stops for good), and portmap's
    /// shared chains once no pod of the host maps a port.
    pub async fn remove_node(&self) {
        if Path::new("/sys/class/net").join(&self.bridge).exists() {
            let _ = run("ip", &["link", "delete", &self.bridge]).await;
        }
        let _ = tokio::fs::remove_dir_all(&self.ipam_dir).await;
        remove_unused_portmap_chains().await;
    }

    async fn cni(
        &self,
        command: &str,
        plugin: &str,
        config: &Value,
        id: &str,
        netns: &Path,
    ) -> Result<Value, RuntimeError> {
        let program = self.cni_dir.join(plugin);
        let mut child = tokio::process::Command::new(&program)
            .env_clear()
            .env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", id)
            .env("CNI_NETNS", netns)
            .env(
                "CNI_IFNAME",
                if plugin == "loopback" { "lo" } else { "eth0" },
            )
            .env("CNI_PATH", &self.cni_dir)
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| RuntimeError::io(format!("running {}", program.display()), e))?;
        if let Some(mut stdin) = child.stdin.take() {
            let bytes = config.to_string().into_bytes();
            stdin
                .write_all(&bytes)
                .await
                .map_err(|e| RuntimeError::io(format!("writing to {}", program.display()), e))?;
        }
        let output = child
            .wait_with_output()
            .await
            .map_err(|e| RuntimeError::io(format!("running {}", program.display()), e))?;
        let result: Value = serde_json::from_slice(&output.stdout).unwrap_or(Value::Null);
        if !output.status.success() {
            let message = result
                .get("msg")
                .and_then(Value::as_str)
                .map(str::to_string)
                .unwrap_or_else(|| String::from_utf8_lossy(&output.stderr).trim().to_string());
            let details = result.get("details").and_then(Value::as_str).unwrap_or("");
            return Err(RuntimeError::Invalid(format!(
                "CNI {plugin} {command} for pod {id}: {message} {details}"
            )));
        }
        Ok(result)
    }
}

/// Removes the chains portmap shares between pods ([`PORTMAP_ENTRIES`]) when none forwards a
/// port any more: `CNI-HOSTPORT-DNAT` jumps to no pod's chain. A host without them (or without
/// iptables) has nothing to remove. portmap puts them back on its next ADD.
async fn remove_unused_portmap_chains() {
    let _one = PORTMAP.lock().await;
    let Ok(output) = tokio::process::Command::new("iptables")
        .args(["-w", "-t", "nat", "-S", "CNI-HOSTPORT-DNAT"])
        .stdin(Stdio::null())
        .output()
        .await
    else {
        return;
    };
    let listing = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() || listing.lines().any(|l| l.starts_with("-A ")) {
        return;
    }
    for (from, to, matches) in PORTMAP_ENTRIES {
        let mut args = vec!["-w", "-t", "nat", "-D", from];
        args.extend_from_slice(matches);
        args.extend(["-j", to]);
        // Each jump is added once, but remove any copies a race left.
        while run("iptables", &args).await.is_ok() {}
    }
    for chain in [
        "CNI-HOSTPORT-DNAT",
        "CNI-HOSTPORT-SETMARK",
        "CNI-HOSTPORT-MASQ",
    ] {
        if let Err(error) = run("iptables", &["-w", "-t", "nat", "-F", chain]).await {
            tracing::debug!(%error, chain, "flushing portmap's chain");
        }
        if let Err(error) = run("iptables", &["-w", "-t", "nat", "-X", chain]).await {
            tracing::warn!(%error, chain, "removing portmap's chain");
        }
    }
}

/// The IPv4 address of `eth0` in namespace `name`, if it has one.
pub async fn address_in(name: &str) -> Option<Ipv4Addr> {
    let output = tokio::process::Command::new("ip")
        .args(["-n", name, "-j", "-4", "addr", "show", "dev", "eth0"])
        .stderr(Stdio::null())
        .output()
        .await
        .ok()?;
    let list: Value = serde_json::from_slice(&output.stdout).ok()?;
    list.at("/0/addr_info/0/local")?.as_str()?.parse().ok()
}

/// The names of the network namespaces in `/run/netns` starting with `prefix`.
pub fn namespaces_with_prefix(prefix: &str) -> Vec<String> {
    std::fs::read_dir("/run/netns")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|name| name.starts_with(prefix))
        .collect()
}

async fn run(program: &str, args: &[&str]) -> Result<(), RuntimeError> {
    let output = tokio::process::Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|e| RuntimeError::io(format!("running {program}"), e))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(RuntimeError::Invalid(format!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bridge_names_fit_in_an_interface_name() {
        let subnet: Cidr = "10.244.3.0/24".parse().expect("cidr");
        let net = NodeNetwork::new("node-12345678901", subnet, Path::new("/x"), Path::new("/d"));
        assert!(net.bridge.len() <= 15, "{}", net.bridge);
        assert_eq!(net.gateway(), Ipv4Addr::new(10, 244, 3, 1));
        let config = net.bridge_config();
        assert_eq!(config["ipam"]["ranges"][0][0]["subnet"], "10.244.3.0/24");
        assert_eq!(config["ipam"]["ranges"][0][0]["gateway"], "10.244.3.1");
    }

    #[test]
    fn host_ports_of_containers_and_sidecars_are_mapped_with_kubernetes_defaults() {
        let pod = |host_network: bool| {
            json!({"spec": {
                "hostNetwork": host_network,
                "initContainers": [
                    {"name": "setup", "ports": [{"containerPort": 1000, "hostPort": 1000}]},
                    {"name": "proxy", "restartPolicy": "Always",
                     "ports": [{"containerPort": 53, "hostPort": 5353, "protocol": "UDP"}]},
                ],
                "containers": [{"name": "c", "ports": [
                    {"containerPort": 8080},
                    {"containerPort": 8080, "hostPort": 18080},
                    {"containerPort": 9090, "hostPort": 19090, "hostIP": "127.0.0.1",
                     "protocol": "SCTP"},
                ]}],
            }})
        };
        let mapping = |host_port, container_port, protocol: &str, host_ip: &str| PortMapping {
            host_port,
            container_port,
            protocol: protocol.to_string(),
            host_ip: host_ip.to_string(),
        };
        assert_eq!(
            port_mappings(&pod(false)),
            [
                mapping(5353, 53, "udp", ""),
                mapping(18080, 8080, "tcp", ""),
                mapping(19090, 9090, "sctp", "127.0.0.1"),
            ],
            "a finished init container maps nothing, a port without hostPort neither"
        );
        assert!(
            port_mappings(&pod(true)).is_empty(),
            "the host's ports already"
        );

        let subnet: Cidr = "10.244.3.0/24".parse().expect("cidr");
        let net = NodeNetwork::new("node-1", subnet, Path::new("/x"), Path::new("/d"));
        let prev = json!({"ips": [{"version": "4", "address": "10.244.3.2/24"}]});
        let config = net.portmap_config(&port_mappings(&pod(false)), Some(prev.clone()));
        assert_eq!(config["type"], "portmap");
        assert_eq!(
            config["name"],
            net.bridge_config()["name"],
            "the bridge's network"
        );
        assert_eq!(config["capabilities"], json!({"portMappings": true}));
        assert_eq!(config["snat"], true);
        assert_eq!(config["prevResult"], prev);
        assert_eq!(
            config["runtimeConfig"]["portMappings"],
            json!([
                {"hostPort": 5353, "containerPort": 53, "protocol": "udp"},
                {"hostPort": 18080, "containerPort": 8080, "protocol": "tcp"},
                {"hostPort": 19090, "containerPort": 9090, "protocol": "sctp",
                 "hostIP": "127.0.0.1"},
            ])
        );
        assert!(net.portmap_config(&[], None).get("prevResult").is_none());
    }

    /// What the kernel's `dev_valid_name` accepts: 1 to 15 bytes, not `.` or `..`, no `/`,
    /// `:` or whitespace.
    fn valid_interface_name(name: &str) -> bool {
        (1..=15).contains(&name.len())
            && name != "."
            && name != ".."
            && !name.contains(['/', ':'])
            && !name.chars().any(char::is_whitespace)
    }

    #[test]
    fn short_node_names_keep_their_bridge_name() {
        for (node, bridge) in [("node-1", "ship-node-1"), ("bench-1", "ship-bench-1")] {
            assert_eq!(bridge_name(node), bridge);
        }
        assert_eq!(
            bridge_name("node-12345"),
            "ship-node-12345",
            "exactly 15 bytes still fits"
        );
    }

    #[test]
    fn long_node_names_sharing_a_prefix_get_distinct_valid_bridges() {
        let mut names = vec![
            "worker-east-1".to_string(),
            "worker-east-2".to_string(),
            "node-1234567890".to_string(),
            "node-1234567891".to_string(),
            "node-12345".to_string(),
            "a.very.long.node.name.example.com".to_string(),
            "Node With Spaces/and:colons".to_string(),
            "nöde-ünicode-1".to_string(),
            "..".to_string(),
        ];
        names.extend((3..1000).map(|i| format!("worker-east-{i}")));
        let mut seen = std::collections::HashMap::new();
        for node in &names {
            let bridge = bridge_name(node);
            assert!(valid_interface_name(&bridge), "{node:?} gave {bridge:?}");
            assert!(bridge.starts_with("ship-"), "{bridge}");
            if let Some(other) = seen.insert(bridge.clone(), node) {
                panic!("{other:?} and {node:?} share the bridge {bridge}");
            }
        }
        assert!(bridge_name("worker-east-1").starts_with("ship-wor"));
        assert_eq!(bridge_name("worker-east-1"), bridge_name("worker-east-1"));
    }
}
