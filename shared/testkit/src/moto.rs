//! moto's S3 server (PyPI `moto[server]`), for the object-lock protocol test
//! only: it is the one S3 server with object lock that installs here
//! (Garage answers 501 to object-lock calls). Every other S3 test runs on
//! Garage. Buckets are made and objects inspected with boto3, which moto
//! brings, so the test reads what the server holds, not what we sent.

use crate::spawn_on_free_port;
use anyhow::{Context, Result, bail};
use std::process::{Child, Command, Stdio};

/// A running moto server with one bucket that has object lock enabled.
pub struct Moto {
    dir: tempfile::TempDir,
    pub port: u16,
    child: Option<Child>,
}

/// What the server says of one object's lock (`HeadObject`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectRetention {
    /// `GOVERNANCE` or `COMPLIANCE`.
    pub mode: Option<String>,
    /// Unix seconds.
    pub retain_until: Option<i64>,
}

impl Moto {
    /// The bucket with object lock.
    pub const BUCKET: &'static str = "locked";
    pub const REGION: &'static str = "us-east-1";
    /// moto accepts any key; these only need to be consistent.
    pub const ACCESS_KEY_ID: &'static str = "moto-test-key";
    pub const SECRET_ACCESS_KEY: &'static str = "moto-test-secret";

    /// Starts the server on a free port and creates [`Moto::BUCKET`].
    ///
    /// # Errors
    /// When moto is not installed (scripts/test.sh installs it) or does not start.
    pub fn start() -> Result<Moto> {
        let dir = tempfile::tempdir()?;
        let (port, child) = spawn_on_free_port("moto_server", |port| {
            let log = std::fs::File::create(dir.path().join("moto.log"))?;
            Command::new("moto_server")
                .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .context("cannot run moto_server (scripts/test.sh installs moto[server] from PyPI)")
        })?;
        let moto = Moto {
            dir,
            port,
            child: Some(child),
        };
        moto.boto3(&format!(
            "s3.create_bucket(Bucket='{}', ObjectLockEnabledForBucket=True)",
            Self::BUCKET
        ))?;
        Ok(moto)
    }

    /// `http://127.0.0.1:<port>`
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The mode and retain-until date the server keeps for `key` of the bucket.
    ///
    /// # Errors
    /// When the object does not exist or boto3 fails.
    pub fn retention(&self, key: &str) -> Result<ObjectRetention> {
        let out = self.boto3(&format!(
            "h = s3.head_object(Bucket='{}', Key={key:?})\n\
             d = h.get('ObjectLockRetainUntilDate')\n\
             print(json.dumps([h.get('ObjectLockMode'), int(d.timestamp()) if d else None]))",
            Self::BUCKET
        ))?;
        let (mode, retain_until): (Option<String>, Option<i64>) =
            serde_json::from_str(out.trim()).with_context(|| format!("head {key}: {out}"))?;
        Ok(ObjectRetention { mode, retain_until })
    }

    /// Keys in the bucket (current versions).
    ///
    /// # Errors
    /// When boto3 fails.
    pub fn keys(&self) -> Result<Vec<String>> {
        let out = self.boto3(&format!(
            "p = s3.get_paginator('list_objects_v2')\n\
             print(json.dumps([o['Key'] for page in p.paginate(Bucket='{}') for o in page.get('Contents', [])]))",
            Self::BUCKET
        ))?;
        Ok(serde_json::from_str(out.trim())?)
    }

    fn boto3(&self, code: &str) -> Result<String> {
        let script = format!(
            "import boto3, json\n\
             s3 = boto3.client('s3', endpoint_url='{}', region_name='{}', aws_access_key_id='{}', aws_secret_access_key='{}')\n{code}\n",
            self.endpoint(),
            Self::REGION,
            Self::ACCESS_KEY_ID,
            Self::SECRET_ACCESS_KEY
        );
        let out = Command::new("python3")
            .arg("-c")
            .arg(&script)
            .output()
            .context("cannot run python3")?;
        if !out.status.success() {
            bail!(
                "boto3 against moto failed: {}\n{}",
                String::from_utf8_lossy(&out.stderr),
                self.log()
            );
        }
        Ok(String::from_utf8(out.stdout)?)
    }

    /// Its log so far (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("moto.log")).unwrap_or_default()
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        crate::kill(self.child.take());
    }
}
