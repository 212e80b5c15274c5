//! `vaultline source`: adding a source (what it is, its credential, its
//! verification and retention) and rotating its credential.

mod sftp;
mod spec;

use crate::cmd::retention::PolicyArgs;
use crate::context::{catalog, parse_pair, read_secret};
use anyhow::{Context, Result};
use clap::Subcommand;
use std::path::PathBuf;
use std::process::ExitCode;
use vaultline_runtime::Config;
use vaultline_runtime::deps::load_credentials_key;
use vaultline_types::SourceConfig;

pub use spec::{SourceKind, SourceSpec};

#[derive(Subcommand, Debug)]
// Parsed once per process: the size of the variants does not matter.
#[allow(clippy::large_enum_variant)]
pub enum SourceCommand {
    /// Add a source: `vaultline source add acme/docs --type files --path /srv/docs`,
    /// `… acme/db --type postgres --url postgres://backup@db:5432/shop --password-file F`,
    /// `… acme/vault --type command --command 'vault operator raft snapshot save -'`,
    /// `… acme/web --type sftp --host H --user U --path /srv/www --key-file F`.
    Add {
        /// `tenant/source`
        source: String,
        #[command(flatten)]
        spec: SourceSpec,
        /// Verification after every snapshot: `digests` (level 1: stored
        /// objects re-hashed, no key) or `full` (level 2: also decrypted,
        /// reassembled and compared with the source digest).
        #[arg(long, default_value = "digests", value_parser = ["digests", "full"])]
        verify: String,
        /// Let drills restore into this database's own server when the
        /// verifier has no scratch server for its kind (drills.postgres-url,
        /// drills.mariadb-url). Off by default: a decrypted dump goes only
        /// where the verifier's own configuration says.
        #[arg(long)]
        drill_on_source_server: bool,
        /// Retention rules (none: keep everything).
        #[command(flatten)]
        policy: PolicyArgs,
    },
    /// How long a snapshot of the source may stay in flight before the
    /// auditor's reaper fails it: `set-deadline acme/db 12h`, or `default`
    /// for `[observer] snapshot-deadline` (6 h).
    SetDeadline {
        /// `tenant/source`
        source: String,
        /// A duration (`90m`, `12h`) or `default`.
        deadline: String,
    },
    /// Replace a source's stored password or secret (rotation); the next
    /// snapshot uses it. Stored sealed with the credentials key. For an
    /// sftp source the file is its new password or private key, as it logs in.
    SetCredential {
        /// `tenant/source`
        source: String,
        /// File holding the new password or secret (sftp: or key).
        #[arg(long = "from-file")]
        file: PathBuf,
        /// File holding the new key's passphrase (sftp key login).
        #[arg(long)]
        key_passphrase_file: Option<PathBuf>,
    },
    /// Pin the host key an sftp source's host offers now (trust on first
    /// use, said explicitly). Shows the fingerprint; `--expect` checks it
    /// first, `--replace` pins a key that differs from the pinned one.
    TrustHostKey {
        /// `tenant/source`
        source: String,
        /// The fingerprint the host must offer (`SHA256:…`), checked out of band.
        #[arg(long)]
        expect: Option<String>,
        /// Replace a pinned key that differs.
        #[arg(long)]
        replace: bool,
    },
}

pub(crate) async fn run(config: &Config, command: SourceCommand) -> Result<ExitCode> {
    match command {
        SourceCommand::Add {
            source,
            spec,
            verify,
            drill_on_source_server,
            policy,
        } => {
            let (tenant, source) = parse_pair(&source)?;
            let verify_level = if verify == "full" { 2 } else { 1 };
            let (source_config, secret, shown) = spec.resolve()?;
            let kind = source_config.kind();
            let sealed = match secret {
                Some(secret) => Some(load_credentials_key(config)?.seal(secret.as_bytes())),
                None => None,
            };
            let policy = policy.policy()?;
            crate::cmd::retention::check_lock(config, &policy)?;
            let retention = serde_json::to_value(policy)?;
            catalog(config)
                .await?
                .add_source(&vaultline_catalog::NewSource {
                    tenant: &tenant,
                    name: &source,
                    config: &source_config,
                    retention: &retention,
                    sealed_credential: sealed.as_deref(),
                    verify_level,
                    drill_on_source: drill_on_source_server,
                })
                .await?;
            let sealed_note = if sealed.is_some() {
                ", credential stored sealed"
            } else {
                ""
            };
            println!("added source {tenant}/{source} ({kind}: {shown}{sealed_note})");
        }
        SourceCommand::SetDeadline { source, deadline } => {
            let (tenant, source) = parse_pair(&source)?;
            let seconds = match deadline.as_str() {
                "default" => None,
                text => {
                    let every = humantime::parse_duration(text).with_context(|| {
                        format!("{text:?} is not a duration (e.g. 90m, 12h) or `default`")
                    })?;
                    anyhow::ensure!(every.as_secs() > 0, "a deadline must be at least 1s");
                    Some(every.as_secs() as i64)
                }
            };
            catalog(config)
                .await?
                .set_source_deadline(&tenant, &source, seconds)
                .await?;
            match seconds {
                Some(_) => {
                    println!("snapshots of {tenant}/{source} are failed after {deadline} in flight")
                }
                None => {
                    println!("snapshots of {tenant}/{source} follow [observer] snapshot-deadline")
                }
            }
        }
        SourceCommand::SetCredential {
            source,
            file,
            key_passphrase_file,
        } => {
            let (tenant, source) = parse_pair(&source)?;
            let catalog = catalog(config).await?;
            let row = catalog.source(&tenant, &source).await?;
            let secret = match row.config()? {
                SourceConfig::Sftp(sftp) => {
                    sftp::credential(sftp.auth, &file, key_passphrase_file)?
                }
                _ => {
                    anyhow::ensure!(
                        key_passphrase_file.is_none(),
                        "--key-passphrase-file is for sftp sources that log in with a key"
                    );
                    read_secret(&file)?.into_bytes()
                }
            };
            let sealed = load_credentials_key(config)?.seal(&secret);
            catalog.set_credential(&tenant, &source, &sealed).await?;
            println!("stored a new credential for {tenant}/{source} (sealed)");
        }
        SourceCommand::TrustHostKey {
            source,
            expect,
            replace,
        } => sftp::trust_host_key(config, &source, expect, replace).await?,
    }
    Ok(ExitCode::SUCCESS)
}
