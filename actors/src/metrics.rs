//! The control plane's figures in Prometheus' text format, served at `/metrics`.
//!
//! One process-wide registry (as Prometheus' Go client has), so every actor records into it
//! without a handle being threaded through each constructor.

use std::sync::LazyLock;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Labels of a sync result.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SyncLabels {
    /// The application.
    pub application: String,
    /// synced, unchanged, failed, held, suspended, retry.
    pub result: String,
}

/// Labels of a controller's figures.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ControllerLabels {
    /// replicaset, deployment, scheduler, …
    pub controller: String,
}

/// Labels of an actor's figures.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ActorLabels {
    /// replicaset, scheduler, gitsync, store, …
    pub actor: String,
}

/// Labels of a request to the Git host.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GitLabels {
    /// advertisement (the refs, read first every poll), fetch, push (a fleet status).
    pub request: String,
}

/// Labels of a request through the ingress.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct IngressLabels {
    /// The Ingress whose rule matched (`namespace/name`; empty when none did).
    pub ingress: String,
    /// The backend (`namespace/service:port`; empty when none matched).
    pub backend: String,
    /// The status answered.
    pub status: String,
}

/// Labels of the ingress' latency figures.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct IngressRouteLabels {
    /// The Ingress (`namespace/name`; empty when no rule matched).
    pub ingress: String,
    /// The backend (`namespace/service:port`).
    pub backend: String,
}

/// Every figure the control plane keeps.
pub struct Metrics {
    registry: Registry,
    /// Syncs per application and result.
    pub syncs: Family<SyncLabels, Counter>,
    /// Duration of a whole sync (fetch, read, validate, plan, apply).
    pub sync_seconds: Histogram,
    /// Store transactions committed.
    pub store_transactions: Counter,
    /// Objects written (created, updated, deleted).
    pub store_objects: Counter,
    /// Duration of a store transaction, commit (fsync) included.
    pub store_write_seconds: Histogram,
    /// The newest resourceVersion.
    pub resource_version: Gauge,
    /// Live watchers of the store.
    pub watchers: Gauge,
    /// Time a controller spent deciding one key.
    pub reconcile_seconds: Family<ControllerLabels, Histogram>,
    /// Time from a pod's creation to its binding.
    pub scheduling_seconds: Histogram,
    /// Pods bound to nodes.
    pub pods_scheduled: Counter,
    /// Restarts of an actor after it panicked: a rising count is a bug to look at, even
    /// though the cluster carries on.
    pub actor_restarts: Family<ActorLabels, Counter>,
    /// Requests to the Git host: what polling costs it.
    pub git_requests: Family<GitLabels, Counter>,
    /// Requests through the ingress, by Ingress, backend and status.
    pub ingress_requests: Family<IngressLabels, Counter>,
    /// Time from a request through the ingress to its answer's headers.
    pub ingress_seconds: Family<IngressRouteLabels, Histogram>,
    /// Access log lines dropped because the writer was behind.
    pub ingress_log_dropped: Counter,
}

impl Metrics {
    /// Counts one request to the Git host.
    pub fn git_request(&self, request: &str) {
        self.git_requests
            .get_or_create(&GitLabels {
                request: request.to_string(),
            })
            .inc();
    }

    /// The latency histogram of one Ingress backend (kept by the ingress per backend).
    pub fn ingress_latency(&self, ingress: &str, backend: &str) -> Histogram {
        self.ingress_seconds
            .get_or_create(&IngressRouteLabels {
                ingress: ingress.to_string(),
                backend: backend.to_string(),
            })
            .clone()
    }

    /// The request counter of one Ingress backend and status.
    pub fn ingress_counter(&self, ingress: &str, backend: &str, status: u16) -> Counter {
        self.ingress_requests
            .get_or_create(&IngressLabels {
                ingress: ingress.to_string(),
                backend: backend.to_string(),
                status: status.to_string(),
            })
            .clone()
    }

    /// Counts one request through the ingress and how long its answer took.
    pub fn ingress_request(&self, ingress: &str, backend: &str, status: u16, took: Duration) {
        self.ingress_requests
            .get_or_create(&IngressLabels {
                ingress: ingress.to_string(),
                backend: backend.to_string(),
                status: status.to_string(),
            })
            .inc();
        self.ingress_seconds
            .get_or_create(&IngressRouteLabels {
                ingress: ingress.to_string(),
                backend: backend.to_string(),
            })
            .observe(took.as_secs_f64());
    }

    /// Requests to the Git host so far, of one kind.
    pub fn git_requests_of(&self, request: &str) -> u64 {
        self.git_requests
            .get_or_create(&GitLabels {
                request: request.to_string(),
            })
            .get()
    }
}

