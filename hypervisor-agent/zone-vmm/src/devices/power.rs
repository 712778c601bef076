//! The zone power port.
//!
//! The zone kernel has no ACPI, so a powered-off guest would otherwise just
//! halt. `zone-guest` (see `zone-guest/README.md`) writes the exit status of
//! the zone's command, one byte, to this port to power the zone off; the VMM
//! ends the zone with [`crate::outcome::ExitReason::PowerOff`] carrying that
//! status. The port number is the one QEMU's `isa-debug-exit` device uses by
//! default, so the same zone image also powers off under QEMU (which exits
//! with `status * 2 + 1`). It is part of the boot contract with zone-guest
//! (`attestation_proto::zone::POWER_PORT`).

/// The power port.
pub const PORT: u16 = attestation_proto::zone::POWER_PORT;
