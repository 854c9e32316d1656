//! The results table: one row per (measurement, size, connections, target), with the
//! ratio of each target's message rate to the raw TCP rate measured in the same run.

use std::fmt::Write as _;

use super::latency::fmt_dur;
use super::{fmt_size, Mode, RunResult};

/// The name of the baseline target that ratios are taken against.
pub const BASELINE: &str = "raw-tcp";

/// `1.23M`, `45.6k`, `789`.
fn fmt_rate(r: f64) -> String {
    if r >= 1e6 {
        format!("{:.2}M", r / 1e6)
    } else if r >= 1e3 {
        format!("{:.1}k", r / 1e3)
    } else {
        format!("{r:.0}")
    }
}

/// Render `results` as a table. Runs stopped by the duration cap are marked `*`.
pub fn render(results: &[RunResult]) -> String {
    let mut rows: Vec<&RunResult> = results.iter().collect();
    rows.sort_by_key(|r| {
        (
            r.mode,
            r.workload.size,
            r.workload.conns,
            r.target != BASELINE,
        )
    });
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<10} {:>7} {:>5} {:>5}  {:<9} {:>10} {:>8} {:>9} {:>9} {:>9} {:>9}  {:>7}",
        "mode",
        "size",
        "conns",
        "depth",
        "target",
        "msgs/s",
        "GB/s",
        "p50",
        "p99",
        "p999",
        "max",
        "vs raw"
    );
    let mut any_capped = false;
    for r in &rows {
        let w = &r.workload;
        let base = rows.iter().find(|b| {
            b.target == BASELINE
                && b.mode == r.mode
                && b.workload.size == w.size
                && b.workload.conns == w.conns
        });
        let ratio = match base {
            Some(b) if r.target != BASELINE && b.msgs_per_sec() > 0.0 => {
                format!("{:.2}x", r.msgs_per_sec() / b.msgs_per_sec())
            }
            _ => "-".to_string(),
        };
        let depth = if r.mode == Mode::Latency { 1 } else { w.depth };
        any_capped |= r.capped;
        let _ = writeln!(
            out,
            "{:<10} {:>7} {:>5} {:>5}  {:<9} {:>10} {:>8.3} {:>9} {:>9} {:>9} {:>9}  {:>7}",
            r.mode.to_string(),
            fmt_size(w.size),
            w.conns,
            depth,
            r.target,
            format!(
                "{}{}",
                fmt_rate(r.msgs_per_sec()),
                if r.capped { "*" } else { "" }
            ),
            r.gb_per_sec(),
            fmt_dur(r.latency.p50),
            fmt_dur(r.latency.p99),
            fmt_dur(r.latency.p999),
            fmt_dur(r.latency.max),
            ratio
        );
    }
    if any_capped {
        out.push_str("* stopped by the duration cap before the message count was reached\n");
    }
    out.push_str(
        "throughput latency = enqueue to ack (1 in 16 messages sampled); ping-pong latency = round trip; \
         GB/s = payload 10^9 bytes/s\n",
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::{LatencySummary, Workload};
    use std::time::Duration;

    fn result(target: &str, mode: Mode, msgs: u64, capped: bool) -> RunResult {
        RunResult {
            target: target.into(),
            mode,
            workload: Workload {
                size: 4096,
                count: msgs,
                conns: 8,
                depth: 64,
                duration_cap: Duration::from_secs(5),
            },
            messages: msgs,
            bytes: msgs * 4096,
            elapsed: Duration::from_secs(1),
            latency: LatencySummary {
                count: 10,
                p50: Duration::from_micros(12),
                ..Default::default()
            },
            capped,
        }
    }

    #[test]
    fn table_has_ratio_against_raw() {
        let t = render(&[
            result("msgr2", Mode::Throughput, 500_000, false),
            result(BASELINE, Mode::Throughput, 1_000_000, true),
            result(BASELINE, Mode::Latency, 20_000, false),
        ]);
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[0].starts_with("mode"), "{t}");
        assert!(
            lines[1].contains("raw-tcp")
                && lines[1].contains("1.00M*")
                && lines[1].contains("4.096"),
            "{t}"
        );
        assert!(
            lines[2].contains("msgr2")
                && lines[2].contains("500.0k")
                && lines[2].ends_with("0.50x"),
            "{t}"
        );
        assert!(
            lines[3].starts_with("ping-pong") && lines[3].contains("12.0µs"),
            "{t}"
        );
        assert!(t.contains("* stopped by the duration cap"));
    }
}
