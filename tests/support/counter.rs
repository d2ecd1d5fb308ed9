//! A global `metrics` recorder that counts one counter, for tests of what a relay or
//! consumer records.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};

/// The process's recorder: counts the counter named `name` (all labels together),
/// ignores every other metric.
#[derive(Debug)]
struct One {
    name: &'static str,
    count: Arc<AtomicU64>,
}

impl Recorder for One {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        if key.name() == self.name {
            Counter::from_arc(Arc::clone(&self.count))
        } else {
            Counter::noop()
        }
    }

    fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::noop()
    }

    fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::noop()
    }
}

/// Installs the process's recorder, counting the counter `name`, and returns its
/// count. Each test runs in a process of its own (nextest): call it once, first.
pub fn count(name: &'static str) -> Arc<AtomicU64> {
    let count = Arc::new(AtomicU64::new(0));
    metrics::set_global_recorder(One {
        name,
        count: Arc::clone(&count),
    })
    .expect("the only recorder of this test's process");
    count
}

/// The count so far.
pub fn read(count: &AtomicU64) -> u64 {
    count.load(Ordering::SeqCst)
}
