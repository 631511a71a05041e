//! Rules for the workload kinds: each owns pods through a selector and a template.

use std::collections::BTreeSet;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::batch::v1::{CronJob, Job, JobSpec};
use k8s_openapi::api::core::v1::{PodTemplateSpec, ReplicationController};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::names;
use crate::path::FieldPath;
use crate::selector::Selector;

use super::Report;
use super::pod::{PodRules, pod_spec};

/// A workload's selector must be non-empty and select the pods its own template makes;
/// otherwise the controller would create pods forever without ever counting them.
fn selected_template(
    report: &mut Report,
    spec_path: &FieldPath,
    selector: Option<&LabelSelector>,
    template: Option<&PodTemplateSpec>,
    rules: &PodRules,
) {
    let template_path = spec_path.field("template");
    let Some(template) = template else {
        report.push(template_path, "required field is missing");
        return;
    };
    let labels = template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    let labels_path = template_path.field("metadata").field("labels");
    report.labels(&labels_path, Some(&labels));
    if let Some(selector) = selector {
        let selector_path = spec_path.field("selector");
        match Selector::parse(selector, &selector_path) {
            Ok(parsed) if parsed.is_empty() => report.push(
                selector_path,
                "must not be empty: select the template's labels (e.g. matchLabels: {app: web})",
            ),
            Ok(parsed) if !parsed.matches(&labels) => report.push(
                labels_path,
                "do not match spec.selector: the workload would never find its own pods",
            ),
            Ok(_) => {}
            Err(problems) => report.extend(problems),
        }
    }
    match &template.spec {
        Some(spec) => pod_spec(report, &template_path.field("spec"), spec, rules),
        None => report.push(template_path.field("spec"), "required field is missing"),
    }
}

fn common_counts(
    report: &mut Report,
    spec: &FieldPath,
    replicas: Option<i32>,
    min_ready: Option<i32>,
) {
    report.at_least(&spec.field("replicas"), replicas.map(i64::from), 0);
    report.at_least(&spec.field("minReadySeconds"), min_ready.map(i64::from), 0);
}

pub(super) fn deployment(report: &mut Report, deployment: &Deployment) {
    let spec_path = FieldPath::parse("spec");
    let spec = &deployment.spec;
    common_counts(report, &spec_path, spec.replicas, spec.min_ready_seconds);
    report.at_least(
        &spec_path.field("revisionHistoryLimit"),
        spec.revision_history_limit.map(i64::from),
        0,
    );
    if let Some(deadline) = spec.progress_deadline_seconds {
        let min_ready = spec.min_ready_seconds.unwrap_or(0);
        if deadline <= min_ready {
            report.push(
                spec_path.field("progressDeadlineSeconds"),
                format!("must be greater than minReadySeconds ({deadline} <= {min_ready})"),
            );
        }
    }
    if let Some(strategy) = &spec.strategy {
        let at = spec_path.field("strategy");
        report.one_of(
            &at.field("type"),
            strategy.type_.as_deref(),
            &["RollingUpdate", "Recreate"],
        );
        match (&strategy.type_.as_deref(), &strategy.rolling_update) {
            (Some("Recreate"), Some(_)) => report.push(
                at.field("rollingUpdate"),
                "may not be set when type is Recreate",
            ),
            (_, Some(rolling)) => {
                let at = at.field("rollingUpdate");
                let surge_zero = rolling
                    .max_surge
                    .as_ref()
                    .is_some_and(|v| report.int_or_percent(&at.field("maxSurge"), v, None));
                let unavailable_zero = rolling.max_unavailable.as_ref().is_some_and(|v| {
                    report.int_or_percent(&at.field("maxUnavailable"), v, Some(100))
                });
                if surge_zero && unavailable_zero {
                    report.push(
                        at.field("maxUnavailable"),
                        "may not be 0 when maxSurge is 0: the rollout could never progress",
                    );
                }
            }
            _ => {}
        }
    }
    selected_template(
        report,
        &spec_path,
        Some(&spec.selector),
        Some(&spec.template),
        &PodRules::long_running(),
    );
}

pub(super) fn replica_set(report: &mut Report, replica_set: &ReplicaSet) {
    let spec_path = FieldPath::parse("spec");
    let spec = &replica_set.spec;
    common_counts(report, &spec_path, spec.replicas, spec.min_ready_seconds);
    selected_template(
        report,
        &spec_path,
        Some(&spec.selector),
        spec.template.as_ref(),
        &PodRules::long_running(),
    );
}

