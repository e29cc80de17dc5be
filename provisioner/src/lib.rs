//! Provisioner: the on-prem appliance that network-boots, inspects, burns in and enrolls GPU
//! and Trainium servers. This crate is the appliance; `main.rs` is its command line.

pub mod admin;
pub mod app;
pub mod artifacts;
pub mod boot;
pub mod burnin;
pub mod checklist;
pub mod clock;
pub mod config;
pub mod dhcp;
pub mod drivers;
pub mod error;
pub mod events;
pub mod firmware;
pub mod http;
pub mod image;
pub mod install;
pub mod keys;
pub mod lab;
pub mod lifecycle;
pub mod metrics;
pub mod net;
pub mod provide;
pub mod repo;
pub mod store;
pub mod supervise;
pub mod tftp;
pub mod types;
