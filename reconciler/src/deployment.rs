//! The Deployment decision: one ReplicaSet per pod-template hash, rolled over with RollingUpdate
//! or Recreate, old ReplicaSets kept up to `revisionHistoryLimit`, and the status with its
//! Available and Progressing conditions.
//!
//! The rolling-update arithmetic is Kubernetes' (`pkg/controller/deployment/rolling.go`), taken
//! one step per decision: scale the new ReplicaSet up within `replicas + maxSurge`; otherwise
//! scale old ReplicaSets down, first their unavailable pods, then as far as keeping
//! `replicas - maxUnavailable` available allows. A decision made on a stale view is harmless:
//! every scale carries the ReplicaSet's resourceVersion, and the store refuses stale ones.
//! Rollback is a Git revert: a template that matches an old ReplicaSet reuses it.

use crate::decision::Decision;

/// A count given as a number or a percentage of the desired replicas.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum IntOrPercent {
    /// A number of pods.
    Count(u32),
    /// A percentage of `replicas`.
    Percent(u32),
}

impl IntOrPercent {
    /// The number of pods, rounding a percentage up (maxSurge) or down (maxUnavailable).
    pub fn resolve(self, replicas: u32, round_up: bool) -> u32 {
        match self {
            IntOrPercent::Count(n) => n,
            IntOrPercent::Percent(p) => {
                let product = u64::from(p) * u64::from(replicas);
                let value = if round_up {
                    product.div_ceil(100)
                } else {
                    product / 100
                };
                u32::try_from(value).unwrap_or(u32::MAX)
            }
        }
    }
}

/// How a template change is rolled out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RolloutStrategy {
    /// Replace pods gradually within the surge and unavailability budgets.
    RollingUpdate {
        /// Pods allowed above `replicas` during the rollout.
        max_surge: IntOrPercent,
        /// Pods allowed below `replicas` being available during the rollout.
        max_unavailable: IntOrPercent,
    },
    /// Stop every old pod, then start the new ones.
    Recreate,
}

/// The surge and unavailability budgets, as Kubernetes resolves them: surge rounds up,
/// unavailability rounds down, and if both come to zero one pod may be unavailable.
pub fn budgets(strategy: RolloutStrategy, replicas: u32) -> (u32, u32) {
    match strategy {
        RolloutStrategy::RollingUpdate {
            max_surge,
            max_unavailable,
        } => {
            let surge = max_surge.resolve(replicas, true);
            let unavailable = max_unavailable.resolve(replicas, false);
            if surge == 0 && unavailable == 0 {
                (0, 1)
            } else {
                (surge, unavailable)
            }
        }
        RolloutStrategy::Recreate => (0, replicas),
    }
}

/// A ReplicaSet as the Deployment decision sees it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ReplicaSetSummary {
    /// Its name.
    pub name: String,
    /// The hash of the pod template it runs.
    pub template_hash: String,
    /// Its revision (higher is newer).
    pub revision: u64,
    /// Its resourceVersion (the precondition of a scale).
    pub resource_version: u64,
    /// When it was created (seconds); older ones scale down first.
    pub created: i64,
    /// Desired replicas (its spec).
    pub replicas: u32,
    /// Active pods (its status).
    pub active: u32,
    /// Ready pods.
    pub ready: u32,
    /// Available pods.
    pub available: u32,
}

/// Where a rollout stands (the Progressing condition).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Progress {
    /// Moving, or waiting within the deadline.
    Progressing,
    /// Every replica runs the newest template and is available.
    Complete,
    /// No progress for `progressDeadlineSeconds`.
    DeadlineExceeded,
    /// Paused (`spec.paused`): no rollout, no deadline; scaling still happens.
    Paused,
}

/// The status a Deployment reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DeploymentStatus {
    /// The generation this status describes.
    pub observed_generation: i64,
    /// Active pods of all its ReplicaSets.
    pub replicas: u32,
    /// Active pods running the newest template.
    pub updated: u32,
    /// Ready pods.
    pub ready: u32,
    /// Available pods.
    pub available: u32,
    /// Desired pods not available.
    pub unavailable: u32,
    /// The Available condition: at least `replicas - maxUnavailable` available.
    pub minimum_available: bool,
    /// The Progressing condition.
    pub progress: Progress,
    /// When the Progressing condition last changed or progress was last made (seconds).
    pub progress_since: i64,
}

