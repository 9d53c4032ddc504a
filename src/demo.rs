//! `scrip demo`: the whole system on one machine, step by step, checking each step.

use crate::consortium::Consortium;
use anyhow::{Context as _, ensure};
use scrip_client::Wallet;
use scrip_common::clients::LedgerClient;
use scrip_redeemer::Mode;
use scrip_spec::CapacityKind;
use std::path::Path;

fn step(n: u32, title: &str) {
    use std::io::IsTerminal as _;
    // Bold titles on a terminal only: piped output and NO_COLOR get plain text.
    if scrip_common::logging::colour_allowed(std::io::stdout().is_terminal()) {
        println!("\n\x1b[1m{n}. {title}\x1b[0m");
    } else {
        println!("\n{n}. {title}");
    }
}

fn kind(name: &str) -> anyhow::Result<CapacityKind> {
    Ok(CapacityKind::new(name)?)
}

/// Stores `body` at `relay` as the demo's chunk `DemoChunk000000000000N` with `grant`; the
/// relay's answer.
async fn store_chunk(
    http: &reqwest::Client,
    relay: &str,
    n: &str,
    grant: &str,
    body: Vec<u8>,
) -> anyhow::Result<reqwest::StatusCode> {
    let resp = http
        .put(format!("{relay}/chunks/DemoChunk000000000000{n}"))
        .bearer_auth(grant)
        .body(body)
        .send()
        .await?;
    Ok(resp.status())
}

