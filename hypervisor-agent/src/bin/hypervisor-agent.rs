//! `hypervisor-agent`: the host daemon, and (as `hypervisor-agent vmm`) the
//! per-zone VMM process it spawns.

fn main() {
    hypervisor_agent::agent::main()
}
