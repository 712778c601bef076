//! The kernel command line a zone gets: the configured one plus the parameters
//! the VMM adds for its devices (`virtio_mmio.device=<size>@<base>:<irq>`, read
//! by Linux `CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES`). They go before a ` -- `
//! separator: what follows it is the zone's command (for `init`), which must
//! stay exactly as given.

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
