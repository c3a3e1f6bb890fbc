//! Human units of the configuration: sizes ("4MiB"), durations ("15m"), rates ("20Mbit/s"), read
//! exactly (no floating point: "1.1 GiB" is the byte count a person would compute), and the inverse
//! formatting for logs, status pages and problem messages.
//!
//! Pure functions of their argument; they call nothing else in the crate. Errors are one-line
//! messages that quote the input, so the caller only has to prefix the dotted key.

use std::time::Duration;

/// The units a size may carry, for error messages.
const SIZE_UNITS: &str = "B, KB, MB, GB, TB (×1000) or KiB, MiB, GiB, TiB, K, M, G, T (×1024)";

/// At most this many digits after the decimal point: keeps the exact arithmetic inside `u128`
/// (10^18 × 2^40 × the largest `u64` mantissa still fits) and is far finer than any unit needs.
const MAX_FRACTION_DIGITS: u32 = 18;

/// Reads a size in bytes: a whole or decimal number, an optional space, an optional unit.
///
/// Units are case-insensitive: `B`; `KB`, `MB`, `GB`, `TB` are powers of 1000; `KiB`, `MiB`,
/// `GiB`, `TiB` powers of 1024; the bare letters `K`, `M`, `G`, `T` are read as `KiB` … `TiB`,
/// because a cache size is almost always meant in binary units. No unit means bytes.
/// A fraction of a byte left by a decimal ("0.1 KiB" = 102.4) is dropped.
///
/// Examples: "4MiB", "1.5 GiB", "512k", "1000000".
pub fn parse_bytes(text: &str) -> Result<u64, String> {
    let (number, unit) = split_number(text, "a size such as \"4MiB\"")?;
    let multiplier = byte_multiplier(unit).ok_or_else(|| {
        format!(
            "unknown size unit \"{unit}\" in \"{}\"; use {SIZE_UNITS}",
            text.trim()
        )
    })?;
    number
        .scaled(multiplier, 1)
        .and_then(|bytes| u64::try_from(bytes).ok())
        .ok_or_else(|| too_large(text))
}

/// Reads a duration: "500ms", "30s", "15m", "2h", "1d", or several of them from the largest unit
/// to the smallest ("1h30m", "1d 12h"). A bare whole number is seconds. Numbers are whole: write
/// "1h30m", not "1.5h". Units are case-insensitive.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let input = text.trim();
    if input.is_empty() {
        return Err("empty; expected a duration such as \"30s\" or \"15m\"".into());
    }
    if input.starts_with('-') {
        return Err(format!("\"{input}\" is negative"));
    }
    if input.bytes().all(|b| b.is_ascii_digit()) {
        let seconds: u64 = input.parse().map_err(|_| too_large(input))?;
        return Ok(Duration::from_secs(seconds));
    }

    // Units from the largest to the smallest; a component must use a smaller unit than the one
    // before it, which catches "30m1h" and "5m5m" typos.
    const UNITS: [(&str, u128); 5] = [
        ("d", 86_400_000_000_000),
        ("h", 3_600_000_000_000),
        ("m", 60_000_000_000),
        ("s", 1_000_000_000),
        ("ms", 1_000_000),
    ];
    let mut total_nanos: u128 = 0;
    let mut previous_rank: Option<usize> = None;
    let mut rest = input;
    while !rest.is_empty() {
        let digits_end = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits_end == 0 {
            return Err(format!(
                "expected a number at \"{rest}\" in \"{input}\"; write durations like \"1h30m\""
            ));
        }
        let count: u128 = rest[..digits_end].parse().map_err(|_| too_large(input))?;
        let after = rest[digits_end..].trim_start();
        if after.starts_with('.') || after.starts_with(',') {
            return Err(format!(
                "fractions are not accepted in \"{input}\": write \"1h30m\" rather than \"1.5h\""
            ));
        }
        let unit_end = after
            .find(|c: char| !c.is_ascii_alphabetic())
            .unwrap_or(after.len());
        let unit = after[..unit_end].to_ascii_lowercase();
        if unit.is_empty() {
            return Err(format!(
                "missing unit after {count} in \"{input}\"; use d, h, m, s or ms (a bare number alone means seconds)"
            ));
        }
        let Some(rank) = UNITS.iter().position(|(name, _)| *name == unit) else {
            return Err(format!(
                "unknown duration unit \"{unit}\" in \"{input}\"; use d, h, m, s or ms"
            ));
        };
        if previous_rank.is_some_and(|previous| previous >= rank) {
            return Err(format!(
                "units in \"{input}\" must go from largest to smallest, each once, e.g. \"1h30m\""
            ));
        }
        previous_rank = Some(rank);
        total_nanos = count
            .checked_mul(UNITS[rank].1)
            .and_then(|nanos| total_nanos.checked_add(nanos))
            .ok_or_else(|| too_large(input))?;
        rest = after[unit_end..].trim_start();
    }
    let seconds = u64::try_from(total_nanos / 1_000_000_000).map_err(|_| too_large(input))?;
    // The remainder of a division by 10^9 always fits in u32.
    let nanos = (total_nanos % 1_000_000_000) as u32;
    Ok(Duration::new(seconds, nanos))
}

