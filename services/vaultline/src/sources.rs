//! Turning `vaultline source add` flags into a source row: its type, its
//! config (what the extractor reads) and the secret to seal, if any.

use anyhow::{Context, Result, bail};
use std::path::PathBuf;

/// The flags of `source add`, as typed.
pub struct SourceSpec {
    pub kind: String,
    pub path: Option<PathBuf>,
    pub url: Option<String>,
    pub password_file: Option<PathBuf>,
    pub command: Option<String>,
    pub restore_command: Option<String>,
    pub secret_file: Option<PathBuf>,
    pub secret_env: Option<String>,
}

/// A secret from a file, without the trailing newline an editor adds.
///
/// # Errors
/// When the file cannot be read.
pub fn read_secret(path: &PathBuf) -> Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the secret file {}", path.display()))?;
    Ok(text.trim_end_matches(['\n', '\r']).to_owned())
}

impl SourceSpec {
    /// Checks the flags that fit the type were given, and no others.
    /// Returns `(kind, config, secret, shown)`; `shown` never holds the secret.
    pub fn resolve(self) -> Result<(String, serde_json::Value, Option<String>, String)> {
        let SourceSpec {
            kind,
            path,
            url,
            password_file,
            command,
            restore_command,
            secret_file,
            secret_env,
        } = self;
        let refuse = |flag: &str, given: bool| -> Result<()> {
            if given {
                bail!("--{flag} does not apply to a {kind} source");
            }
            Ok(())
        };
        match kind.as_str() {
            "files" => {
                refuse("url", url.is_some())?;
                refuse("password-file", password_file.is_some())?;
                refuse("command", command.is_some())?;
                refuse("restore-command", restore_command.is_some())?;
                refuse("secret-file", secret_file.is_some())?;
                refuse("secret-env", secret_env.is_some())?;
                let path = path.context("a files source needs --path")?;
                let path = path
                    .canonicalize()
                    .with_context(|| format!("source path {}", path.display()))?;
                let shown = path.display().to_string();
                Ok((kind, serde_json::json!({ "path": path }), None, shown))
            }
            "postgres" | "mariadb" | "mysql" => {
                refuse("path", path.is_some())?;
                refuse("command", command.is_some())?;
                refuse("restore-command", restore_command.is_some())?;
                refuse("secret-file", secret_file.is_some())?;
                refuse("secret-env", secret_env.is_some())?;
                let url = url.with_context(|| format!("a {kind} source needs --url"))?;
                let parsed = url::Url::parse(&url).context("--url is not a URL")?;
                let schemes: &[&str] = if kind == "postgres" {
                    &["postgres", "postgresql"]
                } else {
                    &["mariadb", "mysql"]
                };
                if !schemes.contains(&parsed.scheme()) {
                    bail!("a {kind} source url starts with {}://", schemes[0]);
                }
                if parsed.password().is_some() {
                    bail!("--url must not hold a password: give it with --password-file");
                }
                if parsed.path().trim_start_matches('/').is_empty() {
                    bail!(
                        "--url must name the database, e.g. {}://user@host/db",
                        schemes[0]
                    );
                }
                let secret = password_file.as_ref().map(read_secret).transpose()?;
                let kind = if kind == "mysql" {
                    "mariadb".to_owned()
                } else {
                    kind
                };
                Ok((kind, serde_json::json!({ "url": url }), secret, url))
            }
            "command" => {
                refuse("path", path.is_some())?;
                refuse("url", url.is_some())?;
                refuse("password-file", password_file.is_some())?;
                let command = command.context("a command source needs --command")?;
                if secret_file.is_some() != secret_env.is_some() {
                    bail!("--secret-file and --secret-env go together");
                }
                let secret = secret_file.as_ref().map(read_secret).transpose()?;
                let mut config = serde_json::json!({ "command": command });
                if let Some(restore) = restore_command {
                    config["restore-command"] = restore.into();
                }
                if let Some(var) = secret_env {
                    config["secret-env"] = var.into();
                }
                Ok((kind, config, secret, command))
            }
            other => bail!(
                "source type {other:?} is not supported (supported: files, postgres, mariadb, command)"
            ),
        }
    }
}