/// A ReplicationController: a ReplicaSet whose selector is a plain label map, defaulting to
/// the template's labels (Kubernetes' `SetDefaults_ReplicationController`).
pub(super) fn replication_controller(report: &mut Report, controller: &ReplicationController) {
    let spec_path = FieldPath::parse("spec");
    let Some(spec) = &controller.spec else {
        report.push(spec_path, "required field is missing");
        return;
    };
    common_counts(report, &spec_path, spec.replicas, spec.min_ready_seconds);
    let template = spec.template.as_ref();
    let selector = match spec.selector.as_ref().filter(|s| !s.is_empty()) {
        Some(labels) => {
            report.labels(&spec_path.field("selector"), Some(labels));
            Some(labels.clone())
        }
        None => template.and_then(|t| t.metadata.as_ref()?.labels.clone()),
    };
    let selector = LabelSelector {
        match_labels: selector,
        match_expressions: None,
    };
    selected_template(
        report,
        &spec_path,
        Some(&selector),
        template,
        &PodRules::long_running(),
    );
}

pub(super) fn stateful_set(report: &mut Report, stateful_set: &StatefulSet) {
    let spec_path = FieldPath::parse("spec");
    let spec = &stateful_set.spec;
    common_counts(report, &spec_path, spec.replicas, spec.min_ready_seconds);
    if let Some(service) = &spec.service_name
        && !service.is_empty()
    {
        report.check(
            &spec_path.field("serviceName"),
            names::dns1123_label(service),
        );
    }
    report.one_of(
        &spec_path.field("podManagementPolicy"),
        spec.pod_management_policy.as_deref(),
        &["OrderedReady", "Parallel"],
    );
    if let Some(strategy) = &spec.update_strategy {
        let at = spec_path.field("updateStrategy");
        report.one_of(
            &at.field("type"),
            strategy.type_.as_deref(),
            &["RollingUpdate", "OnDelete"],
        );
        if let Some(rolling) = &strategy.rolling_update {
            let at = at.field("rollingUpdate");
            if strategy.type_.as_deref() == Some("OnDelete") {
                report.push(at.clone(), "may not be set when type is OnDelete");
            }
            report.at_least(&at.field("partition"), rolling.partition.map(i64::from), 0);
            if let Some(max) = &rolling.max_unavailable
                && report.int_or_percent(&at.field("maxUnavailable"), max, Some(100))
            {
                report.push(at.field("maxUnavailable"), "must be greater than 0");
            }
        }
    }
    if let Some(policy) = &spec.persistent_volume_claim_retention_policy {
        let at = spec_path.field("persistentVolumeClaimRetentionPolicy");
        for (field, value) in [
            ("whenDeleted", &policy.when_deleted),
            ("whenScaled", &policy.when_scaled),
        ] {
            report.one_of(&at.field(field), value.as_deref(), &["Retain", "Delete"]);
        }
    }
    if let Some(ordinals) = &spec.ordinals {
        let at = spec_path.field("ordinals").field("start");
        report.at_least(&at, ordinals.start.map(i64::from), 0);
        if ordinals.start.is_some_and(|start| start > 0) {
            report.push(
                at,
                "is not supported by shipshape yet (pods would still be numbered from 0)",
            );
        }
    }
    let mut claim_names = BTreeSet::new();
    for (i, claim) in spec.volume_claim_templates.iter().flatten().enumerate() {
        let at = spec_path.field("volumeClaimTemplates").index(i);
        match claim.metadata.name.as_deref() {
            Some(name) => {
                report.check(
                    &at.field("metadata").field("name"),
                    names::dns1123_label(name),
                );
                if !claim_names.insert(name.to_string()) {
                    report.push(
                        at.field("metadata").field("name"),
                        format!("duplicate claim template name {name:?}"),
                    );
                }
            }
            None => report.push(
                at.field("metadata").field("name"),
                "required field is missing",
            ),
        }
        match &claim.spec {
            Some(claim_spec) => super::other::claim_spec(report, &at.field("spec"), claim_spec),
            None => report.push(at.field("spec"), "required field is missing"),
        }
    }
    let mut rules = PodRules::long_running();
    rules.claim_templates = claim_names;
    selected_template(
        report,
        &spec_path,
        Some(&spec.selector),
        Some(&spec.template),
        &rules,
    );
}