/// Reads a bandwidth in bytes per second; `None` means unlimited ("unlimited", or any zero).
///
/// Bit rates use powers of 1000 and are divided by 8: "20Mbit/s", "20 Mbps", "1Gbit/s",
/// "500kbit/s". Byte rates take any unit of [`parse_bytes`] with an optional "/s": "10MiB/s",
/// "12MB/s", "10MiB" (per second). "bps" with a lower-case b means bits; "MBps" (capital B before
/// "ps") means bytes, as in common usage.
pub fn parse_rate(text: &str) -> Result<Option<u64>, String> {
    let input = text.trim();
    if input.eq_ignore_ascii_case("unlimited") {
        return Ok(None);
    }
    let (number, unit) = split_number(
        input,
        "a rate such as \"20Mbit/s\", \"10MiB/s\" or \"unlimited\"",
    )?;
    let lower = unit.to_ascii_lowercase();
    let bits_prefix = if unit.ends_with("Bps") {
        None
    } else {
        lower
            .strip_suffix("bits/s")
            .or_else(|| lower.strip_suffix("bit/s"))
            .or_else(|| lower.strip_suffix("bps"))
            .map(str::trim)
    };
    let bytes = match bits_prefix {
        Some(prefix) => {
            let bits_multiplier: u128 = match prefix {
                "" => 1,
                "k" => 1_000,
                "m" => 1_000_000,
                "g" => 1_000_000_000,
                "t" => 1_000_000_000_000,
                _ => {
                    return Err(format!(
                        "unknown bit-rate unit \"{unit}\" in \"{input}\"; use bit/s, kbit/s, Mbit/s, Gbit/s, Tbit/s (or kbps, Mbps, …)"
                    ));
                }
            };
            number.scaled(bits_multiplier, 8)
        }
        None => {
            let size_unit = match unit.strip_suffix("Bps") {
                Some(prefix) => format!("{prefix}B"),
                None => lower
                    .strip_suffix("/s")
                    .unwrap_or(&lower)
                    .trim()
                    .to_string(),
            };
            let multiplier = byte_multiplier(&size_unit).ok_or_else(|| {
                format!(
                    "unknown rate unit \"{unit}\" in \"{input}\"; use a size per second (\"10MiB/s\", {SIZE_UNITS}) or bits (\"20Mbit/s\", \"20Mbps\")"
                )
            })?;
            number.scaled(multiplier, 1)
        }
    };
    let bytes = bytes
        .and_then(|b| u64::try_from(b).ok())
        .ok_or_else(|| too_large(input))?;
    if number.mantissa == 0 {
        return Ok(None);
    }
    if bytes == 0 {
        return Err(format!(
            "\"{input}\" is less than one byte per second; write \"unlimited\" (or 0) for no limit"
        ));
    }
    Ok(Some(bytes))
}

