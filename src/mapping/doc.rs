//! Upstream documents as the engine reads them: a parsed JSON tree, or the raw members of an
//! object borrowed from the bytes the upstream sent.
//!
//! Lists are read raw. An image of a Glance page becomes a list of its keys and the raw text of
//! each value: nothing is built for a value the view does not look at, and a value copied
//! through (most of them) is written out as the bytes it came in. A page is walked image by
//! image ([`for_each_object`]), so a request in flight holds the raw page and its answer, never
//! a tree of maps for the whole page.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

/// The raw members of one JSON object, in the order they came.
#[derive(Debug, Default)]
pub struct RawObject<'a> {
    members: Vec<(Cow<'a, str>, &'a RawValue)>,
}

impl<'a> RawObject<'a> {
    /// Reads an object from `text`, borrowing from it.
    pub fn parse(text: &'a str) -> Result<Self, serde_json::Error> {
        let mut object = RawObject::default();
        ObjectSeed(&mut object).deserialize(&mut serde_json::Deserializer::from_str(text))?;
        Ok(object)
    }

    /// The value of `key`; of its last occurrence, as a parsed tree would have it.
    pub fn get(&self, key: &str) -> Option<&'a RawValue> {
        self.members.iter().rev().find(|(k, _)| k == key).map(|(_, v)| *v)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&Cow<'a, str>, &'a RawValue)> + '_ {
        self.members.iter().map(|(k, v)| (k, *v))
    }

    pub fn into_members(self) -> impl Iterator<Item = (Cow<'a, str>, &'a RawValue)> {
        self.members.into_iter()
    }

    /// The object as a tree, for what only a tree can answer (JSONPath queries).
    pub fn to_value(&self) -> Result<Value, serde_json::Error> {
        let mut map = Map::with_capacity(self.members.len());
        for (k, v) in &self.members {
            map.insert(k.to_string(), serde_json::from_str(v.get())?);
        }
        Ok(Value::Object(map))
    }
}

/// One value of an upstream document: borrowed from a parsed tree, borrowed raw text, the raw
/// members of an object (a listed image), or a value made for the occasion.
#[derive(Clone, Debug)]
pub enum Node<'a> {
    Tree(&'a Value),
    Raw(&'a RawValue),
    Object(&'a RawObject<'a>),
    Owned(Value),
}

impl<'a> Node<'a> {
    pub fn is_null(&self) -> bool {
        match self {
            Node::Tree(v) => v.is_null(),
            Node::Raw(r) => r.get() == "null",
            Node::Object(_) => false,
            Node::Owned(v) => v.is_null(),
        }
    }

    /// The string this value is, if it is one.
    pub fn as_str(&self) -> Option<Cow<'_, str>> {
        match self {
            Node::Tree(v) => v.as_str().map(Cow::Borrowed),
            Node::Owned(v) => v.as_str().map(Cow::Borrowed),
            Node::Raw(r) => raw_str(r),
            Node::Object(_) => None,
        }
    }

    /// The string this value is, borrowed for as long as the document.
    pub fn str_in_doc(&self) -> Option<Cow<'a, str>> {
        match self {
            Node::Tree(v) => v.as_str().map(Cow::Borrowed),
            Node::Raw(r) => raw_str(r),
            Node::Owned(v) => v.as_str().map(|s| Cow::Owned(s.to_owned())),
            Node::Object(_) => None,
        }
    }

    pub fn is_object(&self) -> bool {
        matches!(self, Node::Object(_) | Node::Tree(Value::Object(_)) | Node::Owned(Value::Object(_)))
            || matches!(self, Node::Raw(r) if r.get().starts_with('{'))
    }

    /// The value as a tree (parsed when raw).
    pub fn to_value(&self) -> Cow<'_, Value> {
        match self {
            Node::Tree(v) => Cow::Borrowed(v),
            Node::Owned(v) => Cow::Borrowed(v),
            // Raw text was validated when the page was read.
            Node::Raw(r) => Cow::Owned(serde_json::from_str(r.get()).unwrap_or(Value::Null)),
            Node::Object(o) => Cow::Owned(o.to_value().unwrap_or(Value::Null)),
        }
    }

    /// The member `key` of an object value.
    pub fn get(&self, key: &str) -> Option<Node<'a>> {
        match self {
            Node::Tree(v) => v.get(key).map(Node::Tree),
            Node::Owned(v) => v.get(key).cloned().map(Node::Owned),
            Node::Object(o) => o.get(key).map(Node::Raw),
            Node::Raw(r) if r.get().starts_with('{') => RawObject::parse(r.get()).ok()?.get(key).map(Node::Raw),
            Node::Raw(_) => None,
        }
    }

    /// The element `index` of an array value (negative: from the end).
    pub fn index(&self, index: i64) -> Option<Node<'a>> {
        let pick = |items: usize| {
            if index < 0 {
                items.checked_sub(index.unsigned_abs() as usize)
            } else {
                usize::try_from(index).ok()
            }
        };
        match self {
            Node::Tree(v) => v.as_array().and_then(|items| items.get(pick(items.len())?)).map(Node::Tree),
            Node::Owned(v) => v.as_array().and_then(|items| items.get(pick(items.len())?)).cloned().map(Node::Owned),
            Node::Raw(r) if r.get().starts_with('[') => {
                let items: Vec<&'a RawValue> = serde_json::from_str(r.get()).ok()?;
                items.get(pick(items.len())?).copied().map(Node::Raw)
            }
            Node::Raw(_) | Node::Object(_) => None,
        }
    }

    /// The members of an object value, borrowed for as long as the document; `None` for
    /// anything else, or for a made value (whose members are not the document's).
    pub fn members_in_doc(&self) -> Option<Members<'a>> {
        match self {
            Node::Tree(Value::Object(map)) => Some(Members::Tree(map.iter())),
            Node::Object(o) => Some(Members::Raw(o.members.iter())),
            _ => None,
        }
    }
}

