//! What `doctor cluster` reads from the API server, in one pass, and the
//! manifest model the static rules run on.
//!
//! Every object is listed once per check. The controllers, Services,
//! ConfigMaps, Secrets, claims and Ingresses are rendered back to JSON
//! (which is YAML) without their server-managed noise and parsed by the
//! same [`Manifests`] model as files, so the rules have one code path.

use std::collections::BTreeMap;
use std::fmt::Debug;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::{
    ConfigMap, Endpoints, Event, PersistentVolumeClaim, Pod, Secret, Service,
};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::Ingress;
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::jiff::Timestamp;
use k8s_openapi::{ClusterResourceScope, NamespaceResourceScope};
use kube::api::ListParams;
use kube::{Api, Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::ClusterError;
use crate::model::Manifests;

/// Ready and not-ready addresses behind one Service.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EndpointCount {
    /// Addresses whose `ready` condition is true (or unset).
    pub ready: usize,
    /// Addresses that exist but are not ready.
    pub not_ready: usize,
}

/// Everything one check reads, as the API server returned it.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// The namespace read.
    pub namespace: String,
    pub deployments: Vec<Deployment>,
    pub stateful_sets: Vec<StatefulSet>,
    pub daemon_sets: Vec<DaemonSet>,
    /// ReplicaSets, to find the Deployment that owns a pod.
    pub replica_sets: Vec<ReplicaSet>,
    pub services: Vec<Service>,
    pub config_maps: Vec<ConfigMap>,
    /// Secrets: read so that a container's environment resolves as the
    /// kubelet resolves it; their values are never printed.
    pub secrets: Vec<Secret>,
    pub claims: Vec<PersistentVolumeClaim>,
    pub ingresses: Vec<Ingress>,
    pub pods: Vec<Pod>,
    /// Events (`core/v1`).
    pub events: Vec<Event>,
    /// Endpoints per Service name, from EndpointSlices (or Endpoints);
    /// `None` when neither could be read.
    pub endpoints: Option<BTreeMap<String, EndpointCount>>,
    /// Names of the cluster's storage classes; `None` when they could not be
    /// read (the rules then assume k3d's).
    pub storage_classes: Option<Vec<String>>,
    /// What could not be read, one line each.
    pub notes: Vec<String>,
}

async fn list<K>(client: &Client, namespace: &str) -> Result<Vec<K>, kube::Error>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    Ok(api.list(&ListParams::default()).await?.items)
}

async fn list_cluster<K>(client: &Client) -> Result<Vec<K>, kube::Error>
where
    K: Resource<Scope = ClusterResourceScope, DynamicType = ()> + Clone + DeserializeOwned + Debug,
{
    let api: Api<K> = Api::all(client.clone());
    Ok(api.list(&ListParams::default()).await?.items)
}

/// An optional list: the API refusing or not serving it is a note, not a
/// failure; not reaching the API server at all still is.
fn optional<K>(
    what: &str,
    result: Result<Vec<K>, kube::Error>,
    notes: &mut Vec<String>,
    url: &str,
) -> Result<Option<Vec<K>>, ClusterError> {
    match result {
        Ok(items) => Ok(Some(items)),
        Err(kube::Error::Api(status)) => {
            notes.push(format!(
                "could not read {what}: {} ({})",
                status.message, status.code
            ));
            Ok(None)
        }
        Err(e) => Err(ClusterError::from_kube(&e, url)),
    }
}

fn endpoint_counts_from_slices(slices: &[EndpointSlice]) -> BTreeMap<String, EndpointCount> {
    let mut counts: BTreeMap<String, EndpointCount> = BTreeMap::new();
    for slice in slices {
        let Some(service) = slice.labels().get("kubernetes.io/service-name") else {
            continue;
        };
        let count = counts.entry(service.clone()).or_default();
        for endpoint in slice.endpoints.iter().flatten() {
            let ready = endpoint.conditions.as_ref().and_then(|c| c.ready);
            if ready == Some(false) {
                count.not_ready += endpoint.addresses.len();
            } else {
                count.ready += endpoint.addresses.len();
            }
        }
    }
    counts
}