/// What the Deployment decision needs to know.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct DeploymentView {
    /// The Deployment's name (its ReplicaSets are `NAME-HASH`).
    pub name: String,
    /// Its generation.
    pub generation: i64,
    /// Desired replicas.
    pub replicas: u32,
    /// The hash of its current pod template.
    pub template_hash: String,
    /// How changes roll out.
    pub strategy: RolloutStrategy,
    /// Old ReplicaSets kept for rollback.
    pub revision_history_limit: u32,
    /// Seconds without progress before the rollout is reported stuck.
    pub progress_deadline_seconds: Option<i64>,
    /// `spec.paused`: a new template makes no ReplicaSet until it is resumed.
    pub paused: bool,
    /// The ReplicaSets it owns.
    pub replica_sets: Vec<ReplicaSetSummary>,
    /// The status as last written (`None` before the first).
    pub status: Option<DeploymentStatus>,
}

/// One step the Deployment controller takes.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum DeploymentAction {
    /// Create the ReplicaSet for the current template.
    CreateReplicaSet {
        /// `NAME-HASH`.
        name: String,
        /// The template hash it runs.
        template_hash: String,
        /// Its starting replicas.
        replicas: u32,
        /// Its revision.
        revision: u64,
    },
    /// Change a ReplicaSet's replicas (and, for a reused one, its revision).
    ScaleReplicaSet {
        /// The ReplicaSet.
        name: String,
        /// The resourceVersion this was decided on.
        resource_version: u64,
        /// The new replicas.
        replicas: u32,
        /// The revision it should carry.
        revision: u64,
    },
    /// Delete an old, empty ReplicaSet beyond the history limit.
    DeleteReplicaSet {
        /// The ReplicaSet.
        name: String,
        /// The resourceVersion this was decided on.
        resource_version: u64,
    },
    /// Write the Deployment's status.
    UpdateStatus(DeploymentStatus),
}

/// How often a waiting rollout looks again when nothing else wakes it (seconds).
const WAIT_POLL: i64 = 5;

/// Decides what the Deployment controller does now (`now` in seconds).
pub fn decide_deployment(view: &DeploymentView, now: i64) -> Decision<DeploymentAction> {
    let newest_revision = view
        .replica_sets
        .iter()
        .map(|rs| rs.revision)
        .max()
        .unwrap_or(0);
    let new = view
        .replica_sets
        .iter()
        .find(|rs| rs.template_hash == view.template_hash);
    let mut old: Vec<&ReplicaSetSummary> = view
        .replica_sets
        .iter()
        .filter(|rs| rs.template_hash != view.template_hash)
        .collect();
    old.sort_by(|a, b| (a.created, &a.name).cmp(&(b.created, &b.name)));
    // A reused (rolled-back-to) ReplicaSet becomes the newest revision again.
    let new_revision = match new {
        Some(rs)
            if rs.revision == newest_revision && old.iter().all(|o| o.revision < rs.revision) =>
        {
            rs.revision
        }
        _ => newest_revision + 1,
    };

    let mut actions = match view.strategy {
        _ if view.paused => scale_paused(view, new, &old),
        RolloutStrategy::RollingUpdate { .. } => rolling(view, new, &old, new_revision),
        RolloutStrategy::Recreate => recreate(view, new, &old, new_revision),
    };
    if actions.is_empty()
        && !view.paused
        && let Some(rs) = new
        && rs.revision != new_revision
    {
        actions.push(DeploymentAction::ScaleReplicaSet {
            name: rs.name.clone(),
            resource_version: rs.resource_version,
            replicas: rs.replicas,
            revision: new_revision,
        });
    }
    if actions.is_empty() {
        actions.extend(cleanup_history(view, &old));
    }

    let (status, requeue) = status(view, new, &old, !actions.is_empty(), now);
    if view.status != Some(status) {
        actions.push(DeploymentAction::UpdateStatus(status));
    }
    Decision {
        actions,
        requeue_after: requeue,
    }
}

