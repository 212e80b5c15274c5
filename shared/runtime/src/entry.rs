//! Process entry points: a [`Node`] runs one or more stages over one set of
//! dependencies. Per-stage binaries run one; `vaultline serve` runs them all.

use crate::deps::StartError;
use crate::{Config, Deps, ErrorType, Stage, StageError, runner};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinSet;
use vaultline_types::StageName;

/// Stages running in this process.
pub struct Node {
    /// The process's own dependencies (its own NATS user and catalog role).
    pub deps: Arc<Deps>,
    /// Each stage's, where it has an identity of its own.
    stage_deps: std::collections::HashMap<StageName, Arc<Deps>>,
    /// Where /metrics and /health answer.
    pub admin: SocketAddr,
    stop_tx: watch::Sender<bool>,
    stop_rx: watch::Receiver<bool>,
    tasks: JoinSet<()>,
}

impl Node {
    /// Opens the dependencies (waiting up to a minute for them), starts the
    /// admin server and the staging sweeper.
    ///
    /// # Errors
    /// When NATS or the catalog stays unreachable, storage cannot be opened,
    /// or the admin port cannot be bound.
    pub async fn start(config: Config, client_name: &str) -> Result<Node, StartError> {
        crate::metrics::install();
        let listen = config.admin.listen.clone();
        // At boot NATS or PostgreSQL may still be starting: wait a while, saying so.
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        let deps = loop {
            match Deps::open(config.clone(), client_name).await {
                Ok(deps) => break deps,
                Err(error) if !error.is_permanent() && std::time::Instant::now() < deadline => {
                    tracing::warn!(%error, "Dependencies not ready; retrying in 2s.");
                    tokio::time::sleep(Duration::from_secs(2)).await;
                }
                Err(error) => return Err(error),
            }
        };
        let (stop_tx, stop_rx) = watch::channel(false);
        let admin = crate::admin::serve(&listen, deps.clone(), stop_rx.clone())
            .await
            .map_err(|e| StartError::Other(format!("cannot listen on {listen}: {e}")))?;
        let mut tasks = JoinSet::new();
        tasks.spawn(sweep_staging(deps.clone(), stop_rx.clone()));
        Ok(Node {
            deps,
            stage_deps: std::collections::HashMap::new(),
            admin,
            stop_tx,
            stop_rx,
            tasks,
        })
    }

    /// The dependencies `stage` runs with: its own NATS user and catalog
    /// role when configured (opened once), the process's otherwise.
    ///
    /// # Errors
    /// When its login is refused or a dependency is not set up.
    pub async fn deps_for(&mut self, stage: StageName) -> Result<Arc<Deps>, StartError> {
        if let Some(deps) = self.stage_deps.get(&stage) {
            return Ok(deps.clone());
        }
        let deps = self.deps.for_stage(stage).await?;
        self.stage_deps.insert(stage, deps.clone());
        crate::metrics::gauge(
            crate::metrics::MetricName::BuildInfo,
            &[
                ("stage", stage.to_string()),
                ("version", env!("CARGO_PKG_VERSION").to_owned()),
            ],
            1.0,
        );
        self.tasks.spawn(crate::micro::serve(
            stage,
            deps.bus.client.clone(),
            self.stop_rx.clone(),
        ));
        Ok(deps)
    }

    /// Builds stage `S` and runs it.
    ///
    /// # Errors
    /// When the stage cannot be built.
    pub async fn spawn<S: Stage>(&mut self) -> Result<(), StageError> {
        let deps = self.deps_for(S::NAME).await.map_err(start_failed)?;
        let stage = S::new(deps).await?;
        self.spawn_stage(stage).await
    }

    /// Runs an already built stage (tests wrap real stages this way).
    ///
    /// # Errors
    /// When its dependencies cannot be opened.
    pub async fn spawn_stage<S: Stage>(&mut self, stage: S) -> Result<(), StageError> {
        let deps = self.deps_for(S::NAME).await.map_err(start_failed)?;
        self.tasks
            .spawn(runner::run(Arc::new(stage), deps, self.stop_rx.clone()));
        Ok(())
    }

