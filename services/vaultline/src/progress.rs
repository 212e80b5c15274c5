//! How long commands show that they are moving: a bar on a terminal
//! (indicatif: done, rate, ETA), plain lines elsewhere (a log has no use
//! for carriage returns), or with `--json` one JSON object per event.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::output::human_bytes;

/// Off a terminal, a progress line at most this often.
const LINE_EVERY: Duration = Duration::from_secs(2);
/// With --json, a progress event at most this often.
const JSON_EVERY: Duration = Duration::from_secs(1);

/// What is being counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unit {
    Bytes,
    /// Things with a name of their own: manifests, objects.
    Items(&'static str),
}

/// Where events go: JSON to stdout unless stdout carries data (restore --to -).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Output {
    /// A bar or lines on stderr, JSON on stdout.
    Default,
    /// Everything on stderr: stdout is the data.
    StderrOnly,
}

enum Style {
    Bar(ProgressBar),
    /// `last` starts at the start: a command done within LINE_EVERY
    /// prints no progress at all, only its own summary.
    Lines {
        last: Instant,
        printed: bool,
    },
    Json {
        last: Option<Instant>,
        to_stderr: bool,
    },
}

/// One command's progress.
pub(crate) struct Progress {
    what: String,
    unit: Unit,
    total: Option<u64>,
    started: Instant,
    style: Style,
}

impl Progress {
    /// A bar when stderr is a terminal, lines when not, JSON with `json`.
    pub(crate) fn start(
        what: &str,
        unit: Unit,
        total: Option<u64>,
        json: bool,
        output: Output,
    ) -> Progress {
        let style = if json {
            Style::Json {
                last: None,
                to_stderr: matches!(output, Output::StderrOnly),
            }
        } else if std::io::stderr().is_terminal() {
            Style::Bar(bar(what, unit, total))
        } else {
            Style::Lines {
                last: Instant::now(),
                printed: false,
            }
        };
        let progress = Progress {
            what: what.to_owned(),
            unit,
            total,
            started: Instant::now(),
            style,
        };
        progress.event("started", 0, None);
        progress
    }

    /// The total became known (e.g. once a manifest's size is read).
    pub(crate) fn set_total(&mut self, total: u64) {
        self.total = Some(total);
        if let Style::Bar(bar) = &self.style {
            bar.set_length(total);
            bar.set_style(bar_style(self.unit, true));
        }
    }

    /// How far it is.
    pub(crate) fn update(&mut self, done: u64) {
        let now = Instant::now();
        match &mut self.style {
            Style::Bar(bar) => bar.set_position(done),
            Style::Lines { last, printed } => {
                if now - *last >= LINE_EVERY {
                    *last = now;
                    *printed = true;
                    eprintln!(
                        "{}",
                        line(&self.what, self.unit, self.total, self.started, done)
                    );
                }
            }
            Style::Json { last, .. } => {
                if last.is_none_or(|t| now - t >= JSON_EVERY) {
                    *last = Some(now);
                    self.event("progress", done, None);
                }
            }
        }
    }

    /// A line of the command's own output (a status, a summary): on stdout
    /// as always, above the bar on a terminal, an event with --json.
    pub(crate) fn note(&self, message: &str) {
        match &self.style {
            Style::Bar(bar) => bar.println(message),
            Style::Lines { .. } => println!("{message}"),
            Style::Json { .. } => self.event("note", 0, Some(message)),
        }
    }

    /// The end: the bar is cleared, a last line or event says where it got.
    pub(crate) fn finish(self, done: u64, ok: bool) {
        match &self.style {
            Style::Bar(bar) => bar.finish_and_clear(),
            Style::Lines { printed: true, .. } => eprintln!(
                "{}",
                line(&self.what, self.unit, self.total, self.started, done)
            ),
            Style::Lines { .. } | Style::Json { .. } => {}
        }
        self.event(if ok { "finished" } else { "failed" }, done, None);
    }

    /// Follows `counter` until the returned guard is finished or dropped,
    /// updating every 100 ms (the styles thin that out themselves).
    pub(crate) fn follow(self, counter: Arc<AtomicU64>) -> Following {
        self.follow_growing(counter, None)
    }

