//! The Privacy Pass HTTP authentication scheme (RFC 9577): an origin's challenges in
//! `WWW-Authenticate`, a client's token in `Authorization`.
//!
//! Produced in the RFC's own form: `PrivateToken challenge="…", token-key="…", max-age=N`
//! and `PrivateToken token="…"`, values in padded base64url (RFC 4648 section 5) inside
//! quoted strings. Parsed leniently, as RFC 9110 section 11 allows: several challenges in one
//! header, other schemes among them, parameter names in any case, values quoted or not,
//! padded or not, unknown parameters ignored. Every value is bounded and decoded into a
//! checked type ([`TokenChallenge`], [`TokenPublicKey`], [`Token`]) before it is used.

use crate::encoding::b64_encode_padded;
use crate::key::TokenPublicKey;
use crate::token::Token;
use crate::token::challenge::TokenChallenge;
use base64::Engine as _;
use base64::engine::general_purpose::{URL_SAFE, URL_SAFE_NO_PAD};

/// The scheme's name (compared without regard to case).
pub const SCHEME: &str = "PrivateToken";

/// The longest header value read: a few challenges of RSA-2048 keys fit many times over.
pub const MAX_HEADER_LEN: usize = 16 * 1024;

/// Why a header is not what the scheme says.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    /// Longer than [`MAX_HEADER_LEN`].
    #[error("the header is longer than {MAX_HEADER_LEN} bytes")]
    TooLong,
    /// No `PrivateToken` challenge or credentials in it.
    #[error("no PrivateToken {what} in the header")]
    NotPrivateToken {
        /// `challenge` or `token`.
        what: &'static str,
    },
    /// A required parameter is missing.
    #[error("the PrivateToken {param} parameter is missing")]
    Missing {
        /// The parameter.
        param: &'static str,
    },
    /// A parameter is given twice.
    #[error("the PrivateToken {param} parameter is given twice")]
    Repeated {
        /// The parameter.
        param: &'static str,
    },
    /// A value that is not base64url, or does not decode to what it should.
    #[error("the PrivateToken {param} parameter is not a valid {expected}")]
    Invalid {
        /// The parameter.
        param: &'static str,
        /// What it should hold.
        expected: &'static str,
    },
    /// Not the header grammar (an unclosed quote, a parameter without a name).
    #[error("the header does not follow the authentication header grammar")]
    Grammar,
}

/// One challenge of an origin: the token it asks for, and the key that must have signed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrivateTokenChallenge {
    /// The token challenge (its digest is what the token's `challenge_digest` must be).
    pub challenge: TokenChallenge,
    /// The issuer key whose tokens the origin takes.
    pub token_key: TokenPublicKey,
    /// How long, in seconds, the challenge may be answered (`max-age`), if said.
    pub max_age: Option<u64>,
}

impl PrivateTokenChallenge {
    /// The header value of this one challenge (join several with `, `).
    pub fn header_value(&self) -> String {
        let mut value = format!(
            "{SCHEME} challenge=\"{}\", token-key=\"{}\"",
            b64_encode_padded(self.challenge.to_bytes()),
            b64_encode_padded(self.token_key.spki())
        );
        if let Some(max_age) = self.max_age {
            value.push_str(&format!(", max-age={max_age}"));
        }
        value
    }
}

/// `WWW-Authenticate` with one challenge per entry of `challenges`, in order, as many as fit
/// in [`MAX_HEADER_LEN`] (the longest header a client reads, about 30 challenges of RSA-2048
/// keys): those after the first that does not fit are left out, so the header is never one
/// that clients refuse whole.
pub fn www_authenticate(challenges: &[PrivateTokenChallenge]) -> String {
    let mut header = String::new();
    for challenge in challenges {
        let value = challenge.header_value();
        let separator = if header.is_empty() { "" } else { ", " };
        if header.len() + separator.len() + value.len() > MAX_HEADER_LEN {
            break;
        }
        header.push_str(separator);
        header.push_str(&value);
    }
    header
}

/// `Authorization` carrying `token`.
pub fn authorization(token: &Token) -> String {
    format!("{SCHEME} token=\"{}\"", b64_encode_padded(token.to_bytes()))
}

