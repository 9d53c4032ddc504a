//! The ledger's test suite, written once and run against SQLite and PostgreSQL.
//!
//! The PostgreSQL run needs `SCRIP_TEST_PG_URL`; each test makes its own schema.

mod cases;
mod migrations;
mod support;

/// Declares each case once per backend.
macro_rules! per_backend {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    let fixture = crate::support::Fixture::sqlite().await;
                    crate::cases::$case(fixture).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                #[ignore = "needs SCRIP_TEST_PG_URL"]
                async fn $case() {
                    let fixture = crate::support::Fixture::postgres().await;
                    crate::cases::$case(fixture).await;
                }
            )*
        }
    };
}

per_backend!(
    racing_redeemers_spend_each_nullifier_exactly_once,
    refused_requests_leave_the_log_unchanged,
    log_chain_signatures_and_checkpoint_verify_after_mixed_workload,
    live_key_limit_and_key_rules,
    expired_keys_are_refused_then_pruned_with_a_commitment,
    state_survives_reopening_the_store,
    store_tells_a_replay_from_a_taken_position,
    spends_of_tokens_the_redeemer_does_not_hold_are_refused,
    governance_needs_a_quorum_and_settlement_keeps_the_catalog_of_each_spend,
    issuance_reports_tile_time,
    readers_are_answered_while_a_spend_is_being_written,
    a_spent_set_that_disagrees_with_the_log_is_refused_at_start,
    a_request_missing_from_the_replay_index_is_refused_at_start,
    prefix_queries_return_exactly_the_spent_nullifiers_with_the_prefix,
    nullifiers_sharing_their_first_bytes_are_spends_of_their_own,
    refreshes_swap_own_tokens_for_no_more_value,
    the_audit_tells_unreported_spends_from_over_issuance,
);
