//! Restore drills: the latest verified snapshot of a postgres or mariadb
//! source is restored into a scratch database on the source's own server,
//! every table's row count is compared with the count taken at dump time,
//! and the scratch database is dropped, whatever happened.
//!
//! A drill that finds a problem is a result, not an error: it is recorded,
//! published (`drill.completed`) and counted. Only a catalog that cannot be
//! reached makes the request retry.

use std::collections::BTreeMap;
use std::time::Instant;
use time::OffsetDateTime;
use vaultline_catalog::{DrillRow, SnapshotStatus};
use vaultline_databases::{MariadbOptions, TableCount};
use vaultline_format::keys::Kek;
use vaultline_runtime::metrics::{MetricName, count};
use vaultline_runtime::{Deps, StageError};
use vaultline_types::{DrillCompleted, DrillRequested, Name, SnapshotId, SourceConfig, TableCheck};
use zeroize::Zeroizing;

/// Why a drill could not compare any counts. Recorded as the drill's error,
/// so it never holds a password.
#[derive(Debug, thiserror::Error)]
enum Failure {
    #[error("{0}")]
    Catalog(#[from] vaultline_catalog::Error),
    /// The source, the snapshot or this verifier's configuration does not
    /// allow a drill.
    #[error("{0}")]
    Refused(String),
    #[error("{0}")]
    Key(vaultline_format::Error),
    #[error("{0}")]
    Restore(#[from] vaultline_restore::Error),
    #[error("{0}")]
    Database(#[from] vaultline_databases::Error),
    /// A step on the scratch server failed; `cause` is the server's words.
    #[error("{step}: {cause}")]
    Server { step: &'static str, cause: String },
}

/// Runs one drill and returns its result (already recorded in the catalog).
///
/// # Errors
/// Only when the catalog cannot record it.
pub async fn run(
    deps: &Deps,
    kek: Option<&Kek>,
    request: &DrillRequested,
) -> Result<DrillCompleted, StageError> {
    let started_at = OffsetDateTime::now_utc();
    let clock = Instant::now();
    let mut snapshot = None;
    let outcome = drill(deps, kek, &request.tenant, &request.source, &mut snapshot).await;
    let duration_ms = clock.elapsed().as_millis() as u64;
    let (tables, error) = match outcome {
        Ok(tables) => {
            let wrong: Vec<String> = tables
                .iter()
                .filter(|t| t.restored != Some(t.expected))
                .map(|t| match t.restored {
                    Some(n) => format!("{} has {n} rows, {} at dump time", t.table, t.expected),
                    None => format!("{} is missing", t.table),
                })
                .collect();
            let error = (!wrong.is_empty()).then(|| wrong.join("; "));
            (tables, error)
        }
        Err(e) => (Vec::new(), Some(e.to_string())),
    };
    let outcome = if error.is_none() { "passed" } else { "failed" };
    let labels = [
        ("tenant", request.tenant.to_string()),
        ("source", request.source.to_string()),
    ];
    // The last drill's outcome, time and duration are exported by the
    // auditor from the catalog, so every replica reports the same ones.
    let mut counted = labels.to_vec();
    counted.push(("outcome", outcome.to_owned()));
    count(MetricName::Drills, &counted, 1);
    match &error {
        None => tracing::info!(tables = tables.len(), duration_ms, "Drill passed."),
        Some(error) => tracing::error!(%error, duration_ms, "Drill failed."),
    }
    deps.catalog
        .record_drill(&DrillRow {
            tenant: request.tenant.to_string(),
            source: request.source.to_string(),
            snapshot: snapshot.as_ref().map(ToString::to_string),
            request_id: request.request_id.clone(),
            started_at,
            duration_ms: duration_ms as i64,
            outcome: outcome.to_owned(),
            tables: serde_json::to_value(&tables).unwrap_or_default(),
            error: error.clone(),
        })
        .await?;
    Ok(DrillCompleted {
        tenant: request.tenant.clone(),
        source: request.source.clone(),
        snapshot,
        request_id: request.request_id.clone(),
        outcome: outcome.to_owned(),
        duration_ms,
        tables,
        error,
    })
}

/// The drill proper; `Err` is the reason it could not check anything.
async fn drill(
    deps: &Deps,
    kek: Option<&Kek>,
    tenant: &Name,
    source: &Name,
    snapshot_out: &mut Option<SnapshotId>,
) -> Result<Vec<TableCheck>, Failure> {
    let catalog = &deps.catalog;
    let source_row = catalog.source(tenant, source).await?;
    let config = source_row
        .config()
        .map_err(|e| Failure::Refused(format!("{tenant}/{source}: {e}")))?;
    let kind = config.kind();
    let Some(url) = config.database_url() else {
        return Err(Failure::Refused(format!(
            "drills restore database sources; {tenant}/{source} is a {kind} source"
        )));
    };
    let postgres_source = matches!(config, SourceConfig::Postgres(_));
    let (url, password) = scratch_server(deps, tenant, source, &config, url.to_owned()).await?;
    let snapshots = catalog.snapshots(Some(tenant), Some(source)).await?;
    let row = snapshots
        .into_iter()
        .find(|s| s.status == SnapshotStatus::Verified)
        .ok_or_else(|| {
            Failure::Refused(format!(
                "{tenant}/{source} has no verified snapshot to drill"
            ))
        })?;
    *snapshot_out = Some(row.id.clone());
    let kek = kek.ok_or_else(|| {
        Failure::Refused("this verifier has no key-encryption key (keys.kek-file)".into())
    })?;
    let keys = catalog.tenant_keys(tenant).await?;
    let keyring = kek
        .unwrap_keyring(keys.iter().map(|k| k.wrapped_identity.as_slice()))
        .map_err(Failure::Key)?;
    let (header, footer) =
        vaultline_restore::manifest_summary(&deps.repository, tenant, &row.id, &keyring).await?;
    if header.source_kind != kind {
        return Err(Failure::Refused(format!(
            "snapshot {} is a {} backup, the source is {kind}",
            row.id, header.source_kind
        )));
    }
    let scratch = scratch_name();
    tracing::info!(snapshot = %row.id, %scratch, "Drill: restoring into a scratch database.");
    let restored = if postgres_source {
        postgres(
            deps,
            tenant,
            &row.id,
            &keyring,
            &url,
            password.as_deref().map(String::as_str),
            &scratch,
        )
        .await
    } else {
        mariadb(
            deps,
            tenant,
            &row.id,
            &keyring,
            &url,
            password.as_deref().map(String::as_str),
            &scratch,
        )
        .await
    }?;
    let checks = compare_counts(&footer.tables, restored);
    if checks.is_empty() {
        return Err(Failure::Refused(
            "the snapshot records no tables to compare".into(),
        ));
    }
    Ok(checks)
}

/// Every table's rows at dump time beside its rows after a restore. A table
/// the dump did not count is as wrong as a missing one (expected 0).
pub fn compare_counts(
    dumped: &[vaultline_format::manifest::TableRows],
    restored: Vec<TableCount>,
) -> Vec<TableCheck> {
    let restored: BTreeMap<String, u64> = restored.into_iter().map(|t| (t.name, t.rows)).collect();
    let mut checks: Vec<TableCheck> = dumped
        .iter()
        .map(|t| TableCheck {
            table: t.name.clone(),
            expected: t.rows,
            restored: restored.get(&t.name).copied(),
        })
        .collect();
    for (name, rows) in &restored {
        if !dumped.iter().any(|t| &t.name == name) {
            checks.push(TableCheck {
                table: name.clone(),
                expected: 0,
                restored: Some(*rows),
            });
        }
    }
    checks
}

/// Where the drill restores: the verifier's own scratch server for the
/// kind, or the source's server when the source was added with
/// `--drill-on-source-server`. Nothing else: the catalog is writable by
/// more than the verifier, and must not choose where a decrypted dump goes.
async fn scratch_server(
    deps: &Deps,
    tenant: &Name,
    source: &Name,
    config: &SourceConfig,
    source_url: String,
) -> Result<(String, Option<Zeroizing<String>>), Failure> {
    let drills = &deps.config.drills;
    let kind = config.kind();
    let (configured, password_file, setting) = match config {
        SourceConfig::Postgres(_) => (
            &drills.postgres_url,
            &drills.postgres_password_file,
            "drills.postgres-url",
        ),
        _ => (
            &drills.mariadb_url,
            &drills.mariadb_password_file,
            "drills.mariadb-url",
        ),
    };
    if let Some(url) = configured {
        let password = match password_file {
            None => None,
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    Failure::Refused(format!(
                        "the scratch server's password file {}: {e}",
                        path.display()
                    ))
                })?;
                Some(Zeroizing::new(
                    text.lines().next().unwrap_or_default().to_owned(),
                ))
            }
        };
        return Ok((url.clone(), password));
    }
    if !deps.catalog.drill_on_source(tenant, source).await? {
        return Err(Failure::Refused(format!(
            "no scratch server for {kind} drills: set {setting} in the verifier's configuration \
             (or add the source with --drill-on-source-server)"
        )));
    }
    let password = match deps.catalog.source_credential(tenant, source).await? {
        None => None,
        Some(sealed) => {
            let refused = |why: &str| Failure::Refused(why.to_owned());
            let key = vaultline_runtime::deps::load_credentials_key(&deps.config).map_err(|e| {
                Failure::Refused(format!("the source has a stored credential, but {e}"))
            })?;
            let plain = key.open(&sealed).map_err(|_| {
                refused("the stored credential does not open with this credentials key")
            })?;
            Some(Zeroizing::new(String::from_utf8(plain).map_err(|_| {
                refused("the stored credential is not UTF-8")
            })?))
        }
    };
    Ok((source_url, password))
}

fn scratch_name() -> String {
    let mut bytes = [0u8; 6];
    getrandom::fill(&mut bytes).expect("OS random source");
    format!("vaultline_drill_{}", hex::encode(bytes))
}

async fn postgres(
    deps: &Deps,
    tenant: &Name,
    snapshot: &SnapshotId,
    keyring: &vaultline_format::keys::Keyring,
    url: &str,
    password: Option<&str>,
    scratch: &str,
) -> Result<Vec<TableCount>, Failure> {
    let admin = vaultline_databases::pg_connect(url, password).await?;
    admin
        .batch_execute(&format!("CREATE DATABASE \"{scratch}\""))
        .await
        .map_err(|e| Failure::Server {
            step: "creating the scratch database",
            cause: vaultline_databases::pg_message(&e),
        })?;
    let result = async {
        let scratch_url = vaultline_databases::with_database(url, scratch)?;
        let mut command = vaultline_restore::programs::pg_restore_command(&scratch_url, false);
        if let Some(password) = password {
            command.env("PGPASSWORD", password);
        }
        vaultline_restore::programs::restore_into(
            &deps.repository,
            tenant,
            snapshot,
            keyring,
            command,
            "pg_restore into the scratch database",
        )
        .await?;
        let client = vaultline_databases::pg_connect(&scratch_url, password).await?;
        vaultline_databases::pg_table_counts(&client)
            .await
            .map_err(|e| Failure::Server {
                step: "counting rows",
                cause: vaultline_databases::pg_message(&e),
            })
    }
    .await;
    // Always drop it, even after a failure; FORCE ends our own lingering session.
    if let Err(e) = admin
        .batch_execute(&format!(
            "DROP DATABASE IF EXISTS \"{scratch}\" WITH (FORCE)"
        ))
        .await
    {
        tracing::warn!(%scratch, error = %vaultline_databases::pg_message(&e), "Could not drop the scratch database.");
    }
    result
}

async fn mariadb(
    deps: &Deps,
    tenant: &Name,
    snapshot: &SnapshotId,
    keyring: &vaultline_format::keys::Keyring,
    url: &str,
    password: Option<&str>,
    scratch: &str,
) -> Result<Vec<TableCount>, Failure> {
    let options = MariadbOptions::new(password)?;
    let ident = vaultline_databases::mariadb_ident(scratch);
    vaultline_databases::mariadb_sql(url, &options, None, &format!("CREATE DATABASE {ident}"))
        .map_err(|e| Failure::Server {
            step: "creating the scratch database",
            cause: e.to_string(),
        })?;
    let result = async {
        let scratch_url = vaultline_databases::with_database(url, scratch)?;
        let command = vaultline_restore::programs::mariadb_command(&scratch_url, Some(&options))?;
        vaultline_restore::programs::restore_into(
            &deps.repository,
            tenant,
            snapshot,
            keyring,
            command,
            "mariadb into the scratch database",
        )
        .await?;
        Ok(vaultline_databases::mariadb_table_counts(
            url, &options, scratch,
        )?)
    }
    .await;
    if let Err(e) = vaultline_databases::mariadb_sql(
        url,
        &options,
        None,
        &format!("DROP DATABASE IF EXISTS {ident}"),
    ) {
        tracing::warn!(%scratch, error = %e, "Could not drop the scratch database.");
    }
    result
}
