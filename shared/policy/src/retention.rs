//! A source's retention policy and its evaluation: pure, so `vaultline
//! retention preview` and the retention stage decide with the same code.
//!
//! Rules, in the order they decide (the first that applies wins):
//! 1. The newest verified snapshot is always kept.
//! 2. `min_age`: a snapshot younger than this is kept.
//! 3. `max_age`: a snapshot older than this is forgotten, whatever keeps it.
//! 4. The keep rules: kept if any of them picks it (all that do are named).
//!    `keep_last` N picks the newest N; `keep_hourly|daily|weekly|monthly|yearly`
//!    N pick the newest snapshot of each of the newest N hours, days, ISO weeks,
//!    months or years (UTC) that have one; `keep_within` D picks every
//!    snapshot taken within D of the newest one (not of now, so a source that
//!    stopped backing up keeps its history).
//! 5. A policy without keep rules keeps what rules 2–3 leave; with keep rules,
//!    a snapshot none of them picks is forgotten.
//!
//! Only verified snapshots are evaluated: one in flight, failed or corrupt is
//! neither kept nor forgotten by the policy.

use serde::{Deserialize, Serialize};
use std::time::Duration;
use time::OffsetDateTime;
use vaultline_types::SnapshotId;

/// A source's retention policy (the `retention` JSON of the source). Durations
/// are written as `90days`, `12h`, `1y`.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_last: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_hourly: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_daily: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_weekly: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_monthly: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_yearly: Option<u32>,
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub keep_within: Option<Duration>,
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub min_age: Option<Duration>,
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub max_age: Option<Duration>,
}

impl Policy {
    /// Whether any keep rule is set.
    pub fn has_keep_rules(&self) -> bool {
        self.keep_last.is_some()
            || self.keep_hourly.is_some()
            || self.keep_daily.is_some()
            || self.keep_weekly.is_some()
            || self.keep_monthly.is_some()
            || self.keep_yearly.is_some()
            || self.keep_within.is_some()
    }

    /// Refuses a policy that could forget a snapshot while the object lock
    /// (`lock`, e.g. 30 days) still holds its objects: GC could not delete
    /// them, and on S3 a delete would only hide them behind a marker.
    ///
    /// # Errors
    /// One sentence saying which rule forgets too early and what to set.
    pub fn check_lock(&self, lock: Duration) -> Result<(), String> {
        let days =
            |d: Duration| humantime::format_duration(Duration::from_secs(d.as_secs())).to_string();
        if let Some(max_age) = self.max_age
            && max_age < lock
        {
            return Err(format!(
                "max-age {} would forget snapshots the object lock keeps for {}: set max-age to at least {}",
                days(max_age),
                days(lock),
                days(lock)
            ));
        }
        if self.has_keep_rules() && self.min_age.unwrap_or_default() < lock {
            return Err(format!(
                "the keep rules may forget snapshots younger than the object lock's {}: add --min-age {} (a snapshot younger than min-age is always kept)",
                days(lock),
                days(lock)
            ));
        }
        Ok(())
    }

    /// The policy as applied under an object lock of `lock`: never forgets
    /// a snapshot younger than the lock, whatever was set before the lock was.
    #[must_use]
    pub fn under_lock(mut self, lock: Option<Duration>) -> Policy {
        if let Some(lock) = lock {
            self.min_age = Some(self.min_age.unwrap_or_default().max(lock));
            self.max_age = self.max_age.map(|max| max.max(lock));
        }
        self
    }
}

/// A verified snapshot the policy is evaluated on.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub id: SnapshotId,
    pub time: OffsetDateTime,
}

/// Keep or forget.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Keep,
    Forget,
}

/// What the policy decided for one snapshot, and why.
#[derive(Debug, Clone, Serialize)]
pub struct Decision {
    pub snapshot: SnapshotId,
    #[serde(with = "time::serde::rfc3339")]
    pub time: OffsetDateTime,
    pub verdict: Verdict,
    /// The rule that decided, e.g. `keep_daily=7 (2026-11-20)` or `max_age=90days`.
    pub rule: String,
}

#[derive(Clone, Copy)]
enum Period {
    Hour,
    Day,
    Week,
    Month,
    Year,
}

impl Period {
    fn bucket(self, t: OffsetDateTime) -> String {
        let t = t.to_offset(time::UtcOffset::UTC);
        match self {
            Period::Hour => format!("{} {:02}h", t.date(), t.hour()),
            Period::Day => t.date().to_string(),
            Period::Week => {
                let (year, week, _) = t.to_iso_week_date();
                format!("{year}-W{week:02}")
            }
            Period::Month => format!("{}-{:02}", t.year(), u8::from(t.month())),
            Period::Year => t.year().to_string(),
        }
    }
}

