//! Test-only CacheClusters, read from the YAML files in `tests/fixtures/` (which the golden
//! files of the builders sit next to).

use std::path::PathBuf;

use crate::crd::CacheCluster;

/// The directory of fixtures and golden files.
pub fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// The CacheCluster in `tests/fixtures/<name>.yaml`.
pub fn load(name: &str) -> CacheCluster {
    let path = dir().join(format!("{name}.yaml"));
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|error| panic!("cannot read {}: {error}", path.display()));
    serde_yaml::from_str(&text)
        .unwrap_or_else(|error| panic!("cannot parse {}: {error}", path.display()))
}

/// The minimal sample: `replicas` and nothing else.
pub fn minimal() -> CacheCluster {
    load("minimal")
}

/// Container resources with only a memory limit of `quantity`.
pub fn memory_limit(quantity: &str) -> k8s_openapi::api::core::v1::ResourceRequirements {
    k8s_openapi::api::core::v1::ResourceRequirements {
        limits: Some(
            [(
                "memory".to_string(),
                k8s_openapi::apimachinery::pkg::api::resource::Quantity(quantity.to_string()),
            )]
            .into(),
        ),
        ..Default::default()
    }
}
