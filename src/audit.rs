//! `scrip audit`: verify the consortium's ledger without trusting whoever hosts it.

use anyhow::Context as _;
use clap::Args;
use scrip_common::clients::LedgerClient;
use scrip_ledger::Store;
use scrip_ledger::audit::{AuditReport, Auditor, Period};
use scrip_spec::Signed;
use scrip_spec::ledger::{Cosignature, EntryBody, LogEntry};
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
    #[arg(long, value_name = "FILE", default_value = "scrip-audit.state")]
    state: PathBuf,
    /// Ignore the saved state and verify the whole log again.
    #[arg(long)]
    from_genesis: bool,
    /// The settlement period: a month `2026-11` or a range `2026-11-01..2026-11-15` (UTC,
    /// end exclusive). All time by default.
    #[arg(long)]
    period: Option<String>,
    /// Print the report as JSON (schema in spec/PROTOCOL.md section 14).
    #[arg(long)]
    json: bool,
    /// Also write a self-contained HTML page with charts (alarms, settlement heat map,
    /// outstanding value, issued and spent per key over time).
    #[arg(long, value_name = "FILE")]
    html: Option<PathBuf>,
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

    async fn page(&self, from: u64) -> anyhow::Result<Vec<LogEntry>> {
        Ok(match self {
            Source::Http(c) => {
                c.log(from, scrip_spec::api::ledger::MAX_LOG_PAGE)
                    .await?
                    .entries
            }
            Source::Database(s) => {
                s.entries(
                    from,
                    scrip_spec::api::ledger::MAX_LOG_PAGE,
                    scrip_spec::api::ledger::MAX_LOG_PAGE_BYTES,
                )
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
    let mut auditor = if args.from_genesis || !args.state.exists() {
        Auditor::default()
    } else {
        let bytes = std::fs::read(&args.state)
            .with_context(|| format!("cannot read {}", args.state.display()))?;
        scrip_spec::encoding::from_postcard_bytes(&bytes).with_context(|| {
            format!(
                "{} is not an audit state; pass --from-genesis to start over",
                args.state.display()
            )
        })?
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
            Err(e) => match e.downcast_ref::<scrip_ledger::StoreError>() {
                Some(scrip_ledger::StoreError::Corrupt { what }) => {
                    bar.finish_and_clear();
                    eprintln!("TAMPERING: {what} does not decode");
                    return Ok(EXIT_TAMPERING);
                }
                _ => return Err(e),
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

    let bytes = scrip_spec::encoding::canonical_bytes(&auditor);
    let tmp = args.state.with_extension("tmp");
    std::fs::write(&tmp, bytes)
        .and_then(|()| std::fs::rename(&tmp, &args.state))
        .with_context(|| format!("cannot save the audit state to {}", args.state.display()))?;

    let report = auditor.report(period);
    if let Some(file) = &args.html {
        let page = crate::audit_html::render(&report)
            .map_err(|e| anyhow::anyhow!("cannot draw the report: {e}"))?;
        std::fs::write(file, page).with_context(|| format!("cannot write {}", file.display()))?;
    }
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json_report(&report, &cosigners, start))?
        );
    } else {
        print_table(&report, &cosigners, start);
    }
    Ok(if report.alarms.is_empty() {
        0
    } else {
        EXIT_ALARMS
    })
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
    })
}

fn print_table(r: &AuditReport, cosigners: &[String], start: u64) {
    println!(
        "log verified: {} entries ({} new), {} checkpoints, head {}",
        r.entries,
        r.entries.saturating_sub(start),
        r.checkpoints,
        r.head_hash.map(|h| h.to_string()).unwrap_or_default()
    );
    if !cosigners.is_empty() {
        println!("latest checkpoint cosigned by {}", cosigners.join(", "));
    }
    if !r.alarms.is_empty() {
        println!("\nALARMS");
        for a in &r.alarms {
            println!("  ! {a}");
        }
    }
    println!(
        "\n{:<12} {:<10} {:>9} {:>9} {:>11} {:>8}",
        "issuer", "kind", "issued", "spent", "outstanding", "pruned"
    );
    for k in &r.totals.keys {
        println!(
            "{:<12} {:<10} {:>9} {:>9} {:>11} {:>8}",
            k.issuer,
            k.kind.as_str(),
            k.issued,
            k.spent,
            k.issued.saturating_sub(k.spent),
            k.pruned
        );
    }
    println!(
        "\n{:<12} {:>13} {:>13} {:>15}",
        "issuer", "credits sold", "value issued", "value redeemed"
    );
    for v in &r.issuers {
        println!(
            "{:<12} {:>13} {:>13} {:>15}",
            v.issuer, v.credits_sold, v.value_issued, v.value_redeemed
        );
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
    println!(
        "\nsettlement: who owes whom, each spend at the catalog in force when it was recorded: {}",
        if versions.is_empty() {
            "no spends in the period".to_owned()
        } else {
            versions.join(", ")
        }
    );
    for ((issuer, redeemer), cell) in &r.settlement {
        if issuer != redeemer {
            println!(
                "  {issuer} owes {redeemer}: {} credits ({} worth, less the fee) for {:?}",
                cell.owed, cell.value, cell.tokens
            );
        }
    }
    for (op, net) in &r.net {
        println!("  net {op}: {net:+}");
    }
}
