//! `zone-vmm`: one zone's jailed VMM process, started by `hypervisor-agent`.

fn main() {
    zone_vmm::process::main()
}
