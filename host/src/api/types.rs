//! Request field types that carry their own constraints, both ways: the
//! JSON Schema in `/openapi.json` states them and deserializing enforces
//! exactly them, so the document and the server cannot disagree. A value
//! that breaks one is a 422 naming the field (`Invalid field `cmd`: ...`).
//!
//! Lengths are counted in characters, as JSON Schema counts them. Where the
//! system below counts bytes (the kernel's limit on one argument, on one
//! file name), the character limit is chosen so that the longest string in
//! the worst encoding still fits.

use std::borrow::Cow;
use std::fmt;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer};

/// Longest task, in characters.
pub const MAX_TASK_CHARS: usize = 100_000;
/// Longest workspace path, in characters: 1023 characters are at most
/// 4092 bytes of UTF-8, within Linux's 4095-byte `PATH_MAX`.
pub const MAX_PATH_CHARS: usize = 1023;
/// Longest file or directory name in a path, in characters (the file
/// system's limit is 255 bytes; see [`WorkspacePath`]).
pub const MAX_NAME_CHARS: usize = 255;

/// The characters Rust's `char::is_whitespace` accepts, as a regex class
/// body: a string made only of them is blank. Written with `\uXXXX`
/// escapes, which ECMA-262 (JSON Schema), Python (schemathesis) and Rust
/// read alike.
const WHITESPACE_CLASS: &str =
    r"\t\n\u000b\f\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000";

/// What a text field must be.
struct TextRules {
    max_chars: usize,
    /// At least one character that is not whitespace.
    non_blank: bool,
    /// NUL characters refused (they end a C string: a command or a path).
    no_nul: bool,
}

impl TextRules {
    fn check(&self, s: &str) -> Result<(), String> {
        if self.no_nul && s.contains('\0') {
            return Err("must not contain NUL characters".into());
        }
        if self.non_blank && s.trim().is_empty() {
            return Err("must not be empty".into());
        }
        let chars = s.chars().count();
        if chars > self.max_chars {
            return Err(format!(
                "is {chars} characters long; at most {} are accepted",
                self.max_chars
            ));
        }
        Ok(())
    }

    /// The ECMA-262 regex (as JSON Schema's `pattern` takes it) matching
    /// exactly the strings [`Self::check`] accepts, lengths aside. Written
    /// so that backtracking engines (schemathesis' validators) take linear
    /// time on long strings: leading whitespace, the first other character,
    /// then anything.
    fn pattern(&self) -> Option<String> {
        let (any, solid) = if self.no_nul {
            (r"[^\u0000]", format!(r"[^\u0000{WHITESPACE_CLASS}]"))
        } else {
            (r"[\s\S]", format!("[^{WHITESPACE_CLASS}]"))
        };
        if !self.non_blank {
            return self.no_nul.then(|| format!("^{any}*$"));
        }
        Some(format!("^[{WHITESPACE_CLASS}]*{solid}{any}*$"))
    }

    fn schema(&self, description: &str) -> Schema {
        let mut schema = json_schema!({
            "type": "string",
            "minLength": if self.non_blank { 1 } else { 0 },
            "maxLength": self.max_chars,
            "description": description,
        });
        if let Some(pattern) = self.pattern() {
            schema.insert("pattern".into(), pattern.into());
        }
        schema
    }
}

