//! Generated code for the protocol SPIRE speaks with external plugins
//! (`spire-plugin/proto/`): go-plugin's services (package `plugin`), SPIRE's
//! Init and Config services and both NodeAttestor services.

#![allow(missing_docs, missing_debug_implementations, clippy::all)]

/// go-plugin: broker, controller, stdio.
pub mod goplugin {
    tonic::include_proto!("plugin");
}

/// `spire.service.private.init.v1`.
pub mod init {
    tonic::include_proto!("spire.service.private.init.v1");
}

/// `spire.service.common.config.v1`.
pub mod config {
    tonic::include_proto!("spire.service.common.config.v1");
}

/// `spire.plugin.server.nodeattestor.v1`.
pub mod server_nodeattestor {
    tonic::include_proto!("spire.plugin.server.nodeattestor.v1");
}

/// `spire.plugin.agent.nodeattestor.v1`.
pub mod agent_nodeattestor {
    tonic::include_proto!("spire.plugin.agent.nodeattestor.v1");
}

/// Full gRPC name of the server-side NodeAttestor service.
pub const SERVER_NODEATTESTOR: &str = "spire.plugin.server.nodeattestor.v1.NodeAttestor";
/// Full gRPC name of the agent-side NodeAttestor service.
pub const AGENT_NODEATTESTOR: &str = "spire.plugin.agent.nodeattestor.v1.NodeAttestor";
/// Full gRPC name of the Config service.
pub const CONFIG: &str = "spire.service.common.config.v1.Config";
