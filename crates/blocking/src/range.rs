//! Driving a ranged hunt: the plan is `defender_core::range::RangePlan`; this only runs
//! its windows through the client on worker threads and hands finished windows out in
//! order.
//!
//! Each running window is a thread making one call. The hunt keeps the ids of those calls
//! ([`Stop`]): when it is dropped, or ends with an error, it cancels them, so a window
//! still waiting for quota is never sent (its quota is given back) and its thread ends; a
//! window already on the wire is answered and discarded. A worker that panics sends
//! [`Error::Panicked`] instead of its result, so the iterator ends with that error rather
//! than waiting forever.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{mpsc, Arc, Mutex, PoisonError};
use std::time::SystemTime;

use defender_core::engine::{Call, CallId};
use defender_core::hunting::{HuntRequest, HuntResult};
use defender_core::range::{
    ClampWarning, RangeError, RangeOptions, RangePlan, RangeProgress, WindowRequest, WindowRows,
};
use defender_core::Error;

use crate::Client;

type WindowResult = (SystemTime, Result<HuntResult, Error>);

/// A ranged hunt in progress: an iterator over its finished windows, in time order.
///
/// Dropping it stops the windows still running (see the module docs): no quota is spent
/// on results nobody will read.
#[derive(Debug)]
pub struct RangeHunt {
    client: Client,
    plan: RangePlan,
    warning: Option<ClampWarning>,
    tx: mpsc::Sender<WindowResult>,
    rx: mpsc::Receiver<WindowResult>,
    running: usize,
    failed: bool,
    stop: Arc<Stop>,
    /// Test-only: the worker of this window panics.
    #[cfg(test)]
    panic_at: Option<SystemTime>,
}

/// The calls of a hunt's running windows, to cancel when the hunt ends early.
#[derive(Debug, Default)]
struct Stop(Mutex<Calls>);

#[derive(Debug, Default)]
struct Calls {
    stopped: bool,
    ids: Vec<CallId>,
}

impl Stop {
    /// Records a window's call; false (and nothing recorded) once the hunt has stopped.
    fn register(&self, id: CallId) -> bool {
        let mut calls = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if !calls.stopped {
            calls.ids.push(id);
        }
        !calls.stopped
    }

    fn unregister(&self, id: CallId) {
        let mut calls = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        calls.ids.retain(|i| *i != id);
    }

    /// Cancels every recorded call, and any registered later.
    fn stop(&self, client: &Client) {
        let ids = {
            let mut calls = self.0.lock().unwrap_or_else(PoisonError::into_inner);
            calls.stopped = true;
            std::mem::take(&mut calls.ids)
        };
        for id in ids {
            client.inner.shared.cancel(id);
        }
    }
}

impl RangeHunt {
    pub(crate) fn new(
        client: Client,
        query: &str,
        from: SystemTime,
        to: SystemTime,
        opts: RangeOptions,
    ) -> Result<RangeHunt, RangeError> {
        let (plan, warning) = RangePlan::new(query, from, to, opts, SystemTime::now())?;
        let (tx, rx) = mpsc::channel();
        Ok(RangeHunt {
            client,
            plan,
            warning,
            tx,
            rx,
            running: 0,
            failed: false,
            stop: Arc::default(),
            #[cfg(test)]
            panic_at: None,
        })
    }

    /// Set when the range started before the data window and was clamped.
    pub fn warning(&self) -> Option<&ClampWarning> {
        self.warning.as_ref()
    }

    /// Windows, rows, splits and running time so far.
    pub fn progress(&self) -> RangeProgress {
        self.plan.progress()
    }

    /// Starts a worker thread for window `w`.
    fn spawn(&mut self, w: WindowRequest) {
        let client = self.client.clone();
        let tx = self.tx.clone();
        let stop = self.stop.clone();
        #[cfg(test)]
        let panics = self.panic_at == Some(w.start);
        self.running += 1;
        std::thread::spawn(move || {
            let start = w.start;
            let result = catch_unwind(AssertUnwindSafe(|| {
                #[cfg(test)]
                if panics {
                    panic!("injected into the window's worker");
                }
                run_window(&client, &stop, w)
            }))
            .unwrap_or_else(|payload| Err(Error::panicked("window of a ranged hunt", &*payload)));
            // The hunt may be gone: then nobody wants the result.
            let _ = tx.send((start, result));
        });
    }
}

/// One window's call, recorded in `stop` while it runs.
fn run_window(client: &Client, stop: &Stop, w: WindowRequest) -> Result<HuntResult, Error> {
    let mut id = None;
    let call = Call::HuntWindow(HuntRequest::new(w.query));
    let value = client.inner.shared.call_with(call, |started| {
        id = Some(started);
        if !stop.register(started) {
            // The hunt stopped before this call was recorded: it goes no further.
            client.inner.shared.cancel(started);
        }
    });
    if let Some(id) = id {
        stop.unregister(id);
    }
    value?.into_hunt()
}

impl Iterator for RangeHunt {
    type Item = Result<WindowRows, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(rows) = self.plan.poll_rows() {
                return Some(Ok(rows));
            }
            if self.failed || self.plan.is_done() {
                return None;
            }
            while let Some(w) = self.plan.poll_window() {
                self.spawn(w);
            }
            if self.running == 0 {
                return None;
            }
            // Every worker sends exactly once, a panic included, and `self.tx` keeps the
            // channel open: this returns.
            let (start, result) = self.rx.recv().ok()?;
            self.running -= 1;
            if let Err(e) = self.plan.handle_result(start, result) {
                self.failed = true;
                // The hunt is over: the other windows' results would be discarded.
                self.stop.stop(&self.client);
                return Some(Err(e));
            }
        }
    }
}

impl Drop for RangeHunt {
    fn drop(&mut self) {
        self.stop.stop(&self.client);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use defender_core::range::Split;
    use std::time::Duration;

    /// A window's worker that panics ends the iterator with `Error::Panicked`; it does
    /// not leave it waiting for a result that never comes.
    #[test]
    fn a_panicking_window_ends_the_hunt_with_an_error() {
        let client = Client::builder()
            .tenant("contoso")
            .client_id("app")
            .client_secret("secret")
            // Nothing listens there: the windows that do not panic fail to connect.
            .base_url("http://127.0.0.1:9")
            .login_url("http://127.0.0.1:9")
            .build()
            .expect("the client builds");
        let now = SystemTime::now();
        let from = now - Duration::from_secs(3_600);
        let opts = RangeOptions {
            split: Split::Every(Duration::from_secs(600)),
            concurrency: 1,
            ..RangeOptions::default()
        };
        let mut hunt = client
            .hunt_range("T", from, now, Some(opts))
            .expect("the hunt starts");
        hunt.panic_at = Some(from);
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let first = hunt.next();
            let after = hunt.next().is_none();
            let _ = tx.send((first, after));
        });
        let (first, after) = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("the iterator answers instead of hanging");
        assert!(
            matches!(first, Some(Err(Error::Panicked { ref message, .. })) if message.contains("injected")),
            "{first:?}"
        );
        assert!(after, "the hunt is over after the error");
    }
}
