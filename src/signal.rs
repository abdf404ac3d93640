//! Process signals: SIGTERM (Kubernetes) and Ctrl-C both mean "drain and exit". Every command
//! that runs for long waits for them here, so they are caught in one place.

use tokio_util::sync::CancellationToken;

/// Resolves on the first SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// A token cancelled on the first SIGTERM or Ctrl-C, for runs that stop by token. `notice`,
/// when given, is printed on stderr at that moment so a person at the terminal sees the
/// signal was heard while the run drains.
pub fn cancel_on_shutdown_signal(notice: Option<&'static str>) -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        if let Some(notice) = notice {
            eprintln!("{notice}");
        }
        t.cancel();
    });
    token
}

/// What a run that hands back its unsent recipients says when it is told to stop.
pub const HANDING_BACK: &str = "stopping: finishing requests in flight, handing back the rest…";
