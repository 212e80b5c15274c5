//! Bearer tokens of the HTTP API: `vlt_<id>_<secret>`, each for one tenant
//! and one scope. Only the secret's SHA-256 is stored; the whole token is
//! shown once, when it is created.

use crate::{Catalog, Error, Result};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use time::OffsetDateTime;
use vaultline_types::Name;

/// What a token lets its holder do, each including the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Look: snapshots, sources, results, history, stats.
    Read,
    /// Also start backups, verifications and drills.
    Trigger,
    /// Also protect and unprotect snapshots.
    Admin,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Trigger => "trigger",
            Scope::Admin => "admin",
        }
    }
}

impl std::str::FromStr for Scope {
    type Err = Error;
    fn from_str(text: &str) -> Result<Scope> {
        match text {
            "read" => Ok(Scope::Read),
            "trigger" => Ok(Scope::Trigger),
            "admin" => Ok(Scope::Admin),
            other => Err(Error::Conflict(format!(
                "scope {other:?}: read, trigger or admin"
            ))),
        }
    }
}

/// A token as listed (never its secret).
#[derive(Debug, Clone, serde::Serialize)]
pub struct TokenRow {
    pub id: String,
    pub tenant: String,
    pub scope: String,
    pub name: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    pub revoked_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_used_at: Option<OffsetDateTime>,
}

/// Who presented a token, once it checked out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub token: String,
    pub tenant: Name,
    pub scope: Scope,
}

/// Why a token was not accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Not a token of ours, or a secret that does not match.
    Unknown,
    /// A real token, revoked: its tenant is known, for the trail.
    Revoked { token: String, tenant: Name },
}

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf).expect("OS random source");
    hex::encode(buf)
}

/// `vlt_<id>_<secret>` → (id, secret), when it has that shape.
fn split(token: &str) -> Option<(&str, &str)> {
    let rest = token.strip_prefix("vlt_")?;
    let (id, secret) = rest.split_once('_')?;
    let hex_of = |s: &str, len: usize| s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit());
    (hex_of(id, 16) && hex_of(secret, 64)).then_some((id, secret))
}

impl Catalog {
    /// Creates a token; returns its id and the whole token, which is not
    /// stored and cannot be shown again.
    ///
    /// # Errors
    /// An unknown tenant, or a failing query.
    pub async fn create_token(
        &self,
        tenant: &Name,
        scope: Scope,
        name: &str,
    ) -> Result<(String, String)> {
        let (id, secret) = (random_hex(8), random_hex(32));
        let digest = Sha256::digest(secret.as_bytes()).to_vec();
        let inserted = self
            .client()
            .await?
            .execute(
                "INSERT INTO api_tokens (id, tenant, scope, name, secret_sha256)
                 SELECT $1, name, $3, $4, $5 FROM tenants WHERE name = $2",
                &[&id, &tenant.as_str(), &scope.as_str(), &name, &digest],
            )
            .await?;
        if inserted == 0 {
            return Err(Error::NotFound(format!("unknown tenant {tenant}")));
        }
        Ok((id.clone(), format!("vlt_{id}_{secret}")))
    }

    /// Tokens, of one tenant or all, newest first.
    ///
    /// # Errors
    /// When the query fails.
    pub async fn tokens(&self, tenant: Option<&Name>) -> Result<Vec<TokenRow>> {
        let rows = self
            .client()
            .await?
            .query(
                "SELECT id, tenant, scope, name, created_at, revoked_at, last_used_at FROM api_tokens
                 WHERE $1::text IS NULL OR tenant = $1 ORDER BY created_at DESC, id",
                &[&tenant.map(Name::as_str)],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| TokenRow {
                id: r.get(0),
                tenant: r.get(1),
                scope: r.get(2),
                name: r.get(3),
                created_at: r.get(4),
                revoked_at: r.get(5),
                last_used_at: r.get(6),
            })
            .collect())
    }

    /// Revokes a token (from now on it gets 401). Returns false when it was
    /// revoked already.
    ///
    /// # Errors
    /// An unknown token, or a failing query.
    pub async fn revoke_token(&self, id: &str) -> Result<bool> {
        let client = self.client().await?;
        let updated = client
            .execute(
                "UPDATE api_tokens SET revoked_at = now() WHERE id = $1 AND revoked_at IS NULL",
                &[&id],
            )
            .await?;
        if updated == 0
            && client
                .query_opt("SELECT 1 FROM api_tokens WHERE id = $1", &[&id])
                .await?
                .is_none()
        {
            return Err(Error::NotFound(format!("no token {id}")));
        }
        Ok(updated == 1)
    }

    /// Checks a presented token and notes its use.
    ///
    /// # Errors
    /// A failing query; a token that does not check out is `Ok(Err(_))`.
    pub async fn authenticate(&self, token: &str) -> Result<std::result::Result<Caller, Refusal>> {
        let Some((id, secret)) = split(token) else {
            return Ok(Err(Refusal::Unknown));
        };
        let client = self.client().await?;
        let Some(row) = client
            .query_opt(
                "SELECT tenant, scope, secret_sha256, revoked_at IS NOT NULL FROM api_tokens WHERE id = $1",
                &[&id],
            )
            .await?
        else {
            return Ok(Err(Refusal::Unknown));
        };
        let stored: Vec<u8> = row.get(2);
        let presented = Sha256::digest(secret.as_bytes());
        if !bool::from(stored.as_slice().ct_eq(presented.as_slice())) {
            return Ok(Err(Refusal::Unknown));
        }
        let tenant = Name::new(row.get::<_, String>(0))
            .map_err(|e| Error::Conflict(format!("catalog holds an invalid tenant: {e}")))?;
        if row.get::<_, bool>(3) {
            return Ok(Err(Refusal::Revoked {
                token: id.to_owned(),
                tenant,
            }));
        }
        let scope: Scope = row.get::<_, String>(1).parse()?;
        client
            .execute(
                "UPDATE api_tokens SET last_used_at = now() WHERE id = $1",
                &[&id],
            )
            .await?;
        Ok(Ok(Caller {
            token: id.to_owned(),
            tenant,
            scope,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_well_formed_tokens_are_looked_up() {
        let good = format!("vlt_{}_{}", "a1".repeat(8), "0f".repeat(32));
        assert!(split(&good).is_some());
        assert!(split("vlt_short_secret").is_none());
        assert!(split(&good.replace("vlt_", "xyz_")).is_none());
        assert!(split(&format!("{good}0")).is_none());
        assert!(Scope::Read < Scope::Trigger && Scope::Trigger < Scope::Admin);
    }
}
