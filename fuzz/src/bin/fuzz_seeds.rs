//! Writes the seed corpus for the fuzz targets (`fuzz/README.md`): one real encoding of every
//! structure each target decodes, into `spec/tests/fuzz-corpus/<target>/seed-*`.
//!
//! `cd fuzz && cargo run --bin fuzz_seeds`

use scrip_spec::api::issuer::{
    BalanceRequest, KeyedTokenRequest, OpenRequest, ReplayRequest, RequestId,
};
use scrip_spec::codes::export::{EXPORT_VERSION, ExportFile, ExportedToken};
use scrip_spec::encoding::canonical_bytes;
use scrip_spec::ledger::{
    Action, Approval, Change, Checkpoint, Cosignature, DEFAULT_MIN_REDEEM_WINDOW, EntryBody,
    Genesis, Hash32, LedgerRequest, LogEntry, OperatorInfo, Proposal, Role,
};
use scrip_spec::{
    CapacityKind, CardCode, Catalog, GrantCode, OperatorKey, TokenChallenge, TokenKeyInfo,
    TokenSecretKey, WalletSeed, blind, finalize,
};
use std::path::Path;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("../spec/tests/fuzz-corpus");
    let write = |target: &str, name: &str, bytes: &[u8]| -> std::io::Result<()> {
        let dir = corpus.join(target);
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join(format!("seed-{name}")), bytes)
    };

    let sk = TokenSecretKey::generate()?;
    let challenge = TokenChallenge::for_issuer("op-a")?;
    let seed = WalletSeed::generate();
    let (request, pending) = blind(&seed, 0, sk.public_key(), &challenge)?;
    let response = sk.blind_sign(&request)?;
    let token = finalize(sk.public_key(), &pending, &response)?;
    let (second_request, second_pending) = blind(&seed, 1, sk.public_key(), &challenge)?;
    let second = finalize(
        sk.public_key(),
        &second_pending,
        &sk.blind_sign(&second_request)?,
    )?;
    write("token_codecs", "token", &token.to_bytes())?;
    write("token_codecs", "request", &request.to_bytes())?;
    write("token_codecs", "response", &response.to_bytes())?;
    write("token_codecs", "challenge", &challenge.to_bytes())?;
    write("token_codecs", "spki", sk.public_key().spki())?;

    let operator = OperatorKey::generate();
    let info = TokenKeyInfo {
        public_key: sk.public_key().clone(),
        issuer: "op-a".into(),
        kind: CapacityKind::new("queue")?,
        valid_from: 1_800_000_000,
        issue_until: 1_800_604_800,
        redeem_until: 1_801_728_000,
        forget_after: 1_802_332_800,
    };
    let genesis = Genesis {
        ledger_name: "fuzz".into(),
        ledger_key: operator.id(),
        created_at: 1_800_000_000,
        operators: vec![OperatorInfo {
            name: "op-a".into(),
            id: operator.id(),
            roles: vec![Role::Issuer, Role::Redeemer],
        }],
        catalog: Catalog::standard(),
        admin_quorum: None,
        min_redeem_window: DEFAULT_MIN_REDEEM_WINDOW,
        committee: Vec::new(),
    };
    let ledger_id = genesis.ledger_id();
    let spend = operator.sign(LedgerRequest::new(
        ledger_id,
        1_800_000_100,
        Action::spend_of([token.clone(), second]),
    ));
    let proposal = Proposal {
        ledger_id,
        governance_seq: 0,
        change: Change::AdmitOperator {
            operator: OperatorInfo {
                name: "op-b".into(),
                id: OperatorKey::generate().id(),
                roles: vec![Role::Redeemer],
            },
        },
    };
    let govern = operator.sign(LedgerRequest::new(
        ledger_id,
        1_800_000_150,
        Action::Govern {
            approvals: vec![Approval::sign(&operator, &proposal)],
            proposal,
        },
    ));
    let announce = operator.sign(LedgerRequest::new(
        ledger_id,
        1_800_000_050,
        Action::AnnounceKey { key: info.clone() },
    ));
    let checkpoint = Checkpoint {
        ledger_id,
        seq: 2,
        head_hash: Hash32([5; 32]),
        totals_digest: Hash32([6; 32]),
        created_at: 1_800_000_200,
    };
    let entry = LogEntry {
        seq: 1,
        prev_hash: Hash32([4; 32]),
        recorded_at: 1_800_000_100,
        body: EntryBody::Request(spend.clone()),
        ordered: None,
    };
    let cosignature = operator.sign(Cosignature {
        checkpoint: checkpoint.clone(),
    });
    write("canonical_envelopes", "spend", &canonical_bytes(&spend))?;
    write("canonical_envelopes", "govern", &canonical_bytes(&govern))?;
    write(
        "canonical_envelopes",
        "announce",
        &canonical_bytes(&announce),
    )?;
    write("canonical_envelopes", "entry", &canonical_bytes(&entry))?;
    let genesis_body = EntryBody::Genesis(genesis);
    write(
        "canonical_envelopes",
        "genesis",
        &canonical_bytes(&genesis_body),
    )?;
    write(
        "canonical_envelopes",
        "checkpoint",
        &canonical_bytes(&checkpoint),
    )?;
    write(
        "canonical_envelopes",
        "cosignature",
        &canonical_bytes(&cosignature.payload),
    )?;

    write(
        "text_codes",
        "card",
        CardCode::generate().to_string().as_bytes(),
    )?;
    let grant = GrantCode::generate(CapacityKind::new("chunk-1m")?);
    write("text_codes", "grant", grant.to_string().as_bytes())?;
    write(
        "text_codes",
        "operator-id",
        operator.id().to_string().as_bytes(),
    )?;
    write("text_codes", "operator-key", operator.to_text().as_bytes())?;
    write("text_codes", "backup", seed.backup_code().as_bytes())?;

    let open = OpenRequest {
        card_code: CardCode::generate().to_string(),
        request_id: RequestId(seed.request_id(0)),
        requests: vec![KeyedTokenRequest {
            token_key_id: info.public_key.id(),
            token_request: request,
        }],
    };
    let export = ExportFile {
        version: EXPORT_VERSION,
        tokens: vec![ExportedToken { token, key: info }],
    };
    write("json_bodies", "open", &serde_json::to_vec(&open)?)?;
    let balance = BalanceRequest {
        card_code: open.card_code.clone(),
    };
    write("json_bodies", "balance", &serde_json::to_vec(&balance)?)?;
    let replay = ReplayRequest {
        request_id: open.request_id,
    };
    write("json_bodies", "replay", &serde_json::to_vec(&replay)?)?;
    write("json_bodies", "spend", &serde_json::to_vec(&spend)?)?;
    write("json_bodies", "govern", &serde_json::to_vec(&govern)?)?;
    write("json_bodies", "entry", &serde_json::to_vec(&entry)?)?;
    write("json_bodies", "export", &serde_json::to_vec(&export)?)?;
    println!("seeds written to {}", corpus.display());
    Ok(())
}
