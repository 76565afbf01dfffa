//! The in-process link between an embedded data plane and its control plane
//! (`gatehouse-cp standalone`).
//!
//! The embedded data plane runs the same gRPC sync session as a remote one, but over an
//! in-memory pipe rather than a socket: nothing another local user could connect to exists,
//! so the configuration (with every credential in it) cannot be read by anyone but this
//! process. The control plane serves the receiving end with the same tonic service it serves
//! on its cluster listener.

use tokio::io::DuplexStream;
use tokio::sync::mpsc;

/// Bytes buffered in each direction of a pipe; a snapshot chunk is up to 1 MiB and flows
/// through it in pieces, with back-pressure like a socket's.
const PIPE_BUFFER: usize = 256 * 1024;

/// The data plane's end: each call to [`Link::connect`] opens a new pipe, as a reconnect
/// opens a new TCP connection.
#[derive(Clone, Debug)]
pub struct Link {
    tx: mpsc::Sender<DuplexStream>,
}

/// The control plane's end: the server halves of the pipes the data plane opens.
pub type Accepted = mpsc::Receiver<DuplexStream>;

/// A new link and the control plane's end of it.
pub fn link() -> (Link, Accepted) {
    let (tx, rx) = mpsc::channel(4);
    (Link { tx }, rx)
}

impl Link {
    /// Opens a pipe to the control plane.
    ///
    /// # Errors
    /// `NotConnected` when the control plane's end is gone (it is shutting down).
    pub async fn connect(&self) -> std::io::Result<DuplexStream> {
        let (ours, theirs) = tokio::io::duplex(PIPE_BUFFER);
        self.tx
            .send(theirs)
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::NotConnected, "the control plane has stopped"))?;
        Ok(ours)
    }
}
