//! `vaultline pitr timeline`: what a physical postgres source can recover
//! to: its base backups, the WAL archived for it, the gaps in that WAL,
//! and the earliest and latest points a restore reaches.

use crate::context::{catalog, parse_pair};
use crate::output::{human_bytes, print_json, short_time};
use anyhow::Result;
use std::process::ExitCode;
use vaultline_catalog::{BaseBackupRow, WalFileRow};
use vaultline_runtime::Config;
use vaultline_wal::{Base, Lsn, Segment, WalFile, Window};

/// Point-in-time recovery of physical postgres sources.
#[derive(clap::Subcommand, Debug)]
pub enum PitrCommand {
    /// Show the recoverable window: base backups, archived WAL, gaps.
    Timeline(TimelineArgs),
}

/// Flags of `pitr timeline`.
#[derive(clap::Args, Debug)]
pub struct TimelineArgs {
    /// The source, `tenant/source`.
    source: String,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// A source's bases and WAL, and what they recover to.
pub(crate) struct Archive {
    pub(crate) bases: Vec<BaseBackupRow>,
    pub(crate) files: Vec<WalFileRow>,
    pub(crate) window: Window,
    pub(crate) segment_size: u64,
}

/// The WAL segment size of PostgreSQL unless a base says otherwise.
const DEFAULT_SEGMENT_SIZE: u64 = 16 << 20;

impl Archive {
    /// Reads the bases and files of `tenant`'s `source` and works out the window.
    pub(crate) async fn load(
        catalog: &vaultline_catalog::Catalog,
        tenant: &vaultline_types::Name,
        source: &vaultline_types::Name,
    ) -> Result<Archive> {
        let bases = catalog.base_backups(tenant, source).await?;
        let files = catalog.wal_files(tenant, source).await?;
        let segment_size = bases
            .last()
            .and_then(|b| u64::try_from(b.segment_size).ok())
            .filter(|s| s.is_power_of_two())
            .unwrap_or(DEFAULT_SEGMENT_SIZE);
        let window = vaultline_wal::window(
            &bases.iter().map(base).collect::<Vec<_>>(),
            &files
                .iter()
                .filter_map(|f| {
                    Some(Segment {
                        file: WalFile::parse(&f.name).ok()?,
                        closed_at: f.closed_at,
                    })
                })
                .collect::<Vec<_>>(),
            segment_size,
        );
        Ok(Archive {
            bases,
            files,
            window,
            segment_size,
        })
    }
}

fn base(row: &BaseBackupRow) -> Base {
    Base {
        snapshot: row.snapshot.clone(),
        timeline: u32::try_from(row.timeline).unwrap_or_default(),
        start: Lsn(row.start_lsn as u64),
        end: Lsn(row.end_lsn as u64),
        finished_at: row.finished_at,
    }
}

pub(crate) async fn run(config: &Config, command: PitrCommand) -> Result<ExitCode> {
    match command {
        PitrCommand::Timeline(args) => timeline(config, args).await,
    }
}

#[derive(serde::Serialize)]
struct BaseJson<'a> {
    #[serde(flatten)]
    row: &'a BaseBackupRow,
    start: String,
    end: String,
    #[serde(with = "time::serde::rfc3339")]
    recovers_until: time::OffsetDateTime,
    last_segment: Option<String>,
}

#[derive(serde::Serialize)]
struct TimelineJson<'a> {
    #[serde(with = "time::serde::rfc3339::option")]
    earliest: Option<time::OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    latest: Option<time::OffsetDateTime>,
    gaps: Vec<[String; 2]>,
    bases: Vec<BaseJson<'a>>,
    wal_files: usize,
    wal_bytes_stored: i64,
    first_segment: Option<&'a str>,
    last_segment: Option<&'a str>,
}

async fn timeline(config: &Config, args: TimelineArgs) -> Result<ExitCode> {
    let (tenant, source) = parse_pair(&args.source)?;
    let catalog = catalog(config).await?;
    let archive = Archive::load(&catalog, &tenant, &source).await?;
    let segments: Vec<&WalFileRow> = archive
        .files
        .iter()
        .filter(|f| WalFile::parse(&f.name).is_ok_and(|w| w.is_segment()))
        .collect();
    let report = TimelineJson {
        earliest: archive.window.earliest,
        latest: archive.window.latest,
        gaps: archive
            .window
            .gaps
            .iter()
            .map(|(a, b)| [a.to_string(), b.to_string()])
            .collect(),
        bases: archive
            .bases
            .iter()
            .zip(&archive.window.reach)
            .map(|(row, reach)| BaseJson {
                row,
                start: Lsn(row.start_lsn as u64).to_string(),
                end: Lsn(row.end_lsn as u64).to_string(),
                recovers_until: reach.until,
                last_segment: reach.last_segment.as_ref().map(ToString::to_string),
            })
            .collect(),
        wal_files: archive.files.len(),
        wal_bytes_stored: archive.files.iter().map(|f| f.stored_size).sum(),
        first_segment: segments.first().map(|f| f.name.as_str()),
        last_segment: segments.last().map(|f| f.name.as_str()),
    };
    if args.json {
        print_json(&report)?;
        return Ok(ExitCode::SUCCESS);
    }
    println!("{tenant}/{source}");
    match (report.earliest, report.latest) {
        (Some(earliest), Some(latest)) => println!(
            "recoverable from {} to {} (UTC)",
            short_time(earliest),
            short_time(latest)
        ),
        _ => println!("nothing to recover yet: no stored base backup"),
    }
    println!(
        "WAL: {} files, {} stored, segments {} to {} ({} each)",
        report.wal_files,
        human_bytes(report.wal_bytes_stored),
        report.first_segment.unwrap_or("-"),
        report.last_segment.unwrap_or("-"),
        human_bytes(archive.segment_size as i64),
    );
    if report.gaps.is_empty() {
        println!("gaps: none");
    } else {
        for [first, last] in &report.gaps {
            println!("GAP: {first} to {last} missing; no recovery crosses it");
        }
    }
    println!(
        "{:<28} {:<8} {:<19} {:>3} {:>12} {:>12}  recovers until",
        "base backup", "status", "finished", "tli", "start", "end"
    );
    for base in &report.bases {
        println!(
            "{:<28} {:<8} {:<19} {:>3} {:>12} {:>12}  {}",
            base.row.snapshot,
            base.row.status,
            short_time(base.row.finished_at),
            base.row.timeline,
            base.start,
            base.end,
            short_time(base.recovers_until),
        );
    }
    Ok(ExitCode::SUCCESS)
}
