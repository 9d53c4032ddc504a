//! `scrip operator propose | approve | submit`: a change to the consortium's rules, approved by
//! a quorum of admins (PROTOCOL.md 11.2). The proposal travels as a JSON file from admin to
//! admin; each signs it with `approve`; anyone then submits it.

use anyhow::Context as _;
use clap::Subcommand;
use scrip_common::clients::LedgerClient;
use scrip_spec::api::ledger::LedgerErrorCode;
use scrip_spec::encoding::b64_decode;
use scrip_spec::ledger::{Action, Approval, Change, LedgerRequest, Proposal, Role};
use scrip_spec::{Catalog, OperatorId, OperatorKey, TokenKeyId};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The change a proposal makes.
#[derive(Debug, Subcommand)]
pub enum ChangeArg {
    /// Admit a new member.
    Admit {
        /// Its name (for an issuer, also its tokens' issuer name).
        #[arg(long)]
        name: String,
        /// Its public key, as `scrip operator keygen` printed it.
        #[arg(long, value_parser = parse_operator, allow_hyphen_values = true)]
        id: OperatorId,
        /// A role: issuer, redeemer or admin (repeat for several).
        #[arg(long = "role", required = true, value_parser = parse_role)]
        roles: Vec<Role>,
    },
    /// Remove a member: its requests are refused from then on, its past entries stay.
    Remove {
        /// Its public key.
        #[arg(long, value_parser = parse_operator, allow_hyphen_values = true)]
        id: OperatorId,
    },
    /// Replace a member's roles.
    SetRoles {
        /// Its public key.
        #[arg(long, value_parser = parse_operator, allow_hyphen_values = true)]
        id: OperatorId,
        /// A role: issuer, redeemer or admin (repeat for several).
        #[arg(long = "role", required = true, value_parser = parse_role)]
        roles: Vec<Role>,
    },
    /// Replace the catalog (kinds, prices, settlement fee), from a JSON file shaped like the
    /// `catalog` of `GET /v1/info`. Past spends keep the value they had.
    SetCatalog {
        /// The catalog file.
        #[arg(long, value_name = "FILE")]
        catalog: PathBuf,
    },
    /// Add a node to a committee ledger's committee, from the session after the one that
    /// orders the change. Start the node first (`scrip ledger init` with the genesis, its own
    /// key and `peer_listen`): it follows the log until the change governs.
    AdmitNode {
        /// The member that runs it (its name).
        #[arg(long)]
        operator: String,
        /// The node's key, as `scrip operator keygen` printed it (not an operator's key).
        #[arg(long, value_parser = parse_operator, allow_hyphen_values = true)]
        node_key: OperatorId,
        /// Where the other nodes reach it, `host:port`.
        #[arg(long)]
        peer_address: String,
        /// Where clients reach its HTTP API, for example `http://10.0.0.5:7400`.
        #[arg(long)]
        api_url: String,
    },
    /// Take a node out of the committee, from the session after the one that orders the
    /// change; it then follows the log and orders nothing.
    RetireNode {
        /// The node's key.
        #[arg(long, value_parser = parse_operator, allow_hyphen_values = true)]
        node_key: OperatorId,
    },
    /// Revoke any issuer's token key.
    RevokeKey {
        /// The key id (base64url).
        #[arg(long, value_parser = parse_key_id, allow_hyphen_values = true)]
        key_id: TokenKeyId,
        /// Why, for the auditors.
        #[arg(long)]
        reason: String,
    },
}

/// What the proposal file holds.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProposalFile {
    proposal: Proposal,
    approvals: Vec<Approval>,
}

/// An operator's id. Its arguments take values that start with `-` (`allow_hyphen_values`):
/// one base64url id in 64 does, and would otherwise be read as a flag.
fn parse_operator(text: &str) -> Result<OperatorId, String> {
    text.parse()
        .map_err(|_| format!("{text:?} is not an operator key (43 base64url characters)"))
}

fn parse_role(text: &str) -> Result<Role, String> {
    serde_json::from_value(serde_json::Value::String(text.to_owned()))
        .map_err(|_| format!("{text:?} is not a role: use issuer, redeemer or admin"))
}

fn parse_key_id(text: &str) -> Result<TokenKeyId, String> {
    b64_decode(text)
        .ok()
        .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok())
        .map(TokenKeyId)
        .ok_or_else(|| format!("{text:?} is not a key id (32 bytes of base64url)"))
}

