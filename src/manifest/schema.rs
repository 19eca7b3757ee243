//! The YAML schema of promotion manifests, as written by people.
//!
//! Strings stay strings (`1.10` is the tag "1.10"), unknown and duplicate keys
//! are errors, and every value keeps its line so problems can point at it.

use serde::de::{IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_saphyr::Spanned;

use crate::reference::RegistryPrefix;

/// `promoter-manifest.yaml` of the thin layout.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThinManifestDoc {
    pub registries: Option<Spanned<Vec<RegistryDoc>>>,
    /// Deprecated upstream; accepted and ignored.
    #[serde(rename = "imagesPath")]
    pub _images_path: Option<IgnoredAny>,
}

/// A plain manifest: registries and images in one file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlainManifestDoc {
    pub registries: Option<Spanned<Vec<RegistryDoc>>>,
    pub images: Option<Vec<ImageDoc>>,
    #[serde(rename = "imagesPath")]
    pub _images_path: Option<IgnoredAny>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryDoc {
    pub name: Spanned<String>,
    /// The identity the promoter writes with; the auditor has no use for it.
    #[serde(rename = "service-account")]
    pub _service_account: Option<IgnoredAny>,
    pub src: Option<Spanned<bool>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageDoc {
    pub name: Spanned<String>,
    pub dmap: Option<Dmap>,
}

/// `digest: [tags]` in file order. A custom visitor because the keys carry
/// their line, and `Spanned` keys cannot go into a standard map.
#[derive(Debug, Default)]
pub struct Dmap(pub Vec<(Spanned<String>, Vec<Spanned<String>>)>);

impl<'de> Deserialize<'de> for Dmap {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct DmapVisitor;
        impl<'de> Visitor<'de> for DmapVisitor {
            type Value = Dmap;

            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a map from digest to a list of tags")
            }

            fn visit_unit<E>(self) -> Result<Dmap, E> {
                Ok(Dmap::default())
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Dmap, A::Error> {
                let mut entries = Vec::with_capacity(map.size_hint().unwrap_or(0));
                while let Some((digest, tags)) =
                    map.next_entry::<Spanned<String>, Option<Vec<Spanned<String>>>>()?
                {
                    entries.push((digest, tags.unwrap_or_default()));
                }
                Ok(Dmap(entries))
            }
        }
        d.deserialize_map(DmapVisitor)
    }
}

/// Destinations of a manifest file that failed the strict parse, read
/// leniently (unknown keys ignored, last duplicate wins) so an excluded
/// project's prefixes stay on record. Empty if even that fails.
pub fn recover_destinations(text: &str) -> Vec<RegistryPrefix> {
    #[derive(Deserialize)]
    struct Lenient {
        registries: Option<Vec<LenientRegistry>>,
    }
    #[derive(Deserialize)]
    struct LenientRegistry {
        name: Option<String>,
        // Text, so that a mistyped `src` does not lose the rest.
        src: Option<String>,
    }
    let options = serde_saphyr::options! {
        duplicate_keys: serde_saphyr::options::DuplicateKeyPolicy::LastWins,
    };
    let Ok(Some(doc)) = serde_saphyr::from_str_with_options::<Option<Lenient>>(text, options)
    else {
        return Vec::new();
    };
    let mut out: Vec<RegistryPrefix> = Vec::new();
    for registry in doc.registries.unwrap_or_default() {
        if registry.src.as_deref() == Some("true") {
            continue;
        }
        if let Some(Ok(name)) = registry.name.map(|n| n.parse::<RegistryPrefix>())
            && !out.contains(&name)
        {
            out.push(name);
        }
    }
    out
}

/// A YAML error reduced to a line and a message without library jargon.
pub struct YamlError {
    pub line: Option<u32>,
    pub message: String,
}

/// Parses one YAML document; an empty or comment-only file is `None`.
pub fn parse<T: for<'de> Deserialize<'de>>(text: &str) -> Result<Option<T>, YamlError> {
    let options = serde_saphyr::options! {
        budget: serde_saphyr::budget! {
            // The defaults stop at 250k nodes; a generated or merged file can be
            // larger than any hand-written one. Files are size-capped by the loader.
            max_nodes: 20_000_000,
            max_events: 40_000_000,
        },
    };
    serde_saphyr::from_str_with_options::<Option<T>>(text, options).map_err(|e| {
        let line = e.location().map(|l| l.line() as u32).filter(|&l| l > 0);
        YamlError {
            line,
            message: clean_message(&e.without_snippet().to_string()),
        }
    })
}

/// `error: line 4 column 5: duplicate mapping key: x, set DuplicateKeyPolicy…`
/// becomes `duplicate mapping key: x`: the line is reported separately and the
/// option hint names an API the reader never sees.
fn clean_message(raw: &str) -> String {
    let mut msg = raw.trim().trim_start_matches("error: ");
    if let Some(rest) = msg.strip_prefix("line ")
        && let Some((_, after)) = rest.split_once(": ")
    {
        msg = after;
    }
    let msg = msg
        .split(", set DuplicateKeyPolicy")
        .next()
        .unwrap_or(msg)
        .lines()
        .next()
        .unwrap_or(msg);
    msg.to_string()
}