fn endpoint_counts_from_endpoints(endpoints: &[Endpoints]) -> BTreeMap<String, EndpointCount> {
    endpoints
        .iter()
        .map(|e| {
            let mut count = EndpointCount::default();
            for subset in e.subsets.iter().flatten() {
                count.ready += subset.addresses.as_ref().map_or(0, Vec::len);
                count.not_ready += subset.not_ready_addresses.as_ref().map_or(0, Vec::len);
            }
            (e.name_any(), count)
        })
        .collect()
}

impl Snapshot {
    /// Reads `namespace`. `url` names the API server in error messages.
    pub async fn fetch(client: &Client, namespace: &str, url: &str) -> Result<Self, ClusterError> {
        let c = client;
        let ns = namespace;
        let fatal = |e: kube::Error| ClusterError::from_kube(&e, url);
        // Pods first and alone: if the API server is unreachable, that is
        // one clear error instead of twelve.
        let pods = list::<Pod>(c, ns).await.map_err(fatal)?;
        let (deployments, stateful_sets, services, config_maps, secrets) = tokio::try_join!(
            list::<Deployment>(c, ns),
            list::<StatefulSet>(c, ns),
            list::<Service>(c, ns),
            list::<ConfigMap>(c, ns),
            list::<Secret>(c, ns),
        )
        .map_err(fatal)?;
        let (daemon_sets, replica_sets, claims, ingresses, events, slices, classes) = tokio::join!(
            list::<DaemonSet>(c, ns),
            list::<ReplicaSet>(c, ns),
            list::<PersistentVolumeClaim>(c, ns),
            list::<Ingress>(c, ns),
            list::<Event>(c, ns),
            list::<EndpointSlice>(c, ns),
            list_cluster::<StorageClass>(c),
        );
        let mut notes = Vec::new();
        let endpoints = match optional("EndpointSlices", slices, &mut Vec::new(), url)? {
            Some(slices) => Some(endpoint_counts_from_slices(&slices)),
            None => optional("Endpoints", list::<Endpoints>(c, ns).await, &mut notes, url)?
                .map(|e| endpoint_counts_from_endpoints(&e)),
        };
        let mut snapshot = Self {
            namespace: namespace.to_owned(),
            deployments,
            stateful_sets,
            services,
            config_maps,
            secrets,
            pods,
            daemon_sets: optional("DaemonSets", daemon_sets, &mut notes, url)?.unwrap_or_default(),
            replica_sets: optional("ReplicaSets", replica_sets, &mut notes, url)?
                .unwrap_or_default(),
            claims: optional("PersistentVolumeClaims", claims, &mut notes, url)?
                .unwrap_or_default(),
            ingresses: optional("Ingresses", ingresses, &mut notes, url)?.unwrap_or_default(),
            events: optional("Events", events, &mut notes, url)?.unwrap_or_default(),
            endpoints,
            storage_classes: None,
            notes: Vec::new(),
        };
        snapshot.storage_classes = optional("StorageClasses", classes, &mut Vec::new(), url)?
            .map(|classes| classes.iter().map(ResourceExt::name_any).collect());
        snapshot.notes = notes;
        Ok(snapshot)
    }

    /// The objects the static rules read, as one manifest set: controllers
    /// (not their pods), Services, ConfigMaps, Secrets, claims and Ingresses.
    pub fn manifests(&self) -> Result<Manifests, String> {
        let mut rendered = Vec::new();
        render_all(&self.deployments, &mut rendered);
        render_all(&self.stateful_sets, &mut rendered);
        render_all(&self.daemon_sets, &mut rendered);
        render_all(&self.services, &mut rendered);
        render_all(&self.config_maps, &mut rendered);
        render_all(&self.secrets, &mut rendered);
        render_all(&self.claims, &mut rendered);
        render_all(&self.ingresses, &mut rendered);
        Manifests::from_objects(
            rendered
                .iter()
                .map(|(id, text)| (id.as_str(), text.as_str())),
        )
    }

