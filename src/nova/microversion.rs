//! Compute microversions, read the way Nova reads them (via `microversion_parse`).

use http::HeaderMap;

use crate::mapping::ApiVersion;

pub const MIN: ApiVersion = ApiVersion::new(2, 1);
pub const HEADER: &str = "openstack-api-version";
pub const LEGACY_HEADER: &str = "x-openstack-nova-api-version";

/// Why a requested version cannot be served.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum VersionError {
    #[error("API Version String {0} is of invalid format. Must be of format MajorNum.MinorNum.")]
    Malformed(String),
    /// Well-formed but out of range; Nova still echoes it in the version headers.
    #[error("Version {0} is not supported by the API. Minimum is {MIN} and maximum is {1}.")]
    Unsupported(ApiVersion, ApiVersion),
}

/// The version a request asks for: the last `compute` entry of `OpenStack-API-Version`, else
/// the last value of `X-OpenStack-Nova-API-Version`, else 2.1; `latest` means `max`.
pub fn requested(headers: &HeaderMap, max: ApiVersion) -> Result<ApiVersion, VersionError> {
    let joined = |name: &str| -> Option<String> {
        let values: Vec<&str> = headers.get_all(name).iter().filter_map(|v| v.to_str().ok()).collect();
        (!values.is_empty()).then(|| values.join(","))
    };
    let standard = joined(HEADER).and_then(|all| {
        all.split(',').rev().find_map(|entry| {
            let mut words = entry.split_whitespace();
            let service = words.next()?;
            let version = words.next()?;
            service.eq_ignore_ascii_case("compute").then(|| version.to_owned())
        })
    });
    let raw =
        standard.or_else(|| joined(LEGACY_HEADER).and_then(|all| all.rsplit(',').next().map(|v| v.trim().to_owned())));
    let Some(raw) = raw else { return Ok(MIN) };
    if raw == "latest" {
        return Ok(max);
    }
    let version: ApiVersion = raw.parse().map_err(|()| VersionError::Malformed(raw.clone()))?;
    if version < MIN || version > max {
        return Err(VersionError::Unsupported(version, max));
    }
    Ok(version)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: ApiVersion = ApiVersion::new(2, 100);

    fn ask(pairs: &[(&'static str, &'static str)]) -> Result<ApiVersion, VersionError> {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, v.parse().unwrap());
        }
        requested(&h, MAX)
    }

    #[test]
    fn default_latest_and_precedence() {
        assert_eq!(ask(&[]), Ok(MIN));
        assert_eq!(ask(&[(HEADER, "compute latest")]), Ok(MAX));
        assert_eq!(ask(&[(HEADER, "compute 2.35")]), Ok(ApiVersion::new(2, 35)));
        assert_eq!(ask(&[(HEADER, "COMPUTE 2.35")]), Ok(ApiVersion::new(2, 35)));
        assert_eq!(ask(&[(LEGACY_HEADER, "2.36")]), Ok(ApiVersion::new(2, 36)));
        // The standard header wins over the legacy one.
        assert_eq!(ask(&[(HEADER, "compute 2.10"), (LEGACY_HEADER, "2.36")]), Ok(ApiVersion::new(2, 10)));
        // Other services' entries are ignored, falling back to the legacy header.
        assert_eq!(ask(&[(HEADER, "image 2.5"), (LEGACY_HEADER, "2.3")]), Ok(ApiVersion::new(2, 3)));
        assert_eq!(ask(&[(HEADER, "image 2.5")]), Ok(MIN));
    }

    #[test]
    fn last_compute_entry_wins() {
        assert_eq!(ask(&[(HEADER, "compute 2.2, image 2.5, compute 2.9")]), Ok(ApiVersion::new(2, 9)));
        assert_eq!(ask(&[(HEADER, "compute 2.2"), (HEADER, "compute 2.4")]), Ok(ApiVersion::new(2, 4)));
        assert_eq!(ask(&[(LEGACY_HEADER, "2.2, 2.7")]), Ok(ApiVersion::new(2, 7)));
    }

    #[test]
    fn bad_versions() {
        assert_eq!(ask(&[(HEADER, "compute abc")]), Err(VersionError::Malformed("abc".into())));
        assert_eq!(ask(&[(HEADER, "compute Latest")]), Err(VersionError::Malformed("Latest".into())));
        assert_eq!(ask(&[(HEADER, "compute 3.0")]), Err(VersionError::Unsupported(ApiVersion::new(3, 0), MAX)));
        assert_eq!(ask(&[(HEADER, "compute 2.0")]), Err(VersionError::Unsupported(ApiVersion::new(2, 0), MAX)));
        assert_eq!(
            VersionError::Unsupported(ApiVersion::new(2, 999), MAX).to_string(),
            "Version 2.999 is not supported by the API. Minimum is 2.1 and maximum is 2.100."
        );
    }
}
