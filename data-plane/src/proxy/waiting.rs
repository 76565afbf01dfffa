//! What a direct-path connection waits on besides its sockets: a deadline, and the worker's
//! shutdown. Each is armed once per connection rather than once per request: a timer
//! registered and cancelled around every read, and a waiter linked into and out of the
//! shutdown signal's list, were a few per cent of the proxy's CPU per request.

use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::sync::watch;
use tokio::time::{Instant, Sleep};

/// A deadline that moves without touching the timer wheel in the common case.
///
/// The timer is left where it was when the deadline moves later (each request's deadline is
/// later than the last one's), and moved only when it fires early, or when a deadline comes
/// earlier than it: at most one spurious wake-up per deadline period, instead of a timer
/// registration and cancellation per request. This is nginx's lazy timer, on tokio's wheel.
pub struct Deadline {
    sleep: Pin<Box<Sleep>>,
    at: Instant,
}

/// The deadline passed first.
#[derive(Debug, PartialEq, Eq)]
pub struct Elapsed;

impl Deadline {
    /// A deadline not yet set: nothing is registered until a wait is polled.
    pub fn new(at: Instant) -> Self {
        Self { sleep: Box::pin(tokio::time::sleep_until(at)), at }
    }

    pub fn set(&mut self, at: Instant) {
        self.at = at;
        if self.sleep.deadline() > at {
            self.sleep.as_mut().reset(at);
        }
    }

    /// Ready once `self.at` has passed.
    fn poll_elapsed(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            ready!(self.sleep.as_mut().poll(cx));
            // The timer fired at its own deadline; it is the real one unless that moved on.
            if self.sleep.deadline() >= self.at {
                return Poll::Ready(());
            }
            self.sleep.as_mut().reset(self.at);
        }
    }

    /// `fut`'s output, unless `at` passes first. `fut` is polled before the deadline is
    /// looked at, so work that is ready costs no timer at all.
    pub async fn within<F: Future>(&mut self, at: Instant, fut: F) -> Result<F::Output, Elapsed> {
        self.set(at);
        let mut fut = std::pin::pin!(fut);
        std::future::poll_fn(|cx| {
            if let Poll::Ready(v) = fut.as_mut().poll(cx) {
                return Poll::Ready(Ok(v));
            }
            ready!(self.poll_elapsed(cx));
            Poll::Ready(Err(Elapsed))
        })
        .await
    }
}

/// The worker's shutdown signal, as a connection waits on it between requests.
///
/// A waiter is registered with the signal once, the first time the connection waits; after
/// that a wake-up is told apart by the signal's version, an atomic load, instead of polling
/// the waiter (which takes the signal's lock) or registering a new one per read.
pub struct Stop {
    rx: watch::Receiver<bool>,
    waiter: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
}

impl Stop {
    pub fn new(rx: watch::Receiver<bool>) -> Self {
        Self { rx, waiter: None }
    }

    /// Whether shutdown has begun. The signal only ever goes from running to stopping, so a
    /// version not yet seen (or a sender gone) means stopping.
    pub fn requested(&self) -> bool {
        self.rx.has_changed().unwrap_or(true)
    }

    /// Ready once shutdown has begun; wakes the task when it does.
    fn poll_requested(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self.requested() {
            return Poll::Ready(());
        }
        if self.waiter.is_none() {
            let mut rx = self.rx.clone();
            let mut waiter: Pin<Box<dyn Future<Output = ()> + Send>> = Box::pin(async move {
                let _ = rx.changed().await;
            });
            // Registers the waker; a change that raced the check above is seen here.
            if waiter.as_mut().poll(cx).is_ready() {
                return Poll::Ready(());
            }
            self.waiter = Some(waiter);
        }
        // A connection's task keeps its waker, so the one registered still wakes it.
        Poll::Pending
    }

    /// `fut`'s output, or `None` if shutdown begins first.
    pub async fn unless<F: Future>(&mut self, fut: F) -> Option<F::Output> {
        let mut fut = std::pin::pin!(fut);
        std::future::poll_fn(|cx| {
            if let Poll::Ready(v) = fut.as_mut().poll(cx) {
                return Poll::Ready(Some(v));
            }
            ready!(self.poll_requested(cx));
            Poll::Ready(None)
        })
        .await
    }

    pub fn into_receiver(self) -> watch::Receiver<bool> {
        self.rx
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    // Real time, in tenths of a second: the assertions are about which deadline fired, and
    // hold however slow the machine is.
    const TICK: Duration = Duration::from_millis(100);

    #[tokio::test]
    async fn a_deadline_moved_later_fires_at_the_later_time_not_the_earlier() {
        let start = Instant::now();
        let mut d = Deadline::new(start + TICK);
        // Armed at one tick by a first wait that finishes in time.
        assert_eq!(d.within(start + TICK, async {}).await, Ok(()));
        let waited = d.within(start + 4 * TICK, std::future::pending::<()>()).await;
        assert_eq!(waited, Err(Elapsed));
        assert!(start.elapsed() >= 4 * TICK, "fired after {:?}", start.elapsed());
    }

    #[tokio::test]
    async fn a_deadline_moved_earlier_fires_at_the_earlier_time() {
        let start = Instant::now();
        let mut d = Deadline::new(start + Duration::from_secs(600));
        let _ = d.within(start + Duration::from_secs(600), tokio::time::sleep(Duration::from_millis(1))).await;
        let waited =
            tokio::time::timeout(Duration::from_secs(30), d.within(start + TICK, std::future::pending::<()>()));
        assert_eq!(waited.await, Ok(Err(Elapsed)));
        assert!(start.elapsed() >= TICK);
    }

    #[tokio::test]
    async fn work_finished_before_the_deadline_is_returned() {
        let start = Instant::now();
        let mut d = Deadline::new(start);
        let got = d.within(start + Duration::from_secs(600), async {
            tokio::time::sleep(TICK).await;
            7
        });
        assert_eq!(got.await, Ok(7));
    }

    #[tokio::test]
    async fn a_waiting_connection_is_woken_by_shutdown_and_sees_it_after() {
        let (tx, rx) = watch::channel(false);
        let mut stop = Stop::new(rx);
        assert!(!stop.requested());
        let waiting = tokio::spawn(async move {
            let got = stop.unless(std::future::pending::<()>()).await;
            (got, stop.requested())
        });
        tokio::task::yield_now().await;
        tx.send_replace(true);
        let (got, requested) = tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("woken by the shutdown")
            .expect("task ran");
        assert_eq!(got, None);
        assert!(requested);
    }

    #[tokio::test]
    async fn a_shutdown_before_the_first_wait_ends_it_at_once() {
        let (tx, rx) = watch::channel(false);
        let mut stop = Stop::new(rx);
        tx.send_replace(true);
        assert_eq!(stop.unless(std::future::pending::<()>()).await, None);
        drop(tx);
    }
}
