//! Every integration test in one binary, so the crate links once: one module per area,
//! shared helpers in `support` (test repositories, the fake Qdrant server).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

mod check;
mod cli;
mod config;
mod copy;
mod dirtar;
mod dirtree;
mod faults;
mod forget;
mod golden;
mod golden_v2;
mod help;
mod list_blocks;
mod notify;
mod operator;
mod operator_cli;
mod operator_faults;
mod operator_faults_more;
mod oplog;
mod prune;
mod prune_safety;
mod qdrant_client;
mod qdrant_cluster;
mod qdrant_deploy;
mod qdrant_e2e;
mod report;
mod repository;
mod restore_drill;
mod restore_test_qdrant;
mod secrets;
mod signals;
mod sources;
mod storage;
mod verify;
mod verify_tiers;
