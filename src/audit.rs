//! `scrip audit`: verify the consortium's ledger without trusting whoever hosts it.

use anyhow::Context as _;
use clap::Args;
use scrip_common::clients::LedgerClient;
use scrip_ledger::Store;
use scrip_ledger::audit::{AuditReport, Auditor, Period, ReportOptions};
use scrip_spec::Signed;
use scrip_spec::ledger::{Cosignature, EntryBody, Hash32, LogEntry};
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Arc;

/// Exit status when the log was tampered with.
pub const EXIT_TAMPERING: u8 = 2;
/// Exit status when the log is intact but an alarm was raised.
pub const EXIT_ALARMS: u8 = 3;

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("source").required(true).args(["ledger", "database"])))]
pub struct AuditArgs {
    /// Read the log from a ledger over HTTP.
    #[arg(long, value_name = "URL")]
    ledger: Option<String>,
    /// Read the log from a ledger database (a read-only replica): sqlite://PATH or postgres://…
    #[arg(long, value_name = "URL")]
    database: Option<String>,
    /// Where the audit keeps its state between runs, so the next run reads only new entries.
    /// The state names the ledger and the head it verified: a state of another ledger is
    /// refused. By default one file per ledger, `audit-<ledger id>.state` in
    /// `$XDG_STATE_HOME/scrip` (or `~/.local/state/scrip`).
    #[arg(long, value_name = "FILE")]
    state: Option<PathBuf>,
    /// Ignore the saved state and verify the whole log again.
    #[arg(long)]
    from_genesis: bool,
    /// The settlement period: a month `2026-11` or a range `2026-11-01..2026-11-15` (UTC,
    /// end exclusive). All time by default.
    #[arg(long)]
    period: Option<String>,
    /// How long a key's last issuance report may age, in seconds, before spends beyond the
    /// count reported for it are an alarm. Before that they are a note: issuers report every
    /// hour by default, so tokens spent since the last report are not yet counted.
    #[arg(long, value_name = "SECS", default_value_t = scrip_ledger::audit::DEFAULT_REPORT_GRACE)]
    report_grace: u64,
    /// Print the report as JSON (schema in spec/PROTOCOL.md section 14).
    #[arg(long)]
    json: bool,
    /// Also write a self-contained HTML page with charts (alarms, settlement heat map,
    /// outstanding value, issued and spent per key over time).
    #[arg(long, value_name = "FILE")]
    html: Option<PathBuf>,
}

/// What the audit keeps between runs: its replay, bound to the ledger it read and the last
/// entry it verified, so it can neither report another ledger nor miss a rewritten head.
#[derive(serde::Serialize, serde::Deserialize)]
struct SavedAudit {
    /// Format version.
    version: u32,
    /// The ledger the state is of.
    ledger_id: Hash32,
    /// The last entry verified (`None` before the genesis was read).
    head: Option<(u64, Hash32)>,
    /// The replay itself.
    auditor: Auditor,
}

const SAVED_AUDIT_VERSION: u32 = 2;

