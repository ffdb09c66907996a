//! Value types used by the config: byte sizes, secrets, and the port parser.

use std::fmt;
use std::str::FromStr;

use serde::de::{self, Deserializer, Unexpected, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// A size in bytes.
///
/// In config files it is written either as an integer number of bytes (`65536`) or as a
/// string with a unit: `"64KiB"`, `"2 MiB"`, `"1 GiB"` (1024-based) or `"1KB"`, `"512 MB"`
/// (1000-based). Units are case-insensitive; `"B"` or no unit means bytes. Only whole
/// numbers are accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ByteSize(pub u64);

impl ByteSize {
    /// `bytes` bytes.
    pub const fn b(bytes: u64) -> Self {
        ByteSize(bytes)
    }

    /// `n` KiB (n × 1024 bytes).
    pub const fn kib(n: u64) -> Self {
        ByteSize(n * 1024)
    }

    /// `n` MiB (n × 1024² bytes).
    pub const fn mib(n: u64) -> Self {
        ByteSize(n * 1024 * 1024)
    }

    /// `n` GiB (n × 1024³ bytes).
    pub const fn gib(n: u64) -> Self {
        ByteSize(n * 1024 * 1024 * 1024)
    }

    /// The size in bytes.
    pub const fn as_u64(self) -> u64 {
        self.0
    }

    /// The size as a `usize`, saturating on targets where it does not fit (32-bit ARM).
    pub fn as_usize(self) -> usize {
        usize::try_from(self.0).unwrap_or(usize::MAX)
    }
}

/// Units in the order `Display` tries them: the largest unit that divides exactly wins,
/// binary before decimal, so the printed form parses back to the same value.
const UNITS: &[(&str, u64)] = &[
    ("GiB", 1 << 30),
    ("MiB", 1 << 20),
    ("KiB", 1 << 10),
    ("GB", 1_000_000_000),
    ("MB", 1_000_000),
    ("KB", 1_000),
];

impl fmt::Display for ByteSize {
    /// `65536` prints as `64 KiB`, `1000` as `1 KB`, `1500` as `1500 B`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 != 0 {
            for (name, factor) in UNITS {
                if self.0 % factor == 0 {
                    return write!(f, "{} {name}", self.0 / factor);
                }
            }
        }
        write!(f, "{} B", self.0)
    }
}

/// Why a string is not a byte size.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ByteSizeError {
    /// The string is empty or only spaces.
    #[error("empty byte size; write e.g. \"64 KiB\" or a number of bytes")]
    Empty,
    /// It does not start with digits, or the number has a fraction (`"1.5 MiB"`); the
    /// input, as written.
    #[error("{0:?} is not a byte size: it must start with a whole, non-negative number (e.g. \"64 KiB\")")]
    NotANumber(String),
    /// The unit after the number is none of B, KB, MB, GB, KiB, MiB, GiB.
    #[error("unknown size unit {unit:?} in {input:?}; use B, KB, MB, GB (1000-based) or KiB, MiB, GiB (1024-based)")]
    UnknownUnit {
        /// The whole input, as written.
        input: String,
        /// The unit part of it.
        unit: String,
    },
    /// The number of bytes does not fit in 64 bits (the input, as written).
    #[error("byte size {0:?} is too large")]
    Overflow(String),
}

impl FromStr for ByteSize {
    type Err = ByteSizeError;

    fn from_str(input: &str) -> Result<Self, ByteSizeError> {
        let s = input.trim();
        if s.is_empty() {
            return Err(ByteSizeError::Empty);
        }
        let digits_end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (number, unit) = s.split_at(digits_end);
        if number.is_empty() {
            return Err(ByteSizeError::NotANumber(input.to_owned()));
        }
        let unit = unit.trim_start();
        let factor: u64 = match unit.to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "kb" => 1_000,
            "mb" => 1_000_000,
            "gb" => 1_000_000_000,
            "kib" => 1 << 10,
            "mib" => 1 << 20,
            "gib" => 1 << 30,
            _ if unit.starts_with('.') || unit.starts_with(',') => {
                return Err(ByteSizeError::NotANumber(input.to_owned()))
            }
            _ => {
                return Err(ByteSizeError::UnknownUnit {
                    input: input.to_owned(),
                    unit: unit.to_owned(),
                })
            }
        };
        let n: u64 = number
            .parse()
            .map_err(|_| ByteSizeError::Overflow(input.to_owned()))?;
        n.checked_mul(factor)
            .map(ByteSize)
            .ok_or_else(|| ByteSizeError::Overflow(input.to_owned()))
    }
}

