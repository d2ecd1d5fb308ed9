//! Where a fleet learns its databases: [`DatabaseSource`], the databases file
//! ([`FileSource`], [`parse_databases`]) and what each entry says
//! ([`DatabaseEntry`]).

use std::collections::HashSet;
use std::future::Future;
use std::path::{Path, PathBuf};

use crate::database_url::DatabaseUrl;
use crate::error::{Error, Result};
use crate::tables::Tables;

/// The longest database name: it labels metrics and names the database in the CLI.
pub const MAX_DATABASE_NAME_LEN: usize = 63;

/// One database a fleet serves: the name it goes by (in metrics, logs, health and the
/// CLI; never the URL), its URL, and its outbox's table names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatabaseEntry {
    name: String,
    url: DatabaseUrl,
    tables: Tables,
}

impl DatabaseEntry {
    /// The database `name` at `url`, with the default table names.
    ///
    /// # Errors
    /// [`Error::Databases`] when the name is empty, longer than
    /// [`MAX_DATABASE_NAME_LEN`], or holds other characters than ASCII letters, digits,
    /// `_`, `-` and `.`; or when the URL is not a PostgreSQL, MySQL/MariaDB or SQLite
    /// one.
    pub fn new(name: impl Into<String>, url: impl Into<DatabaseUrl>) -> Result<Self> {
        let name = name.into();
        let url = url.into();
        let invalid = |reason: String| Error::Databases {
            origin: "entry".to_owned(),
            line: None,
            reason,
        };
        if name.is_empty()
            || name.len() > MAX_DATABASE_NAME_LEN
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
        {
            return Err(invalid(format!(
                "the name {name:?} is not 1 to {MAX_DATABASE_NAME_LEN} ASCII letters, digits, `_`, `-` or `.`"
            )));
        }
        let scheme = url.as_str().split(':').next().unwrap_or_default();
        if !matches!(
            scheme,
            "postgres" | "postgresql" | "mysql" | "mariadb" | "sqlite"
        ) {
            return Err(invalid(format!(
                "the URL of {name} is not a postgres://, mysql:// or sqlite: one (it starts {scheme:?})"
            )));
        }
        Ok(DatabaseEntry {
            name,
            url,
            tables: Tables::default(),
        })
    }

    /// The same database with the outbox tables `tables`.
    pub fn with_tables(mut self, tables: Tables) -> Self {
        self.tables = tables;
        self
    }

    /// The name it goes by.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its URL (its `Debug` output hides the password).
    pub fn url(&self) -> &DatabaseUrl {
        &self.url
    }

    /// Its outbox's table names.
    pub fn tables(&self) -> &Tables {
        &self.tables
    }
}

/// Where a fleet learns which databases to serve; asked again every
/// [`FleetConfig::refresh`](super::FleetConfig::refresh), so the set can change while
/// the fleet runs. [`FileSource`] reads a file; implement it for other places, for
/// example a query against a catalog database that lists the tenants.
pub trait DatabaseSource: Send + Sync + 'static {
    /// Every database to serve now. Names must be distinct.
    ///
    /// # Errors
    /// When the list cannot be read; the fleet keeps serving the last list it read,
    /// and says so in its health.
    fn databases(&self) -> impl Future<Output = Result<Vec<DatabaseEntry>>> + Send;
}

/// A fixed list: the databases given, always.
impl DatabaseSource for Vec<DatabaseEntry> {
    async fn databases(&self) -> Result<Vec<DatabaseEntry>> {
        Ok(self.clone())
    }
}

/// The databases file: one database a line, `NAME URL`, optionally followed by
/// `tables=BASE` (the base name of its outbox tables, see [`Tables::with_base`]);
/// blank lines and lines starting with `#` are skipped. Read again at every refresh,
/// so an edit is served within one; a SIGHUP to `outbox relay` reads it at once.
///
/// ```text
/// # name      url                                          options
/// tenant-a    postgres://relay@pg-1:5432/tenant_a
/// tenant-b    postgres://relay@pg-2:5432/tenant_b           tables=billing_outbox
/// legacy      mysql://relay@maria:3306/legacy
/// ```
#[derive(Debug, Clone)]
pub struct FileSource {
    path: PathBuf,
}