    /// When a ConfigMap or Secret last changed: the newest of its creation
    /// and its managed-field entries (each write stamps the entry of the
    /// client that made it).
    pub fn changed_at(&self, kind: &str, name: &str) -> Option<Timestamp> {
        let meta = match kind {
            "ConfigMap" => self
                .config_maps
                .iter()
                .find(|c| c.name_any() == name)
                .map(|c| &c.metadata),
            "Secret" => self
                .secrets
                .iter()
                .find(|s| s.name_any() == name)
                .map(|s| &s.metadata),
            _ => None,
        }?;
        let created = meta.creation_timestamp.as_ref().map(|t| t.0);
        meta.managed_fields
            .iter()
            .flatten()
            .filter_map(|f| f.time.as_ref().map(|t| t.0))
            .chain(created)
            .max()
    }
}

fn render_all<K>(objects: &[K], out: &mut Vec<(String, String)>)
where
    K: Resource<DynamicType = ()> + Serialize,
{
    for object in objects {
        if let Some(rendered) = render(object) {
            out.push(rendered);
        }
    }
}

/// `(Kind/name, JSON text)` of one object, without `status`, managed
/// fields and kubectl's copy of the last applied manifest.
fn render<K>(object: &K) -> Option<(String, String)>
where
    K: Resource<DynamicType = ()> + Serialize,
{
    let mut value = serde_json::to_value(object).ok()?;
    let map = value.as_object_mut()?;
    map.remove("status");
    if let Some(meta) = map.get_mut("metadata").and_then(|m| m.as_object_mut()) {
        meta.remove("managedFields");
        if let Some(annotations) = meta.get_mut("annotations").and_then(|a| a.as_object_mut()) {
            annotations.remove("kubectl.kubernetes.io/last-applied-configuration");
        }
    }
    let id = format!("{}/{}", K::kind(&()), object.meta().name.as_deref()?);
    Some((id, serde_json::to_string_pretty(&value).ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rendering_drops_status_and_managed_fields() {
        let cm: ConfigMap = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": "cfg",
                "namespace": "production",
                "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}", "keep": "me"},
                "managedFields": [{"manager": "kubectl", "operation": "Update", "time": "2026-11-21T14:40:00Z"}]
            },
            "data": {"A": "1"}
        }))
        .unwrap();
        let (id, text) = render(&cm).unwrap();
        assert_eq!(id, "ConfigMap/cfg");
        assert!(!text.contains("managedFields"), "{text}");
        assert!(!text.contains("last-applied"), "{text}");
        let m = Manifests::from_objects([(id.as_str(), text.as_str())]).unwrap();
        let obj = m.find("ConfigMap", "cfg", "production").unwrap();
        assert_eq!(obj.file(), "ConfigMap/cfg");
        assert_eq!(obj.doc.root.str_at(&["data", "A"]), Some("1"));
        assert_eq!(
            obj.doc.root.str_at(&["metadata", "annotations", "keep"]),
            Some("me")
        );
    }

    #[test]
    fn endpoint_slices_count_ready_and_not_ready_addresses() {
        let slice: EndpointSlice = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "db-x", "labels": {"kubernetes.io/service-name": "db"}},
            "addressType": "IPv4",
            "endpoints": [
                {"addresses": ["10.42.0.9"], "conditions": {"ready": false}},
                {"addresses": ["10.42.0.10"], "conditions": {"ready": true}},
                {"addresses": ["10.42.0.11"]}
            ]
        }))
        .unwrap();
        let empty: EndpointSlice = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "gw-x", "labels": {"kubernetes.io/service-name": "gw"}},
            "addressType": "IPv4",
            "endpoints": null
        }))
        .unwrap();
        let counts = endpoint_counts_from_slices(&[slice, empty]);
        assert_eq!(
            counts["db"],
            EndpointCount {
                ready: 2,
                not_ready: 1
            }
        );
        assert_eq!(counts["gw"], EndpointCount::default());
    }
}
