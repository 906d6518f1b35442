//! Kubernetes manifests from disk: YAML or JSON, several documents per file,
//! directories walked recursively, `List` objects flattened.
//!
//! Documents become `serde_json::Value` (what the API server would store)
//! plus the source line of every node, so a finding can point at the line
//! that needs fixing. yaml-rust2's event parser gives the positions; JSON
//! files go through the same parser, JSON being YAML flow syntax.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde_json::{Map, Number, Value};
use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser, Tag};
use yaml_rust2::scanner::{Marker, TScalarStyle};

use super::K8sError;

/// One YAML document (or JSON file).
#[derive(Debug, Clone)]
pub struct Document {
    pub file: PathBuf,
    /// 0-based position of the document in its file.
    pub index: usize,
    pub value: Value,
    /// JSON pointer → 1-based line of the node (of its key, for map values).
    lines: HashMap<String, usize>,
}

impl Document {
    /// The line of the node at `pointer`, or of its closest ancestor that has
    /// one (a field that is missing points at the object that lacks it).
    pub fn line_of(&self, pointer: &str) -> Option<usize> {
        let mut p = pointer;
        loop {
            if let Some(l) = self.lines.get(p) {
                return Some(*l);
            }
            match p.rfind('/') {
                Some(i) => p = &p[..i],
                None => return None,
            }
        }
    }

    /// The Kubernetes objects in this document: itself, or the items of a
    /// `List` (what `kubectl get … -o json|yaml` prints), each with its JSON
    /// pointer inside the document.
    pub fn objects(&self) -> Vec<Object<'_>> {
        let kind = self.value.get("kind").and_then(Value::as_str);
        match (kind, self.value.get("items").and_then(Value::as_array)) {
            (Some(k), Some(items)) if k == "List" || k.ends_with("List") => items
                .iter()
                .enumerate()
                .filter(|(_, v)| v.is_object())
                .map(|(i, v)| Object {
                    doc: self,
                    pointer: format!("/items/{i}"),
                    value: v,
                })
                .collect(),
            _ if self.value.is_object() => vec![Object {
                doc: self,
                pointer: String::new(),
                value: &self.value,
            }],
            // Empty documents (a trailing `---`) and scalars are not objects.
            _ => Vec::new(),
        }
    }
}

/// A Kubernetes object inside a [`Document`].
#[derive(Debug, Clone)]
pub struct Object<'a> {
    pub doc: &'a Document,
    /// Where the object sits in the document ("" for the whole document).
    pub pointer: String,
    pub value: &'a Value,
}

impl<'a> Object<'a> {
    pub fn kind(&self) -> &'a str {
        self.value.get("kind").and_then(Value::as_str).unwrap_or("")
    }

    pub fn name(&self) -> &'a str {
        self.value
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("")
    }

    pub fn namespace(&self) -> Option<&'a str> {
        self.value
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
    }

    /// Line of a node given relative to the object.
    pub fn line_of(&self, rel: &str) -> Option<usize> {
        self.doc.line_of(&format!("{}{rel}", self.pointer))
    }

    /// `Kind/namespace/name`, or `Kind/name` without a namespace.
    pub fn display(&self) -> String {
        match self.namespace() {
            Some(ns) => format!("{}/{ns}/{}", self.kind(), self.name()),
            None => format!("{}/{}", self.kind(), self.name()),
        }
    }
}

/// Where the pod spec sits in an object of `kind`, if it has one.
pub fn pod_spec_pointer(kind: &str) -> Option<&'static str> {
    match kind {
        "Pod" => Some("/spec"),
        "Deployment"
        | "ReplicaSet"
        | "StatefulSet"
        | "DaemonSet"
        | "Job"
        | "ReplicationController" => Some("/spec/template/spec"),
        "CronJob" => Some("/spec/jobTemplate/spec/template/spec"),
        "PodTemplate" => Some("/template/spec"),
        _ => None,
    }
}

/// Every manifest file under `paths`: files as given, directories walked
/// recursively for `.yaml`, `.yml` and `.json`, in a stable (sorted) order.
pub fn collect_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, K8sError> {
    let mut out = Vec::new();
    for p in paths {
        let meta = std::fs::metadata(p).map_err(|source| K8sError::Io {
            path: p.clone(),
            source,
        })?;
        if meta.is_dir() {
            walk(p, &mut out)?;
        } else {
            out.push(p.clone());
        }
    }
    Ok(out)
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), K8sError> {
    let io = |source| K8sError::Io {
        path: dir.to_path_buf(),
        source,
    };
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(io)?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()
        .map_err(io)?;
    entries.sort();
    for p in entries {
        // Hidden entries (.git, editor files) are never manifests.
        if p.file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with('.'))
        {
            continue;
        }
        if p.is_dir() {
            walk(&p, out)?;
        } else if matches!(
            p.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml" | "json")
        ) {
            out.push(p);
        }
    }
    Ok(())
}