/// The members of an object in a document.
pub enum Members<'a> {
    Tree(serde_json::map::Iter<'a>),
    Raw(std::slice::Iter<'a, (Cow<'a, str>, &'a RawValue)>),
}

impl<'a> Iterator for Members<'a> {
    type Item = (&'a str, Node<'a>);

    fn next(&mut self) -> Option<Self::Item> {
        match self {
            Members::Tree(it) => it.next().map(|(k, v)| (k.as_str(), Node::Tree(v))),
            Members::Raw(it) => it.next().map(|(k, v)| (k.as_ref(), Node::Raw(v))),
        }
    }
}

/// The text of a raw JSON string, borrowed unless it holds escapes.
fn raw_str(raw: &RawValue) -> Option<Cow<'_, str>> {
    let text = raw.get();
    let inner = text.strip_prefix('"')?.strip_suffix('"')?;
    if !inner.contains('\\') {
        // Valid JSON (checked when read) without escapes: the text between the quotes is the string.
        return Some(Cow::Borrowed(inner));
    }
    serde_json::from_str::<String>(text).ok().map(Cow::Owned)
}

impl Serialize for Node<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Node::Tree(v) => v.serialize(serializer),
            Node::Owned(v) => v.serialize(serializer),
            // serde_json writes raw text as it is.
            Node::Raw(r) => r.serialize(serializer),
            Node::Object(o) => serializer.collect_map(o.iter().map(|(k, v)| (k.as_ref(), v))),
        }
    }
}

/// What a list page held besides its objects.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PageSummary {
    /// Objects read.
    pub count: usize,
    /// The `id` of the last one.
    pub last_id: Option<String>,
    /// The page names a next one (a string `next`).
    pub next: bool,
}

/// Why a list page could not be walked.
#[derive(Debug, thiserror::Error)]
pub enum PageError<E> {
    /// The page is not a list page: not JSON, or not of the expected shape.
    #[error("{0}")]
    Unusable(String),
    /// The visitor refused an object.
    #[error("{0}")]
    Visit(E),
}

