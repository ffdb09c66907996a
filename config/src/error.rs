//! Config problems: each one located by file, line, column and key path.

use std::fmt;

/// Every problem found in one config file, in file order. Never empty when returned as
/// an error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", Lines(.0))]
pub struct ConfigErrors(pub Vec<ConfigProblem>);

impl ConfigErrors {
    /// The problems, in file order.
    pub fn problems(&self) -> &[ConfigProblem] {
        &self.0
    }

    /// How many problems were found.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when there are none (never for a `ConfigErrors` returned as an error).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The problems in file order, as [`ConfigErrors::problems`].
    pub fn iter(&self) -> std::slice::Iter<'_, ConfigProblem> {
        self.0.iter()
    }
}

impl<'a> IntoIterator for &'a ConfigErrors {
    type Item = &'a ConfigProblem;
    type IntoIter = std::slice::Iter<'a, ConfigProblem>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

/// One problem per line.
struct Lines<'a>(&'a [ConfigProblem]);

impl fmt::Display for Lines<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

/// One mistake in a config file.
///
/// Displays as `gateway.toml:12:8: uplink.mqtt.port: must be between 1 and 65535`;
/// line and column (1-based, column in characters) are left out when unknown, the key
/// path when the problem concerns the whole file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", Located(self))]
pub struct ConfigProblem {
    /// The file name, as given to the loader.
    pub file: String,
    /// 1-based line of the offending key or value; `None` when it cannot be located (a
    /// missing key, a problem with the file as a whole).
    pub line: Option<usize>,
    /// 1-based column, in characters, on `line`; `None` when `line` is.
    pub column: Option<usize>,
    /// Dotted key path, e.g. `uplink.mqtt.port` or `devices[2].kind`; empty for a
    /// problem with the file as a whole (unreadable, TOML syntax).
    pub path: String,
    /// What is wrong and, where it helps, what to write instead.
    pub message: String,
}

struct Located<'a>(&'a ConfigProblem);

impl fmt::Display for Located<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = self.0;
        f.write_str(&p.file)?;
        if let Some(line) = p.line {
            write!(f, ":{line}")?;
            if let Some(column) = p.column {
                write!(f, ":{column}")?;
            }
        }
        if !p.path.is_empty() {
            write!(f, ": {}", p.path)?;
        }
        write!(f, ": {}", p.message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problem(line: Option<usize>, path: &str) -> ConfigProblem {
        ConfigProblem {
            file: "gateway.toml".into(),
            line,
            column: line.map(|_| 8),
            path: path.into(),
            message: "must be between 1 and 65535".into(),
        }
    }

    #[test]
    fn display_names_file_line_column_and_path() {
        assert_eq!(
            problem(Some(12), "uplink.mqtt.port").to_string(),
            "gateway.toml:12:8: uplink.mqtt.port: must be between 1 and 65535"
        );
        assert_eq!(
            problem(None, "uplink.mqtt.port").to_string(),
            "gateway.toml: uplink.mqtt.port: must be between 1 and 65535"
        );
        assert_eq!(
            problem(Some(3), "").to_string(),
            "gateway.toml:3:8: must be between 1 and 65535"
        );
    }

    #[test]
    fn errors_display_one_problem_per_line() {
        let errors = ConfigErrors(vec![problem(Some(1), "a"), problem(Some(2), "b")]);
        let text = errors.to_string();
        assert_eq!(text.lines().count(), 2);
        assert!(text
            .lines()
            .nth(1)
            .is_some_and(|l| l.starts_with("gateway.toml:2:8: b:")));
    }
}
