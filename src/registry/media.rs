//! What a manifest says about its digest: a list of children (OCI index,
//! Docker manifest list) or one image (OCI / Docker v2 manifest, possibly an
//! OCI 1.1 attachment with a `subject`).

use std::fmt;

use oci_spec::image::{ImageIndex, ImageManifest};
use serde::Deserialize;

use super::error::ErrorKind;
use crate::reference::Digest;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// The `Accept` header of every manifest request. Registries answer 404 for
/// content whose type is not accepted, so all four are always listed.
pub const ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, \
    application/vnd.oci.image.index.v1+json, \
    application/vnd.docker.distribution.manifest.v2+json, \
    application/vnd.docker.distribution.manifest.list.v2+json";

/// The typed content of a manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ManifestKind {
    /// An OCI image index or a Docker manifest list.
    Index { children: Vec<IndexChild> },
    /// A single image (or artifact) manifest. `subject` is the manifest it
    /// is attached to (OCI 1.1 signatures, attestations, SBOMs).
    Image { subject: Option<Digest> },
}

/// One entry of an index or manifest list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexChild {
    pub digest: Digest,
    pub media_type: String,
    pub platform: Option<Platform>,
}

/// The platform an index entry is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// Just enough of any manifest to choose the parser.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Probe {
    media_type: Option<String>,
    manifests: Option<serde::de::IgnoredAny>,
    config: Option<serde::de::IgnoredAny>,
}

/// Parses verified manifest bytes. Returns the media type (from the body, or
/// the OCI type implied by its shape when the optional `mediaType` is absent)
/// and the typed content.
///
/// The `Content-Type` header is deliberately ignored, so that a manifest read
/// back from the cache is classified exactly as it was when fetched.
pub fn parse(bytes: &[u8]) -> Result<(String, ManifestKind), ErrorKind> {
    let unparseable = |e: &dyn fmt::Display| ErrorKind::Unparseable(e.to_string());
    let probe: Probe = serde_json::from_slice(bytes).map_err(|e| unparseable(&e))?;
    let media_type = match probe.media_type {
        Some(t) => t,
        None if probe.manifests.is_some() => OCI_INDEX.to_owned(),
        None if probe.config.is_some() => OCI_MANIFEST.to_owned(),
        None => {
            return Err(ErrorKind::Unparseable(
                "neither `manifests` nor `config`, and no `mediaType`".into(),
            ));
        }
    };
    let kind = match media_type.as_str() {
        OCI_INDEX | DOCKER_MANIFEST_LIST => {
            let index: ImageIndex = serde_json::from_slice(bytes).map_err(|e| unparseable(&e))?;
            let children = index
                .manifests()
                .iter()
                .map(|d| {
                    Ok(IndexChild {
                        digest: convert_digest(d.digest())?,
                        media_type: d.media_type().to_string(),
                        platform: d.platform().as_ref().map(|p| Platform {
                            os: p.os().to_string(),
                            architecture: p.architecture().to_string(),
                            variant: p.variant().clone(),
                        }),
                    })
                })
                .collect::<Result<_, ErrorKind>>()?;
            ManifestKind::Index { children }
        }
        OCI_MANIFEST | DOCKER_MANIFEST => {
            let manifest: ImageManifest =
                serde_json::from_slice(bytes).map_err(|e| unparseable(&e))?;
            let subject = manifest
                .subject()
                .as_ref()
                .map(|d| convert_digest(d.digest()))
                .transpose()?;
            ManifestKind::Image { subject }
        }
        other => return Err(ErrorKind::UnsupportedMediaType(other.to_owned())),
    };
    Ok((media_type, kind))
}

fn convert_digest(d: &oci_spec::image::Digest) -> Result<Digest, ErrorKind> {
    d.to_string()
        .parse()
        .map_err(|e| ErrorKind::Unparseable(format!("descriptor digest: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reference::fixtures::d;

    #[test]
    fn docker_manifest_list_is_an_index_with_platforms() {
        let body = format!(
            r#"{{"schemaVersion":2,"mediaType":"{DOCKER_MANIFEST_LIST}","manifests":[
              {{"mediaType":"{DOCKER_MANIFEST}","size":1,"digest":"{}",
                "platform":{{"architecture":"arm64","os":"linux","variant":"v8"}}}},
              {{"mediaType":"{DOCKER_MANIFEST}","size":1,"digest":"{}",
                "platform":{{"architecture":"amd64","os":"linux"}}}}]}}"#,
            d(1),
            d(2)
        );
        let (media_type, kind) = parse(body.as_bytes()).unwrap();
        assert_eq!(media_type, DOCKER_MANIFEST_LIST);
        let ManifestKind::Index { children } = kind else {
            panic!("not an index")
        };
        assert_eq!(children.len(), 2);
        assert_eq!(children[0].digest, d(1));
        assert_eq!(children[0].media_type, DOCKER_MANIFEST);
        assert_eq!(
            children[0].platform.as_ref().unwrap().to_string(),
            "linux/arm64/v8"
        );
    }

    #[test]
    fn oci_manifest_with_subject_is_an_attachment() {
        let body = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}",
              "artifactType":"application/vnd.example.sbom",
              "config":{{"mediaType":"application/vnd.oci.empty.v1+json","size":2,
                "digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"}},
              "layers":[],
              "subject":{{"mediaType":"{OCI_MANIFEST}","size":3,"digest":"{}"}}}}"#,
            d(7)
        );
        let (_, kind) = parse(body.as_bytes()).unwrap();
        assert_eq!(
            kind,
            ManifestKind::Image {
                subject: Some(d(7))
            }
        );
    }

    #[test]
    fn missing_media_type_is_inferred_from_shape() {
        let body = format!(
            r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"{OCI_MANIFEST}","size":1,"digest":"{}"}}]}}"#,
            d(3)
        );
        let (media_type, kind) = parse(body.as_bytes()).unwrap();
        assert_eq!(media_type, OCI_INDEX);
        assert!(matches!(kind, ManifestKind::Index { children } if children[0].platform.is_none()));
    }

    #[test]
    fn schema1_and_garbage_are_errors_not_panics() {
        let schema1 = br#"{"schemaVersion":1,"mediaType":"application/vnd.docker.distribution.manifest.v1+prettyjws","name":"x","fsLayers":[]}"#;
        assert!(matches!(
            parse(schema1),
            Err(ErrorKind::UnsupportedMediaType(_))
        ));
        for garbage in [&b""[..], b"[]", b"{", b"{\"schemaVersion\":2}", b"\xff\xfe"] {
            assert!(matches!(parse(garbage), Err(ErrorKind::Unparseable(_))));
        }
        let bad_child =
            br#"{"schemaVersion":2,"manifests":[{"mediaType":"x","size":1,"digest":"sha256:00"}]}"#;
        assert!(matches!(parse(bad_child), Err(ErrorKind::Unparseable(_))));
    }
}
