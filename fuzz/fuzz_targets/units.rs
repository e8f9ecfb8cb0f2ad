//! Flag values: sizes, durations, rates, CPU lists and wall-clock times
//! parse or refuse any text without panicking; a size prints back as it
//! parses.
#![no_main]

use libfuzzer_sys::fuzz_target;
use protocols::units::{parse_cpu_list, parse_duration, parse_rate, parse_size, parse_wall_time};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(size) = parse_size(text) {
        let printed = protocols::units::format_size(size);
        assert_eq!(parse_size(&printed), Ok(size), "{text:?} printed as {printed:?}");
    }
    let _ = parse_duration(text);
    let _ = parse_wall_time(text, std::time::SystemTime::now());
    if let Ok(rate) = parse_rate(text) {
        assert!(rate.is_finite() && rate >= 0.0, "rate {rate} from {text:?}");
    }
    if let Ok(cpus) = parse_cpu_list(text) {
        assert!(
            cpus.len() <= protocols::units::MAX_CPUS,
            "a CPU list of {} entries",
            cpus.len()
        );
    }
});