fn scale(rs: &ReplicaSetSummary, replicas: u32, revision: u64) -> DeploymentAction {
    DeploymentAction::ScaleReplicaSet {
        name: rs.name.clone(),
        resource_version: rs.resource_version,
        replicas,
        revision,
    }
}

fn create(view: &DeploymentView, replicas: u32, revision: u64) -> DeploymentAction {
    DeploymentAction::CreateReplicaSet {
        name: format!("{}-{}", view.name, view.template_hash),
        template_hash: view.template_hash.clone(),
        replicas,
        revision,
    }
}

fn rolling(
    view: &DeploymentView,
    new: Option<&ReplicaSetSummary>,
    old: &[&ReplicaSetSummary],
    new_revision: u64,
) -> Vec<DeploymentAction> {
    let (max_surge, max_unavailable) = budgets(view.strategy, view.replicas);
    // Pods count toward the surge for as long as they run: a ReplicaSet just scaled down still
    // holds its extra pods until its controller removes them. (Kubernetes counts only desired
    // replicas here, which lets a lagging scale-down exceed maxSurge for a moment.)
    let running = |rs: &ReplicaSetSummary| rs.replicas.max(rs.active);
    let old_running: u32 = old.iter().map(|rs| running(rs)).sum();
    let old_replicas: u32 = old.iter().map(|rs| rs.replicas).sum();
    let max_total = view.replicas + max_surge;
    let Some(new) = new else {
        let room = max_total.saturating_sub(old_running);
        return vec![create(view, room.min(view.replicas), new_revision)];
    };

    // The new ReplicaSet first: down to replicas if above, up within the surge budget.
    if new.replicas > view.replicas {
        return vec![scale(new, view.replicas, new_revision)];
    }
    let all_running = old_running + running(new);
    if new.replicas < view.replicas && all_running < max_total {
        let target = (new.replicas + (max_total - all_running)).min(view.replicas);
        return vec![scale(new, target, new_revision)];
    }
    let all_replicas = old_replicas + new.replicas;

    // Then the old ones, never below the availability budget.
    if old_replicas == 0 {
        return Vec::new();
    }
    let min_available = view.replicas.saturating_sub(max_unavailable);
    let new_unavailable = new.replicas.saturating_sub(new.available);
    let max_scaled_down =
        i64::from(all_replicas) - i64::from(min_available) - i64::from(new_unavailable);
    if max_scaled_down <= 0 {
        return Vec::new();
    }
    let mut targets: Vec<u32> = old.iter().map(|rs| rs.replicas).collect();
    // Pods that are not available cost nothing to remove: take those first, oldest set first.
    let mut budget = u32::try_from(max_scaled_down).unwrap_or(u32::MAX);
    for (target, rs) in targets.iter_mut().zip(old) {
        if budget == 0 {
            break;
        }
        let unhealthy = rs.replicas.saturating_sub(rs.available);
        let down = unhealthy.min(budget);
        *target -= down;
        budget -= down;
    }
    // Then available pods, as far as keeping min_available allows.
    let available: u32 = old.iter().map(|rs| rs.available).sum::<u32>() + new.available;
    if available > min_available {
        let mut allowed = available - min_available;
        for target in targets.iter_mut() {
            if allowed == 0 {
                break;
            }
            let down = (*target).min(allowed);
            *target -= down;
            allowed -= down;
        }
    }
    old.iter()
        .zip(targets)
        .filter(|(rs, target)| rs.replicas != *target)
        .map(|(rs, target)| scale(rs, target, rs.revision))
        .collect()
}