/// Formats a byte count for people: "812 B", "4.0 MiB", "1.25 GiB" (binary units, at most two
/// decimals, rounded to the nearest).
pub fn format_bytes(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let bytes = u128::from(bytes);
    let mut unit = 0;
    let mut divisor: u128 = 1024;
    while unit + 1 < UNITS.len() && bytes >= divisor * 1024 {
        divisor *= 1024;
        unit += 1;
    }
    let mut hundredths = (bytes * 100 + divisor / 2) / divisor;
    // Rounding can reach the next unit (1 MiB − 1 B would read "1024.0 KiB").
    if hundredths >= 1024 * 100 && unit + 1 < UNITS.len() {
        divisor *= 1024;
        unit += 1;
        hundredths = (bytes * 100 + divisor / 2) / divisor;
    }
    format!("{} {}", hundredths_text(hundredths), UNITS[unit])
}

/// Formats a duration for people: "250 ns", "80 µs", "350 ms", "1.25 s", and from a minute up the
/// form [`parse_duration`] reads ("15m", "1h30m", "1d"), whole seconds.
pub fn format_duration(duration: Duration) -> String {
    let nanos = duration.as_nanos();
    if nanos < 1_000 {
        return format!("{nanos} ns");
    }
    if nanos < 1_000_000 {
        return format!("{} µs", nanos / 1_000);
    }
    if nanos < 1_000_000_000 {
        return format!("{} ms", nanos / 1_000_000);
    }
    let hundredths = (nanos + 5_000_000) / 10_000_000;
    if hundredths < 60 * 100 {
        return format!("{} s", hundredths_text(hundredths));
    }
    let mut seconds = duration.as_secs().max(60);
    let mut text = String::new();
    for (unit, length) in [("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1)] {
        let count = seconds / length;
        if count > 0 {
            text.push_str(&format!("{count}{unit}"));
        }
        seconds %= length;
    }
    text
}

/// A non-negative decimal read exactly: `mantissa / 10^scale`.
#[derive(Debug, Clone, Copy)]
struct Decimal {
    mantissa: u128,
    scale: u32,
}

impl Decimal {
    /// `self × multiplier / divisor`, the fraction dropped; `None` on overflow.
    fn scaled(self, multiplier: u128, divisor: u128) -> Option<u128> {
        let denominator = 10u128.checked_pow(self.scale)?.checked_mul(divisor)?;
        Some(self.mantissa.checked_mul(multiplier)? / denominator)
    }
}

/// Splits "1.5 GiB" into the number and the (trimmed) unit that follows it. `expected` names what
/// the caller reads, for the error when there is no number.
fn split_number<'t>(text: &'t str, expected: &str) -> Result<(Decimal, &'t str), String> {
    let input = text.trim();
    if input.is_empty() {
        return Err(format!("empty; expected {expected}"));
    }
    if input.starts_with('-') {
        return Err(format!("\"{input}\" is negative"));
    }
    let end = input
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(input.len());
    let (number, unit) = input.split_at(end);
    if number.is_empty() {
        return Err(format!(
            "\"{input}\" does not start with a number; expected {expected}"
        ));
    }
    let (whole, fraction) = match number.split_once('.') {
        Some((whole, fraction)) => (whole, fraction),
        None => (number, ""),
    };
    let well_formed = !whole.is_empty()
        && whole.bytes().all(|b| b.is_ascii_digit())
        && fraction.bytes().all(|b| b.is_ascii_digit())
        && (!fraction.is_empty() || !number.contains('.'));
    if !well_formed {
        return Err(format!("\"{number}\" in \"{input}\" is not a number"));
    }
    let scale = u32::try_from(fraction.len())
        .ok()
        .filter(|&digits| digits <= MAX_FRACTION_DIGITS)
        .ok_or_else(|| {
            format!(
                "\"{input}\" has more than {MAX_FRACTION_DIGITS} digits after the decimal point"
            )
        })?;
    let mantissa = format!("{whole}{fraction}")
        .parse::<u128>()
        .map_err(|_| too_large(input))?;
    Ok((Decimal { mantissa, scale }, unit.trim()))
}

