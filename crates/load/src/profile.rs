//! The traffic a run sends: which operation request `n` is, and the HTTP
//! request that operation makes.
//!
//! The mix is a pure function of the request index, so two runs of the
//! same profile send the same sequence and can be compared. Within every
//! window of [`Profile`]'s slot count the shares are exact; a stride that
//! is coprime to the window spreads the operations through it instead of
//! sending them in blocks.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue};
use reqwest::{Client, RequestBuilder, Url};
use serde::{Deserialize, Serialize};

use crate::config::LoadError;

/// A named traffic mix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Profile {
    /// Only orders: the workshop loop that goes through every service.
    Orders,
    /// 50% browse, 15% login, 35% orders: a shop on an ordinary day.
    Mixed,
    /// 70% login, 30% orders: puts the weight on auth-service.
    LoginHeavy,
}

/// What one request does; the report breaks latency down by it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Operation {
    /// `POST /api/orders` with a fresh `Idempotency-Key`.
    Order,
    /// `GET /api/orders?limit=10`.
    Browse,
    /// `POST /api/auth/login` as a demo user.
    Login,
}

/// One window of slots: `(operation, slots out of the window)`.
type Mix = &'static [(Operation, u64)];

const ORDERS_MIX: Mix = &[(Operation::Order, 1)];
const MIXED_MIX: Mix = &[
    (Operation::Browse, 10),
    (Operation::Login, 3),
    (Operation::Order, 7),
];
const LOGIN_HEAVY_MIX: Mix = &[(Operation::Login, 7), (Operation::Order, 3)];

/// Step through a window; coprime to 20 and to 10, so it visits every slot.
const STRIDE: u64 = 7;

impl Profile {
    /// Every profile, in the order help text lists them.
    pub const ALL: [Profile; 3] = [Profile::Orders, Profile::Mixed, Profile::LoginHeavy];

    /// The name the CLI and the report use.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Orders => "orders",
            Self::Mixed => "mixed",
            Self::LoginHeavy => "login-heavy",
        }
    }

    fn mix(self) -> Mix {
        match self {
            Self::Orders => ORDERS_MIX,
            Self::Mixed => MIXED_MIX,
            Self::LoginHeavy => LOGIN_HEAVY_MIX,
        }
    }

    /// Whether the mix lists orders, which needs a signed-in customer.
    pub fn browses(self) -> bool {
        self.mix()
            .iter()
            .any(|&(operation, slots)| operation == Operation::Browse && slots > 0)
    }

    /// The operation of request `index` (0-based). Deterministic, so runs
    /// are reproducible.
    pub fn operation(self, index: u64) -> Operation {
        let mix = self.mix();
        let window: u64 = mix.iter().map(|(_, slots)| slots).sum();
        let mut slot = index.wrapping_mul(STRIDE) % window;
        for &(operation, slots) in mix {
            if slot < slots {
                return operation;
            }
            slot -= slots;
        }
        // The slots sum to the window, so the loop always returns.
        Operation::Order
    }
}

impl fmt::Display for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Profile {
    type Err = LoadError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| LoadError::UnknownProfile(s.to_owned()))
    }
}

