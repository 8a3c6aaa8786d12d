//! The whole machine's CPU time, from /proc/stat: benchmarks compare what a run cost every
//! process (softirq and helper processes included), not only their own.

/// (busy, total) jiffies over all CPUs since boot, from /proc/stat's first line.
pub fn jiffies() -> (u64, u64) {
    let s = std::fs::read_to_string("/proc/stat").expect("/proc/stat");
    let v: Vec<u64> = s
        .lines()
        .next()
        .expect("cpu line")
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal
    let idle = v[3] + v[4];
    let busy = v[0] + v[1] + v[2] + v[5] + v[6] + v.get(7).copied().unwrap_or(0);
    (busy, busy + idle)
}

/// Jiffies per second.
pub fn hz() -> f64 {
    // SAFETY: sysconf has no preconditions.
    (unsafe { libc::sysconf(libc::_SC_CLK_TCK) }) as f64
}

/// Busy CPU seconds over all CPUs since boot.
pub fn busy_s() -> f64 {
    jiffies().0 as f64 / hz()
}
