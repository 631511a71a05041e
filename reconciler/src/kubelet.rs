//! The kubelet's decisions about one pod's containers: whether an exited container starts
//! again and when (restartPolicy and Kubernetes' exponential back-off), what a waiting
//! container is waiting for, the pod's phase, and the Service link variables a container's
//! environment starts with. The kubelet actor observes containerd and acts; what to do lives
//! here, as plain data in and out.

use std::time::Duration;

/// The back-off before a container's second restart (Kubernetes: 10 s; the first is immediate).
pub const BACK_OFF_INITIAL: Duration = Duration::from_secs(10);
/// The longest back-off (Kubernetes: 5 minutes).
pub const BACK_OFF_MAX: Duration = Duration::from_secs(300);
/// A container that ran this long before exiting starts its back-off afresh (Kubernetes: 10 min).
pub const BACK_OFF_RESET: Duration = Duration::from_secs(600);

/// A pod's `spec.restartPolicy`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RestartPolicy {
    /// Always restart (Deployments, ReplicaSets, DaemonSets).
    Always,
    /// Restart only after a non-zero exit (Jobs usually).
    OnFailure,
    /// Never restart.
    Never,
}

impl RestartPolicy {
    /// Parses Kubernetes' spelling; anything else is `Always`, the API default.
    pub fn parse(text: Option<&str>) -> Self {
        match text {
            Some("OnFailure") => RestartPolicy::OnFailure,
            Some("Never") => RestartPolicy::Never,
            _ => RestartPolicy::Always,
        }
    }

    /// Whether a container that exited with `code` runs again.
    pub fn restarts(self, code: i32) -> bool {
        match self {
            RestartPolicy::Always => true,
            RestartPolicy::OnFailure => code != 0,
            RestartPolicy::Never => false,
        }
    }
}

/// How a container last ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Exit {
    /// Its exit code (128 + signal when killed by one).
    pub code: i32,
    /// How long it ran.
    pub ran_for: Duration,
    /// How long ago it ended.
    pub ago: Duration,
}

/// What to do with an exited container.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AfterExit {
    /// Start it again now.
    Restart,
    /// Start it again after this much longer (status: CrashLoopBackOff).
    BackOff(Duration),
    /// Leave it exited (restartPolicy says so).
    Stay,
}

/// The delay before restart number `restarts + 1`. As the kubelet does it: the first restart
/// is immediate, then 10 s doubling to 5 minutes; a run that lasted ten minutes starts afresh.
pub fn back_off(restarts: u32, ran_for: Duration) -> Duration {
    if restarts == 0 || ran_for >= BACK_OFF_RESET {
        return Duration::ZERO;
    }
    let factor = 1u32 << (restarts - 1).min(5);
    (BACK_OFF_INITIAL * factor).min(BACK_OFF_MAX)
}

/// Decides what follows an exit, given the restarts so far.
pub fn after_exit(policy: RestartPolicy, restarts: u32, exit: Exit) -> AfterExit {
    if !policy.restarts(exit.code) {
        return AfterExit::Stay;
    }
    let delay = back_off(restarts, exit.ran_for);
    if exit.ago >= delay {
        AfterExit::Restart
    } else {
        AfterExit::BackOff(delay - exit.ago)
    }
}

/// A container as the kubelet sees it right now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ContainerNow {
    /// Not started yet (image missing, waiting for init containers, or backing off before its
    /// first run).
    Waiting {
        /// Whether it has ever run (a container between restarts).
        ran_before: bool,
    },
    /// Running.
    Running,
    /// Exited, with its code.
    Exited(i32),
}

/// A pod's phase.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Accepted, but not every container has started.
    Pending,
    /// Bound, and at least one container runs or is restarting.
    Running,
    /// Every container exited 0 and none will restart.
    Succeeded,
    /// Every container exited, at least one failed, and none will restart.
    Failed,
}

impl Phase {
    /// Kubernetes' spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Pending => "Pending",
            Phase::Running => "Running",
            Phase::Succeeded => "Succeeded",
            Phase::Failed => "Failed",
        }
    }
}

/// Where a pod's init containers are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InitProgress {
    /// All completed (or there are none).
    Done,
    /// One is running or will run (again).
    InProgress,
    /// One failed and restartPolicy Never forbids another attempt.
    Failed,
}

