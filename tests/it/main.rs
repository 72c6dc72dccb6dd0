//! Every integration test in one binary, so the crate links once: one module per area,
//! shared helpers in `support` (test repositories, the fake Qdrant server).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

mod cli;
mod dirtar;
mod forget;
mod golden;
mod golden_v2;
mod list_blocks;
mod qdrant_client;
mod qdrant_e2e;
mod repository;
mod secrets;
mod sources;
mod storage;
mod verify;
