//! Waiting for the process to be asked to stop.

/// Resolves when the process is asked to stop: SIGTERM (what Kubernetes, systemd and
/// Docker send) or Ctrl-C. Await it, then shut the relay down, so the batch in flight
/// is written back and the shards are released at once:
///
/// ```no_run
/// # async fn f(relay: outbox::RelayHandle) -> Result<(), Box<dyn std::error::Error>> {
/// outbox::shutdown_signal().await?;
/// relay.shutdown().await?;
/// # Ok(()) }
/// ```
///
/// # Errors
/// When the signal handlers cannot be installed.
pub async fn shutdown_signal() -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut terminate = signal(SignalKind::terminate())?;
        tokio::select! {
            _ = terminate.recv() => Ok(()),
            interrupted = tokio::signal::ctrl_c() => interrupted,
        }
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c().await
    }
}
