//! Long writes in batches that each commit, with progress on a terminal and a clean
//! stop on Ctrl-C.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::Failure;

/// A write done `batch` rows at a time until a batch comes back short.
pub(crate) struct Batches {
    what: &'static str,
    total: u64,
    batch: u64,
    json: bool,
}

impl Batches {
    /// `total` is what a dry run counted, for the bar; `json` keeps the terminal quiet.
    pub(crate) fn new(what: &'static str, total: u64, batch: u64, json: bool) -> Self {
        Batches {
            what,
            total,
            batch,
            json,
        }
    }

    /// Runs `step(limit)` (one statement, committed: it returns the rows it changed)
    /// until a step changes fewer than `limit` rows. Ctrl-C stops it after the step in
    /// progress: what was done stays done, and the error says how far it got.
    pub(crate) async fn run<F, Fut>(self, mut step: F) -> Result<u64, Failure>
    where
        F: FnMut(u64) -> Fut,
        Fut: Future<Output = outbox::Result<u64>>,
    {
        let interrupted = Arc::new(AtomicBool::new(false));
        let watcher = {
            let interrupted = Arc::clone(&interrupted);
            tokio::spawn(async move {
                if tokio::signal::ctrl_c().await.is_ok() {
                    interrupted.store(true, Ordering::SeqCst);
                }
            })
        };
        let bar = self.bar();
        let mut done = 0;
        let outcome = loop {
            if interrupted.load(Ordering::SeqCst) {
                break Err(format!(
                    "interrupted after {done} of {} rows ({}); each batch committed: \
                     run the command again to go on",
                    self.total, self.what
                )
                .into());
            }
            match step(self.batch).await {
                Ok(changed) => {
                    done += changed;
                    bar.set_length(self.total.max(done));
                    bar.set_position(done);
                    if changed < self.batch {
                        break Ok(done);
                    }
                }
                Err(error) => {
                    break Err(format!(
                        "{} stopped after {done} rows, each batch committed: {error}",
                        self.what
                    )
                    .into());
                }
            }
        };
        bar.finish_and_clear();
        watcher.abort();
        outcome
    }

    /// A bar on stderr when it is a terminal and JSON was not asked for.
    fn bar(&self) -> ProgressBar {
        let target = if self.json {
            ProgressDrawTarget::hidden()
        } else {
            // Hidden by indicatif itself when stderr is not a terminal.
            ProgressDrawTarget::stderr()
        };
        let bar = ProgressBar::with_draw_target(Some(self.total), target);
        if let Ok(style) =
            ProgressStyle::with_template("{msg}: {bar:30} {pos}/{len} rows, eta {eta}")
        {
            bar.set_style(style);
        }
        bar.set_message(self.what);
        bar
    }
}