/// `30days`, `12h`, `90m`, `45s`: the largest whole unit, so rules read as written.
fn human(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0 => "0s".into(),
        _ if s.is_multiple_of(86_400) => format!("{}days", s / 86_400),
        _ if s.is_multiple_of(3600) => format!("{}h", s / 3600),
        _ if s.is_multiple_of(60) => format!("{}m", s / 60),
        _ => format!("{s}s"),
    }
}

/// Decides for every candidate, newest first.
pub fn evaluate(policy: &Policy, candidates: &[Candidate], now: OffsetDateTime) -> Vec<Decision> {
    let mut sorted: Vec<&Candidate> = candidates.iter().collect();
    sorted.sort_by(|a, b| b.time.cmp(&a.time).then_with(|| b.id.cmp(&a.id)));
    let mut kept_by: Vec<Vec<String>> = vec![Vec::new(); sorted.len()];

    if let Some(n) = policy.keep_last {
        for reasons in kept_by.iter_mut().take(n as usize) {
            reasons.push(format!("keep_last={n}"));
        }
    }
    for (name, count, period) in [
        ("keep_hourly", policy.keep_hourly, Period::Hour),
        ("keep_daily", policy.keep_daily, Period::Day),
        ("keep_weekly", policy.keep_weekly, Period::Week),
        ("keep_monthly", policy.keep_monthly, Period::Month),
        ("keep_yearly", policy.keep_yearly, Period::Year),
    ] {
        let Some(n) = count else { continue };
        let mut last: Option<String> = None;
        let mut taken = 0;
        for (i, c) in sorted.iter().enumerate() {
            if taken >= n {
                break;
            }
            let bucket = period.bucket(c.time);
            if last.as_ref() != Some(&bucket) {
                kept_by[i].push(format!("{name}={n} ({bucket})"));
                taken += 1;
                last = Some(bucket);
            }
        }
    }
    if let (Some(within), Some(newest)) = (policy.keep_within, sorted.first()) {
        let since = newest.time - within;
        for (i, c) in sorted.iter().enumerate() {
            if c.time >= since {
                kept_by[i].push(format!("keep_within={}", human(within)));
            }
        }
    }

    sorted
        .iter()
        .zip(kept_by)
        .enumerate()
        .map(|(i, (c, reasons))| {
            let age = now - c.time;
            let (verdict, rule) = if i == 0 {
                (Verdict::Keep, "newest verified snapshot".to_owned())
            } else if let Some(min) = policy.min_age.filter(|min| age < *min) {
                (Verdict::Keep, format!("min_age={}", human(min)))
            } else if let Some(max) = policy.max_age.filter(|max| age > *max) {
                (Verdict::Forget, format!("max_age={}", human(max)))
            } else if !reasons.is_empty() {
                (Verdict::Keep, reasons.join(", "))
            } else if !policy.has_keep_rules() {
                (Verdict::Keep, "no keep rule set".to_owned())
            } else {
                (Verdict::Forget, "no keep rule picks it".to_owned())
            };
            Decision {
                snapshot: c.id.clone(),
                time: c.time,
                verdict,
                rule,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_policy_that_forgets_inside_the_object_lock_is_refused() {
        let lock = Duration::from_secs(30 * 86_400);
        let days = |n: u64| Some(Duration::from_secs(n * 86_400));
        let last3 = Policy {
            keep_last: Some(3),
            ..Policy::default()
        };
        let refused = last3.check_lock(lock).unwrap_err();
        assert!(refused.contains("--min-age 30days"), "{refused}");
        let short_max = Policy {
            max_age: days(7),
            ..Policy::default()
        };
        assert!(
            short_max
                .check_lock(lock)
                .unwrap_err()
                .contains("max-age 7days")
        );
        let safe = Policy {
            keep_last: Some(3),
            min_age: days(30),
            max_age: days(365),
            ..Policy::default()
        };
        assert_eq!(safe.check_lock(lock), Ok(()));
        assert_eq!(
            Policy::default().check_lock(lock),
            Ok(()),
            "no rule forgets nothing"
        );
        let applied = last3.under_lock(Some(lock));
        assert_eq!(applied.min_age, Some(lock));
        assert_eq!(applied.check_lock(lock), Ok(()));
    }

    fn at(text: &str) -> OffsetDateTime {
        OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).expect("time")
    }

    fn history(times: &[&str]) -> Vec<Candidate> {
        times
            .iter()
            .map(|t| Candidate {
                id: SnapshotId::derive(at(t), t),
                time: at(t),
            })
            .collect()
    }

    fn kept(policy: &Policy, times: &[&str], now: &str) -> Vec<String> {
        evaluate(policy, &history(times), at(now))
            .into_iter()
            .filter(|d| d.verdict == Verdict::Keep)
            .map(|d| {
                d.time
                    .format(&time::format_description::well_known::Rfc3339)
                    .expect("format")
            })
            .collect()
    }

    const TIMES: &[&str] = &[
        "2026-11-23T10:00:00Z",
        "2026-11-23T09:30:00Z",
        "2026-11-23T09:00:00Z",
        "2026-11-22T23:00:00Z",
        "2026-11-22T08:00:00Z",
        "2026-11-20T08:00:00Z",
        "2026-11-02T08:00:00Z",
        "2026-10-15T08:00:00Z",
        "2025-12-31T08:00:00Z",
    ];
    const NOW: &str = "2026-11-23T12:00:00Z";

    #[test]
    fn bucket_rules_keep_the_newest_of_each_period() {
        let daily = Policy {
            keep_daily: Some(3),
            ..Policy::default()
        };
        assert_eq!(
            kept(&daily, TIMES, NOW),
            [
                "2026-11-23T10:00:00Z",
                "2026-11-22T23:00:00Z",
                "2026-11-20T08:00:00Z"
            ]
        );
        let monthly = Policy {
            keep_monthly: Some(12),
            ..Policy::default()
        };
        assert_eq!(
            kept(&monthly, TIMES, NOW),
            [
                "2026-11-23T10:00:00Z",
                "2026-10-15T08:00:00Z",
                "2025-12-31T08:00:00Z"
            ]
        );
        let hourly = Policy {
            keep_hourly: Some(2),
            ..Policy::default()
        };
        // 09:30 and 09:00 share an hour: only the newer one counts.
        assert_eq!(
            kept(&hourly, TIMES, NOW),
            ["2026-11-23T10:00:00Z", "2026-11-23T09:30:00Z"]
        );
    }

    #[test]
    fn ages_override_keep_rules_and_the_newest_is_always_kept() {
        let policy = Policy {
            keep_last: Some(100),
            max_age: Some(Duration::from_secs(2 * 86_400)),
            ..Policy::default()
        };
        assert_eq!(
            kept(&policy, TIMES, NOW),
            &TIMES[..5],
            "max_age beats keep_last"
        );
        // Even an expired max_age never forgets the newest verified snapshot.
        assert_eq!(
            kept(&policy, TIMES, "2030-01-01T00:00:00Z"),
            ["2026-11-23T10:00:00Z"]
        );
        let young = Policy {
            keep_last: Some(1),
            min_age: Some(Duration::from_secs(3 * 3600)),
            ..Policy::default()
        };
        // 09:00 is exactly 3h old: not younger than min_age.
        assert_eq!(kept(&young, TIMES, NOW), &TIMES[..2]);
        assert_eq!(kept(&Policy::default(), TIMES, NOW), TIMES);
    }

    /// Around new year 2027: 2026 began on a Thursday, so Monday 2025-12-29
    /// is in ISO week 2026-W01, and 2027-01-01 is still in 2026-W53.
    const NEW_YEAR: &[&str] = &[
        "2027-01-04T08:00:00Z", // 2027-W01
        "2027-01-01T08:00:00Z", // 2026-W53
        "2026-12-31T08:00:00Z", // 2026-W53
        "2026-01-02T08:00:00Z", // 2026-W01
        "2025-12-29T08:00:00Z", // 2026-W01
        "2025-12-28T08:00:00Z", // 2025-W52
    ];

    #[test]
    fn weeks_are_iso_weeks_and_years_are_calendar_years_across_new_year() {
        let weekly = Policy {
            keep_weekly: Some(3),
            ..Policy::default()
        };
        assert_eq!(
            kept(&weekly, NEW_YEAR, "2027-01-05T00:00:00Z"),
            [
                "2027-01-04T08:00:00Z",
                "2027-01-01T08:00:00Z",
                "2026-01-02T08:00:00Z"
            ]
        );
        let yearly = Policy {
            keep_yearly: Some(3),
            ..Policy::default()
        };
        assert_eq!(
            kept(&yearly, NEW_YEAR, "2027-01-05T00:00:00Z"),
            [
                "2027-01-04T08:00:00Z",
                "2026-12-31T08:00:00Z",
                "2025-12-29T08:00:00Z"
            ]
        );
    }

    #[test]
    fn keep_within_counts_back_from_the_newest_snapshot_not_from_now() {
        let within = Policy {
            keep_within: Some(Duration::from_secs(3 * 86_400)),
            ..Policy::default()
        };
        // Exactly three days before the newest is still within.
        let expected = ["2027-01-04T08:00:00Z", "2027-01-01T08:00:00Z"];
        assert_eq!(kept(&within, NEW_YEAR, "2027-01-05T00:00:00Z"), expected);
        // A source that stopped backing up a year ago keeps the same ones.
        assert_eq!(kept(&within, NEW_YEAR, "2028-01-05T00:00:00Z"), expected);
        let decisions = evaluate(&within, &history(NEW_YEAR), at("2027-01-05T00:00:00Z"));
        assert_eq!(decisions[1].rule, "keep_within=3days");
    }
}
