//! The source whose backup is a live restore's safety snapshot: it must be
//! one vaultline backs up, so the snapshot goes through the pipeline.

use anyhow::{Context, Result, bail};
use vaultline_catalog::{Catalog, SnapshotRow};
use vaultline_types::Name;

/// The source whose backup is the safety snapshot: the one named, else the
/// snapshot's own source when the target is its database (same host, port
/// and database) or its restore command.
pub(super) async fn safety_source(
    catalog: &Catalog,
    row: &SnapshotRow,
    target_url: Option<&str>,
    named: Option<&str>,
) -> Result<Name> {
    if let Some(named) = named {
        let (tenant, source) = crate::context::parse_pair(named)?;
        if tenant != row.tenant {
            bail!("--safety-source must be a source of tenant {}", row.tenant);
        }
        catalog.source(&tenant, &source).await?;
        return Ok(source);
    }
    let own = catalog
        .source(&row.tenant, &row.source)
        .await
        .with_context(|| {
            format!(
                "snapshot {}'s source is gone: name the target's source with --safety-source",
                row.id
            )
        })?;
    let config = own.config()?;
    let same = match (target_url, config.database_url()) {
        (Some(target), Some(source)) => same_database(target, source),
        (None, _) => true,
        (Some(_), None) => false,
    };
    if !same {
        bail!(
            "the target is not the database of {}/{}: name the source that backs it up with --safety-source TENANT/SOURCE, so its safety snapshot goes through the pipeline",
            row.tenant,
            row.source
        );
    }
    Ok(row.source.clone())
}

/// Host, port and database name: who logs in may differ.
fn same_database(a: &str, b: &str) -> bool {
    let key = |u: &str| {
        url::Url::parse(u).ok().map(|u| {
            (
                u.host_str().unwrap_or("localhost").to_ascii_lowercase(),
                u.port(),
                u.path().trim_matches('/').to_owned(),
            )
        })
    };
    key(a).is_some() && key(a) == key(b)
}
