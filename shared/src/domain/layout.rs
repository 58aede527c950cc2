//! Date layouts inside object keys.
//!
//! A layout is a run of `/`-separated segment templates made of literal text and the fields
//! `%Y` (4-digit year), `%m` (2-digit month), `%d` (2-digit day) and `%H` (2-digit hour), e.g.
//! `%Y/%m/%d`, `%Y/%m/%d/%H`, `year=%Y/month=%m/day=%d/hour=%H` or `dt=%Y-%m-%d`. The layout
//! may be preceded by any number of prefix segments (`AWSLogs/123456789012/CloudTrail/eu-west-1/`)
//! and is followed by at least a file name. The leftmost run of directory segments that matches
//! is the date; the key's partition is everything up to and including the segment that holds the
//! finest field of the configured [`Granularity`].

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use serde::{Deserialize, Serialize};

use super::partition::{Partition, Period};

/// How long a partition's period lasts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Granularity {
    Day,
    Hour,
}

impl fmt::Display for Granularity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Granularity::Day => "day",
            Granularity::Hour => "hour",
        })
    }
}

impl FromStr for Granularity {
    type Err = LayoutError;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.to_ascii_lowercase().as_str() {
            "day" | "daily" => Ok(Granularity::Day),
            "hour" | "hourly" => Ok(Granularity::Hour),
            other => Err(LayoutError::Granularity(other.to_string())),
        }
    }
}

/// A layout that does not parse, or cannot give the asked granularity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LayoutError {
    #[error("layout {layout:?} is empty: give date segments such as %Y/%m/%d")]
    Empty { layout: String },
    #[error("layout {layout:?} has an unknown field %{field}: use %Y, %m, %d and %H")]
    UnknownField { layout: String, field: char },
    #[error("layout {layout:?} has the field %{field} twice")]
    RepeatedField { layout: String, field: char },
    #[error("layout {layout:?} lacks %{field}: a layout needs at least %Y, %m and %d")]
    MissingField { layout: String, field: char },
    #[error("layout {layout:?} has an empty segment (a doubled or trailing '/')")]
    EmptySegment { layout: String },
    #[error("layout {layout:?} has no %H, so it cannot give hourly partitions: use granularity day")]
    NoHour { layout: String },
    #[error(
        "layout {layout:?} keeps the day and the hour in one segment, so daily partitions would \
         have no directory of their own: use granularity hour, or put %H in its own segment"
    )]
    DayAndHourShareSegment { layout: String },
    #[error("granularity {0:?} is not known: use day or hour")]
    Granularity(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Year,
    Month,
    Day,
    Hour,
}

