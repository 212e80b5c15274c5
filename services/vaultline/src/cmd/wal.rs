//! `vaultline wal-push` and `vaultline wal-fetch`: PostgreSQL's
//! archive_command and restore_command.
//!
//! wal-push runs on the database host, for every WAL file PostgreSQL
//! finishes, and needs only the catalog login `vaultline_archiver` (the
//! tenant's public key, the source, its own records) and a put-only
//! repository credential. It does not go through the pipeline: PostgreSQL
//! keeps every segment until the command succeeds, so archiving that
//! waited on a stopped `serve` would fill the database's disk.
//! PostgreSQL retries a failed push, so the command succeeds only once the
//! file is stored (never replacing an object) and recorded.
//!
//! wal-fetch runs on the host that recovers, with the keys a restore needs.

use crate::context::{catalog, parse_pair};
use anyhow::{Context, Result, bail};
use std::path::PathBuf;
use std::process::ExitCode;
use time::OffsetDateTime;
use vaultline_catalog::{Catalog, WalPush};
use vaultline_runtime::Config;
use vaultline_storage::ObjectKey;
use vaultline_types::{Name, PostgresMode, SourceConfig};
use vaultline_wal::WalFile;

/// Flags of `wal-push`.
#[derive(clap::Args, Debug)]
pub struct WalPushArgs {
    /// The file to archive (PostgreSQL's %p).
    path: PathBuf,
    /// The physical postgres source it belongs to, `tenant/source`.
    #[arg(long)]
    source: String,
}

/// Flags of `wal-fetch`.
#[derive(clap::Args, Debug)]
pub struct WalFetchArgs {
    /// The file PostgreSQL asks for (%f).
    name: String,
    /// Where to write it (%p).
    path: PathBuf,
    /// The physical postgres source it was archived from, `tenant/source`.
    #[arg(long)]
    source: String,
}

/// Exit code when an archived file cannot be fetched (storage down, a
/// damaged object, a missing key). PostgreSQL treats exit codes above 125
/// as fatal and stops recovery; exit code 1 would mean "not archived" and
/// let it end recovery early, short of the target, and promote.
const FETCH_FAILED: u8 = 126;

/// The segment sizes initdb allows: powers of two from 1 MiB to 1 GiB.
fn segment_size(bytes: u64) -> Option<u64> {
    (bytes.is_power_of_two() && ((1 << 20)..=(1 << 30)).contains(&bytes)).then_some(bytes)
}

async fn physical_source(catalog: &Catalog, tenant: &Name, source: &Name) -> Result<()> {
    match catalog.archived_source(tenant, source).await? {
        SourceConfig::Postgres(config) if config.mode == PostgresMode::Physical => Ok(()),
        other => bail!(
            "{tenant}/{source} is a {} source; WAL is archived for physical postgres sources only (source add --type postgres --mode physical)",
            other.kind()
        ),
    }
}

fn short(digest: &[u8]) -> String {
    hex::encode(&digest[..digest.len().min(8)])
}

/// A name already archived: the same bytes are a repeat PostgreSQL may
/// make after a crash (success); other bytes are two clusters, or two
/// timelines, writing into one source (a loud failure, nothing replaced).
fn same_or_refuse(
    name: &str,
    pair: &str,
    stored: &vaultline_catalog::WalFileRow,
    ours: &[u8; 32],
) -> Result<ExitCode> {
    if stored.plain_sha256 == ours {
        return Ok(ExitCode::SUCCESS);
    }
    bail!(
        "REFUSED: {name} is already archived for {pair} with other content (stored {} with sha256 {}…, this file has {}…); \
         nothing was replaced. Is another cluster archiving into this source? Give each cluster its own source.",
        crate::output::short_time(stored.stored_at),
        short(&stored.plain_sha256),
        short(ours)
    )
}

