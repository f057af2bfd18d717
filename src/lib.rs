//! promd keeps exactly one replica of a service active across hosts.
//!
//! The tree mirrors the architecture:
//! - [`core`]: the sans-I/O group state machine (no tokio, no clocks inside);
//! - [`agent`]: the pure layer above the machines: the group table, the reload diff, D-Bus
//!   call settlement, `STATUS=`, the journal's records; one [`agent::Input`] in, outputs out;
//! - [`store`]: the coordination store drivers (etcd, directory) behind one trait;
//! - [`systemd`], [`watch`], [`health`], [`dbus`], [`http`], [`notify`], [`logging`]: the other
//!   drivers ([`status`]: the cluster view both promctl and `GET /v1/status` show);
//! - [`runtime`]: the event loop that turns driver events into the agent's inputs and carries
//!   out its outputs;
//! - [`announce`], [`refuse`]: what a floating address's unit runs as the address comes and
//!   goes (`promd announce`, `promd refuse`);
//! - [`config`][]: `/etc/promd/promd.toml`; [`certs`]: the validity of its certificates; [`running`]: what the running promd was started
//!   with, for `promd check-config --reload`.

pub mod agent;
pub mod announce;
pub mod certs;
pub mod config;
pub mod core;
pub mod dbus;
pub mod health;
pub mod hostlock;
pub mod http;
pub mod logging;
pub mod metrics;
pub mod migrate;
pub mod notify;
pub mod refuse;
pub mod running;
pub mod runtime;
pub mod status;
pub mod store;
mod sync;
pub mod systemd;
pub mod termfloor;
pub mod watch;
pub mod watchdog;
