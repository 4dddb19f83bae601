//! What the instruction benches share.

/// Gives the process a second thread, idle, as every service has (a runtime's workers, its
/// blocking pool, a signal thread; lifecycle has its watchdog), unless `ONE_THREAD` is set.
/// Both sides of a comparison call it: glibc takes a faster path for each system call and
/// allocation while a process has one thread only, which would count against lifecycle-http
/// (about 240 instructions per HTTP/1 request) what no service sees.
pub(crate) fn second_thread() {
    if std::env::var_os("ONE_THREAD").is_none() {
        std::thread::spawn(|| loop {
            std::thread::park();
        });
    }
}
