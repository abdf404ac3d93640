//! A CSV of recipients turned into jobs (`herald enqueue --csv`): which column holds what, a
//! first pass that checks every row and counts them, and a second that builds jobs of up to
//! `job_size` recipients, each checked with [`Job::parse`] before it is handed out. Pure: no
//! broker, so it is tested on strings.

use std::io::Read;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use crate::domain::job::MAX_RECIPIENTS;
use crate::domain::{CampaignId, Category, IdempotencyKey, Job, SenderId};

/// A job ready to publish.
#[derive(Debug, Clone)]
pub struct BuiltJob {
    pub id: String,
    pub sender: String,
    pub body: Vec<u8>,
    pub recipients: usize,
}

/// What a CSV turns into: every job-level field, checked once.
#[derive(Debug, Clone)]
pub struct CsvSpec {
    pub campaign: CampaignId,
    pub sender: SenderId,
    pub template: String,
    pub language: String,
    pub category: Category,
    pub components: Vec<Value>,
    pub job_size: usize,
    pub job_prefix: String,
    pub not_before: Option<DateTime<Utc>>,
    pub expires_at: Option<DateTime<Utc>>,
}

/// Which CSV column holds what.
#[derive(Debug, Clone)]
struct Columns {
    to: usize,
    key: Option<usize>,
    /// `param1`, `param2`, … in order.
    params: Vec<usize>,
}

impl Columns {
    fn from_headers(headers: &csv::StringRecord) -> Result<Self, String> {
        let find = |name: &str| {
            headers
                .iter()
                .position(|h| h.trim().eq_ignore_ascii_case(name))
        };
        let to = find("to")
            .or_else(|| find("phone"))
            .ok_or("the CSV needs a `to` (or `phone`) column")?;
        let mut numbered: Vec<(usize, usize)> = Vec::new();
        for (i, h) in headers.iter().enumerate() {
            let h = h.trim().to_ascii_lowercase();
            if let Some(n) = h
                .strip_prefix("param")
                .and_then(|n| n.parse::<usize>().ok())
            {
                numbered.push((n, i));
            }
        }
        numbered.sort_unstable();
        for (expected, (n, _)) in (1..).zip(&numbered) {
            if *n != expected {
                return Err(format!(
                    "parameter columns must be param1, param2, … without gaps; param{expected} is missing"
                ));
            }
        }
        Ok(Self {
            to,
            key: find("key"),
            params: numbered.into_iter().map(|(_, i)| i).collect(),
        })
    }

    /// One recipient of the job format from a row, or why the row is unusable. `line` is
    /// 1-based as in an editor (the header is line 1).
    fn recipient(&self, row: &csv::StringRecord, line: u64) -> Result<Value, String> {
        let cell = |i: usize| row.get(i).unwrap_or("").trim();
        let mut r = serde_json::Map::new();
        r.insert("to".into(), Value::String(cell(self.to).to_owned()));
        if let Some(k) = self.key {
            let key = cell(k);
            if !key.is_empty() {
                IdempotencyKey::parse(key).map_err(|e| format!("line {line}: key {e}"))?;
                r.insert("key".into(), Value::String(key.to_owned()));
            }
        }
        let values: Vec<&str> = self.params.iter().map(|&i| cell(i)).collect();
        // Trailing empty parameters are absent ones (a shorter template); a gap is a mistake
        // Meta would reject for this recipient, so it is refused here with its line.
        let used = values
            .iter()
            .rposition(|v| !v.is_empty())
            .map_or(0, |p| p + 1);
        if let Some(gap) = values[..used].iter().position(|v| v.is_empty()) {
            return Err(format!(
                "line {line}: param{} is empty but a later parameter is set",
                gap + 1
            ));
        }
        if used > 0 {
            let parameters: Vec<Value> = values[..used]
                .iter()
                .map(|v| json!({ "type": "text", "text": v }))
                .collect();
            r.insert(
                "components".into(),
                json!([{ "type": "body", "parameters": parameters }]),
            );
        }
        Ok(Value::Object(r))
    }
}

/// First pass: checks every row and counts them. Returns the number of recipients.
pub fn check_csv<R: Read>(reader: R) -> Result<u64, String> {
    let mut rdr = csv_reader(reader);
    let cols = Columns::from_headers(rdr.headers().map_err(|e| e.to_string())?)?;
    let mut rows = 0u64;
    let mut record = csv::StringRecord::new();
    loop {
        match rdr.read_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {
                rows += 1;
                cols.recipient(&record, line_of(&record, rows))?;
            }
            Err(e) => return Err(format!("CSV: {e}")),
        }
    }
    if rows == 0 {
        return Err("the CSV has no recipients".into());
    }
    Ok(rows)
}

/// Second pass: the CSV's jobs, `spec.job_size` recipients each, each checked with
/// [`Job::parse`] before it is handed out.
pub struct CsvJobs<R: Read> {
    rdr: csv::Reader<R>,
    cols: Columns,
    spec: CsvSpec,
    record: csv::StringRecord,
    rows: u64,
    jobs: u64,
    done: bool,
}

impl<R: Read> CsvJobs<R> {
    pub fn new(reader: R, spec: CsvSpec) -> Result<Self, String> {
        let mut rdr = csv_reader(reader);
        let cols = Columns::from_headers(rdr.headers().map_err(|e| e.to_string())?)?;
        Ok(Self {
            rdr,
            cols,
            spec,
            record: csv::StringRecord::new(),
            rows: 0,
            jobs: 0,
            done: false,
        })
    }
}