/// Reads and parses one manifest file.
pub fn load_file(path: &Path) -> Result<Vec<Document>, K8sError> {
    let text = std::fs::read_to_string(path).map_err(|source| K8sError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    parse_str(&text, path)
}

/// Parses every document of `text`; `file` names it in errors.
pub fn parse_str(text: &str, file: &Path) -> Result<Vec<Document>, K8sError> {
    let mut builder = Builder::default();
    let mut parser = Parser::new_from_str(text);
    parser
        .load(&mut builder, true)
        .map_err(|e| K8sError::Manifest {
            path: file.to_path_buf(),
            line: e.marker().line(),
            message: e.info().to_string(),
        })?;
    if let Some((line, message)) = builder.error {
        return Err(K8sError::Manifest {
            path: file.to_path_buf(),
            line,
            message,
        });
    }
    Ok(builder
        .docs
        .into_iter()
        .enumerate()
        .map(|(index, (value, lines))| Document {
            file: file.to_path_buf(),
            index,
            value,
            lines,
        })
        .collect())
}

/// A node under construction.
enum Frame {
    Map {
        map: Map<String, Value>,
        key: Option<String>,
        pointer: String,
        anchor: usize,
    },
    Seq {
        items: Vec<Value>,
        pointer: String,
        anchor: usize,
    },
}

/// Turns parser events into values, recording each node's line.
#[derive(Default)]
struct Builder {
    stack: Vec<Frame>,
    docs: Vec<(Value, HashMap<String, usize>)>,
    lines: HashMap<String, usize>,
    anchors: HashMap<usize, Value>,
    /// A document without content (`---` then nothing) yields no node.
    root: Option<Value>,
    error: Option<(usize, String)>,
}

impl Builder {
    /// The pointer the next node will have, or None when it is a map key.
    fn next_pointer(&self) -> Option<String> {
        match self.stack.last() {
            None => Some(String::new()),
            Some(Frame::Map { key: None, .. }) => None,
            Some(Frame::Map {
                key: Some(k),
                pointer,
                ..
            }) => Some(format!("{pointer}/{}", escape(k))),
            Some(Frame::Seq { items, pointer, .. }) => Some(format!("{pointer}/{}", items.len())),
        }
    }

    fn complete(&mut self, value: Value, anchor: usize, mark: Marker) {
        if anchor > 0 {
            self.anchors.insert(anchor, value.clone());
        }
        match self.stack.last_mut() {
            None => self.root = Some(value),
            Some(Frame::Seq { items, .. }) => items.push(value),
            Some(Frame::Map {
                map, key, pointer, ..
            }) => match key.take() {
                None => {
                    let k = match value {
                        Value::String(s) => s,
                        other => other.to_string(),
                    };
                    self.lines
                        .insert(format!("{pointer}/{}", escape(&k)), mark.line());
                    *key = Some(k);
                }
                Some(k) if k == "<<" => merge(map, value),
                Some(k) => {
                    map.insert(k, value);
                }
            },
        }
    }
}

/// YAML merge keys (`<<: *defaults`): keys already present win.
fn merge(map: &mut Map<String, Value>, value: Value) {
    let sources = match value {
        Value::Array(a) => a,
        v => vec![v],
    };
    for s in sources {
        if let Value::Object(o) = s {
            for (k, v) in o {
                map.entry(k).or_insert(v);
            }
        }
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        if self.error.is_some() {
            return;
        }
        match ev {
            Event::DocumentStart => {
                self.lines.clear();
                self.anchors.clear();
                self.root = None;
            }
            Event::DocumentEnd => {
                let value = self.root.take().unwrap_or(Value::Null);
                self.docs.push((value, std::mem::take(&mut self.lines)));
            }
            Event::Scalar(text, style, anchor, tag) => {
                let v = match self.next_pointer() {
                    Some(p) => {
                        self.lines.entry(p).or_insert(mark.line());
                        scalar(text, style, tag.as_ref())
                    }
                    // Keys stay text: `n:` is a key named "n", not `false`.
                    None => Value::String(text),
                };
                self.complete(v, anchor, mark);
            }
            Event::Alias(id) => {
                let v = self.anchors.get(&id).cloned().unwrap_or(Value::Null);
                if let Some(p) = self.next_pointer() {
                    self.lines.entry(p).or_insert(mark.line());
                }
                self.complete(v, 0, mark);
            }
            Event::MappingStart(anchor, _) | Event::SequenceStart(anchor, _) => {
                let pointer = match self.next_pointer() {
                    Some(p) => p,
                    None => {
                        // Complex keys do not occur in Kubernetes objects.
                        self.error = Some((mark.line(), "a map or list used as a key".into()));
                        return;
                    }
                };
                self.lines.entry(pointer.clone()).or_insert(mark.line());
                self.stack.push(if matches!(ev, Event::MappingStart(..)) {
                    Frame::Map {
                        map: Map::new(),
                        key: None,
                        pointer,
                        anchor,
                    }
                } else {
                    Frame::Seq {
                        items: Vec::new(),
                        pointer,
                        anchor,
                    }
                });
            }
            Event::MappingEnd | Event::SequenceEnd => {
                let (v, anchor) = match self.stack.pop() {
                    Some(Frame::Map { map, anchor, .. }) => (Value::Object(map), anchor),
                    Some(Frame::Seq { items, anchor, .. }) => (Value::Array(items), anchor),
                    None => return,
                };
                self.complete(v, anchor, mark);
            }
            Event::StreamStart | Event::StreamEnd | Event::Nothing => {}
        }
    }
}

/// RFC 6901 escaping of one pointer segment.
fn escape(k: &str) -> String {
    k.replace('~', "~0").replace('/', "~1")
}

/// A scalar typed the way Kubernetes' YAML decoder (YAML 1.1 resolution via
/// sigs.k8s.io/yaml) types it, so `readOnlyRootFilesystem: yes` means what
/// the API server would make of it.
fn scalar(text: String, style: TScalarStyle, tag: Option<&Tag>) -> Value {
    if let Some(t) = tag {
        match t.suffix.as_str() {
            "str" => return Value::String(text),
            "bool" | "int" | "float" | "null" => {}
            _ => return Value::String(text),
        }
    }
    if style != TScalarStyle::Plain {
        return Value::String(text);
    }
    match text.as_str() {
        "" | "~" | "null" | "Null" | "NULL" => return Value::Null,
        "true" | "True" | "TRUE" | "yes" | "Yes" | "YES" | "on" | "On" | "ON" | "y" | "Y" => {
            return Value::Bool(true);
        }
        "false" | "False" | "FALSE" | "no" | "No" | "NO" | "off" | "Off" | "OFF" | "n" | "N" => {
            return Value::Bool(false);
        }
        _ => {}
    }
    let digits = text.strip_prefix(['-', '+']).unwrap_or(&text);
    if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        if let Ok(i) = text.parse::<i64>() {
            return Value::Number(i.into());
        }
    } else if let Some(hex) = text.strip_prefix("0x")
        && let Ok(i) = i64::from_str_radix(hex, 16)
    {
        return Value::Number(i.into());
    } else if text.bytes().any(|b| b.is_ascii_digit())
        && text
            .bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'-' | b'+'))
        && let Ok(f) = text.parse::<f64>()
        && let Some(n) = Number::from_f64(f)
    {
        return Value::Number(n);
    }
    Value::String(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Vec<Document> {
        parse_str(text, Path::new("t.yaml")).unwrap()
    }

    #[test]
    fn multi_document_with_lines() {
        let docs = parse(
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: a\n---\n# c\nkind: Pod\nspec:\n  containers:\n  - name: app\n    image: x\n    securityContext:\n      runAsNonRoot: yes\n---\n",
        );
        assert_eq!(docs.len(), 3);
        assert_eq!(docs[0].value["metadata"]["name"], "a");
        assert_eq!(docs[0].line_of("/metadata/name"), Some(4));
        let pod = &docs[1];
        assert_eq!(pod.line_of("/kind"), Some(7));
        assert_eq!(pod.line_of("/spec/containers/0"), Some(10));
        assert_eq!(pod.line_of("/spec/containers/0/image"), Some(11));
        assert_eq!(
            pod.value
                .pointer("/spec/containers/0/securityContext/runAsNonRoot"),
            Some(&Value::Bool(true))
        );
        // A missing field points at its closest ancestor.
        assert_eq!(
            pod.line_of("/spec/containers/0/securityContext/readOnlyRootFilesystem"),
            Some(12)
        );
        assert!(docs[2].objects().is_empty());
    }

    #[test]
    fn scalars_anchors_and_json() {
        let d =
            &parse("a: &x {n: 1, s: '1', f: 1.5, z: ~, h: 0x10}\nb: *x\nc:\n  <<: *x\n  n: 2\n")[0];
        assert_eq!(d.value["a"]["n"], 1, "{:#}", d.value);
        assert_eq!(d.value["a"]["s"], "1");
        assert_eq!(d.value["a"]["f"], 1.5);
        assert_eq!(d.value["a"]["z"], Value::Null);
        assert_eq!(d.value["a"]["h"], 16);
        assert_eq!(d.value["b"], d.value["a"]);
        assert_eq!(d.value["c"]["n"], 2);
        assert_eq!(d.value["c"]["s"], "1");
        let j = &parse(
            "{\"kind\": \"List\", \"items\": [\n {\"kind\": \"Pod\", \"metadata\": {\"name\": \"p\"}}]}",
        )[0];
        let objs = j.objects();
        assert_eq!(objs.len(), 1);
        assert_eq!(objs[0].name(), "p");
        assert_eq!(objs[0].line_of("/metadata"), Some(2));
    }

    #[test]
    fn syntax_errors_name_the_line() {
        let e = parse_str("a: 1\nb: [1, 2\nc: 3\n", Path::new("bad.yaml"))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("bad.yaml:"), "{e}");
    }
}
