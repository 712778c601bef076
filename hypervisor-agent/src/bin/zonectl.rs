//! `zonectl`: the zone attestor's command line.

fn main() {
    hypervisor_agent::cli::main()
}
