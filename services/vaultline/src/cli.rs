//! The command line: every command, and which module of `cmd` runs it.
//! Every command loads the same configuration as the services:
//! `--config FILE` (or `VAULTLINE_CONFIG`), then `VAULTLINE_*` variables.

use crate::cmd::{
    audit, backup, catalog, check, copy, drill, gc, history, keys, ls, pitr, restore, retention,
    schedule, serve, setup, snapshot, snapshots, source, stats, tenant, token, verify, wal,
    webhook,
};
use anyhow::Result;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use vaultline_runtime::Config;

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

impl Cli {
    /// Where `serve` exports spans, when the configuration says (other
    /// commands never do). A configuration that does not load is reported
    /// when the command runs.
    pub fn span_export(&self) -> Option<vaultline_runtime::telemetry::Export> {
        if !matches!(self.command, Command::Serve(_)) {
            return None;
        }
        let config = Config::load(self.config.as_deref()).ok()?;
        config
            .telemetry
            .otlp_endpoint
            .map(|endpoint| vaultline_runtime::telemetry::Export {
                endpoint,
                service: "vaultline".to_owned(),
            })
    }
}

#[derive(Subcommand, Debug)]
// Parsed once per process: the size of the variants does not matter.
#[allow(clippy::large_enum_variant)]
pub enum Command {
    /// Apply catalog migrations.
    Migrate,
    /// Rebuild the catalog from the repository, or compare the two.
    #[command(subcommand)]
    Catalog(catalog::CatalogCommand),
    /// Write a new key-encryption key (an age identity file) to FILE; with
    /// --staging, a staging key pair instead (the file is the packager's
    /// half; the recipient printed is the extractor's).
    KekGenerate(setup::KekArgs),
    /// Rotate the key-encryption key: `kek rotate --new FILE`.
    #[command(subcommand)]
    Kek(keys::RotateCommand),
    /// Rotate the credentials key: `credentials-key rotate --new FILE`.
    #[command(subcommand)]
    CredentialsKey(keys::RotateCommand),
    /// Manage tenants.
    #[command(subcommand)]
    Tenant(tenant::TenantCommand),
    /// Manage sources.
    #[command(subcommand)]
    Source(source::SourceCommand),
    /// Manage schedules (one per source: cron in a time zone, or an interval).
    #[command(subcommand)]
    Schedule(schedule::ScheduleCommand),
    /// Retention policies: set one, or preview what it keeps and forgets.
    #[command(subcommand)]
    Retention(retention::RetentionCommand),
    /// Garbage-collect packs no snapshot references (after the grace period).
    Gc(gc::GcArgs),
    /// The audit trail.
    #[command(subcommand)]
    Audit(audit::AuditCommand),
    /// Backup runs, newest first: trigger, status, duration, bytes, error.
    History(history::HistoryArgs),
    /// Success rate, last success and last verified per source; repository size and dedup.
    Stats(stats::StatsArgs),
    /// Signed webhooks per tenant.
    #[command(subcommand)]
    Webhook(webhook::WebhookCommand),
    /// Bearer tokens of the HTTP API (`token create --tenant T --scope read|trigger|admin`).
    #[command(subcommand)]
    Token(token::TokenCommand),
    /// Trigger a backup of TENANT/SOURCE now.
    Backup(backup::BackupArgs),
    /// List snapshots, newest first (with --repo, from the repository alone).
    Snapshots(snapshots::SnapshotsArgs),
    /// Protect a snapshot from retention, lift that, or forget one by hand
    /// (`snapshot protect|unprotect|forget ID`).
    #[command(subcommand)]
    Snapshot(snapshot::SnapshotCommand),
    /// Copy stored snapshots into another repository (`--to-repo URL` or a
    /// configured copy's name), moving only the objects it lacks; with
    /// --to-kek the key records are wrapped to the target's own KEK.
    Copy(copy::CopyArgs),
    /// List the entries of a snapshot (`ls SNAPSHOT [PATH] [--long|--json]`).
    Ls(ls::LsArgs),
    /// Restore a snapshot into a directory.
    Restore(restore::RestoreArgs),
    /// Check a snapshot now: level 1 (stored objects against their recorded
    /// digests, no key), or with --full level 2 as well (read back in full and
    /// compared with the source digest). A damaged snapshot is marked corrupt
    /// and the exit code is 1.
    Verify(verify::VerifyArgs),
    /// Check the repository against the catalog: every pack present with
    /// its size, every manifest re-hashed, and with --read-data-subset a
    /// random share of the packs read back. Exit code 1 on any damage.
    Check(check::CheckArgs),
    /// Restore the latest verified snapshot of a postgres or mariadb source
    /// into a scratch database, compare every table's row count with the
    /// counts taken at dump time, drop the scratch database, and publish the
    /// result. Exit code 1 when a count differs or the restore fails.
    /// A physical postgres source is drilled here instead: a point-in-time
    /// recovery to a random point of its window, started with PostgreSQL
    /// (as the user that runs it, never root) until it promotes.
    Drill(drill::DrillArgs),
    /// Run stages: all of them, or those named with --stage.
    Serve(serve::ServeArgs),
    /// PostgreSQL's archive_command for a physical postgres source:
    /// `vaultline wal-push %p --source T/S`. Exits 0 once the file is
    /// stored and recorded; a file of the same name with other bytes
    /// fails loudly and replaces nothing.
    WalPush(wal::WalPushArgs),
    /// PostgreSQL's restore_command during point-in-time recovery (restore
    /// --pitr writes it): `vaultline wal-fetch %f %p --source T/S`.
    /// Exit code 1: not archived (the end of recovery); 126: it could not
    /// be fetched, and recovery stops rather than end short.
    WalFetch(wal::WalFetchArgs),
    /// Point-in-time recovery of physical postgres sources.
    #[command(subcommand)]
    Pitr(pitr::PitrCommand),
}

