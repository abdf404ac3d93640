//! The terminal progress bar of a run (`herald send`, `herald demo`), fed from the engine's
//! counters; nothing when stderr is not a terminal or the user asked for quiet.

use std::sync::Arc;
use std::time::Duration;

use crate::engine::Progress;

/// A progress bar fed from the engine's counters, when stderr is a terminal.
pub fn progress_bar(
    progress: Arc<Progress>,
    quiet: bool,
) -> Option<(indicatif::ProgressBar, tokio::task::JoinHandle<()>)> {
    use std::io::IsTerminal;
    use std::sync::atomic::Ordering;
    if quiet || !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} recipients  {per_sec}  {msg}",
        )
        .expect("valid template"),
    );
    let b = bar.clone();
    let task = tokio::spawn(async move {
        loop {
            b.set_length(progress.total.load(Ordering::Relaxed));
            b.set_position(progress.done.load(Ordering::Relaxed));
            b.set_message(format!("{} sent", progress.sent.load(Ordering::Relaxed)));
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    Some((bar, task))
}