/// Runs the demo in `dir`; `kept` says whether the caller keeps it afterwards.
pub async fn run(dir: &Path, kept: bool, nodes: usize) -> anyhow::Result<()> {
    let names = ["op-a", "op-b"];
    let c = if nodes > 1 {
        step(
            1,
            &format!(
                "Start a consortium: a ledger replicated on {nodes} nodes (AlephBFT, tolerating {} faulty), two operators",
                scrip_spec::committee::max_faulty(nodes)
            ),
        );
        Consortium::start_committee(dir, &names, Mode::Strict, nodes).await?
    } else {
        step(1, "Start a consortium: one shared ledger, two operators");
        Consortium::start(dir, &names, Mode::Strict).await?
    };
    for (i, url) in c.ledger_nodes.iter().enumerate() {
        if c.ledger_nodes.len() > 1 {
            println!("   ledger node {i}     {url}");
        } else {
            println!("   ledger            {url}");
        }
    }
    for op in &c.operators {
        println!(
            "   {:<6} issuer {}   redeemer {}   relay {}",
            op.name, op.issuer_url, op.redeemer_url, op.relay_url
        );
    }
    let (a, b) = (&c.operators[0], &c.operators[1]);
    let ledger = LedgerClient::new(&c.ledger_url);

    step(
        2,
        "Each issuer makes one RSA-2048 token key per capacity kind and announces it on the ledger",
    );
    for op in &c.operators {
        let keys = op.issuer.rotate_keys().await?;
        println!(
            "   {} announced {} keys: {}",
            op.name,
            keys.len(),
            keys.iter()
                .map(|k| k.kind.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    ensure!(
        ledger.keys(None, None).await?.len() == 10,
        "the ledger should list 10 keys"
    );

    step(
        3,
        "op-a prints a batch of 3 gift cards of 100 credits and puts it on sale",
    );
    let (batch, codes) = a.issuer.mint_cards(100, 3).await?;
    ensure!(
        a.issuer.activate_batch(&batch).await?,
        "the batch should be on sale"
    );
    println!(
        "   batch {batch}; the ledger recorded one \"cards sold\" entry: 3 cards, 300 credits"
    );
    println!(
        "   the issuer keeps only hashes of the codes; a buyer got card {}",
        codes[0]
    );

    step(
        4,
        "A wallet opens the card at op-a: blinded requests, blind signatures, tokens",
    );
    let wallet_path = dir.join("wallet.db");
    let wallet = Wallet::create(&wallet_path, &c.ledger_url, None).await?;
    let code = codes[0].to_string();
    let plan = [
        (kind("queue")?, 3),
        (kind("chunk-64k")?, 4),
        (kind("chunk-1m")?, 2),
    ];
    let opened = wallet
        .open_card(&a.issuer_url, &code, &plan, &|_, _| {})
        .await?;
    println!(
        "   checked op-a's keys against the ledger's directory; got {:?}; {} credits left on the card",
        opened.tokens, opened.remaining_credits
    );
    ensure!(
        opened.remaining_credits == 100 - 3 * 10 - 4 - 2 * 4,
        "the card should have been charged 42 credits"
    );
    let again = wallet.card_balance(&a.issuer_url, &code).await?;
    ensure!(again.remaining_credits == 58, "balance should agree");

    step(
        5,
        "Spend tokens at both operators' relays: a queue at op-a, chunks at op-b",
    );
    let http = reqwest::Client::new();
    let queue = wallet.spend(&kind("queue")?, &a.redeemer_url).await?;
    let resp = http
        .post(format!("{}/queues", a.relay_url))
        .bearer_auth(&queue.grant)
        .send()
        .await?;
    ensure!(
        resp.status().as_u16() == 201,
        "op-a's relay should create the queue, got {}",
        resp.status()
    );
    println!(
        "   op-a's redeemer checked the token, the ledger recorded its nullifier, and the relay"
    );
    println!("   created a queue for grant {}", queue.grant);
    let chunk = wallet.spend(&kind("chunk-64k")?, &b.redeemer_url).await?;
    let status = store_chunk(
        &http,
        &b.relay_url,
        "0",
        &chunk.grant,
        vec![42u8; 60 * 1024],
    )
    .await?;
    ensure!(
        status.as_u16() == 201,
        "op-b's relay should store the chunk, got {status}"
    );
    let big = wallet.spend(&kind("chunk-1m")?, &b.redeemer_url).await?;
    let status = store_chunk(&http, &b.relay_url, "1", &big.grant, vec![7u8; 900 * 1024]).await?;
    ensure!(
        status.as_u16() == 201,
        "op-b's relay should store the 1 MiB chunk"
    );
    println!("   op-b's relay stored a 60 KiB and a 900 KiB chunk for tokens bought from op-a");
    let reuse = http
        .post(format!("{}/queues", a.relay_url))
        .bearer_auth(&queue.grant)
        .send()
        .await?;
    ensure!(reuse.status().as_u16() == 403, "a grant is single use");
    println!("   reusing a grant is refused ({})", reuse.status());

    step(6, "Try to spend one token twice: at op-a, then at op-b");
    let spent = wallet.spend(&kind("queue")?, &a.redeemer_url).await?;
    let token = wallet
        .tokens(scrip_client::TokenState::Spent)
        .await?
        .into_iter()
        .find(|t| t.grant.as_deref() == Some(spent.grant.as_str()))
        .context("the wallet should keep the spent token")?
        .token;
    println!(
        "   the wallet spent a queue token at op-a (grant {})",
        spent.grant
    );
    let body = serde_json::json!({
        "token": scrip_spec::encoding::b64_encode(token.to_bytes()),
        "kind": "queue",
    });
    let second = http
        .post(format!("{}/v1/redeem", b.redeemer_url))
        .json(&body)
        .send()
        .await?;
    let status = second.status();
    let refusal: serde_json::Value = second.json().await?;
    ensure!(
        status.as_u16() == 409,
        "the second spend should be refused, got {status}"
    );
    ensure!(
        refusal["error"]["first_spent_by"] == "op-a",
        "the refusal should name op-a"
    );
    println!(
        "   a copy of the same token presented at op-b is refused: {status} {} (first spent by {} at {})",
        refusal["error"]["code"],
        refusal["error"]["first_spent_by"],
        refusal["error"]["first_spent_at"]
    );

    if c.ledger_nodes.len() > 1 {
        step(
            7,
            "Issuers report issuance (aggregates per key); every node holds the same log",
        );
        for op in &c.operators {
            op.issuer.report_issuance().await?;
        }
        let heads = committee_heads(&c.ledger_nodes).await?;
        println!(
            "   all {} nodes at entry {}, head {}",
            heads.len(),
            heads[0].0,
            heads[0].1
        );
    } else {
        step(
            7,
            "Issuers report issuance (aggregates per key), the ledger makes a checkpoint",
        );
        for op in &c.operators {
            op.issuer.report_issuance().await?;
        }
        let checkpoint = c
            .ledger
            .checkpoint()
            .await?
            .context("a checkpoint should be made")?;
        println!("   checkpoint at entry {}", checkpoint.seq);
    }

    step(
        8,
        "Audit: replay the whole log, check every hash and signature, recompute totals, settle",
    );
    let entries = scrip_ledger::audit::fetch_log(&ledger).await?;
    let report = scrip_ledger::audit::audit(&entries)
        .map_err(|e| anyhow::anyhow!("the audit found tampering: {e}"))?;
    println!(
        "   {} entries and {} checkpoint verified; head {}",
        report.entries,
        report.checkpoints,
        report.head_hash.map(|h| h.to_string()).unwrap_or_default()
    );
    for k in report
        .totals
        .keys
        .iter()
        .filter(|k| k.issued > 0 || k.spent > 0)
    {
        println!(
            "   key {:<10} of {}: issued {:>2}, spent {:>2}, outstanding {:>2}",
            k.kind,
            k.issuer,
            k.issued,
            k.spent,
            k.issued.saturating_sub(k.spent)
        );
    }
    for ((issuer, redeemer), cell) in &report.settlement {
        println!(
            "   tokens of {issuer} spent at {redeemer}: {:?} = {} credits",
            cell.tokens, cell.value
        );
    }
    let owed = report
        .settlement
        .get(&("op-a".to_string(), "op-b".to_string()))
        .map(|c| c.value)
        .unwrap_or(0);
    ensure!(
        owed == 1 + 4,
        "op-a should owe op-b 5 credits (a 64k and a 1m chunk), found {owed}"
    );
    println!(
        "   who owes whom: op-a owes op-b {owed} credits (op-b's relays served op-a's customers)"
    );
    ensure!(
        report.alarms.is_empty(),
        "the audit raised alarms: {:?}",
        report.alarms
    );
    let balance = wallet.balance().await?;
    println!(
        "\n   the wallet holds {} spent tokens and these unspent ones:",
        balance.spent
    );
    let now = scrip_spec::now();
    for ((kind, until), n) in &balance.unspent {
        println!(
            "   {n} x {kind}, spendable for {} more days",
            until.saturating_sub(now) / 86_400
        );
    }
    println!("\nEverything behaved as shown.");
    if kept {
        println!("The consortium's files are in {}:", dir.display());
        println!(
            "   ledger.db, op-*-issuer.db, op-*-redeemer.db, op-*-relay/, op-*-keys/, wallet.db"
        );
        println!(
            "   and the configuration to run it by hand: ledger.toml, op-*-issuer.toml, op-*-redeemer.toml, op-*-relay.toml"
        );
        println!(
            "   (scrip ledger serve --config {}/ledger.toml, then each issuer, redeemer and relay)",
            dir.display()
        );
    } else {
        println!(
            "The consortium ran in a temporary directory, now removed; `--keep DIR` keeps it."
        );
    }
    Ok(())
}

/// The committee's heads once every node reports the same one (each applies the ordered
/// requests in its own time); an error if they do not agree within 10 s.
async fn committee_heads(
    nodes: &[String],
) -> anyhow::Result<Vec<(u64, scrip_spec::ledger::Hash32)>> {
    let mut heads = Vec::new();
    for _ in 0..100 {
        heads.clear();
        for url in nodes {
            let info = LedgerClient::new(url).info().await?;
            heads.push((info.head_seq, info.head_hash));
        }
        if heads.windows(2).all(|w| w[0] == w[1]) {
            return Ok(heads);
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    anyhow::bail!("the ledger nodes hold different logs: {heads:?}")
}
