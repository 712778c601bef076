//! vCPU set-up for the PVH entry and the run loop that turns KVM exits into
//! device accesses or a zone outcome.

use std::sync::Arc;

use kvm_bindings::{CpuId, kvm_fpu, kvm_regs};
use kvm_ioctls::{VcpuExit, VcpuFd, VmFd};

use crate::boot::{BootEntry, gdt};
use crate::devices::{Devices, PioAction};
use crate::outcome::ExitReason;
use crate::vstate::{cpuid, layout::BOOT_GDT_START};

/// CR0.PE: protected mode.
const X86_CR0_PE: u64 = 0x1;
/// CR0.ET: extension type (always 1 on modern CPUs).
const X86_CR0_ET: u64 = 0x10;
/// LAPIC LVT0 register offset.
const APIC_LVT0: usize = 0x350;
/// LAPIC LVT1 register offset.
const APIC_LVT1: usize = 0x360;
/// LVT delivery mode ExtINT.
const APIC_MODE_EXTINT: u32 = 0x7;
/// LVT delivery mode NMI.
const APIC_MODE_NMI: u32 = 0x4;
/// KVM_SYSTEM_EVENT_SHUTDOWN.
const SYSTEM_EVENT_SHUTDOWN: u32 = 1;
/// KVM_SYSTEM_EVENT_RESET.
const SYSTEM_EVENT_RESET: u32 = 2;
/// KVM_SYSTEM_EVENT_CRASH.
const SYSTEM_EVENT_CRASH: u32 = 3;

/// Why a vCPU could not be created or configured.
#[derive(Debug, thiserror::Error)]
#[error("vCPU {index}: KVM {op} failed: {source}")]
pub struct VcpuError {
    /// vCPU index.
    pub index: u8,
    /// The operation.
    pub op: &'static str,
    /// The error from the kernel.
    #[source]
    pub source: kvm_ioctls::Error,
}

/// One virtual CPU.
#[derive(Debug)]
pub struct Vcpu {
    /// vCPU index (= APIC ID).
    pub index: u8,
    fd: VcpuFd,
}

impl Vcpu {
    /// Creates vCPU `index` of `vcpus` and prepares it to enter the kernel at
    /// `boot` (the boot processor) or to wait for INIT/SIPI (the others; KVM
    /// keeps application processors halted until the kernel starts them).
    pub fn new(vm: &VmFd, supported: &CpuId, index: u8, vcpus: u8, boot: BootEntry) -> Result<Self, VcpuError> {
        let err = |op| move |source| VcpuError { index, op, source };
        let fd = vm.create_vcpu(u64::from(index)).map_err(err("CREATE_VCPU"))?;
        fd.set_cpuid2(&cpuid::for_vcpu(supported, index, vcpus)).map_err(err("SET_CPUID2"))?;

        let fpu = kvm_fpu { fcw: 0x37f, mxcsr: 0x1f80, ..Default::default() };
        fd.set_fpu(&fpu).map_err(err("SET_FPU"))?;

        let mut sregs = fd.get_sregs().map_err(err("GET_SREGS"))?;
        let code = gdt::segment(gdt::CODE_INDEX);
        let data = gdt::segment(gdt::DATA_INDEX);
        sregs.cs = code;
        sregs.ds = data;
        sregs.es = data;
        sregs.fs = data;
        sregs.gs = data;
        sregs.ss = data;
        sregs.tr = gdt::segment(gdt::TSS_INDEX);
        sregs.gdt.base = BOOT_GDT_START;
        sregs.gdt.limit = u16::try_from(std::mem::size_of_val(&gdt::BOOT_GDT) - 1).unwrap_or(u16::MAX);
        sregs.cr0 = X86_CR0_PE | X86_CR0_ET;
        sregs.cr4 = 0;
        sregs.efer = 0;
        fd.set_sregs(&sregs).map_err(err("SET_SREGS"))?;

        let regs = kvm_regs { rflags: 0x2, rip: boot.entry, rbx: boot.start_info, ..Default::default() };
        fd.set_regs(&regs).map_err(err("SET_REGS"))?;

        // LINT0 receives the legacy PIC (ExtINT), LINT1 NMIs, as on a PC.
        let mut lapic = fd.get_lapic().map_err(err("GET_LAPIC"))?;
        for (offset, mode) in [(APIC_LVT0, APIC_MODE_EXTINT), (APIC_LVT1, APIC_MODE_NMI)] {
            let reg = &mut lapic.regs[offset..offset + 4];
            let bytes: [u8; 4] = std::array::from_fn(|i| reg[i] as u8);
            let value = (u32::from_le_bytes(bytes) & !0x700) | (mode << 8);
            for (dst, src) in reg.iter_mut().zip(value.to_le_bytes()) {
                *dst = src as _;
            }
        }
        fd.set_lapic(&lapic).map_err(err("SET_LAPIC"))?;
        Ok(Self { index, fd })
    }

