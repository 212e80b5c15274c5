//! `vaultline restore T/S --pitr TIME|latest` (or `--lsn`, `--xid`): the
//! latest base backup before the target, written out as a data directory,
//! set to recover through `vaultline wal-fetch` up to the target and then
//! promote. PostgreSQL does the replay when it is started; this command
//! checks first that the archive reaches the target, so a gap is an error
//! here and not a cluster that quietly stops short.

use crate::cmd::pitr::Archive;
use crate::context::{catalog, parse_pair};
use anyhow::{Context, Result, bail};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;
use time::OffsetDateTime;
use vaultline_catalog::BaseBackupRow;
use vaultline_runtime::Config;
use vaultline_types::{Name, SnapshotId};
use vaultline_wal::{Lsn, WalFile};

/// What to recover to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RecoveryTarget {
    Latest,
    Time(OffsetDateTime),
    Lsn(Lsn),
    Xid(u64),
}

impl RecoveryTarget {
    /// From `--pitr`, `--lsn` or `--xid` (exactly one is given).
    pub(super) fn from_flags(
        pitr: Option<&str>,
        lsn: Option<&str>,
        xid: Option<u64>,
    ) -> Result<Option<RecoveryTarget>> {
        Ok(match (pitr, lsn, xid) {
            (None, None, None) => None,
            (Some("latest"), None, None) => Some(RecoveryTarget::Latest),
            (Some(time), None, None) => Some(RecoveryTarget::Time(
                OffsetDateTime::parse(time, &time::format_description::well_known::Rfc3339)
                    .with_context(|| {
                        format!("--pitr {time:?} is neither `latest` nor an RFC 3339 time like 2026-11-29T10:15:00Z")
                    })?,
            )),
            (None, Some(lsn), None) => Some(RecoveryTarget::Lsn(Lsn::parse(lsn)?)),
            (None, None, Some(xid)) => Some(RecoveryTarget::Xid(xid)),
            _ => bail!("give one recovery target: --pitr, --lsn or --xid"),
        })
    }

    /// The postgresql.conf lines that stop recovery there.
    fn settings(&self) -> Vec<String> {
        match self {
            RecoveryTarget::Latest => vec![],
            RecoveryTarget::Time(t) => vec![format!(
                "recovery_target_time = '{}'",
                t.to_offset(time::UtcOffset::UTC)
                    .format(time::macros::format_description!(
                        "[year]-[month]-[day] [hour]:[minute]:[second].[subsecond digits:6]+00"
                    ))
                    .unwrap_or_default()
            )],
            RecoveryTarget::Lsn(lsn) => vec![format!("recovery_target_lsn = '{lsn}'")],
            RecoveryTarget::Xid(xid) => vec![format!("recovery_target_xid = '{xid}'")],
        }
    }
}

impl std::fmt::Display for RecoveryTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RecoveryTarget::Latest => f.write_str("the end of the archived WAL"),
            RecoveryTarget::Time(t) => write!(f, "{}", crate::output::short_time(*t)),
            RecoveryTarget::Lsn(lsn) => write!(f, "LSN {lsn}"),
            RecoveryTarget::Xid(xid) => write!(f, "transaction {xid}"),
        }
    }
}

