//! Query translation: which client query parameters become which upstream filters.
//!
//! Parameters the map does not name are dropped, never forwarded: a client cannot reach an
//! upstream filter the mapping file does not expose.

use indexmap::IndexMap;

/// Built-in transforms of a query value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParamTransform {
    Lowercase,
    /// `http://nova/v2.1/servers/abc` → `abc` (text after the last `/`), as Nova's `server` filter.
    LastPathSegment,
}

impl ParamTransform {
    pub const NAMES: &'static [(&'static str, ParamTransform)] =
        &[("lowercase", ParamTransform::Lowercase), ("last_path_segment", ParamTransform::LastPathSegment)];

    pub fn by_name(name: &str) -> Option<Self> {
        Self::NAMES.iter().find(|(n, _)| *n == name).map(|(_, t)| *t)
    }

    fn apply(self, value: &str) -> String {
        match self {
            ParamTransform::Lowercase => value.to_lowercase(),
            ParamTransform::LastPathSegment => value.rsplit('/').next().unwrap_or(value).to_owned(),
        }
    }
}

/// How one client parameter becomes an upstream parameter.
#[derive(Clone, Debug)]
pub struct ParamRule {
    /// Upstream name; for a prefix rule, what replaces the prefix.
    pub upstream: String,
    /// Prepended to the value, e.g. `gte:` for a range filter.
    pub value_prefix: String,
    pub transform: Option<ParamTransform>,
}

impl ParamRule {
    fn value(&self, raw: &str) -> String {
        let v = self.transform.map_or_else(|| raw.to_owned(), |t| t.apply(raw));
        format!("{}{v}", self.value_prefix)
    }
}

/// A compiled query map.
#[derive(Clone, Debug, Default)]
pub struct QueryMap {
    pub params: IndexMap<String, ParamRule>,
    /// Rules for families of keys such as `property-*`, tried in file order.
    pub prefixes: Vec<(String, ParamRule)>,
}

impl QueryMap {
    /// Whether a client parameter means anything to this map.
    pub fn knows(&self, key: &str) -> bool {
        self.params.contains_key(key) || self.prefixes.iter().any(|(p, _)| key.starts_with(p.as_str()))
    }

    /// Translates client parameters. A repeated key keeps its last value, as WebOb's `get` does.
    pub fn translate(&self, query: &[(String, String)]) -> Vec<(String, String)> {
        let mut last: IndexMap<&str, &str> = IndexMap::new();
        for (k, v) in query {
            last.insert(k, v);
        }
        last.into_iter()
            .filter_map(|(key, value)| {
                if let Some(rule) = self.params.get(key) {
                    return Some((rule.upstream.clone(), rule.value(value)));
                }
                self.prefixes.iter().find_map(|(prefix, rule)| {
                    let rest = key.strip_prefix(prefix.as_str())?;
                    Some((format!("{}{rest}", rule.upstream), rule.value(value)))
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(upstream: &str, prefix: &str, t: Option<ParamTransform>) -> ParamRule {
        ParamRule { upstream: upstream.into(), value_prefix: prefix.into(), transform: t }
    }

    fn nova_like() -> QueryMap {
        let mut map = QueryMap::default();
        map.params.insert("status".into(), rule("status", "", Some(ParamTransform::Lowercase)));
        map.params.insert("changes-since".into(), rule("updated_at", "gte:", None));
        map.params.insert("server".into(), rule("instance_uuid", "", Some(ParamTransform::LastPathSegment)));
        map.prefixes.push(("property-".into(), rule("", "", None)));
        map
    }

    fn q(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn translates_known_parameters_and_drops_the_rest() {
        let out = nova_like().translate(&q(&[
            ("status", "ACTIVE"),
            ("changes-since", "2020-01-01T00:00:00Z"),
            ("server", "http://nova/v2.1/servers/abc"),
            ("sort_key", "name"),
            ("property-os_distro", "ubuntu"),
        ]));
        assert_eq!(
            out,
            q(&[
                ("status", "active"),
                ("updated_at", "gte:2020-01-01T00:00:00Z"),
                ("instance_uuid", "abc"),
                ("os_distro", "ubuntu"),
            ])
        );
    }

    #[test]
    fn last_value_wins_and_trailing_slash_gives_empty() {
        let out = nova_like().translate(&q(&[("status", "a"), ("server", "x/"), ("status", "B")]));
        assert_eq!(out, q(&[("status", "b"), ("instance_uuid", "")]));
    }

    #[test]
    fn knows_prefix_families() {
        let map = nova_like();
        assert!(map.knows("property-x") && map.knows("status"));
        assert!(!map.knows("limit"));
    }
}