/// Every valid `PrivateToken` challenge in a `WWW-Authenticate` value, in order; other
/// schemes are skipped. An invalid `PrivateToken` challenge is skipped too when a valid one
/// is there (a client takes what it can answer); with none valid, the first one's error.
pub fn parse_www_authenticate(value: &str) -> Result<Vec<PrivateTokenChallenge>, HeaderError> {
    let mut found = Vec::new();
    let mut first_error = None;
    for challenge in challenges(value)? {
        if !challenge.scheme.eq_ignore_ascii_case(SCHEME) {
            continue;
        }
        match parse_challenge(&challenge.params) {
            Ok(c) => found.push(c),
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    match (found.is_empty(), first_error) {
        (false, _) => Ok(found),
        (true, Some(e)) => Err(e),
        (true, None) => Err(HeaderError::NotPrivateToken { what: "challenge" }),
    }
}

/// The token in an `Authorization` value (`PrivateToken token=…`).
pub fn parse_authorization(value: &str) -> Result<Token, HeaderError> {
    let mut credentials = challenges(value)?.into_iter();
    let Some(first) = credentials.next() else {
        return Err(HeaderError::NotPrivateToken { what: "token" });
    };
    // Authorization carries one set of credentials.
    if !first.scheme.eq_ignore_ascii_case(SCHEME) || credentials.next().is_some() {
        return Err(HeaderError::NotPrivateToken { what: "token" });
    }
    let bytes = param(&first.params, "token")?.ok_or(HeaderError::Missing { param: "token" })?;
    Token::from_bytes(&bytes).map_err(|_| HeaderError::Invalid {
        param: "token",
        expected: "token of type 0x0002",
    })
}

fn parse_challenge(params: &[(String, String)]) -> Result<PrivateTokenChallenge, HeaderError> {
    let challenge =
        param(params, "challenge")?.ok_or(HeaderError::Missing { param: "challenge" })?;
    let challenge = TokenChallenge::from_bytes(&challenge).map_err(|_| HeaderError::Invalid {
        param: "challenge",
        expected: "TokenChallenge",
    })?;
    let key = param(params, "token-key")?.ok_or(HeaderError::Missing { param: "token-key" })?;
    let token_key = TokenPublicKey::from_spki(&key).map_err(|_| HeaderError::Invalid {
        param: "token-key",
        expected: "RSA-PSS public key",
    })?;
    let max_age = match one(params, "max-age")? {
        None => None,
        Some(v) => Some(v.parse().map_err(|_| HeaderError::Invalid {
            param: "max-age",
            expected: "number of seconds",
        })?),
    };
    Ok(PrivateTokenChallenge {
        challenge,
        token_key,
        max_age,
    })
}

/// The value of parameter `name`, at most once.
fn one<'a>(
    params: &'a [(String, String)],
    name: &'static str,
) -> Result<Option<&'a str>, HeaderError> {
    let mut values = params
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str());
    let value = values.next();
    if values.next().is_some() {
        return Err(HeaderError::Repeated { param: name });
    }
    Ok(value)
}

/// The base64url value of parameter `name` decoded, padded or not.
fn param(params: &[(String, String)], name: &'static str) -> Result<Option<Vec<u8>>, HeaderError> {
    let Some(value) = one(params, name)? else {
        return Ok(None);
    };
    let invalid = HeaderError::Invalid {
        param: name,
        expected: "base64url value",
    };
    let unpadded = value
        .strip_suffix("==")
        .or_else(|| value.strip_suffix('='))
        .unwrap_or(value);
    // Padding, if any, must be the padding of this length (so one value has one spelling
    // apart from the padding itself).
    if unpadded.len() != value.len() && URL_SAFE.decode(value).is_err() {
        return Err(invalid);
    }
    URL_SAFE_NO_PAD
        .decode(unpadded)
        .map(Some)
        .map_err(|_| invalid)
}

/// One challenge (or set of credentials) of an authentication header: its scheme and
/// parameters, names as written.
#[derive(Debug)]
struct Challenge {
    scheme: String,
    params: Vec<(String, String)>,
}

fn is_tchar(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c)
}

