//! A webhook endpoint as configured (`webhooks.<kind>[]`): its name, the
//! registry it reports for, its token, and how many events one request may
//! list. Requests find their endpoint by the token they carry.

use std::fmt;

use serde::Deserialize;
use subtle::ConstantTimeEq;

use super::WebhookKind;
use crate::event::EndpointName;
use crate::reference::RegistryPrefix;
use crate::secret::{TokenError, configured_token};
use crate::sources::json;

/// A request listing more events than its endpoint accepts (answered 413,
/// nothing recorded).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the request lists more than {max} events (JSON array entries, at any depth); \
     this endpoint accepts at most {max} per request (`max_events`)"
)]
pub struct TooManyEvents {
    pub max: usize,
}

/// Events one request may list unless an endpoint says otherwise. Registries
/// send one (distribution v3, Harbor, ECR) to a handful (distribution 2.8)
/// per request; an Event Grid batch is bounded by its preferred size, at
/// most the 1 MiB body limit, which real events (about 1 KiB each) fill at
/// about a thousand. A hostile 1 MiB body of `{}` lists 349,000.
pub const DEFAULT_MAX_EVENTS: usize = 1000;

/// One configured webhook endpoint (`webhooks.<kind>[]` in the service
/// configuration).
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointConfig {
    /// Names the endpoint in logs and errors, and scopes its event ids:
    /// unique within a kind. Renaming an endpoint forgets which of its
    /// events were already decided (a resend is decided again).
    pub name: String,
    /// The registry prefix the endpoint reports for (`host[:port][/path]`).
    /// Required for distribution, whose events carry no host; for the
    /// others it replaces the host the payload names.
    pub registry: Option<RegistryPrefix>,
    /// The shared secret: requests must carry `Authorization: Bearer
    /// <token>` (or exactly `<token>`, as Harbor's `auth_header` sends it).
    pub token: Option<String>,
    /// An environment variable holding the token, read at startup.
    pub token_env: Option<String>,
    /// Most events one request may list ([`DEFAULT_MAX_EVENTS`] by default).
    #[serde(default = "default_max_events")]
    pub max_events: usize,
}

fn default_max_events() -> usize {
    DEFAULT_MAX_EVENTS
}

// Configurations get logged; tokens must not be.
impl fmt::Debug for EndpointConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EndpointConfig")
            .field("name", &self.name)
            .field("registry", &self.registry)
            .field("token", &self.token.as_ref().map(|_| "***"))
            .field("token_env", &self.token_env)
            .field("max_events", &self.max_events)
            .finish()
    }
}

/// A configured endpoint with its token resolved.
pub struct Endpoint {
    pub name: EndpointName,
    pub registry: Option<RegistryPrefix>,
    token: Box<[u8]>,
    max_events: usize,
}

impl Endpoint {
    /// Refuses a body listing more than this endpoint's `max_events`
    /// events. Run before parsing: the count builds nothing, so a body over
    /// the cap costs one pass over its bytes and no per-event memory.
    pub fn check_event_count(&self, body: &[u8]) -> Result<(), TooManyEvents> {
        match json::count_array_elements(body, self.max_events) {
            Some(_) => Ok(()),
            None => Err(TooManyEvents {
                max: self.max_events,
            }),
        }
    }
}

/// Why the webhook endpoints cannot be served as configured.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EndpointError {
    #[error("webhooks.{kind}[{index}]: name is empty")]
    EmptyName { kind: &'static str, index: usize },
    /// `at` names the endpoint: `webhooks.<kind>[<index>] (<name>)`.
    #[error("{at}: {problem}")]
    Refused { at: String, problem: Problem },
}

