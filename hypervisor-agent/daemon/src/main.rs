//! `hypervisor-agent`: the zone attestor's host daemon.

fn main() {
    hypervisor_agent::agent::main()
}
