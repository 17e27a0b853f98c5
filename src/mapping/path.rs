//! JSONPath expressions, compiled once when a mapping file is loaded.
//!
//! Most mapping fields name one key (`$.min_ram`). Those compile to a plain key walk, so the
//! per-image cost of a field is a hash lookup rather than a JSONPath evaluation that builds a
//! normalized path string for every match. Anything richer (wildcards, filters, slices,
//! descendants) is evaluated by jsonpath-rust. The crate stays behind this one type so it can be
//! swapped without touching the rest of the engine.

use std::fmt;

use jsonpath_rust::parser::model::{JpQuery, Segment, Selector};
use jsonpath_rust::parser::parse_json_path;
use jsonpath_rust::query::js_path_process;
use serde_json::Value;

use super::doc::Node;

/// A compiled JSONPath expression.
#[derive(Clone, Debug)]
pub struct PathExpr {
    source: String,
    kind: Kind,
}

#[derive(Clone, Debug)]
enum Kind {
    /// Only name and index selectors: at most one match.
    Singular(Vec<Step>),
    /// Any other query: zero or more matches, returned as an array.
    Query(JpQuery),
}

#[derive(Clone, Debug)]
enum Step {
    Key(String),
    Index(i64),
}

impl PathExpr {
    /// Compiles `source`, or explains why it is not a JSONPath expression.
    pub fn parse(source: &str) -> Result<Self, String> {
        let query = parse_json_path(source).map_err(|e| e.to_string())?;
        let steps: Option<Vec<Step>> = query
            .segments
            .iter()
            .map(|segment| match segment {
                Segment::Selector(Selector::Name(name)) => Some(Step::Key(name.clone())),
                Segment::Selector(Selector::Index(i)) => Some(Step::Index(*i)),
                _ => None,
            })
            .collect();
        let kind = match steps {
            Some(steps) => Kind::Singular(steps),
            None => Kind::Query(query),
        };
        Ok(PathExpr { source: source.to_owned(), kind })
    }

    /// Evaluates the expression. A singular path yields the value it names (or `None`); any
    /// other path yields an array of every match, so a field's shape never depends on the data.
    pub fn eval(&self, root: &Value) -> Option<Value> {
        self.eval_node(Node::Tree(root)).map(|node| node.to_value().into_owned())
    }

    /// As [`PathExpr::eval`], borrowing what a singular path names instead of copying it: a
    /// view that only reads a value (a table key, a transform's input, `$` for the whole image)
    /// then copies nothing it does not output, and a raw document stays raw.
    pub fn eval_node<'a>(&self, root: Node<'a>) -> Option<Node<'a>> {
        match &self.kind {
            Kind::Singular(steps) => steps.iter().try_fold(root, |node, step| match step {
                Step::Key(key) => node.get(key),
                Step::Index(i) => node.index(*i),
            }),
            Kind::Query(query) => {
                let tree = root.to_value();
                let found = js_path_process(query, tree.as_ref()).ok()?;
                Some(Node::Owned(Value::Array(found.into_iter().map(|r| r.val.clone()).collect())))
            }
        }
    }

    /// Whether the path names a single location (only names and indexes).
    pub fn is_singular(&self) -> bool {
        matches!(self.kind, Kind::Singular(_))
    }
}

impl fmt::Display for PathExpr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn singular_paths_walk_keys_and_indexes() {
        let doc = json!({"a": {"b": [10, 20, 30]}, "OS-X:y": 1});
        assert_eq!(PathExpr::parse("$.a.b[1]").unwrap().eval(&doc), Some(json!(20)));
        assert_eq!(PathExpr::parse("$.a.b[-1]").unwrap().eval(&doc), Some(json!(30)));
        assert_eq!(PathExpr::parse("$['OS-X:y']").unwrap().eval(&doc), Some(json!(1)));
        assert_eq!(PathExpr::parse("$.a.missing").unwrap().eval(&doc), None);
        assert_eq!(PathExpr::parse("$.a.b[7]").unwrap().eval(&doc), None);
        assert!(PathExpr::parse("$.a.b[0]").unwrap().is_singular());
    }

    #[test]
    fn root_is_the_whole_document() {
        let doc = json!({"a": 1});
        assert_eq!(PathExpr::parse("$").unwrap().eval(&doc), Some(doc.clone()));
    }

    #[test]
    fn queries_return_every_match_as_an_array() {
        let doc = json!({"tags": [{"n": "x", "k": 1}, {"n": "y", "k": 2}]});
        let path = PathExpr::parse("$.tags[?@.k > 1].n").unwrap();
        assert!(!path.is_singular());
        assert_eq!(path.eval(&doc), Some(json!(["y"])));
        assert_eq!(PathExpr::parse("$.tags[*].n").unwrap().eval(&doc), Some(json!(["x", "y"])));
        assert_eq!(PathExpr::parse("$.nothing[*]").unwrap().eval(&doc), Some(json!([])));
    }

    #[test]
    fn bad_syntax_is_reported() {
        assert!(PathExpr::parse("$.a[").is_err());
        assert!(PathExpr::parse("a.b").is_err());
    }
}
