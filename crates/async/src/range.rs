//! Driving a ranged hunt: the plan is `defender_core::range::RangePlan`; this only runs
//! its windows through the client and hands finished windows out in order.
//!
//! Each running window is a task of its own. Dropping the hunt, or its ending in an error,
//! aborts them: the future of a window's call is dropped, which cancels the call (one not
//! sent yet is never sent and gives its quota back). A task that panics comes back as
//! [`Error::Panicked`], which ends the hunt; the panic is not re-raised in the caller.

use std::future::Future;
use std::pin::Pin;
use std::time::SystemTime;

use defender_core::engine::{Call, Value};
use defender_core::hunting::{HuntRequest, HuntResult};
use defender_core::range::{
    ClampWarning, RangeError, RangeOptions, RangePlan, RangeProgress, WindowRows,
};
use defender_core::Error;
use futures_util::stream::FuturesUnordered;
use futures_util::StreamExt;

use crate::Client;

type WindowFuture = Pin<Box<dyn Future<Output = (SystemTime, Result<HuntResult, Error>)> + Send>>;

/// A window's call in a task of its own, aborted (so its call cancelled) when dropped.
///
/// A call's request is sent by its future; a window runs in a task so that it goes out,
/// and its answer is read within its timeout, while the caller is busy with the rows of
/// an earlier window and not polling the hunt.
struct WindowTask {
    /// The window's start, to report a task that ended without a result.
    start: SystemTime,
    task: tokio::task::JoinHandle<Result<HuntResult, Error>>,
}

impl Future for WindowTask {
    type Output = (SystemTime, Result<HuntResult, Error>);

    fn poll(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let start = self.start;
        Pin::new(&mut self.task).poll(cx).map(|joined| {
            let result = match joined {
                Ok(result) => result,
                Err(e) if e.is_panic() => {
                    Err(Error::panicked("window of a ranged hunt", &*e.into_panic()))
                }
                // Aborted: by `Drop` below (then nobody polls), or by a runtime shutting
                // down.
                Err(_) => Err(Error::Shutdown),
            };
            (start, result)
        })
    }
}

impl Drop for WindowTask {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A ranged hunt in progress: take its windows with [`RangeHunt::next_window`].
///
/// Dropping it aborts the windows still running (see the module docs): no quota is spent
/// on results nobody will read.
pub struct RangeHunt {
    client: Client,
    plan: RangePlan,
    warning: Option<ClampWarning>,
    running: FuturesUnordered<WindowFuture>,
    failed: bool,
    /// Test-only: the task of this window panics.
    #[cfg(test)]
    panic_at: Option<SystemTime>,
}

impl std::fmt::Debug for RangeHunt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RangeHunt")
            .field("plan", &self.plan)
            .field("running", &self.running.len())
            .finish()
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
        Ok(RangeHunt {
            client,
            plan,
            warning,
            running: FuturesUnordered::new(),
            failed: false,
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

    /// The next finished window, in time order; `None` when the hunt is over. After an
    /// error, the windows already handed out stand and the hunt is over.
    pub async fn next_window(&mut self) -> Option<Result<WindowRows, Error>> {
        loop {
            if let Some(rows) = self.plan.poll_rows() {
                return Some(Ok(rows));
            }
            if self.failed || self.plan.is_done() {
                return None;
            }
            while let Some(w) = self.plan.poll_window() {
                let client = self.client.clone();
                #[cfg(test)]
                let panics = self.panic_at == Some(w.start);
                let task = self.client.spawn(async move {
                    #[cfg(test)]
                    if panics {
                        panic!("injected into the window's task");
                    }
                    client
                        .call(Call::HuntWindow(HuntRequest::new(w.query)))
                        .await
                        .and_then(Value::into_hunt)
                });
                self.running.push(Box::pin(WindowTask {
                    start: w.start,
                    task,
                }));
            }
            let (start, result) = self.running.next().await?;
            if let Err(e) = self.plan.handle_result(start, result) {
                self.failed = true;
                // The hunt is over: abort the other windows, whose results would be
                // discarded.
                self.running = FuturesUnordered::new();
                return Some(Err(e));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use defender_core::range::Split;
    use std::time::Duration;

    /// A window's task that panics ends the hunt with `Error::Panicked`; the panic is not
    /// re-raised in the caller of `next_window`.
    #[tokio::test]
    async fn a_panicking_window_ends_the_hunt_with_an_error() {
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
        let first = tokio::time::timeout(Duration::from_secs(20), hunt.next_window())
            .await
            .expect("the hunt answers instead of hanging");
        assert!(
            matches!(first, Some(Err(Error::Panicked { ref message, .. })) if message.contains("injected")),
            "{first:?}"
        );
        assert!(hunt.next_window().await.is_none(), "the hunt is over");
    }
}