fn read(file: &Path) -> anyhow::Result<ProposalFile> {
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("cannot read the proposal {}", file.display()))?;
    serde_json::from_str(&text).with_context(|| {
        format!(
            "{} is not a proposal file made by `scrip operator propose`",
            file.display()
        )
    })
}

fn write(file: &Path, proposal: &ProposalFile) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(proposal)?;
    std::fs::write(file, text + "\n").with_context(|| format!("cannot write {}", file.display()))
}

/// `propose`: writes a proposal for the ledger's next governance change, with no approval yet.
pub async fn propose(ledger: &str, out: &Path, change: ChangeArg) -> anyhow::Result<()> {
    let change = match change {
        ChangeArg::Admit { name, id, roles } => Change::AdmitOperator {
            operator: scrip_spec::ledger::OperatorInfo { name, id, roles },
        },
        ChangeArg::Remove { id } => Change::RemoveOperator { operator: id },
        ChangeArg::SetRoles { id, roles } => Change::SetRoles {
            operator: id,
            roles,
        },
        ChangeArg::SetCatalog { catalog } => {
            let text = std::fs::read_to_string(&catalog)
                .with_context(|| format!("cannot read {}", catalog.display()))?;
            let catalog: Catalog = serde_json::from_str(&text)
                .with_context(|| format!("{} is not a catalog in JSON", catalog.display()))?;
            catalog.validate()?;
            Change::SetCatalog { catalog }
        }
        ChangeArg::AdmitNode {
            operator,
            node_key,
            peer_address,
            api_url,
        } => Change::AdmitNode {
            node: scrip_spec::committee::CommitteeMember {
                operator,
                node_key,
                peer_address,
                api_url,
            },
        },
        ChangeArg::RetireNode { node_key } => Change::RetireNode { node_key },
        ChangeArg::RevokeKey { key_id, reason } => Change::RevokeKey {
            token_key_id: key_id,
            reason,
        },
    };
    let info = LedgerClient::new(ledger).agreed_info().await?;
    let proposal = Proposal {
        ledger_id: info.ledger_id,
        governance_seq: info.governance_seq,
        change,
    };
    write(
        out,
        &ProposalFile {
            proposal,
            approvals: Vec::new(),
        },
    )?;
    println!(
        "wrote the proposal to {}: governance change {} of this ledger, needing {} admin approvals; \
         each admin runs `scrip operator approve {} --key ADMIN_KEY`",
        out.display(),
        info.governance_seq + 1,
        info.admin_quorum,
        out.display()
    );
    Ok(())
}

/// `approve`: adds the key's approval to the proposal file.
pub fn approve(file: &Path, key: &Path) -> anyhow::Result<()> {
    let key = OperatorKey::read_file(key)?;
    let mut proposal = read(file)?;
    if proposal.approvals.iter().any(|a| a.admin == key.id()) {
        println!(
            "{} already holds the approval of {}",
            file.display(),
            key.id()
        );
        return Ok(());
    }
    proposal
        .approvals
        .push(Approval::sign(&key, &proposal.proposal));
    write(file, &proposal)?;
    println!(
        "approved as {}; the proposal now has {} approvals",
        key.id(),
        proposal.approvals.len()
    );
    Ok(())
}

/// `submit`: sends the approved proposal, signed by `key` (any member).
pub async fn submit(file: &Path, ledger: &str, key: &Path) -> anyhow::Result<()> {
    let key = OperatorKey::read_file(key)?;
    let ProposalFile {
        proposal,
        approvals,
    } = read(file)?;
    let request = key.sign(LedgerRequest::new(
        proposal.ledger_id,
        scrip_spec::now(),
        Action::Govern {
            proposal,
            approvals,
        },
    ));
    match LedgerClient::new(ledger).submit(&request).await {
        Ok(receipt) => {
            println!(
                "applied as entry {}",
                receipt.seq.map(|s| s.to_string()).unwrap_or_default()
            );
            Ok(())
        }
        Err(e) if e.code() == Some(LedgerErrorCode::NoQuorum) => Err(anyhow::Error::new(e)
            .context(format!(
                "not enough admins approved yet: collect more with `scrip operator approve {} --key ADMIN_KEY`",
                file.display()
            ))),
        Err(e) if e.code() == Some(LedgerErrorCode::StaleProposal) => {
            Err(anyhow::Error::new(e).context(
                "another governance change was applied since this proposal was made: make a new one with `scrip operator propose` and have it approved again",
            ))
        }
        Err(e) => Err(e.into()),
    }
}
