//! A small, strict parser of the Prometheus text exposition format (version 0.0.4), so that a
//! test fails on a scrape Prometheus would reject: every line is a `# HELP`, a `# TYPE` or a
//! sample; a family's `TYPE` comes once and before its samples, and its samples are grouped;
//! names and label names have the allowed characters; label values are quoted with the three
//! escapes; values are floats; no series appears twice; a histogram's buckets carry `le`, are
//! cumulative, end with `+Inf`, and `+Inf` equals `_count`.

use std::collections::{HashMap, HashSet};

/// One sample line.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

/// A parsed scrape.
#[derive(Debug, Clone, Default)]
pub struct Scrape {
    pub samples: Vec<Sample>,
    /// Family name to its `TYPE`.
    pub types: HashMap<String, String>,
}

impl Scrape {
    /// The value of the series `name` with exactly these labels.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let mut wanted: Vec<(&str, &str)> = labels.to_vec();
        wanted.sort_unstable();
        self.samples.iter().find_map(|sample| {
            let mut have: Vec<(&str, &str)> =
                sample.labels.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
            have.sort_unstable();
            (sample.name == name && have == wanted).then_some(sample.value)
        })
    }

    /// The sum of every series named `name`, whatever its labels (0 when there is none).
    pub fn sum(&self, name: &str) -> f64 {
        self.samples.iter().filter(|sample| sample.name == name).map(|sample| sample.value).sum()
    }

    /// The value of the unlabelled series `name`; panics when it is missing.
    pub fn get(&self, name: &str) -> f64 {
        self.value(name, &[]).unwrap_or_else(|| panic!("no series {name}"))
    }
}

fn is_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn is_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn parse_value(text: &str) -> Result<f64, String> {
    match text {
        "+Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        _ => text.parse().map_err(|_| format!("`{text}` is not a value")),
    }
}

/// Parses `name{labels} value [timestamp]`.
fn parse_sample(line: &str) -> Result<Sample, String> {
    let name_end = line.find(['{', ' ']).ok_or("a sample needs a value")?;
    let name = &line[..name_end];
    if !is_name(name) {
        return Err(format!("`{name}` is not a metric name"));
    }
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(after) = rest.strip_prefix('{') {
        rest = after;
        loop {
            if let Some(after) = rest.strip_prefix('}') {
                rest = after;
                break;
            }
            let eq = rest.find('=').ok_or("a label needs `=`")?;
            let label = &rest[..eq];
            if !is_label_name(label) {
                return Err(format!("`{label}` is not a label name"));
            }
            rest = rest[eq + 1..].strip_prefix('"').ok_or("a label value is quoted")?;
            let mut value = String::new();
            let mut chars = rest.char_indices();
            let end = loop {
                match chars.next().ok_or("an unterminated label value")? {
                    (i, '"') => break i,
                    (_, '\\') => match chars.next().ok_or("a dangling escape")?.1 {
                        '\\' => value.push('\\'),
                        '"' => value.push('"'),
                        'n' => value.push('\n'),
                        other => return Err(format!("the escape `\\{other}` is not allowed")),
                    },
                    (_, c) => value.push(c),
                }
            };
            labels.push((label.to_string(), value));
            rest = &rest[end + 1..];
            rest = rest.strip_prefix(',').unwrap_or(rest);
        }
    }
    let rest = rest.strip_prefix(' ').ok_or("a space before the value")?;
    let mut fields = rest.split(' ');
    let value = parse_value(fields.next().unwrap_or(""))?;
    if let Some(timestamp) = fields.next() {
        timestamp.parse::<i64>().map_err(|_| format!("`{timestamp}` is not a timestamp"))?;
    }
    if fields.next().is_some() {
        return Err("text after the timestamp".into());
    }
    Ok(Sample { name: name.to_string(), labels, value })
}

/// The family a sample belongs to, given the declared types.
fn family_of<'n>(name: &'n str, types: &HashMap<String, String>) -> &'n str {
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix) {
            if types.get(base).is_some_and(|kind| kind == "histogram" || kind == "summary") {
                return base;
            }
        }
    }
    name
}

