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
use crate::terminal::Escaped;

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
    let root = std::fs::canonicalize(dir).map_err(|source| K8sError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    walk_beneath(dir, &root, out)
}

/// Collects manifests below `dir` without following symlinked
/// directories (a loop `a -> .` would never end, and `x -> /` would audit
/// the whole host). A symlinked file is read only when it resolves inside
/// `root`: in CI on an untrusted change, a link to `/etc/shadow` must not
/// have its content echoed in a report.
fn walk_beneath(dir: &Path, root: &Path, out: &mut Vec<PathBuf>) -> Result<(), K8sError> {
    let io = |source| K8sError::Io {
        path: dir.to_path_buf(),
        source,
    };
    let mut entries: Vec<(PathBuf, std::fs::FileType)> = std::fs::read_dir(dir)
        .map_err(io)?
        .map(|e| e.and_then(|e| Ok((e.path(), e.file_type()?))))
        .collect::<Result<_, _>>()
        .map_err(io)?;
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    for (p, ty) in entries {
        // Hidden entries (.git, editor files) are never manifests.
        if p.file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with('.'))
        {
            continue;
        }
        let is_manifest = || {
            matches!(
                p.extension().and_then(|e| e.to_str()),
                Some("yaml" | "yml" | "json")
            )
        };
        if ty.is_dir() {
            walk_beneath(&p, root, out)?;
        } else if ty.is_symlink() {
            if !is_manifest() {
                continue;
            }
            match std::fs::canonicalize(&p) {
                Ok(target) if target.starts_with(root) && target.is_file() => out.push(p),
                Ok(target) => tracing::warn!(
                    "not following {}: it points to {}, outside {} or not a file",
                    Escaped(&p.display().to_string()),
                    Escaped(&target.display().to_string()),
                    Escaped(&root.display().to_string())
                ),
                Err(e) => {
                    tracing::warn!("not following {}: {e}", Escaped(&p.display().to_string()))
                }
            }
        } else if ty.is_file() && is_manifest() {
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

/// How much YAML aliases may copy in one file. Each alias is expanded by
/// copying what its anchor names, so nine nested aliases of nine items
/// each (the "billion laughs", under 1 KB) would need billions of nodes.
/// Kubernetes manifests share a few small blocks this way at most.
const MAX_ALIAS_NODES: usize = 100_000;
const MAX_ALIAS_BYTES: usize = 16 << 20;

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
    /// Each anchored value with its [`weight`].
    anchors: HashMap<usize, (Value, (usize, usize))>,
    /// Nodes and text bytes copied by aliases so far in this file.
    alias_nodes: usize,
    alias_bytes: usize,
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
            let w = weight(&value);
            self.anchors.insert(anchor, (value.clone(), w));
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

/// Nodes in `v` and bytes of text in its keys and strings: what copying
/// it costs.
fn weight(v: &Value) -> (usize, usize) {
    let (mut nodes, mut bytes) = (0usize, 0usize);
    let mut stack = vec![v];
    while let Some(v) = stack.pop() {
        nodes += 1;
        match v {
            Value::String(s) => bytes += s.len(),
            Value::Array(a) => stack.extend(a),
            Value::Object(o) => {
                for (k, v) in o {
                    bytes += k.len();
                    stack.push(v);
                }
            }
            _ => bytes += 8,
        }
    }
    (nodes, bytes)
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
                let (nodes, bytes) = self.anchors.get(&id).map_or((1, 0), |(_, w)| *w);
                self.alias_nodes = self.alias_nodes.saturating_add(nodes);
                self.alias_bytes = self.alias_bytes.saturating_add(bytes);
                if self.alias_nodes > MAX_ALIAS_NODES || self.alias_bytes > MAX_ALIAS_BYTES {
                    self.error = Some((
                        mark.line(),
                        format!(
                            "YAML aliases in this file expand to more than {MAX_ALIAS_NODES} \
                             nodes or {} MiB; refusing it (an alias bomb?)",
                            MAX_ALIAS_BYTES >> 20
                        ),
                    ));
                    return;
                }
                let v = self
                    .anchors
                    .get(&id)
                    .map_or(Value::Null, |(v, _)| v.clone());
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

    /// The billion-laughs shape: nine levels of nine aliases, under 1 KB.
    fn alias_bomb(levels: usize) -> String {
        let mut text = String::from("a0: &a0 [\"lol\"]\n");
        for i in 1..levels {
            let refs = vec![format!("*a{}", i - 1); 9].join(", ");
            text.push_str(&format!("a{i}: &a{i} [{refs}]\n"));
        }
        text
    }

    #[test]
    fn an_alias_bomb_is_refused_with_the_file_and_line() {
        let text = alias_bomb(9);
        assert!(text.len() < 1024);
        let start = std::time::Instant::now();
        let err = parse_str(&text, Path::new("bomb.yaml"))
            .expect_err("a bomb must not parse")
            .to_string();
        assert!(
            err.starts_with("bomb.yaml:") && err.contains("alias bomb"),
            "{err}"
        );
        assert!(start.elapsed().as_secs() < 2, "{:?}", start.elapsed());
    }

    #[test]
    fn aliases_of_a_big_string_count_its_bytes() {
        let big = "x".repeat(1 << 20);
        let refs = vec!["*s"; 20].join(", ");
        let text = format!("s: &s {big}\nl: [{refs}]\n");
        let err = parse_str(&text, Path::new("b.yaml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("alias bomb"), "{err}");
    }

    #[test]
    fn ordinary_anchors_and_merge_keys_still_work() {
        let docs = parse(&alias_bomb(3));
        assert_eq!(docs[0].value["a2"].as_array().unwrap().len(), 9);
        let docs = parse("base: &b {x: 1}\nc:\n  <<: *b\n  y: 2\n");
        assert_eq!(docs[0].value["c"]["x"], 1);
    }

    #[test]
    fn the_walk_follows_no_symlinked_directory_and_no_file_outside() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret.yaml"), "kind: Secret\n").unwrap();
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        std::fs::create_dir(root.join("sub")).unwrap();
        std::fs::write(root.join("sub/pod.yaml"), "kind: Pod\n").unwrap();
        let link = |target: &Path, name: &str| {
            std::os::unix::fs::symlink(target, root.join(name)).unwrap();
        };
        link(Path::new("."), "loop");
        link(Path::new(".."), "up");
        link(outside.path(), "out");
        link(&outside.path().join("secret.yaml"), "leak.yaml");
        link(Path::new("sub/pod.yaml"), "alias.yaml");
        let start = std::time::Instant::now();
        let files = collect_files(&[root.to_path_buf()]).unwrap();
        let names: Vec<_> = files
            .iter()
            .map(|p| p.strip_prefix(root).unwrap().to_str().unwrap())
            .collect();
        assert_eq!(names, ["alias.yaml", "sub/pod.yaml"]);
        assert!(start.elapsed().as_secs() < 2);
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