impl FileSource {
    /// The databases file at `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        FileSource { path: path.into() }
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl DatabaseSource for FileSource {
    async fn databases(&self) -> Result<Vec<DatabaseEntry>> {
        let origin = self.path.display().to_string();
        let text = tokio::fs::read_to_string(&self.path)
            .await
            .map_err(|error| Error::Databases {
                origin: origin.clone(),
                line: None,
                reason: format!("cannot read it: {error}"),
            })?;
        parse_databases(&origin, &text)
    }
}

/// Reads a databases file's `text` ([`FileSource`]'s format); `origin` names it in
/// errors.
///
/// # Errors
/// [`Error::Databases`] naming the first line that is not an entry, an entry whose
/// name or URL is refused ([`DatabaseEntry::new`]), an unknown option, or a name
/// given twice. The URL's password never appears in the error.
pub fn parse_databases(origin: &str, text: &str) -> Result<Vec<DatabaseEntry>> {
    let mut entries: Vec<DatabaseEntry> = Vec::new();
    let mut names = HashSet::new();
    for (index, line) in text.lines().enumerate() {
        let line_number = index + 1;
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let error = |reason: String| Error::Databases {
            origin: origin.to_owned(),
            line: Some(line_number),
            reason,
        };
        let mut words = line.split_whitespace();
        let (Some(name), Some(url)) = (words.next(), words.next()) else {
            return Err(error("expected `NAME URL [tables=BASE]`".to_owned()));
        };
        let mut entry = DatabaseEntry::new(name, url).map_err(|refused| match refused {
            Error::Databases { reason, .. } => error(reason),
            other => other,
        })?;
        for option in words {
            match option.split_once('=') {
                Some(("tables", base)) => {
                    let tables = Tables::with_base(base)
                        .map_err(|refused| error(format!("tables={base}: {refused}")))?;
                    entry = entry.with_tables(tables);
                }
                _ => {
                    return Err(error(format!(
                        "unknown option {option:?}: the only one is tables=BASE"
                    )));
                }
            }
        }
        if !names.insert(entry.name.clone()) {
            return Err(error(format!("{name} is named twice")));
        }
        entries.push(entry);
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_comments_and_options_are_read() {
        let text = "# tenants\n\n  a  postgres://relay:s3cret@pg/a\nb sqlite://b.db tables=billing_outbox\n   # c\nc mysql://root@maria/c\n";
        let entries = parse_databases("dbs.txt", text).expect("a valid file");
        let names: Vec<&str> = entries.iter().map(DatabaseEntry::name).collect();
        assert_eq!(names, ["a", "b", "c"]);
        assert_eq!(entries[0].url().as_str(), "postgres://relay:s3cret@pg/a");
        assert_eq!(
            entries[1].tables(),
            &Tables::with_base("billing_outbox").expect("tables")
        );
        assert_eq!(entries[2].tables(), &Tables::default());
        assert!(
            !format!("{entries:?}").contains("s3cret"),
            "no password in Debug"
        );
    }

    #[test]
    fn a_wrong_line_is_named_and_its_password_is_not_shown() {
        let cases = [
            ("a\n", 1, "expected `NAME URL"),
            (
                "a postgres://x/a\nb http://x:s3cret@h/b\n",
                2,
                "postgres://, mysql:// or sqlite:",
            ),
            (
                "a postgres://x/a\na postgres://x:s3cret@h/a2\n",
                2,
                "named twice",
            ),
            ("tenant/1 postgres://x:s3cret@h/a\n", 1, "ASCII letters"),
            (
                "a postgres://x:s3cret@h/a shards=4\n",
                1,
                "unknown option \"shards=4\"",
            ),
            ("a postgres://x:s3cret@h/a tables=\n", 1, "tables="),
        ];
        for (text, line, expected) in cases {
            let error = parse_databases("dbs.txt", text)
                .expect_err(text)
                .to_string();
            assert!(error.contains(&format!("dbs.txt line {line}")), "{error}");
            assert!(error.contains(expected), "{text:?}: {error}");
            assert!(!error.contains("s3cret"), "{error}");
        }
    }
}
