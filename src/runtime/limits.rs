//! How many connections this process can afford (project issue 7).
//!
//! Thread-per-connection costs, per connection: 2 file descriptors (the socket and its
//! `try_clone`), 2 threads, and about 4 memory mappings per thread (the stack, its guard
//! page and per-thread allocator arenas). On this project's test machine a process died
//! at about 8,200 connections with `vm.max_map_count` = 65,530, i.e. about 8 mappings
//! per connection; so mappings, not file descriptors, usually bind first.
//!
//! [`ResourceLimits::read`] reads the limits from `/proc` without `unsafe`; every source
//! is optional. [`ResourceLimits::from_texts`] does the same from given file contents,
//! which is what the tests use. The derived cap takes, for each resource,
//! `(limit - reserve) * 80% / cost per connection`, and keeps the smallest.
//!
//! Note that a loopback benchmark holds *both* ends of each connection in one process,
//! so it can open only half as many connection pairs.

use std::fmt;
use std::fs;

/// File descriptors per connection (the socket and its clone for the second thread).
pub const FDS_PER_CONN: u64 = 2;
/// Threads per connection (reader and writer).
pub const THREADS_PER_CONN: u64 = 2;
/// Memory mappings per connection: ~4 per thread (measured: death at ~8,200
/// connections with max_map_count 65,530).
pub const MAPS_PER_CONN: u64 = 8;
/// Fraction of each limit we allow ourselves, in percent.
pub const HEADROOM_PERCENT: u64 = 80;
/// Descriptors kept for listeners, log files, the binary's own needs.
pub const FD_RESERVE: u64 = 64;
/// Mappings kept for the executable, shared libraries, heap and the main threads.
pub const MAP_RESERVE: u64 = 1024;
/// Threads kept for the acceptor, dispatch and the application.
pub const THREAD_RESERVE: u64 = 64;
/// Connection cap when no limit can be read at all.
pub const FALLBACK_CAP: usize = 1024;

/// The process's resource limits and the connection cap they imply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceLimits {
    /// Soft `RLIMIT_NOFILE` ("Max open files").
    pub open_files: Option<u64>,
    /// Soft `RLIMIT_NPROC` ("Max processes"); counts every thread of the *user*.
    pub nproc: Option<u64>,
    /// Soft `RLIMIT_AS` ("Max address space") in bytes.
    pub address_space: Option<u64>,
    /// `vm.max_map_count`.
    pub max_map_count: Option<u64>,
    /// `kernel.threads-max`.
    pub threads_max: Option<u64>,
    /// `kernel.pid_max` (every thread needs a pid).
    pub pid_max: Option<u64>,
    /// Stack size per connection thread used for the address-space bound.
    pub stack_bytes: u64,
    /// Connections this process should allow.
    pub derived_cap: usize,
    /// The limit that sets `derived_cap`.
    pub binding: &'static str,
    /// Every bound considered: (limit name, connections it allows).
    pub bounds: Vec<(&'static str, u64)>,
}

/// Values from `/proc/self/limits` ("unlimited" is `None`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProcLimits {
    /// Soft "Max open files".
    pub open_files: Option<u64>,
    /// Soft "Max processes".
    pub nproc: Option<u64>,
    /// Soft "Max address space".
    pub address_space: Option<u64>,
}

/// Parse the text of `/proc/self/limits`. Unknown lines and "unlimited" are skipped.
pub fn parse_proc_limits(text: &str) -> ProcLimits {
    let mut out = ProcLimits::default();
    for line in text.lines() {
        let (slot, rest) = if let Some(r) = line.strip_prefix("Max open files") {
            (&mut out.open_files, r)
        } else if let Some(r) = line.strip_prefix("Max processes") {
            (&mut out.nproc, r)
        } else if let Some(r) = line.strip_prefix("Max address space") {
            (&mut out.address_space, r)
        } else {
            continue;
        };
        // Columns: soft limit, hard limit, units. The soft limit is what binds.
        *slot = rest.split_whitespace().next().and_then(|s| s.parse().ok());
    }
    out
}