/// The default state file of a ledger: one per ledger id, in the user's state directory.
fn default_state_path(ledger_id: &Hash32) -> PathBuf {
    let hex: String = ledger_id.0[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let file = format!("audit-{hex}.state");
    let dir = std::env::var_os("XDG_STATE_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))
        .map(|d| d.join("scrip"));
    match dir {
        Some(dir) => dir.join(file),
        None => PathBuf::from(file),
    }
}

enum Source {
    Http(LedgerClient),
    Database(Arc<dyn Store>),
}

impl Source {
    async fn head(&self) -> anyhow::Result<u64> {
        Ok(match self {
            Source::Http(c) => c.info().await?.head_seq,
            Source::Database(s) => s.snapshot().await?.map(|s| s.head.0).unwrap_or(0),
        })
    }

    /// The ledger id, from the genesis.
    async fn ledger_id(&self) -> anyhow::Result<Hash32> {
        Ok(match self {
            Source::Http(c) => c.info().await?.ledger_id,
            Source::Database(_) => match self.page_of(0, 1).await?.first().map(|e| &e.body) {
                Some(EntryBody::Genesis(g)) => g.ledger_id(),
                _ => anyhow::bail!("the database holds no genesis entry"),
            },
        })
    }

    /// The hash of entry `seq`, if the log has it.
    async fn entry_hash(&self, seq: u64) -> anyhow::Result<Option<Hash32>> {
        Ok(self
            .page_of(seq, 1)
            .await?
            .into_iter()
            .find(|e| e.seq == seq)
            .map(|e| e.hash()))
    }

    async fn page(&self, from: u64) -> anyhow::Result<Vec<LogEntry>> {
        self.page_of(from, scrip_spec::api::ledger::MAX_LOG_PAGE)
            .await
    }

    async fn page_of(&self, from: u64, limit: u32) -> anyhow::Result<Vec<LogEntry>> {
        Ok(match self {
            Source::Http(c) => c.log(from, limit).await?.entries,
            Source::Database(s) => {
                s.entries(from, limit, scrip_spec::api::ledger::MAX_LOG_PAGE_BYTES)
                    .await?
            }
        })
    }

    async fn cosignatures(&self, seq: u64) -> anyhow::Result<Vec<Signed<Cosignature>>> {
        Ok(match self {
            Source::Http(c) => match c.checkpoint().await {
                Ok(view) if view.entry.seq == seq => view.cosignatures,
                _ => Vec::new(),
            },
            Source::Database(s) => s.cosignatures(seq).await?,
        })
    }
}

/// Runs the audit; returns the process exit status.
pub async fn run(args: AuditArgs) -> anyhow::Result<u8> {
    let period = match &args.period {
        Some(p) => Period::parse(p).with_context(|| {
            format!("{p:?} is not a period: use 2026-11 or 2026-11-01..2026-11-15")
        })?,
        None => Period::all(),
    };
    let source = match (&args.ledger, &args.database) {
        (Some(url), _) => Source::Http(LedgerClient::new(url)),
        (_, Some(url)) => Source::Database(
            scrip_ledger::store::connect_read_only(url)
                .await
                .context("cannot open the ledger database")?,
        ),
        _ => anyhow::bail!("give --ledger URL or --database URL"),
    };
    let ledger_id = match source.ledger_id().await {
        Ok(id) => id,
        Err(e) => {
            if let Some(what) = corrupt(&e) {
                eprintln!("TAMPERING: {what} does not decode");
                return Ok(EXIT_TAMPERING);
            }
            return Err(e.context("cannot read the ledger's genesis"));
        }
    };
    let state_path = args
        .state
        .clone()
        .unwrap_or_else(|| default_state_path(&ledger_id));
    let mut auditor = if args.from_genesis || !state_path.exists() {
        Auditor::default()
    } else {
        let saved = load_state(&state_path)?;
        if saved.ledger_id != ledger_id {
            anyhow::bail!(
                "{} holds the audit of another ledger ({}), not of this one ({ledger_id}); give this ledger its own --state file, or leave --state out to use one per ledger",
                state_path.display(),
                saved.ledger_id
            );
        }
        if let Some((seq, hash)) = saved.head {
            let now = match source.entry_hash(seq).await {
                Ok(now) => now,
                Err(e) => match corrupt(&e) {
                    Some(what) => {
                        eprintln!("TAMPERING: {what} does not decode");
                        return Ok(EXIT_TAMPERING);
                    }
                    None => return Err(e),
                },
            };
            match now {
                Some(now) if now == hash => {}
                now => {
                    eprintln!(
                        "TAMPERING: entry {seq}, verified by the last audit as {hash}, is now {}",
                        now.map_or_else(|| "missing".to_owned(), |h| h.to_string())
                    );
                    return Ok(EXIT_TAMPERING);
                }
            }
        }
        saved.auditor
    };
    let head = source.head().await?;
    let start = auditor.next_seq();
    let bar = indicatif::ProgressBar::new(head.saturating_add(1).saturating_sub(start));
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "verifying [{bar:40}] {pos}/{len} entries ({eta})",
        )?
        .progress_chars("=> "),
    );
    let mut checkpoints = Vec::new();
    loop {
        let page = match source.page(auditor.next_seq()).await {
            Ok(page) => page,
            // Stored bytes that do not even decode are tampering too, not a failure to run.
            Err(e) => match corrupt(&e) {
                Some(what) => {
                    bar.finish_and_clear();
                    eprintln!("TAMPERING: {what} does not decode");
                    return Ok(EXIT_TAMPERING);
                }
                None => return Err(e),
            },
        };
        if page.is_empty() {
            break;
        }
        for e in &page {
            if let Err(t) = auditor.feed(e) {
                bar.finish_and_clear();
                eprintln!("TAMPERING: {t}");
                return Ok(EXIT_TAMPERING);
            }
            if let EntryBody::Checkpoint(cp) = &e.body {
                checkpoints.push((e.seq, cp.payload.clone()));
            }
            bar.inc(1);
        }
    }
    bar.finish_and_clear();

    // A committee node alone could serve a log of its own making, or one cut short: the last
    // entry read must be the one f + 1 nodes hold (it chains to every entry before it).
    if let Source::Http(client) = &source
        && let Some(last) = auditor.next_seq().checked_sub(1)
    {
        let agreed = client.agreed_entry(last).await.with_context(|| {
            format!("cannot confirm entry {last} with the ledger's nodes; retry the audit")
        })?;
        if agreed.as_ref().map(LogEntry::hash) != auditor.head_hash() {
            eprintln!(
                "TAMPERING: entry {last} as {} served it is not the entry the committee's nodes hold",
                client.url()
            );
            return Ok(EXIT_TAMPERING);
        }
    }

    // A database copy holds tables derived from its log (the spent set above all): they must
    // say exactly what the log says, or a ledger started on it would accept a token twice.
    if let Source::Database(store) = &source {
        match scrip_ledger::audit::compare_with_store(&auditor, store.as_ref()).await {
            Ok(()) => {}
            Err(scrip_ledger::audit::StoreMismatch::Differs { what }) => {
                eprintln!("TAMPERING: the database's derived state disagrees with its log: {what}");
                return Ok(EXIT_TAMPERING);
            }
            Err(e) => return Err(e.into()),
        }
    }

    // Cosignatures of every checkpoint read in this run (a ledger over HTTP serves those of
    // the latest one; a database holds them all): each of exactly that checkpoint.
    let mut cosigners = Vec::new();
    for (seq, checkpoint) in &checkpoints {
        for c in source.cosignatures(*seq).await? {
            if c.verify().is_err() || &c.payload.checkpoint != checkpoint {
                eprintln!(
                    "TAMPERING: a cosignature of checkpoint {seq} by {} does not verify",
                    c.signer
                );
                return Ok(EXIT_TAMPERING);
            }
            if Some(seq) == checkpoints.last().map(|c| &c.0) {
                cosigners.push(c.signer.to_string());
            }
        }
    }

    let report = auditor.report(&ReportOptions {
        report_grace: args.report_grace,
        ..ReportOptions::new(period)
    });
    let head = match (auditor.next_seq().checked_sub(1), report.head_hash) {
        (Some(seq), Some(hash)) => Some((seq, hash)),
        _ => None,
    };
    save_state(
        &state_path,
        SavedAudit {
            version: SAVED_AUDIT_VERSION,
            ledger_id,
            head,
            auditor,
        },
    )?;

    if let Some(file) = &args.html {
        let page = crate::audit_html::render(&report)
            .map_err(|e| anyhow::anyhow!("cannot draw the report: {e}"))?;
        std::fs::write(file, page).with_context(|| format!("cannot write {}", file.display()))?;
    }
    let mut out = std::io::stdout().lock();
    let printed = if args.json {
        writeln!(
            out,
            "{}",
            serde_json::to_string_pretty(&json_report(&report, &cosigners, start))?
        )
    } else {
        print_table(&mut out, &report, &cosigners, start)
    };
    match printed {
        // `scrip audit | head`: the reader stopped reading, which is not a failure of the audit.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
        other => other.context("cannot write the report")?,
    }
    Ok(if report.alarms.is_empty() {
        0
    } else {
        EXIT_ALARMS
    })
}

