//! `cloudmart doctor cluster`: the live counterpart of `doctor manifests`.
//!
//! One check reads the namespace through the Kubernetes API
//! ([`snapshot`]), runs the same rules as on files over the live objects,
//! adds what only a running cluster shows ([`observe`]), runs the gateway
//! smoke check it is given, and scores every catalogued fault
//! ([`scoreboard`]).
//!
//! The client is any [`kube::Client`]: [`Cluster::connect`] builds one from
//! the kubeconfig, and tests build one from a tower service that answers
//! with recorded API objects.

pub mod observe;
pub mod scoreboard;
pub mod snapshot;

use std::future::Future;
use std::time::Duration;

pub use k8s_openapi::jiff::Timestamp;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

use crate::catalogue::Catalogue;
use crate::rules::{self, Context};
use observe::{RestartCounts, Window};
use scoreboard::{Inputs, Scoreboard, SmokeOutcome};
use snapshot::Snapshot;

/// The cluster could not be read: no configuration, the API server did not
/// answer, or it refused. One line, ready to print.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterError(pub String);

impl std::fmt::Display for ClusterError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ClusterError {}

impl ClusterError {
    /// Describes a failed API call to the server at `url`.
    pub fn from_kube(e: &kube::Error, url: &str) -> Self {
        if let kube::Error::Api(status) = e {
            let what = match status.code {
                401 => "refused the credentials",
                403 => "denied access",
                _ => "answered with an error",
            };
            return Self(format!(
                "the Kubernetes API server at {url} {what} ({} {}): {}",
                status.code, status.reason, status.message
            ));
        }
        let mut chain = vec![e.to_string()];
        let mut source = std::error::Error::source(e);
        let mut refused = false;
        while let Some(s) = source {
            if let Some(io) = s.downcast_ref::<std::io::Error>() {
                refused |= io.kind() == std::io::ErrorKind::ConnectionRefused;
            }
            chain.push(s.to_string());
            source = s.source();
        }
        let detail = if refused {
            "connection refused (is the cluster running? `k3d cluster list`)".to_owned()
        } else {
            chain.last().cloned().unwrap_or_default()
        };
        Self(format!(
            "cannot reach the Kubernetes API server at {url}: {detail}"
        ))
    }
}

/// A Kubernetes API server to check, and how to name it in messages.
#[derive(Clone)]
pub struct Cluster {
    client: Client,
    url: String,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster").field("url", &self.url).finish()
    }
}

impl Cluster {
    /// Wraps a client (tests pass one built on recorded objects).
    pub fn new(client: Client, url: impl Into<String>) -> Self {
        Self {
            client,
            url: url.into(),
        }
    }

    /// Connects the way kubectl does: `KUBECONFIG` or `~/.kube/config`, its
    /// current context or `context`, else the in-cluster service account.
    pub async fn connect(context: Option<&str>) -> Result<Self, ClusterError> {
        let mut config = match context {
            Some(name) => {
                let options = KubeConfigOptions {
                    context: Some(name.to_owned()),
                    ..KubeConfigOptions::default()
                };
                Config::from_kubeconfig(&options).await.map_err(|e| {
                    let known = Kubeconfig::read()
                        .map(|k| {
                            k.contexts
                                .iter()
                                .map(|c| c.name.clone())
                                .collect::<Vec<_>>()
                                .join(", ")
                        })
                        .unwrap_or_default();
                    ClusterError(format!(
                        "cannot use context {name} from the kubeconfig: {e}{}",
                        if known.is_empty() {
                            String::new()
                        } else {
                            format!(" (it has: {known})")
                        }
                    ))
                })?
            }
            None => Config::infer().await.map_err(|e| {
                ClusterError(format!(
                    "no Kubernetes configuration: {} (set KUBECONFIG, or create the cluster with scripts/k3d-up.sh)",
                    e.to_string().replace('\n', " ")
                ))
            })?,
        };
        config.connect_timeout = Some(Duration::from_secs(5));
        config.read_timeout = Some(Duration::from_secs(20));
        Self::from_config(config)
    }

    /// A client for `config`'s API server.
    pub fn from_config(config: Config) -> Result<Self, ClusterError> {
        // rustls cannot choose between the two crypto back-ends compiled
        // into this binary; without a default it panics on the first TLS
        // client. Installing fails only when one is already installed.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let url = config
            .cluster_url
            .to_string()
            .trim_end_matches('/')
            .to_owned();
        let client = Client::try_from(config)
            .map_err(|e| ClusterError(format!("cannot set up a client for {url}: {e}")))?;
        Ok(Self::new(client, url))
    }

    /// The API server's address, as given by the configuration.
    pub fn url(&self) -> &str {
        &self.url
    }
}

/// What to check and how.
#[derive(Debug, Clone)]
pub struct Options {
    /// The namespace the scenario runs in.
    pub namespace: String,
    /// How far back restarts and probe failures count.
    pub window: Duration,
}

/// Checks a cluster, once or round after round (`--watch`): restart counts
/// are remembered between rounds.
#[derive(Debug)]
pub struct Checker {
    cluster: Cluster,
    catalogue: Catalogue,
    rules: Context,
    options: Options,
    restarts: Option<RestartCounts>,
}

impl Checker {
    /// A checker of `cluster` against `catalogue`'s faults.
    pub fn new(cluster: Cluster, catalogue: Catalogue, rules: Context, options: Options) -> Self {
        Self {
            cluster,
            catalogue,
            rules,
            options,
            restarts: None,
        }
    }

    /// Reads the cluster while `smoke` runs, and scores the result as of
    /// `now`.
    pub async fn check(
        &mut self,
        now: Timestamp,
        smoke: impl Future<Output = SmokeOutcome>,
    ) -> Result<Scoreboard, ClusterError> {
        let fetch = Snapshot::fetch(
            &self.cluster.client,
            &self.options.namespace,
            &self.cluster.url,
        );
        let (snapshot, smoke) = tokio::join!(fetch, smoke);
        let snapshot = snapshot?;
        let manifests = snapshot.manifests().map_err(|e| {
            ClusterError(format!(
                "cannot read the objects the API server returned: {e}"
            ))
        })?;
        let mut context = self.rules.clone();
        if let Some(classes) = &snapshot.storage_classes {
            context.storage_classes.clone_from(classes);
        }
        let findings = rules::check(&manifests, &context);
        let window = Window {
            now,
            seconds: i64::try_from(self.options.window.as_secs()).unwrap_or(i64::MAX),
        };
        let (observations, restarts) = observe::observe(&snapshot, window, self.restarts.as_ref());
        self.restarts = Some(restarts);
        let inputs = Inputs {
            namespace: self.options.namespace.clone(),
            checked_at: now.to_string(),
            objects: manifests.objects().iter().map(|o| o.id()).collect(),
            findings,
            observations,
            smoke,
            notes: snapshot.notes,
        };
        Ok(Scoreboard::build(&self.catalogue, inputs))
    }
}
