//! The gRPC control API (`zone.v1.ZoneControl`), served on a Unix socket.
//!
//! Only root, or the configured group, can open the socket: it is created
//! with mode 0600 (0660 with a group) inside a directory of mode 0750.

mod console;
mod convert;
mod logs;

use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use attestation_proto::control as pb;
use attestation_proto::control::zone_control_server::{ZoneControl, ZoneControlServer};
use tonic::{Request, Response, Status};

use crate::manager::{Daemon, LaunchRequest};
pub use convert::status;

/// Longest WaitZone accepted.
const MAX_WAIT: Duration = Duration::from_secs(600);

/// The service implementation.
#[derive(Debug, Clone)]
pub struct ControlService {
    daemon: Arc<Daemon>,
}

fn non_empty(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

#[tonic::async_trait]
impl ZoneControl for ControlService {
    async fn launch_zone(&self, req: Request<pb::LaunchZoneRequest>) -> Result<Response<pb::LaunchZoneReply>, Status> {
        let caller = caller_of(&req);
        let req = req.into_inner();
        let spec = req.spec.unwrap_or_default();
        let launch = LaunchRequest {
            name: req.name,
            kernel: non_empty(spec.kernel).map(Into::into),
            initrd: non_empty(spec.initrd).map(Into::into),
            cmdline: non_empty(spec.cmdline),
            vcpus: (spec.vcpus != 0).then_some(spec.vcpus),
            memory_mib: (spec.memory_mib != 0).then_some(spec.memory_mib),
            command: spec.command,
            scratch_mib: (spec.scratch_mib != 0).then_some(spec.scratch_mib),
            image: spec.image.map(convert::image_spec),
            network: spec.network.is_some(),
            publish: spec
                .network
                .as_ref()
                .map(|n| n.publish.iter().map(convert::publish).collect::<Result<Vec<_>, _>>())
                .transpose()
                .map_err(Status::invalid_argument)?
                .unwrap_or_default(),
            caller,
        };
        let daemon = Arc::clone(&self.daemon);
        let record = tokio::task::spawn_blocking(move || daemon.launch(launch))
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(status)?;
        Ok(Response::new(pb::LaunchZoneReply { zone: Some(convert::zone(&record)) }))
    }

    async fn list_zones(&self, _: Request<pb::ListZonesRequest>) -> Result<Response<pb::ListZonesReply>, Status> {
        let zones = self.daemon.list().iter().map(convert::zone).collect();
        Ok(Response::new(pb::ListZonesReply { zones }))
    }

    async fn get_zone(&self, req: Request<pb::GetZoneRequest>) -> Result<Response<pb::GetZoneReply>, Status> {
        let r = self.daemon.get(&req.into_inner().name).map_err(status)?;
        Ok(Response::new(pb::GetZoneReply { zone: Some(convert::zone(&r)) }))
    }

    async fn wait_zone(&self, req: Request<pb::WaitZoneRequest>) -> Result<Response<pb::GetZoneReply>, Status> {
        let req = req.into_inner();
        let timeout = Duration::from_millis(u64::from(req.timeout_ms)).min(MAX_WAIT);
        let r = self.daemon.wait(&req.name, timeout).await.map_err(status)?;
        Ok(Response::new(pb::GetZoneReply { zone: Some(convert::zone(&r)) }))
    }

    async fn stop_zone(&self, req: Request<pb::StopZoneRequest>) -> Result<Response<pb::StopZoneReply>, Status> {
        let r = self.daemon.stop(&req.into_inner().name).await.map_err(status)?;
        Ok(Response::new(pb::StopZoneReply { zone: Some(convert::zone(&r)) }))
    }

    async fn destroy_zone(&self, req: Request<pb::DestroyZoneRequest>) -> Result<Response<pb::DestroyZoneReply>, Status> {
        self.daemon.destroy(&req.into_inner().name).await.map_err(status)?;
        Ok(Response::new(pb::DestroyZoneReply {}))
    }

    type ReadLogsStream = Pin<Box<dyn tokio_stream::Stream<Item = Result<pb::LogChunk, Status>> + Send>>;

    async fn read_logs(&self, req: Request<pb::ReadLogsRequest>) -> Result<Response<Self::ReadLogsStream>, Status> {
        let req = req.into_inner();
        let workload = req.source == pb::LogSource::Workload as i32;
        let path = self.daemon.log_path(&req.name, workload).map_err(status)?;
        let tail = logs::Tail { follow: req.follow, from_end: false, poll: Duration::from_millis(200) };
        let stream = logs::stream(Arc::clone(&self.daemon), req.name, path, tail);
        Ok(Response::new(Box::pin(stream)))
    }

    type AttachConsoleStream = Self::ReadLogsStream;

    async fn attach_console(
        &self,
        req: Request<tonic::Streaming<pb::ConsoleInput>>,
    ) -> Result<Response<Self::AttachConsoleStream>, Status> {
        let stream = console::attach(Arc::clone(&self.daemon), req.into_inner()).await?;
        Ok(Response::new(Box::pin(stream)))
    }

    async fn get_evidence(&self, req: Request<pb::GetEvidenceRequest>) -> Result<Response<pb::GetEvidenceReply>, Status> {
        let req = req.into_inner();
        let evidence = self.daemon.evidence(&req.name, &req.nonce).await.map_err(status)?;
        Ok(Response::new(pb::GetEvidenceReply { evidence }))
    }

    async fn get_event_log(&self, _: Request<pb::GetEventLogRequest>) -> Result<Response<pb::GetEventLogReply>, Status> {
        let ledger = self.daemon.ledger().clone();
        let s = tokio::task::spawn_blocking(move || ledger.snapshot())
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(pb::GetEventLogReply {
            event_log: s.log,
            pcr: s.pcr,
            pcr_value: s.pcr_value.to_vec(),
            reset_count: s.reset_count,
            ak_public: s.ak_public,
            ek_public: s.ek_public,
            ek_certificate: s.ek_certificate.unwrap_or_default(),
            tpm: s.tcti,
            host_id: self.daemon.config().host_id.clone(),
            start_value: s.start_value.to_vec(),
            events_before: s.events_before,
            events: s.events,
            software_tpm: s.software,
            checkpoint_seq: s.checkpoint_seq.unwrap_or(0),
        }))
    }
}

