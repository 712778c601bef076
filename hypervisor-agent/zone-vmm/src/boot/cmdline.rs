//! The kernel command line a zone gets: the configured one, the zone's
//! command after ` -- ` (encoded as the boot contract with zone-guest says,
//! `attestation_proto::zone`), and the parameters that declare the zone's
//! virtio-mmio devices (`virtio_mmio.device=<size>@<base>:<irq>`, read by
//! Linux `CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES`), which go before the ` -- `.
//!
//! [`boot_cmdline`] computes it once; the daemon measures exactly that string
//! and the VMM loads it verbatim (checking with [`declares_devices`] that it
//! declares the devices the VMM creates).

use attestation_proto::zone::{CommandError, encode_command};

use crate::vstate::layout::{self, VIRTIO_MMIO_SIZE};

/// The command line of zones launched through the daemon when its config sets none.
pub const DEFAULT_ZONE_CMDLINE: &str = "console=ttyS0 reboot=k panic=-1 quiet";
/// The command line of `zonectl run` when none is given.
pub const DEFAULT_RUN_CMDLINE: &str = "console=ttyS0 reboot=k panic=-1";

/// The full kernel command line of a zone with `virtio_devices` virtio-mmio
/// devices: `base`, the device declarations, then ` -- ` and `command`.
pub fn boot_cmdline(base: &str, command: &[String], virtio_devices: u32) -> Result<String, CommandError> {
    let with_command = encode_command(base, command)?;
    Ok(with_params(&with_command, &device_params(virtio_devices)))
}

/// The kernel parameters of an image zone before its devices and command:
/// `base`, the verity root's `dm-mod.create=` and the image's process
/// (`zone.root=` …, read by zone-guest).
pub fn with_image(
    base: &str,
    verity: &attestation_proto::launch::Verity,
    process: &attestation_proto::zone::ImageProcess,
) -> Result<String, CommandError> {
    Ok(format!("{base} {} {}", verity.dm_create_param(), attestation_proto::zone::encode_image_params(process)?))
}

/// The `virtio_mmio.device=` parameters of the first `count` windows.
fn device_params(count: u32) -> Vec<String> {
    (0..count)
        .filter_map(layout::virtio_mmio_slot)
        .map(|(base, irq)| virtio_mmio_device(base, VIRTIO_MMIO_SIZE, irq))
        .collect()
}

/// Whether `cmdline` declares exactly the first `count` virtio-mmio windows,
/// in order, before the zone command.
pub fn declares_devices(cmdline: &str, count: u32) -> bool {
    let kernel_part = &cmdline[..separator(cmdline).unwrap_or(cmdline.len())];
    let declared: Vec<&str> =
        kernel_part.split_ascii_whitespace().filter(|w| w.starts_with("virtio_mmio.device=")).collect();
    declared == device_params(count)
}

/// The parameter that declares a virtio-mmio device to the kernel.
pub fn virtio_mmio_device(base: u64, size: u64, irq: u32) -> String {
    format!("virtio_mmio.device={}K@{base:#x}:{irq}", size >> 10)
}

/// Byte offset of the first `--` word outside double quotes (the kernel's
/// end of its own parameters), if any.
fn separator(cmdline: &str) -> Option<usize> {
    let mut in_quotes = false;
    let mut start: Option<usize> = None;
    for (i, c) in cmdline.char_indices().chain(std::iter::once((cmdline.len(), ' '))) {
        if c == '"' {
            in_quotes = !in_quotes;
        }
        if c.is_ascii_whitespace() && !in_quotes {
            if let Some(s) = start.take() {
                if &cmdline[s..i] == "--" {
                    return Some(s);
                }
            }
        } else if start.is_none() {
            start = Some(i);
        }
    }
    None
}

/// `cmdline` with `params` added to the kernel's own parameters.
pub fn with_params(cmdline: &str, params: &[String]) -> String {
    if params.is_empty() {
        return cmdline.to_owned();
    }
    let added = params.join(" ");
    match separator(cmdline) {
        Some(at) => format!("{}{added} {}", &cmdline[..at], &cmdline[at..]),
        None if cmdline.trim().is_empty() => added,
        None => format!("{} {added}", cmdline.trim_end()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_cmdline_declares_devices_before_the_command() {
        let c = boot_cmdline("console=ttyS0", &["/bin/echo".into(), "hi there".into()], 1).unwrap();
        assert_eq!(c, "console=ttyS0 virtio_mmio.device=4K@0xd0000000:5 -- /bin/echo \"hi there\"");
        assert!(declares_devices(&c, 1));
        assert!(!declares_devices(&c, 0));
        assert!(!declares_devices(&c, 2));
        assert!(declares_devices("console=ttyS0 -- virtio_mmio.device=4K@0xd0000000:5", 0), "after -- is the command");
        assert_eq!(boot_cmdline("x", &[], 0).unwrap(), "x");
        assert!(boot_cmdline("x", &["a\"b".into()], 1).is_err());
    }

    #[test]
    fn device_parameter_format() {
        assert_eq!(virtio_mmio_device(0xd000_0000, 0x1000, 5), "virtio_mmio.device=4K@0xd0000000:5");
    }

    #[test]
    fn params_go_before_the_zone_command() {
        let p = vec!["a=1".to_string(), "b".to_string()];
        assert_eq!(with_params("console=ttyS0", &p), "console=ttyS0 a=1 b");
        assert_eq!(with_params("", &p), "a=1 b");
        assert_eq!(with_params("console=ttyS0 -- /bin/sh -c x", &p), "console=ttyS0 a=1 b -- /bin/sh -c x");
        assert_eq!(with_params("-- /bin/x", &p), "a=1 b -- /bin/x");
        assert_eq!(
            with_params("q \"x -- y\" -- /bin/sh -c \"echo -- z\"", &p),
            "q \"x -- y\" a=1 b -- /bin/sh -c \"echo -- z\""
        );
        assert_eq!(with_params("a--b --x", &p), "a--b --x a=1 b");
        assert_eq!(with_params("console=ttyS0", &[]), "console=ttyS0");
    }
}