impl Field {
    fn digits(self) -> usize {
        match self {
            Field::Year => 4,
            _ => 2,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Literal(String),
    Field(Field),
}

/// A parsed date layout with the granularity it partitions by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    text: String,
    segments: Vec<Vec<Piece>>,
    granularity: Granularity,
    /// How many of the layout's segments belong to the partition path.
    partition_segments: usize,
}

/// Why a key has no partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutOfLayout;

impl Layout {
    /// Parses `text`; `granularity` defaults to the finest field the layout has.
    pub fn parse(text: &str, granularity: Option<Granularity>) -> Result<Layout, LayoutError> {
        let trimmed = text.trim().trim_matches('/');
        if trimmed.is_empty() {
            return Err(LayoutError::Empty { layout: text.to_string() });
        }
        let mut segments = Vec::new();
        let mut seen: Vec<(Field, usize)> = Vec::new();
        for (segment_index, raw_segment) in trimmed.split('/').enumerate() {
            if raw_segment.is_empty() {
                return Err(LayoutError::EmptySegment { layout: text.to_string() });
            }
            let mut pieces = Vec::new();
            let mut literal = String::new();
            let mut chars = raw_segment.chars();
            while let Some(character) = chars.next() {
                if character != '%' {
                    literal.push(character);
                    continue;
                }
                let field = match chars.next() {
                    Some('Y') => Field::Year,
                    Some('m') => Field::Month,
                    Some('d') => Field::Day,
                    Some('H') => Field::Hour,
                    Some('%') => {
                        literal.push('%');
                        continue;
                    }
                    other => {
                        return Err(LayoutError::UnknownField { layout: text.to_string(), field: other.unwrap_or(' ') })
                    }
                };
                if seen.iter().any(|(known, _)| *known == field) {
                    return Err(LayoutError::RepeatedField { layout: text.to_string(), field: field_char(field) });
                }
                seen.push((field, segment_index));
                if !literal.is_empty() {
                    pieces.push(Piece::Literal(std::mem::take(&mut literal)));
                }
                pieces.push(Piece::Field(field));
            }
            if !literal.is_empty() {
                pieces.push(Piece::Literal(literal));
            }
            segments.push(pieces);
        }
        for required in [Field::Year, Field::Month, Field::Day] {
            if !seen.iter().any(|(field, _)| *field == required) {
                return Err(LayoutError::MissingField { layout: text.to_string(), field: field_char(required) });
            }
        }
        let segment_of = |wanted: Field| seen.iter().find(|(field, _)| *field == wanted).map(|(_, index)| *index);
        let hour_segment = segment_of(Field::Hour);
        let granularity =
            granularity.unwrap_or(if hour_segment.is_some() { Granularity::Hour } else { Granularity::Day });
        let date_segment = [Field::Year, Field::Month, Field::Day]
            .into_iter()
            .filter_map(segment_of)
            .max()
            .expect("year, month and day were checked above");
        let partition_segments = match (granularity, hour_segment) {
            (Granularity::Hour, None) => return Err(LayoutError::NoHour { layout: text.to_string() }),
            (Granularity::Hour, Some(hour)) => hour.max(date_segment) + 1,
            (Granularity::Day, Some(hour)) if hour <= date_segment => {
                return Err(LayoutError::DayAndHourShareSegment { layout: text.to_string() })
            }
            (Granularity::Day, _) => date_segment + 1,
        };
        Ok(Layout { text: trimmed.to_string(), segments, granularity, partition_segments })
    }

