//! CPU time of the parts of a run, from `/proc/*/task/*/schedstat` (nanoseconds on CPU per
//! thread): the resource server's threads in this process, the `tessera serve` process, and the
//! Redis server holding the sessions. Divided by a row's requests, they say where a request's
//! time goes.

use std::time::Duration;

/// Reads the CPU time some threads have used so far.
#[derive(Debug, Clone)]
pub enum CpuProbe {
    /// This process's threads with this name.
    Threads(String),
    /// Every thread of another process.
    Process(u32),
    /// Every thread of another process and of its children (nginx's master and workers).
    Tree(u32),
}

impl CpuProbe {
    /// The summed on-CPU time of the probe's threads; `None` where the kernel does not say or
    /// none is found.
    pub fn read(&self) -> Option<Duration> {
        if let Self::Tree(pid) = self {
            let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).ok()?;
            let pids = children.split_whitespace().filter_map(|c| c.parse().ok()).chain([*pid]);
            return pids.map(|p| Self::Process(p).read()).sum();
        }
        let (dir, name) = match self {
            Self::Threads(name) => ("/proc/self/task".to_owned(), Some(name.as_str())),
            Self::Process(pid) | Self::Tree(pid) => (format!("/proc/{pid}/task"), None),
        };
        let mut total = 0u64;
        let mut found = false;
        for task in std::fs::read_dir(dir).ok()?.flatten() {
            if let Some(name) = name {
                let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
                if comm.trim_end() != name {
                    continue;
                }
            }
            // A thread may end between the listing and the read.
            let Ok(schedstat) = std::fs::read_to_string(task.path().join("schedstat")) else { continue };
            total += schedstat.split_whitespace().next()?.parse::<u64>().ok()?;
            found = true;
        }
        found.then(|| Duration::from_nanos(total))
    }
}

/// The process id of the Redis server at `url` (its `INFO server`), to probe its CPU time.
pub async fn redis_pid(url: &str) -> Option<u32> {
    let client = redis::Client::open(url).ok()?;
    let mut conn = client.get_multiplexed_async_connection().await.ok()?;
    let info: String = redis::cmd("INFO").arg("server").query_async(&mut conn).await.ok()?;
    info.lines().find_map(|line| line.strip_prefix("process_id:")?.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_probe_sees_this_process_and_a_thread_probe_only_its_threads() {
        let busy = std::thread::Builder::new()
            .name("probe-test".into())
            .spawn(|| {
                let start = std::time::Instant::now();
                while start.elapsed() < Duration::from_millis(20) {}
            })
            .unwrap();
        busy.join().unwrap();
        assert!(CpuProbe::Process(std::process::id()).read().is_some_and(|t| t > Duration::ZERO));
        assert!(CpuProbe::Threads("no-such-thread".into()).read().is_none());
        assert!(CpuProbe::Process(u32::MAX).read().is_none());
        assert!(CpuProbe::Tree(std::process::id()).read().is_some_and(|t| t > Duration::ZERO));
    }
}
