//! The live application a restore goes into: its internal endpoints (the
//! ones PickDriver Vault calls), `GET info`, `POST maintenance/enable` and
//! `disable`, `GET smoke`, each with the `X-Internal-Token` header.

use anyhow::{Context, Result, bail};
use std::path::Path;
use std::time::Duration;
use vaultline_catalog::SnapshotRow;
use zeroize::Zeroizing;

/// Each call gives up after this long: a hung application must not hold a
/// restore (or the maintenance switch) forever.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// An application's internal API.
pub(super) struct App {
    base: url::Url,
    token: Zeroizing<String>,
    http: reqwest::Client,
}

/// What `GET info` said.
#[derive(Debug, Clone)]
pub(super) struct AppInfo {
    /// Its `version` field, when it has one.
    pub(super) version: Option<String>,
}

impl App {
    /// `base` is the internal API's root (`https://app/api/internal`); the
    /// token is read from `token_file`.
    ///
    /// # Errors
    /// A base that is not an http(s) URL, or a token file that cannot be read.
    pub(super) fn new(base: &str, token_file: &Path) -> Result<App> {
        let mut base =
            url::Url::parse(base).with_context(|| format!("--app {base:?} is not a URL"))?;
        if !matches!(base.scheme(), "http" | "https") || base.cannot_be_a_base() {
            bail!("--app must be an http:// or https:// URL, like https://app/api/internal");
        }
        if !base.username().is_empty() || base.password().is_some() {
            bail!("--app must not hold credentials: the token comes from --app-token-file");
        }
        // Joined paths go under it, not beside its last segment.
        if !base.path().ends_with('/') {
            base.set_path(&format!("{}/", base.path()));
        }
        let token = Zeroizing::new(crate::context::read_secret(token_file)?);
        if token.is_empty() {
            bail!("the token file {} is empty", token_file.display());
        }
        Ok(App {
            base,
            token,
            http: vaultline_auditor::webhooks::http_client(CALL_TIMEOUT)?,
        })
    }

    /// The URL for people and records: no query, no token.
    pub(super) fn shown(&self) -> String {
        self.base.as_str().trim_end_matches('/').to_owned()
    }

    /// One call; the status and up to 2 KiB of the body.
    async fn call(&self, method: reqwest::Method, path: &str) -> Result<(u16, String)> {
        let url = self.base.join(path).context("an endpoint path")?;
        let response = self
            .http
            .request(method.clone(), url)
            .header("X-Internal-Token", self.token.as_str())
            .send()
            .await
            // reqwest's error names the URL, which holds no secret here.
            .with_context(|| format!("{method} {}{path}: no answer", self.shown()))?;
        let status = response.status().as_u16();
        let body = response.text().await.unwrap_or_default();
        let body: String = body.chars().take(2048).collect();
        if status == 401 || status == 403 {
            bail!(
                "{method} {}/{path} answered {status}: the application refused the token in the --app-token-file",
                self.shown()
            );
        }
        Ok((status, body))
    }

    /// `GET system/info`, which must answer 2xx with a JSON object.
    ///
    /// # Errors
    /// No answer, a refused token, another status, or a body that is not JSON.
    pub(super) async fn info(&self) -> Result<AppInfo> {
        let (status, body) = self.call(reqwest::Method::GET, "system/info").await?;
        if !(200..300).contains(&status) {
            bail!("GET {}/system/info answered {status}: {body}", self.shown());
        }
        let value: serde_json::Value = serde_json::from_str(&body)
            .with_context(|| format!("GET {}/system/info did not answer JSON", self.shown()))?;
        Ok(AppInfo {
            version: value
                .get("version")
                .and_then(|v| v.as_str())
                .map(str::to_owned),
        })
    }

    /// `POST system/maintenance/enable` or `disable`.
    ///
    /// # Errors
    /// No answer, a refused token or a status other than 2xx.
    pub(super) async fn maintenance(&self, on: bool) -> Result<()> {
        let path = if on {
            "system/maintenance/enable"
        } else {
            "system/maintenance/disable"
        };
        let (status, body) = self.call(reqwest::Method::POST, path).await?;
        if !(200..300).contains(&status) {
            bail!("POST {}/{path} answered {status}: {body}", self.shown());
        }
        Ok(())
    }

    /// `GET system/smoke`: its status (2xx passes) and body.
    ///
    /// # Errors
    /// No answer, or a refused token.
    pub(super) async fn smoke(&self) -> Result<(u16, String)> {
        self.call(reqwest::Method::GET, "system/smoke").await
    }
}

/// Whether a snapshot of application version `recorded` may go into an
/// application running `running`: the same major version (the same minor
/// below 1.0), which is what a schema may change with. Versions that are
/// not `x.y.z` must be equal.
pub(super) fn compatible(recorded: &str, running: &str) -> bool {
    let parse = |v: &str| -> Option<(u64, u64)> {
        let v = v.trim().trim_start_matches('v');
        let mut parts = v.split(['.', '-', '+']);
        Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
    };
    match (parse(recorded), parse(running)) {
        (Some((0, a)), Some((0, b))) => a == b,
        (Some((a, _)), Some((b, _))) => a == b,
        _ => recorded.trim() == running.trim(),
    }
}

/// A snapshot labelled with the application version it was taken of may go
/// only into an application of a compatible version.
pub(super) fn check_version(row: &SnapshotRow, info: &AppInfo) -> Result<()> {
    let Some(recorded) = row.labels.get("app_version") else {
        return Ok(());
    };
    let Some(running) = &info.version else {
        bail!(
            "snapshot {} was taken of application version {recorded}, and the application's info does not say its version",
            row.id
        );
    };
    if !compatible(recorded, running) {
        bail!(
            "snapshot {} was taken of application version {recorded}; the application runs {running}, whose data may differ: refused (nothing was changed)",
            row.id
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::compatible;

    #[test]
    fn versions_are_compatible_within_a_major() {
        assert!(compatible("2.4.1", "2.9.0"));
        assert!(compatible("v2.4.1", "2.4.1-rc1"));
        assert!(!compatible("2.4.1", "3.0.0"));
        assert!(compatible("0.7.1", "0.7.9"));
        assert!(!compatible("0.7.1", "0.8.0"));
        assert!(compatible("build-42", "build-42"));
        assert!(!compatible("build-42", "build-43"));
    }
}
