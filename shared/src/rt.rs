//! The tokio runtime both binaries run on.

/// One worker per CPU; on a single CPU (a small VM, or pinned with taskset)
/// the current-thread scheduler, which skips cross-thread wake-ups that a
/// lone worker gains nothing from.
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut builder = if cpus == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    builder.enable_all().build()
}