/// A `String` newtype whose values pass `$check` (a `fn(&str) ->
/// Result<(), String>`) and whose JSON Schema is `$schema` (a
/// `fn() -> Schema`): deserializing runs the check, so the schema and the
/// server agree by construction.
macro_rules! checked_string {
    ($(#[$doc:meta])* $name:ident, $check:expr, $schema:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub struct $name(String);

        impl $name {
            #[allow(dead_code, reason = "not every field is read in place")]
            pub fn as_str(&self) -> &str {
                &self.0
            }

            #[allow(dead_code, reason = "not every field is taken whole")]
            pub fn into_inner(self) -> String {
                self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = String;
            fn try_from(s: String) -> Result<Self, String> {
                let check: fn(&str) -> Result<(), String> = $check;
                check(&s)?;
                Ok(Self(s))
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                Self::try_from(s).map_err(serde::de::Error::custom)
            }
        }

        impl JsonSchema for $name {
            fn schema_name() -> Cow<'static, str> {
                stringify!($name).into()
            }

            fn json_schema(_: &mut SchemaGenerator) -> Schema {
                let schema: fn() -> Schema = $schema;
                schema()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

const TASK_RULES: TextRules = TextRules {
    max_chars: MAX_TASK_CHARS,
    non_blank: true,
    no_nul: false,
};
const FIRST_TASK_RULES: TextRules = TextRules {
    max_chars: MAX_TASK_CHARS,
    non_blank: false,
    no_nul: false,
};
const COMMAND_RULES: TextRules = TextRules {
    // The sandbox's own limit (see there); a test keeps both rules alike.
    max_chars: crate::sandbox::MAX_COMMAND_CHARS,
    non_blank: true,
    no_nul: true,
};

checked_string!(
    /// A task for the agent.
    TaskText,
    |s| TASK_RULES.check(s),
    || TASK_RULES.schema("What the agent should do: not blank, at most 100,000 characters.")
);

checked_string!(
    /// The optional first task given when a session is created: blank means
    /// none.
    FirstTaskText,
    |s| FIRST_TASK_RULES.check(s),
    || FIRST_TASK_RULES
        .schema("A first task for the agent (blank: none), at most 100,000 characters.")
);

checked_string!(
    /// A shell command, run with `sh -c`.
    CommandText,
    |s| COMMAND_RULES.check(s),
    || COMMAND_RULES.schema(
        "A shell command, run with `sh -c` in /workspace: not blank, no NUL characters, \
         at most 32,000 characters."
    )
);

checked_string!(
    /// A path in a session's workspace, relative to it (`/workspace/...`
    /// also works): not empty, no NUL, at most 1023 characters, and no name
    /// in it longer than 255 characters.
    ///
    /// File systems cap a name at 255 *bytes*; a name of up to 255
    /// characters that takes more bytes in UTF-8 is refused where it is used,
    /// naming that limit.
    WorkspacePath,
    check_path,
    || json_schema!({
        "type": "string",
        "minLength": 1,
        "maxLength": MAX_PATH_CHARS,
        // Names of at most 255 characters (other than `/` and NUL),
        // separated by `/`.
        "pattern": format!(r"^[^/\u0000]{{0,{MAX_NAME_CHARS}}}(/[^/\u0000]{{0,{MAX_NAME_CHARS}}})*$"),
        "description": "A path relative to the workspace (`/workspace/...` also works): \
                        not empty, no NUL characters, at most 1023 characters, names of at \
                        most 255 characters (and 255 bytes of UTF-8).",
    })
);

impl WorkspacePath {
    /// The workspace root.
    pub fn root() -> Self {
        Self(".".into())
    }
}

fn check_path(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("must not be empty (use \".\" for the workspace itself)".into());
    }
    if s.contains('\0') {
        return Err("must not contain NUL characters".into());
    }
    let chars = s.chars().count();
    if chars > MAX_PATH_CHARS {
        return Err(format!(
            "is {chars} characters long; at most {MAX_PATH_CHARS} are accepted"
        ));
    }
    if let Some(name) = s.split('/').find(|n| n.chars().count() > MAX_NAME_CHARS) {
        return Err(format!(
            "has a name of {} characters; at most {MAX_NAME_CHARS} are accepted",
            name.chars().count()
        ));
    }
    Ok(())
}

checked_string!(
    /// A host pattern of a session's network policy, checked by parsing it
    /// as the policy will.
    HostPattern,
    |s| s.parse::<crate::network::Pattern>().map(|_| ()),
    || json_schema!({
        "type": "string",
        "minLength": 1,
        "maxLength": crate::network::MAX_PATTERN_CHARS,
        "pattern": crate::network::pattern_regex(),
        "description": "`host[:port]`: a name (`pypi.org`), `*.suffix` (any subdomain), `*`, \
                        an IPv4 address or network (`10.0.0.0/8`), or an IPv6 address or \
                        network in brackets (`[fd00::/8]:443`).",
    })
);

/// Longest grep pattern, in characters.
pub const MAX_PATTERN_CHARS: usize = 10_000;

checked_string!(
    /// A regular expression for grep (Rust's `regex` syntax, as ripgrep's),
    /// checked by compiling it as the search will.
    GrepPattern,
    |s| {
        if s.chars().count() > MAX_PATTERN_CHARS {
            return Err(format!("at most {MAX_PATTERN_CHARS} characters are accepted"));
        }
        crate::workspace::check_regex(s).map_err(|e| e.to_string())
    },
    || json_schema!({
        "type": "string",
        "format": "regex",
        "maxLength": MAX_PATTERN_CHARS,
        // Lines are searched one at a time: a line feed can never match.
        "pattern": r"^[^\n]*$",
        "description": "A regular expression (ripgrep's syntax) matched against each line; \
                        it cannot hold a line feed.",
    })
);

checked_string!(
    /// A UTC day, `YYYY-MM-DD` (RFC 3339's full-date), checked by parsing
    /// it as one.
    Day,
    |s| parse_day(s).map(|_| ()),
    || json_schema!({
        "type": "string",
        "format": "date",
        "description": "A UTC day, `YYYY-MM-DD`.",
    })
);

impl Day {
    pub fn date(&self) -> chrono::NaiveDate {
        parse_day(&self.0).expect("checked when made")
    }
}

/// RFC 3339's full-date and nothing else: four digits of year (chrono's
/// `%Y` alone would take a sign or more digits).
fn parse_day(s: &str) -> Result<chrono::NaiveDate, String> {
    let shape = s.len() == 10
        && s.bytes().enumerate().all(|(i, b)| {
            if i == 4 || i == 7 {
                b == b'-'
            } else {
                b.is_ascii_digit()
            }
        });
    shape
        .then(|| chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").ok())
        .flatten()
        .ok_or_else(|| format!("{s:?} is not a day (YYYY-MM-DD)"))
}

/// A number of seconds greater than zero.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PositiveSeconds(f64);

impl PositiveSeconds {
    pub fn get(self) -> f64 {
        self.0
    }
}

impl<'de> Deserialize<'de> for PositiveSeconds {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let n = f64::deserialize(d)?;
        if n > 0.0 && n.is_finite() {
            Ok(Self(n))
        } else {
            Err(serde::de::Error::custom(
                "must be a positive number of seconds",
            ))
        }
    }
}

impl JsonSchema for PositiveSeconds {
    fn schema_name() -> Cow<'static, str> {
        "PositiveSeconds".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "number",
            "exclusiveMinimum": 0,
            "description": "Seconds, greater than zero.",
        })
    }
}

/// An integer in `MIN..=MAX`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounded<const MIN: u64, const MAX: u64>(u64);

impl<const MIN: u64, const MAX: u64> Bounded<MIN, MAX> {
    pub fn get(self) -> u64 {
        self.0
    }
}

/// Reads an integer the way JSON Schema defines one: any number with no
/// fractional part (`3` and `3.0` alike), from JSON or from the text of a
/// query string or a path.
struct IntegerVisitor;

impl serde::de::Visitor<'_> for IntegerVisitor {
    type Value = f64;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an integer")
    }

    fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<f64, E> {
        Ok(n as f64)
    }

    fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<f64, E> {
        Ok(n as f64)
    }

    fn visit_f64<E: serde::de::Error>(self, n: f64) -> Result<f64, E> {
        Ok(n)
    }

    fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<f64, E> {
        s.trim()
            .parse::<f64>()
            .ok()
            .filter(|n| n.is_finite())
            .ok_or_else(|| E::invalid_value(serde::de::Unexpected::Str(s), &self))
    }
}