    /// [`Progress::follow`], with a total that grows as work is found
    /// (0: not known yet).
    pub(crate) fn follow_growing(
        self,
        counter: Arc<AtomicU64>,
        total: Option<Arc<AtomicU64>>,
    ) -> Following {
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<bool>();
        let task = tokio::spawn(async move {
            let mut progress = self;
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            let ok = loop {
                tokio::select! {
                    ok = &mut stopped => break ok.unwrap_or(false),
                    _ = tick.tick() => {
                        let known = total.as_ref().map_or(0, |t| t.load(Ordering::Relaxed));
                        if known > 0 && progress.total != Some(known) {
                            progress.set_total(known);
                        }
                        progress.update(counter.load(Ordering::Relaxed));
                    }
                }
            };
            progress.finish(counter.load(Ordering::Relaxed), ok);
        });
        Following {
            stop: Some(stop),
            task: Some(task),
        }
    }

    fn event(&self, event: &str, done: u64, message: Option<&str>) {
        let Style::Json { to_stderr, .. } = self.style else {
            return;
        };
        let elapsed = self.started.elapsed().as_secs_f64();
        let unit = match self.unit {
            Unit::Bytes => "bytes",
            Unit::Items(name) => name,
        };
        let value = serde_json::json!({
            "event": event,
            "what": self.what,
            "unit": unit,
            "done": done,
            "total": self.total,
            "elapsed_seconds": (elapsed * 1000.0).round() / 1000.0,
            "per_second": if elapsed > 0.0 { (done as f64 / elapsed).round() } else { 0.0 },
            "message": message,
        });
        let line = format!("{value}\n");
        // A closed pipe is the reader's choice; the command goes on.
        let _ = if to_stderr {
            std::io::stderr().write_all(line.as_bytes())
        } else {
            std::io::stdout().write_all(line.as_bytes())
        };
    }
}

/// Stops following when told how it ended, or when dropped (as failed).
pub(crate) struct Following {
    stop: Option<tokio::sync::oneshot::Sender<bool>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Following {
    /// Ends the display and waits until its last line is out.
    pub(crate) async fn finish(mut self, ok: bool) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(ok);
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for Following {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(false);
        }
    }
}

fn amount(unit: Unit, n: u64) -> String {
    match unit {
        Unit::Bytes => human_bytes(n as i64),
        Unit::Items(name) => format!("{n} {name}"),
    }
}

/// `restore: 300.0 MiB of 1.0 GiB (29%), 150.0 MiB/s, 5s left`.
fn line(what: &str, unit: Unit, total: Option<u64>, started: Instant, done: u64) -> String {
    let elapsed = started.elapsed().as_secs_f64().max(0.001);
    let rate = done as f64 / elapsed;
    let mut line = format!("{what}: {}", amount(unit, done));
    if let Some(total) = total.filter(|t| *t > 0) {
        line += &format!(
            " of {} ({}%)",
            amount(unit, total),
            done.min(total) * 100 / total
        );
        if rate > 0.0 && done < total {
            line += &format!(", {}s left", ((total - done) as f64 / rate).ceil() as u64);
        }
    }
    match unit {
        Unit::Bytes => line += &format!(", {}/s", human_bytes(rate as i64)),
        Unit::Items(name) => line += &format!(", {rate:.1} {name}/s"),
    }
    line
}

fn bar(what: &str, unit: Unit, total: Option<u64>) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(total, ProgressDrawTarget::stderr_with_hz(10));
    bar.set_style(bar_style(unit, total.is_some()));
    bar.set_prefix(what.to_owned());
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

fn bar_style(unit: Unit, known: bool) -> ProgressStyle {
    let template = match (unit, known) {
        (Unit::Bytes, true) => {
            "{prefix} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}"
        }
        (Unit::Bytes, false) => "{prefix} {spinner} {bytes} {bytes_per_sec} {elapsed}",
        (Unit::Items(_), true) => "{prefix} [{bar:30}] {pos}/{len} {per_sec} ETA {eta}",
        (Unit::Items(_), false) => "{prefix} {spinner} {pos} {per_sec} {elapsed}",
    };
    ProgressStyle::with_template(template)
        .expect("the templates above are valid")
        .progress_chars("=> ")
}
