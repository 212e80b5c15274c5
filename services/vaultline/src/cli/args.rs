//! The command line as clap parses it: every command and its flags.

use crate::operate::{AuditCommand, PolicyArgs, RetentionCommand, WebhookCommand};
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use vaultline_types::StageName;

#[derive(Parser, Debug)]
#[command(
    name = "vaultline",
    version,
    about = "Deduplicated, encrypted, verified backups on NATS JetStream"
)]
pub struct Cli {
    /// Configuration file (TOML).
    #[arg(long, global = true, env = "VAULTLINE_CONFIG")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Apply catalog migrations.
    Migrate,
    /// Write a new key-encryption key (an age identity file) to FILE; with
    /// --staging, a staging key pair instead (the file is the packager's
    /// half; the recipient printed is the extractor's).
    KekGenerate {
        /// Where to write it (created with mode 0600, never overwritten).
        out: PathBuf,
        /// Make a staging key pair (keys.staging-key-file, keys.staging-recipient).
        #[arg(long)]
        staging: bool,
    },
    /// Manage tenants.
    #[command(subcommand)]
    Tenant(TenantCommand),
    /// Manage sources.
    #[command(subcommand)]
    Source(SourceCommand),
    /// Manage schedules (one per source: cron in a time zone, or an interval).
    #[command(subcommand)]
    Schedule(ScheduleCommand),
    /// Retention policies: set one, or preview what it keeps and forgets.
    #[command(subcommand)]
    Retention(RetentionCommand),
    /// Garbage-collect packs no snapshot references (after the grace period).
    Gc {
        /// Show what would be condemned and deleted; change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Grace period (default: `retention.gc-grace` of the config, 24h).
        #[arg(long)]
        grace: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// The audit trail.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Backup runs, newest first: trigger, status, duration, bytes, error.
    History {
        /// Only this `tenant/source`.
        #[arg(long)]
        source: Option<String>,
        /// Only this tenant.
        #[arg(long)]
        tenant: Option<String>,
        /// At most this many runs.
        #[arg(long, default_value_t = 50)]
        limit: i64,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Success rate, last success and last verified per source; repository size and dedup.
    Stats {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Signed webhooks per tenant.
    #[command(subcommand)]
    Webhook(WebhookCommand),
    /// Trigger a backup of TENANT/SOURCE now.
    Backup {
        /// `tenant/source`
        source: String,
        /// Follow the snapshot until it is verified; exit non-zero if it fails.
        #[arg(long)]
        wait: bool,
        /// Give up waiting after this many seconds.
        #[arg(long, default_value_t = 3600)]
        timeout: u64,
    },
    /// List snapshots, newest first.
    Snapshots {
        /// Only this tenant.
        #[arg(long)]
        tenant: Option<String>,
        /// Only this source (with --tenant).
        #[arg(long)]
        source: Option<String>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Restore a snapshot into a directory.
    Restore {
        /// Snapshot id.
        snapshot: String,
        /// Target directory (created if missing), or `-` for stdout.
        #[arg(long)]
        to: Option<PathBuf>,
        /// Restore only this path (and what is under it) of a file tree.
        #[arg(long)]
        path: Option<String>,
        /// A database to restore a postgres or mariadb snapshot into
        /// (`postgres://user@host/db`, `mariadb://user@host/db`; the password
        /// from PGPASSWORD or MYSQL_PWD).
        #[arg(long)]
        into: Option<String>,
        /// Pipe a command snapshot into this shell command (without a value:
        /// the source's own --restore-command).
        #[arg(long, num_args = 0..=1, default_missing_value = "")]
        into_command: Option<String>,
        /// Tenant identity file; without it the key is unwrapped from the catalog with the KEK.
        #[arg(long)]
        identity: Option<PathBuf>,
        /// Tenant of the snapshot (needed with --identity when there is no catalog).
        #[arg(long)]
        tenant: Option<String>,
        /// As root, give files their recorded user and group ids rather than
        /// the ids this host has for the recorded names.
        #[arg(long)]
        numeric_owner: bool,
        /// Read this repository (`s3://bucket/prefix`, `file:///dir`) with no
        /// catalog and no NATS; needs --identity and --tenant.
        #[arg(long)]
        repo: Option<String>,
    },
    /// Check a snapshot now: level 1 (stored objects against their recorded
    /// digests, no key), or with --full level 2 as well (read back in full and
    /// compared with the source digest). A damaged snapshot is marked corrupt
    /// and the exit code is 1.
    Verify {
        /// Snapshot id.
        snapshot: String,
        /// Level 2 as well.
        #[arg(long)]
        full: bool,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Restore the latest verified snapshot of a postgres or mariadb source
    /// into a scratch database, compare every table's row count with the
    /// counts taken at dump time, drop the scratch database, and publish the
    /// result. Exit code 1 when a count differs or the restore fails.
    Drill {
        /// `tenant/source`
        source: String,
        /// Instead of drilling now, drill every so often (`1d`, `12h`), or `off`.
        #[arg(long)]
        every: Option<String>,
        /// Seconds to wait for the verifier to run it.
        #[arg(long, default_value_t = 600)]
        timeout: u64,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Run stages: all of them, or those named with --stage.
    Serve {
        /// A stage to run (repeatable): extractor, packager, uploader, verifier, retention, auditor.
        #[arg(long = "stage")]
        stages: Vec<StageName>,
    },
}

#[derive(Subcommand, Debug)]
pub enum TenantCommand {
    /// Create a tenant and its age identity (stored wrapped by the KEK).
    Create { name: String },
    /// Write a tenant's identity file, for restores without the catalog.
    ExportIdentity {
        name: String,
        /// Where to write it (mode 0600, never overwritten).
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Subcommand, Debug)]
pub enum ScheduleCommand {
    /// Schedule TENANT/SOURCE: `--cron '0 3 * * *' --timezone Europe/Paris` or `--every 6h`.
    Add {
        /// `tenant/source`
        source: String,
        /// Cron expression: 5 fields (minute hour day month weekday) or 6 with seconds first.
        #[arg(long, conflicts_with = "every", required_unless_present = "every")]
        cron: Option<String>,
        /// IANA time zone the cron expression is read in.
        #[arg(long, default_value = "UTC", requires = "cron")]
        timezone: String,
        /// Interval, e.g. `30s`, `15m`, `6h`, `1day`. Slots start at multiples of it since the unix epoch.
        #[arg(long)]
        every: Option<String>,
    },
    /// List schedules.
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Remove a source's schedule.
    Rm { source: String },
    /// Resume a paused schedule.
    Enable { source: String },
    /// Pause a schedule.
    Disable { source: String },
}

#[derive(Subcommand, Debug)]
// Parsed once per process: the size of the variants does not matter.
#[allow(clippy::large_enum_variant)]
pub enum SourceCommand {
    /// Add a source: `vaultline source add acme/docs --type files --path /srv/docs`,
    /// `… acme/db --type postgres --url postgres://backup@db:5432/shop --password-file F`,
    /// `… acme/vault --type command --command 'vault operator raft snapshot save -'`.
    Add {
        /// `tenant/source`
        source: String,
        /// Source type (mysql is stored as mariadb).
        #[arg(long = "type", value_enum, default_value_t = crate::sources::SourceKind::Files)]
        kind: crate::sources::SourceKind,
        /// Directory to back up (files).
        #[arg(long)]
        path: Option<PathBuf>,
        /// Database URL without a password (postgres://…, mariadb://…).
        #[arg(long)]
        url: Option<String>,
        /// File holding the database password; stored sealed with the credentials key.
        #[arg(long)]
        password_file: Option<PathBuf>,
        /// Shell command whose stdout is the backup (command).
        #[arg(long)]
        command: Option<String>,
        /// Shell command that reads a backup on stdin to restore it (command).
        #[arg(long)]
        restore_command: Option<String>,
        /// File holding a secret for the command, stored sealed (command).
        #[arg(long)]
        secret_file: Option<PathBuf>,
        /// Environment variable the command receives the secret in (command).
        #[arg(long)]
        secret_env: Option<String>,
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
    /// Replace a source's stored password or secret (rotation); the next
    /// snapshot uses it. Stored sealed with the credentials key.
    SetCredential {
        /// `tenant/source`
        source: String,
        /// File holding the new password or secret.
        #[arg(long = "from-file")]
        file: PathBuf,
    },
}