impl<'de, const MIN: u64, const MAX: u64> Deserialize<'de> for Bounded<MIN, MAX> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let n = d.deserialize_any(IntegerVisitor)?;
        if n.fract() != 0.0 {
            return Err(serde::de::Error::custom(format!(
                "must be an integer, got {n}"
            )));
        }
        // Exact: every bound used here is far below 2^53.
        if n < MIN as f64 || n > MAX as f64 {
            return Err(serde::de::Error::custom(format!(
                "must be between {MIN} and {MAX}, got {n}"
            )));
        }
        Ok(Self(n as u64))
    }
}

impl<const MIN: u64, const MAX: u64> JsonSchema for Bounded<MIN, MAX> {
    fn inline_schema() -> bool {
        true
    }

    fn schema_name() -> Cow<'static, str> {
        format!("Integer{MIN}To{MAX}").into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "integer",
            "minimum": MIN,
            "maximum": MAX,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse<T: for<'de> Deserialize<'de>>(v: serde_json::Value) -> Result<T, String> {
        serde_json::from_value(v).map_err(|e| e.to_string())
    }

    #[test]
    fn commands_must_be_solid_short_and_nul_free() {
        assert!(parse::<CommandText>("ls -la".into()).is_ok());
        assert!(parse::<CommandText>("\u{3000}x".into()).is_ok());
        for bad in ["", "   ", "\t\n", "\u{85}\u{a0}", "echo \0"] {
            assert!(parse::<CommandText>(bad.into()).is_err(), "{bad:?}");
        }
        let max = crate::sandbox::MAX_COMMAND_CHARS;
        let long = "x".repeat(max + 1);
        let err = parse::<CommandText>(long.clone().into()).unwrap_err();
        assert!(err.contains("at most 32000"), "{err}");
        // The longest command, in the widest characters, fits one argument.
        assert!(max * 4 + "CROGIA_CMD=".len() < 128 * 1024);
        // The document's rule and the sandbox's own (which guards plugins'
        // commands) accept the same commands.
        for s in [
            "ls",
            "",
            " \t",
            "a\0b",
            "\u{3000}x",
            &long,
            &"é".repeat(max),
        ] {
            assert_eq!(
                COMMAND_RULES.check(s).is_ok(),
                crate::sandbox::check_command(s).is_ok(),
                "{s:.20?}"
            );
        }
    }

