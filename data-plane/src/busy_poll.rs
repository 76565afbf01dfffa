//! Busy polling while a proxy worker is saturated.
//!
//! A worker with nothing to run blocks in `epoll_wait`. Whoever next sends it a packet then
//! pays for waking it: on loopback or a virtual NIC the sender's CPU runs the wake-up, and
//! in a VM that includes an inter-processor interrupt, which exits to the host. At low load
//! sleeping is right. A saturated worker's idle gaps are a few microseconds long, and
//! sleeping through each of them costs its peers more than the gap is worth: measured on
//! the benchmark harness, the CPU running the client and the upstream spent about a quarter
//! more on socket wake-ups (`sock_def_readable`) with Gatehouse in front than with nginx, because Gatehouse's
//! worker, being faster, slept more often.
//!
//! The kernel makes the same trade for network cards (NAPI switches from interrupts to
//! polling under load), and Go's scheduler spins before it parks. Here a worker that was
//! busy for most of its last measuring window polls for events without blocking instead of
//! parking, and goes back to parking once polls have found nothing for [`Tuning::spin`].
//! Below that load it parks at once: an idle or lightly loaded gateway never spins, and
//! the CPU a saturated one spends spinning is bounded by its idle share.
//!
//! Mechanics, on tokio's current-thread runtime that each worker runs: the park hook
//! ([`before_park`]) wakes a task ([`spinner`]) instead of letting the thread block (the
//! runtime then polls the driver without blocking), and that task yields in a loop; each
//! yield is one non-blocking poll of the driver with the worker's other tasks run in
//! between.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

/// When a worker counts as saturated, and how long it spins for nothing before it parks.
#[derive(Debug, Clone, Copy)]
pub struct Tuning {
    /// The worker's busy share is judged over windows at least this long.
    pub window: Duration,
    /// The busy share of a window, in per cent, from which the worker polls instead of
    /// parking during the next window.
    pub busy_percent: u32,
    /// How long polls may find nothing before the worker parks after all.
    pub spin: Duration,
}

impl Default for Tuning {
    fn default() -> Self {
        Self { window: Duration::from_millis(10), busy_percent: 85, spin: Duration::from_micros(50) }
    }
}

/// A yield that took longer than this ran some other task: that poll found work. An empty
/// one (a scheduler pass and an `epoll_wait` that returns nothing) takes well under it.
const FOUND_WORK: Duration = Duration::from_micros(3);

/// One worker's account of its time, and the spinner's state. The clock is passed in, so
/// the decisions can be tested without waiting.
#[derive(Debug)]
struct Meter {
    tuning: Tuning,
    /// The last park or real unpark: the start of the stretch being accounted.
    mark: Instant,
    window_start: Instant,
    busy: Duration,
    idle: Duration,
    /// The verdict of the last complete window.
    saturated: bool,
    /// The thread has blocked in the kernel since the last spin ended. Without it, a spin
    /// that found nothing would be restarted by the very park it ends in, and an idle
    /// worker would spin for ever.
    armed: bool,
    /// The last park hook started a spin, so the unpark that follows ends a poll that did
    /// not block rather than a sleep.
    polled_only: bool,
    /// Time spun without finding work since the last park: idle time, though the thread
    /// never blocked.
    wasted: Duration,
    /// The spinner, waiting to be started.
    spinner: Option<Waker>,
    /// Set with the spinner's wake-up; the spinner takes it.
    go: bool,
    /// Spins started; only tests read it.
    spins: u64,
}

impl Meter {
    fn new(tuning: Tuning, now: Instant) -> Self {
        Self {
            tuning,
            mark: now,
            window_start: now,
            busy: Duration::ZERO,
            idle: Duration::ZERO,
            saturated: false,
            armed: false,
            polled_only: false,
            wasted: Duration::ZERO,
            spinner: None,
            go: false,
            spins: 0,
        }
    }

    /// The worker has run out of tasks. Returns the spinner to wake when the worker should
    /// poll instead of blocking.
    fn before_park(&mut self, now: Instant) -> Option<Waker> {
        let span = now.saturating_duration_since(self.mark);
        let wasted = std::mem::take(&mut self.wasted).min(span);
        self.busy += span - wasted;
        self.idle += wasted;
        self.mark = now;
        if now.saturating_duration_since(self.window_start) >= self.tuning.window {
            let total = (self.busy + self.idle).as_nanos();
            self.saturated = self.busy.as_nanos() * 100 >= total * u128::from(self.tuning.busy_percent);
            self.busy = Duration::ZERO;
            self.idle = Duration::ZERO;
            self.window_start = now;
        }
        if !(self.saturated && self.armed) {
            return None;
        }
        let waker = self.spinner.take()?;
        self.armed = false;
        self.polled_only = true;
        self.go = true;
        self.spins += 1;
        Some(waker)
    }