/// Parse a `/proc/sys` file holding one integer.
pub fn parse_proc_value(text: &str) -> Option<u64> {
    text.trim().parse().ok()
}

impl ResourceLimits {
    /// Read the limits of this process from `/proc`; missing files are skipped.
    pub fn read(stack_bytes: usize) -> Self {
        let rd = |p: &str| fs::read_to_string(p).ok();
        let limits = rd("/proc/self/limits");
        let maps = rd("/proc/sys/vm/max_map_count");
        let threads = rd("/proc/sys/kernel/threads-max");
        let pids = rd("/proc/sys/kernel/pid_max");
        ResourceLimits::from_texts(
            limits.as_deref(),
            maps.as_deref(),
            threads.as_deref(),
            pids.as_deref(),
            stack_bytes,
        )
    }

    /// Derive from file contents: `/proc/self/limits`, `vm/max_map_count`,
    /// `kernel/threads-max`, `kernel/pid_max`.
    pub fn from_texts(
        proc_limits: Option<&str>,
        max_map_count: Option<&str>,
        threads_max: Option<&str>,
        pid_max: Option<&str>,
        stack_bytes: usize,
    ) -> Self {
        let pl = proc_limits.map(parse_proc_limits).unwrap_or_default();
        let mut r = ResourceLimits {
            open_files: pl.open_files,
            nproc: pl.nproc,
            address_space: pl.address_space,
            max_map_count: max_map_count.and_then(parse_proc_value),
            threads_max: threads_max.and_then(parse_proc_value),
            pid_max: pid_max.and_then(parse_proc_value),
            stack_bytes: stack_bytes as u64,
            derived_cap: FALLBACK_CAP,
            binding: "fallback (no limits readable)",
            bounds: Vec::new(),
        };
        let per = |limit: u64, reserve: u64, cost: u64| {
            limit
                .saturating_sub(reserve)
                .saturating_mul(HEADROOM_PERCENT)
                / 100
                / cost.max(1)
        };
        let mut bounds = Vec::new();
        if let Some(v) = r.open_files {
            bounds.push((
                "open files (RLIMIT_NOFILE)",
                per(v, FD_RESERVE, FDS_PER_CONN),
            ));
        }
        if let Some(v) = r.max_map_count {
            bounds.push(("vm.max_map_count", per(v, MAP_RESERVE, MAPS_PER_CONN)));
        }
        if let Some(v) = r.threads_max {
            bounds.push((
                "kernel.threads-max",
                per(v, THREAD_RESERVE, THREADS_PER_CONN),
            ));
        }
        if let Some(v) = r.pid_max {
            bounds.push(("kernel.pid_max", per(v, THREAD_RESERVE, THREADS_PER_CONN)));
        }
        if let Some(v) = r.nproc {
            bounds.push((
                "processes (RLIMIT_NPROC)",
                per(v, THREAD_RESERVE, THREADS_PER_CONN),
            ));
        }
        if let Some(v) = r.address_space {
            let per_conn = THREADS_PER_CONN * r.stack_bytes.max(1);
            bounds.push(("address space (RLIMIT_AS)", per(v, 256 << 20, per_conn)));
        }
        if let Some(&(name, cap)) = bounds.iter().min_by_key(|(_, c)| *c) {
            r.binding = name;
            r.derived_cap = usize::try_from(cap).unwrap_or(usize::MAX).max(1);
        }
        r.bounds = bounds;
        r
    }
}

