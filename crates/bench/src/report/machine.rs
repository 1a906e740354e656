//! The machine and the stores a run measured, for the report's header.

/// The machine the benchmark ran on.
#[derive(Debug, Clone)]
pub struct Machine {
    /// Logical CPUs available to this process.
    pub cores: usize,
    /// From `/proc/cpuinfo`: the model name, with the vendor's family and model numbers when
    /// given (a VM's model name may say little).
    pub cpu_model: String,
    /// The kernel's release (`/proc/sys/kernel/osrelease`).
    pub kernel: String,
}

impl std::fmt::Display for Machine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}, {} cores, Linux {}", self.cpu_model, self.cores, self.kernel)
    }
}

/// This machine.
pub fn machine() -> Machine {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let cpu_model =
        std::fs::read_to_string("/proc/cpuinfo").map_or_else(|_| "unknown CPU".into(), |info| cpu_model(&info));
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map_or_else(|_| "unknown".into(), |release| release.trim().to_owned());
    Machine { cores, cpu_model, kernel }
}

/// The first processor's model of a `/proc/cpuinfo`.
pub(super) fn cpu_model(info: &str) -> String {
    let field = |name: &str| {
        info.lines().find_map(|line| {
            let (key, value) = line.split_once(':')?;
            (key.trim() == name).then(|| value.trim().to_owned()).filter(|v| !v.is_empty())
        })
    };
    let numbers = match (field("cpu family"), field("model")) {
        (Some(family), Some(model)) => Some(format!("family {family} model {model}")),
        _ => None,
    };
    match (field("model name"), field("vendor_id"), numbers) {
        (Some(name), _, Some(numbers)) => format!("{name} ({numbers})"),
        (Some(name), _, None) => name,
        (None, Some(vendor), Some(numbers)) => format!("{vendor} {numbers}"),
        (None, Some(vendor), None) => vendor,
        (None, None, Some(numbers)) => numbers,
        (None, None, None) => "unknown CPU".into(),
    }
}

/// The stores the server runs on, users' and sessions': it inherits `TESSERA_DATABASE_URL` and
/// `TESSERA_SESSION_STORE_URL` from the benchmark's environment.
pub fn store_kinds() -> (&'static str, &'static str) {
    let kind = |var: &str| {
        std::env::var(var).ok().filter(|url| !url.is_empty()).map(|url| {
            if url.starts_with("redis") || url.starts_with("valkey") {
                "Redis"
            } else if url.starts_with("postgres") {
                "PostgreSQL"
            } else {
                "SQLite"
            }
        })
    };
    let users = kind("TESSERA_DATABASE_URL").unwrap_or("SQLite");
    let sessions = kind("TESSERA_SESSION_STORE_URL").unwrap_or(users);
    (users, sessions)
}
