//! The system tests: they need root and change the machine for their run — network
//! namespaces, nft tables, memory cgroups (`chaos`), a Docker engine with the compose stack of
//! `containers/` (`compose_stack`). They take turns: one runs at a time.
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Mutex, MutexGuard};

mod chaos;
mod compose_stack;

static TURN: Mutex<()> = Mutex::new(());

/// Waits for the machine: a test that changes it holds this guard for its whole run.
fn take_turn() -> MutexGuard<'static, ()> {
    TURN.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