/// The latest base the target comes after, and a check that the archived
/// WAL from it reaches the target.
fn choose<'a>(archive: &'a Archive, target: &RecoveryTarget) -> Result<&'a BaseBackupRow> {
    let bases = &archive.bases;
    let before = |base: &&BaseBackupRow| match target {
        RecoveryTarget::Latest => true,
        RecoveryTarget::Time(t) => base.finished_at < *t,
        RecoveryTarget::Lsn(lsn) => base.end_lsn as u64 <= lsn.0,
        RecoveryTarget::Xid(xid) => base.next_xid as u64 <= *xid,
    };
    let Some((index, base)) = bases.iter().enumerate().rev().find(|(_, b)| before(b)) else {
        match bases.first() {
            None => bail!("no stored base backup: take one (vaultline backup) before recovering"),
            Some(first) => bail!(
                "{target} is before the end of the earliest base backup ({}, finished {}): nothing recovers to it",
                first.snapshot,
                crate::output::short_time(first.finished_at)
            ),
        }
    };
    let reach = &archive.window.reach[index];
    let reached = match target {
        RecoveryTarget::Time(t) => reach.until >= *t,
        RecoveryTarget::Lsn(lsn) => {
            reach.segments_end.is_some_and(|end| end > *lsn) || base.end_lsn as u64 >= lsn.0
        }
        RecoveryTarget::Latest | RecoveryTarget::Xid(_) => true,
    };
    if !reached {
        let next = reach
            .segments_end
            .map(|end| {
                WalFile::segment_of(base.timeline as u32, end, archive.segment_size).to_string()
            })
            .unwrap_or_else(|| "the one after the base".into());
        bail!(
            "{target} is past what the archive recovers to from base {} (until {}): segment {next} is not archived. \
             `vaultline pitr timeline` shows the window; the segment being written is archived when it fills or at archive_timeout",
            base.snapshot,
            crate::output::short_time(reach.until)
        );
    }
    Ok(base)
}

/// Words for a shell inside a single-quoted postgresql.conf value.
fn shell_word(text: &str) -> Result<String> {
    if text.contains(['\'', '"', '\\', '$', '`', '\n']) {
        bail!("{text:?} holds quotes or shell characters; restore_command cannot name it safely");
    }
    Ok(format!("\"{text}\""))
}

/// The restore_command recovery runs: this binary, this config.
fn restore_command(config_file: Option<&Path>, pair: &str) -> Result<String> {
    let exe = std::env::current_exe().context("cannot tell where this vaultline binary is")?;
    let mut command = shell_word(&exe.to_string_lossy())?;
    if let Some(file) = config_file {
        let file = file
            .canonicalize()
            .with_context(|| format!("config file {}", file.display()))?;
        command += &format!(" --config {}", shell_word(&file.to_string_lossy())?);
    }
    command += &format!(" wal-fetch %f %p --source {}", shell_word(pair)?);
    Ok(command)
}

/// Writes the base's tar into `dir`, which must be missing or empty.
async fn unpack_base(
    repository: &vaultline_storage::Repository,
    access: &crate::access::Access,
    snapshot: &SnapshotId,
    dir: &Path,
) -> Result<vaultline_restore::Restored> {
    if dir.exists() && std::fs::read_dir(dir)?.next().is_some() {
        bail!(
            "{} is not empty: a data directory is restored into a new or empty one",
            dir.display()
        );
    }
    std::fs::create_dir_all(dir)?;
    // PostgreSQL refuses a data directory others can read.
    std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))?;
    let (reader, mut writer) = std::io::pipe()?;
    let into = dir.to_path_buf();
    let unpacker = std::thread::spawn(move || {
        let mut archive = tar::Archive::new(std::io::BufReader::with_capacity(1 << 20, reader));
        archive.set_preserve_permissions(true);
        archive.set_preserve_mtime(true);
        archive.set_overwrite(false);
        archive.unpack(&into)
    });
    let restored = vaultline_restore::restore(
        repository,
        &access.tenant,
        snapshot,
        &access.keyring,
        None,
        vaultline_restore::Sink::Stream(&mut writer),
    )
    .await;
    let flushed = writer.flush();
    drop(writer);
    let unpacked = unpacker
        .join()
        .map_err(|_| anyhow::anyhow!("the tar reader panicked"))?;
    // The unpacker's error explains a broken pipe on the restore's side.
    unpacked.with_context(|| format!("unpacking base backup {snapshot}"))?;
    flushed?;
    let restored = restored?;
    if restored.source_kind != "postgres-base" {
        bail!(
            "snapshot {snapshot} is a {} backup, not a PostgreSQL base backup",
            restored.source_kind
        );
    }
    Ok(restored)
}