    pub fn granularity(&self) -> Granularity {
        self.granularity
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The partition a key belongs to, or [`OutOfLayout`] if no run of its directory segments
    /// matches the layout with a real calendar date.
    pub fn partition_of(&self, key: &str) -> Result<Partition, OutOfLayout> {
        let directories: Vec<&str> = match key.rsplit_once('/') {
            Some((directories, file_name)) if !file_name.is_empty() => directories.split('/').collect(),
            _ => return Err(OutOfLayout),
        };
        let width = self.segments.len();
        if directories.len() < width {
            return Err(OutOfLayout);
        }
        for start in 0..=directories.len() - width {
            let mut fields = DateFields::default();
            let window = &directories[start..start + width];
            if !window.iter().zip(&self.segments).all(|(segment, pieces)| match_segment(segment, pieces, &mut fields)) {
                continue;
            }
            let Some(period) = fields.period(self.granularity) else { continue };
            let path_segments = &directories[..start + self.partition_segments];
            let mut path = path_segments.join("/");
            path.push('/');
            return Ok(Partition { path, period });
        }
        Err(OutOfLayout)
    }
}

impl fmt::Display for Layout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

fn field_char(field: Field) -> char {
    match field {
        Field::Year => 'Y',
        Field::Month => 'm',
        Field::Day => 'd',
        Field::Hour => 'H',
    }
}

#[derive(Debug, Default)]
struct DateFields {
    year: Option<i32>,
    month: Option<u32>,
    day: Option<u32>,
    hour: Option<u32>,
}

impl DateFields {
    fn period(&self, granularity: Granularity) -> Option<Period> {
        let date = NaiveDate::from_ymd_opt(self.year?, self.month?, self.day?)?;
        let (hour, length) = match granularity {
            Granularity::Day => (0, chrono::Duration::days(1)),
            Granularity::Hour => (self.hour?, chrono::Duration::hours(1)),
        };
        let start: DateTime<Utc> = Utc.from_utc_datetime(&date.and_hms_opt(hour, 0, 0)?);
        Some(Period { start, end: start + length })
    }
}

fn match_segment(segment: &str, pieces: &[Piece], fields: &mut DateFields) -> bool {
    let mut rest = segment;
    for piece in pieces {
        match piece {
            Piece::Literal(literal) => match rest.strip_prefix(literal.as_str()) {
                Some(after) => rest = after,
                None => return false,
            },
            Piece::Field(field) => {
                let digits = field.digits();
                if rest.len() < digits || !rest.as_bytes()[..digits].iter().all(u8::is_ascii_digit) {
                    return false;
                }
                let value: u32 = rest[..digits].parse().expect("checked to be ascii digits");
                rest = &rest[digits..];
                match field {
                    Field::Year => fields.year = Some(value as i32),
                    Field::Month => fields.month = Some(value),
                    Field::Day => fields.day = Some(value),
                    Field::Hour if value < 24 => fields.hour = Some(value),
                    Field::Hour => return false,
                }
            }
        }
    }
    rest.is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(text: &str) -> DateTime<Utc> {
        let date = NaiveDate::parse_from_str(text, "%Y-%m-%d").unwrap();
        Utc.from_utc_datetime(&date.and_hms_opt(0, 0, 0).unwrap())
    }

    /// Real key shapes: (layout, granularity, key, expected partition path, period start).
    #[test]
    fn real_key_shapes_map_to_their_partition() {
        let cases: &[(&str, Option<Granularity>, &str, &str, &str)] = &[
            (
                "%Y/%m/%d",
                None,
                "AWSLogs/123456789012/CloudTrail/eu-west-1/2024/01/14/123456789012_CloudTrail_eu-west-1_20240114T0005Z_abc.json.gz",
                "AWSLogs/123456789012/CloudTrail/eu-west-1/2024/01/14/",
                "2024-01-14T00:00:00Z",
            ),
            (
                "%Y/%m/%d",
                None,
                "alb/AWSLogs/123456789012/elasticloadbalancing/us-east-1/2024/02/29/123456789012_elasticloadbalancing_us-east-1_app.my-lb.1_20240229T2355Z_10.0.0.1_x.log.gz",
                "alb/AWSLogs/123456789012/elasticloadbalancing/us-east-1/2024/02/29/",
                "2024-02-29T00:00:00Z",
            ),
            (
                "%Y/%m/%d/%H",
                None,
                "firehose/2024/01/14/05/stream-1-2024-01-14-05-00-00-uuid",
                "firehose/2024/01/14/05/",
                "2024-01-14T05:00:00Z",
            ),
            (
                "%Y/%m/%d/%H",
                Some(Granularity::Day),
                "firehose/2024/01/14/05/stream-1",
                "firehose/2024/01/14/",
                "2024-01-14T00:00:00Z",
            ),
            (
                "year=%Y/month=%m/day=%d",
                None,
                "lake/events/year=2023/month=12/day=31/part-0001.json",
                "lake/events/year=2023/month=12/day=31/",
                "2023-12-31T00:00:00Z",
            ),
            (
                "year=%Y/month=%m/day=%d/hour=%H",
                None,
                "year=2024/month=01/day=14/hour=23/x.ndjson",
                "year=2024/month=01/day=14/hour=23/",
                "2024-01-14T23:00:00Z",
            ),
            ("dt=%Y-%m-%d", None, "app/dt=2024-03-01/host a/my file+x é.log", "app/dt=2024-03-01/", "2024-03-01T00:00:00Z"),
            ("%Y/%m/%d", None, "logs/2024/01/14/my file+x é.json", "logs/2024/01/14/", "2024-01-14T00:00:00Z"),
            ("%Y/%m/%d", None, "2024/01/14/a/b/c.json", "2024/01/14/", "2024-01-14T00:00:00Z"),
            ("%Y/%m/%d", None, "日本/2024/01/14/データ.json", "日本/2024/01/14/", "2024-01-14T00:00:00Z"),
        ];
        for (layout_text, granularity, key, path, start) in cases {
            let layout = Layout::parse(layout_text, *granularity).unwrap();
            let partition = layout.partition_of(key).unwrap_or_else(|_| panic!("{key} should match {layout_text}"));
            assert_eq!(partition.path, *path, "key {key}");
            assert_eq!(
                partition.period.start,
                DateTime::parse_from_rfc3339(start).unwrap().with_timezone(&Utc),
                "key {key}"
            );
        }
    }

    #[test]
    fn keys_outside_the_layout_are_rejected() {
        let daily = Layout::parse("%Y/%m/%d", None).unwrap();
        for key in [
            "logs/2024/01/14/",           // folder marker: no file name
            "logs/2024/01/14",            // the date is the file name, not a directory
            "logs/2024/01/file.json",     // no day
            "logs/2024/13/01/file.json",  // month 13
            "logs/2023/02/29/file.json",  // not a leap year
            "logs/24/01/14/file.json",    // two-digit year
            "logs/2024/1/14/file.json",   // one-digit month
            "logs/2024/01/14x/file.json", // trailing text in the day
            "file.json",                  // no directories at all
            "",
        ] {
            assert_eq!(daily.partition_of(key), Err(OutOfLayout), "{key:?} should be out of layout");
        }
        let hourly = Layout::parse("%Y/%m/%d/%H", None).unwrap();
        assert_eq!(hourly.partition_of("f/2024/01/14/24/x"), Err(OutOfLayout), "hour 24");
        assert_eq!(hourly.partition_of("f/2024/01/14/x"), Err(OutOfLayout), "no hour");
        let hive = Layout::parse("year=%Y/month=%m/day=%d", None).unwrap();
        assert_eq!(hive.partition_of("year=2024/month=01/x.json"), Err(OutOfLayout));
        assert_eq!(hive.partition_of("2024/01/14/x.json"), Err(OutOfLayout));
    }

    #[test]
    fn leftmost_matching_run_wins_and_later_dates_stay_in_the_key() {
        let layout = Layout::parse("%Y/%m/%d", None).unwrap();
        let partition = layout.partition_of("a/2024/01/14/2024/01/15/x").unwrap();
        assert_eq!(partition.path, "a/2024/01/14/");
        assert_eq!(partition.period.start, day("2024-01-14"));
        assert_eq!(partition.period.end, day("2024-01-15"));
    }

    #[test]
    fn bad_layouts_say_what_is_wrong() {
        assert!(matches!(Layout::parse("", None), Err(LayoutError::Empty { .. })));
        assert!(matches!(Layout::parse("%Y/%m", None), Err(LayoutError::MissingField { field: 'd', .. })));
        assert!(matches!(Layout::parse("%Y/%m/%d/%M", None), Err(LayoutError::UnknownField { field: 'M', .. })));
        assert!(matches!(Layout::parse("%Y/%m/%d/%d", None), Err(LayoutError::RepeatedField { .. })));
        assert!(matches!(Layout::parse("%Y//%m/%d", None), Err(LayoutError::EmptySegment { .. })));
        assert!(matches!(Layout::parse("%Y/%m/%d", Some(Granularity::Hour)), Err(LayoutError::NoHour { .. })));
        assert!(matches!(
            Layout::parse("dt=%Y-%m-%d-%H", Some(Granularity::Day)),
            Err(LayoutError::DayAndHourShareSegment { .. })
        ));
        let message = Layout::parse("%Y/%m/%d/%M", None).unwrap_err().to_string();
        assert!(message.contains("use %Y, %m, %d and %H"), "{message}");
    }

    #[test]
    fn granularity_defaults_to_the_finest_field() {
        assert_eq!(Layout::parse("%Y/%m/%d", None).unwrap().granularity(), Granularity::Day);
        assert_eq!(Layout::parse("/%Y/%m/%d/%H/", None).unwrap().granularity(), Granularity::Hour);
        assert_eq!("Hourly".parse::<Granularity>().unwrap(), Granularity::Hour);
    }
}
