//! `zonectl`: the zone attestor's command line. It talks to `hypervisor-agent`
//! over its control socket (launch, inspect, logs, console, evidence), boots
//! a zone in the foreground without a daemon (`zonectl run`, through the
//! VMM library), verifies evidence offline, computes expected digests and
//! builds zone images. It links neither the daemon nor the TPM stack.
//!
//! | module | concept |
//! |---|---|
//! | [`cli`] | the command line: one module per subcommand |
//! | [`image`] | reproducible zone initramfs images |

pub mod cli;
pub mod image;
