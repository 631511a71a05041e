//! shipshape's decisions, as pure functions of plain data.
//!
//! Every choice the control plane makes lives here exactly once: the actors at run time and the
//! stateright models in `model/` call the same functions. Nothing here does I/O, reads a clock
//! or draws a random number; time and seeds are arguments. A decision takes a small view of what
//! it needs and returns the actions to take, each carrying the precondition (resourceVersion)
//! it was decided on, so a decision made on a stale view is refused by the store, not applied.
//!
//! - [`decision`]: the shape of every answer (actions, when to look again) and seeded names.
//! - [`gc`]: what must go because its owner or namespace is gone.
//! - [`gitops`]: what a sync does to one application: create, update, prune, or hold.
//! - [`cronjob`]: CronJobs: which schedule is due, concurrency, history.
//! - [`daemonset`]: DaemonSets: a pod per eligible node, rolling node by node.
//! - [`job`]: Jobs: pods until enough succeed, back-off, deadlines, exactly-once counting.
//! - [`kubelet`]: restart policy and back-off for a pod's containers; the pod's phase.
//! - [`nodes`]: node lifecycle: unreachable nodes are marked, then emptied.
//! - [`precondition`]: what a write must still find (resourceVersion, uid): the store's check.
//! - [`projection`]: stored objects (pods, ReplicaSets) as the views the decisions take.
//! - [`replicaset`]: create or delete pods to match replicas; status.
//! - [`deployment`]: rolling updates and Recreate across ReplicaSets; history; status.
//! - [`scheduler`]: which node a pod goes to, or Kubernetes' reason why none can take it.
//! - [`services`]: ClusterIPs and NodePorts: honoured, allocated, or refused with the reason.
//! - [`endpoints`]: which pod addresses and ports back a Service.
//! - [`volumes`]: claims bound to volumes; local-path provisioning; released volumes.
//! - [`statefulset`]: StatefulSets: ordinals, ordered start and update, claims per ordinal.

pub mod cronjob;
pub mod daemonset;
pub mod decision;
pub mod deployment;
pub mod endpoints;
pub mod fleet;
pub mod gc;
pub mod gitops;
pub mod images;
pub mod immutable;
pub mod job;
pub mod kubelet;
pub mod namespaces;
pub mod nodes;
pub mod precondition;
pub mod projection;
pub mod readwrites;
pub mod replicaset;
pub mod scheduler;
pub mod services;
pub mod statefulset;
pub mod volumes;
