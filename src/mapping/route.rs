//! Route templates: which dialect call a method and path are.
//!
//! Templates are `/`-separated literals and `{name}` parameters. A literal beats a parameter
//! at the same position, so `/images/detail` wins over `/images/{id}` whatever the file order;
//! two templates that only a file order could tell apart are rejected when the file is loaded.

use std::fmt;
use std::str::FromStr;

use percent_encoding::percent_decode_str;

/// An API microversion such as `2.35`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ApiVersion {
    pub major: u32,
    pub minor: u32,
}

impl ApiVersion {
    pub const fn new(major: u32, minor: u32) -> Self {
        ApiVersion { major, minor }
    }
}

impl FromStr for ApiVersion {
    type Err = ();

    /// Accepts `MAJOR.MINOR` with no leading zeros (`2.0` and `2.35`, not `02.1` or `2.01`),
    /// the format OpenStack's microversion parsing enforces.
    fn from_str(s: &str) -> Result<Self, ()> {
        let (major, minor) = s.split_once('.').ok_or(())?;
        let number = |part: &str, zero_ok: bool| -> Result<u32, ()> {
            let canonical = !part.is_empty()
                && part.bytes().all(|b| b.is_ascii_digit())
                && (!part.starts_with('0') || (zero_ok && part == "0"));
            if canonical {
                part.parse().map_err(|_| ())
            } else {
                Err(())
            }
        };
        Ok(ApiVersion::new(number(major, false)?, number(minor, true)?))
    }
}

impl fmt::Display for ApiVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// One segment of a template.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Part {
    Literal(String),
    Param(String),
}

/// A parsed path template.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Part>,
}

impl FromStr for Template {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let rest = s.strip_prefix('/').ok_or_else(|| format!("path template `{s}` must start with `/`"))?;
        let parts = rest
            .split('/')
            .map(|seg| {
                if let Some(name) = seg.strip_prefix('{').and_then(|n| n.strip_suffix('}')) {
                    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                        return Err(format!("bad parameter `{seg}` in path template `{s}`"));
                    }
                    Ok(Part::Param(name.to_owned()))
                } else if seg.is_empty() || seg.contains(['{', '}']) {
                    Err(format!("empty or malformed segment in path template `{s}`"))
                } else {
                    Ok(Part::Literal(seg.to_owned()))
                }
            })
            .collect::<Result<_, _>>()?;
        Ok(Template { parts })
    }
}

impl Template {
    /// Matches decoded path segments; returns the parameters and a specificity key (literal
    /// positions first) used to rank several matching templates.
    fn matches(&self, segments: &[String]) -> Option<(Params, Vec<bool>)> {
        if segments.len() != self.parts.len() {
            return None;
        }
        let mut params = Vec::new();
        let mut rank = Vec::with_capacity(segments.len());
        for (part, seg) in self.parts.iter().zip(segments) {
            match part {
                Part::Literal(lit) if lit == seg => rank.push(true),
                Part::Literal(_) => return None,
                Part::Param(_) if seg.is_empty() => return None,
                Part::Param(name) => {
                    params.push((name.clone(), seg.clone()));
                    rank.push(false);
                }
            }
        }
        Some((params, rank))
    }

    /// The position of parameter `{name}` among the template's parameters.
    pub(super) fn param_index(&self, name: &str) -> Option<usize> {
        self.parts.iter().filter(|p| matches!(p, Part::Param(_))).position(|p| *p == Part::Param(name.to_owned()))
    }

    /// Two templates are ambiguous when every position is the same literal or a parameter in both.
    fn ambiguous_with(&self, other: &Template) -> bool {
        self.parts.len() == other.parts.len()
            && self.parts.iter().zip(&other.parts).all(|pair| match pair {
                (Part::Literal(a), Part::Literal(b)) => a == b,
                (Part::Param(_), Part::Param(_)) => true,
                _ => false,
            })
    }
}

/// Splits a raw request path into percent-decoded segments. `None` when a segment is not UTF-8
/// after decoding, holds a control character, or is `.` or `..`: such a path names no image,
/// and a dot segment must never reach an upstream URL, where it would climb a level.
pub fn split_path(path: &str) -> Option<Vec<String>> {
    let rest = path.strip_prefix('/')?;
    rest.split('/')
        .map(|seg| {
            let decoded = percent_decode_str(seg).decode_utf8().ok()?;
            let clean = !decoded.chars().any(char::is_control) && decoded != "." && decoded != "..";
            clean.then(|| decoded.into_owned())
        })
        .collect()
}

/// Path parameters by name, in template order.
pub type Params = Vec<(String, String)>;

/// A route as declared in a mapping file, its action bound (see [`super::Action`]).
#[derive(Clone, Debug)]
pub struct Route<A> {
    /// Stable identifier used in metrics and logs, e.g. `nova.images.show`.
    pub id: std::sync::Arc<str>,
    pub method: String,
    pub template: Template,
    /// What the dialect runs for this route, with the views, query map or schema it uses.
    pub action: A,
    /// Last microversion at which the upstream API still served the route.
    pub max_version: Option<ApiVersion>,
}

/// The result of looking a request up.
#[derive(Debug)]
pub enum Lookup<'a, A> {
    Found {
        route: &'a Route<A>,
        params: Params,
    },
    /// The path is known but not for this method.
    MethodNotAllowed,
    NotFound,
}

