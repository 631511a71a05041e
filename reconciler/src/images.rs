//! The kubelet's image decisions: whether a container start pulls, uses what the node has, or
//! waits, following `imagePullPolicy` and the image pull back-off (10 s doubling to 5 min).

use std::time::Duration;

/// The first wait after a failed pull (Kubernetes' `backOffPeriod`).
pub const PULL_BACK_OFF_FIRST: Duration = Duration::from_secs(10);

/// The longest wait between pulls (Kubernetes' `MaxContainerBackOff`).
pub const PULL_BACK_OFF_MAX: Duration = Duration::from_secs(300);

/// `imagePullPolicy`, defaulted by the API as Kubernetes defaults it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PullPolicy {
    /// Resolve the name at the registry at every container start.
    Always,
    /// Pull only when the node does not have the image.
    IfNotPresent,
    /// Never pull: the image must be on the node.
    Never,
}

impl PullPolicy {
    /// The policy a container's `imagePullPolicy` names (`IfNotPresent` when it names none:
    /// the API server has already defaulted it by the image's tag).
    pub fn parse(text: Option<&str>) -> Self {
        match text {
            Some("Always") => PullPolicy::Always,
            Some("Never") => PullPolicy::Never,
            _ => PullPolicy::IfNotPresent,
        }
    }
}

/// Failed pulls of one image for one pod, and how long ago the last one failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PullFailures {
    /// Consecutive failures.
    pub count: u32,
    /// Time since the last one.
    pub ago: Duration,
}

/// What to do about a container's image before starting it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImageStep {
    /// Start from the image the node has.
    UseLocal,
    /// Pull it (again) now.
    Pull,
    /// The policy is `Never` and the node does not have it (`ErrImageNeverPull`).
    NeverPull,
    /// A pull failed recently: wait this much longer (`ImagePullBackOff`).
    BackOff(Duration),
}

/// The wait after `failures` consecutive failed pulls: 10 s, 20 s, 40 s, … up to 5 min.
pub fn pull_back_off(failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(16);
    PULL_BACK_OFF_FIRST
        .saturating_mul(1u32 << doublings)
        .min(PULL_BACK_OFF_MAX)
}

/// Decides the image step for a container start: `present` says whether the node has the
/// image, `failures` what earlier pulls for this pod did.
pub fn image_step(policy: PullPolicy, present: bool, failures: Option<PullFailures>) -> ImageStep {
    match policy {
        PullPolicy::Never if present => return ImageStep::UseLocal,
        PullPolicy::Never => return ImageStep::NeverPull,
        PullPolicy::IfNotPresent if present => return ImageStep::UseLocal,
        _ => {}
    }
    if let Some(failed) = failures
        && failed.count > 0
    {
        let wait = pull_back_off(failed.count);
        if failed.ago < wait {
            return ImageStep::BackOff(wait - failed.ago);
        }
    }
    ImageStep::Pull
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failed(count: u32, ago: u64) -> Option<PullFailures> {
        Some(PullFailures {
            count,
            ago: Duration::from_secs(ago),
        })
    }

    #[test]
    fn the_policy_decides_whether_a_present_image_is_pulled() {
        use ImageStep::*;
        use PullPolicy::*;
        assert_eq!(image_step(IfNotPresent, true, None), UseLocal);
        assert_eq!(image_step(IfNotPresent, false, None), Pull);
        assert_eq!(image_step(Always, true, None), Pull);
        assert_eq!(image_step(Never, true, None), UseLocal);
        assert_eq!(image_step(Never, false, None), NeverPull);
        // A present image is used even while pulls of it fail, unless the policy is Always.
        assert_eq!(image_step(IfNotPresent, true, failed(3, 0)), UseLocal);
        assert_eq!(PullPolicy::parse(Some("Always")), Always);
        assert_eq!(PullPolicy::parse(None), IfNotPresent);
    }

    #[test]
    fn failed_pulls_back_off_doubling_to_five_minutes() {
        assert_eq!(pull_back_off(1), Duration::from_secs(10));
        assert_eq!(pull_back_off(2), Duration::from_secs(20));
        assert_eq!(pull_back_off(5), Duration::from_secs(160));
        assert_eq!(pull_back_off(6), Duration::from_secs(300));
        assert_eq!(pull_back_off(u32::MAX), Duration::from_secs(300));
        assert_eq!(
            image_step(PullPolicy::Always, false, failed(1, 4)),
            ImageStep::BackOff(Duration::from_secs(6))
        );
        assert_eq!(
            image_step(PullPolicy::Always, false, failed(1, 10)),
            ImageStep::Pull
        );
        assert_eq!(
            image_step(PullPolicy::IfNotPresent, false, failed(2, 19)),
            ImageStep::BackOff(Duration::from_secs(1))
        );
    }
}
