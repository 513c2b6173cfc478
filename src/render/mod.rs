//! Output: a readable text summary, one JSON document, or JSON lines.
//!
//! # JSON schema (`--format json`)
//!
//! One object:
//!
//! - `transactions`: array of transaction records (below), in completion order.
//! - `inputs`: the capture files; `vantages`: every capture point (`file`,
//!   `interface`, `ifindex`); `warnings`: files that ended early (`file`, `message`).
//! - `stats`: every counter of [`crate::anomaly::Stats`]; `anomalies`: `samples`
//!   (`kind`, `ts`, `detail`) and `not_kept`.
//! - `vrrp`: runs of VRRP adverts (`vrid`, `source`, `priority`, `addresses`,
//!   `first_ts`, `last_ts`, `adverts`); `gratuitous_arp`: (`ts`, `vantage`, `ip`, `mac`).
//!
//! A transaction record: `id`, `conn_id`, `capture` (`file`, `interface`), `client` and
//! `server` (`"ip:port"` as on the wire at that capture point), `method`, `uri`,
//! `version`, `host`, `status` (null when no response), `reason`, `interim` (1xx
//! statuses), `request_ts`, `request_end_ts`, `response_ts`, `response_end_ts` (epoch
//! seconds, microsecond precision; null when absent), `duration_ms` (first request byte
//! to last response byte), `request_body_bytes`, `response_body_bytes`, `incomplete`
//! (part of a message was missing from the capture), `socks_target` (only on a
//! connection that began with a SOCKS handshake: the `host:port` the client asked the
//! proxy for, while `server` is the proxy), and with `--headers`,
//! `request_headers` and `response_headers` as `[name, value]` pairs.
//!
//! `--format jsonl` writes each transaction record as one line with `"type":
//! "transaction"` as it completes, then one `"type": "summary"` line holding the other
//! top-level keys.

pub mod clock;
pub mod file;
pub mod html;
mod json;
pub mod paths;

pub use clock::{TimeFormat, TimeStyle};
pub use file::OutputFile;

use crate::anomaly::{AnomalyLog, Stats};
use crate::capture::Warning;
use crate::error::RenderError;
use crate::http::{Headers, HttpTransaction, Word};
use crate::pipeline::{GratuitousArp, Vantage, VrrpRun};
use crate::time::Ts;
use serde::Serialize;
use std::borrow::Cow;
use std::io::Write;

/// Output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// One line per transaction and a summary.
    Text,
    /// One JSON document.
    Json,
    /// One JSON object per line.
    Jsonl,
}

/// Where a transaction was seen.
#[derive(Serialize)]
pub struct CaptureRef<'a> {
    /// Capture file.
    pub file: &'a str,
    /// Interface.
    pub interface: &'a str,
}

/// A transaction as written in JSON.
#[derive(Serialize)]
pub struct TransactionRecord<'a> {
    #[serde(skip_serializing_if = "Option::is_none", rename = "type")]
    kind: Option<&'static str>,
    id: u64,
    conn_id: u64,
    capture: CaptureRef<'a>,
    client: &'a std::net::SocketAddr,
    server: &'a std::net::SocketAddr,
    method: Option<&'a Word>,
    uri: Option<&'a str>,
    /// Always one of the parser's constants (`HTTP/1.1`, `HTTP/1.0`).
    version: Option<&'static str>,
    host: Option<&'a str>,
    status: Option<u16>,
    reason: Option<&'a Word>,
    interim: &'a [u16],
    request_ts: Option<Ts>,
    request_end_ts: Option<Ts>,
    response_ts: Option<Ts>,
    response_end_ts: Option<Ts>,
    duration_ms: Option<f64>,
    request_body_bytes: Option<u64>,
    response_body_bytes: Option<u64>,
    incomplete: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    socks_target: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    request_headers: Option<&'a Headers>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response_headers: Option<&'a Headers>,
}