/// The pod's phase from its init containers and its containers, as Kubernetes computes it.
pub fn pod_phase(policy: RestartPolicy, init: InitProgress, containers: &[ContainerNow]) -> Phase {
    match init {
        InitProgress::Failed => return Phase::Failed,
        InitProgress::InProgress => return Phase::Pending,
        InitProgress::Done => {}
    }
    if containers.is_empty() {
        return Phase::Pending;
    }
    let running = containers.contains(&ContainerNow::Running);
    let waiting_first = containers.contains(&ContainerNow::Waiting { ran_before: false });
    let restarting = containers.contains(&ContainerNow::Waiting { ran_before: true });
    if running || restarting {
        return Phase::Running;
    }
    if waiting_first {
        return Phase::Pending;
    }
    // Every container has exited.
    let codes: Vec<i32> = containers
        .iter()
        .filter_map(|c| match c {
            ContainerNow::Exited(code) => Some(*code),
            _ => None,
        })
        .collect();
    if codes.iter().any(|code| policy.restarts(*code)) {
        return Phase::Running;
    }
    if codes.iter().all(|code| *code == 0) {
        Phase::Succeeded
    } else {
        Phase::Failed
    }
}

/// The reason Kubernetes gives for an exit: `Completed` for 0, `OOMKilled` when the memory
/// limit killed it, `Error` otherwise.
pub fn exit_reason(code: i32, oom_killed: bool) -> &'static str {
    if oom_killed {
        "OOMKilled"
    } else if code == 0 {
        "Completed"
    } else {
        "Error"
    }
}

/// A probe's thresholds (Kubernetes: success 1, failure 3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Thresholds {
    /// Consecutive successes that make a failing probe pass.
    pub success: u32,
    /// Consecutive failures that make a passing probe fail.
    pub failure: u32,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            success: 1,
            failure: 3,
        }
    }
}

/// Where a probe stands: its verdict and the run of equal results behind it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tally {
    /// Passing (ready, alive, started) or not.
    pub passing: bool,
    /// Consecutive results that disagree with `passing` so far.
    pub against: u32,
}

impl Tally {
    /// A probe that starts out `passing` (liveness) or not (readiness, startup).
    pub fn starting(passing: bool) -> Self {
        Tally {
            passing,
            against: 0,
        }
    }
}

/// Takes one probe result: the verdict flips after `success` consecutive successes (when
/// failing) or `failure` consecutive failures (when passing), as the kubelet's prober does.
pub fn tally(thresholds: Thresholds, current: Tally, succeeded: bool) -> Tally {
    if succeeded == current.passing {
        return Tally {
            passing: current.passing,
            against: 0,
        };
    }
    let against = current.against + 1;
    let needed = if current.passing {
        thresholds.failure
    } else {
        thresholds.success
    }
    .max(1);
    if against >= needed {
        Tally {
            passing: succeeded,
            against: 0,
        }
    } else {
        Tally {
            passing: current.passing,
            against,
        }
    }
}

