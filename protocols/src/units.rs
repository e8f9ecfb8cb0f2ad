//! Parsing the units people type on every ringcore command line: sizes
//! (`64K`, `1M`), durations (`100us`, `500ms`, `5s`, `2m`), rates (`20k`, `1M`),
//! CPU lists (`0,2-3`) and wall-clock instants (`2026-11-25T12:00:00Z`).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

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

/// Writes a byte size the way [`parse_size`] reads it: the largest of G, M
/// and K that divides it exactly (`1G`, `256K`), else plain bytes, so a
/// size printed in a message can be typed back as a flag.
pub fn format_size(bytes: u64) -> String {
    for (shift, suffix) in [(30, "G"), (20, "M"), (10, "K")] {
        if bytes != 0 && bytes.is_multiple_of(1 << shift) {
            return format!("{}{suffix}", bytes >> shift);
        }
    }
    bytes.to_string()
}

/// Parses a duration: plain seconds (`5`, `0.5`) or a number with `ms`, `s`, `m` or `h`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let (number, suffix) = split_number(text, true);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("'{text}' is not a duration (examples: 5, 100us, 500ms, 10s, 2m)"))?;
    let seconds = match suffix.trim() {
        "" | "s" => value,
        "ms" => value / 1000.0,
        "us" | "µs" => value / 1e6,
        "m" | "min" => value * 60.0,
        "h" => value * 3600.0,
        other => {
            return Err(format!(
                "'{text}': unknown duration unit '{other}' (use us, ms, s, m or h)"
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

/// A wall-clock instant: the time of `now` plus `+DURATION` (`+5s`), Unix
/// seconds (`1795600000.25`), or an RFC 3339 UTC time
/// (`2026-11-25T12:00:00Z`, `...T12:00:00.500+00:00`; other offsets too).
pub fn parse_wall_time(text: &str, now: SystemTime) -> Result<SystemTime, String> {
    let t = text.trim();
    let bad = || {
        format!("'{text}' is not a time: give +DURATION (+5s), Unix seconds, or an RFC 3339 time like 2026-11-25T12:00:00Z")
    };
    if let Some(after) = t.strip_prefix('+') {
        return now.checked_add(parse_duration(after)?).ok_or_else(bad);
    }
    if !t.contains('T') {
        let seconds: f64 = t.parse().map_err(|_| bad())?;
        if !(0.0..=253_402_300_799.0).contains(&seconds) {
            return Err(bad());
        }
        return Ok(UNIX_EPOCH + Duration::from_secs_f64(seconds));
    }
    // YYYY-MM-DDTHH:MM:SS[.fraction](Z|+HH:MM|-HH:MM)
    let (date, time) = t.split_once('T').ok_or_else(bad)?;
    let number = |s: &str, digits: usize| -> Result<i64, String> {
        if s.len() != digits || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        s.parse().map_err(|_| bad())
    };
    let mut d = date.split('-');
    let (year, month, day) = match (d.next(), d.next(), d.next(), d.next()) {
        (Some(y), Some(m), Some(dd), None) => (number(y, 4)?, number(m, 2)?, number(dd, 2)?),
        _ => return Err(bad()),
    };
    let (clock, offset_s) = if let Some(c) = time.strip_suffix('Z').or(time.strip_suffix('z')) {
        (c, 0)
    } else {
        let at = time.rfind(['+', '-']).ok_or_else(bad)?;
        let (c, off) = time.split_at(at);
        let sign = if off.starts_with('-') { -1 } else { 1 };
        let (h, m) = off[1..].split_once(':').ok_or_else(bad)?;
        let (h, m) = (number(h, 2)?, number(m, 2)?);
        if h > 23 || m > 59 {
            return Err(bad());
        }
        (c, sign * (h * 3600 + m * 60))
    };
    let (whole, fraction) = match clock.split_once('.') {
        Some((w, f)) if !f.is_empty() && f.len() <= 9 && f.bytes().all(|b| b.is_ascii_digit()) => {
            (w, format!("0.{f}").parse::<f64>().map_err(|_| bad())?)
        }
        Some(_) => return Err(bad()),
        None => (clock, 0.0),
    };
    let mut c = whole.split(':');
    let (hour, minute, second) = match (c.next(), c.next(), c.next(), c.next()) {
        (Some(h), Some(m), Some(s), None) => (number(h, 2)?, number(m, 2)?, number(s, 2)?),
        _ => return Err(bad()),
    };
    let days_in_month = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        _ => return Err(bad()),
    };
    if year < 1970 || day < 1 || day > days_in_month || hour > 23 || minute > 59 || second > 60 {
        return Err(bad());
    }
    // Days since 1970-01-01 of a proleptic Gregorian date (Howard
    // Hinnant's days_from_civil).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let seconds = days * 86_400 + hour * 3600 + minute * 60 + second - offset_s;
    if seconds < 0 {
        return Err(bad());
    }
    Ok(UNIX_EPOCH + Duration::from_secs(seconds as u64) + Duration::from_secs_f64(fraction))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wall_times() {
        let now = UNIX_EPOCH + Duration::from_secs(1_000);
        let at = |text: &str| {
            parse_wall_time(text, now).map(|t| t.duration_since(UNIX_EPOCH).unwrap().as_secs_f64())
        };
        assert_eq!(at("+5s"), Ok(1_005.0));
        assert!(at("+18446744073709551615s").is_err(), "no overflow panic");
        assert_eq!(at("1795600000.25"), Ok(1_795_600_000.25));
        assert_eq!(at("1970-01-01T00:00:00Z"), Ok(0.0));
        // `date -d 2026-11-25T12:00:00Z +%s` says 1795608000.
        assert_eq!(at("2026-11-25T12:00:00Z"), Ok(1_795_608_000.0));
        assert_eq!(at("2026-11-25T12:00:00.5Z"), Ok(1_795_608_000.5));
        assert_eq!(at("2026-11-25T13:30:00+01:30"), Ok(1_795_608_000.0));
        assert_eq!(at("2024-02-29T00:00:00Z"), Ok(1_709_164_800.0));
        for bad in [
            "",
            "soon",
            "2026-02-30T00:00:00Z",
            "2026-11-25T24:00:00Z",
            "2026-11-25 12:00:00",
            "2026-11-25T12:00:00",
            "2026-11-25T12:00:00+1:00",
            "-5",
            "1e300",
            "NaN",
            "2026-11-25T12:00:00.Z",
            "+soon",
        ] {
            assert!(at(bad).is_err(), "{bad:?} parsed");
        }
    }

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
    fn sizes_print_as_they_parse() {
        for (bytes, text) in [
            (0, "0"),
            (1000, "1000"),
            (65536, "64K"),
            (3 << 29, "1536M"),
            (6 << 30, "6G"),
        ] {
            assert_eq!(format_size(bytes), text);
            assert_eq!(parse_size(text), Ok(bytes));
        }
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
        assert_eq!(parse_duration("100us"), Ok(Duration::from_micros(100)));
        assert_eq!(parse_duration("3µs"), Ok(Duration::from_micros(3)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("5 fortnights").is_err());
        assert!(parse_duration("-1").is_err());
    }
}