impl<'a> TransactionRecord<'a> {
    /// The record of `t`; `vantages` names its capture point.
    pub fn new(t: &'a HttpTransaction, vantages: &'a [Vantage], headers: bool) -> Self {
        let v = &vantages[t.vantage as usize];
        let req = t.request.as_ref();
        let resp = t.response.as_ref();
        let duration_ms = match (req, resp) {
            (Some(q), Some(r)) => {
                Some((r.last_ts.0.saturating_sub(q.first_ts.0) as f64 / 1e3).round() / 1e3)
            }
            _ => None,
        };
        TransactionRecord {
            kind: None,
            id: t.id,
            conn_id: t.conn_id,
            capture: CaptureRef {
                file: &v.file,
                interface: &v.interface,
            },
            client: &t.client,
            server: &t.server,
            method: req.map(|r| &r.method),
            uri: req.map(|r| r.uri.as_str()),
            version: req.map(|r| r.version).or(resp.map(|r| r.version)),
            host: req.and_then(|r| r.header("host")),
            status: resp.map(|r| r.status),
            reason: resp.map(|r| &r.reason),
            interim: &t.interim,
            request_ts: req.map(|r| r.first_ts),
            request_end_ts: req.map(|r| r.last_ts),
            response_ts: resp.map(|r| r.first_ts),
            response_end_ts: resp.map(|r| r.last_ts),
            duration_ms,
            request_body_bytes: req.map(|r| r.body_bytes),
            response_body_bytes: resp.map(|r| r.body_bytes),
            incomplete: req.is_some_and(|r| r.incomplete) || resp.is_some_and(|r| r.incomplete),
            socks_target: t.socks_target.as_deref(),
            request_headers: headers.then(|| req.map(|r| &r.headers)).flatten(),
            response_headers: headers.then(|| resp.map(|r| &r.headers)).flatten(),
        }
    }
}

pub use json::RecordCache;

/// Appends the JSON record of `t` after its numbers (`id`, `conn_id`), which
/// [`Writer::transaction_tail`] writes in front of it. `cache` keeps what
/// records share (their capture point's part, timestamp and address texts).
pub fn record_tail(
    out: &mut Vec<u8>,
    t: &HttpTransaction,
    vantages: &[Vantage],
    headers: bool,
    cache: &mut RecordCache,
) {
    json::write_tail(
        out,
        &TransactionRecord::new(t, vantages, headers),
        cache,
        t.vantage as usize,
    );
}

/// Everything but the transactions.
#[derive(Serialize)]
pub struct Summary<'a> {
    /// Capture files.
    pub inputs: &'a [String],
    /// Capture points.
    pub vantages: &'a [Vantage],
    /// Files that ended early.
    pub warnings: &'a [Warning],
    /// Counters.
    pub stats: &'a Stats,
    /// Anomaly samples.
    pub anomalies: &'a AnomalyLog,
    /// VRRP advert runs.
    pub vrrp: &'a [VrrpRun],
    /// Gratuitous ARPs.
    pub gratuitous_arp: &'a [GratuitousArp],
}

/// JSON records gathered before one write to the output: one copy of each record
/// (formatted in place here) instead of two (into a record, then into the output's
/// buffer), and a large write goes past a `BufWriter`'s buffer untouched: callers
/// give theirs at most this capacity (a larger one copied every byte once more,
/// 4 % more instructions on the small-packet capture, session 34). 1 MiB writes
/// cost the kernel less than smaller ones (see `WRITE_CHUNK` in the CLI).
pub const RECORD_BUFFER: usize = 1 << 20;

/// Writes transactions as they complete, then the summary.
pub struct Writer<W: Write> {
    out: W,
    /// JSON records not written to `out` yet (at most about [`RECORD_BUFFER`]
    /// bytes; reused: no allocation per record).
    record: Vec<u8>,
    /// What the records share, formatted once (capture-point parts, timestamps,
    /// addresses).
    cache: RecordCache,
    format: Format,
    headers: bool,
    count: u64,
    times: TimeFormat,
}

