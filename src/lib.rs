//! promd keeps exactly one replica of a service active across hosts.
//!
//! The tree mirrors the architecture:
//! - [`core`]: the sans-I/O group state machine (no tokio, no clocks inside);
//! - [`store`]: the coordination store drivers (etcd, directory) behind one trait;
//! - [`systemd`], [`notify`], [`logging`]: the other drivers;
//! - [`runtime`]: the event loop that feeds driver events to the machines and carries out
//!   their actions;
//! - [`config`][]: `/etc/promd/promd.toml`; [`running`]: what the running promd was started
//!   with, for `promd check-config --reload`.

pub mod config;
pub mod core;
pub mod dbus;
pub mod health;
pub mod hostlock;
pub mod logging;
pub mod migrate;
pub mod notify;
pub mod running;
pub mod runtime;
pub mod store;
pub mod systemd;
pub mod watch;
