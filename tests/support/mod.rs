//! Shared by the integration tests: a real etcd cluster and real systemd hosts in nspawn
//! containers. Every resource is tied to a value whose Drop removes it, also when a test fails.
#![allow(dead_code)]

pub mod bench;
pub mod bus;
pub mod campaign;
pub mod cluster;
pub mod etcd;
pub mod groups;
pub mod haproxy;
pub mod hosts;
pub mod http;
pub mod http_load;
pub mod lan;
pub mod pki;
pub mod promtool;
pub mod vip;
