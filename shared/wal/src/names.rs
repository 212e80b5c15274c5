//! WAL file names and LSNs, as PostgreSQL writes them.
//!
//! A segment's name is its timeline and its number, 8 hex digits each for
//! the timeline, the "log" and the segment within it: with 16 MiB segments
//! 000000010000000A000000FF is followed by 000000010000000B00000000.

use crate::{Error, Result};

/// A log sequence number: a byte position in the WAL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Lsn(pub u64);

impl Lsn {
    /// Parses `16/B374D848`.
    ///
    /// # Errors
    /// [`Error::Lsn`] for anything else.
    pub fn parse(text: &str) -> Result<Lsn> {
        let bad = || Error::Lsn(text.to_owned());
        let (high, low) = text.trim().split_once('/').ok_or_else(bad)?;
        let part = |p: &str| {
            (!p.is_empty() && p.len() <= 8)
                .then(|| u32::from_str_radix(p, 16).ok())
                .flatten()
                .ok_or_else(bad)
        };
        Ok(Lsn((u64::from(part(high)?) << 32) | u64::from(part(low)?)))
    }

    /// The number of the segment this position is in.
    pub fn segment(self, segment_size: u64) -> u64 {
        self.0 / segment_size
    }
}

impl std::fmt::Display for Lsn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

/// A file PostgreSQL's archive_command is given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WalFile {
    /// A full segment of the WAL.
    Segment { timeline: u32, log: u32, seg: u32 },
    /// The last, partial segment of a timeline a standby was promoted from.
    Partial { timeline: u32, log: u32, seg: u32 },
    /// `00000002.history`: how a timeline branched off its parent.
    History { timeline: u32 },
    /// `…​.00000028.backup`: the label of a base backup, written at its end.
    BackupLabel {
        timeline: u32,
        log: u32,
        seg: u32,
        offset: u32,
    },
}

fn hex8(text: &str) -> Option<u32> {
    (text.len() == 8 && text.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| u32::from_str_radix(text, 16).ok())
        .flatten()
}

fn segment_parts(text: &str) -> Option<(u32, u32, u32)> {
    if text.len() != 24 || !text.is_char_boundary(8) || !text.is_char_boundary(16) {
        return None;
    }
    Some((hex8(&text[..8])?, hex8(&text[8..16])?, hex8(&text[16..])?))
}

impl WalFile {
    /// Parses a file name (no directory).
    ///
    /// # Errors
    /// [`Error::Name`] for a name PostgreSQL does not archive; such a name
    /// never reaches an object key.
    pub fn parse(name: &str) -> Result<WalFile> {
        let bad = || Error::Name(name.to_owned());
        if let Some(timeline) = name.strip_suffix(".history") {
            return hex8(timeline)
                .map(|timeline| WalFile::History { timeline })
                .ok_or_else(bad);
        }
        if let Some(segment) = name.strip_suffix(".partial") {
            let (timeline, log, seg) = segment_parts(segment).ok_or_else(bad)?;
            return Ok(WalFile::Partial { timeline, log, seg });
        }
        if let Some(rest) = name.strip_suffix(".backup") {
            let (segment, offset) = rest.split_once('.').ok_or_else(bad)?;
            let (timeline, log, seg) = segment_parts(segment).ok_or_else(bad)?;
            let offset = hex8(offset).ok_or_else(bad)?;
            return Ok(WalFile::BackupLabel {
                timeline,
                log,
                seg,
                offset,
            });
        }
        let (timeline, log, seg) = segment_parts(name).ok_or_else(bad)?;
        Ok(WalFile::Segment { timeline, log, seg })
    }

    /// The segment of `lsn` on `timeline`.
    pub fn segment_of(timeline: u32, lsn: Lsn, segment_size: u64) -> WalFile {
        let number = lsn.segment(segment_size);
        let per_log = 0x1_0000_0000 / segment_size;
        WalFile::Segment {
            timeline,
            log: (number / per_log) as u32,
            seg: (number % per_log) as u32,
        }
    }

    /// The timeline the file belongs to.
    pub fn timeline(&self) -> u32 {
        match *self {
            WalFile::Segment { timeline, .. }
            | WalFile::Partial { timeline, .. }
            | WalFile::History { timeline }
            | WalFile::BackupLabel { timeline, .. } => timeline,
        }
    }

    /// The segment's number counted from the start of the WAL (segments
    /// of `segment_size` bytes); none for a history file.
    pub fn number(&self, segment_size: u64) -> Option<u64> {
        let per_log = 0x1_0000_0000 / segment_size;
        match *self {
            WalFile::Segment { log, seg, .. }
            | WalFile::Partial { log, seg, .. }
            | WalFile::BackupLabel { log, seg, .. } => {
                Some(u64::from(log) * per_log + u64::from(seg))
            }
            WalFile::History { .. } => None,
        }
    }

    /// Whether this is a full segment (what recovery replays in order).
    pub fn is_segment(&self) -> bool {
        matches!(self, WalFile::Segment { .. })
    }
}

impl std::fmt::Display for WalFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WalFile::Segment { timeline, log, seg } => {
                write!(f, "{timeline:08X}{log:08X}{seg:08X}")
            }
            WalFile::Partial { timeline, log, seg } => {
                write!(f, "{timeline:08X}{log:08X}{seg:08X}.partial")
            }
            WalFile::History { timeline } => write!(f, "{timeline:08X}.history"),
            WalFile::BackupLabel {
                timeline,
                log,
                seg,
                offset,
            } => write!(f, "{timeline:08X}{log:08X}{seg:08X}.{offset:08X}.backup"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_others_are_refused() {
        for name in [
            "000000010000000A000000FF",
            "00000002.history",
            "000000010000000000000002.00000028.backup",
            "000000030000000000000010.partial",
        ] {
            assert_eq!(WalFile::parse(name).unwrap().to_string(), name);
        }
        for bad in [
            "",
            "../00000001000000000000000",
            "00000001000000000000000G",
            "0000000100000000000000021",
            "00000002.history.gz",
            "000000010000000000000002.backup",
            "x.history",
            "00000001/0000000000000002",
        ] {
            assert!(WalFile::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn segments_count_across_logs() {
        let size = 16 << 20;
        let last = WalFile::parse("000000010000000A000000FF").unwrap();
        let next = WalFile::parse("000000010000000B00000000").unwrap();
        assert_eq!(last.number(size).unwrap() + 1, next.number(size).unwrap());
        let lsn = Lsn::parse("B/00000028").unwrap();
        assert_eq!(WalFile::segment_of(1, lsn, size), next);
        assert_eq!(lsn.to_string(), "B/28");
        // 1 GiB segments: four to a log.
        let big = WalFile::segment_of(2, Lsn::parse("1/C0000000").unwrap(), 1 << 30);
        assert_eq!(big.to_string(), "000000020000000100000003");
    }

    #[test]
    fn lsns_parse_as_postgres_writes_them() {
        assert_eq!(Lsn::parse("16/B374D848").unwrap().0, 0x16_B374_D848);
        assert_eq!(Lsn::parse("0/0").unwrap(), Lsn(0));
        for bad in ["", "16", "/1", "1/", "1/2/3", "g/1", "123456789/0"] {
            assert!(Lsn::parse(bad).is_err(), "{bad}");
        }
    }
}
