//! What most commands start from: the catalog, opened and checked against
//! the schema this binary expects, and `tenant/source` pairs as typed.

use anyhow::{Context, Result};
use vaultline_catalog::Catalog;
use vaultline_runtime::Config;
use vaultline_types::Name;

/// The catalog of `config`, refused when its schema is not the one this
/// binary was built for (run `vaultline migrate`).
pub(crate) async fn catalog(config: &Config) -> Result<Catalog> {
    let catalog = vaultline_runtime::open_catalog(&config.catalog)?;
    catalog.check_schema().await?;
    Ok(catalog)
}

/// `acme/docs` as a tenant and a source name.
pub(crate) fn parse_pair(text: &str) -> Result<(Name, Name)> {
    let (tenant, source) = text
        .split_once('/')
        .with_context(|| format!("{text:?} is not tenant/source (e.g. acme/docs)"))?;
    Ok((Name::new(tenant)?, Name::new(source)?))
}

/// A secret from a file, without the trailing newline an editor adds.
pub(crate) fn read_secret(path: &std::path::Path) -> Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the secret file {}", path.display()))?;
    Ok(text.trim_end_matches(['\n', '\r']).to_owned())
}
