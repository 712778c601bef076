//! `zonectl`: launch, inspect and attest zones.

fn main() {
    zonectl::cli::main()
}