impl fmt::Display for ResourceLimits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let v =
            |o: Option<u64>| o.map_or_else(|| "unlimited/unknown".to_string(), |n| n.to_string());
        writeln!(
            f,
            "connection cap {} (bound by {}; {}% of each limit, per connection {} fds, {} threads, {} mappings)",
            self.derived_cap, self.binding, HEADROOM_PERCENT, FDS_PER_CONN, THREADS_PER_CONN, MAPS_PER_CONN
        )?;
        writeln!(f, "  open files        {}", v(self.open_files))?;
        writeln!(f, "  max processes     {}", v(self.nproc))?;
        writeln!(f, "  address space     {}", v(self.address_space))?;
        writeln!(f, "  vm.max_map_count  {}", v(self.max_map_count))?;
        writeln!(f, "  kernel.threads-max {}", v(self.threads_max))?;
        write!(f, "  kernel.pid_max    {}", v(self.pid_max))?;
        for (name, cap) in &self.bounds {
            write!(f, "\n  -> {name}: {cap} connections")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: &str = "\
Limit                     Soft Limit           Hard Limit           Units     
Max cpu time              unlimited            unlimited            seconds   
Max stack size            8388608              unlimited            bytes     
Max processes             96365                96365                processes 
Max open files            20000                20000                files     
Max address space         unlimited            unlimited            bytes     
";

    #[test]
    fn parses_proc_limits() {
        let p = parse_proc_limits(LIMITS);
        assert_eq!(
            p,
            ProcLimits {
                open_files: Some(20000),
                nproc: Some(96365),
                address_space: None
            }
        );
        assert_eq!(
            parse_proc_limits("garbage\nMax open files  lots 3 files\n"),
            ProcLimits::default()
        );
        assert_eq!(parse_proc_value(" 65530\n"), Some(65530));
        assert_eq!(parse_proc_value("x"), None);
    }

    #[test]
    fn map_count_binds_on_the_measured_machine() {
        let r = ResourceLimits::from_texts(
            Some(LIMITS),
            Some("65530\n"),
            Some("192730\n"),
            Some("32768\n"),
            256 << 10,
        );
        assert_eq!(r.binding, "vm.max_map_count");
        // (65530 - 1024) * 80 / 100 / 8 = 6450: below the ~8,200 where the process died.
        assert_eq!(r.derived_cap, 6450);
        assert!(r.derived_cap < 8200);
        let text = r.to_string();
        assert!(
            text.contains("connection cap 6450 (bound by vm.max_map_count"),
            "{text}"
        );
        assert!(
            text.contains("open files (RLIMIT_NOFILE): 7974 connections"),
            "{text}"
        );
    }

    #[test]
    fn each_limit_can_bind() {
        let fds = ResourceLimits::from_texts(
            Some("Max open files 1024 1024 files\n"),
            Some("65530"),
            None,
            None,
            1 << 20,
        );
        assert_eq!(
            (fds.binding, fds.derived_cap),
            ("open files (RLIMIT_NOFILE)", 384)
        );
        let pids = ResourceLimits::from_texts(
            None,
            Some("1000000"),
            Some("1000000"),
            Some("4096"),
            1 << 20,
        );
        assert_eq!((pids.binding, pids.derived_cap), ("kernel.pid_max", 1612));
        let as_ = ResourceLimits::from_texts(
            Some("Max address space 1342177280 1342177280 bytes\n"),
            None,
            None,
            None,
            1 << 20,
        );
        assert_eq!(as_.binding, "address space (RLIMIT_AS)");
        assert_eq!(as_.derived_cap, 409);
    }

    #[test]
    fn nothing_readable_falls_back() {
        let r = ResourceLimits::from_texts(None, Some("junk"), None, None, 1 << 20);
        assert_eq!(
            (r.derived_cap, r.binding),
            (FALLBACK_CAP, "fallback (no limits readable)")
        );
        assert!(r.bounds.is_empty());
        // A limit below the reserve still allows one connection rather than none.
        let tiny = ResourceLimits::from_texts(
            Some("Max open files 10 10 files\n"),
            None,
            None,
            None,
            1 << 20,
        );
        assert_eq!(tiny.derived_cap, 1);
    }

    #[test]
    fn reads_this_machine() {
        let r = ResourceLimits::read(256 << 10);
        assert!(r.derived_cap >= 1);
        assert!(!r.to_string().is_empty());
    }
}
