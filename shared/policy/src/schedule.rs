//! When a schedule's slots begin: cron expressions read in an IANA time zone
//! (croner over jiff's bundled time-zone database), or fixed intervals.

use croner::Cron;
use jiff::Timestamp;
use jiff::tz::TimeZone;
use std::str::FromStr;

/// How a schedule repeats, as stored. [`Cadence`] turns it into slot times.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScheduleSpec {
    /// A cron expression (5 fields, or 6 with seconds) read in an IANA time zone.
    Cron {
        expression: String,
        timezone: String,
    },
    /// Every N seconds; slots start at multiples of N since the unix epoch.
    Every { seconds: i64 },
}

/// A schedule that does not make slots: one sentence on what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct CadenceError(String);

/// A parsed schedule.
#[derive(Debug, Clone)]
pub enum Cadence {
    Cron { cron: Box<Cron>, zone: TimeZone },
    Every { seconds: i64 },
}

impl Cadence {
    /// Parses a stored or user-given schedule; the error says what is wrong.
    ///
    /// # Errors
    /// An invalid cron expression, unknown time zone or non-positive interval.
    pub fn parse(spec: &ScheduleSpec) -> Result<Cadence, CadenceError> {
        match spec {
            ScheduleSpec::Cron {
                expression,
                timezone,
            } => {
                let cron = Cron::from_str(expression).map_err(|e| {
                    CadenceError(format!("invalid cron expression {expression:?}: {e}"))
                })?;
                let zone = TimeZone::get(timezone).map_err(|_| {
                    CadenceError(format!(
                        "unknown time zone {timezone:?} (use an IANA name such as Europe/Paris)"
                    ))
                })?;
                let cadence = Cadence::Cron {
                    cron: Box::new(cron),
                    zone,
                };
                // A pattern that can never match (30 February) is refused now, not at 3 a.m.
                if cadence.next_after(Timestamp::now().as_second()).is_none() {
                    return Err(CadenceError(format!(
                        "cron expression {expression:?} never fires"
                    )));
                }
                Ok(cadence)
            }
            ScheduleSpec::Every { seconds } if *seconds >= 1 => {
                Ok(Cadence::Every { seconds: *seconds })
            }
            ScheduleSpec::Every { .. } => Err(CadenceError(
                "the interval must be at least one second".into(),
            )),
        }
    }

    /// The start (unix seconds) of the latest slot at or before `now`.
    pub fn latest_at_or_before(&self, now: i64) -> Option<i64> {
        match self {
            Cadence::Every { seconds } => Some(now.div_euclid(*seconds) * seconds),
            Cadence::Cron { cron, zone } => {
                let at = Timestamp::from_second(now).ok()?.to_zoned(zone.clone());
                let previous = cron.find_previous_occurrence(&at, true).ok()?;
                Some(previous.timestamp().as_second())
            }
        }
    }

    /// The length of the slot running at `now` (for a cron, the gap between
    /// the slot that began last and the next): what "missed" is measured in.
    pub fn interval_at(&self, now: i64) -> Option<i64> {
        let start = self.latest_at_or_before(now)?;
        Some(self.next_after(start)? - start)
    }

    /// The start (unix seconds) of the first slot after `after`.
    pub fn next_after(&self, after: i64) -> Option<i64> {
        match self {
            Cadence::Every { seconds } => Some((after.div_euclid(*seconds) + 1) * seconds),
            Cadence::Cron { cron, zone } => {
                let at = Timestamp::from_second(after).ok()?.to_zoned(zone.clone());
                let next = cron.find_next_occurrence(&at, false).ok()?;
                Some(next.timestamp().as_second())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cron(expression: &str, timezone: &str) -> Cadence {
        Cadence::parse(&ScheduleSpec::Cron {
            expression: expression.into(),
            timezone: timezone.into(),
        })
        .expect("valid")
    }

    fn unix(text: &str) -> i64 {
        text.parse::<Timestamp>().expect("timestamp").as_second()
    }

    #[test]
    fn the_interval_is_the_running_slot_length() {
        let hourly = Cadence::Every { seconds: 3600 };
        assert_eq!(hourly.interval_at(unix("2026-01-10T12:34:00Z")), Some(3600));
        // Weekdays at 01:00: Friday's slot runs until Monday's.
        let weekdays = cron("0 1 * * 1-5", "UTC");
        assert_eq!(
            weekdays.interval_at(unix("2026-01-09T12:00:00Z")),
            Some(3 * 86_400)
        );
        assert_eq!(
            weekdays.interval_at(unix("2026-01-13T12:00:00Z")),
            Some(86_400)
        );
    }

    #[test]
    fn cron_slots_follow_the_time_zone_including_daylight_saving() {
        // 02:30 every day in Paris: 01:30 UTC in winter, 00:30 UTC in summer.
        let daily = cron("30 2 * * *", "Europe/Paris");
        assert_eq!(
            daily.next_after(unix("2026-01-10T12:00:00Z")),
            Some(unix("2026-01-11T01:30:00Z"))
        );
        assert_eq!(
            daily.next_after(unix("2026-07-10T12:00:00Z")),
            Some(unix("2026-07-11T00:30:00Z"))
        );
        // On 29 March 2026 02:30 does not exist in Paris; it still fires once that day.
        let spring = daily
            .next_after(unix("2026-03-28T12:00:00Z"))
            .expect("fires");
        assert!(
            (unix("2026-03-29T00:00:00Z")..unix("2026-03-30T00:00:00Z")).contains(&spring),
            "{spring}"
        );
        // The latest slot at or before an instant is the one that began then or earlier.
        assert_eq!(
            daily.latest_at_or_before(unix("2026-01-11T01:30:00Z")),
            Some(unix("2026-01-11T01:30:00Z"))
        );
        assert_eq!(
            daily.latest_at_or_before(unix("2026-01-11T01:29:59Z")),
            Some(unix("2026-01-10T01:30:00Z"))
        );
    }

    #[test]
    fn seconds_field_and_intervals() {
        let every_two = cron("*/2 * * * * *", "UTC");
        assert_eq!(every_two.latest_at_or_before(1001), Some(1000));
        assert_eq!(every_two.next_after(1000), Some(1002));
        let every = Cadence::parse(&ScheduleSpec::Every { seconds: 10 }).expect("valid");
        assert_eq!(every.latest_at_or_before(1009), Some(1000));
        assert_eq!(every.next_after(1000), Some(1010));
    }

    #[test]
    fn bad_schedules_are_refused_with_the_reason() {
        let bad = |expression: &str, timezone: &str| {
            Cadence::parse(&ScheduleSpec::Cron {
                expression: expression.into(),
                timezone: timezone.into(),
            })
            .expect_err("refused")
            .to_string()
        };
        assert!(bad("61 * * * *", "UTC").contains("invalid cron"));
        assert!(bad("0 3 * * *", "Mars/Olympus").contains("unknown time zone"));
        assert!(bad("0 0 30 2 *", "UTC").contains("never fires"));
        assert!(
            Cadence::parse(&ScheduleSpec::Every { seconds: 0 })
                .expect_err("refused")
                .to_string()
                .contains("at least one second")
        );
    }
}
