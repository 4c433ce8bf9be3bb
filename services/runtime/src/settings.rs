//! An optional settings file for the services: TOML with the same keys as the
//! flags (`nats-url` or `nats_url`), named by `--config <file>` or `SHOAL_CONFIG`.
//! A setting in the file counts only where neither the flag nor its environment
//! variable is given: flags win over the environment, which wins over the file.
//!
//! ```toml
//! nats-url = "nats://10.0.0.5:4222,nats://10.0.0.6:4222"
//! instance-id = "coordinator-1"
//! lease-ttl = "3s"
//! kv-replicas = 3
//! log-json = true
//! ```

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::{ArgAction, Command, Parser};

/// Why the settings file was not used.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("reading the settings file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the settings file {path} is not TOML: {source}")]
    Parse {
        path: PathBuf,
        #[source]
        source: Box<toml::de::Error>,
    },
    #[error(
        "the settings file {path} sets {key:?}, which is not a setting of {program}; the settings are its flags without the leading --, e.g. nats-url"
    )]
    Unknown {
        path: PathBuf,
        key: String,
        program: String,
    },
    #[error(
        "the settings file {path} sets {key:?} to a {kind}: give a string, number or true/false"
    )]
    Value {
        path: PathBuf,
        key: String,
        kind: &'static str,
    },
}

/// Parses `C` from the command line, the environment and the settings file, in that
/// order of precedence; exits with a message on bad input, as clap does.
pub fn parse<C: Parser>() -> C {
    let args: Vec<OsString> = std::env::args_os().collect();
    match with_file(&C::command(), args, |name| std::env::var_os(name).is_some()) {
        Ok(args) => C::parse_from(args),
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    }
}

/// `args` with the file's settings added where neither the flag (in `args`) nor its
/// environment variable (`env_set`) is given. Unchanged without a settings file.
pub fn with_file(
    command: &Command,
    args: Vec<OsString>,
    env_set: impl Fn(&str) -> bool,
) -> Result<Vec<OsString>, SettingsError> {
    let Some(path) = file_named(&args).or_else(|| std::env::var_os(ENV).map(PathBuf::from)) else {
        return Ok(args);
    };
    let text = std::fs::read_to_string(&path).map_err(|source| SettingsError::Read {
        path: path.clone(),
        source,
    })?;
    let table: toml::Table = text.parse().map_err(|source| SettingsError::Parse {
        path: path.clone(),
        source: Box::new(source),
    })?;
    let mut added = Vec::new();
    for (key, value) in table {
        let long = key.replace('_', "-");
        let Some(arg) = command
            .get_arguments()
            .find(|a| a.get_long() == Some(long.as_str()))
        else {
            return Err(SettingsError::Unknown {
                path,
                key,
                program: command.get_name().to_string(),
            });
        };
        let given = args.iter().any(|a| {
            let a = a.to_string_lossy();
            a == format!("--{long}") || a.starts_with(&format!("--{long}="))
        });
        let in_env = arg
            .get_env()
            .is_some_and(|name| env_set(&name.to_string_lossy()));
        if given || in_env {
            continue;
        }
        let text = match value {
            toml::Value::String(s) => s,
            toml::Value::Integer(n) => n.to_string(),
            toml::Value::Float(x) => x.to_string(),
            toml::Value::Boolean(b) if matches!(arg.get_action(), ArgAction::SetTrue) => {
                if b {
                    added.push(OsString::from(format!("--{long}")));
                }
                continue;
            }
            toml::Value::Boolean(b) => b.to_string(),
            other => {
                return Err(SettingsError::Value {
                    path,
                    key,
                    kind: other.type_str(),
                });
            }
        };
        added.push(OsString::from(format!("--{long}={text}")));
    }
    let mut all = args;
    let at = 1.min(all.len());
    all.splice(at..at, added);
    Ok(all)
}

/// The environment variable naming the settings file.
pub const ENV: &str = "SHOAL_CONFIG";

/// The file `--config` names in `args`, if any.
fn file_named(args: &[OsString]) -> Option<PathBuf> {
    let mut it = args.iter().map(|a| a.to_string_lossy().into_owned());
    while let Some(a) = it.next() {
        if a == "--config" {
            return it.next().map(PathBuf::from);
        }
        if let Some(p) = a.strip_prefix("--config=") {
            return Some(Path::new(p).to_path_buf());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use clap::CommandFactory;

    use super::*;

    #[derive(Parser, Debug)]
    #[command(name = "shoal-test")]
    struct Flags {
        #[command(flatten)]
        common: crate::CommonConfig,
        #[arg(long, env = "SHOAL_TEST_TTL", default_value = "3s", value_parser = humantime::parse_duration)]
        ttl: Duration,
        #[arg(long, env = "SHOAL_TEST_REPLICAS", default_value_t = 1)]
        replicas: usize,
    }

    fn parse(file: &str, args: &[&str], env: &[&str]) -> Result<Flags, SettingsError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("shoal.toml");
        std::fs::write(&path, file).unwrap();
        let mut all: Vec<OsString> = vec!["shoal-test".into(), "--config".into(), path.into()];
        all.extend(args.iter().map(OsString::from));
        let args = with_file(&Flags::command(), all, |name| env.contains(&name))?;
        Ok(Flags::parse_from(args))
    }

    #[test]
    fn the_file_fills_in_what_flags_and_environment_leave_out() {
        let file =
            "nats_url = \"nats://10.0.0.5:4222\"\nttl = \"5s\"\nreplicas = 3\nlog-json = true\n";
        let flags = parse(file, &[], &[]).unwrap();
        assert_eq!(flags.common.nats.nats_url, "nats://10.0.0.5:4222");
        assert_eq!(flags.ttl, Duration::from_secs(5));
        assert_eq!(flags.replicas, 3);
        assert!(flags.common.log_json);
        // A flag wins over the file; so does the environment (the file's value is
        // then not passed, and clap reads the variable).
        let flags = parse(file, &["--ttl", "7s", "--replicas=2"], &["SHOAL_NATS_URL"]).unwrap();
        assert_eq!(flags.ttl, Duration::from_secs(7));
        assert_eq!(flags.replicas, 2);
        assert_ne!(flags.common.nats.nats_url, "nats://10.0.0.5:4222");
    }

    #[test]
    fn unknown_settings_and_odd_values_are_refused_by_name() {
        let e = parse("nats_urll = \"x\"\n", &[], &[]).unwrap_err();
        assert!(e.to_string().contains("\"nats_urll\""), "{e}");
        assert!(e.to_string().contains("nats-url"), "{e}");
        let e = parse("ttl = [1, 2]\n", &[], &[]).unwrap_err();
        assert!(e.to_string().contains("array"), "{e}");
        let e = parse("ttl = \n", &[], &[]).unwrap_err();
        assert!(matches!(e, SettingsError::Parse { .. }), "{e}");
    }
}
