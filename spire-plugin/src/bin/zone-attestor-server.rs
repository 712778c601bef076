//! The server-side `zone` NodeAttestor plugin; `spire-server` starts it
//! through `plugin_cmd` (see the SPIRE operator's guide in the README).

fn main() {
    std::process::exit(spire_plugin::server_main());
}
