//! What only sftp sources need from the CLI: reading their login secret
//! from files, and pinning their host's key.

use crate::context::{catalog, parse_pair, read_secret};
use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use vaultline_runtime::Config;
use vaultline_sftp::Credential;
use vaultline_types::{SftpAuth, SourceConfig};

/// A password from `password_file`, or the private key in `key_file` with
/// its passphrase, checked to open now rather than at the first backup.
pub(super) fn read_credential(
    password_file: Option<&Path>,
    key_file: Option<&Path>,
    passphrase_file: Option<&Path>,
) -> Result<Credential> {
    match (password_file, key_file) {
        (Some(file), None) => {
            if passphrase_file.is_some() {
                bail!("--key-passphrase-file goes with a key file");
            }
            Ok(Credential::Password(read_secret(file)?))
        }
        (None, Some(file)) => {
            let key = std::fs::read_to_string(file)
                .with_context(|| format!("cannot read the key file {}", file.display()))?;
            let passphrase = passphrase_file.map(read_secret).transpose()?;
            let credential = Credential::Key { key, passphrase };
            credential
                .private_key()
                .with_context(|| format!("key file {}", file.display()))?;
            Ok(credential)
        }
        _ => bail!("an sftp source logs in with one of --password-file or --key-file"),
    }
}

/// `source set-credential` of an sftp source: `file` is a password or a
/// key, as the source logs in.
pub(super) fn credential(
    auth: SftpAuth,
    file: &Path,
    passphrase_file: Option<PathBuf>,
) -> Result<Vec<u8>> {
    let credential = match auth {
        SftpAuth::Password => read_credential(Some(file), None, passphrase_file.as_deref())?,
        SftpAuth::Key => read_credential(None, Some(file), passphrase_file.as_deref())?,
    };
    Ok(credential.to_bytes())
}

/// `source trust-host-key`: shows the key the host offers and pins it.
pub(super) async fn trust_host_key(
    config: &Config,
    source: &str,
    expect: Option<String>,
    replace: bool,
) -> Result<()> {
    let (tenant, name) = parse_pair(source)?;
    let catalog = catalog(config).await?;
    let SourceConfig::Sftp(mut sftp) = catalog.source(&tenant, &name).await?.config()? else {
        bail!("{tenant}/{name} is not an sftp source: only those have a host key");
    };
    if let Some(expect) = &expect {
        super::spec::check_fingerprint(expect)?;
    }
    let offered = vaultline_sftp::host_key_of(&sftp).await?;
    let address = format!("{}:{}", sftp.host, sftp.port);
    println!("{address} offers host key {offered}");
    if let Some(expect) = expect.filter(|e| *e != offered) {
        bail!("expected {expect}: not pinned");
    }
    match sftp.host_key.as_deref() {
        Some(pinned) if pinned == offered => {
            println!("already pinned for {tenant}/{name}");
            return Ok(());
        }
        Some(pinned) if !replace => bail!(
            "{tenant}/{name} has {pinned} pinned: the host's key changed. Check the new one with \
             its administrator, then run again with --replace (and --expect {offered})"
        ),
        _ => {}
    }
    sftp.host_key = Some(offered.clone());
    catalog
        .set_source_config(&tenant, &name, &SourceConfig::Sftp(sftp))
        .await?;
    println!("pinned {offered} for {tenant}/{name}");
    Ok(())
}