fn seconds() -> Histogram {
    Histogram::new(exponential_buckets(0.0001, 2.0, 18))
}

/// The process-wide metrics.
pub static METRICS: LazyLock<Metrics> = LazyLock::new(|| {
    let mut registry = Registry::with_prefix("shipshape");
    let metrics = Metrics {
        registry: Registry::default(),
        syncs: Family::default(),
        sync_seconds: seconds(),
        store_transactions: Counter::default(),
        store_objects: Counter::default(),
        store_write_seconds: seconds(),
        resource_version: Gauge::default(),
        watchers: Gauge::default(),
        reconcile_seconds: Family::new_with_constructor(seconds),
        scheduling_seconds: seconds(),
        pods_scheduled: Counter::default(),
        actor_restarts: Family::default(),
        git_requests: Family::default(),
        ingress_requests: Family::default(),
        ingress_seconds: Family::new_with_constructor(seconds),
        ingress_log_dropped: Counter::default(),
    };
    registry.register(
        "ingress_requests",
        "Requests through the ingress, by Ingress, backend and status",
        metrics.ingress_requests.clone(),
    );
    registry.register(
        "ingress_request_duration_seconds",
        "Time from a request through the ingress to its answer's headers",
        metrics.ingress_seconds.clone(),
    );
    registry.register(
        "ingress_access_log_dropped",
        "Access log lines dropped because the writer was behind",
        metrics.ingress_log_dropped.clone(),
    );
    registry.register(
        "git_requests",
        "Requests to the Git host (advertisement, fetch, push)",
        metrics.git_requests.clone(),
    );
    registry.register(
        "syncs",
        "Syncs of an application, by result",
        metrics.syncs.clone(),
    );
    registry.register(
        "sync_duration_seconds",
        "Duration of a whole sync",
        metrics.sync_seconds.clone(),
    );
    registry.register(
        "store_transactions",
        "Store transactions committed",
        metrics.store_transactions.clone(),
    );
    registry.register(
        "store_objects_written",
        "Objects created, updated or deleted",
        metrics.store_objects.clone(),
    );
    registry.register(
        "store_write_duration_seconds",
        "Duration of a store transaction, durable commit included",
        metrics.store_write_seconds.clone(),
    );
    registry.register(
        "store_resource_version",
        "The newest resourceVersion",
        metrics.resource_version.clone(),
    );
    registry.register(
        "store_watchers",
        "Live watchers of the store",
        metrics.watchers.clone(),
    );
    registry.register(
        "reconcile_duration_seconds",
        "Time a controller spent deciding one object",
        metrics.reconcile_seconds.clone(),
    );
    registry.register(
        "scheduling_duration_seconds",
        "Time from a pod's creation to its binding",
        metrics.scheduling_seconds.clone(),
    );
    registry.register(
        "pods_scheduled",
        "Pods bound to nodes",
        metrics.pods_scheduled.clone(),
    );
    registry.register(
        "actor_restarts",
        "Restarts of an actor after a panic",
        metrics.actor_restarts.clone(),
    );
    Metrics {
        registry,
        ..metrics
    }
});

impl Metrics {
    /// Records one application's sync result.
    pub fn sync_result(&self, application: &str, result: &str) {
        self.syncs
            .get_or_create(&SyncLabels {
                application: application.to_string(),
                result: result.to_string(),
            })
            .inc();
    }

    /// Records a store transaction.
    pub fn store_write(&self, objects: usize, took: Duration, resource_version: u64) {
        self.store_transactions.inc();
        self.store_objects.inc_by(objects as u64);
        self.store_write_seconds.observe(took.as_secs_f64());
        self.resource_version
            .set(i64::try_from(resource_version).unwrap_or(i64::MAX));
    }

    /// Records one reconcile.
    pub fn reconciled(&self, controller: &str, took: Duration) {
        self.reconcile_seconds
            .get_or_create(&ControllerLabels {
                controller: controller.to_string(),
            })
            .observe(took.as_secs_f64());
    }

    /// Records that `actor` panicked and was restarted (or, for the store, ended the process).
    pub fn actor_restarted(&self, actor: &str) {
        self.actor_restarts
            .get_or_create(&ActorLabels {
                actor: actor.to_string(),
            })
            .inc();
    }

    /// How many times `actor` was restarted after a panic.
    pub fn actor_restart_count(&self, actor: &str) -> u64 {
        self.actor_restarts
            .get_or_create(&ActorLabels {
                actor: actor.to_string(),
            })
            .get()
    }

    /// The text exposition.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}