/// What failed to decode, if `e` is stored bytes that do not decode: tampering, not a failure
/// to run.
fn corrupt(e: &anyhow::Error) -> Option<&str> {
    match e.downcast_ref::<scrip_ledger::StoreError>() {
        Some(scrip_ledger::StoreError::Corrupt { what }) => Some(what),
        _ => None,
    }
}

fn load_state(path: &std::path::Path) -> anyhow::Result<SavedAudit> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let saved: SavedAudit = scrip_spec::encoding::from_postcard_bytes(&bytes).with_context(|| {
        format!(
            "{} is not an audit state of this version of scrip; pass --from-genesis to start over",
            path.display()
        )
    })?;
    anyhow::ensure!(
        saved.version == SAVED_AUDIT_VERSION,
        "{} is an audit state of format {}, not {SAVED_AUDIT_VERSION}; pass --from-genesis to start over",
        path.display(),
        saved.version
    );
    Ok(saved)
}

/// Writes the state aside and renames it into place, so a crash leaves the old one.
fn save_state(path: &std::path::Path, saved: SavedAudit) -> anyhow::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create {} for the audit state", dir.display()))?;
    }
    let bytes = scrip_spec::encoding::canonical_bytes(&saved);
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes)
        .and_then(|()| std::fs::rename(&tmp, path))
        .with_context(|| format!("cannot save the audit state to {}", path.display()))
}