    /// Logs where a vCPU was when it shut down (a triple fault): the registers
    /// that tell an early-boot fault (paging, GDT, IDT) from a later one.
    fn log_shutdown_state(&self) {
        let regs = self.fd.get_regs();
        let sregs = self.fd.get_sregs();
        match (regs, sregs) {
            (Ok(r), Ok(s)) => tracing::warn!(
                vcpu = self.index,
                rip = format_args!("{:#x}", r.rip),
                rsp = format_args!("{:#x}", r.rsp),
                rflags = format_args!("{:#x}", r.rflags),
                cr0 = format_args!("{:#x}", s.cr0),
                cr2 = format_args!("{:#x}", s.cr2),
                cr3 = format_args!("{:#x}", s.cr3),
                cr4 = format_args!("{:#x}", s.cr4),
                efer = format_args!("{:#x}", s.efer),
                cs = format_args!("{:#x}", s.cs.selector),
                idt = format_args!("{:#x}+{:#x}", s.idt.base, s.idt.limit),
                "the vCPU shut down (triple fault)"
            ),
            (r, s) => tracing::warn!(vcpu = self.index, regs = ?r.err(), sregs = ?s.err(), "the vCPU shut down (triple fault); its registers are unreadable"),
        }
    }

    /// Runs the vCPU until the zone ends or `devices` says to stop; returns
    /// the outcome this vCPU observed, if any.
    pub fn run(mut self, devices: Arc<Devices>) -> Option<ExitReason> {
        loop {
            if devices.stopping() {
                return None;
            }
            let outcome = match self.fd.run() {
                Ok(VcpuExit::IoOut(port, data)) => match devices.pio_write(port, data) {
                    PioAction::Continue => continue,
                    PioAction::Exit(reason) => reason,
                },
                Ok(VcpuExit::IoIn(port, data)) => {
                    devices.pio_read(port, data);
                    continue;
                }
                Ok(VcpuExit::MmioRead(addr, data)) => {
                    devices.mmio_read(addr, data);
                    continue;
                }
                Ok(VcpuExit::MmioWrite(addr, data)) => {
                    devices.mmio_write(addr, data);
                    continue;
                }
                Ok(VcpuExit::Hlt) => ExitReason::Halted,
                Ok(VcpuExit::Shutdown) => {
                    self.log_shutdown_state();
                    ExitReason::TripleFault
                }
                Ok(VcpuExit::SystemEvent(kind, _)) => match kind {
                    SYSTEM_EVENT_SHUTDOWN => ExitReason::PowerOff { status: 0 },
                    SYSTEM_EVENT_RESET => ExitReason::Reset,
                    SYSTEM_EVENT_CRASH => ExitReason::Panic { message: "KVM reported a guest crash".into() },
                    other => ExitReason::VcpuError { vcpu: self.index, detail: format!("system event {other}") },
                },
                Ok(VcpuExit::FailEntry(reason, cpu)) => ExitReason::VcpuError {
                    vcpu: self.index,
                    detail: format!("VM entry failed (hardware reason {reason:#x}, cpu {cpu})"),
                },
                Ok(VcpuExit::InternalError) => {
                    // SAFETY: after KVM_EXIT_INTERNAL_ERROR the kernel has filled the
                    // `internal` member of the exit-information union.
                    let suberror = unsafe { self.fd.get_kvm_run().__bindgen_anon_1.internal.suberror };
                    let rip = self.fd.get_regs().map(|r| format!("{:#x}", r.rip)).unwrap_or_else(|_| "?".into());
                    ExitReason::VcpuError {
                        vcpu: self.index,
                        detail: format!("KVM internal error {suberror} (1 = instruction emulation failed) at rip {rip}"),
                    }
                }
                Ok(VcpuExit::Intr) | Ok(VcpuExit::IrqWindowOpen) => continue,
                Ok(other) => ExitReason::VcpuError { vcpu: self.index, detail: format!("unexpected exit {other:?}") },
                Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => continue,
                Err(e) => ExitReason::VcpuError { vcpu: self.index, detail: format!("KVM_RUN failed: {e}") },
            };
            return Some(outcome);
        }
    }
}