/// Walks a list page `{"<key>": [{...}, ...], "next": "...", ...}`, handing each object of
/// the array to `visit` as it is read. Every object must carry a string `id`.
pub fn for_each_object<'a, E: fmt::Display>(
    page: &'a [u8],
    key: &str,
    visit: impl FnMut(&RawObject<'a>) -> Result<(), E>,
) -> Result<PageSummary, PageError<E>> {
    let text = std::str::from_utf8(page).map_err(|e| PageError::Unusable(format!("not UTF-8: {e}")))?;
    let mut walk = PageWalk { key, visit, refused: None, summary: PageSummary::default(), seen_key: false };
    let mut de = serde_json::Deserializer::from_str(text);
    let read = (&mut walk).deserialize(&mut de).and_then(|()| de.end());
    if let Some(e) = walk.refused.take() {
        return Err(PageError::Visit(e));
    }
    read.map_err(|e| PageError::Unusable(format!("not a list: {e}")))?;
    if !walk.seen_key {
        return Err(PageError::Unusable(format!("list without an `{key}` array")));
    }
    Ok(walk.summary)
}

struct PageWalk<'k, F, E> {
    key: &'k str,
    visit: F,
    /// The visitor's own error, kept aside: serde's errors only carry text.
    refused: Option<E>,
    summary: PageSummary,
    seen_key: bool,
}

