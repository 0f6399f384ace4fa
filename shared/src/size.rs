//! Byte sizes written with units: `4096`, `64KiB`, `1MiB`, `2GiB`.
//!
//! Only binary units are accepted: `KB` is ambiguous (1000 or 1024?) and a memory budget should
//! never be off by 2.4% because of a spelling, so `KB`/`MB` are rejected with a message.

/// Parses a size such as `256KiB`. Whitespace between number and unit is allowed.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let digits_end = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(digits_end);
    if number.is_empty() {
        return Err(format!("`{text}` is not a size: expected a number such as 4096 or 256KiB"));
    }
    let number: u64 = number.parse().map_err(|_| format!("`{text}` is too large"))?;
    let multiplier: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        other => {
            return Err(format!("`{text}`: unknown size unit `{other}` (use B, KiB, MiB or GiB)"))
        }
    };
    number.checked_mul(multiplier).ok_or_else(|| format!("`{text}` is too large"))
}

/// Formats a byte count with the largest binary unit that divides it exactly.
pub fn format_size(bytes: u64) -> String {
    const UNITS: [(u64, &str); 3] = [(1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")];
    for (multiplier, unit) in UNITS {
        if bytes >= multiplier && bytes % multiplier == 0 {
            return format!("{}{unit}", bytes / multiplier);
        }
    }
    format!("{bytes}B")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_are_binary() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("256KiB"), Ok(256 * 1024));
        assert_eq!(parse_size("1 MiB"), Ok(1 << 20));
        assert_eq!(parse_size("2GiB"), Ok(2 << 30));
        assert_eq!(parse_size("7B"), Ok(7));
    }

    #[test]
    fn ambiguous_or_malformed_sizes_are_rejected() {
        assert!(parse_size("1KB").unwrap_err().contains("unknown size unit"));
        assert!(parse_size("MiB").is_err());
        assert!(parse_size("").is_err());
        assert!(parse_size("-1").is_err());
        assert!(parse_size("99999999999999999999GiB").is_err());
    }

    #[test]
    fn sizes_at_the_64_bit_limit_parse_and_one_byte_more_is_too_large() {
        assert_eq!(parse_size("18446744073709551615B"), Ok(u64::MAX));
        assert!(parse_size("18446744073709551616B").unwrap_err().contains("too large"));
        assert_eq!(parse_size("17179869183GiB"), Ok(17179869183 << 30));
        assert!(parse_size("17179869184GiB").unwrap_err().contains("too large"), "2^64 bytes");
        assert!(parse_size("18014398509481984KiB").unwrap_err().contains("too large"));
    }

    #[test]
    fn format_picks_exact_unit() {
        assert_eq!(format_size(1 << 20), "1MiB");
        assert_eq!(format_size(1536), "1536B");
        assert_eq!(format_size(3 << 10), "3KiB");
    }
}
