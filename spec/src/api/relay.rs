//! The example relay's HTTP messages (INTEGRATION.md section 9): a queue or a chunk, paid
//! for with a grant in `Authorization: Bearer <grant>`.

use serde::{Deserialize, Serialize};

super::error_codes! {
    /// The example relay's error codes: its own, and the sidecar's refusals of a grant, which
    /// it passes on as they are (403, or 503 for the sidecar's failures).
    ///
    /// | code | meaning |
    /// |---|---|
    /// | `grant_required` | 401: no `Authorization: Bearer <grant>`. |
    /// | `unavailable` | 503: the sidecar could not be asked. |
    /// | `bad_id` | 400: a chunk id that is not 22 base64url characters. |
    /// | `too_large` | 413: a chunk over 4 MiB. |
    /// | `exists` | 409: a chunk with this id exists. |
    /// | `storage` | 500: the relay could not write. |
    /// | `malformed_grant`, `unknown_grant`, `grant_revoked`, `grant_used`, `grant_expired`, `wrong_kind` | 403: the sidecar's refusal of the grant (see [`super::redeemer::RedeemerErrorCode`]). |
    pub enum RelayErrorCode {
        GrantRequired = "grant_required", Unavailable = "unavailable", BadId = "bad_id",
        TooLarge = "too_large", Exists = "exists", Storage = "storage",
        MalformedGrant = "malformed_grant", UnknownGrant = "unknown_grant",
        GrantRevoked = "grant_revoked", GrantUsed = "grant_used", GrantExpired = "grant_expired",
        WrongKind = "wrong_kind",
    }
}

/// `POST /queues` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueCreated {
    /// The new queue's id.
    pub queue_id: String,
}

/// `PUT /chunks/{id}` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkStored {
    /// The chunk's id.
    pub chunk_id: String,
    /// The size class paid for (a catalog kind name such as `chunk-64k`).
    pub kind: String,
}