    #[test]
    fn the_schema_pattern_accepts_exactly_what_the_check_accepts() {
        let rules = [COMMAND_RULES, TASK_RULES];
        let samples = [
            "",
            " ",
            "a",
            " a ",
            "\0",
            "a\0",
            "\u{85}",
            "\u{feff}",
            "\u{1c}",
            "x\ny",
            "\u{2000}",
            "\u{200a}\u{200b}",
            "\t\u{3000}",
        ];
        for r in &rules {
            let re = regex_lite(&r.pattern().unwrap());
            for s in samples {
                assert_eq!(re(s), r.check(s).is_ok(), "{s:?} against {:?}", r.pattern());
            }
        }
    }

    /// The schema's pattern, read by Rust's regex engine (whose syntax for
    /// these classes is the same as ECMA-262's).
    fn regex_lite(pattern: &str) -> impl Fn(&str) -> bool + use<> {
        let re = regex::Regex::new(pattern).expect("a valid pattern");
        move |s: &str| re.is_match(s)
    }

    #[test]
    fn the_path_pattern_accepts_exactly_what_the_check_accepts() {
        let schema = WorkspacePath::json_schema(&mut SchemaGenerator::default());
        let pattern = schema.get("pattern").unwrap().as_str().unwrap().to_string();
        let matches = regex_lite(&pattern);
        for s in [
            "a".to_string(),
            "a/b".into(),
            "/workspace/x".into(),
            "a\0".into(),
            "n".repeat(255),
            "n".repeat(256),
            format!("{}/", "é".repeat(255)),
            format!("x/{}", "é".repeat(256)),
        ] {
            assert_eq!(matches(&s), check_path(&s).is_ok(), "{s:?}");
        }
    }

    #[test]
    fn paths_are_checked_for_form() {
        assert!(parse::<WorkspacePath>("src/app.py".into()).is_ok());
        assert!(parse::<WorkspacePath>(format!("{}/x", "n".repeat(255)).into()).is_ok());
        for bad in [
            String::new(),
            "a\0b".into(),
            "n".repeat(256),
            format!("a/{}", "n".repeat(256)),
            "a/".repeat(512),
        ] {
            assert!(
                parse::<WorkspacePath>(bad.clone().into()).is_err(),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn bounded_integers_refuse_what_the_schema_refuses() {
        assert_eq!(parse::<Bounded<0, 10>>(10.into()).unwrap().get(), 10);
        assert!(parse::<Bounded<0, 10>>(11.into()).is_err());
        assert!(parse::<Bounded<1, 10>>(0.into()).is_err());
        assert!(parse::<Bounded<0, 10>>((-1).into()).is_err());
        // JSON Schema's integers include 3.0.
        assert_eq!(parse::<Bounded<0, 10>>(3.0.into()).unwrap().get(), 3);
        assert!(parse::<Bounded<0, 10>>(3.5.into()).is_err());
        assert_eq!(parse::<Bounded<0, 10>>("7".into()).unwrap().get(), 7);
        assert!(parse::<PositiveSeconds>(0.5.into()).is_ok());
        assert!(parse::<PositiveSeconds>(0.into()).is_err());
        assert!(parse::<PositiveSeconds>((-2).into()).is_err());
    }

    #[test]
    fn days_are_full_dates_and_nothing_else() {
        let day = parse::<Day>("2026-12-03".into()).unwrap();
        assert_eq!(
            day.date(),
            chrono::NaiveDate::from_ymd_opt(2026, 12, 3).unwrap()
        );
        for bad in [
            "2026-02-30",
            "2026-13-01",
            "+2026-12-03",
            "20261203",
            "2026-12-3",
            "2026-12-03T00:00:00Z",
            " 2026-12-03",
            "",
        ] {
            assert!(parse::<Day>(bad.into()).is_err(), "{bad:?}");
        }
    }
}