/// A paused Deployment only scales, as Kubernetes' `sync` of a paused Deployment does: no
/// ReplicaSet is created for a new template and none rolls. The one active ReplicaSet (or, with
/// none active, the newest) takes the replicas; when the newest is saturated the old ones go to
/// zero; when several are active (paused mid-rollout, RollingUpdate) a change of replicas is
/// spread over them in proportion to their sizes, within `replicas + maxSurge`, the remainder
/// to the largest. Kubernetes weighs by the max-replicas annotation (the Deployment's size plus
/// surge when a set was last scaled); shipshape keeps no such annotation and weighs by the sets'
/// current total, the same figure once a rollout has used its whole surge.
fn scale_paused(
    view: &DeploymentView,
    new: Option<&ReplicaSetSummary>,
    old: &[&ReplicaSetSummary],
) -> Vec<DeploymentAction> {
    let active: Vec<&ReplicaSetSummary> = new
        .into_iter()
        .chain(old.iter().copied())
        .filter(|rs| rs.replicas > 0)
        .collect();
    let only = match active.as_slice() {
        [one] => Some(*one),
        [] => new.or_else(|| {
            old.iter()
                .copied()
                .max_by_key(|rs| (rs.revision, rs.created))
        }),
        _ => None,
    };
    if let Some(rs) = only {
        return if rs.replicas == view.replicas {
            Vec::new()
        } else {
            vec![scale(rs, view.replicas, rs.revision)]
        };
    }
    if let Some(new) = new
        && new.replicas == view.replicas
        && new.available >= view.replicas
    {
        return old
            .iter()
            .filter(|rs| rs.replicas > 0)
            .map(|rs| scale(rs, 0, rs.revision))
            .collect();
    }
    if view.strategy == RolloutStrategy::Recreate {
        return Vec::new();
    }
    let (max_surge, _) = budgets(view.strategy, view.replicas);
    let allowed = i64::from(view.replicas) + i64::from(max_surge);
    let total: i64 = active.iter().map(|rs| i64::from(rs.replicas)).sum();
    let to_add = allowed - total;
    if to_add == 0 || total == 0 {
        return Vec::new();
    }
    // Largest first (newer first on a tie when growing, older first when shrinking), as
    // Kubernetes orders them, so the remainder lands where Kubernetes puts it.
    let mut order = active.clone();
    order.sort_by(|a, b| {
        b.replicas.cmp(&a.replicas).then(if to_add > 0 {
            b.created.cmp(&a.created)
        } else {
            a.created.cmp(&b.created)
        })
    });
    // Each set's share is its size scaled to the new total, rounded half away from zero, and
    // never more than is left to add (or take).
    let mut added = 0i64;
    let mut targets: Vec<i64> = Vec::with_capacity(order.len());
    for rs in &order {
        let size = i64::from(rs.replicas);
        let scaled = (2 * size * allowed + total) / (2 * total);
        let left = to_add - added;
        let share = if to_add > 0 {
            (scaled - size).min(left)
        } else {
            (scaled - size).max(left)
        };
        added += share;
        targets.push(size + share);
    }
    if let Some(first) = targets.first_mut() {
        *first += to_add - added;
    }
    order
        .iter()
        .zip(targets)
        .map(|(rs, target)| (rs, u32::try_from(target.max(0)).unwrap_or(u32::MAX)))
        .filter(|(rs, target)| rs.replicas != *target)
        .map(|(rs, target)| scale(rs, target, rs.revision))
        .collect()
}

fn recreate(
    view: &DeploymentView,
    new: Option<&ReplicaSetSummary>,
    old: &[&ReplicaSetSummary],
    new_revision: u64,
) -> Vec<DeploymentAction> {
    let scale_downs: Vec<DeploymentAction> = old
        .iter()
        .filter(|rs| rs.replicas > 0)
        .map(|rs| scale(rs, 0, rs.revision))
        .collect();
    if !scale_downs.is_empty() {
        return scale_downs;
    }
    // Every old pod must be gone before a new one starts: that is Recreate's promise.
    if old.iter().any(|rs| rs.active > 0) {
        return Vec::new();
    }
    match new {
        None => vec![create(view, view.replicas, new_revision)],
        Some(rs) if rs.replicas != view.replicas => vec![scale(rs, view.replicas, new_revision)],
        Some(_) => Vec::new(),
    }
}