/// The Docker-link-style variables the kubelet gives a container for each Service of its
/// namespace (`enableServiceLinks`, Kubernetes' `envvars.FromServices`), so that programs
/// written for Docker links find their peers without DNS: `{NAME}_SERVICE_HOST`,
/// `{NAME}_SERVICE_PORT` (the first port), `{NAME}_SERVICE_PORT_{PORTNAME}` for each named
/// port, `{NAME}_PORT` (the first port as `tcp://ip:port`) and, for each port,
/// `{NAME}_PORT_{PORT}_{PROTO}` with its `_PROTO`, `_PORT` and `_ADDR`. `NAME` is the Service's
/// name upper-cased with `-` as `_`.
///
/// `services` are the Service objects (JSON) of the pod's namespace; those without a cluster
/// IP (headless `None`, ExternalName, not yet allocated) are left out, as Kubernetes leaves
/// them out. Kubernetes walks a map, so its order is arbitrary; here Services come in name
/// order and each one's variables in Kubernetes' order, so the result is stable.
pub fn service_environment(services: &[serde_json::Value]) -> Vec<(String, String)> {
    let mut with_ip: Vec<(&str, &str, &serde_json::Value)> = services
        .iter()
        .filter_map(|service| {
            let name = service.pointer("/metadata/name")?.as_str()?;
            let ip = service.pointer("/spec/clusterIP")?.as_str()?;
            (!ip.is_empty() && ip != "None").then_some((name, ip, service))
        })
        .collect();
    with_ip.sort_by_key(|(name, _, _)| *name);
    with_ip.dedup_by_key(|(name, _, _)| *name);
    let mut env = Vec::new();
    for (name, ip, service) in with_ip {
        let prefix = env_variable_name(name);
        // Ports without a number cannot be linked; validation refuses them anyway.
        let ports: Vec<(u64, &str, String)> = service
            .pointer("/spec/ports")
            .and_then(serde_json::Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|port| {
                let number = port.get("port")?.as_u64()?;
                let port_name = port.get("name").and_then(serde_json::Value::as_str);
                let protocol = port
                    .get("protocol")
                    .and_then(serde_json::Value::as_str)
                    .filter(|p| !p.is_empty())
                    .unwrap_or("TCP");
                Some((number, port_name.unwrap_or(""), protocol.to_uppercase()))
            })
            .collect();
        env.push((format!("{prefix}_SERVICE_HOST"), ip.to_string()));
        let Some((first, _, _)) = ports.first() else {
            continue;
        };
        env.push((format!("{prefix}_SERVICE_PORT"), first.to_string()));
        for (number, port_name, _) in &ports {
            if !port_name.is_empty() {
                env.push((
                    format!("{prefix}_SERVICE_PORT_{}", env_variable_name(port_name)),
                    number.to_string(),
                ));
            }
        }
        // An IPv6 address is bracketed in a URL, as Go's net.JoinHostPort does.
        let host = if ip.contains(':') {
            format!("[{ip}]")
        } else {
            ip.to_string()
        };
        for (i, (number, _, protocol)) in ports.iter().enumerate() {
            let lower = protocol.to_lowercase();
            let url = format!("{lower}://{host}:{number}");
            if i == 0 {
                env.push((format!("{prefix}_PORT"), url.clone()));
            }
            let port_prefix = format!("{prefix}_PORT_{number}_{protocol}");
            env.push((port_prefix.clone(), url));
            env.push((format!("{port_prefix}_PROTO"), lower));
            env.push((format!("{port_prefix}_PORT"), number.to_string()));
            env.push((format!("{port_prefix}_ADDR"), ip.to_string()));
        }
    }
    env
}

