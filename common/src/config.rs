//! Service configuration files: one table of fields per role, from which `scrip ROLE config
//! example` prints a commented TOML, `--help` lists the fields, and loading reports every
//! missing field at once, an invalid value with its line, and resolves relative paths against
//! the file's own directory.

use serde::de::DeserializeOwned;
use std::path::{Path, PathBuf};

/// The `default` of a field that has no value unless set: shown commented out in the example.
pub const UNSET: &str = "unset";

/// One field of a configuration file.
#[derive(Debug, Clone, Copy)]
pub struct Field {
    /// Its name; `section.name` for a field of a `[section]` table.
    pub name: &'static str,
    /// What it is, for people (one line or a few).
    pub doc: &'static str,
    /// Its default as TOML, [`UNSET`] for an optional field with no value by default, or
    /// `None` if the field is required.
    pub default: Option<&'static str>,
    /// A value to show for a required field, or for an [`UNSET`] one.
    pub example: &'static str,
    /// The environment variable that overrides it, if any.
    pub env: Option<&'static str>,
}

impl Field {
    fn key(&self) -> &'static str {
        self.name.rsplit('.').next().unwrap_or(self.name)
    }

    fn section(&self) -> Option<&'static str> {
        self.name.split_once('.').map(|(s, _)| s)
    }
}

/// A role's configuration file: its fields, in the order they are shown.
#[derive(Debug, Clone, Copy)]
pub struct Schema {
    /// `ledger`, `issuer`, `redeemer`.
    pub role: &'static str,
    /// Every field.
    pub fields: &'static [Field],
}

impl Schema {
    /// A commented TOML file with every field: required ones set to an example, optional ones
    /// set to their default, each with what it is and its environment variable.
    pub fn example(&self) -> String {
        let mut out = format!(
            "# scrip {} configuration: every field, with its default.\n\
             # Relative paths are read from this file's directory.\n",
            self.role
        );
        let mut section = None;
        for f in self.fields {
            if f.section() != section {
                section = f.section();
                if let Some(s) = section {
                    out.push_str(&format!("\n[{s}]\n"));
                }
            }
            out.push('\n');
            for line in f.doc.lines() {
                out.push_str(&format!("# {}\n", line.trim()));
            }
            let mut notes = Vec::new();
            match f.default {
                None => notes.push("required".to_owned()),
                Some(UNSET) => notes.push("unset by default".to_owned()),
                Some(d) => notes.push(format!("default {d}")),
            }
            if let Some(env) = f.env {
                notes.push(format!("environment {env}"));
            }
            out.push_str(&format!("# ({})\n", notes.join("; ")));
            match f.default {
                Some(UNSET) => out.push_str(&format!("# {} = {}\n", f.key(), f.example)),
                d => out.push_str(&format!("{} = {}\n", f.key(), d.unwrap_or(f.example))),
            }
        }
        out
    }

    /// The field list for `--help`.
    pub fn help(&self) -> String {
        let mut out = format!(
            "Configuration fields (`scrip {} config example` prints a commented file):\n",
            self.role
        );
        for f in self.fields {
            let first = f.doc.lines().next().unwrap_or_default().trim();
            let default = match f.default {
                None => "required".to_owned(),
                Some(UNSET) => "unset by default".to_owned(),
                Some(d) => format!("default {d}"),
            };
            let env = f.env.map(|e| format!(", {e}")).unwrap_or_default();
            out.push_str(&format!("  {:<28} {first} ({default}{env})\n", f.name));
        }
        out
    }

    /// Reads and parses `path`, then applies the environment overrides the fields name
    /// ([`Schema::apply_env`]): every missing required field is named at once, any other
    /// error gives its line or its variable.
    pub fn load<T: DeserializeOwned + serde::Serialize>(&self, path: &Path) -> anyhow::Result<T> {
        let mut config = self.load_file(path)?;
        self.apply_env(&mut config, |name| std::env::var(name).ok())
            .map_err(|message| anyhow::anyhow!("environment variable {message}"))?;
        Ok(config)
    }

