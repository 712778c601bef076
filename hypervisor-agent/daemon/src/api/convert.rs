//! Daemon records ↔ API messages, and daemon errors → gRPC status codes.

use attestation_proto::control as pb;

use crate::manager::DaemonError;
use crate::store::{State, ZoneRecord};

/// The gRPC status for a daemon error: one code per error kind, so clients
/// (zonectl, the SPIRE plugin) can branch on it.
pub fn status(e: DaemonError) -> tonic::Status {
    let msg = e.to_string();
    match e {
        DaemonError::InvalidArgument(_) => tonic::Status::invalid_argument(msg),
        DaemonError::NotFound(_) => tonic::Status::not_found(msg),
        DaemonError::AlreadyExists(_) => tonic::Status::already_exists(msg),
        DaemonError::ResourceExhausted(_) => tonic::Status::resource_exhausted(msg),
        DaemonError::FailedPrecondition(_) => tonic::Status::failed_precondition(msg),
        DaemonError::Internal(_) => tonic::Status::internal(msg),
    }
}

fn state(s: State) -> pb::ZoneState {
    match s {
        State::Creating => pb::ZoneState::Creating,
        State::Booting => pb::ZoneState::Booting,
        State::Running => pb::ZoneState::Running,
        State::Stopping => pb::ZoneState::Stopping,
        State::Stopped => pb::ZoneState::Stopped,
        State::Failed => pb::ZoneState::Failed,
    }
}

/// A zone record as an API message.
pub fn zone(r: &ZoneRecord) -> pb::Zone {
    pb::Zone {
        name: r.name.clone(),
        state: state(r.state) as i32,
        spec: Some(pb::ZoneSpec {
            kernel: r.spec.kernel.display().to_string(),
            initrd: r.spec.initrd.as_ref().map(|p| p.display().to_string()).unwrap_or_default(),
            cmdline: r.spec.cmdline.clone(),
            vcpus: u32::from(r.spec.vcpus),
            memory_mib: r.spec.memory_mib,
            command: r.spec.command.clone(),
            scratch_mib: r.spec.scratch_mib,
            image: r.spec.image.as_ref().map(image_root),
            network: r.spec.net.as_ref().map(|n| pb::ZoneNetwork {
                address: format!("{}/{}", n.address, n.prefix),
                cni_network: n.cni.as_ref().map(|c| c.network.clone()).unwrap_or_default(),
                netns: n.cni.as_ref().map(|c| c.netns.clone()).unwrap_or_default(),
                gateway: n.gateway.to_string(),
                address6: n.ipv6.map(|l| format!("{}/{}", l.address, crate::network::LINK6_PREFIX)).unwrap_or_default(),
                gateway6: n.ipv6.map(|l| l.gateway.to_string()).unwrap_or_default(),
                mac: n.mac.clone(),
                tap: n.tap.clone(),
                nameservers: n.nameservers.iter().map(ToString::to_string).collect(),
                publish: n
                    .publish
                    .iter()
                    .map(|p| pb::PublishedPort {
                        host_address: p.host.ip().to_string(),
                        host_port: u32::from(p.host.port()),
                        zone_port: u32::from(p.zone_port),
                    })
                    .collect(),
            }),
        }),
        failure: r.failure.clone().unwrap_or_default(),
        created_unix_ms: r.created_unix_ms,
        ready_uptime_ms: r.ready_uptime_ms.unwrap_or(0),
        launch_to_ready_ms: r.launch_to_ready_ms.unwrap_or(0),
        vmm_pid: r.vmm.map(|h| h.pid).unwrap_or(0),
        exit_status: r.exit_status,
        guest_cid: r.guest_cid,
        measurement: r.launch.as_ref().map(|l| pb::Measurement {
            launch_id: l.launch_id.clone(),
            kernel_sha256: l.kernel.sha256.clone(),
            initrd_sha256: l.initrd_sha256().to_owned(),
            cmdline_sha256: l.cmdline_sha256.clone(),
            cmdline: l.cmdline.clone(),
            launch_record: l.encode(),
        }),
    }
}

/// An API published port as the daemon's.
pub fn publish(p: &pb::PublishedPort) -> Result<crate::network::Publish, String> {
    let ip: std::net::Ipv4Addr = if p.host_address.is_empty() {
        std::net::Ipv4Addr::UNSPECIFIED
    } else {
        p.host_address.parse().map_err(|_| format!("published host address {:?} is not IPv4", p.host_address))?
    };
    let port = |v: u32| u16::try_from(v).ok().filter(|&v| v != 0).ok_or_else(|| format!("port {v} is not 1-65535"));
    Ok(crate::network::Publish { host: std::net::SocketAddrV4::new(ip, port(p.host_port)?), zone_port: port(p.zone_port)? })
}

/// An API image root as the daemon's spec.
pub fn image_spec(i: pb::ImageRoot) -> crate::store::ImageSpec {
    crate::store::ImageSpec {
        path: i.path.into(),
        rootfs: attestation_proto::launch::Rootfs {
            image: i.digest,
            format: i.format,
            verity: attestation_proto::launch::Verity {
                data_blocks: i.data_blocks,
                hash_start_block: i.hash_start_block,
                root: i.verity_root,
                salt: i.verity_salt,
            },
        },
        env: i.env,
        workdir: i.workdir,
        user: i.user,
    }
}

/// The daemon's image root as an API message.
pub fn image_root(i: &crate::store::ImageSpec) -> pb::ImageRoot {
    pb::ImageRoot {
        path: i.path.display().to_string(),
        digest: i.rootfs.image.clone(),
        format: i.rootfs.format.clone(),
        data_blocks: i.rootfs.verity.data_blocks,
        hash_start_block: i.rootfs.verity.hash_start_block,
        verity_root: i.rootfs.verity.root.clone(),
        verity_salt: i.rootfs.verity.salt.clone(),
        env: i.env.clone(),
        workdir: i.workdir.clone(),
        user: i.user.clone(),
    }
}
