//! Nova's version documents (`GET /`, `GET /v2.1[/]`, `GET /v2[/]`), so that SDKs pointed at
//! the gateway as their compute endpoint can discover it.

use serde_json::{json, Value};

use crate::mapping::ApiVersion;

/// One entry of the version list; `detailed` adds what the per-version document carries.
fn entry(origin: &str, mount: &str, legacy: bool, max: ApiVersion, detailed: bool) -> Value {
    // What Nova 34 says of its two roots.
    let (id, status, version, min, updated) = if legacy {
        ("v2.0", "DEPRECATED", String::new(), "", "2025-07-04T12:00:00Z")
    } else {
        ("v2.1", "CURRENT", max.to_string(), "2.1", "2013-07-23T11:33:21Z")
    };
    let mut links = vec![json!({"rel": "self", "href": format!("{origin}{mount}/")})];
    if detailed {
        links.push(json!({"rel": "describedby", "type": "text/html", "href": "http://docs.openstack.org/"}));
    }
    let mut doc = json!({
        "id": id,
        "status": status,
        "version": version,
        "min_version": min,
        "updated": updated,
        "links": links,
    });
    if detailed {
        let media = if legacy { "2" } else { "2.1" };
        doc["media-types"] = json!([
            {"base": "application/json", "type": format!("application/vnd.openstack.compute+json;version={media}")}
        ]);
    }
    doc
}

/// `GET {mount}` and `GET {mount}/`.
pub fn version(origin: &str, mount: &str, legacy: bool, max: ApiVersion) -> Value {
    json!({"version": entry(origin, mount, legacy, max, true)})
}

/// `GET /`: the roots served, v2.0 first.
pub fn versions(origin: &str, mount: Option<&str>, legacy_mount: Option<&str>, max: ApiVersion) -> Value {
    let legacy = legacy_mount.map(|m| entry(origin, m, true, max, false));
    let current = mount.map(|m| entry(origin, m, false, max, false));
    json!({"versions": legacy.into_iter().chain(current).collect::<Vec<_>>()})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_point_at_the_mounts() {
        let max = ApiVersion::new(2, 104);
        let doc = version("http://gw", "/v2.1", false, max);
        assert_eq!(doc["version"]["version"], "2.104");
        assert_eq!(doc["version"]["links"][0]["href"], "http://gw/v2.1/");
        assert_eq!(doc["version"]["media-types"][0]["type"], "application/vnd.openstack.compute+json;version=2.1");
        let list = versions("http://gw", Some("/v2.1"), Some("/v2"), max);
        assert_eq!(list["versions"][0]["id"], "v2.0");
        assert_eq!(list["versions"][1]["links"], json!([{"rel": "self", "href": "http://gw/v2.1/"}]));
        assert!(list["versions"][1].get("media-types").is_none());
        let alone = versions("http://gw", Some("/v2.1"), None, max);
        assert_eq!(alone["versions"].as_array().map(|v| v[0]["id"].clone()), Some(json!("v2.1")));
    }
}