/// Replaces control characters (terminal escapes from the wire) with `\xNN`.
pub fn sanitize(s: &str) -> Cow<'_, str> {
    if !s.chars().any(char::is_control) {
        return Cow::Borrowed(s);
    }
    Cow::Owned(
        s.chars()
            .map(|c| {
                if c.is_control() {
                    format!("\\x{:02x}", c as u32)
                } else {
                    c.to_string()
                }
            })
            .collect(),
    )
}

impl<W: Write> Writer<W> {
    /// A writer of `format` to `out`; `headers` adds header lists to JSON records.
    pub fn new(out: W, format: Format, headers: bool) -> Result<Self, RenderError> {
        let mut w = Writer {
            out,
            record: Vec::new(),
            cache: RecordCache::default(),
            format,
            headers,
            count: 0,
            times: TimeFormat::default(),
        };
        if format == Format::Json {
            w.out.write_all(b"{\"transactions\":[")?;
        }
        Ok(w)
    }

    /// Shows times in text output as `times` says (default: wall clock, local zone).
    pub fn with_times(mut self, times: TimeFormat) -> Self {
        self.times = times;
        self
    }

    /// Writes one transaction.
    pub fn transaction(
        &mut self,
        t: &HttpTransaction,
        vantages: &[Vantage],
    ) -> Result<(), RenderError> {
        match self.format {
            Format::Text => self.text_line(t, vantages)?,
            Format::Json | Format::Jsonl => {
                let mut rec = TransactionRecord::new(t, vantages, self.headers);
                if self.format == Format::Jsonl {
                    rec.kind = Some("transaction");
                } else {
                    if self.count > 0 {
                        self.record.push(b',');
                    }
                    self.record.push(b'\n');
                }
                json::write_record(&mut self.record, &rec, &mut self.cache, t.vantage as usize);
                self.record_done()?;
            }
        }
        self.count += 1;
        Ok(())
    }

    /// Ends a JSON record in `record` (a newline in JSON lines), writing what is
    /// gathered once it reaches [`RECORD_BUFFER`].
    fn record_done(&mut self) -> Result<(), RenderError> {
        if self.format == Format::Jsonl {
            self.record.push(b'\n');
        }
        if self.record.len() >= RECORD_BUFFER {
            self.write_records()?;
        }
        Ok(())
    }

    /// Writes the records gathered in `record` to the output.
    fn write_records(&mut self) -> Result<(), RenderError> {
        if !self.record.is_empty() {
            self.out.write_all(&self.record)?;
            self.record.clear();
        }
        Ok(())
    }

    /// Writes one transaction formatted by [`record_tail`] elsewhere, with the
    /// numbers of the whole run: the same bytes as [`Writer::transaction`] for a
    /// transaction with this `id` and `conn_id`. JSON formats only (text lines are
    /// written by [`Writer::transaction`]).
    pub fn transaction_tail(
        &mut self,
        id: u64,
        conn_id: u64,
        tail: &[u8],
    ) -> Result<(), RenderError> {
        match self.format {
            Format::Jsonl => self.record.extend_from_slice(b"{\"type\":\"transaction\","),
            Format::Json | Format::Text => {
                if self.count > 0 {
                    self.record.push(b',');
                }
                self.record.extend_from_slice(b"\n{");
            }
        }
        json::head(&mut self.record, id, conn_id);
        // Gathered like `transaction`'s records: one copy of the tail, and one
        // write for many records (three writes per record to a buffered output
        // were 320 instructions a record).
        self.record.extend_from_slice(tail);
        self.record_done()?;
        self.count += 1;
        Ok(())
    }