/// `vaultline wal-push %p --source T/S`
pub(crate) async fn push(config: &Config, args: WalPushArgs) -> Result<ExitCode> {
    let (tenant, source) = parse_pair(&args.source)?;
    let pair = format!("{tenant}/{source}");
    let name = args
        .path
        .file_name()
        .and_then(|n| n.to_str())
        .with_context(|| format!("{} names no file", args.path.display()))?
        .to_owned();
    let file = WalFile::parse(&name)?;
    let meta = std::fs::metadata(&args.path)
        .with_context(|| format!("cannot read {}", args.path.display()))?;
    let segment = match file {
        WalFile::Segment { .. } | WalFile::Partial { .. } => {
            let size = segment_size(meta.len()).with_context(|| {
                format!(
                    "{} holds {} bytes, not a whole WAL segment (a power of two from 1 MiB to 1 GiB)",
                    args.path.display(),
                    meta.len()
                )
            })?;
            file.number(size)
        }
        WalFile::History { .. } | WalFile::BackupLabel { .. } => None,
    };
    let closed_at = OffsetDateTime::from(meta.modified()?);
    let catalog = catalog(config).await?;
    physical_source(&catalog, &tenant, &source).await?;
    if let Some(stored) = catalog.wal_file(&tenant, &source, &name).await? {
        let path = args.path.clone();
        let (ours, _) = tokio::task::spawn_blocking(move || vaultline_storage::sha256_file(&path))
            .await?
            .with_context(|| format!("cannot read {}", args.path.display()))?;
        return same_or_refuse(&name, &pair, &stored, &ours);
    }
    let (key_id, recipient) = catalog.active_recipient(&tenant).await?;
    let recipient = vaultline_format::keys::parse_recipient(&recipient)?;
    let temp = tempfile::NamedTempFile::new().context("cannot create a temporary file")?;
    let (path, out) = (args.path.clone(), temp.reopen()?);
    let sealed = tokio::task::spawn_blocking(move || {
        let plain = std::fs::File::open(&path)?;
        let out = std::io::BufWriter::with_capacity(1 << 20, out);
        anyhow::Ok(vaultline_wal::seal(plain, &recipient, out)?)
    })
    .await??;
    let object = ObjectKey::wal(&tenant, &source, &name, &sealed.sealed_sha256);
    let repository = vaultline_runtime::deps::open_repository(&config.repository, None).await?;
    repository
        .put_file(&object, temp.path())
        .await
        .with_context(|| format!("storing {name} of {pair}"))?;
    let signed = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    let recorded = catalog
        .record_wal_file(
            &tenant,
            &source,
            &WalPush {
                name: name.clone(),
                timeline: i32::try_from(file.timeline()).unwrap_or(i32::MAX),
                segment: segment.map(signed),
                plain_size: signed(sealed.plain_size),
                plain_sha256: sealed.plain_sha256,
                object,
                stored_size: signed(sealed.sealed_size),
                stored_sha256: sealed.sealed_sha256,
                key_id,
                closed_at,
            },
        )
        .await?;
    // Another push of this name may have recorded first: then our object
    // is one nothing records (and nothing reads).
    same_or_refuse(&name, &pair, &recorded, &sealed.plain_sha256)
}

/// `vaultline wal-fetch %f %p --source T/S`
pub(crate) async fn fetch(config: &Config, args: WalFetchArgs) -> Result<ExitCode> {
    match fetch_file(config, &args).await {
        Ok(found) => Ok(found),
        Err(e) => {
            eprintln!(
                "vaultline wal-fetch: {} of {}: {e:#}; recovery stops here rather than end short of its target",
                args.name, args.source
            );
            Ok(ExitCode::from(FETCH_FAILED))
        }
    }
}

async fn fetch_file(config: &Config, args: &WalFetchArgs) -> Result<ExitCode> {
    let (tenant, source) = parse_pair(&args.source)?;
    WalFile::parse(&args.name)?;
    let catalog = catalog(config).await?;
    let Some(row) = catalog.wal_file(&tenant, &source, &args.name).await? else {
        // The normal end of recovery: PostgreSQL asks for the next file
        // until one is not there.
        return Ok(ExitCode::from(1));
    };
    let keys = catalog.tenant_keys(&tenant).await?;
    let keyring = vaultline_runtime::deps::load_kek(config)?
        .unwrap_keyring(keys.iter().map(|k| k.wrapped_identity.as_slice()))?;
    let repository = vaultline_runtime::deps::open_repository(&config.repository, None).await?;
    let dir = match args.path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let sealed = tempfile::NamedTempFile::new_in(&dir)?;
    let (digest, size) = repository.download(&row.object, sealed.path()).await?;
    if digest.as_slice() != row.stored_sha256 || size as i64 != row.stored_size {
        bail!(
            "the stored object {} is damaged: {size} bytes with sha256 {}…, recorded {} bytes with {}…",
            row.object,
            short(&digest),
            row.stored_size,
            short(&row.stored_sha256)
        );
    }
    let plain = tempfile::NamedTempFile::new_in(&dir)?;
    let (input, output, name) = (sealed.reopen()?, plain.reopen()?, args.name.clone());
    let opened = tokio::task::spawn_blocking(move || {
        let out = std::io::BufWriter::with_capacity(1 << 20, output);
        vaultline_wal::open(
            std::io::BufReader::new(input),
            keyring.identities(),
            &name,
            out,
        )
    })
    .await??;
    if opened.sha256.as_slice() != row.plain_sha256 {
        bail!(
            "{} opened to other bytes than were archived (sha256 {}…, archived {}…)",
            args.name,
            short(&opened.sha256),
            short(&row.plain_sha256)
        );
    }
    plain.as_file().sync_all()?;
    plain
        .persist(&args.path)
        .map_err(|e| e.error)
        .with_context(|| format!("cannot write {}", args.path.display()))?;
    Ok(ExitCode::SUCCESS)
}