pub(super) fn daemon_set(report: &mut Report, daemon_set: &DaemonSet) {
    let spec_path = FieldPath::parse("spec");
    let spec = &daemon_set.spec;
    common_counts(report, &spec_path, None, spec.min_ready_seconds);
    if let Some(strategy) = &spec.update_strategy {
        let at = spec_path.field("updateStrategy");
        report.one_of(
            &at.field("type"),
            strategy.type_.as_deref(),
            &["RollingUpdate", "OnDelete"],
        );
        if let Some(rolling) = &strategy.rolling_update {
            let at = at.field("rollingUpdate");
            let surge_zero = rolling
                .max_surge
                .as_ref()
                .is_none_or(|v| report.int_or_percent(&at.field("maxSurge"), v, Some(100)));
            let unavailable_zero = rolling
                .max_unavailable
                .as_ref()
                .is_some_and(|v| report.int_or_percent(&at.field("maxUnavailable"), v, Some(100)));
            if surge_zero && unavailable_zero {
                report.push(
                    at.field("maxUnavailable"),
                    "may not be 0 when maxSurge is 0: the rollout could never progress",
                );
            }
            if rolling.max_surge.as_ref().is_some_and(above_zero) {
                report.push(
                    at.field("maxSurge"),
                    "above 0 is not supported by shipshape yet (the old pod is always deleted before its replacement starts)",
                );
            }
        }
    }
    selected_template(
        report,
        &spec_path,
        Some(&spec.selector),
        Some(&spec.template),
        &PodRules::long_running(),
    );
}

/// Whether a count given as a number or a percentage is a valid one above zero.
fn above_zero(value: &IntOrString) -> bool {
    match value {
        IntOrString::Int(n) => *n > 0,
        IntOrString::String(text) => text
            .strip_suffix('%')
            .and_then(|n| n.parse::<i64>().ok())
            .is_some_and(|p| (1..=100).contains(&p)),
    }
}

/// Job features the Job controller does not implement: each is refused when set to anything but
/// its default, because the Job would otherwise count, retry or finish differently from what
/// Kubernetes documents.
fn unsupported_job_features(report: &mut Report, spec_path: &FieldPath, spec: &JobSpec) {
    if spec.completion_mode.as_deref() == Some("Indexed") {
        report.push(
            spec_path.field("completionMode"),
            "Indexed is not supported by shipshape yet (pods would run without completion indexes)",
        );
    }
    let unset_or_default = [
        (
            "podFailurePolicy",
            spec.pod_failure_policy.is_some(),
            "is not supported by shipshape yet (every failed pod would count against backoffLimit)",
        ),
        (
            "successPolicy",
            spec.success_policy.is_some(),
            "is not supported by shipshape yet (the Job would only succeed at its completions)",
        ),
        (
            "backoffLimitPerIndex",
            spec.backoff_limit_per_index.is_some(),
            "is not supported by shipshape yet (it needs Indexed completion)",
        ),
        (
            "maxFailedIndexes",
            spec.max_failed_indexes.is_some(),
            "is not supported by shipshape yet (it needs Indexed completion)",
        ),
        (
            "podReplacementPolicy",
            spec.pod_replacement_policy.as_deref() == Some("Failed"),
            "Failed is not supported by shipshape yet (a terminating pod is replaced at once, as with TerminatingOrFailed)",
        ),
        (
            "managedBy",
            spec.managed_by
                .as_deref()
                .is_some_and(|by| by != JOB_CONTROLLER),
            "is not supported by shipshape: its own Job controller would run the Job anyway (use kubernetes.io/job-controller or leave it unset)",
        ),
    ];
    for (field, set, why) in unset_or_default {
        if set {
            report.push(spec_path.field(field), why);
        }
    }
}

/// The `managedBy` value that means "the built-in Job controller", as in Kubernetes.
const JOB_CONTROLLER: &str = "kubernetes.io/job-controller";

