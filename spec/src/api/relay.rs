//! The example relay's HTTP messages (INTEGRATION.md section 9): a queue or a chunk, paid
//! for with a grant in `Authorization: Bearer <grant>`.

use serde::{Deserialize, Serialize};

super::error_codes! {
    /// The example relay's own error codes. A grant the sidecar refuses is answered with the
    /// sidecar's code (a [`super::redeemer::RedeemerErrorCode`]).
    pub enum RelayErrorCode {
        /// 401: no `Authorization: Bearer <grant>`.
        GrantRequired = "grant_required",
        /// 503: the sidecar could not be asked.
        Unavailable = "unavailable",
        /// 400: a chunk id that is not 22 base64url characters.
        BadId = "bad_id",
        /// 413: a chunk over 4 MiB.
        TooLarge = "too_large",
        /// 409: a chunk with this id exists.
        Exists = "exists",
        /// 500: the relay could not write.
        Storage = "storage",
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