impl Serialize for ByteSize {
    /// Serialized in its human form (`"64 KiB"`), which parses back to the same value.
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ByteSizeVisitor;

        impl Visitor<'_> for ByteSizeVisitor {
            type Value = ByteSize;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a byte size: a number of bytes or a string such as \"64 KiB\"")
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ByteSize, E> {
                Ok(ByteSize(v))
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ByteSize, E> {
                u64::try_from(v)
                    .map(ByteSize)
                    .map_err(|_| E::custom(format!("byte size must not be negative, found {v}")))
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<ByteSize, E> {
                v.parse().map_err(E::custom)
            }
        }

        deserializer.deserialize_any(ByteSizeVisitor)
    }
}

/// A secret such as a broker password.
///
/// `Debug`, `Display` and `Serialize` all print `***`, so a secret never reaches a log
/// line, an error message or a config dump. Call [`Secret::expose`] where the value is
/// actually needed (handing it to the MQTT client).
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps `value` (a password or token read from the config, a file or the environment).
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret value itself. Never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Secret(value)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl Serialize for Secret {
    /// Redacted: a serialized config shows `***`, not the secret.
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str("***")
    }
}

/// Deserializes a TCP port: an integer in 1..=65535, with a message that says so.
pub(crate) fn port<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u16, D::Error> {
    struct PortVisitor;

    impl Visitor<'_> for PortVisitor {
        type Value = u16;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a port number between 1 and 65535")
        }

        fn visit_i64<E: de::Error>(self, v: i64) -> Result<u16, E> {
            match u16::try_from(v) {
                Ok(p) if p != 0 => Ok(p),
                _ => Err(E::custom(format!("must be between 1 and 65535, found {v}"))),
            }
        }

        fn visit_u64<E: de::Error>(self, v: u64) -> Result<u16, E> {
            match u16::try_from(v) {
                Ok(p) if p != 0 => Ok(p),
                _ => Err(E::custom(format!("must be between 1 and 65535, found {v}"))),
            }
        }

        fn visit_str<E: de::Error>(self, v: &str) -> Result<u16, E> {
            Err(E::invalid_type(Unexpected::Str(v), &self))
        }
    }

    deserializer.deserialize_any(PortVisitor)
}

/// Serde for `Duration` as a humantime string (`"30s"`, `"2ms"`, `"1h 30m"`), with
/// humantime's own message on error (it names the bad unit and lists the good ones).
pub(crate) mod duration {
    use std::time::Duration;