/// Runs one command.
///
/// # Errors
/// Whatever the command ran into, as one readable chain.
pub async fn run(cli: Cli) -> Result<ExitCode> {
    let config = Config::load(cli.config.as_deref())?;
    match cli.command {
        Command::Migrate => setup::migrate(&config).await,
        Command::Catalog(command) => catalog::run(&config, command).await,
        Command::KekGenerate(args) => setup::kek_generate(args),
        Command::Kek(command) => keys::rotate_kek(&config, command).await,
        Command::CredentialsKey(command) => keys::rotate_credentials_key(&config, command).await,
        Command::Tenant(command) => tenant::run(&config, command).await,
        Command::Source(command) => source::run(&config, command).await,
        Command::Schedule(command) => schedule::run(&config, command).await,
        Command::Retention(command) => retention::run(&config, command).await,
        Command::Gc(args) => gc::run(&config, args).await,
        Command::Audit(command) => audit::run(&config, command).await,
        Command::History(args) => history::run(&config, args).await,
        Command::Stats(args) => stats::run(&config, args).await,
        Command::Webhook(command) => webhook::run(&config, command).await,
        Command::Token(command) => token::run(&config, command).await,
        Command::Backup(args) => backup::run(&config, args).await,
        Command::Snapshots(args) => snapshots::run(&config, args).await,
        Command::Snapshot(command) => snapshot::run(&config, command).await,
        Command::Copy(args) => copy::run(&config, args).await,
        Command::Ls(args) => ls::run(&config, args).await,
        Command::Restore(args) => restore::run(&config, cli.config.as_deref(), args).await,
        Command::WalPush(args) => wal::push(&config, args).await,
        Command::WalFetch(args) => wal::fetch(&config, args).await,
        Command::Pitr(command) => pitr::run(&config, command).await,
        Command::Verify(args) => verify::run(&config, args).await,
        Command::Check(args) => check::run(&config, args).await,
        Command::Drill(args) => drill::run(&config, cli.config.as_deref(), args).await,
        Command::Serve(args) => serve::run(config, args).await,
    }
}
