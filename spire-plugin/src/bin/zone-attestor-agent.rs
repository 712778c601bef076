//! The agent-side `zone` NodeAttestor plugin; `spire-agent` inside a zone
//! starts it through `plugin_cmd`.

fn main() {
    std::process::exit(spire_plugin::agent_main());
}