/// A Service or port name as part of a variable name (Kubernetes' `makeEnvVariableName`).
fn env_variable_name(name: &str) -> String {
    name.replace('-', "_").to_uppercase()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn exit(code: i32, ran: u64, ago: u64) -> Exit {
        Exit {
            code,
            ran_for: Duration::from_secs(ran),
            ago: Duration::from_secs(ago),
        }
    }

    #[test]
    fn back_off_doubles_from_ten_seconds_to_five_minutes() {
        let quick = Duration::from_secs(1);
        let delays: Vec<u64> = (0..9).map(|n| back_off(n, quick).as_secs()).collect();
        assert_eq!(delays, vec![0, 10, 20, 40, 80, 160, 300, 300, 300]);
        assert_eq!(back_off(7, BACK_OFF_RESET), Duration::ZERO);
    }

    #[test]
    fn restart_policy_decides_who_runs_again() {
        use RestartPolicy::*;
        assert_eq!(after_exit(Always, 0, exit(0, 1, 20)), AfterExit::Restart);
        assert_eq!(
            after_exit(Always, 2, exit(1, 1, 5)),
            AfterExit::BackOff(Duration::from_secs(15))
        );
        assert_eq!(after_exit(OnFailure, 0, exit(0, 1, 99)), AfterExit::Stay);
        assert_eq!(after_exit(OnFailure, 0, exit(2, 1, 99)), AfterExit::Restart);
        assert_eq!(after_exit(Never, 0, exit(2, 1, 99)), AfterExit::Stay);
        assert_eq!(RestartPolicy::parse(Some("Never")), Never);
        assert_eq!(RestartPolicy::parse(None), Always);
    }

    #[test]
    fn phases_follow_kubernetes() {
        use ContainerNow::*;
        use RestartPolicy::*;
        let phase = |p, c: &[ContainerNow]| pod_phase(p, InitProgress::Done, c);
        assert_eq!(
            phase(Always, &[Waiting { ran_before: false }]),
            Phase::Pending
        );
        assert_eq!(
            phase(Always, &[Running, Waiting { ran_before: false }]),
            Phase::Running
        );
        assert_eq!(
            phase(Always, &[Waiting { ran_before: true }]),
            Phase::Running
        );
        assert_eq!(phase(Always, &[Exited(0)]), Phase::Running);
        assert_eq!(phase(OnFailure, &[Exited(0), Exited(0)]), Phase::Succeeded);
        assert_eq!(phase(OnFailure, &[Exited(0), Exited(1)]), Phase::Running);
        assert_eq!(phase(Never, &[Exited(0), Exited(1)]), Phase::Failed);
        assert_eq!(phase(Never, &[Exited(0)]), Phase::Succeeded);
        assert_eq!(
            pod_phase(
                Always,
                InitProgress::InProgress,
                &[Waiting { ran_before: false }]
            ),
            Phase::Pending
        );
        assert_eq!(pod_phase(Never, InitProgress::Failed, &[]), Phase::Failed);
        assert_eq!(exit_reason(137, true), "OOMKilled");
        assert_eq!(exit_reason(0, false), "Completed");
    }

    #[test]
    fn probes_flip_after_their_thresholds() {
        let t = Thresholds {
            success: 2,
            failure: 3,
        };
        let mut ready = Tally::starting(false);
        ready = tally(t, ready, true);
        assert!(!ready.passing, "one success of two");
        ready = tally(t, ready, true);
        assert!(ready.passing);
        for _ in 0..2 {
            ready = tally(t, ready, false);
        }
        assert!(ready.passing, "two failures of three");
        ready = tally(t, ready, true);
        ready = tally(t, ready, false);
        ready = tally(t, ready, false);
        assert!(ready.passing, "a success in between starts the count again");
        ready = tally(t, ready, false);
        assert!(!ready.passing);
    }

    proptest! {
        #[test]
        fn a_verdict_only_flips_after_enough_agreeing_results(
            results in proptest::collection::vec(any::<bool>(), 0..40),
            success in 1u32..4, failure in 1u32..5,
        ) {
            let t = Thresholds { success, failure };
            let mut current = Tally::starting(false);
            let mut run: Vec<bool> = Vec::new();
            for r in results {
                let next = tally(t, current, r);
                if next.passing != current.passing {
                    run.push(r);
                    let needed = if current.passing { failure } else { success } as usize;
                    prop_assert!(run.len() >= needed, "flipped after {} of {}", run.len(), needed);
                    run.clear();
                } else if r != current.passing {
                    run.push(r);
                } else {
                    run.clear();
                }
                current = next;
            }
        }

        #[test]
        fn back_off_is_bounded_and_never_shrinks(restarts in 0u32..64, ran in 0u64..599) {
            let ran = Duration::from_secs(ran);
            let now = back_off(restarts, ran);
            prop_assert!(now <= BACK_OFF_MAX);
            prop_assert!(restarts == 0 || now >= BACK_OFF_INITIAL);
            prop_assert!(back_off(restarts + 1, ran) >= now);
        }

        #[test]
        fn a_restart_is_never_earlier_than_its_back_off(
            restarts in 0u32..10, code in -1i32..256, ran in 0u64..1000, ago in 0u64..400,
        ) {
            let e = exit(code, ran, ago);
            match after_exit(RestartPolicy::Always, restarts, e) {
                AfterExit::Restart => prop_assert!(e.ago >= back_off(restarts, e.ran_for)),
                AfterExit::BackOff(wait) => prop_assert_eq!(e.ago + wait, back_off(restarts, e.ran_for)),
                AfterExit::Stay => prop_assert!(false, "Always never stays"),
            }
        }

        #[test]
        fn a_finished_pod_never_has_a_restartable_container(
            codes in proptest::collection::vec(0i32..3, 1..4),
            policy in prop_oneof![Just(RestartPolicy::Always), Just(RestartPolicy::OnFailure), Just(RestartPolicy::Never)],
        ) {
            let containers: Vec<ContainerNow> = codes.iter().map(|c| ContainerNow::Exited(*c)).collect();
            let phase = pod_phase(policy, InitProgress::Done, &containers);
            if matches!(phase, Phase::Succeeded | Phase::Failed) {
                prop_assert!(codes.iter().all(|c| !policy.restarts(*c)));
            }
        }
    }
}