/// What is wrong with one named endpoint.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    #[error("another {0} endpoint has the same name: names keep their events apart")]
    SameName(&'static str),
    #[error("set token or token_env: an endpoint without a secret would accept forged events")]
    NoToken,
    #[error(transparent)]
    Token(TokenError),
    #[error("another {0} endpoint has the same token")]
    SameToken(&'static str),
    #[error("max_events must be at least 1")]
    NoEvents,
    #[error("registry is required: distribution events name no host")]
    NoRegistry,
}

/// Every configured endpoint, by kind; requests are matched to an endpoint
/// by their token.
#[derive(Default)]
pub struct Endpoints {
    by_kind: Vec<(WebhookKind, Vec<Endpoint>)>,
}

impl Endpoints {
    /// Resolves tokens and checks the configuration: every endpoint has
    /// exactly one of `token` and `token_env`, tokens differ within a kind
    /// (the token is what tells two registries apart), names are set and
    /// differ within a kind (the name scopes event ids), and distribution
    /// endpoints name their registry.
    pub fn from_config(
        configs: &[(WebhookKind, &[EndpointConfig])],
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Endpoints, EndpointError> {
        let mut by_kind = Vec::new();
        for &(kind, configs) in configs {
            let mut endpoints: Vec<Endpoint> = Vec::new();
            for (index, c) in configs.iter().enumerate() {
                let kind_name = kind.as_str();
                if c.name.trim().is_empty() {
                    return Err(EndpointError::EmptyName {
                        kind: kind_name,
                        index,
                    });
                }
                let at = format!("webhooks.{kind_name}[{index}] ({})", c.name);
                let refused = |problem| {
                    Err(EndpointError::Refused {
                        at: at.clone(),
                        problem,
                    })
                };
                if endpoints.iter().any(|e| e.name.0 == c.name) {
                    return refused(Problem::SameName(kind_name));
                }
                let token = match configured_token(c.token.as_deref(), c.token_env.as_deref(), &env)
                {
                    Ok(Some(token)) => token,
                    Ok(None) => return refused(Problem::NoToken),
                    Err(e) => return refused(Problem::Token(e)),
                };
                if endpoints.iter().any(|e| *e.token == *token.as_bytes()) {
                    return refused(Problem::SameToken(kind_name));
                }
                if c.max_events == 0 {
                    return refused(Problem::NoEvents);
                }
                if kind == WebhookKind::Distribution && c.registry.is_none() {
                    return refused(Problem::NoRegistry);
                }
                endpoints.push(Endpoint {
                    name: EndpointName(c.name.clone()),
                    registry: c.registry.clone(),
                    token: token.into_bytes().into_boxed_slice(),
                    max_events: c.max_events,
                });
            }
            if !endpoints.is_empty() {
                by_kind.push((kind, endpoints));
            }
        }
        Ok(Endpoints { by_kind })
    }

    pub fn is_configured(&self, kind: WebhookKind) -> bool {
        self.by_kind.iter().any(|(k, _)| *k == kind)
    }

    /// The endpoint whose token the request carries: in the `Authorization`
    /// header, or, for kinds that allow it ([`WebhookKind::token_in_query`]),
    /// as the `access_token` query parameter when there is no header.
    pub fn authenticate_request(
        &self,
        kind: WebhookKind,
        authorization: Option<&[u8]>,
        query_token: Option<&str>,
    ) -> Option<&Endpoint> {
        let from_query = query_token.filter(|_| kind.token_in_query());
        self.authenticate(kind, authorization.or(from_query.map(str::as_bytes)))
    }

    /// The endpoint whose token the `Authorization` header carries. Every
    /// token of the kind is compared in constant time, so neither the
    /// match nor its position leaks through timing.
    pub fn authenticate(
        &self,
        kind: WebhookKind,
        authorization: Option<&[u8]>,
    ) -> Option<&Endpoint> {
        let presented = authorization?;
        let bearer = crate::secret::bearer(presented);
        let endpoints = self
            .by_kind
            .iter()
            .find(|(k, _)| *k == kind)
            .map(|(_, e)| e)?;
        let mut found = None;
        for endpoint in endpoints {
            let raw = endpoint.token.ct_eq(presented);
            let token = bearer.map_or(subtle::Choice::from(0), |b| endpoint.token.ct_eq(b));
            if bool::from(raw | token) {
                found = Some(endpoint);
            }
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN_A: &str = "token-a-0123456789abcdef";
    const TOKEN_B: &str = "token-b-0123456789abcdef";

    fn endpoint(name: &str, token: Option<&str>, token_env: Option<&str>) -> EndpointConfig {
        EndpointConfig {
            name: name.into(),
            registry: Some("r.example".parse().unwrap()),
            token: token.map(Into::into),
            token_env: token_env.map(Into::into),
            max_events: DEFAULT_MAX_EVENTS,
        }
    }

    fn env(var: &str) -> Option<String> {
        (var == "TOKEN_B").then(|| TOKEN_B.to_owned())
    }

    #[test]
    fn the_token_selects_the_endpoint_in_either_header_form() {
        let configs = [
            endpoint("a", Some(TOKEN_A), None),
            endpoint("b", None, Some("TOKEN_B")),
        ];
        let endpoints =
            Endpoints::from_config(&[(WebhookKind::Distribution, &configs)], env).unwrap();
        let auth = |header: &str| {
            endpoints
                .authenticate(WebhookKind::Distribution, Some(header.as_bytes()))
                .map(|e| e.name.0.as_str())
        };
        assert_eq!(auth(&format!("Bearer {TOKEN_A}")), Some("a"));
        assert_eq!(auth(&format!("bearer {TOKEN_B}")), Some("b"));
        assert_eq!(auth(TOKEN_B), Some("b"));
        assert_eq!(auth(&format!("Bearer {TOKEN_A}x")), None);
        assert_eq!(auth("Bearer "), None);
        assert_eq!(auth(""), None);
        assert!(
            endpoints
                .authenticate(WebhookKind::Distribution, None)
                .is_none()
        );
        // Tokens are per kind: a distribution token is no Harbor token.
        assert!(!endpoints.is_configured(WebhookKind::Harbor));
        assert!(
            endpoints
                .authenticate(WebhookKind::Harbor, Some(TOKEN_A.as_bytes()))
                .is_none()
        );
    }

    /// Endpoints must be told apart by token (which registry sent this?)
    /// and by name (which scopes event ids), and each must have a secret.
    #[test]
    fn configurations_that_cannot_tell_endpoints_apart_are_refused() {
        let refused = |index, name: &str, problem| EndpointError::Refused {
            at: format!("webhooks.{}[{index}] ({name})", "harbor"),
            problem,
        };
        let cases = [
            (
                vec![("a", Some(TOKEN_A), None), ("b", Some(TOKEN_A), None)],
                refused(1, "b", Problem::SameToken("harbor")),
            ),
            (
                vec![("a", Some(TOKEN_A), Some("TOKEN_B"))],
                refused(0, "a", Problem::Token(TokenError::Both)),
            ),
            (
                vec![("a", Some(TOKEN_A), None), ("a", Some(TOKEN_B), None)],
                refused(1, "a", Problem::SameName("harbor")),
            ),
            (vec![("a", None, None)], refused(0, "a", Problem::NoToken)),
            (
                vec![(" ", Some(TOKEN_A), None)],
                EndpointError::EmptyName {
                    kind: "harbor",
                    index: 0,
                },
            ),
        ];
        for (configured, want) in cases {
            let configs: Vec<_> = configured
                .iter()
                .map(|&(name, token, var)| endpoint(name, token, var))
                .collect();
            let got = Endpoints::from_config(&[(WebhookKind::Harbor, &configs)], env).err();
            assert_eq!(got.as_ref(), Some(&want), "{configured:?}");
        }
        let message = refused(1, "b", Problem::SameName("harbor")).to_string();
        assert_eq!(
            message,
            "webhooks.harbor[1] (b): another harbor endpoint has the same name: names keep \
             their events apart"
        );
        // The same name under another kind is another endpoint.
        let a = [endpoint("a", Some(TOKEN_A), None)];
        assert!(
            Endpoints::from_config(&[(WebhookKind::Acr, &a), (WebhookKind::Harbor, &a)], env)
                .is_ok()
        );
    }

    #[test]
    fn only_event_grid_may_send_its_token_in_the_query() {
        let configs = [endpoint("a", Some(TOKEN_A), None)];
        let endpoints = Endpoints::from_config(
            &[
                (WebhookKind::Acr, &configs),
                (WebhookKind::Harbor, &configs),
            ],
            env,
        )
        .unwrap();
        let found = |kind, header: Option<&str>, query: Option<&str>| {
            endpoints
                .authenticate_request(kind, header.map(str::as_bytes), query)
                .is_some()
        };
        assert!(found(WebhookKind::Acr, None, Some(TOKEN_A)));
        assert!(!found(WebhookKind::Acr, None, Some(TOKEN_B)));
        assert!(!found(WebhookKind::Harbor, None, Some(TOKEN_A)));
        assert!(found(WebhookKind::Harbor, Some(TOKEN_A), None));
        // A header, when sent, is what counts.
        assert!(!found(WebhookKind::Acr, Some(TOKEN_B), Some(TOKEN_A)));
    }

    #[test]
    fn tokens_never_reach_debug_output() {
        let text = format!("{:?}", endpoint("a", Some(TOKEN_A), None));
        assert!(!text.contains(TOKEN_A), "{text}");
    }
}