fn json_report(r: &AuditReport, cosigners: &[String], start: u64) -> serde_json::Value {
    let settlement: Vec<_> = r
        .settlement
        .iter()
        .map(|((issuer, redeemer), cell)| serde_json::json!({"issuer": issuer, "redeemer": redeemer, "tokens": cell.tokens, "value": cell.value, "owed": cell.owed}))
        .collect();
    serde_json::json!({
        "version": 1,
        "verified": {"entries": r.entries, "new_entries": r.entries.saturating_sub(start), "checkpoints": r.checkpoints,
                     "head_hash": r.head_hash, "latest_checkpoint_cosigners": cosigners},
        "keys": r.totals.keys.iter().map(|k| serde_json::json!({
            "token_key_id": k.token_key_id, "issuer": k.issuer, "kind": k.kind,
            "issued": k.issued, "spent": k.spent, "outstanding": k.issued.saturating_sub(k.spent), "pruned": k.pruned})).collect::<Vec<_>>(),
        "issuers": r.issuers,
        "kinds": r.kinds.iter().map(|(k, (i, s))| serde_json::json!({"kind": k, "issued": i, "spent": s})).collect::<Vec<_>>(),
        "settlement": {"period": r.period, "fee_bps": r.fee_bps, "catalog_versions": r.catalog_versions, "cells": settlement, "net": r.net},
        "alarms": r.alarms,
        "notes": r.notes,
    })
}

fn print_table(
    out: &mut impl std::io::Write,
    r: &AuditReport,
    cosigners: &[String],
    start: u64,
) -> std::io::Result<()> {
    writeln!(
        out,
        "log verified: {} entries ({} new), {} checkpoints, head {}",
        r.entries,
        r.entries.saturating_sub(start),
        r.checkpoints,
        r.head_hash.map(|h| h.to_string()).unwrap_or_default()
    )?;
    if !cosigners.is_empty() {
        writeln!(
            out,
            "latest checkpoint cosigned by {}",
            cosigners.join(", ")
        )?;
    }
    if !r.alarms.is_empty() {
        writeln!(out, "\nALARMS")?;
        for a in &r.alarms {
            writeln!(out, "  ! {a}")?;
        }
    }
    if !r.notes.is_empty() {
        writeln!(out, "\nNOTES (no action needed)")?;
        for n in &r.notes {
            writeln!(out, "  - {n}")?;
        }
    }
    writeln!(
        out,
        "\n{:<12} {:<10} {:>9} {:>9} {:>11} {:>8}",
        "issuer", "kind", "issued", "spent", "outstanding", "pruned"
    )?;
    for k in &r.totals.keys {
        writeln!(
            out,
            "{:<12} {:<10} {:>9} {:>9} {:>11} {:>8}",
            k.issuer,
            k.kind.as_str(),
            k.issued,
            k.spent,
            k.issued.saturating_sub(k.spent),
            k.pruned
        )?;
    }
    writeln!(
        out,
        "\n{:<12} {:>13} {:>13} {:>15}",
        "issuer", "credits sold", "value issued", "value redeemed"
    )?;
    for v in &r.issuers {
        writeln!(
            out,
            "{:<12} {:>13} {:>13} {:>15}",
            v.issuer, v.credits_sold, v.value_issued, v.value_redeemed
        )?;
    }
    let versions: Vec<String> = r
        .catalog_versions
        .iter()
        .map(|v| {
            format!(
                "version {} (fee {} bp, {} tokens)",
                v.seq, v.fee_bps, v.tokens
            )
        })
        .collect();
    writeln!(
        out,
        "\nsettlement: who owes whom, each spend at the catalog in force when it was recorded: {}",
        if versions.is_empty() {
            "no spends in the period".to_owned()
        } else {
            versions.join(", ")
        }
    )?;
    for ((issuer, redeemer), cell) in &r.settlement {
        if issuer != redeemer {
            writeln!(
                out,
                "  {issuer} owes {redeemer}: {} credits ({} worth, less the fee) for {:?}",
                cell.owed, cell.value, cell.tokens
            )?;
        }
    }
    for (op, net) in &r.net {
        writeln!(out, "  net {op}: {net:+}")?;
    }
    Ok(())
}
