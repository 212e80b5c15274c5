//! `vaultline check`: the whole repository against the catalog, like
//! restic's. Every live pack is checked present with its recorded size and
//! every snapshot's manifest re-hashed; `--read-data-subset` also reads back
//! and re-hashes that share of the packs, chosen at random. A damaged pack
//! marks every snapshot that needs it corrupt.

use crate::context::catalog;
use crate::output::{human_bytes, print_json};
use anyhow::{Context, Result, bail};
use futures::StreamExt;
use std::process::ExitCode;
use vaultline_catalog::SnapshotStatus;
use vaultline_runtime::Config;
use vaultline_storage::ObjectKey;

/// Flags of `check`.
#[derive(clap::Args, Debug)]
pub struct CheckArgs {
    /// Also read back and re-hash this share of the packs, chosen at
    /// random: `10%`, or `1/5` (the first fifth of a random order).
    #[arg(long)]
    read_data_subset: Option<String>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// Packs checked at once.
const PARALLEL: usize = 8;

pub(crate) async fn run(config: &Config, args: CheckArgs) -> Result<ExitCode> {
    let share = args
        .read_data_subset
        .as_deref()
        .map(parse_share)
        .transpose()?
        .unwrap_or(0.0);
    let catalog = catalog(config).await?;
    let repository = vaultline_runtime::deps::open_repository(&config.repository, None).await?;
    let mut packs = catalog.packs_due(i64::MAX).await?;
    // A random order: each id XOR one random key, sorted.
    let mut key = [0u8; 32];
    getrandom::fill(&mut key).context("the OS random source")?;
    packs.sort_by_key(|p| std::array::from_fn::<u8, 32, _>(|i| p.id.0[i] ^ key[i]));
    let read_back = (packs.len() as f64 * share).ceil() as usize;
    let checked: Vec<_> = futures::stream::iter(packs.iter().enumerate())
        .map(|(at, pack)| {
            let repository = &repository;
            async move {
                let rehash = at < read_back;
                let problem = vaultline_verifier::check_pack(
                    repository,
                    &pack.tenant,
                    pack.id,
                    pack.size,
                    rehash,
                )
                .await?;
                Ok::<_, vaultline_runtime::StageError>((pack, rehash, problem))
            }
        })
        .buffer_unordered(PARALLEL)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<_, _>>()?;
    let mut problems = Vec::new();
    let mut read_bytes = 0u64;
    for (pack, rehash, problem) in &checked {
        if *rehash {
            read_bytes += pack.size;
        }
        let Some(problem) = problem else { continue };
        let needing = catalog.snapshots_needing(&pack.tenant, &pack.id).await?;
        for (snapshot, _) in &needing {
            catalog
                .finish_snapshot(
                    &pack.tenant,
                    snapshot,
                    SnapshotStatus::Corrupt,
                    Some(&format!("check: {problem}")),
                )
                .await?;
        }
        let names: Vec<String> = needing.iter().map(|(s, _)| s.to_string()).collect();
        problems.push(format!(
            "{}: {problem} (needed by {})",
            pack.tenant,
            if names.is_empty() {
                "no snapshot".into()
            } else {
                names.join(", ")
            }
        ));
    }
    let mut manifests = 0u64;
    for row in catalog.snapshots(None, None).await? {
        if !matches!(
            row.status,
            SnapshotStatus::Stored | SnapshotStatus::Verified
        ) {
            continue;
        }
        manifests += 1;
        let key = ObjectKey::manifest(&row.tenant, &row.id);
        let problem = match repository.digest(&key).await {
            Ok((digest, _))
                if row.manifest_digest.as_deref() == Some(hex::encode(digest).as_str()) =>
            {
                None
            }
            Ok(_) => Some("manifest does not match its recorded digest"),
            Err(vaultline_storage::Error::NotFound { .. }) => Some("manifest is missing"),
            Err(e) => return Err(e.into()),
        };
        if let Some(problem) = problem {
            catalog
                .finish_snapshot(
                    &row.tenant,
                    &row.id,
                    SnapshotStatus::Corrupt,
                    Some(&format!("check: {problem}")),
                )
                .await?;
            problems.push(format!("{}: snapshot {}: {problem}", row.tenant, row.id));
        }
    }
    if args.json {
        print_json(&serde_json::json!({
            "packs": checked.len(),
            "read_back": read_back,
            "read_bytes": read_bytes,
            "manifests": manifests,
            "problems": problems,
        }))?;
    } else {
        println!(
            "checked {} packs ({read_back} read back, {}) and {manifests} manifests",
            checked.len(),
            human_bytes(read_bytes as i64)
        );
        for problem in &problems {
            println!("  {problem}");
        }
        if problems.is_empty() {
            println!("no errors");
        }
    }
    Ok(if problems.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// `10%` or `1/5` as a share in 0..=1.
fn parse_share(text: &str) -> Result<f64> {
    let share = if let Some(percent) = text.strip_suffix('%') {
        percent.trim().parse::<f64>().ok().map(|p| p / 100.0)
    } else if let Some((n, t)) = text.split_once('/') {
        match (n.trim().parse::<f64>(), t.trim().parse::<f64>()) {
            (Ok(n), Ok(t)) if t > 0.0 => Some(n / t),
            _ => None,
        }
    } else {
        None
    };
    match share {
        Some(share) if (0.0..=1.0).contains(&share) => Ok(share),
        _ => bail!("--read-data-subset {text:?}: give a share such as 10% or 1/5"),
    }
}

#[cfg(test)]
mod tests {
    use super::parse_share;

    #[test]
    fn shares_read_as_percent_or_fraction() {
        assert_eq!(parse_share("10%").unwrap(), 0.1);
        assert_eq!(parse_share("100%").unwrap(), 1.0);
        assert_eq!(parse_share("1/5").unwrap(), 0.2);
        for bad in ["", "10", "150%", "1/0", "-5%", "a/b"] {
            assert!(parse_share(bad).is_err(), "{bad}");
        }
    }
}
