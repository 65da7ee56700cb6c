//! Driving a ranged hunt: the plan is `defender_core::range::RangePlan`; this only runs
//! its windows through the client on worker threads and hands finished windows out in
//! order.

use std::sync::mpsc;
use std::time::SystemTime;

use defender_core::engine::{Call, Value};
use defender_core::hunting::{HuntRequest, HuntResult};
use defender_core::range::{
    ClampWarning, RangeError, RangeOptions, RangePlan, RangeProgress, WindowRows,
};
use defender_core::Error;

use crate::Client;

/// A ranged hunt in progress: an iterator over its finished windows, in time order.
#[derive(Debug)]
pub struct RangeHunt {
    client: Client,
    plan: RangePlan,
    warning: Option<ClampWarning>,
    tx: mpsc::Sender<(SystemTime, Result<HuntResult, Error>)>,
    rx: mpsc::Receiver<(SystemTime, Result<HuntResult, Error>)>,
    running: usize,
    failed: bool,
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
                let client = self.client.clone();
                let tx = self.tx.clone();
                self.running += 1;
                std::thread::spawn(move || {
                    let result = match client.call(Call::HuntWindow(HuntRequest::new(w.query))) {
                        Ok(Value::Hunt(r)) => Ok(r),
                        Ok(other) => Err(crate::unexpected(other)),
                        Err(e) => Err(e),
                    };
                    let _ = tx.send((w.start, result));
                });
            }
            if self.running == 0 {
                return None;
            }
            let (start, result) = self.rx.recv().ok()?;
            self.running -= 1;
            if let Err(e) = self.plan.handle_result(start, result) {
                self.failed = true;
                return Some(Err(e));
            }
        }
    }
}