/// Splits a header value into challenges (RFC 9110 section 11.6.1): a comma-separated list
/// in which an element that starts with a scheme name followed by a space opens a new
/// challenge, and an element `name=value` is a parameter of the current one. A token68 (as
/// after `Basic`) is kept as a parameter with an empty name.
fn challenges(value: &str) -> Result<Vec<Challenge>, HeaderError> {
    if value.len() > MAX_HEADER_LEN {
        return Err(HeaderError::TooLong);
    }
    let mut out: Vec<Challenge> = Vec::new();
    for element in split_list(value)? {
        let element = element.trim_matches([' ', '\t']);
        if element.is_empty() {
            continue;
        }
        let name_end = element
            .find(|c: char| !is_tchar(c))
            .unwrap_or(element.len());
        let (name, rest) = element.split_at(name_end);
        if name.is_empty() {
            return Err(HeaderError::Grammar);
        }
        let rest_trimmed = rest.trim_start_matches([' ', '\t']);
        if let Some(value) = param_value(rest_trimmed) {
            // `name=value`: a parameter of the current challenge.
            let current = out.last_mut().ok_or(HeaderError::Grammar)?;
            current.params.push((name.to_owned(), unquote(value)?));
            continue;
        }
        // A scheme, alone or followed by its first parameter (or a token68).
        let mut challenge = Challenge {
            scheme: name.to_owned(),
            params: Vec::new(),
        };
        if !rest_trimmed.is_empty() {
            if rest.len() == rest_trimmed.len() {
                return Err(HeaderError::Grammar);
            }
            let param_end = rest_trimmed
                .find(|c: char| !is_tchar(c))
                .unwrap_or(rest_trimmed.len());
            let (param, after) = rest_trimmed.split_at(param_end);
            match param_value(after.trim_start_matches([' ', '\t'])) {
                Some(value) if !param.is_empty() => {
                    challenge.params.push((param.to_owned(), unquote(value)?));
                }
                _ => challenge
                    .params
                    .push((String::new(), rest_trimmed.to_owned())),
            }
        }
        out.push(challenge);
    }
    Ok(out)
}

/// The value after `=` in `= value`, if that is what `text` is: a parameter's value is not
/// empty and does not start with `=` (then `text` is a token68's padding).
fn param_value(text: &str) -> Option<&str> {
    let value = text.strip_prefix('=')?.trim_start_matches([' ', '\t']);
    (!value.is_empty() && !value.starts_with('=')).then_some(value)
}

/// Splits at commas outside quoted strings.
fn split_list(value: &str) -> Result<Vec<&str>, HeaderError> {
    let mut parts = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, c) in value.char_indices() {
        match (quoted, escaped, c) {
            (true, true, _) => escaped = false,
            (true, false, '\\') => escaped = true,
            (_, false, '"') => quoted = !quoted,
            (false, _, ',') => {
                parts.push(&value[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if quoted {
        return Err(HeaderError::Grammar);
    }
    parts.push(&value[start..]);
    Ok(parts)
}

/// A parameter value: a quoted string (unescaped) or a token, with nothing after it.
fn unquote(value: &str) -> Result<String, HeaderError> {
    let value = value.trim_end_matches([' ', '\t']);
    let Some(inner) = value.strip_prefix('"') else {
        // A token; a base64 value's padding is let through, as clients send it so.
        if value.is_empty() || !value.chars().all(|c| is_tchar(c) || c == '=') {
            return Err(HeaderError::Grammar);
        }
        return Ok(value.to_owned());
    };
    let mut out = String::new();
    let mut chars = inner.chars();
    loop {
        match chars.next() {
            None => return Err(HeaderError::Grammar),
            Some('\\') => out.push(chars.next().ok_or(HeaderError::Grammar)?),
            Some('"') => break,
            Some(c) => out.push(c),
        }
    }
    if chars.next().is_some() {
        return Err(HeaderError::Grammar);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_split_into_challenges_and_parameters() {
        let parsed = challenges(
            "Basic realm=\"a, b\", PrivateToken challenge=\"x\", token-key=y, max-age=10, Bearer",
        )
        .expect("grammar");
        let schemes: Vec<&str> = parsed.iter().map(|c| c.scheme.as_str()).collect();
        assert_eq!(schemes, ["Basic", "PrivateToken", "Bearer"]);
        assert_eq!(parsed[0].params, [("realm".to_owned(), "a, b".to_owned())]);
        assert_eq!(parsed[1].params.len(), 3);
        assert_eq!(
            parsed[1].params[1],
            ("token-key".to_owned(), "y".to_owned())
        );
        let token68 = challenges("Basic dXNlcjpwYXNz==").expect("grammar");
        assert_eq!(
            token68[0].params,
            [(String::new(), "dXNlcjpwYXNz==".to_owned())]
        );
        let single_pad = challenges("Basic abc=").expect("grammar");
        assert_eq!(single_pad[0].params, [(String::new(), "abc=".to_owned())]);
        for bad in [
            "PrivateToken challenge=\"x",
            "=x",
            "PrivateToken a=\"x\"y",
            "a=b",
        ] {
            assert_eq!(challenges(bad).err(), Some(HeaderError::Grammar), "{bad}");
        }
        assert_eq!(
            challenges(&"a".repeat(MAX_HEADER_LEN + 1)).err(),
            Some(HeaderError::TooLong)
        );
    }

    #[test]
    fn quoted_strings_unescape() {
        assert_eq!(unquote("\"a\\\"b\"").expect("quoted"), "a\"b");
        assert_eq!(unquote("abc=").expect("token"), "abc=");
        assert!(unquote("\"abc").is_err());
    }
}
