//! The kubelet's image decisions: whether a container start pulls, uses what the node has, or
//! waits, following `imagePullPolicy` and the image pull back-off (10 s doubling to 5 min); and
//! which unused images to remove when the disk fills (the kubelet's image garbage collection).

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

/// When the kubelet removes unused images: its `imageGCHighThresholdPercent` (85),
/// `imageGCLowThresholdPercent` (80) and `imageMinimumGCAge` (2 min) settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ImageGcPolicy {
    /// Disk usage (percent) at or above which images are removed; 100 never removes any.
    pub high_percent: u8,
    /// Disk usage (percent) removal stops at.
    pub low_percent: u8,
    /// An image seen for less than this is kept (it may have been pulled for a container
    /// about to start).
    pub minimum_age: Duration,
}

impl Default for ImageGcPolicy {
    fn default() -> Self {
        ImageGcPolicy {
            high_percent: 85,
            low_percent: 80,
            minimum_age: Duration::from_secs(120),
        }
    }
}

impl ImageGcPolicy {
    /// The policy, or why the thresholds make none (the kubelet's own checks: both at most
    /// 100, the low one below the high one).
    pub fn new(high_percent: u8, low_percent: u8, minimum_age: Duration) -> Result<Self, String> {
        if high_percent > 100 {
            return Err(format!(
                "the image GC high threshold is {high_percent}%: it must be 0 to 100"
            ));
        }
        if low_percent >= high_percent {
            return Err(format!(
                "the image GC low threshold ({low_percent}%) must be below the high threshold ({high_percent}%)"
            ));
        }
        Ok(ImageGcPolicy {
            high_percent,
            low_percent,
            minimum_age,
        })
    }
}

/// One image a node holds, for garbage collection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeImage {
    /// Its identity (every name pointing at one digest is one image).
    pub id: String,
    /// The bytes removing it may free.
    pub size: u64,
    /// A container on the node uses it now.
    pub in_use: bool,
    /// It must stay whatever the disk (imported by hand: no registry can give it back).
    pub pinned: bool,
    /// Time since a container last used it (since first seen, if never).
    pub unused_for: Duration,
    /// Time since the node first saw it.
    pub seen_for: Duration,
}

/// The images to remove, oldest-used first, when the disk (`capacity` bytes, `available` free)
/// is at or above the high threshold: enough to bring it down to the low one, never one in use,
/// pinned, or seen for less than the minimum age. Empty below the threshold.
pub fn images_to_remove(
    images: &[NodeImage],
    capacity: u64,
    available: u64,
    policy: &ImageGcPolicy,
) -> Vec<String> {
    if capacity == 0 || policy.high_percent >= 100 {
        return Vec::new();
    }
    let available = available.min(capacity);
    // Percent used, rounded down as the kubelet computes it: 100 - available * 100 / capacity.
    let used_percent = 100 - (u128::from(available) * 100 / u128::from(capacity)) as u64;
    if used_percent < u64::from(policy.high_percent) {
        return Vec::new();
    }
    let wanted_free = u128::from(capacity) * u128::from(100 - policy.low_percent.min(100)) / 100;
    let to_free = wanted_free.saturating_sub(u128::from(available));
    let mut candidates: Vec<&NodeImage> = images
        .iter()
        .filter(|i| !i.in_use && !i.pinned && i.seen_for >= policy.minimum_age)
        .collect();
    // Longest unused first; the name breaks ties so the choice is the same every time.
    candidates.sort_by(|a, b| b.unused_for.cmp(&a.unused_for).then(a.id.cmp(&b.id)));
    let mut freed: u128 = 0;
    let mut chosen = Vec::new();
    for image in candidates {
        if freed >= to_free {
            break;
        }
        freed += u128::from(image.size);
        chosen.push(image.id.clone());
    }
    chosen
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

    fn image(id: &str, size: u64, unused_secs: u64) -> NodeImage {
        NodeImage {
            id: id.into(),
            size,
            in_use: false,
            pinned: false,
            unused_for: Duration::from_secs(unused_secs),
            seen_for: Duration::from_secs(3600),
        }
    }

    #[test]
    fn images_are_removed_oldest_used_first_down_to_the_low_threshold() {
        let policy = ImageGcPolicy::default();
        let gib = 1u64 << 30;
        let images = vec![
            image("recent", 3 * gib, 60),
            image("old", 2 * gib, 7200),
            image("older", 2 * gib, 9000),
        ];
        // 100 GiB, 10 free: 90 % used; down to 80 % means freeing 10 GiB: all three (7 GiB).
        assert_eq!(
            images_to_remove(&images, 100 * gib, 10 * gib, &policy),
            vec!["older", "old", "recent"]
        );
        // 86 % used: 6 GiB to free; the two oldest give 4, so the recent one goes too.
        assert_eq!(
            images_to_remove(&images, 100 * gib, 14 * gib, &policy),
            vec!["older", "old", "recent"]
        );
        // 84 % used is under the high threshold: nothing goes.
        assert!(images_to_remove(&images, 100 * gib, 16 * gib, &policy).is_empty());
        // 85 % exactly: 5 GiB to free; older (2) + old (2) + recent (3).
        assert_eq!(
            images_to_remove(&images, 100 * gib, 15 * gib, &policy).len(),
            3
        );
        // 81 % to free 1 GiB when the threshold is 81: the oldest alone.
        let low = ImageGcPolicy::new(81, 80, Duration::from_secs(120)).expect("valid");
        assert_eq!(
            images_to_remove(&images, 100 * gib, 19 * gib, &low),
            vec!["older"]
        );
    }

    #[test]
    fn images_in_use_pinned_or_new_are_never_removed() {
        let policy = ImageGcPolicy::new(1, 0, Duration::from_secs(120)).expect("valid");
        let mut used = image("used", 1, 9999);
        used.in_use = true;
        let mut pinned = image("pinned", 1, 9999);
        pinned.pinned = true;
        let mut new = image("new", 1, 9999);
        new.seen_for = Duration::from_secs(30);
        let spare = image("spare", 1, 10);
        let chosen = images_to_remove(&[used, pinned, new, spare], 100, 0, &policy);
        assert_eq!(chosen, vec!["spare"]);
        // 100 % as the high threshold turns collection off; the thresholds are checked.
        let off = ImageGcPolicy::new(100, 80, Duration::ZERO).expect("valid");
        assert!(images_to_remove(&[image("x", 1, 1)], 100, 0, &off).is_empty());
        assert!(ImageGcPolicy::new(80, 80, Duration::ZERO).is_err());
        assert!(ImageGcPolicy::new(101, 80, Duration::ZERO).is_err());
    }
}
