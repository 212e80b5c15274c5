//! `vaultline ls`: the entries of a snapshot, read from its manifest as a
//! stream (nothing is restored), with or without a catalog.

use crate::access::KeyFlags;
use crate::output::short_time;
use anyhow::Result;
use std::io::Write;
use std::process::ExitCode;
use vaultline_format::manifest::{Entry, EntryKind};
use vaultline_runtime::Config;
use vaultline_types::SnapshotId;

/// Flags of `ls`.
#[derive(clap::Args, Debug)]
pub struct LsArgs {
    /// Snapshot id.
    snapshot: String,
    /// Only this path and what is under it.
    path: Option<String>,
    /// Type, permissions, owner, size and modification time, as `ls -l` shows them.
    #[arg(long)]
    long: bool,
    /// One JSON object per entry (one per line).
    #[arg(long, conflicts_with = "long")]
    json: bool,
    #[command(flatten)]
    keys: KeyFlags,
}

pub(crate) async fn run(config: &Config, args: LsArgs) -> Result<ExitCode> {
    let snapshot = SnapshotId::parse(&args.snapshot)?;
    let repository = args.keys.repository(config).await?;
    let access = args
        .keys
        .for_snapshot(config, &repository, &snapshot)
        .await?;
    let select = args
        .path
        .as_deref()
        .map(|p| p.trim_matches('/').as_bytes().to_vec())
        .filter(|p| !p.is_empty());
    let (long, json) = (args.long, args.json);
    let mut out = std::io::BufWriter::new(std::io::stdout());
    // The walk runs on a blocking thread; it counts what it printed here.
    let printed = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let count = printed.clone();
    vaultline_restore::each_entry(
        &repository,
        &access.tenant,
        &snapshot,
        &access.keyring,
        move |entry| {
            if let Some(select) = &select
                && !(entry.path == *select
                    || (entry.path.starts_with(select)
                        && entry.path.get(select.len()) == Some(&b'/')))
            {
                return Ok(());
            }
            count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            match (json, long) {
                (true, _) => {
                    serde_json::to_writer(&mut out, &as_json(entry))?;
                    out.write_all(b"\n")
                }
                (false, true) => writeln!(out, "{}", long_line(entry)),
                (false, false) => writeln!(out, "{}", String::from_utf8_lossy(&entry.path)),
            }
            // The buffer is flushed when the walk drops it, at the end.
        },
    )
    .await?;
    if printed.load(std::sync::atomic::Ordering::Relaxed) == 0 && args.path.is_some() {
        anyhow::bail!(
            "snapshot {snapshot} has no entry {:?}",
            args.path.unwrap_or_default()
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn kind_name(kind: EntryKind) -> &'static str {
    match kind {
        EntryKind::File => "file",
        EntryKind::Dir => "dir",
        EntryKind::Symlink => "symlink",
        EntryKind::Hardlink => "hardlink",
        EntryKind::Fifo => "fifo",
        EntryKind::CharDevice => "chardev",
        EntryKind::BlockDevice => "blockdev",
        EntryKind::Socket => "socket",
    }
}

fn as_json(entry: &Entry) -> serde_json::Value {
    serde_json::json!({
        "path": String::from_utf8_lossy(&entry.path),
        "type": kind_name(entry.kind),
        "mode": entry.mode,
        "size": entry.size,
        "mtime": entry.mtime,
        "uid": entry.owner.as_ref().map(|o| o.uid),
        "gid": entry.owner.as_ref().map(|o| o.gid),
        "user": entry.owner.as_ref().and_then(|o| o.user.clone()),
        "group": entry.owner.as_ref().and_then(|o| o.group.clone()),
        "target": entry.target.as_ref().map(|t| String::from_utf8_lossy(t).into_owned()),
        "links": entry.nlink.max(1),
    })
}

/// `-rwxr-x---  alice/staff  1048576  2026-12-05 12:00:00  path -> target`
fn long_line(entry: &Entry) -> String {
    let owner = match &entry.owner {
        Some(o) => format!(
            "{}/{}",
            o.user.clone().unwrap_or_else(|| o.uid.to_string()),
            o.group.clone().unwrap_or_else(|| o.gid.to_string())
        ),
        None => "-".into(),
    };
    let when = time::OffsetDateTime::from_unix_timestamp(entry.mtime)
        .map(short_time)
        .unwrap_or_default();
    let mut line = format!(
        "{} {:>17} {:>12}  {when}  {}",
        mode_string(entry.kind, entry.mode),
        owner,
        entry.size,
        String::from_utf8_lossy(&entry.path)
    );
    if let Some(target) = &entry.target {
        let arrow = if entry.kind == EntryKind::Hardlink {
            "=>"
        } else {
            "->"
        };
        line.push_str(&format!(" {arrow} {}", String::from_utf8_lossy(target)));
    }
    line
}

/// `drwxr-sr-x` from a kind and permission bits.
fn mode_string(kind: EntryKind, mode: u32) -> String {
    let kind = match kind {
        EntryKind::File | EntryKind::Hardlink => '-',
        EntryKind::Dir => 'd',
        EntryKind::Symlink => 'l',
        EntryKind::Fifo => 'p',
        EntryKind::CharDevice => 'c',
        EntryKind::BlockDevice => 'b',
        EntryKind::Socket => 's',
    };
    let bit = |mask: u32, c: char| if mode & mask != 0 { c } else { '-' };
    let special = |exec: bool, set: bool, on: char, off: char| match (exec, set) {
        (true, true) => on,
        (false, true) => off,
        (true, false) => 'x',
        (false, false) => '-',
    };
    [
        kind,
        bit(0o400, 'r'),
        bit(0o200, 'w'),
        special(mode & 0o100 != 0, mode & 0o4000 != 0, 's', 'S'),
        bit(0o040, 'r'),
        bit(0o020, 'w'),
        special(mode & 0o010 != 0, mode & 0o2000 != 0, 's', 'S'),
        bit(0o004, 'r'),
        bit(0o002, 'w'),
        special(mode & 0o001 != 0, mode & 0o1000 != 0, 't', 'T'),
    ]
    .into_iter()
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_read_as_ls_prints_them() {
        assert_eq!(mode_string(EntryKind::Dir, 0o755), "drwxr-xr-x");
        assert_eq!(mode_string(EntryKind::File, 0o4750), "-rwsr-x---");
        assert_eq!(mode_string(EntryKind::Dir, 0o2770), "drwxrws---");
        assert_eq!(mode_string(EntryKind::Dir, 0o1777), "drwxrwxrwt");
        assert_eq!(mode_string(EntryKind::File, 0o6644), "-rwSr-Sr--");
        assert_eq!(mode_string(EntryKind::Symlink, 0o777), "lrwxrwxrwx");
    }
}