    /// [`Schema::load`] without the environment.
    fn load_file<T: DeserializeOwned>(&self, path: &Path) -> anyhow::Result<T> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            anyhow::anyhow!(
                "cannot read the {} configuration {}: {e}",
                self.role,
                path.display()
            )
        })?;
        self.parse(&text)
            .map_err(|message| anyhow::anyhow!("{}: {message}", path.display()))
    }

    /// The names of the fields that have a value whenever the file parses (required, or with
    /// a default), `section.name` for a section's: what a parsed configuration serializes.
    pub fn always_set(&self) -> Vec<&'static str> {
        self.fields
            .iter()
            .filter(|f| f.default != Some(UNSET))
            .map(|f| f.name)
            .collect()
    }

    /// Checks the schema against the type it describes (for each role's tests): the example
    /// parses to the same value as a file with only the required fields, so every default
    /// shown is the real one, and a parsed configuration has exactly the fields listed.
    pub fn check_against<T>(&self) -> Result<(), String>
    where
        T: DeserializeOwned + serde::Serialize + PartialEq + std::fmt::Debug,
    {
        let mut minimal = String::new();
        let mut section = None;
        for f in self.fields.iter().filter(|f| f.default.is_none()) {
            if f.section() != section {
                section = f.section();
                if let Some(s) = section {
                    minimal.push_str(&format!("[{s}]\n"));
                }
            }
            minimal.push_str(&format!("{} = {}\n", f.key(), f.example));
        }
        let example: T = self.parse(&self.example())?;
        let minimal: T = self.parse(&minimal)?;
        if example != minimal {
            return Err(format!(
                "the example's defaults differ from the real ones:\n{example:?}\n{minimal:?}"
            ));
        }
        let table = toml::Table::try_from(&example).map_err(|e| e.to_string())?;
        let mut keys: Vec<String> = Vec::new();
        for (k, v) in &table {
            match v.as_table() {
                Some(section) => keys.extend(section.keys().map(|s| format!("{k}.{s}"))),
                None => keys.push(k.clone()),
            }
        }
        let mut listed: Vec<String> = self.always_set().iter().map(|s| (*s).to_owned()).collect();
        keys.sort_unstable();
        listed.sort_unstable();
        if keys != listed {
            return Err(format!(
                "the schema lists {listed:?}, the type has {keys:?}"
            ));
        }
        Ok(())
    }

    /// Applies the environment overrides the fields name (`lookup` is the environment, or a
    /// map in tests): a variable set replaces its field, read as the field's type. The error
    /// names the variable and what is wrong with its value.
    pub fn apply_env<T>(
        &self,
        config: &mut T,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<(), String>
    where
        T: DeserializeOwned + serde::Serialize,
    {
        let mut table = toml::Table::try_from(&*config).map_err(|e| e.to_string())?;
        let mut set = Vec::new();
        for f in self.fields {
            let Some((env, value)) = f.env.and_then(|env| lookup(env).map(|v| (env, v))) else {
                continue;
            };
            let section = match f.section() {
                Some(s) => match table
                    .entry(s)
                    .or_insert_with(|| toml::Value::Table(toml::Table::new()))
                {
                    toml::Value::Table(t) => t,
                    _ => return Err(format!("{env}: [{s}] is not a table")),
                },
                None => &mut table,
            };
            // A number stays a number, a flag a flag; anything else is the text as it is.
            let typed = match section.get(f.key()) {
                Some(toml::Value::Integer(_)) => value
                    .trim()
                    .parse()
                    .map(toml::Value::Integer)
                    .map_err(|_| format!("{env}={value:?}: expected a whole number"))?,
                Some(toml::Value::Boolean(_)) => value
                    .trim()
                    .parse()
                    .map(toml::Value::Boolean)
                    .map_err(|_| format!("{env}={value:?}: expected true or false"))?,
                _ => toml::Value::String(value),
            };
            section.insert(f.key().to_owned(), typed);
            set.push(env);
        }
        if set.is_empty() {
            return Ok(());
        }
        *config =
            T::deserialize(table).map_err(|e| format!("{}: {}", set.join(", "), e.message()))?;
        Ok(())
    }

    /// Parses a configuration's text; the error says which fields and lines are wrong and
    /// what to do.
    pub fn parse<T: DeserializeOwned>(&self, text: &str) -> Result<T, String> {
        let hint = format!("`scrip {} config example` shows every field", self.role);
        let table: toml::Table = toml::from_str(text).map_err(|e| format!("{e}"))?;
        let missing: Vec<&str> = self
            .fields
            .iter()
            .filter(|f| f.default.is_none())
            .filter(|f| {
                let in_table = match f.section() {
                    Some(s) => table.get(s).and_then(|v| v.as_table()),
                    None => Some(&table),
                };
                !in_table.is_some_and(|t| t.contains_key(f.key()))
            })
            .map(|f| f.name)
            .collect();
        if !missing.is_empty() {
            return Err(format!(
                "missing required field{} {}; {hint}",
                if missing.len() == 1 { "" } else { "s" },
                missing.join(", ")
            ));
        }
        toml::from_str(text).map_err(|e: toml::de::Error| {
            let line = e
                .span()
                .map(|span| 1 + text[..span.start.min(text.len())].matches('\n').count());
            let message = e.message().to_owned();
            match line {
                Some(line) => {
                    let shown = text.lines().nth(line - 1).unwrap_or_default().trim();
                    format!("line {line} ({shown}): {message}; {hint}")
                }
                None => format!("{message}; {hint}"),
            }
        })
    }
}

