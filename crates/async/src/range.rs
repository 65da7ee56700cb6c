//! Driving a ranged hunt: the plan is `defender_core::range::RangePlan`; this only runs
//! its windows through the client and hands finished windows out in order.

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
struct WindowTask(tokio::task::JoinHandle<(SystemTime, Result<HuntResult, Error>)>);

impl Future for WindowTask {
    type Output = (SystemTime, Result<HuntResult, Error>);

    fn poll(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        Pin::new(&mut self.0).poll(cx).map(|joined| match joined {
            Ok(out) => out,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            // Only `Drop` below aborts, and then nobody polls.
            Err(_) => (SystemTime::UNIX_EPOCH, Err(Error::Cancelled)),
        })
    }
}

impl Drop for WindowTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A ranged hunt in progress: take its windows with [`RangeHunt::next_window`].
pub struct RangeHunt {
    client: Client,
    plan: RangePlan,
    warning: Option<ClampWarning>,
    running: FuturesUnordered<WindowFuture>,
    failed: bool,
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
                let task = self.client.spawn(async move {
                    let result = match client
                        .call(Call::HuntWindow(HuntRequest::new(w.query)))
                        .await
                    {
                        Ok(Value::Hunt(r)) => Ok(r),
                        Ok(other) => Err(crate::unexpected(other)),
                        Err(e) => Err(e),
                    };
                    (w.start, result)
                });
                self.running.push(Box::pin(WindowTask(task)));
            }
            let (start, result) = self.running.next().await?;
            if let Err(e) = self.plan.handle_result(start, result) {
                self.failed = true;
                return Some(Err(e));
            }
        }
    }
}
