//! Tokens in the configuration: written in the file (`token`) or named by
//! an environment variable (`token_env`), never both. The admin endpoints
//! and every webhook endpoint read theirs here, so both refuse the same
//! mistakes with the same words; and the token a request presents, read
//! from its `Authorization` header one way for admin, webhooks and triage.

/// Shortest token accepted: anyone who can reach the port may guess.
pub const MIN_TOKEN_LEN: usize = 16;

/// The token of an `Authorization: Bearer <token>` value (the scheme in
/// any case), as bytes: callers compare it in constant time.
pub fn bearer(authorization: &[u8]) -> Option<&[u8]> {
    authorization
        .get(..7)
        .filter(|scheme| scheme.eq_ignore_ascii_case(b"bearer "))
        .map(|_| &authorization[7..])
}

/// Why a configured token cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("set token or token_env, not both")]
    Both,
    #[error("token_env: environment variable {0} is not set")]
    EnvUnset(String),
    #[error("the token must be at least {MIN_TOKEN_LEN} characters")]
    TooShort,
}

/// The token set as `token`, or read through `env` from the variable
/// `token_env` names; `None` when neither is set (what that means is the
/// caller's decision).
pub fn configured_token(
    token: Option<&str>,
    token_env: Option<&str>,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Option<String>, TokenError> {
    let token = match (token, token_env) {
        (None, None) => return Ok(None),
        (Some(_), Some(_)) => return Err(TokenError::Both),
        (Some(token), None) => token.to_owned(),
        (None, Some(var)) => env(var).ok_or_else(|| TokenError::EnvUnset(var.to_owned()))?,
    };
    if token.len() < MIN_TOKEN_LEN {
        return Err(TokenError::TooShort);
    }
    Ok(Some(token))
}

#[cfg(test)]
mod tests {
    use super::*;

    const LONG: &str = "0123456789abcdef";

    #[test]
    fn the_bearer_scheme_is_read_in_any_case() {
        assert_eq!(bearer(b"Bearer abc"), Some(&b"abc"[..]));
        assert_eq!(bearer(b"bEARER abc"), Some(&b"abc"[..]));
        assert_eq!(bearer(b"Basic abc"), None);
        assert_eq!(bearer(b"Bearer"), None);
    }

    #[test]
    fn a_token_comes_from_exactly_one_place_and_is_long_enough() {
        let env = |var: &str| (var == "SET").then(|| LONG.to_string());
        type Case = (
            Option<&'static str>,
            Option<&'static str>,
            Result<Option<String>, TokenError>,
        );
        let cases: [Case; 6] = [
            (None, None, Ok(None)),
            (Some(LONG), None, Ok(Some(LONG.into()))),
            (None, Some("SET"), Ok(Some(LONG.into()))),
            (Some(LONG), Some("SET"), Err(TokenError::Both)),
            (
                None,
                Some("UNSET"),
                Err(TokenError::EnvUnset("UNSET".into())),
            ),
            (Some("short"), None, Err(TokenError::TooShort)),
        ];
        for (token, token_env, want) in cases {
            assert_eq!(
                configured_token(token, token_env, env),
                want,
                "{token:?} {token_env:?}"
            );
        }
    }
}