/// The number of bytes in one `unit` (case-insensitive), `None` for an unknown unit.
fn byte_multiplier(unit: &str) -> Option<u128> {
    let multiplier: u128 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "t" | "tib" => 1 << 40,
        _ => return None,
    };
    Some(multiplier)
}

/// "4.0", "1.5", "1.25" from a count of hundredths: two decimals, or one when the second is zero.
fn hundredths_text(hundredths: u128) -> String {
    let (whole, fraction) = (hundredths / 100, hundredths % 100);
    if fraction % 10 == 0 {
        format!("{whole}.{}", fraction / 10)
    } else {
        format!("{whole}.{fraction:02}")
    }
}

fn too_large(input: &str) -> String {
    format!("\"{}\" is too large", input.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    const KIB: u64 = 1 << 10;
    const MIB: u64 = 1 << 20;
    const GIB: u64 = 1 << 30;
    const TIB: u64 = 1 << 40;

    fn error_of<T: std::fmt::Debug>(result: Result<T, String>) -> String {
        match result {
            Ok(value) => panic!("expected an error, got {value:?}"),
            Err(message) => message,
        }
    }

    #[test]
    fn bytes_plain_numbers() {
        assert_eq!(parse_bytes("0"), Ok(0));
        assert_eq!(parse_bytes("1000000"), Ok(1_000_000));
        assert_eq!(parse_bytes("  812 "), Ok(812));
        assert_eq!(parse_bytes("812B"), Ok(812));
        assert_eq!(parse_bytes("812 b"), Ok(812));
        assert_eq!(parse_bytes("18446744073709551615"), Ok(u64::MAX));
    }

    #[test]
    fn bytes_decimal_units() {
        assert_eq!(parse_bytes("1KB"), Ok(1_000));
        assert_eq!(parse_bytes("12MB"), Ok(12_000_000));
        assert_eq!(parse_bytes("2 gb"), Ok(2_000_000_000));
        assert_eq!(parse_bytes("1TB"), Ok(1_000_000_000_000));
    }

    #[test]
    fn bytes_binary_units() {
        assert_eq!(parse_bytes("64KiB"), Ok(64 * KIB));
        assert_eq!(parse_bytes("4MiB"), Ok(4 * MIB));
        assert_eq!(parse_bytes("4 mib"), Ok(4 * MIB));
        assert_eq!(parse_bytes("100GiB"), Ok(100 * GIB));
        assert_eq!(parse_bytes("2TiB"), Ok(2 * TIB));
    }

    #[test]
    fn bytes_bare_letters_are_binary() {
        assert_eq!(parse_bytes("512k"), Ok(512 * KIB));
        assert_eq!(parse_bytes("512K"), Ok(512 * KIB));
        assert_eq!(parse_bytes("4M"), Ok(4 * MIB));
        assert_eq!(parse_bytes("1 G"), Ok(GIB));
        assert_eq!(parse_bytes("1T"), Ok(TIB));
    }

    #[test]
    fn bytes_decimals_are_exact() {
        assert_eq!(parse_bytes("1.5 GiB"), Ok(GIB + GIB / 2));
        assert_eq!(parse_bytes("1.25GiB"), Ok(GIB + GIB / 4));
        assert_eq!(parse_bytes("0.5KB"), Ok(500));
        // 1.1 × 2^30 = 1181116006.4: the fraction of a byte is dropped, nothing else is lost.
        assert_eq!(parse_bytes("1.1GiB"), Ok(1_181_116_006));
        assert_eq!(parse_bytes("0.1 KiB"), Ok(102));
    }

    #[test]
    fn bytes_errors() {
        assert!(error_of(parse_bytes("")).contains("empty"));
        assert!(error_of(parse_bytes("   ")).contains("empty"));
        assert!(error_of(parse_bytes("-1")).contains("negative"));
        assert!(error_of(parse_bytes("-4MiB")).contains("negative"));
        assert!(error_of(parse_bytes("MiB")).contains("does not start with a number"));
        assert!(error_of(parse_bytes("four")).contains("does not start with a number"));
        assert!(error_of(parse_bytes("4XB")).contains("unknown size unit \"XB\""));
        assert!(error_of(parse_bytes("4 MiB/s")).contains("unknown size unit"));
        assert!(error_of(parse_bytes("1.2.3")).contains("not a number"));
        assert!(error_of(parse_bytes("1.")).contains("not a number"));
        assert!(error_of(parse_bytes(".5")).contains("not a number"));
        assert!(error_of(parse_bytes("1.0000000000000000001")).contains("digits after"));
        assert!(error_of(parse_bytes("18446744073709551616")).contains("too large"));
        assert!(error_of(parse_bytes("16777216TiB")).contains("too large"));
        assert!(
            error_of(parse_bytes("99999999999999999999999999999999999999999"))
                .contains("too large")
        );
    }

    #[test]
    fn durations_single_units() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7_200)));
        assert_eq!(parse_duration("1d"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse_duration("15M"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_duration("30 s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
    }

    #[test]
    fn durations_bare_integer_is_seconds() {
        assert_eq!(parse_duration("45"), Ok(Duration::from_secs(45)));
        assert_eq!(parse_duration(" 0 "), Ok(Duration::ZERO));
    }

    #[test]
    fn durations_combined() {
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5_400)));
        assert_eq!(parse_duration("1d 12h"), Ok(Duration::from_secs(129_600)));
        assert_eq!(
            parse_duration("1m30s500ms"),
            Ok(Duration::from_millis(90_500))
        );
        assert_eq!(
            parse_duration("2d3h4m5s6ms"),
            Ok(Duration::new(183_845, 6_000_000))
        );
    }

    #[test]
    fn durations_errors() {
        assert!(error_of(parse_duration("")).contains("empty"));
        assert!(error_of(parse_duration("-5s")).contains("negative"));
        assert!(error_of(parse_duration("1.5h")).contains("fractions"));
        assert!(error_of(parse_duration("5 x")).contains("unknown duration unit \"x\""));
        assert!(error_of(parse_duration("5min")).contains("unknown duration unit \"min\""));
        assert!(error_of(parse_duration("1h30")).contains("missing unit"));
        assert!(error_of(parse_duration("h")).contains("expected a number"));
        assert!(error_of(parse_duration("1h 2h")).contains("largest to smallest"));
        assert!(error_of(parse_duration("30m1h")).contains("largest to smallest"));
        assert!(error_of(parse_duration("1h-5m")).contains("expected a number"));
        assert!(error_of(parse_duration("99999999999999999999")).contains("too large"));
        assert!(error_of(parse_duration("999999999999999999d")).contains("too large"));
        assert!(
            error_of(parse_duration("99999999999999999999999999999999999999999d"))
                .contains("too large")
        );
    }

    #[test]
    fn rates_unlimited() {
        assert_eq!(parse_rate("unlimited"), Ok(None));
        assert_eq!(parse_rate("Unlimited"), Ok(None));
        assert_eq!(parse_rate("0"), Ok(None));
        assert_eq!(parse_rate("0 Mbit/s"), Ok(None));
        assert_eq!(parse_rate("0MiB/s"), Ok(None));
    }

    #[test]
    fn rates_in_bits() {
        assert_eq!(parse_rate("20Mbit/s"), Ok(Some(2_500_000)));
        assert_eq!(parse_rate("20 Mbps"), Ok(Some(2_500_000)));
        assert_eq!(parse_rate("20mbps"), Ok(Some(2_500_000)));
        assert_eq!(parse_rate("1Gbit/s"), Ok(Some(125_000_000)));
        assert_eq!(parse_rate("500kbit/s"), Ok(Some(62_500)));
        assert_eq!(parse_rate("1.5 Mbits/s"), Ok(Some(187_500)));
        assert_eq!(parse_rate("1Tbps"), Ok(Some(125_000_000_000)));
        assert_eq!(parse_rate("8 bit/s"), Ok(Some(1)));
    }

    #[test]
    fn rates_in_bytes() {
        assert_eq!(parse_rate("10MiB/s"), Ok(Some(10 * MIB)));
        assert_eq!(parse_rate("12MB/s"), Ok(Some(12_000_000)));
        assert_eq!(parse_rate("12 MBps"), Ok(Some(12_000_000)));
        assert_eq!(parse_rate("10MiB"), Ok(Some(10 * MIB)));
        assert_eq!(parse_rate("1000000"), Ok(Some(1_000_000)));
        assert_eq!(parse_rate("512 k/s"), Ok(Some(512 * KIB)));
    }

    #[test]
    fn rates_errors() {
        assert!(error_of(parse_rate("")).contains("empty"));
        assert!(error_of(parse_rate("fast")).contains("does not start with a number"));
        assert!(error_of(parse_rate("-1Mbit/s")).contains("negative"));
        assert!(error_of(parse_rate("20Xbit/s")).contains("unknown bit-rate unit"));
        assert!(error_of(parse_rate("20 furlongs")).contains("unknown rate unit"));
        assert!(error_of(parse_rate("1 bit/s")).contains("less than one byte per second"));
        assert!(error_of(parse_rate("99999999999Tbit/s")).contains("too large"));
        assert!(error_of(parse_rate("1.2.3MB/s")).contains("not a number"));
    }

    #[test]
    fn formats_bytes() {
        assert_eq!(format_bytes(0), "0 B");
        assert_eq!(format_bytes(812), "812 B");
        assert_eq!(format_bytes(1023), "1023 B");
        assert_eq!(format_bytes(1024), "1.0 KiB");
        assert_eq!(format_bytes(4 * MIB), "4.0 MiB");
        assert_eq!(format_bytes(GIB + GIB / 4), "1.25 GiB");
        assert_eq!(format_bytes(GIB + GIB / 2), "1.5 GiB");
        assert_eq!(format_bytes(100 * GIB), "100.0 GiB");
        assert_eq!(format_bytes(MIB - 1), "1.0 MiB");
        assert_eq!(format_bytes(u64::MAX), "16.0 EiB");
    }

    #[test]
    fn formats_durations() {
        assert_eq!(format_duration(Duration::from_nanos(250)), "250 ns");
        assert_eq!(format_duration(Duration::from_micros(80)), "80 µs");
        assert_eq!(format_duration(Duration::from_millis(350)), "350 ms");
        assert_eq!(format_duration(Duration::from_millis(1_250)), "1.25 s");
        assert_eq!(format_duration(Duration::from_secs(2)), "2.0 s");
        assert_eq!(format_duration(Duration::from_secs(900)), "15m");
        assert_eq!(format_duration(Duration::from_secs(5_400)), "1h30m");
        assert_eq!(format_duration(Duration::from_secs(86_400)), "1d");
        assert_eq!(format_duration(Duration::from_secs(90)), "1m30s");
        assert_eq!(format_duration(Duration::from_millis(59_999)), "1m");
    }

    #[test]
    fn formatted_values_read_back() {
        for seconds in [60, 90, 900, 5_400, 86_400, 129_601] {
            let duration = Duration::from_secs(seconds);
            assert_eq!(parse_duration(&format_duration(duration)), Ok(duration));
        }
        for bytes in [812, 4 * MIB, 100 * GIB, GIB + GIB / 4] {
            assert_eq!(parse_bytes(&format_bytes(bytes)), Ok(bytes));
        }
    }
}
