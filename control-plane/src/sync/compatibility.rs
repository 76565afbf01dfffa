//! Which data planes this control plane serves, decided from their Hello (Kong 3.x's rule):
//! the same major version and a minor version no newer than the control plane's (an older data
//! plane is served; a newer one may expect what this one cannot send), and every plugin the
//! configuration uses. A refused data plane learns why in the stream's status, and the reason
//! is shown in `/clustering/data-planes`.

use gatehouse_shared::proto::Hello;

use crate::store::{Store, StoreError};

/// This control plane's version.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// `major.minor` of a version (`1.2.3`, `1.2`, `1.2.3-rc1`).
fn major_minor(version: &str) -> Option<(u64, u64)> {
    let mut parts = version.trim_start_matches('v').split(['.', '-', '+']);
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

/// Why a data plane of `version` cannot be served by a control plane of `ours`.
pub fn version_refusal(version: &str, ours: &str) -> Option<String> {
    let mine = major_minor(ours)?;
    match major_minor(version) {
        None => Some(format!("data plane version '{version}' is not a version this control plane ({ours}) can check")),
        Some((major, minor)) if major != mine.0 || minor > mine.1 => Some(format!(
            "data plane version {version} is incompatible with control plane version {ours}: the major versions must \
             match and the data plane's minor version may not be newer"
        )),
        Some(_) => None,
    }
}

/// Why the data plane that said `hello` cannot be served now, if it cannot.
///
/// # Errors
/// The store does not answer (which plugins the configuration uses is unknown).
pub async fn refusal(hello: &Hello, store: &Store) -> Result<Option<String>, StoreError> {
    if let Some(reason) = version_refusal(&hello.version, VERSION) {
        return Ok(Some(reason));
    }
    let missing: Vec<String> =
        store.distinct_plugin_names().await?.into_iter().filter(|p| !hello.plugins.contains(p)).collect();
    if missing.is_empty() {
        return Ok(None);
    }
    Ok(Some(format!(
        "the configuration uses plugins this data plane does not have: {} (its plugins setting)",
        missing.join(", ")
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn older_minor_versions_are_served_and_newer_or_other_majors_are_not() {
        assert_eq!(version_refusal("1.2.0", "1.2.5"), None);
        assert_eq!(version_refusal("1.1.9", "1.2.0"), None, "an older minor is served");
        assert_eq!(version_refusal("1.2.0-rc1", "1.2.0"), None);
        assert!(version_refusal("1.3.0", "1.2.0").is_some_and(|r| r.contains("1.3.0")));
        assert!(version_refusal("2.0.0", "1.9.0").is_some());
        assert!(version_refusal("0.9.0", "1.0.0").is_some());
        assert!(version_refusal("test", "1.0.0").is_some());
    }
}