    fn after_unpark(&mut self, now: Instant) {
        if std::mem::take(&mut self.polled_only) {
            // Not a sleep: the time goes to the next busy stretch.
            return;
        }
        self.idle += now.saturating_duration_since(self.mark);
        self.mark = now;
        self.armed = true;
    }
}

thread_local! {
    /// The worker thread's meter; the runtime's park hooks run on that thread.
    static METER: RefCell<Option<Meter>> = const { RefCell::new(None) };
}

/// Starts metering the current thread. Call it on the worker thread, with
/// [`before_park`] and [`after_unpark`] installed as its runtime's park hooks and
/// [`spinner`] spawned on it.
pub fn install(tuning: Tuning) {
    METER.with(|m| *m.borrow_mut() = Some(Meter::new(tuning, Instant::now())));
}

/// The runtime's `on_thread_park` hook.
pub fn before_park() {
    let waker = METER.with(|m| m.borrow_mut().as_mut().and_then(|m| m.before_park(Instant::now())));
    if let Some(waker) = waker {
        waker.wake();
    }
}

/// The runtime's `on_thread_unpark` hook.
pub fn after_unpark() {
    METER.with(|m| {
        if let Some(m) = m.borrow_mut().as_mut() {
            m.after_unpark(Instant::now());
        }
    });
}

/// Spins started on this thread so far.
pub fn spins() -> u64 {
    METER.with(|m| m.borrow().as_ref().map_or(0, |m| m.spins))
}

/// The task that does the polling. It runs for the worker's lifetime: it waits until the
/// park hook starts it, then yields until polls have found no work for `spin`.
pub async fn spinner() {
    let Some((spin, longest)) = METER.with(|m| m.borrow().as_ref().map(|m| (m.tuning.spin, m.tuning.window))) else {
        return;
    };
    loop {
        Started.await;
        let mut last = Instant::now();
        let mut found = last;
        // A spin lasts one window at most. A slow yield counts as found work, and on a
        // contended host (the thread preempted between polls) every yield can be slow: without
        // this bound an idle worker there would spin for as long as the host stayed busy.
        let until = last + longest;
        loop {
            tokio::task::yield_now().await;
            let now = Instant::now();
            let gap = now.saturating_duration_since(last);
            last = now;
            if now >= until {
                break;
            }
            if gap >= FOUND_WORK {
                found = now;
                continue;
            }
            METER.with(|m| {
                if let Some(m) = m.borrow_mut().as_mut() {
                    m.wasted += gap;
                }
            });
            if now.saturating_duration_since(found) >= spin {
                break;
            }
        }
    }
}

/// Ready once the park hook has started a spin.
struct Started;

