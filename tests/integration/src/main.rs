//! One integration test binary against real servers started by the harness:
//! nats-server with JetStream and PostgreSQL, each test with its own.

mod audit;
mod cluster;
mod copies;
mod copy_cli;
mod dashboards;
mod drift;
mod failures;
mod fidelity;
mod fixtures;
mod harness;
mod hostile;
mod integrity;
mod kubernetes;
mod nats_tls;
mod object_lock;
mod observe;
mod operate;
mod ops;
mod outages;
mod pipeline;
mod privileges;
mod processes;
mod rebuild;
mod rebuild_cost;
mod recovery;
mod restore_safety;
mod retention;
mod rolling;
mod rotation;
mod s3;
mod schedules;
mod sftp;
mod sources;
mod traces;
