//! Hand-made OCI image layouts (`oci-layout`, `index.json`, `blobs/sha256`)
//! for skopeo to push: tiny random layers, so every test gets digests no
//! other test (or earlier run against the same skopeo blob cache) has.

use std::io::Write;
use std::path::{Path, PathBuf};

use flate2::Compression;
use flate2::write::GzEncoder;
use image_auditor::reference::Digest;
use serde_json::{Value, json};

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
const OCI_EMPTY: &str = "application/vnd.oci.empty.v1+json";

/// A content descriptor of something written to the layout.
#[derive(Debug, Clone)]
pub struct Desc {
    pub media_type: &'static str,
    pub digest: Digest,
    pub size: usize,
}

impl Desc {
    fn json(&self) -> Value {
        json!({"mediaType": self.media_type, "digest": self.digest.to_string(), "size": self.size})
    }
}

pub struct Layout {
    pub dir: PathBuf,
    tags: Vec<(Desc, String)>,
}

impl Layout {
    pub fn create(dir: &Path) -> Self {
        std::fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
        std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
        let layout = Self {
            dir: dir.to_owned(),
            tags: Vec::new(),
        };
        layout.write_index();
        layout
    }

    pub fn blob(&self, bytes: &[u8]) -> Digest {
        let digest = Digest::sha256_of(bytes);
        std::fs::write(self.dir.join("blobs/sha256").join(digest.hex()), bytes).unwrap();
        digest
    }

    fn json_blob(&self, media_type: &'static str, value: &Value) -> Desc {
        let bytes = serde_json::to_vec(value).unwrap();
        Desc {
            media_type,
            digest: self.blob(&bytes),
            size: bytes.len(),
        }
    }

    /// A single-platform image with one tiny random layer.
    pub fn image(&self, arch: &str) -> Desc {
        let content: Vec<u8> = (0..32).map(|_| fastrand::u8(..)).collect();
        let tar = tar_with_one_file("random.bin", &content);
        let mut gz = GzEncoder::new(Vec::new(), Compression::fast());
        gz.write_all(&tar).unwrap();
        let gz = gz.finish().unwrap();
        let layer = Desc {
            media_type: OCI_LAYER_GZIP,
            digest: self.blob(&gz),
            size: gz.len(),
        };
        let config = self.json_blob(
            OCI_CONFIG,
            &json!({
                "architecture": arch,
                "os": "linux",
                "created": "2024-01-01T00:00:00Z",
                "config": {},
                "rootfs": {"type": "layers", "diff_ids": [Digest::sha256_of(&tar).to_string()]},
            }),
        );
        self.json_blob(
            OCI_MANIFEST,
            &json!({
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": config.json(),
                "layers": [layer.json()],
            }),
        )
    }

    /// An OCI index over `children`, each with an optional `(os, arch)`.
    pub fn index(&self, children: &[(&Desc, Option<(&str, &str)>)]) -> Desc {
        let manifests: Vec<Value> = children
            .iter()
            .map(|(desc, platform)| {
                let mut v = desc.json();
                if let Some((os, arch)) = platform {
                    v["platform"] = json!({"os": os, "architecture": arch});
                }
                v
            })
            .collect();
        self.json_blob(
            OCI_INDEX,
            &json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests}),
        )
    }

    /// A linux/amd64 and a linux/arm64 image and the index over them:
    /// `[index, amd64, arm64]`.
    pub fn two_platform_index(&self) -> [Desc; 3] {
        let amd64 = self.image("amd64");
        let arm64 = self.image("arm64");
        let index = self.index(&[
            (&amd64, Some(("linux", "amd64"))),
            (&arm64, Some(("linux", "arm64"))),
        ]);
        [index, amd64, arm64]
    }

    /// An OCI 1.1 artifact (e.g. an SBOM) attached to `subject`.
    pub fn attachment(&self, subject: &Desc) -> Desc {
        let empty = self.blob(b"{}");
        let sbom = br#"{"spdxVersion":"SPDX-2.3"}"#;
        let layer = self.blob(sbom);
        self.json_blob(
            OCI_MANIFEST,
            &json!({
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "artifactType": "application/spdx+json",
                "config": {"mediaType": OCI_EMPTY, "digest": empty.to_string(), "size": 2},
                "layers": [{"mediaType": "application/spdx+json", "digest": layer.to_string(), "size": sbom.len()}],
                "subject": subject.json(),
            }),
        )
    }

    /// The bytes of a blob written earlier.
    pub fn read(&self, desc: &Desc) -> Vec<u8> {
        std::fs::read(self.dir.join("blobs/sha256").join(desc.digest.hex())).unwrap()
    }

    /// Names `desc` in `index.json`, so that `oci:<dir>:<tag>` finds it.
    pub fn tag(&mut self, desc: &Desc, tag: &str) {
        self.tags.push((desc.clone(), tag.to_owned()));
        self.write_index();
    }

    fn write_index(&self) {
        let manifests: Vec<Value> = self
            .tags
            .iter()
            .map(|(desc, tag)| {
                let mut v = desc.json();
                v["annotations"] = json!({"org.opencontainers.image.ref.name": tag});
                v
            })
            .collect();
        let index = json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests});
        std::fs::write(
            self.dir.join("index.json"),
            serde_json::to_vec(&index).unwrap(),
        )
        .unwrap();
    }
}

/// A POSIX ustar archive holding one regular file.
fn tar_with_one_file(name: &str, content: &[u8]) -> Vec<u8> {
    let mut header = [0u8; 512];
    header[..name.len()].copy_from_slice(name.as_bytes());
    header[100..108].copy_from_slice(b"0000644\0");
    header[108..116].copy_from_slice(b"0000000\0");
    header[116..124].copy_from_slice(b"0000000\0");
    header[124..136].copy_from_slice(format!("{:011o}\0", content.len()).as_bytes());
    header[136..148].copy_from_slice(b"00000000000\0");
    header[156] = b'0';
    header[257..263].copy_from_slice(b"ustar\0");
    header[263..265].copy_from_slice(b"00");
    // The checksum is computed with its own field read as spaces.
    header[148..156].copy_from_slice(b"        ");
    let sum: u32 = header.iter().map(|&b| u32::from(b)).sum();
    header[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    let mut tar = header.to_vec();
    tar.extend_from_slice(content);
    tar.resize(tar.len().div_ceil(512) * 512, 0);
    tar.extend_from_slice(&[0u8; 1024]);
    tar
}