/// A data directory written and set to recover.
pub(crate) struct Prepared {
    pub(crate) base: BaseBackupRow,
    pub(crate) restored: vaultline_restore::Restored,
}

/// Writes the base before `target` into `dir` and sets it to recover to
/// `target` through wal-fetch (run by this binary with `config_file`).
pub(crate) async fn prepare(
    config: &Config,
    config_file: Option<&Path>,
    tenant: &Name,
    source: &Name,
    target: &RecoveryTarget,
    dir: &Path,
    keys: &crate::access::KeyFlags,
) -> Result<Prepared> {
    if keys.repo.is_some() {
        bail!("a point-in-time restore reads the WAL through the catalog; --repo is not supported");
    }
    let catalog = catalog(config).await?;
    let archive = Archive::load(&catalog, tenant, source).await?;
    let base = choose(&archive, target)?.clone();
    let snapshot = SnapshotId::parse(&base.snapshot)?;
    let command = restore_command(config_file, &format!("{tenant}/{source}"))?;
    let repository = keys.repository(config).await?;
    let access = keys.for_snapshot(config, &repository, &snapshot).await?;
    let restored = unpack_base(&repository, &access, &snapshot, dir).await?;
    let mut settings = vec![
        format!(
            "# Added by vaultline restore {tenant}/{source}: recover from base {snapshot} to {target}."
        ),
        format!("restore_command = '{command}'"),
    ];
    settings.extend(target.settings());
    settings.extend([
        "recovery_target_action = 'promote'".to_owned(),
        // A restored copy must not archive into its source's WAL.
        "archive_mode = 'off'".to_owned(),
    ]);
    let mut auto = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(dir.join("postgresql.auto.conf"))?;
    writeln!(auto, "\n{}", settings.join("\n"))?;
    std::fs::write(dir.join("recovery.signal"), b"")?;
    Ok(Prepared { base, restored })
}

/// `restore T/S --pitr …`
pub(super) async fn run(
    config: &Config,
    config_file: Option<&Path>,
    pair: &str,
    target: RecoveryTarget,
    to: Option<PathBuf>,
    keys: &crate::access::KeyFlags,
) -> Result<std::process::ExitCode> {
    let (tenant, source) = parse_pair(pair)?;
    let dir = to.context("a point-in-time restore writes a data directory: give --to DIR")?;
    if dir.as_os_str() == "-" {
        bail!("a point-in-time restore writes a data directory, not a stream: give --to DIR");
    }
    let started = Instant::now();
    let Prepared { base, restored } =
        prepare(config, config_file, &tenant, &source, &target, &dir, keys).await?;
    eprintln!(
        "restored base backup {} ({}, finished {} UTC, WAL {} to {} on timeline {}) to {} in {:.1}s",
        base.snapshot,
        crate::output::human_bytes(restored.bytes as i64),
        crate::output::short_time(base.finished_at),
        Lsn(base.start_lsn as u64),
        Lsn(base.end_lsn as u64),
        base.timeline,
        dir.display(),
        started.elapsed().as_secs_f64()
    );
    eprintln!(
        "when started, PostgreSQL replays the archived WAL (vaultline wal-fetch) to {target}, then promotes; archiving is off in the copy (archive_mode in postgresql.auto.conf)"
    );
    let shown = dir.display();
    if rustix::process::geteuid().is_root() {
        eprintln!(
            "start it as the user that runs PostgreSQL:\n  chown -R postgres:postgres {shown}\n  runuser -u postgres -- pg_ctl -D {shown} -o '-p 5433' -l {shown}/recovery.log start"
        );
    } else {
        eprintln!("start it:\n  pg_ctl -D {shown} -o '-p 5433' -l {shown}/recovery.log start");
    }
    Ok(std::process::ExitCode::SUCCESS)
}