    fn text_line(&mut self, t: &HttpTransaction, vantages: &[Vantage]) -> Result<(), RenderError> {
        let v = &vantages[t.vantage as usize];
        let req = t.request.as_ref();
        let resp = t.response.as_ref();
        let first = req
            .map(|r| r.first_ts)
            .or(resp.map(|r| r.first_ts))
            .unwrap_or_default();
        if let Some(date) = self.times.date_line(first) {
            writeln!(self.out, "{date}")?;
        }
        let ts = self.times.line_start(first);
        let status = resp
            .map(|r| r.status.to_string())
            .unwrap_or_else(|| "---".into());
        let duration = match (req, resp) {
            (Some(q), Some(r)) => format!(
                "{:.3} ms",
                r.last_ts.0.saturating_sub(q.first_ts.0) as f64 / 1e6
            ),
            _ => "-".into(),
        };
        writeln!(
            self.out,
            "{ts}  {} -> {}{}  {} {}  {status}  {duration}  [{} {}]{}",
            t.client,
            t.server,
            match &t.socks_target {
                Some(target) => format!(" (SOCKS to {})", sanitize(target)),
                None => String::new(),
            },
            sanitize(req.map(|r| &*r.method).unwrap_or("-")),
            sanitize(req.map(|r| r.uri.as_str()).unwrap_or("-")),
            sanitize(&v.file),
            sanitize(&v.interface),
            if req.is_some_and(|r| r.incomplete) || resp.is_some_and(|r| r.incomplete) {
                "  (incomplete)"
            } else {
                ""
            }
        )?;
        Ok(())
    }

    /// Writes the summary and ends the document.
    pub fn finish(mut self, summary: &Summary<'_>) -> Result<W, RenderError> {
        self.write_records()?;
        match self.format {
            Format::Text => self.text_summary(summary)?,
            Format::Json => {
                self.out.write_all(b"\n]")?;
                let value = serde_json::to_value(summary)?;
                if let serde_json::Value::Object(map) = value {
                    for (k, v) in map {
                        write!(self.out, ",\n{}:", serde_json::Value::String(k))?;
                        serde_json::to_writer(&mut self.out, &v)?;
                    }
                }
                self.out.write_all(b"}\n")?;
            }
            Format::Jsonl => {
                let mut value = serde_json::to_value(summary)?;
                if let serde_json::Value::Object(map) = &mut value {
                    map.insert("type".into(), "summary".into());
                }
                serde_json::to_writer(&mut self.out, &value)?;
                self.out.write_all(b"\n")?;
            }
        }
        self.out.flush()?;
        Ok(self.out)
    }

    fn text_summary(&mut self, s: &Summary<'_>) -> Result<(), RenderError> {
        let st = s.stats;
        writeln!(self.out)?;
        writeln!(
            self.out,
            "{} transactions ({} requests, {} responses, {} unanswered) from {} frames in {} file(s), {} TCP connections",
            st.http_transactions,
            st.http_requests,
            st.http_responses,
            st.http_unanswered,
            st.frames,
            st.files,
            st.tcp_connections
        )?;
        for run in s.vrrp {
            writeln!(
                self.out,
                "VRRP vrid {} from {} priority {} for {}: {} adverts {} .. {}",
                run.vrid,
                run.source,
                run.priority,
                run.addresses
                    .iter()
                    .map(|a| a.to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
                run.adverts,
                self.times.point(run.first_ts),
                self.times.point(run.last_ts)
            )?;
        }
        if !s.gratuitous_arp.is_empty() {
            writeln!(self.out, "{} gratuitous ARP(s)", s.gratuitous_arp.len())?;
        }
        let nonzero: Vec<String> = st
            .iter()
            .filter(|(_, v)| *v > 0)
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        writeln!(self.out, "counters: {}", nonzero.join(" "))?;
        for w in s.warnings {
            writeln!(
                self.out,
                "warning: {}: {}",
                sanitize(&w.file),
                sanitize(&w.message)
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sanitize_escapes_controls() {
        assert_eq!(sanitize("/a\x1b[31mb"), "/a\\x1b[31mb");
        assert!(matches!(sanitize("/plain"), Cow::Borrowed(_)));
    }
}
