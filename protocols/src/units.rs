//! Parsing the units people type on every ringcore command line: sizes
//! (`64K`, `1M`), durations (`500ms`, `5s`, `2m`), rates (`20k`, `1M`) and
//! CPU lists (`0,2-3`).

use std::time::Duration;

/// Splits "12.5ms" into ("12.5", "ms"): the leading number (digits, and a
/// dot when `fraction`) and the rest.
fn split_number(text: &str, fraction: bool) -> (&str, &str) {
    let t = text.trim();
    let end = t
        .find(|c: char| !(c.is_ascii_digit() || (fraction && c == '.')))
        .unwrap_or(t.len());
    t.split_at(end)
}

/// Parses a byte size: a plain number or one with a K/M/G suffix (powers of
/// 1024; `KiB`, `KB` and `k` are read the same).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let (digits, suffix) = split_number(text, false);
    let value: u64 = digits
        .parse()
        .map_err(|_| format!("'{text}' is not a size (examples: 4096, 64K, 1M)"))?;
    let scale: u64 = match suffix.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        other => {
            return Err(format!(
                "'{text}': unknown size suffix '{other}' (use K, M or G)"
            ))
        }
    };
    value
        .checked_mul(scale)
        .ok_or_else(|| format!("'{text}' is too large"))
}

/// Parses a duration: plain seconds (`5`, `0.5`) or a number with `ms`, `s`, `m` or `h`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let (number, suffix) = split_number(text, true);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("'{text}' is not a duration (examples: 5, 500ms, 10s, 2m)"))?;
    let seconds = match suffix.trim() {
        "" | "s" => value,
        "ms" => value / 1000.0,
        "m" | "min" => value * 60.0,
        "h" => value * 3600.0,
        other => {
            return Err(format!(
                "'{text}': unknown duration unit '{other}' (use ms, s, m or h)"
            ))
        }
    };
    Duration::try_from_secs_f64(seconds).map_err(|_| format!("'{text}' is not a valid duration"))
}

/// Parses a rate per second: a plain number or one with a k/M/G suffix
/// (powers of 1000, as rates are counted), e.g. `20k`, `1M`, `2.5M`.
pub fn parse_rate(text: &str) -> Result<f64, String> {
    let (number, suffix) = split_number(text, true);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("'{text}' is not a rate (examples: 20000, 20k, 1M)"))?;
    let scale = match suffix.trim() {
        "" => 1.0,
        "k" | "K" => 1e3,
        "m" | "M" => 1e6,
        "g" | "G" => 1e9,
        other => {
            return Err(format!(
                "'{text}': unknown rate suffix '{other}' (use k, M or G)"
            ))
        }
    };
    let rate = value * scale;
    if !(rate.is_finite() && rate > 0.0) {
        return Err(format!("'{text}': a rate must be above zero"));
    }
    Ok(rate)
}

/// The most CPUs Linux supports (NR_CPUS at its largest): no CPU id is
/// this large, and no list is longer.
pub const MAX_CPUS: usize = 8192;

/// Parses a CPU list like `0,2-3` into `[0, 2, 3]`.
pub fn parse_cpu_list(text: &str) -> Result<Vec<usize>, String> {
    let mut cpus = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let bad = || format!("'{part}' in '{text}' is not a CPU or a range like 2-3");
        let cpu = |id: &str| -> Result<usize, String> {
            let id: usize = id.trim().parse().map_err(|_| bad())?;
            if id >= MAX_CPUS {
                return Err(format!(
                    "CPU {id} in '{text}' does not exist (Linux numbers CPUs below {MAX_CPUS})"
                ));
            }
            Ok(id)
        };
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (cpu(a)?, cpu(b)?);
                if a > b {
                    return Err(bad());
                }
                cpus.extend(a..=b);
            }
            None => cpus.push(cpu(part)?),
        }
        if cpus.len() > MAX_CPUS {
            return Err(format!("'{text}' names more than {MAX_CPUS} CPUs"));
        }
    }
    if cpus.is_empty() {
        return Err(format!("'{text}' names no CPU"));
    }
    Ok(cpus)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("64K"), Ok(65536));
        assert_eq!(parse_size("1MiB"), Ok(1 << 20));
        assert_eq!(parse_size("2g"), Ok(2 << 30));
        assert!(parse_size("12Q").unwrap_err().contains("suffix"));
        assert!(parse_size("lots").is_err());
        assert!(parse_size("99999999999999G").is_err());
    }

    #[test]
    fn cpu_ids_past_what_linux_numbers_are_refused() {
        // Found by the fuzzer: `0-4233` was a list of 4,234 CPUs, and a
        // range up to usize::MAX would have tried to allocate them all.
        assert_eq!(parse_cpu_list("0-4233").map(|c| c.len()), Ok(4234));
        let huge = parse_cpu_list("0-18446744073709551615").unwrap_err();
        assert!(huge.contains("does not exist"), "{huge}");
        assert!(parse_cpu_list("8192").is_err());
        assert!(parse_cpu_list("0-8191,0-8191")
            .unwrap_err()
            .contains("more than"));
    }

    #[test]
    fn cpu_lists() {
        assert_eq!(parse_cpu_list("0,2-3"), Ok(vec![0, 2, 3]));
        assert!(parse_cpu_list("3-1").is_err());
        assert!(parse_cpu_list("x").is_err());
        assert!(parse_cpu_list(",").is_err());
    }

    #[test]
    fn rates() {
        assert_eq!(parse_rate("1M"), Ok(1e6));
        assert_eq!(parse_rate("20k"), Ok(20e3));
        assert_eq!(parse_rate("2.5M"), Ok(2.5e6));
        assert_eq!(parse_rate("750"), Ok(750.0));
        assert!(parse_rate("0").is_err());
        assert!(parse_rate("fast").is_err());
        assert!(parse_rate("3x").unwrap_err().contains("suffix"));
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("5"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("5 fortnights").is_err());
        assert!(parse_duration("-1").is_err());
    }
}
