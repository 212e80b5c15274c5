//! vaultline-policy: when backups run and how long they are kept. Schedule
//! specs and the slots they make, retention policies and their verdicts.
//! No I/O (a cron schedule that can never fire is refused against the
//! current time, nothing else reads the clock), so the
//! scheduler and retention stages, the CLI's preview and the tests decide
//! with the same code.

pub mod retention;
pub mod schedule;

pub use retention::{Candidate, Decision, Policy, Verdict, evaluate};
pub use schedule::{Cadence, CadenceError, ScheduleSpec};
