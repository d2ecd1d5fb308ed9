//! Panics caught at the edges where user code runs (a publisher, a handler), turned
//! into failures of the work they interrupted instead of the end of a task.

use std::any::Any;

/// What a caught panic said: its message when it was a string, else "a panic".
pub(crate) fn message(panic: &(dyn Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic".to_owned())
}