fn job_spec(report: &mut Report, spec_path: &FieldPath, spec: &JobSpec) {
    for (field, value, min) in [
        ("parallelism", spec.parallelism, 0),
        ("completions", spec.completions, 0),
        ("backoffLimit", spec.backoff_limit, 0),
        (
            "ttlSecondsAfterFinished",
            spec.ttl_seconds_after_finished,
            0,
        ),
    ] {
        report.at_least(&spec_path.field(field), value.map(i64::from), min);
    }
    report.at_least(
        &spec_path.field("activeDeadlineSeconds"),
        spec.active_deadline_seconds,
        1,
    );
    report.one_of(
        &spec_path.field("completionMode"),
        spec.completion_mode.as_deref(),
        &["NonIndexed", "Indexed"],
    );
    report.one_of(
        &spec_path.field("podReplacementPolicy"),
        spec.pod_replacement_policy.as_deref(),
        &["TerminatingOrFailed", "Failed"],
    );
    unsupported_job_features(report, spec_path, spec);
    if spec.completion_mode.as_deref() == Some("Indexed") && spec.completions.is_none() {
        report.push(
            spec_path.field("completions"),
            "required field is missing: an Indexed Job needs completions",
        );
    }
    // A Job's selector is generated unless the user asks to manage it.
    let selector = spec
        .selector
        .as_ref()
        .filter(|_| spec.manual_selector == Some(true));
    selected_template(
        report,
        spec_path,
        selector,
        Some(&spec.template),
        &PodRules::run_to_completion(),
    );
}

pub(super) fn job(report: &mut Report, job: &Job) {
    let spec_path = FieldPath::parse("spec");
    match &job.spec {
        Some(spec) => job_spec(report, &spec_path, spec),
        None => report.push(spec_path, "required field is missing"),
    }
}

/// Kubernetes appends an 11-character suffix to a CronJob's name for its Jobs.
const MAX_CRON_JOB_NAME: usize = 52;

pub(super) fn cron_job(report: &mut Report, cron_job: &CronJob) {
    if let Some(name) = &cron_job.metadata.name
        && name.len() > MAX_CRON_JOB_NAME
    {
        report.push(
            FieldPath::parse("metadata.name"),
            format!(
                "must be no more than {MAX_CRON_JOB_NAME} characters (its Jobs add a suffix), got {}",
                name.len()
            ),
        );
    }
    let spec_path = FieldPath::parse("spec");
    let spec = &cron_job.spec;
    let schedule_path = spec_path.field("schedule");
    if let Err(why) = parse_schedule(&spec.schedule) {
        report.push(schedule_path, why);
    }
    if let Some(zone) = &spec.time_zone
        && (zone.is_empty() || zone.contains(char::is_whitespace) || zone.starts_with('/'))
    {
        report.push(
            spec_path.field("timeZone"),
            format!("{zone:?} is not a time zone name (e.g. Etc/UTC, Europe/Paris)"),
        );
    }
    report.one_of(
        &spec_path.field("concurrencyPolicy"),
        spec.concurrency_policy.as_deref(),
        &["Allow", "Forbid", "Replace"],
    );
    report.at_least(
        &spec_path.field("startingDeadlineSeconds"),
        spec.starting_deadline_seconds,
        0,
    );
    for (field, value) in [
        (
            "successfulJobsHistoryLimit",
            spec.successful_jobs_history_limit,
        ),
        ("failedJobsHistoryLimit", spec.failed_jobs_history_limit),
    ] {
        report.at_least(&spec_path.field(field), value.map(i64::from), 0);
    }
    let template_path = spec_path.field("jobTemplate").field("spec");
    match &spec.job_template.spec {
        Some(job) => job_spec(report, &template_path, job),
        None => report.push(template_path, "required field is missing"),
    }
}

/// Parses a CronJob schedule as Kubernetes does: five fields or a `@daily`-style macro, with the
/// time zone in its own field rather than a `TZ=` prefix.
pub fn parse_schedule(schedule: &str) -> Result<croner::Cron, String> {
    let trimmed = schedule.trim();
    if trimmed.starts_with("TZ=") || trimmed.starts_with("CRON_TZ=") {
        return Err("cannot use TZ or CRON_TZ in the schedule: set spec.timeZone instead".into());
    }
    let is_macro = trimmed.starts_with('@');
    if !is_macro && trimmed.split_whitespace().count() != 5 {
        return Err(format!(
            "{schedule:?} is not a cron schedule: use five fields (minute hour day-of-month month day-of-week) or @hourly, @daily, @weekly, @monthly, @yearly"
        ));
    }
    let parser = croner::parser::CronParser::builder()
        .seconds(croner::parser::Seconds::Disallowed)
        .year(croner::parser::Year::Disallowed)
        .build();
    parser
        .parse(trimmed)
        .map_err(|error| format!("{schedule:?} is not a valid cron schedule: {error}"))
}