/// The routes of one dialect.
#[derive(Clone, Debug)]
pub struct RouteTable<A> {
    routes: Vec<Route<A>>,
}

impl<A> Default for RouteTable<A> {
    fn default() -> Self {
        RouteTable { routes: Vec::new() }
    }
}

impl<A> RouteTable<A> {
    /// Adds a route; fails if it is ambiguous with one already added (same method).
    pub fn insert(&mut self, route: Route<A>) -> Result<(), String> {
        if let Some(other) =
            self.routes.iter().find(|r| r.method == route.method && r.template.ambiguous_with(&route.template))
        {
            return Err(format!(
                "route `{}` ({} {}) overlaps route `{}`",
                route.id, route.method, route.template, other.id
            ));
        }
        self.routes.push(route);
        Ok(())
    }

    pub fn lookup(&self, method: &str, segments: &[String]) -> Lookup<'_, A> {
        let mut best: Option<(&Route<A>, Params, Vec<bool>)> = None;
        let mut path_known = false;
        for route in &self.routes {
            let Some((params, rank)) = route.template.matches(segments) else {
                continue;
            };
            path_known = true;
            if route.method != method {
                continue;
            }
            if best.as_ref().is_none_or(|(_, _, best_rank)| rank > *best_rank) {
                best = Some((route, params, rank));
            }
        }
        match best {
            Some((route, params, _)) => Lookup::Found { route, params },
            None if path_known => Lookup::MethodNotAllowed,
            None => Lookup::NotFound,
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = &Route<A>> {
        self.routes.iter()
    }
}

impl fmt::Display for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for part in &self.parts {
            match part {
                Part::Literal(l) => write!(f, "/{l}")?,
                Part::Param(p) => write!(f, "/{{{p}}}")?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(id: &str, method: &str, path: &str) -> Route<()> {
        Route { id: id.into(), method: method.into(), template: path.parse().unwrap(), action: (), max_version: None }
    }

    fn table() -> RouteTable<()> {
        let mut t = RouteTable::default();
        // Declared parameter-first on purpose: the literal must still win.
        t.insert(route("show", "GET", "/images/{id}")).unwrap();
        t.insert(route("detail", "GET", "/images/detail")).unwrap();
        t.insert(route("delete", "DELETE", "/images/{id}")).unwrap();
        t
    }

    fn found(t: &RouteTable<()>, method: &str, path: &str) -> Option<(String, Vec<(String, String)>)> {
        match t.lookup(method, &split_path(path).unwrap()) {
            Lookup::Found { route, params } => Some((route.id.to_string(), params)),
            _ => None,
        }
    }

    #[test]
    fn literal_beats_parameter() {
        let t = table();
        assert_eq!(found(&t, "GET", "/images/detail").unwrap().0, "detail");
        let (id, params) = found(&t, "GET", "/images/abc").unwrap();
        assert_eq!(id, "show");
        assert_eq!(params, vec![("id".to_string(), "abc".to_string())]);
        // DELETE has no literal twin, so `detail` is an id there, as in Nova.
        assert_eq!(found(&t, "DELETE", "/images/detail").unwrap().0, "delete");
    }

    #[test]
    fn misses_are_told_apart() {
        let t = table();
        assert!(matches!(t.lookup("PUT", &split_path("/images/x").unwrap()), Lookup::MethodNotAllowed));
        assert!(matches!(t.lookup("GET", &split_path("/images/x/y").unwrap()), Lookup::NotFound));
        // An empty id is not an id.
        assert!(matches!(t.lookup("DELETE", &split_path("/images/").unwrap()), Lookup::NotFound));
    }

    #[test]
    fn parameters_are_percent_decoded() {
        let (_, params) = found(&table(), "GET", "/images/a%20b%2Fc").unwrap();
        assert_eq!(params[0].1, "a b/c");
        assert!(split_path("/images/%00").is_none());
        assert!(split_path("/images/%FF").is_none());
        assert!(split_path("/images/..").is_none());
        assert!(split_path("/images/%2e%2E").is_none());
        assert_eq!(split_path("/images/a..b").unwrap()[1], "a..b");
    }

    #[test]
    fn ambiguous_routes_are_rejected() {
        let mut t = table();
        let err = t.insert(route("other", "GET", "/images/{image_id}")).unwrap_err();
        assert!(err.contains("`other`") && err.contains("`show`"), "{err}");
        // Same shape, other method: fine.
        t.insert(route("put", "PUT", "/images/{image_id}")).unwrap();
    }

    #[test]
    fn templates_are_validated() {
        assert!("images".parse::<Template>().is_err());
        assert!("/images//x".parse::<Template>().is_err());
        assert!("/images/{}".parse::<Template>().is_err());
        assert!("/images/{a-b}".parse::<Template>().is_err());
        assert_eq!("/images/{id}/metadata".parse::<Template>().unwrap().to_string(), "/images/{id}/metadata");
    }

    #[test]
    fn versions_parse_strictly() {
        assert_eq!("2.35".parse(), Ok(ApiVersion::new(2, 35)));
        assert_eq!("2.0".parse(), Ok(ApiVersion::new(2, 0)));
        for bad in ["2", "2.", ".1", "02.1", "2.01", "2.x", "2.1.1", " 2.1", "-2.1", ""] {
            assert!(bad.parse::<ApiVersion>().is_err(), "{bad}");
        }
        assert!(ApiVersion::new(2, 9) < ApiVersion::new(2, 10));
    }
}
