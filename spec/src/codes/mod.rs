//! The short codes people and relays handle: gift card codes, grant codes, and the wallet's
//! export file.

pub mod card;
pub mod export;
pub mod grant;
