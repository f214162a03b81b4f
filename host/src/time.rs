//! Timestamps as the API writes them: RFC 3339, UTC, milliseconds, `Z`
//! (`2024-01-15T10:30:00.000Z`).

use chrono::{DateTime, SecondsFormat, Utc};

pub fn timestamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

pub fn system_timestamp(t: std::time::SystemTime) -> String {
    timestamp(t.into())
}

#[cfg(test)]
mod tests {
    #[test]
    fn timestamps_have_milliseconds_and_z() {
        let t = chrono::DateTime::parse_from_rfc3339("2024-01-15T10:30:00Z")
            .unwrap()
            .to_utc();
        assert_eq!(super::timestamp(t), "2024-01-15T10:30:00.000Z");
    }
}
