//! Rules on persistent volume claims: the storage class exists in the
//! cluster.

use super::{Context, Finding, finding};
use crate::model::{Manifests, Object};
use crate::yaml::Node;

pub(super) fn storage_classes(m: &Manifests, ctx: &Context, out: &mut Vec<Finding>) {
    let mut claims: Vec<(Object<'_>, &Node)> = m
        .of_kind("PersistentVolumeClaim")
        .into_iter()
        .map(|o| (o, &o.doc.root))
        .collect();
    for sts in m.of_kind("StatefulSet") {
        for t in sts
            .doc
            .root
            .path(&["spec", "volumeClaimTemplates"])
            .map(Node::items)
            .unwrap_or_default()
        {
            claims.push((sts, t));
        }
    }
    for (obj, claim) in claims {
        let Some(class) = claim.path(&["spec", "storageClassName"]) else {
            continue;
        };
        let Some(name) = class.str() else { continue };
        if !ctx.storage_classes.iter().any(|s| s == name) {
            out.push(finding(
                "storage-class",
                &obj,
                obj.file(),
                class.line,
                format!(
                    "storageClassName {name} does not exist in the cluster (it has {}); the claim stays Pending",
                    ctx.storage_classes.join(", ")
                ),
            ));
        }
    }
}