impl<'de, F, E> DeserializeSeed<'de> for &mut PageWalk<'_, F, E>
where
    F: FnMut(&RawObject<'de>) -> Result<(), E>,
    E: fmt::Display,
{
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de, F, E> Visitor<'de> for &mut PageWalk<'_, F, E>
where
    F: FnMut(&RawObject<'de>) -> Result<(), E>,
    E: fmt::Display,
{
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "an object with an `{}` array", self.key)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(name) = map.next_key::<Key<'de>>()? {
            if name.0 == self.key {
                // Read as it streams, the first would be used where a parser keeps the last.
                if self.seen_key {
                    return Err(de::Error::custom(format_args!("`{}` appears twice", self.key)));
                }
                self.seen_key = true;
                map.next_value_seed(Objects(&mut *self))?;
            } else if name.0 == "next" {
                let next: Option<&'de RawValue> = map.next_value()?;
                self.summary.next = next.is_some_and(|raw| raw.get().starts_with('"'));
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(())
    }
}

/// The array of a page, object by object into one reused buffer.
struct Objects<'w, 'k, F, E>(&'w mut PageWalk<'k, F, E>);

impl<'de, F, E> DeserializeSeed<'de> for Objects<'_, '_, F, E>
where
    F: FnMut(&RawObject<'de>) -> Result<(), E>,
    E: fmt::Display,
{
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de, F, E> Visitor<'de> for Objects<'_, '_, F, E>
where
    F: FnMut(&RawObject<'de>) -> Result<(), E>,
    E: fmt::Display,
{
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of objects")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let walk = self.0;
        let mut object = RawObject::default();
        loop {
            object.members.clear();
            if seq.next_element_seed(ObjectSeed(&mut object))?.is_none() {
                return Ok(());
            }
            let id = object
                .get("id")
                .and_then(raw_str)
                .ok_or_else(|| de::Error::custom("an entry without a string `id`"))?;
            walk.summary.last_id = Some(id.into_owned());
            walk.summary.count += 1;
            if let Err(e) = (walk.visit)(&object) {
                let text = e.to_string();
                walk.refused = Some(e);
                return Err(de::Error::custom(text));
            }
        }
    }
}

/// Reads one object's members into a buffer.
struct ObjectSeed<'o, 'de>(&'o mut RawObject<'de>);

impl<'de> DeserializeSeed<'de> for ObjectSeed<'_, 'de> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for ObjectSeed<'_, 'de> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(Key(key)) = map.next_key()? {
            let value: &'de RawValue = map.next_value()?;
            self.0.members.push((key, value));
        }
        Ok(())
    }
}

/// An object key, borrowed unless it holds escapes.
struct Key<'de>(Cow<'de, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a key")
            }

            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }

            fn visit_string<E: de::Error>(self, v: String) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v)))
            }
        }
        deserializer.deserialize_str(KeyVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn walk(page: &str) -> Result<(PageSummary, Vec<String>), String> {
        let mut seen = Vec::new();
        let summary = for_each_object(page.as_bytes(), "images", |o| {
            seen.push(serde_json::to_string(&o.to_value().map_err(|e| e.to_string())?).unwrap());
            Ok::<_, String>(())
        })
        .map_err(|e| e.to_string())?;
        Ok((summary, seen))
    }

    #[test]
    fn pages_are_walked_object_by_object() {
        let (summary, seen) = walk(
            r#"{"images": [{"id": "a", "x": [1, {"y": "z"}]}, {"id": "b\u0041"}], "next": "/v2/images?marker=b"}"#,
        )
        .unwrap();
        assert_eq!(summary, PageSummary { count: 2, last_id: Some("bA".into()), next: true });
        assert_eq!(seen, [r#"{"id":"a","x":[1,{"y":"z"}]}"#, r#"{"id":"bA"}"#]);
        let (summary, _) = walk(r#"{"first": "/v2/images", "images": [], "next": null}"#).unwrap();
        assert_eq!(summary, PageSummary::default());
    }

    #[test]
    fn pages_that_are_not_lists_are_unusable() {
        for (page, why) in [
            ("<html>", "not a list"),
            (r#"{"images": [{"id": "a"}]"#, "not a list"),
            (r#"{"images": [{"id": "a"}]} trailing"#, "not a list"),
            (r#"{"images": {}}"#, "not a list"),
            (r#"{"images": [1]}"#, "not a list"),
            (r#"{"images": [{"id": 7}]}"#, "without a string `id`"),
            (r#"{"images": [{"name": "x"}]}"#, "without a string `id`"),
            (r#"{"image": []}"#, "list without an `images` array"),
            (r#"{"images": [], "images": []}"#, "`images` appears twice"),
            ("[]", "not a list"),
        ] {
            let e = walk(page).unwrap_err();
            assert!(e.contains(why), "{page}: {e}");
        }
    }

    #[test]
    fn a_visitor_error_stops_the_walk_and_comes_back_as_it_was() {
        let mut calls = 0;
        let e = for_each_object(br#"{"images": [{"id": "a"}, {"id": "b"}]}"#, "images", |_| {
            calls += 1;
            Err("refused")
        })
        .unwrap_err();
        assert!(matches!(e, PageError::Visit("refused")));
        assert_eq!(calls, 1);
    }

    #[test]
    fn raw_nodes_read_as_trees_do() {
        let text =
            r#"{"s": "plain", "e": "tab\there \"q\"", "n": null, "a": [1, 2, 3], "o": {"k": "v"}, "d": 1, "d": 2}"#;
        let raw = RawObject::parse(text).unwrap();
        let tree: Value = serde_json::from_str(text).unwrap();
        for doc in [Node::Object(&raw), Node::Tree(&tree)] {
            assert_eq!(doc.get("s").unwrap().as_str().unwrap(), "plain");
            assert_eq!(doc.get("e").unwrap().as_str().unwrap(), "tab\there \"q\"");
            assert!(doc.get("n").unwrap().is_null());
            assert!(doc.get("a").unwrap().as_str().is_none());
            assert_eq!(doc.get("a").unwrap().index(-1).unwrap().to_value().into_owned(), json!(3));
            assert_eq!(doc.get("o").unwrap().get("k").unwrap().as_str().unwrap(), "v");
            assert!(doc.get("missing").is_none());
            assert_eq!(doc.get("d").unwrap().to_value().into_owned(), json!(2), "the last of a repeated key");
            assert_eq!(doc.to_value().into_owned(), tree);
            assert_eq!(serde_json::to_value(&doc).unwrap(), tree);
        }
        assert!(
            matches!(raw_str(&RawValue::from_string("\"a\\u00e9\"".into()).unwrap()), Some(Cow::Owned(s)) if s == "aé")
        );
    }
}