#[cfg(test)]
mod service_environment_tests {
    use super::service_environment;
    use serde_json::json;

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn a_service_gives_the_variables_of_the_kubernetes_docs_example() {
        let redis = json!({
            "metadata": {"name": "redis-primary"},
            "spec": {"clusterIP": "10.0.0.11", "ports": [{"port": 6379}]}
        });
        assert_eq!(
            service_environment(&[redis]),
            pairs(&[
                ("REDIS_PRIMARY_SERVICE_HOST", "10.0.0.11"),
                ("REDIS_PRIMARY_SERVICE_PORT", "6379"),
                ("REDIS_PRIMARY_PORT", "tcp://10.0.0.11:6379"),
                ("REDIS_PRIMARY_PORT_6379_TCP", "tcp://10.0.0.11:6379"),
                ("REDIS_PRIMARY_PORT_6379_TCP_PROTO", "tcp"),
                ("REDIS_PRIMARY_PORT_6379_TCP_PORT", "6379"),
                ("REDIS_PRIMARY_PORT_6379_TCP_ADDR", "10.0.0.11"),
            ])
        );
    }

    #[test]
    fn named_ports_and_protocols_are_linked_and_the_first_port_is_the_default() {
        let dns = json!({
            "metadata": {"name": "my-dns"},
            "spec": {"clusterIP": "10.96.0.10", "ports": [
                {"name": "dns-udp", "port": 53, "protocol": "UDP"},
                {"name": "metrics", "port": 9153, "protocol": "TCP"}
            ]}
        });
        assert_eq!(
            service_environment(&[dns]),
            pairs(&[
                ("MY_DNS_SERVICE_HOST", "10.96.0.10"),
                ("MY_DNS_SERVICE_PORT", "53"),
                ("MY_DNS_SERVICE_PORT_DNS_UDP", "53"),
                ("MY_DNS_SERVICE_PORT_METRICS", "9153"),
                ("MY_DNS_PORT", "udp://10.96.0.10:53"),
                ("MY_DNS_PORT_53_UDP", "udp://10.96.0.10:53"),
                ("MY_DNS_PORT_53_UDP_PROTO", "udp"),
                ("MY_DNS_PORT_53_UDP_PORT", "53"),
                ("MY_DNS_PORT_53_UDP_ADDR", "10.96.0.10"),
                ("MY_DNS_PORT_9153_TCP", "tcp://10.96.0.10:9153"),
                ("MY_DNS_PORT_9153_TCP_PROTO", "tcp"),
                ("MY_DNS_PORT_9153_TCP_PORT", "9153"),
                ("MY_DNS_PORT_9153_TCP_ADDR", "10.96.0.10"),
            ])
        );
    }

    #[test]
    fn services_without_a_cluster_ip_give_nothing_and_the_rest_come_in_name_order() {
        let service = |name: &str, ip: Option<&str>| {
            let mut spec = json!({"ports": [{"port": 80}]});
            if let Some(ip) = ip {
                spec["clusterIP"] = json!(ip);
            }
            json!({"metadata": {"name": name}, "spec": spec})
        };
        let services = [
            service("web", Some("10.0.0.2")),
            service("headless", Some("None")),
            service("pending", Some("")),
            service("external", None),
            service("api", Some("10.0.0.1")),
        ];
        let hosts: Vec<(String, String)> = service_environment(&services)
            .into_iter()
            .filter(|(name, _)| name.ends_with("_SERVICE_HOST"))
            .collect();
        assert_eq!(
            hosts,
            pairs(&[
                ("API_SERVICE_HOST", "10.0.0.1"),
                ("WEB_SERVICE_HOST", "10.0.0.2")
            ])
        );
    }

    #[test]
    fn an_ipv6_cluster_ip_is_bracketed_in_the_urls() {
        let v6 = json!({
            "metadata": {"name": "v6"},
            "spec": {"clusterIP": "fd00::1", "ports": [{"port": 80}]}
        });
        let env = service_environment(&[v6]);
        assert!(env.contains(&("V6_PORT".to_string(), "tcp://[fd00::1]:80".to_string())));
        assert!(env.contains(&("V6_PORT_80_TCP_ADDR".to_string(), "fd00::1".to_string())));
    }
}
