//! The gRPC service: accepts data-plane streams and runs one session per stream.

use std::net::SocketAddr;
use std::sync::Arc;

use gatehouse_shared::proto::config_sync_server::{ConfigSync, ConfigSyncServer};
use gatehouse_shared::proto::{ControlPlaneMessage, DataPlaneMessage};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch, Semaphore};
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::{Request, Response, Status, Streaming};

use super::session::{self, Shared};
use super::{ClusterTls, SyncSettings, Tail};
use crate::store::Store;

struct Service {
    shared: Arc<Shared>,
}

#[tonic::async_trait]
impl ConfigSync for Service {
    type StreamStream = ReceiverStream<Result<ControlPlaneMessage, Status>>;

    async fn stream(
        &self,
        request: Request<Streaming<DataPlaneMessage>>,
    ) -> Result<Response<Self::StreamStream>, Status> {
        let ip = request.remote_addr().map(|a| a.ip().to_string()).unwrap_or_default();
        let inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(16);
        let shared = self.shared.clone();
        tokio::spawn(async move { session::run(shared, inbound, tx, ip).await });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

/// What the sync server needs to run.
pub struct SyncServer {
    pub store: Store,
    pub tail: Tail,
    pub settings: SyncSettings,
    pub cluster_id: String,
    pub node_id: String,
    pub tls: ClusterTls,
}

/// Binds `addr` (failing fast) and returns the serving future, which ends on `shutdown`.
///
/// # Errors
/// TLS material that cannot be loaded, or an address that cannot be bound.
pub async fn serve(
    addr: SocketAddr,
    server: SyncServer,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<(SocketAddr, impl std::future::Future<Output = ()>)> {
    let tls = server.tls.server_config()?;
    let listener = TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, mtls = tls.is_some(), "cluster listener bound");
    let shared = Arc::new(Shared {
        store: server.store,
        tail: server.tail,
        snapshots: Arc::new(Semaphore::new(server.settings.max_snapshots)),
        cluster_id: server.cluster_id,
        node_id: server.node_id,
    });
    let mut builder = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(std::time::Duration::from_secs(10)))
        .http2_keepalive_timeout(Some(std::time::Duration::from_secs(20)))
        .tcp_nodelay(true);
    if let Some(tls) = tls {
        builder = builder.tls_config(tls)?;
    }
    let router =
        builder.add_service(ConfigSyncServer::new(Service { shared }).max_decoding_message_size(64 * 1024 * 1024));
    Ok((addr, async move {
        let stop = async move {
            let _ = shutdown.changed().await;
        };
        if let Err(e) = router.serve_with_incoming_shutdown(TcpListenerStream::new(listener), stop).await {
            tracing::error!(error = %e, "cluster listener failed");
        }
    }))
}
