//! `hypervisor-agent`: the zone attestor's host daemon. It owns the zones of
//! this host (records, jailed VMM processes, host channels), the TPM and the
//! event log (through `host-attest`), and serves the gRPC control API on a
//! Unix socket.
//!
//! | module | concept |
//! |---|---|
//! | [`artifacts`] | opening a launch's boot artifacts with the caller's rights |
//! | [`manager`] | the zone manager: launch, stop, destroy, readiness, evidence requests |
//! | [`store`] | zone records |
//! | [`zone_dir`] | the layout of a zone's directory: every path, how each file is written and read |
//! | [`jail`] | the daemon's half of each VMM's jail: uids, cgroups, jail directories, spawning in new namespaces |
//! | [`supervisor`] | identifying, watching and signalling VMM processes |
//! | [`channel`] | the daemon's end of each zone's host channel |
//! | [`forward`] | host services forwarded into zones |
//! | [`network`] | the zone network: links, TAPs, published ports |
//! | [`firewall`] | the zone network's policy in the host's nftables |
//! | [`cni`] | the CNI runtime: a network configuration list's plugins, ADD and DEL, their result |
//! | [`sandbox`] | a CNI zone's network namespace: its TAP joined to the plugins' interface |
//! | [`config`] | the TOML configuration |
//! | [`api`] | the gRPC control API on a Unix socket |
//! | [`agent`] | the `hypervisor-agent` program |

pub mod agent;
pub mod api;
pub mod artifacts;
pub mod channel;
pub mod cni;
pub mod config;
pub mod firewall;
pub mod forward;
pub mod jail;
pub mod manager;
pub mod network;
pub mod sandbox;
pub mod store;
pub mod supervisor;
pub mod zone_dir;