/// Who is on the other end of the control connection (its peer credentials).
fn caller_of<T>(req: &Request<T>) -> Option<crate::artifacts::Caller> {
    let info = req.extensions().get::<tonic::transport::server::UdsConnectInfo>()?;
    let cred = info.peer_cred?;
    Some(crate::artifacts::Caller { uid: cred.uid(), gid: cred.gid() })
}

/// Serves the API on the configured socket until `shutdown` resolves.
pub async fn serve(daemon: Arc<Daemon>, shutdown: impl std::future::Future<Output = ()>) -> anyhow::Result<()> {
    let cfg = daemon.config().clone();
    let socket = cfg.socket.clone();
    let listener = bind(&socket, cfg.socket_group.as_deref())?;
    tracing::info!(socket = %socket.display(), "serving the control API");
    let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener);
    tonic::transport::Server::builder()
        .add_service(ZoneControlServer::new(ControlService { daemon }))
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await?;
    let _ = std::fs::remove_file(&socket);
    Ok(())
}

fn bind(socket: &Path, group: Option<&str>) -> anyhow::Result<tokio::net::UnixListener> {
    let gid = match group {
        Some(g) => Some(group_id(g).ok_or_else(|| anyhow::anyhow!("socket_group {g:?} does not exist; create it or remove the setting"))?),
        None => None,
    };
    // The socket's directory gets a mode and owner only if the daemon
    // creates it; an existing directory is the operator's and left as it is.
    if let Some(dir) = socket.parent()
        && !dir.exists()
    {
        std::fs::DirBuilder::new().recursive(true).mode(if gid.is_some() { 0o750 } else { 0o700 }).create(dir)?;
        chown(dir, gid)?;
    }
    if socket.exists() {
        // A live daemon answers on it; a stale socket from a crash does not.
        if std::os::unix::net::UnixStream::connect(socket).is_ok() {
            anyhow::bail!("another hypervisor-agent is already serving {}; stop it first", socket.display());
        }
        std::fs::remove_file(socket)?;
    }
    let listener = tokio::net::UnixListener::bind(socket)?;
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(if gid.is_some() { 0o660 } else { 0o600 }))?;
    chown(socket, gid)?;
    Ok(listener)
}

fn chown(path: &Path, gid: Option<u32>) -> anyhow::Result<()> {
    if let Some(gid) = gid {
        std::os::unix::fs::chown(path, Some(0), Some(gid))?;
    }
    Ok(())
}

fn group_id(name: &str) -> Option<u32> {
    let groups = std::fs::read_to_string("/etc/group").ok()?;
    groups.lines().find_map(|l| {
        let mut f = l.split(':');
        (f.next()? == name).then(|| f.nth(1)?.parse().ok()).flatten()
    })
}