/// Parses and checks a whole scrape.
pub fn parse(text: &str) -> Result<Scrape, String> {
    if !text.is_empty() && !text.ends_with('\n') {
        return Err("the last line has no line feed".into());
    }
    let mut scrape = Scrape::default();
    let mut helped = HashSet::new();
    let mut finished_families: HashSet<String> = HashSet::new();
    let mut current_family: Option<String> = None;
    let mut seen_series = HashSet::new();
    for (number, line) in text.lines().enumerate() {
        let fail = |message: String| format!("line {}: {message}: {line:?}", number + 1);
        if let Some(comment) = line.strip_prefix('#') {
            let mut words = comment.trim_start().splitn(3, ' ');
            let (keyword, name) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
            match keyword {
                "HELP" | "TYPE" if !is_name(name) => return Err(fail("a bad name".into())),
                "HELP" => {
                    if !helped.insert(name.to_string()) {
                        return Err(fail("a second HELP".into()));
                    }
                }
                "TYPE" => {
                    let kind = words.next().unwrap_or("");
                    if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind) {
                        return Err(fail(format!("`{kind}` is not a type")));
                    }
                    if scrape.types.insert(name.to_string(), kind.to_string()).is_some() {
                        return Err(fail("a second TYPE".into()));
                    }
                    if finished_families.contains(name) || current_family.as_deref() == Some(name) {
                        return Err(fail("TYPE after the family's samples".into()));
                    }
                }
                _ => {} // Any other comment is allowed.
            }
            continue;
        }
        if line.trim().is_empty() {
            continue;
        }
        let sample = parse_sample(line).map_err(fail)?;
        let family = family_of(&sample.name, &scrape.types).to_string();
        if current_family.as_deref() != Some(family.as_str()) {
            if finished_families.contains(&family) {
                return Err(fail(format!("the samples of {family} are not grouped")));
            }
            if let Some(previous) = current_family.replace(family.clone()) {
                finished_families.insert(previous);
            }
        }
        let mut key = sample.labels.clone();
        key.sort();
        if !seen_series.insert((sample.name.clone(), key)) {
            return Err(fail("a series seen twice".into()));
        }
        scrape.samples.push(sample);
    }
    check_histograms(&scrape)?;
    Ok(scrape)
}

fn check_histograms(scrape: &Scrape) -> Result<(), String> {
    for (family, kind) in &scrape.types {
        if kind != "histogram" {
            continue;
        }
        let bucket_name = format!("{family}_bucket");
        let mut buckets: Vec<(f64, f64)> = Vec::new();
        for sample in scrape.samples.iter().filter(|sample| sample.name == bucket_name) {
            let le = sample.labels.iter().find(|(name, _)| name == "le");
            let le = le.ok_or_else(|| format!("{family}: a bucket without le"))?;
            buckets.push((parse_value(&le.1)?, sample.value));
        }
        if buckets.is_empty() {
            return Err(format!("{family}: no buckets"));
        }
        let ordered =
            buckets.windows(2).all(|pair| pair[0].0 < pair[1].0 && pair[0].1 <= pair[1].1);
        if !ordered {
            return Err(format!("{family}: buckets not cumulative in increasing le: {buckets:?}"));
        }
        let (last_le, last_count) = buckets[buckets.len() - 1];
        if last_le != f64::INFINITY {
            return Err(format!("{family}: no +Inf bucket"));
        }
        let count = scrape.value(&format!("{family}_count"), &[]);
        if count != Some(last_count) || scrape.value(&format!("{family}_sum"), &[]).is_none() {
            return Err(format!(
                "{family}: _count {count:?} is not +Inf ({last_count}) or no _sum"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_valid_scrape_parses_and_malformed_ones_are_refused() {
        let text =
            "# HELP a_total A.\n# TYPE a_total counter\na_total{code=\"200\",x=\"q\\\"\"} 3\n\
                    # TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 2\nh_sum 4.5\n\
                    h_count 2\n";
        let scrape = parse(text).unwrap();
        assert_eq!(scrape.value("a_total", &[("x", "q\""), ("code", "200")]), Some(3.0));
        assert_eq!(scrape.get("h_count"), 2.0);
        for bad in [
            "a 1",                                                               // no line feed
            "a{b=c} 1\n",                                                        // unquoted
            "1a 1\n",                                                            // bad name
            "a 1\na 2\n",                                                        // twice
            "a 1\nb 1\na{x=\"1\"} 1\n",                                          // not grouped
            "# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_count 1\nh_sum 1\n",    // no +Inf
            "# TYPE h histogram\nh_bucket{le=\"+Inf\"} 2\nh_sum 1\nh_count 1\n", // count
            "a 1\n# TYPE a counter\n",                                           // TYPE late
            "a x\n",                                                             // value
        ] {
            assert!(parse(bad).is_err(), "accepted {bad:?}");
        }
    }
}
