//! Reading another process's memory and CPU time from `/proc`.
//!
//! Why it exists: the idle scenario reports the broker's memory per connection (VmRSS before and
//! after), and the pub/sub scenarios report how much CPU the broker and the load generator used
//! inside the measurement window. On a 2-core machine where both share the cores, that is what
//! tells "the broker is slower" apart from "the broker got less CPU".

use std::fs;
use std::io;

/// Resident set size in KiB, from `/proc/PID/status`.
pub fn rss_kib(pid: u32) -> io::Result<u64> {
    let status = read_status(pid)?;
    status_kib(&status, "VmRSS", pid)
}

/// Peak and current resident set size in KiB (`VmHWM`, `VmRSS`), from one read of
/// `/proc/PID/status`.
pub fn memory_kib(pid: u32) -> io::Result<(u64, u64)> {
    let status = read_status(pid)?;
    Ok((
        status_kib(&status, "VmHWM", pid)?,
        status_kib(&status, "VmRSS", pid)?,
    ))
}

fn read_status(pid: u32) -> io::Result<String> {
    fs::read_to_string(format!("/proc/{pid}/status"))
}

fn status_kib(status: &str, key: &str, pid: u32) -> io::Result<u64> {
    parse_status_kib(status, key).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("no {key} in /proc/{pid}/status"),
        )
    })
}

/// The `KEY:` line of a `/proc/PID/status` file, in KiB.
pub fn parse_status_kib(status: &str, key: &str) -> Option<u64> {
    let line = status
        .lines()
        .find_map(|line| line.strip_prefix(key)?.strip_prefix(':'))?;
    let mut fields = line.split_whitespace();
    let value: u64 = fields.next()?.parse().ok()?;
    match fields.next() {
        Some("kB") | None => Some(value),
        Some(_) => None,
    }
}

/// User plus system CPU time of process `pid` (all its threads), in seconds.
pub fn cpu_seconds(pid: u32) -> io::Result<f64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let ticks = parse_stat_cpu_ticks(&stat).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("cannot parse /proc/{pid}/stat"),
        )
    })?;
    // SAFETY: sysconf has no preconditions.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    Ok(ticks as f64 / per_second.max(1) as f64)
}

/// utime + stime (fields 14 and 15) of a `/proc/PID/stat` line, in clock ticks. The command
/// name (field 2) may contain spaces and parentheses, so fields are counted after its last `)`.
pub fn parse_stat_cpu_ticks(stat: &str) -> Option<u64> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    // After the name: field 3 (state) is the first, so utime (14) is the 12th.
    let mut fields = after_name.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vm_rss_line() {
        let status = "Name:\tmosquitto\nVmPeak:\t   20000 kB\nVmRSS:\t    7424 kB\nThreads:\t1\n";
        assert_eq!(parse_status_kib(status, "VmRSS"), Some(7424));
        assert_eq!(parse_status_kib(status, "VmPeak"), Some(20000));
        assert_eq!(parse_status_kib("Name:\tx\n", "VmRSS"), None);
    }

    #[test]
    fn stat_cpu_ticks_with_a_tricky_name() {
        let stat = "1234 (my (odd) name) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 3 0 100 1000 200";
        assert_eq!(parse_stat_cpu_ticks(stat), Some(325));
        assert_eq!(parse_stat_cpu_ticks("garbage"), None);
    }

    #[test]
    fn own_process_is_readable() {
        let pid = std::process::id();
        assert!(rss_kib(pid).unwrap() > 0);
        assert!(cpu_seconds(pid).unwrap() >= 0.0);
    }
}
