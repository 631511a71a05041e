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
use tokio::io::AsyncWriteExt;

use crate::containerd::RuntimeError;
use crate::simulated::Cidr;

/// The CNI version the configuration speaks (Debian's plugins 1.1 understand it).
const CNI_VERSION: &str = "0.4.0";

/// One node's pod network.
#[derive(Clone, Debug)]
pub struct NodeNetwork {
    /// The bridge's name (`ship-node-1`).
    pub bridge: String,
    /// The node's /24.
    pub subnet: Cidr,
    cni_dir: PathBuf,
    ipam_dir: PathBuf,
}

/// The path of a pod's network namespace.
pub fn netns_path(name: &str) -> PathBuf {
    Path::new("/run/netns").join(name)
}

impl NodeNetwork {
    /// The network of node `node` with `subnet`, plugins in `cni_dir`, IPAM state under
    /// `data_dir`.
    pub fn new(node: &str, subnet: Cidr, cni_dir: &Path, data_dir: &Path) -> Self {
        // Linux interface names hold 15 bytes.
        let mut bridge = format!("ship-{node}");
        bridge.truncate(15);
        Self {
            bridge,
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
}
