//! Durations as configuration writes them: `3600` (seconds), `90s`, `15m`, `1h`, `30d`.

use std::time::Duration;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid duration `{0}`: use a number of seconds or a number with s, m, h or d (e.g. 90s, 15m, 1h, 30d)")]
pub struct InvalidDuration(String);

pub fn parse_duration(text: &str) -> Result<Duration, InvalidDuration> {
    let invalid = || InvalidDuration(text.to_owned());
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let n: u64 = digits.parse().map_err(|_| invalid())?;
    let unit_secs = match unit.trim() {
        "" | "s" => 1,
        "m" | "min" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(invalid()),
    };
    n.checked_mul(unit_secs).map(Duration::from_secs).ok_or_else(invalid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_documented_forms() {
        for (text, secs) in [("3600", 3600), ("90s", 90), ("15m", 900), ("1h", 3600), ("30d", 2_592_000), ("0s", 0)] {
            assert_eq!(parse_duration(text), Ok(Duration::from_secs(secs)), "{text}");
        }
    }

    #[test]
    fn rejects_anything_else() {
        for text in ["", "m", "1.5h", "-3s", "10y", "99999999999999999999d", "1 h x"] {
            assert!(parse_duration(text).is_err(), "{text}");
        }
    }
}