impl Future for Started {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        METER.with(|m| {
            let mut m = m.borrow_mut();
            let Some(m) = m.as_mut() else {
                return Poll::Pending;
            };
            if std::mem::take(&mut m.go) {
                return Poll::Ready(());
            }
            match &mut m.spinner {
                Some(w) if w.will_wake(cx.waker()) => {}
                slot => *slot = Some(cx.waker().clone()),
            }
            Poll::Pending
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn tuning() -> Tuning {
        Tuning { window: 10 * MS, busy_percent: 85, spin: Duration::from_micros(50) }
    }

    /// A meter whose spinner is waiting, and its clock.
    fn meter() -> (Meter, Instant) {
        let t = Instant::now();
        let mut m = Meter::new(tuning(), t);
        m.spinner = Some(Waker::noop().clone());
        (m, t)
    }

    /// Busy for `busy`, then asleep for `idle`; whether the park started a spin.
    fn cycle(m: &mut Meter, t: &mut Instant, busy: Duration, idle: Duration) -> bool {
        *t += busy;
        let started = m.before_park(*t).is_some();
        if started {
            // The spinner runs, finds nothing at once and waits again; the thread parks.
            m.after_unpark(*t);
            m.go = false;
            m.spinner = Some(Waker::noop().clone());
            assert!(m.before_park(*t).is_none(), "a spin that found nothing restarts only after a sleep");
        }
        *t += idle;
        m.after_unpark(*t);
        started
    }

    #[test]
    fn a_worker_busy_past_the_threshold_polls_instead_of_parking() {
        let (mut m, mut t) = meter();
        // The first window (9 ms busy in 10) is measured before anything spins.
        assert!(!cycle(&mut m, &mut t, 9 * MS, MS));
        assert!(cycle(&mut m, &mut t, MS, Duration::ZERO), "the window closes at this park and counts at once");
        assert!(cycle(&mut m, &mut t, Duration::from_micros(100), Duration::from_micros(5)));
        assert_eq!(m.spins, 2);
    }

    #[test]
    fn a_worker_busy_under_the_threshold_always_parks() {
        let (mut m, mut t) = meter();
        for _ in 0..100 {
            assert!(!cycle(&mut m, &mut t, Duration::from_micros(700), Duration::from_micros(300)));
        }
        assert_eq!(m.spins, 0);
    }

    #[test]
    fn time_spun_without_work_counts_as_idle() {
        let (mut m, mut t) = meter();
        cycle(&mut m, &mut t, 10 * MS, Duration::ZERO);
        assert!(m.saturated);
        // A spin that found nothing for 3 ms of a 10 ms window: without the correction the
        // thread, never having blocked, would count as 100 % busy and keep spinning.
        t += 7 * MS;
        m.wasted = 3 * MS;
        t += 3 * MS;
        m.before_park(t);
        assert!(!m.saturated);
    }

    #[test]
    fn load_that_falls_stops_the_spinning() {
        let (mut m, mut t) = meter();
        for _ in 0..20 {
            cycle(&mut m, &mut t, 950 * Duration::from_micros(1), Duration::from_micros(50));
        }
        assert!(m.spins > 0);
        let before = m.spins;
        // Two windows later, at 40 % busy, nothing spins any more.
        for i in 0..40 {
            let started = cycle(&mut m, &mut t, Duration::from_micros(400), Duration::from_micros(600));
            assert!(!started || i < 20, "cycle {i} still spun");
        }
        assert!(m.spins - before <= 20);
    }

    /// On-CPU time of the calling thread.
    fn thread_cpu() -> Duration {
        let stat = std::fs::read_to_string("/proc/thread-self/schedstat").expect("schedstat");
        let ns = stat.split_whitespace().next().and_then(|n| n.parse().ok()).expect("on-CPU nanoseconds");
        Duration::from_nanos(ns)
    }

    /// A real worker that counts as saturated from the start (threshold 0 %) spins while
    /// work arrives, and still sleeps once it stops: an idle worker burns no CPU.
    #[test]
    fn a_spinning_worker_goes_back_to_sleep_when_work_stops() {
        idle_cpu_after_work(Tuning { window: MS, busy_percent: 0, spin: Duration::from_micros(200) });
    }

    /// On a contended host every yield can look like found work (the thread preempted
    /// between polls): a spin still ends within its window. Here polls would have to find
    /// nothing for ten seconds to end it otherwise.
    #[test]
    fn a_spin_ends_within_a_window_even_when_every_poll_looks_busy() {
        idle_cpu_after_work(Tuning { window: MS, busy_percent: 0, spin: Duration::from_secs(10) });
    }

    /// Feeds a spinning worker, then measures the CPU it uses idle for 300 ms.
    fn idle_cpu_after_work(tuning: Tuning) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .on_thread_park(before_park)
            .on_thread_unpark(after_unpark)
            .build()
            .unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<u32>();
        let feeder = std::thread::spawn(move || {
            for i in 0..200 {
                std::thread::sleep(Duration::from_micros(200));
                tx.send(i).unwrap();
            }
        });
        let (spins, idle_cpu) = runtime.block_on(async move {
            install(tuning);
            tokio::spawn(spinner());
            let mut got = 0;
            while rx.recv().await.is_some() {
                got += 1;
            }
            assert_eq!(got, 200);
            let spins = spins();
            let before = thread_cpu();
            tokio::time::sleep(Duration::from_millis(300)).await;
            (spins, thread_cpu() - before)
        });
        feeder.join().unwrap();
        assert!(spins > 0, "the worker never spun: the test would prove nothing");
        // A worker that kept spinning would use the whole 300 ms; half of it leaves room for a
        // loaded machine's scheduling without letting a spinning worker pass.
        assert!(idle_cpu < Duration::from_millis(150), "an idle worker used {idle_cpu:?} of CPU in 300 ms");
    }
}