/// `path` read from the directory of the configuration file `config`, unless absolute.
pub fn relative_to(config: &Path, path: &Path) -> PathBuf {
    if path.is_absolute() {
        return path.to_owned();
    }
    match config.parent().filter(|d| !d.as_os_str().is_empty()) {
        Some(dir) => dir.join(path),
        None => path.to_owned(),
    }
}

/// A `sqlite://PATH` URL with a relative path read from the configuration file's directory;
/// any other URL as it is.
pub fn sqlite_relative_to(config: &Path, url: &str) -> String {
    let Some(rest) = url.strip_prefix("sqlite://") else {
        return url.to_owned();
    };
    let (file, query) = rest
        .split_once('?')
        .map_or((rest, None), |(f, q)| (f, Some(q)));
    if file.is_empty() || file.starts_with(':') || Path::new(file).is_absolute() {
        return url.to_owned();
    }
    let resolved = relative_to(config, Path::new(file));
    match query {
        Some(q) => format!("sqlite://{}?{q}", resolved.display()),
        None => format!("sqlite://{}", resolved.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize, serde::Serialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Demo {
        name: String,
        database: String,
        #[serde(default)]
        port: u16,
    }

    const DEMO: Schema = Schema {
        role: "demo",
        fields: &[
            Field {
                name: "name",
                doc: "Its name.",
                default: None,
                example: "\"x\"",
                env: None,
            },
            Field {
                name: "database",
                doc: "Where it keeps things.",
                default: None,
                example: "\"sqlite://d.db\"",
                env: Some("SCRIP_DEMO_DATABASE"),
            },
            Field {
                name: "port",
                doc: "A port.",
                default: Some("0"),
                example: "",
                env: Some("SCRIP_DEMO_PORT"),
            },
        ],
    };

    #[test]
    fn environment_overrides_are_read_as_their_field_and_named_when_wrong() {
        let mut demo: Demo = DEMO
            .parse("name = \"x\"\ndatabase = \"sqlite://a.db\"\n")
            .expect("valid");
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == name)
                    .map(|(_, v)| (*v).to_owned())
            }
        };
        DEMO.apply_env(
            &mut demo,
            env(&[
                ("SCRIP_DEMO_DATABASE", "sqlite://b.db"),
                ("SCRIP_DEMO_PORT", "7"),
            ]),
        )
        .expect("valid overrides");
        assert_eq!((demo.database.as_str(), demo.port), ("sqlite://b.db", 7));
        let not_a_number = DEMO
            .apply_env(&mut demo, env(&[("SCRIP_DEMO_PORT", "seven")]))
            .expect_err("not a number");
        assert!(not_a_number.contains("SCRIP_DEMO_PORT"), "{not_a_number}");
        let too_big = DEMO
            .apply_env(&mut demo, env(&[("SCRIP_DEMO_PORT", "70000")]))
            .expect_err("out of range");
        assert!(too_big.contains("SCRIP_DEMO_PORT"), "{too_big}");
        assert_eq!(demo.port, 7, "a refused override changes nothing");
    }

    #[test]
    fn every_missing_field_is_named_at_once_and_bad_values_by_line() {
        let e = DEMO.parse::<Demo>("port = 1\n").expect_err("missing");
        assert!(e.contains("missing required fields name, database"), "{e}");
        let e = DEMO
            .parse::<Demo>("name = \"a\"\ndatabase = \"b\"\nport = \"high\"\n")
            .expect_err("bad type");
        assert!(e.starts_with("line 3 (port = \"high\"):"), "{e}");
        let e = DEMO
            .parse::<Demo>("name = \"a\"\ndatabase = \"b\"\n\nportt = 1\n")
            .expect_err("unknown");
        assert!(e.starts_with("line 4 (portt = 1):"), "{e}");
        assert!(
            DEMO.parse::<Demo>(&DEMO.example()).is_ok(),
            "the example parses"
        );
        assert!(DEMO.help().contains("SCRIP_DEMO_DATABASE"));
    }

    #[test]
    fn relative_paths_are_read_from_the_file_directory() {
        let config = Path::new("/etc/scrip/issuer.toml");
        assert_eq!(
            relative_to(config, Path::new("op.key")),
            Path::new("/etc/scrip/op.key")
        );
        assert_eq!(relative_to(config, Path::new("/k")), Path::new("/k"));
        assert_eq!(
            relative_to(Path::new("issuer.toml"), Path::new("k")),
            Path::new("k")
        );
        assert_eq!(
            sqlite_relative_to(config, "sqlite://i.db?mode=rwc"),
            "sqlite:///etc/scrip/i.db?mode=rwc"
        );
        assert_eq!(
            sqlite_relative_to(config, "sqlite:///abs.db"),
            "sqlite:///abs.db"
        );
        assert_eq!(
            sqlite_relative_to(config, "sqlite::memory:"),
            "sqlite::memory:"
        );
        assert_eq!(
            sqlite_relative_to(config, "postgres://h/db"),
            "postgres://h/db"
        );
    }
}