    use serde::{de, Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&humantime::format_duration(*d))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        let text = Text::deserialize(deserializer)?;
        humantime::parse_duration(&text.0).map_err(|e| {
            de::Error::custom(format!(
                "{:?} is not a duration ({e}); write e.g. \"30s\", \"200ms\" or \"1h 30m\"",
                text.0
            ))
        })
    }

    /// A string, with a message that says a duration was expected.
    struct Text(String);

    impl<'de> Deserialize<'de> for Text {
        fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            struct V;
            impl de::Visitor<'_> for V {
                type Value = Text;
                fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                    f.write_str("a duration string such as \"30s\" or \"200ms\"")
                }
                fn visit_str<E: de::Error>(self, v: &str) -> Result<Text, E> {
                    Ok(Text(v.to_owned()))
                }
            }
            deserializer.deserialize_str(V)
        }
    }

    /// The same for `Option<Duration>`; a missing key is `None` (with `#[serde(default)]`).
    pub mod option {
        use std::time::Duration;

        use serde::{Deserializer, Serializer};

        pub fn serialize<S: Serializer>(
            d: &Option<Duration>,
            serializer: S,
        ) -> Result<S::Ok, S::Error> {
            match d {
                Some(d) => super::serialize(d, serializer),
                None => serializer.serialize_none(),
            }
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(
            deserializer: D,
        ) -> Result<Option<Duration>, D::Error> {
            super::deserialize(deserializer).map(Some)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_size_parses_binary_and_decimal_units() {
        let cases = [
            ("64KiB", 65_536),
            ("2 MiB", 2 * 1024 * 1024),
            ("1000", 1000),
            ("1KB", 1000),
            ("512MB", 512_000_000),
            ("1 gib", 1 << 30),
            ("7 B", 7),
            ("  48 KiB ", 48 * 1024),
            ("0", 0),
        ];
        for (text, bytes) in cases {
            assert_eq!(text.parse::<ByteSize>(), Ok(ByteSize(bytes)), "{text}");
        }
    }

    #[test]
    fn byte_size_rejects_nonsense() {
        assert!(matches!(
            "12 parsecs".parse::<ByteSize>(),
            Err(ByteSizeError::UnknownUnit { ref unit, .. }) if unit == "parsecs"
        ));
        assert!(matches!(
            "-1".parse::<ByteSize>(),
            Err(ByteSizeError::NotANumber(_))
        ));
        assert!(matches!(
            "1.5 MiB".parse::<ByteSize>(),
            Err(ByteSizeError::NotANumber(_))
        ));
        assert_eq!("".parse::<ByteSize>(), Err(ByteSizeError::Empty));
        assert!(matches!(
            "99999999999 GiB".parse::<ByteSize>(),
            Err(ByteSizeError::Overflow(_))
        ));
    }

    #[test]
    fn byte_size_display_round_trips() {
        for bytes in [0, 1, 1000, 1500, 65_536, 2 << 20, 512_000_000, 3 << 30] {
            let shown = ByteSize(bytes).to_string();
            assert_eq!(shown.parse::<ByteSize>(), Ok(ByteSize(bytes)), "{shown}");
        }
        assert_eq!(ByteSize::kib(64).to_string(), "64 KiB");
        assert_eq!(ByteSize(1000).to_string(), "1 KB");
        assert_eq!(ByteSize(1500).to_string(), "1500 B");
    }

    #[test]
    fn byte_size_deserializes_from_integer_or_string() {
        #[derive(Deserialize)]
        struct T {
            a: ByteSize,
            b: ByteSize,
        }
        let t: T = toml::from_str("a = 1024\nb = \"2 MiB\"").expect("valid");
        assert_eq!(t.a, ByteSize(1024));
        assert_eq!(t.b, ByteSize::mib(2));
        let err = toml::from_str::<T>("a = -1\nb = 1")
            .err()
            .expect("negative");
        assert!(err.message().contains("must not be negative"), "{err}");
    }

    #[test]
    fn durations_parse_humantime_and_name_the_bad_unit() {
        #[derive(Deserialize)]
        struct T {
            #[serde(with = "duration")]
            d: std::time::Duration,
        }
        let parse = |text: &str| toml::from_str::<T>(&format!("d = {text}")).map(|t| t.d);
        assert_eq!(
            parse("\"30s\"").ok(),
            Some(std::time::Duration::from_secs(30))
        );
        assert_eq!(
            parse("\"2ms\"").ok(),
            Some(std::time::Duration::from_millis(2))
        );
        assert_eq!(
            parse("\"1h 30m\"").ok(),
            Some(std::time::Duration::from_secs(5400))
        );
        let err = parse("\"5 parsecs\"").expect_err("bad unit");
        assert!(
            err.message().contains("unknown time unit \"parsecs\""),
            "{err}"
        );
        let err = parse("30").expect_err("bare number");
        assert!(
            err.message().contains("expected a duration string"),
            "{err}"
        );
    }

    #[test]
    fn secret_is_redacted_everywhere_but_expose() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?}"), "***");
        assert_eq!(s.to_string(), "***");
        assert_eq!(s.expose(), "hunter2");
    }
}
