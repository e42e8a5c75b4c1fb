//! Rules on container images: each CloudMart image is one the build
//! script produces.

use super::{Context, Finding, finding};
use crate::model::{Manifests, containers, image_name_tag};

pub(super) fn images(m: &Manifests, ctx: &Context, out: &mut Vec<Finding>) {
    let ours: Vec<&str> = ctx.built_images.iter().map(|(n, _)| n.as_str()).collect();
    for (obj, template) in m.workloads() {
        for c in containers(template) {
            let (name, tag) = image_name_tag(c.image);
            let is_ours = ours.contains(&name) && !c.image.contains('/');
            if !is_ours {
                continue;
            }
            if !ctx.built_images.iter().any(|(n, t)| n == name && t == tag) {
                let built: Vec<String> = ctx
                    .built_images
                    .iter()
                    .filter(|(n, _)| n == name)
                    .map(|(n, t)| format!("{n}:{t}"))
                    .collect();
                let line = c.node.get("image").map_or(c.node.line, |n| n.line);
                out.push(finding(
                    "image-not-built",
                    &obj,
                    obj.file(),
                    line,
                    format!(
                        "image {} is not one the build script produces (it builds {}); the pull will fail",
                        c.image,
                        built.join(", ")
                    ),
                ));
            }
        }
    }
}
