//! Which points in time a set of base backups and archived segments can
//! recover to. A base backup taken with its own WAL (pg_basebackup -X fetch)
//! is consistent at its end; from there recovery replays archived segments
//! one after the other on the base's timeline, and stops at the first one
//! missing. So each base reaches as far as the unbroken run of segments
//! that starts with its own first segment, and a missing segment is a gap
//! no recovery crosses.

use crate::{Lsn, WalFile};
use std::collections::BTreeMap;
use time::OffsetDateTime;

/// A base backup, as the window needs it.
#[derive(Debug, Clone)]
pub struct Base {
    pub snapshot: String,
    pub timeline: u32,
    pub start: Lsn,
    pub end: Lsn,
    pub finished_at: OffsetDateTime,
}

/// An archived full segment and when PostgreSQL finished writing it.
#[derive(Debug, Clone)]
pub struct Segment {
    pub file: WalFile,
    pub closed_at: OffsetDateTime,
}

/// How far one base backup recovers.
#[derive(Debug, Clone)]
pub struct Reach {
    pub snapshot: String,
    /// The last segment of the unbroken run from the base's first one.
    pub last_segment: Option<WalFile>,
    /// Where that run ends: the first position of the first segment not
    /// archived after it (none without a run).
    pub segments_end: Option<Lsn>,
    /// The latest time it recovers to: that segment's, or the base's end.
    pub until: OffsetDateTime,
}

/// The recoverable window.
#[derive(Debug, Clone, Default)]
pub struct Window {
    /// The end of the earliest base backup.
    pub earliest: Option<OffsetDateTime>,
    /// The furthest any base reaches.
    pub latest: Option<OffsetDateTime>,
    /// Runs of missing segments, first and last, between archived ones.
    pub gaps: Vec<(WalFile, WalFile)>,
    /// Each base, oldest first.
    pub reach: Vec<Reach>,
}

fn segment(timeline: u32, number: u64, segment_size: u64) -> WalFile {
    WalFile::segment_of(timeline, Lsn(number * segment_size), segment_size)
}

/// The window of `bases` over `segments` (full segments only are looked at).
pub fn window(bases: &[Base], segments: &[Segment], segment_size: u64) -> Window {
    let mut by_timeline: BTreeMap<u32, BTreeMap<u64, OffsetDateTime>> = BTreeMap::new();
    for s in segments.iter().filter(|s| s.file.is_segment()) {
        if let Some(number) = s.file.number(segment_size) {
            by_timeline
                .entry(s.file.timeline())
                .or_default()
                .insert(number, s.closed_at);
        }
    }
    let mut gaps = Vec::new();
    for (&timeline, numbers) in &by_timeline {
        let mut previous: Option<u64> = None;
        for &number in numbers.keys() {
            if let Some(previous) = previous
                && number > previous + 1
            {
                gaps.push((
                    segment(timeline, previous + 1, segment_size),
                    segment(timeline, number - 1, segment_size),
                ));
            }
            previous = Some(number);
        }
    }
    let mut bases: Vec<&Base> = bases.iter().collect();
    bases.sort_by_key(|b| b.finished_at);
    let reach: Vec<Reach> = bases
        .iter()
        .map(|base| {
            let mut until = base.finished_at;
            let mut last_segment = None;
            if let Some(numbers) = by_timeline.get(&base.timeline) {
                let mut number = base.start.segment(segment_size);
                while let Some(&closed_at) = numbers.get(&number) {
                    until = until.max(closed_at);
                    last_segment = Some(segment(base.timeline, number, segment_size));
                    number += 1;
                }
            }
            Reach {
                snapshot: base.snapshot.clone(),
                segments_end: last_segment
                    .as_ref()
                    .and_then(|s| s.number(segment_size))
                    .map(|n| Lsn((n + 1) * segment_size)),
                last_segment,
                until,
            }
        })
        .collect();
    Window {
        earliest: bases.first().map(|b| b.finished_at),
        latest: reach.iter().map(|r| r.until).max(),
        gaps,
        reach,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MB16: u64 = 16 << 20;

    fn at(minute: i64) -> OffsetDateTime {
        OffsetDateTime::UNIX_EPOCH + time::Duration::minutes(minute)
    }

    fn seg(number: u64, minute: i64) -> Segment {
        Segment {
            file: segment(1, number, MB16),
            closed_at: at(minute),
        }
    }

    fn base(name: &str, start_segment: u64, minute: i64) -> Base {
        Base {
            snapshot: name.into(),
            timeline: 1,
            start: Lsn(start_segment * MB16 + 40),
            end: Lsn(start_segment * MB16 + 400),
            finished_at: at(minute),
        }
    }

    #[test]
    fn a_missing_segment_is_a_gap_no_base_recovers_across() {
        let segments = [seg(2, 1), seg(3, 2), seg(4, 3), seg(6, 5), seg(7, 6)];
        let bases = [base("b1", 2, 1), base("b2", 6, 5)];
        let w = window(&bases, &segments, MB16);
        assert_eq!(w.earliest, Some(at(1)));
        assert_eq!(w.latest, Some(at(6)));
        assert_eq!(w.gaps.len(), 1);
        assert_eq!(w.gaps[0].0.to_string(), "000000010000000000000005");
        assert_eq!(w.gaps[0].1.to_string(), "000000010000000000000005");
        assert_eq!(w.reach[0].until, at(3));
        assert_eq!(
            w.reach[0].last_segment.as_ref().map(ToString::to_string),
            Some("000000010000000000000004".into())
        );
        assert_eq!(w.reach[0].segments_end, Some(Lsn(5 * MB16)));
        assert_eq!(w.reach[1].until, at(6));
    }

    #[test]
    fn a_base_without_archived_wal_recovers_to_its_own_end() {
        let w = window(&[base("b1", 9, 4)], &[seg(2, 1)], MB16);
        assert_eq!(w.latest, Some(at(4)));
        assert!(w.reach[0].last_segment.is_none() && w.reach[0].segments_end.is_none());
        assert!(w.gaps.is_empty());
        assert!(window(&[], &[], MB16).earliest.is_none());
    }
}