fn cleanup_history(view: &DeploymentView, old: &[&ReplicaSetSummary]) -> Vec<DeploymentAction> {
    let mut empty: Vec<&&ReplicaSetSummary> = old
        .iter()
        .filter(|rs| rs.replicas == 0 && rs.active == 0)
        .collect();
    let limit = view.revision_history_limit as usize;
    if empty.len() <= limit {
        return Vec::new();
    }
    empty.sort_by_key(|rs| rs.revision);
    empty[..empty.len() - limit]
        .iter()
        .map(|rs| DeploymentAction::DeleteReplicaSet {
            name: rs.name.clone(),
            resource_version: rs.resource_version,
        })
        .collect()
}

fn status(
    view: &DeploymentView,
    new: Option<&ReplicaSetSummary>,
    old: &[&ReplicaSetSummary],
    acting: bool,
    now: i64,
) -> (DeploymentStatus, Option<i64>) {
    let (_, max_unavailable) = budgets(view.strategy, view.replicas);
    let replicas: u32 = view.replica_sets.iter().map(|rs| rs.active).sum();
    let desired_total: u32 = view.replica_sets.iter().map(|rs| rs.replicas).sum();
    let available: u32 = view.replica_sets.iter().map(|rs| rs.available).sum();
    let updated = new.map_or(0, |rs| rs.active);
    let complete = new.is_some_and(|rs| {
        rs.replicas == view.replicas && rs.active == view.replicas && rs.available == view.replicas
    }) && old.iter().all(|rs| rs.replicas == 0 && rs.active == 0);

    let previous = view.status;
    let progressed =
        acting || previous.is_none_or(|p| updated > p.updated || available > p.available);
    let (progress, since) = match previous {
        // No deadline while paused; the time it was paused is kept.
        _ if view.paused => match previous {
            Some(p) if p.progress == Progress::Paused => (Progress::Paused, p.progress_since),
            _ => (Progress::Paused, now),
        },
        _ if complete => match previous {
            Some(p) if p.progress == Progress::Complete => (Progress::Complete, p.progress_since),
            _ => (Progress::Complete, now),
        },
        _ if progressed => (Progress::Progressing, now),
        Some(p) => {
            let stuck = p.progress == Progress::Progressing
                && view
                    .progress_deadline_seconds
                    .is_some_and(|deadline| now - p.progress_since > deadline);
            match (p.progress, stuck) {
                (_, true) => (Progress::DeadlineExceeded, now),
                // Resumed: the deadline counts from now.
                (Progress::Paused, false) => (Progress::Progressing, now),
                // A finished rollout that stops being complete (a new template) progresses anew.
                (Progress::Complete, false) => (Progress::Progressing, now),
                (progress, false) => (progress, p.progress_since),
            }
        }
        None => (Progress::Progressing, now),
    };
    let status = DeploymentStatus {
        observed_generation: view.generation,
        replicas,
        updated,
        ready: view.replica_sets.iter().map(|rs| rs.ready).sum(),
        available,
        unavailable: desired_total.saturating_sub(available),
        minimum_available: available >= view.replicas.saturating_sub(max_unavailable),
        progress,
        progress_since: since,
    };
    // While a rollout waits (for pods to become available, old pods to stop), nothing may wake
    // the controller but pod events; a timer makes the deadline check happen regardless.
    let requeue = match (progress, view.progress_deadline_seconds) {
        (Progress::Progressing, Some(deadline)) => {
            Some((since + deadline + 1 - now).clamp(1, WAIT_POLL.max(1)))
        }
        (Progress::Progressing, None) => Some(WAIT_POLL),
        _ => None,
    };
    (status, requeue)
}

/// The hash naming a ReplicaSet for a pod template, from the template's canonical bytes:
/// FNV-1a (32 bits, as Kubernetes' `ComputeHash`) spelled in Kubernetes' vowel-free alphabet.
pub fn template_hash(canonical_template: &[u8]) -> String {
    let mut hash: u32 = 0x811c_9dc5;
    for byte in canonical_template {
        hash ^= u32::from(*byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut n = u64::from(hash);
    let mut out = Vec::new();
    loop {
        out.push(ALPHABET[(n % ALPHABET.len() as u64) as usize]);
        n /= ALPHABET.len() as u64;
        if n == 0 {
            break;
        }
    }
    String::from_utf8(out).unwrap_or_default()
}

#[cfg(test)]
mod tests;
