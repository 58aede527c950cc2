//! CSV with one header per output: a source's first line is its header; the output starts with
//! the header of its first source, and each source's range is the rest of it (its rows).
//!
//! So `restore` rebuilds a source byte for byte as the output's first `size - length` bytes
//! (its header, identical by construction) followed by its range. A source whose header
//! differs from its output's (other columns, a BOM, `\r\n`) is not put in that output: it
//! stays pending and goes into an output of its own header at the next seal, never mixed into
//! another schema. Headers are compared as bytes: no CSV parsing is needed to split a file at
//! its first line end, since a header of quoted names with line breaks inside is not something
//! query engines read either.

/// A CSV source split at its first line end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CsvParts<'a> {
    /// The first line, with its `\n` (and a BOM, if the file has one).
    pub header: &'a [u8],
    /// The rows: everything after the header.
    pub rows: &'a [u8],
}

/// Why a source cannot be joined as CSV.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotCsv(pub String);

impl std::fmt::Display for NotCsv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Splits `bytes` into header and rows; `None` for an empty source (no header, no rows).
pub fn split(bytes: &[u8]) -> Result<Option<CsvParts<'_>>, NotCsv> {
    if bytes.is_empty() {
        return Ok(None);
    }
    match memchr_newline(bytes) {
        Some(end) => Ok(Some(CsvParts { header: &bytes[..=end], rows: &bytes[end + 1..] })),
        None => Err(NotCsv(
            "a CSV file of one line without a line end: only a header, which cannot be joined to an output's \
             without changing it"
                .into(),
        )),
    }
}

fn memchr_newline(bytes: &[u8]) -> Option<usize> {
    bytes.iter().position(|byte| *byte == b'\n')
}

/// The header's length in a source of `source_size` bytes whose rows take `range_length`
/// bytes of a CSV output: what restore reads from the output's start.
pub fn header_length(source_size: u64, range_length: u64) -> u64 {
    source_size.saturating_sub(range_length)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_source_splits_at_its_first_line_end_keeping_a_bom_and_crlf_in_its_header() {
        let parts = split(b"a,b\n1,2\n3,4").unwrap().unwrap();
        assert_eq!((parts.header, parts.rows), (&b"a,b\n"[..], &b"1,2\n3,4"[..]));
        let bom = split("\u{feff}a,b\r\n1,2\r\n".as_bytes()).unwrap().unwrap();
        assert_eq!(bom.header, "\u{feff}a,b\r\n".as_bytes());
        assert_ne!(bom.header, parts.header, "a BOM or CRLF makes another header");
        assert_eq!(split(b"a,b\n").unwrap().unwrap().rows, b"");
        assert_eq!(split(b"").unwrap(), None);
        assert!(split(b"a,b").unwrap_err().0.contains("without a line end"));
        assert_eq!(header_length(12, 8), 4);
    }
}
