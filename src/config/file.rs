//! Reading one YAML configuration file into its type, one way for every
//! such file: the service configuration and the CLI's `--registry-config`.

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

/// Why a configuration file cannot be used; `what` names the kind of file
/// (`config file`), `path` the file.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("cannot read {what} {}: {source}", path.display())]
    Read {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{what} {}: {message}", path.display())]
    Parse {
        what: &'static str,
        path: PathBuf,
        message: String,
    },
}

/// Reads the YAML file at `path` as a `T`. An empty document (or one of
/// only comments) means `T::default()`. The parser's message names the
/// line and column but quotes none of the file: a configuration may hold
/// credentials, and these messages get logged.
pub fn read_yaml<T: DeserializeOwned + Default>(
    what: &'static str,
    path: &Path,
) -> Result<T, FileError> {
    let text = std::fs::read_to_string(path).map_err(|source| FileError::Read {
        what,
        path: path.to_path_buf(),
        source,
    })?;
    serde_saphyr::from_str::<Option<T>>(&text)
        .map(Option::unwrap_or_default)
        .map_err(|e| FileError::Parse {
            what,
            path: path.to_path_buf(),
            message: e.without_snippet().to_string(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Default, PartialEq, serde::Deserialize)]
    #[serde(default, deny_unknown_fields)]
    struct Doc {
        secret: String,
        count: u32,
    }

    #[test]
    fn empty_means_default_and_errors_name_the_file_but_quote_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let error = |path: &Path| read_yaml::<Doc>("test file", path).unwrap_err().to_string();
        let path = dir.path().join("c.yaml");
        std::fs::write(&path, "# only a comment\n").unwrap();
        assert_eq!(
            read_yaml::<Doc>("test file", &path).unwrap(),
            Doc::default()
        );

        std::fs::write(&path, "secret: hunter2hunter2\ncount: many\n").unwrap();
        let message = error(&path);
        let named = format!("test file {}: ", path.display());
        assert!(message.starts_with(&named), "{message}");
        assert!(message.contains("line 2"), "{message}");
        assert!(!message.contains("hunter2"), "{message}");

        let missing = dir.path().join("missing.yaml");
        let message = error(&missing);
        let named = format!("cannot read test file {}: ", missing.display());
        assert!(message.starts_with(&named), "{message}");
    }
}
