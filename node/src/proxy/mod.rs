//! The service proxy (kube-proxy's job): one rule set per host network namespace, so the
//! in-process nodes share one. A [`Controller`] follows Services and Endpoints and decides the
//! rules ([`rules::ruleset`]); an applier task writes the difference to nftables with `nft -f`
//! (one transaction per change), so the store's watch never waits on the kernel.
//!
//! On start the table is replaced whole (a restart resynchronises from scratch); on stop it is
//! deleted, and `route_localnet` (enabled so NodePorts answer on 127.0.0.1, as kube-proxy
//! does) goes back to what it was.

pub mod rules;

use std::path::Path;
use std::process::Stdio;

use shipshape_actors::controller::{Controller, Dirty, Reconciled, because};
use shipshape_actors::service_view::ServiceCache;
use shipshape_actors::store::WatchEvent;
use shipshape_api::Kind;
use tokio::io::AsyncWriteExt;
use tokio::sync::watch;

use rules::{ProxiedService, TABLE};
pub use rules::{ProxyConfig, Ruleset};

/// Why the proxy could not apply its rules.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// `nft` could not be run.
    #[error("cannot run nft (install nftables: sudo scripts/setup): {0}")]
    Missing(std::io::Error),
    /// `nft` refused the script.
    #[error("nft refused the service rules: {0}")]
    Refused(String),
}

const ROUTE_LOCALNET: &str = "/proc/sys/net/ipv4/conf/all/route_localnet";

/// Runs `nft -f -` with `script`.
pub async fn nft(script: &str) -> Result<(), ProxyError> {
    let mut child = tokio::process::Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(ProxyError::Missing)?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(script.as_bytes())
            .await
            .map_err(ProxyError::Missing)?;
    }
    let output = child
        .wait_with_output()
        .await
        .map_err(ProxyError::Missing)?;
    if output.status.success() {
        Ok(())
    } else {
        let stderr = String::from_utf8_lossy(&output.stderr);
        Err(ProxyError::Refused(
            stderr.lines().take(3).collect::<Vec<_>>().join(" / "),
        ))
    }
}

/// Whether our table exists (for tests and checks after a stop).
pub async fn table_exists() -> bool {
    tokio::process::Command::new("nft")
        .args(["list", "table", "ip", TABLE])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await
        .is_ok_and(|status| status.success())
}

const RULES_KEY: &str = "rules";

/// Follows Services and Endpoints and hands the decided rules to the applier.
pub struct ServiceProxy {
    config: ProxyConfig,
    cache: ServiceCache,
    desired: watch::Sender<Option<Ruleset>>,
}

/// Stops the applier and removes the rules.
pub struct ProxyHandle {
    applier: tokio::task::JoinHandle<()>,
    stop: watch::Sender<bool>,
    route_localnet: Option<String>,
    remember: std::path::PathBuf,
}

impl ServiceProxy {
    /// The proxy and the handle that removes its rules on stop. Enables `route_localnet` and
    /// starts the applier; the first rules replace any table a previous run left. The value
    /// `route_localnet` had is remembered in `remember` (in the data directory) until the stop
    /// puts it back, so a run killed with -9 does not make the next one restore the wrong value.
    pub fn new(config: ProxyConfig, remember: &Path) -> (Self, ProxyHandle) {
        let (desired, wanted) = watch::channel(None);
        let (stop, stopping) = watch::channel(false);
        let remembered = std::fs::read_to_string(remember)
            .ok()
            .map(|v| v.trim().to_string());
        let route_localnet = remembered.or_else(|| {
            let current = std::fs::read_to_string(ROUTE_LOCALNET)
                .ok()
                .map(|v| v.trim().to_string())?;
            if let Err(error) = std::fs::write(remember, &current) {
                tracing::warn!(%error, path = %remember.display(), "cannot remember route_localnet");
            }
            Some(current)
        });
        if std::fs::read_to_string(ROUTE_LOCALNET).is_ok_and(|v| v.trim() != "1")
            && let Err(error) = std::fs::write(ROUTE_LOCALNET, "1")
        {
            tracing::warn!(%error, "cannot enable route_localnet; NodePorts will not answer on 127.0.0.1");
        }
        let applier = tokio::spawn(apply_rules(wanted, stopping));
        (
            Self {
                config,
                cache: ServiceCache::default(),
                desired,
            },
            ProxyHandle {
                applier,
                stop,
                route_localnet,
                remember: remember.to_path_buf(),
            },
        )
    }
}

impl ProxyHandle {
    /// Stops applying and deletes the table (every rule we added, nothing else), and puts
    /// `route_localnet` back.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.applier.await;
        if table_exists().await
            && let Err(error) = nft(&format!("delete table ip {TABLE}\n")).await
        {
            tracing::warn!(%error, "cannot remove the service rules");
        }
        if let Some(previous) = self.route_localnet
            && previous != "1"
            && Path::new(ROUTE_LOCALNET).exists()
        {
            let _ = std::fs::write(ROUTE_LOCALNET, previous);
        }
        let _ = std::fs::remove_file(&self.remember);
    }
}

/// Applies the newest rules as they come: the whole table first, then differences. A failed
/// update is retried whole.
async fn apply_rules(
    mut wanted: watch::Receiver<Option<Ruleset>>,
    mut stopping: watch::Receiver<bool>,
) {
    let mut applied: Option<Ruleset> = None;
    loop {
        tokio::select! {
            changed = wanted.changed() => if changed.is_err() { return },
            _ = stopping.changed() => return,
        }
        let Some(desired) = wanted.borrow_and_update().clone() else {
            continue;
        };
        let script = rules::script(applied.as_ref(), &desired);
        if script.is_empty() {
            continue;
        }
        let started = std::time::Instant::now();
        match nft(&script).await {
            Ok(()) => {
                tracing::debug!(
                    chains = desired.chains.len(),
                    lines = script.lines().count(),
                    elapsed = ?started.elapsed(),
                    "service rules applied"
                );
                applied = Some(desired);
            }
            Err(error) => {
                tracing::warn!(%error, "service rules not applied; retrying whole");
                applied = None;
                // Try again shortly with whatever is newest then.
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                wanted.mark_changed();
            }
        }
    }
}

impl Controller for ServiceProxy {
    fn name(&self) -> &'static str {
        "service-proxy"
    }

    fn kinds(&self) -> Vec<Kind> {
        vec![Kind::Service, Kind::Endpoints]
    }

    fn reset(&mut self) {
        self.cache.clear();
    }

    fn observe(&mut self, event: &WatchEvent, dirty: &mut Dirty) {
        if self.cache.observe(event) {
            dirty.mark(RULES_KEY, || because(event));
        }
    }

    fn listed(&mut self, dirty: &mut Dirty) {
        dirty.mark(RULES_KEY, || "listed".to_string());
    }

    fn reconcile(&mut self, _key: &str, _now: jiff::Timestamp) -> Reconciled {
        let services: Vec<ProxiedService> = self
            .cache
            .services
            .iter()
            .map(|(id, service)| ProxiedService {
                service: service.clone(),
                subsets: self.cache.endpoints.get(id).cloned().unwrap_or_default(),
            })
            .collect();
        let decided = rules::ruleset(&self.config, &services);
        self.desired.send_if_modified(|current| {
            if current.as_ref() == Some(&decided) {
                false
            } else {
                *current = Some(decided);
                true
            }
        });
        Reconciled::default()
    }
}
