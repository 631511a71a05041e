//! Pod networking through the CNI plugins Debian ships: per node a bridge and a /24 of the pod
//! CIDR (host-local IPAM keeps the allocations in the data directory), per pod a network
//! namespace in `/run/netns` wired by the bridge and loopback plugins, called exactly as the CNI
//! specification says (configuration on stdin, `CNI_*` in the environment, result on stdout).
//!
//! Every container of a pod joins the pod's namespace, so they reach each other on localhost.
//! The bridge is each node's gateway and the pods' default route: pods on different nodes of the
//! same host reach each other through the host's routes to every node's bridge.

use shipshape_api::pointer::At;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use crate::containerd::RuntimeError;
use crate::simulated::Cidr;

/// The CNI version the configuration speaks (Debian's plugins 1.1 understand it).
const CNI_VERSION: &str = "0.4.0";

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

    /// Creates the namespace `name` for pod `id` and wires it: returns the pod's address.
    /// Calling it again for a wired namespace returns the address it already has.
    pub async fn add_pod(&self, id: &str, name: &str) -> Result<Ipv4Addr, RuntimeError> {
        let path = netns_path(name);
        if path.exists()
            && let Some(address) = address_in(name).await
        {
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
        result
            .at("/ips/0/address")
            .and_then(Value::as_str)
            .and_then(|a| a.split('/').next())
            .and_then(|a| a.parse().ok())
            .ok_or_else(|| {
                RuntimeError::Invalid(format!(
                    "the CNI bridge plugin returned no address for pod {id}: {result}"
                ))
            })
    }

    /// Unwires pod `id` (its address goes back to the pool) and removes its namespace.
    /// Safe to call for a pod that is half set up or already gone.
    pub async fn remove_pod(&self, id: &str, name: &str) -> Result<(), RuntimeError> {
        let path = netns_path(name);
        self.cni("DEL", "bridge", &self.bridge_config(), id, &path)
            .await?;
        if path.exists() {
            let _ = self
                .cni("DEL", "loopback", &Self::loopback_config(), id, &path)
                .await;
            run("ip", &["netns", "delete", name]).await?;
        }
        Ok(())
    }

    /// Removes the bridge and the address pool (when the node stops for good).
    pub async fn remove_node(&self) {
        if Path::new("/sys/class/net").join(&self.bridge).exists() {
            let _ = run("ip", &["link", "delete", &self.bridge]).await;
        }
        let _ = tokio::fs::remove_dir_all(&self.ipam_dir).await;
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