impl<R: Read> Iterator for CsvJobs<R> {
    type Item = Result<BuiltJob, String>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let mut recipients = Vec::with_capacity(self.spec.job_size.min(MAX_RECIPIENTS));
        while recipients.len() < self.spec.job_size {
            match self.rdr.read_record(&mut self.record) {
                Ok(false) => {
                    self.done = true;
                    break;
                }
                Ok(true) => {
                    self.rows += 1;
                    let line = line_of(&self.record, self.rows);
                    match self.cols.recipient(&self.record, line) {
                        Ok(r) => recipients.push(r),
                        Err(e) => return Some(Err(e)),
                    }
                }
                Err(e) => return Some(Err(format!("CSV: {e}"))),
            }
        }
        if recipients.is_empty() {
            return None;
        }
        self.jobs += 1;
        Some(build_job(&self.spec, self.jobs, recipients))
    }
}

fn build_job(spec: &CsvSpec, n: u64, recipients: Vec<Value>) -> Result<BuiltJob, String> {
    let id = format!("{}-{n:05}", spec.job_prefix);
    let count = recipients.len();
    let mut v = json!({
        "version": 1,
        "job_id": id,
        "campaign_id": spec.campaign.as_str(),
        "sender": spec.sender.as_str(),
        "template": {
            "name": spec.template,
            "language": spec.language,
            "category": spec.category.as_str(),
        },
        "recipients": recipients,
    });
    if !spec.components.is_empty() {
        v["components"] = Value::Array(spec.components.clone());
    }
    if let Some(t) = spec.not_before {
        v["not_before"] = json!(t);
    }
    if let Some(t) = spec.expires_at {
        v["expires_at"] = json!(t);
    }
    let body = serde_json::to_vec(&v).expect("a JSON value serialises");
    Job::parse(&body).map_err(|e| format!("job {id}: {e}"))?;
    Ok(BuiltJob {
        id,
        sender: spec.sender.to_string(),
        body,
        recipients: count,
    })
}

fn csv_reader<R: Read>(reader: R) -> csv::Reader<R> {
    csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .flexible(true)
        .from_reader(reader)
}

/// The row's line in the file when the reader knows it, else its ordinal plus the header.
fn line_of(record: &csv::StringRecord, ordinal: u64) -> u64 {
    record.position().map_or(ordinal + 1, |p| p.line())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(job_size: usize) -> CsvSpec {
        CsvSpec {
            campaign: CampaignId::parse("c1").unwrap(),
            sender: SenderId::parse("106540352242922").unwrap(),
            template: "flash_sale".into(),
            language: "de".into(),
            category: Category::Marketing,
            components: vec![json!({"type": "header", "parameters": []})],
            job_size,
            job_prefix: "c1-run".into(),
            not_before: None,
            expires_at: None,
        }
    }

    fn csv_of(n: usize) -> String {
        let mut s = String::from("to,key,param1,param2\n");
        for i in 0..n {
            s.push_str(&format!("+49151{:08},k{i},Anna,{i}\n", 10_000_000 + i));
        }
        s
    }

    #[test]
    fn a_csv_splits_into_jobs_of_the_given_size() {
        let csv = csv_of(25);
        assert_eq!(check_csv(csv.as_bytes()).unwrap(), 25);
        let jobs: Vec<BuiltJob> = CsvJobs::new(csv.as_bytes(), spec(10))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(jobs.len(), 3);
        assert_eq!(
            jobs.iter().map(|j| j.recipients).collect::<Vec<_>>(),
            [10, 10, 5]
        );
        assert_eq!(jobs[0].id, "c1-run-00001");
        assert_eq!(jobs[2].id, "c1-run-00003");
        let job = Job::parse(&jobs[1].body).unwrap();
        assert_eq!(job.recipients.len(), 10);
        assert_eq!(job.recipients[0].key.as_str(), "k10");
        // Job header component plus the row's body parameters.
        let comps = &job.recipients[0].components;
        assert_eq!(comps.len(), 2);
        assert_eq!(comps[1]["parameters"][1]["text"], "10");
    }

    #[test]
    fn a_phone_column_works_and_params_are_optional() {
        let csv = "phone\n+4915112345678\n+4917698765432\n";
        let jobs: Vec<BuiltJob> = CsvJobs::new(csv.as_bytes(), spec(10))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(jobs.len(), 1);
        let job = Job::parse(&jobs[0].body).unwrap();
        assert_eq!(job.recipients.len(), 2);
        assert_eq!(job.recipients[0].components.len(), 1);
    }

    #[test]
    fn bad_rows_are_refused_with_their_line() {
        let err = check_csv("to,param1,param2\n+4915112345678,,x\n".as_bytes()).unwrap_err();
        assert!(err.contains("line 2") && err.contains("param1"), "{err}");
        let err = check_csv("to,key\n+4915112345678,\"a\u{7}b\"\n".as_bytes()).unwrap_err();
        assert!(err.contains("line 2") && err.contains("key"), "{err}");
        assert!(
            check_csv("name\nx\n".as_bytes())
                .unwrap_err()
                .contains("`to`")
        );
        assert!(
            check_csv("to\n".as_bytes())
                .unwrap_err()
                .contains("no recipients")
        );
        let err = check_csv("to,param1,param3\n+4915112345678,a,b\n".as_bytes()).unwrap_err();
        assert!(err.contains("param2"), "{err}");
    }

    #[test]
    fn invalid_numbers_stay_in_the_job_to_be_recorded_as_skipped() {
        let csv = "to\nnot-a-number\n+4915112345678\n";
        let jobs: Vec<BuiltJob> = CsvJobs::new(csv.as_bytes(), spec(10))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let job = Job::parse(&jobs[0].body).unwrap();
        assert_eq!(job.recipients.len(), 1);
        assert_eq!(job.skipped.len(), 1);
    }
}
