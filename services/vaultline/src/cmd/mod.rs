//! One module per command group, each holding its clap type and its handler,
//! the way mini-redis keeps `cmd/*`. Handlers share only `crate::context`
//! (catalog, `tenant/source`), `crate::output` and `crate::request`.

pub mod audit;
pub mod backup;
pub mod catalog;
pub mod check;
pub mod copy;
pub mod drill;
pub mod gc;
pub mod history;
pub mod keys;
pub mod ls;
pub mod pitr;
pub(crate) mod pitr_drill;
pub mod restore;
pub mod retention;
pub mod schedule;
pub mod serve;
pub mod setup;
pub mod snapshot;
pub mod snapshots;
pub mod source;
pub mod stats;
pub mod tenant;
pub mod token;
pub mod verify;
pub mod wal;
pub mod webhook;