impl Operation {
    /// The name the report uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Order => "order",
            Self::Browse => "browse",
            Self::Login => "login",
        }
    }

    /// Builds request `index` of this operation. Logins alternate between
    /// the two demo users; orders cycle through 100 item names; a browse
    /// lists the signed-in customer's orders (listing needs a login).
    pub(crate) fn request(
        self,
        client: &Client,
        endpoints: &Endpoints,
        index: u64,
    ) -> RequestBuilder {
        const JSON: HeaderValue = HeaderValue::from_static("application/json");
        const LOGINS: [&str; 2] = [
            r#"{"username":"alice","password":"alice-secret"}"#,
            r#"{"username":"bob","password":"bob-secret"}"#,
        ];
        match self {
            Self::Order => client
                .post(endpoints.orders.clone())
                .header(CONTENT_TYPE, JSON)
                .header("idempotency-key", uuid::Uuid::new_v4().to_string())
                .body(format!(r#"{{"item":"item-{}","quantity":1}}"#, index % 100)),
            Self::Browse => {
                let request = client.get(endpoints.browse.clone());
                match &endpoints.browse_auth {
                    Some(auth) => request.header(AUTHORIZATION, auth.clone()),
                    None => request,
                }
            }
            Self::Login => client
                .post(endpoints.login.clone())
                .header(CONTENT_TYPE, JSON)
                .body(LOGINS[(index % 2) as usize]),
        }
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The URLs the operations call, resolved once per run.
#[derive(Debug, Clone)]
pub(crate) struct Endpoints {
    orders: Url,
    browse: Url,
    login: Url,
    /// `Bearer <token>` of the customer whose orders a browse lists.
    browse_auth: Option<HeaderValue>,
}

impl Endpoints {
    /// Checks `base` and appends the API paths to it.
    pub(crate) fn new(base: &str) -> Result<Self, LoadError> {
        let invalid = |reason: String| LoadError::InvalidBaseUrl {
            url: base.to_owned(),
            reason,
        };
        if !base.contains("://") {
            // Url would read `localhost:8080` as scheme `localhost`.
            return Err(invalid(
                "has no scheme; expected one like http://localhost:8080".to_owned(),
            ));
        }
        let url = Url::parse(base).map_err(|e| {
            invalid(format!(
                "is not a URL ({e}); expected one like http://localhost:8080"
            ))
        })?;
        match url.scheme() {
            "http" => {}
            "https" => {
                return Err(invalid(
                    "uses https, but this build has no TLS (in-cluster traffic is plain \
                     HTTP); use http://, e.g. through kubectl port-forward"
                        .to_owned(),
                ));
            }
            other => {
                return Err(invalid(format!(
                    "has scheme {other:?}; expected http://host:port"
                )));
            }
        }
        if url.query().is_some() {
            return Err(invalid(
                "has a query; give only scheme, host, port and an optional path prefix".to_owned(),
            ));
        }
        if url.fragment().is_some() {
            return Err(invalid(
                "has a fragment; give only scheme, host, port and an optional path prefix"
                    .to_owned(),
            ));
        }
        let prefix = url.path().trim_end_matches('/').to_owned();
        let at = |path: &str| {
            let mut joined = url.clone();
            joined.set_path(&format!("{prefix}{path}"));
            joined
        };
        let mut browse = at("/api/orders");
        browse.set_query(Some("limit=10"));
        Ok(Self {
            orders: at("/api/orders"),
            browse,
            login: at("/api/auth/login"),
            browse_auth: None,
        })
    }

    /// Signs in the demo customer whose orders the browse share lists, once
    /// per run. Without a token every browse answers 401, which the report
    /// shows; the reason is returned for the caller to print.
    pub(crate) async fn sign_in(
        &mut self,
        client: &Client,
        timeout: Duration,
    ) -> Result<(), String> {
        #[derive(Deserialize)]
        struct Token {
            token: String,
        }
        let answer = client
            .post(self.login.clone())
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .body(BROWSER)
            .timeout(timeout)
            .send()
            .await
            .map_err(|e| format!("the sign-in request failed: {e}"))?;
        let status = answer.status();
        if !status.is_success() {
            return Err(format!("the sign-in answered {status}"));
        }
        let body = answer
            .bytes()
            .await
            .map_err(|e| format!("the sign-in answer could not be read: {e}"))?;
        let token: Token = serde_json::from_slice(&body)
            .map_err(|e| format!("the sign-in answer has no token: {e}"))?;
        let value = HeaderValue::try_from(format!("Bearer {}", token.token))
            .map_err(|_| "the sign-in token is not a header value".to_owned())?;
        self.browse_auth = Some(value);
        Ok(())
    }
}

/// The customer whose orders the browse share lists.
const BROWSER: &str = r#"{"username":"alice","password":"alice-secret"}"#;

#[cfg(test)]
mod tests {
    use super::*;

    fn shares(profile: Profile, n: u64) -> [u64; 3] {
        let mut counts = [0; 3];
        for i in 0..n {
            counts[profile.operation(i) as usize] += 1;
        }
        counts
    }

    #[test]
    fn profiles_parse_from_their_names_and_back() {
        for profile in Profile::ALL {
            assert_eq!(profile.as_str().parse::<Profile>().unwrap(), profile);
            assert_eq!(profile.to_string(), profile.as_str());
        }
        let err = "burst".parse::<Profile>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown profile \"burst\"; expected one of: orders, mixed, login-heavy"
        );
    }

    #[test]
    fn each_profile_has_its_exact_share_in_every_window() {
        // [order, browse, login]
        assert_eq!(shares(Profile::Orders, 20), [20, 0, 0]);
        assert_eq!(shares(Profile::Mixed, 20), [7, 10, 3]);
        assert_eq!(shares(Profile::Mixed, 2000), [700, 1000, 300]);
        assert_eq!(shares(Profile::LoginHeavy, 10), [3, 0, 7]);
        assert_eq!(shares(Profile::LoginHeavy, 1000), [300, 0, 700]);
    }

    #[test]
    fn the_mixed_profile_interleaves_operations_instead_of_sending_blocks() {
        let first: Vec<_> = (0..20).map(|i| Profile::Mixed.operation(i)).collect();
        let longest_run = first
            .chunk_by(|a, b| a == b)
            .map(<[Operation]>::len)
            .max()
            .unwrap();
        assert!(longest_run <= 2, "{first:?}");
    }

    #[test]
    fn endpoints_keep_a_path_prefix_and_ignore_a_trailing_slash() {
        for base in ["http://gw:8080/shop", "http://gw:8080/shop/"] {
            let e = Endpoints::new(base).unwrap();
            assert_eq!(e.orders.as_str(), "http://gw:8080/shop/api/orders");
            assert_eq!(e.browse.as_str(), "http://gw:8080/shop/api/orders?limit=10");
            assert_eq!(e.login.as_str(), "http://gw:8080/shop/api/auth/login");
        }
        let e = Endpoints::new("http://gw:8080").unwrap();
        assert_eq!(e.orders.as_str(), "http://gw:8080/api/orders");
    }
}
