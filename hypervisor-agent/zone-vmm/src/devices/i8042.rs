//! The part of the i8042 keyboard controller a zone needs: the CPU reset line.
//!
//! Linux reboots with `reboot=k` by writing command 0xFE ("pulse output line 0",
//! wired to CPU reset on PCs) to the command port. No keyboard is emulated: the
//! status register reads as "no data, input buffer empty", so the guest's
//! drivers (if any) find nothing to probe.

/// Data port.
pub const DATA_PORT: u16 = 0x60;
/// Command/status port.
pub const COMMAND_PORT: u16 = 0x64;
/// "Pulse output line 0": resets the CPU.
const CMD_RESET_CPU: u8 = 0xfe;

/// Handles a write; `Some(())` means the guest requested a reset.
pub fn write(port: u16, data: &[u8]) -> Option<()> {
    (port == COMMAND_PORT && data.first() == Some(&CMD_RESET_CPU)).then_some(())
}

/// Handles a read: the status and data registers are always empty.
pub fn read(_port: u16) -> u8 {
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_reset_command_resets() {
        assert_eq!(write(COMMAND_PORT, &[0xfe]), Some(()));
        assert_eq!(write(COMMAND_PORT, &[0xad]), None);
        assert_eq!(write(DATA_PORT, &[0xfe]), None);
        assert_eq!(read(COMMAND_PORT), 0);
    }
}
