//! The gRPC service: accepts data-plane streams and runs one session per stream, whether they
//! arrive on the cluster listener (remote data planes, mTLS) or over the in-process link of
//! `standalone` (the embedded data plane, no socket at all).

use std::net::SocketAddr;
use std::sync::Arc;

use gatehouse_shared::link::Accepted;
use gatehouse_shared::proto::server::config_sync_server::{ConfigSync, ConfigSyncServer};
use gatehouse_shared::proto::{ControlPlaneFrame, DataPlaneMessage};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch, Semaphore};
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status, Streaming};

use super::session::{self, LastRead, Shared};
use super::{ClusterTls, SyncSettings, Tail};
use crate::store::Store;

struct Service {
    shared: Arc<Shared>,
}

#[tonic::async_trait]
impl ConfigSync for Service {
    type StreamStream = ReceiverStream<Result<ControlPlaneFrame, Status>>;

    async fn stream(
        &self,
        request: Request<Streaming<DataPlaneMessage>>,
    ) -> Result<Response<Self::StreamStream>, Status> {
        // The in-process link has no address: its data plane is this process, on this host.
        let ip = request.remote_addr().map_or_else(|| "127.0.0.1".to_owned(), |a| a.ip().to_string());
        let inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(16);
        let shared = self.shared.clone();
        tokio::spawn(async move { session::run(shared, inbound, tx, ip).await });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

/// The sync service, shared by every way a data plane can reach it.
#[derive(Clone)]
pub struct SyncServer {
    shared: Arc<Shared>,
}

impl SyncServer {
    pub fn new(store: Store, tail: Tail, settings: &SyncSettings, cluster_id: String, node_id: String) -> Self {
        let shared = Arc::new(Shared {
            store,
            tail,
            snapshots: Arc::new(Semaphore::new(settings.max_snapshots)),
            cluster_id,
            node_id,
            last_read: LastRead::default(),
        });
        SyncServer { shared }
    }

    fn builder() -> tonic::transport::Server {
        tonic::transport::Server::builder()
            .http2_keepalive_interval(Some(std::time::Duration::from_secs(10)))
            .http2_keepalive_timeout(Some(std::time::Duration::from_secs(20)))
    }

    fn service(&self) -> ConfigSyncServer<Service> {
        ConfigSyncServer::new(Service { shared: self.shared.clone() }).max_decoding_message_size(64 * 1024 * 1024)
    }

    /// Binds the cluster listener at `addr` (failing fast) with `tls`, and returns the serving
    /// future, which ends on `shutdown`.
    ///
    /// # Errors
    /// TLS material that cannot be loaded, or an address that cannot be bound.
    pub async fn listen(
        &self,
        addr: SocketAddr,
        tls: &ClusterTls,
        shutdown: watch::Receiver<bool>,
    ) -> anyhow::Result<(SocketAddr, impl std::future::Future<Output = ()>)> {
        let tls = tls.server_config()?;
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        tracing::info!(%addr, mtls = tls.is_some(), "cluster listener bound");
        let mut builder = Self::builder().tcp_nodelay(true);
        if let Some(tls) = tls {
            builder = builder.tls_config(tls)?;
        }
        let router = builder.add_service(self.service());
        Ok((addr, async move {
            if let Err(e) =
                router.serve_with_incoming_shutdown(TcpListenerStream::new(listener), stopped(shutdown)).await
            {
                tracing::error!(error = %e, "cluster listener failed");
            }
        }))
    }

    /// Serves the pipes an embedded data plane opens over its in-process link, until
    /// `shutdown`.
    pub fn in_process(
        &self,
        accepted: Accepted,
        shutdown: watch::Receiver<bool>,
    ) -> impl std::future::Future<Output = ()> {
        let router = Self::builder().add_service(self.service());
        let incoming = ReceiverStream::new(accepted).map(Ok::<_, std::io::Error>);
        async move {
            if let Err(e) = router.serve_with_incoming_shutdown(incoming, stopped(shutdown)).await {
                tracing::error!(error = %e, "in-process sync link failed");
            }
        }
    }
}

async fn stopped(mut shutdown: watch::Receiver<bool>) {
    let _ = shutdown.changed().await;
}
