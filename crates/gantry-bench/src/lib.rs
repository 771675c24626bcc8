//! What the benchmark binaries share: nearest-rank percentiles and
//! durations in milliseconds, so every table computes its columns alike,
//! and the `gantry` processes the cluster benchmarks start (`processes`).
#![forbid(unsafe_code)]

pub mod processes;

use std::time::Duration;

/// The `p` quantile (0..=1) of `sorted`, nearest rank; the default (zero)
/// when empty.
pub fn percentile<T: Copy + Default>(sorted: &[T], p: f64) -> T {
    match sorted.len() {
        0 => T::default(),
        len => sorted[((len - 1) as f64 * p).round() as usize],
    }
}

/// `--trials N` (from `default`, within `1..=max`), the only argument of a
/// benchmark that times trials; `None` after `--help` printed the usage.
pub fn trials_argument(bin: &str, default: usize, max: usize) -> anyhow::Result<Option<usize>> {
    use anyhow::{Context, bail};
    let mut trials = default;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--trials" => {
                trials = args.next().context("--trials needs a number")?.parse().context("--trials takes a number")?
            }
            "--help" | "-h" => {
                println!("usage: {bin} [--trials N ({default})]");
                return Ok(None);
            }
            other => bail!("unknown argument {other:?}; see --help"),
        }
    }
    if !(1..=max).contains(&trials) {
        bail!("--trials 1..{max}");
    }
    Ok(Some(trials))
}

/// `d` in milliseconds, fractions kept (latency tables print `{:.1}`).
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_is_the_nearest_rank() {
        let sorted: Vec<u64> = (1..=101).collect();
        assert_eq!(percentile(&sorted, 0.0), 1);
        assert_eq!(percentile(&sorted, 0.5), 51);
        assert_eq!(percentile(&sorted, 0.99), 100);
        assert_eq!(percentile(&sorted, 1.0), 101);
        assert_eq!(percentile::<Duration>(&[], 0.5), Duration::ZERO);
    }

    #[test]
    fn ms_keeps_fractions() {
        assert_eq!(ms(Duration::from_micros(1500)), 1.5);
    }
}
