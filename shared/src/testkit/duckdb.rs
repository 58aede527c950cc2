//! DuckDB as a real reader in the test suite: the outputs are only worth having if query
//! engines read them as they are, so tests count records with DuckDB over the outputs and over
//! the sources, and compare.
//!
//! DuckDB comes as the `duckdb` Python package in the test tier's virtual environment
//! (`scripts/servers.sh`'s `install_servers` puts it there, next to the local servers), found at
//! `$COMPACTOR_VENV` or `~/.cache/s3-compactor/venv`. Its JSON, CSV and gzip readers are built
//! into the wheel: nothing is downloaded at run time. As with the servers, a bare `cargo test`
//! without it says `SKIPPED` loudly and passes; under CI (or with `COMPACTOR_REQUIRE_SERVERS`)
//! its absence fails the test.
//!
//! ```no_run
//! use compactor::testkit::duckdb::{duckdb, sql_list};
//! # let paths: Vec<std::path::PathBuf> = Vec::new();
//! if let Some(duckdb) = duckdb() {
//!     let sql = format!("select count(*) from read_json({}, format = 'newline_delimited')", sql_list(&paths));
//!     let records: u64 = duckdb.count(&sql).expect("DuckDB reads every output");
//! }
//! ```

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The variable naming the test tier's Python virtual environment.
pub const VENV_VARIABLE: &str = "COMPACTOR_VENV";

/// The query comes on stdin, not as an argument: a list of a few thousand paths is longer than
/// Linux lets one argument be (128 KiB). The answer is the first column of the first row.
/// The progress bar is off: DuckDB draws it on stdout, where the answer goes.
const RUNNER: &str = "import sys, duckdb
query = sys.stdin.read()
try:
    connection = duckdb.connect()
    connection.execute('SET enable_progress_bar = false')
    rows = connection.sql(query).fetchall()
except duckdb.Error as error:
    sys.stderr.write(str(error))
    sys.exit(3)
print('' if not rows or rows[0][0] is None else rows[0][0])
";

/// A DuckDB that tests can query.
#[derive(Debug, Clone)]
pub struct DuckDb {
    python: PathBuf,
}

/// The DuckDB of the test tier's virtual environment, or `None` (after a loud `SKIPPED` line)
/// when it is not installed. Panics under CI, where the test script must have installed it.
pub fn duckdb() -> Option<DuckDb> {
    let venv = std::env::var_os(VENV_VARIABLE)
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| Path::new(&home).join(".cache/s3-compactor/venv")));
    let python = venv.map(|venv| venv.join("bin/python"));
    let importable = python.as_ref().is_some_and(|python| {
        Command::new(python)
            .args(["-c", "import duckdb"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success())
    });
    let required = std::env::var_os("CI").is_some() || std::env::var_os("COMPACTOR_REQUIRE_SERVERS").is_some();
    match python {
        Some(python) if importable => Some(DuckDb { python }),
        _ if required => panic!(
            "DuckDB is not importable from the test venv ({VENV_VARIABLE}, or ~/.cache/s3-compactor/venv) but CI \
             is: the test script must run install_servers from scripts/servers.sh, which installs it"
        ),
        _ => {
            // Straight to stderr: the harness captures `eprintln!` of passing tests, and a skip
            // must be seen.
            let line = "SKIPPED: DuckDB is not installed in the test venv: run `source scripts/servers.sh && \
                        install_servers` (or set COMPACTOR_VENV) to run this reader test\n";
            let _ = std::io::stderr().write_all(line.as_bytes());
            None
        }
    }
}

impl DuckDb {
    /// Runs `sql`, which must select one integer, and returns it; `Err` holds DuckDB's own
    /// message (a reader that cannot parse an output says so there).
    pub fn count(&self, sql: &str) -> Result<u64, String> {
        let answer = self.query(sql)?;
        answer.trim().parse::<u64>().map_err(|_| format!("DuckDB answered {answer:?}, not a count, to: {sql}"))
    }

    /// Runs `sql` and returns the first column of its first row as text (empty for no row or
    /// NULL), or DuckDB's error message.
    pub fn query(&self, sql: &str) -> Result<String, String> {
        let mut child = Command::new(&self.python)
            .args(["-c", RUNNER])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|error| format!("cannot run {}: {error}", self.python.display()))?;
        child.stdin.take().expect("stdin is piped").write_all(sql.as_bytes()).map_err(|error| error.to_string())?;
        let output = child.wait_with_output().map_err(|error| error.to_string())?;
        if !output.status.success() {
            return Err(String::from_utf8_lossy(&output.stderr).into_owned());
        }
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
    }
}

/// `paths` as a DuckDB list literal of strings, for `read_json([...])` and `read_csv([...])`.
pub fn sql_list<P: AsRef<Path>>(paths: &[P]) -> String {
    let quoted: Vec<String> =
        paths.iter().map(|path| format!("'{}'", path.as_ref().to_string_lossy().replace('\'', "''"))).collect();
    format!("[{}]", quoted.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_quoted_as_sql_strings() {
        assert_eq!(sql_list(&["/a/b.json", "/a/it's.json"]), "['/a/b.json', '/a/it''s.json']");
    }

    #[test]
    fn duckdb_counts_and_reports_its_errors() {
        let Some(duckdb) = duckdb() else { return };
        assert_eq!(duckdb.count("select 41 + 1"), Ok(42));
        let error = duckdb.count("select * from read_json('/nonexistent/file.json')").unwrap_err();
        assert!(error.contains("No files found") || error.contains("nonexistent"), "{error}");
    }
}