    /// Runs a service of `stage` that is not a consumer (the scheduler, the
    /// drill timer): it gets the stage's dependencies and the stop signal,
    /// and must return once it flips.
    ///
    /// # Errors
    /// When the stage's dependencies cannot be opened.
    pub async fn spawn_service<F, Fut>(
        &mut self,
        stage: StageName,
        service: F,
    ) -> Result<(), StageError>
    where
        F: FnOnce(Arc<Deps>, watch::Receiver<bool>) -> Fut,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let deps = self.deps_for(stage).await.map_err(start_failed)?;
        self.tasks.spawn(service(deps, self.stop_rx.clone()));
        Ok(())
    }

    /// Stops taking work, finishes what is in flight, and returns.
    pub async fn shutdown(mut self) {
        let _ = self.stop_tx.send(true);
        while self.tasks.join_next().await.is_some() {}
        crate::telemetry::flush().await;
    }

    /// Runs until SIGTERM or Ctrl-C, then shuts down gracefully.
    pub async fn run_until_signal(self) {
        let mut signal = crate::shutdown_on_signal();
        let _ = signal.wait_for(|stop| *stop).await;
        self.shutdown().await;
    }
}

fn start_failed(error: StartError) -> StageError {
    StageError::permanent(ErrorType::Config, error)
}

async fn sweep_staging(deps: Arc<Deps>, mut stop: watch::Receiver<bool>) {
    let period =
        (deps.config.staging.ttl / 4).clamp(Duration::from_secs(1), Duration::from_secs(600));
    loop {
        tokio::select! {
            _ = tokio::time::sleep(period) => {}
            _ = stop.wait_for(|stop| *stop) => return,
        }
        let staging = deps.staging.clone();
        if let Ok(removed) = tokio::task::spawn_blocking(move || staging.sweep()).await
            && removed > 0
        {
            tracing::info!(removed, "Swept expired staging items.");
        }
    }
}

/// `main` of a per-stage binary `vaultline-<stage>`: config from
/// `VAULTLINE_CONFIG` (a TOML file) and `VAULTLINE_*` variables.
pub fn main_single<S: Stage>() -> ExitCode {
    main_with(S::NAME, async |node: &mut Node| node.spawn::<S>().await)
}

/// `main` of a binary whose node `setup` fills (the scheduler's, for one).
pub fn main_with<F>(name: StageName, setup: F) -> ExitCode
where
    F: AsyncFnOnce(&mut Node) -> Result<(), StageError>,
{
    // The configuration is read first: whether spans are exported is
    // decided when logging is set up.
    let path = std::env::var_os("VAULTLINE_CONFIG").map(std::path::PathBuf::from);
    let config = Config::load(path.as_deref()).map(|c| c.as_stage(name));
    let export = config.as_ref().ok().and_then(|c| {
        c.telemetry
            .otlp_endpoint
            .clone()
            .map(|endpoint| crate::telemetry::Export {
                endpoint,
                service: format!("vaultline-{name}"),
            })
    });
    run_main_exporting(export, async {
        let mut node = Node::start(config?, &format!("vaultline-{name}")).await?;
        setup(&mut node).await?;
        node.run_until_signal().await;
        Ok::<_, Box<dyn std::error::Error>>(ExitCode::SUCCESS)
    })
}

/// Sets up logging and the async runtime, runs `main`, and prints its error
/// as one line (`error: …`, with `{:#}` so that an anyhow error shows its
/// causes), never a backtrace.
pub fn run_main<F, E>(main: F) -> ExitCode
where
    F: std::future::Future<Output = Result<ExitCode, E>>,
    E: std::fmt::Display,
{
    run_main_exporting(None, main)
}

/// [`run_main`], exporting spans as `export` says.
pub fn run_main_exporting<F, E>(export: Option<crate::telemetry::Export>, main: F) -> ExitCode
where
    F: std::future::Future<Output = Result<ExitCode, E>>,
    E: std::fmt::Display,
{
    crate::allocator::bound();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            crate::telemetry::init();
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    {
        let _inside = runtime.enter();
        if let Err(e) = crate::telemetry::init_exporting(export.as_ref()) {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    }
    match runtime.block_on(main) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
