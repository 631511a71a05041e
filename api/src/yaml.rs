//! A YAML (and JSON) reader that remembers the line of every value.
//!
//! serde_yaml forgets positions once a document is deserialised, yet a user fixing a manifest
//! wants the line of the offending field, not of the document. This module reads the event
//! stream of `saphyr-parser` into a small tree whose nodes carry their line, converts that tree
//! to JSON for the typed Kubernetes structs, and answers "which line holds this field path?".
//!
//! Scalars are resolved as Kubernetes resolves them (go-yaml v2, YAML 1.1: `0400` is octal). Anchors, aliases
//! and `<<` merge keys work. Input is bounded: nesting deeper than [`MAX_DEPTH`] or a document
//! that expands to more than [`MAX_NODES`] values (an alias bomb) is an error, not a hang.
//!
//! One leniency is go-yaml's, not the YAML spec's: a line inside a flow collection (`[ … ]`,
//! `{ … }`) may sit at or left of its key's indentation, as in `command: [` … `]` with the `]`
//! under the `c` (see [`parse_documents`]).

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};

use saphyr_parser::{Event, Parser, ScalarStyle, Span, Tag};
use serde_json::Number;

use crate::path::{FieldPath, Segment};

/// Deepest nesting accepted; real Kubernetes objects stay far below it.
pub const MAX_DEPTH: usize = 64;
/// Most values one document may expand to, aliases included.
pub const MAX_NODES: usize = 2_000_000;

/// A value with the (1-based) line it starts on.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    /// Line of the value's first character.
    pub line: u32,
    /// The value itself.
    pub value: Value,
}

/// A YAML value after core-schema resolution.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// `null`, `~` or nothing.
    Null,
    /// `true` / `false`.
    Bool(bool),
    /// An integer or a finite float.
    Number(Number),
    /// Any other scalar.
    String(String),
    /// A sequence.
    Seq(Vec<Node>),
    /// A mapping, in document order.
    Map(Vec<Entry>),
}

/// One key of a mapping, with the line of the key itself.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    /// The key as text (Kubernetes objects only have string keys).
    pub key: String,
    /// Line of the key.
    pub key_line: u32,
    /// The value under the key.
    pub value: Node,
}

/// One document of a multi-document stream.
#[derive(Clone, Debug, PartialEq)]
pub struct Document {
    /// Line on which the document starts (its `---`, or its first content).
    pub start_line: u32,
    /// The content; `None` for a document holding only comments.
    pub root: Option<Node>,
    /// Keys given twice in one mapping, with the line of the second one.
    pub duplicate_keys: Vec<(FieldPath, u32)>,
}

/// Why a stream could not be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum YamlError {
    /// The text is not valid YAML.
    #[error("line {line}: invalid YAML: {message}")]
    Syntax {
        /// Line of the error.
        line: u32,
        /// The parser's description.
        message: String,
    },
    /// The text is not valid JSON (for `.json` files the YAML parser also rejected).
    #[error("line {line}: invalid JSON: {message}")]
    Json {
        /// Line of the error.
        line: u32,
        /// The parser's description.
        message: String,
    },
    /// Nesting beyond [`MAX_DEPTH`].
    #[error("line {line}: nested deeper than {MAX_DEPTH} levels")]
    TooDeep {
        /// Line where the limit was crossed.
        line: u32,
    },
    /// A document expanding beyond [`MAX_NODES`] values.
    #[error("line {line}: document expands to more than {MAX_NODES} values")]
    TooLarge {
        /// Line where the limit was crossed.
        line: u32,
    },
    /// A tag other than the core schema's (`!!str`, `!!int`, …).
    #[error("line {line}: unsupported YAML tag {tag}")]
    UnsupportedTag {
        /// Line of the tagged value.
        line: u32,
        /// The tag as written.
        tag: String,
    },
    /// A scalar whose tag demands a type it cannot be read as.
    #[error("line {line}: {text:?} is not a valid {wanted}")]
    BadTaggedScalar {
        /// Line of the scalar.
        line: u32,
        /// The scalar's text.
        text: String,
        /// The type the tag asked for.
        wanted: &'static str,
    },
    /// `.inf` or `.nan`, which JSON (and so Kubernetes) cannot represent.
    #[error("line {line}: {text} is not a finite number")]
    NonFinite {
        /// Line of the scalar.
        line: u32,
        /// The scalar's text.
        text: String,
    },
    /// A mapping or sequence used as a mapping key.
    #[error("line {line}: mapping keys must be plain scalars")]
    ComplexKey {
        /// Line of the key.
        line: u32,
    },
    /// An alias naming an anchor that is not defined (yet).
    #[error("line {line}: alias refers to an unknown anchor")]
    UnknownAlias {
        /// Line of the alias.
        line: u32,
    },
}

impl YamlError {
    /// The line the error is about.
    pub fn line(&self) -> u32 {
        match self {
            YamlError::Syntax { line, .. }
            | YamlError::Json { line, .. }
            | YamlError::TooDeep { line }
            | YamlError::TooLarge { line }
            | YamlError::UnsupportedTag { line, .. }
            | YamlError::BadTaggedScalar { line, .. }
            | YamlError::NonFinite { line, .. }
            | YamlError::ComplexKey { line }
            | YamlError::UnknownAlias { line } => *line,
        }
    }

    /// The description without the line prefix, for callers that print the line themselves.
    pub fn message(&self) -> String {
        let full = self.to_string();
        match full.split_once(": ") {
            Some((_, rest)) => rest.to_string(),
            None => full,
        }
    }
}

impl Node {
    /// The value under `key` if this node is a mapping that has it.
    pub fn get(&self, key: &str) -> Option<&Node> {
        self.entry(key).map(|entry| &entry.value)
    }

    /// The entry (key line included) under `key` if this node is a mapping that has it.
    pub fn entry(&self, key: &str) -> Option<&Entry> {
        match &self.value {
            Value::Map(entries) => entries.iter().find(|entry| entry.key == key),
            _ => None,
        }
    }

    /// The text of a string scalar.
    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            Value::String(text) => Some(text),
            _ => None,
        }
    }

    /// The line holding the field at `path`: the key's own line for a mapping entry, the
    /// element's line for a list item. Where the path leaves the tree (a missing field), the
    /// line of the deepest part that exists.
    pub fn line_of(&self, path: &FieldPath) -> u32 {
        let mut node = self;
        let mut line = self.line;
        for segment in path.segments() {
            match (segment, &node.value) {
                (Segment::Field(key) | Segment::Key(key), Value::Map(_)) => match node.entry(key) {
                    Some(entry) => {
                        line = entry.key_line;
                        node = &entry.value;
                    }
                    None => break,
                },
                (Segment::Index(index), Value::Seq(items)) => match items.get(*index) {
                    Some(item) => {
                        line = item.line;
                        node = item;
                    }
                    None => break,
                },
                _ => break,
            }
        }
        line
    }

    /// The JSON form, for deserialising into typed structs.
    pub fn to_json(&self) -> serde_json::Value {
        match &self.value {
            Value::Null => serde_json::Value::Null,
            Value::Bool(b) => serde_json::Value::Bool(*b),
            Value::Number(n) => serde_json::Value::Number(n.clone()),
            Value::String(s) => serde_json::Value::String(s.clone()),
            Value::Seq(items) => {
                serde_json::Value::Array(items.iter().map(Node::to_json).collect())
            }
            Value::Map(entries) => serde_json::Value::Object(
                entries
                    .iter()
                    .map(|entry| (entry.key.clone(), entry.value.to_json()))
                    .collect(),
            ),
        }
    }

    /// Builds a tree from JSON that carries no positions (every node gets `line`).
    pub fn from_json(value: &serde_json::Value, line: u32) -> Node {
        let value = match value {
            serde_json::Value::Null => Value::Null,
            serde_json::Value::Bool(b) => Value::Bool(*b),
            serde_json::Value::Number(n) => Value::Number(n.clone()),
            serde_json::Value::String(s) => Value::String(s.clone()),
            serde_json::Value::Array(items) => {
                Value::Seq(items.iter().map(|v| Node::from_json(v, line)).collect())
            }
            serde_json::Value::Object(map) => Value::Map(
                map.iter()
                    .map(|(key, v)| Entry {
                        key: key.clone(),
                        key_line: line,
                        value: Node::from_json(v, line),
                    })
                    .collect(),
            ),
        };
        Node { line, value }
    }

    fn count(&self) -> usize {
        1 + match &self.value {
            Value::Seq(items) => items.iter().map(Node::count).sum(),
            Value::Map(entries) => entries.iter().map(|e| e.value.count()).sum(),
            _ => 0,
        }
    }
}

/// Most bytes [`parse_documents`] re-reads while moving under-indented flow lines right: each
/// move costs one more read of the text, and this caps the total for hostile input.
const MAX_REREAD_BYTES: usize = 64 * 1024 * 1024;

/// Reads every document of a YAML stream.
///
/// Kubernetes, kubectl, Argo CD and Flux read YAML with go-yaml, which (like libyaml) does not
/// check indentation inside a flow collection, so manifests such as Kubernetes' own examples put
/// the closing `]` of a multi-line `command: [` at the key's column. saphyr-parser follows the
/// spec, which wants every line of the collection indented past the key, and stops with "invalid
/// indentation". Inside a flow collection leading spaces carry no meaning (they are separation,
/// or folded away within a multi-line scalar), so such a line is moved right far enough and the
/// text read again. Only spaces at the start of a line are added, so every line number stays as
/// written. Multi-line quoted scalars indented too little are still refused, as the spec says.
pub fn parse_documents(text: &str) -> Result<Vec<Document>, YamlError> {
    let mut text = Cow::Borrowed(text);
    let mut reread = 0usize;
    let mut last_moved = None;
    loop {
        let mut builder = Builder::default();
        let error = match builder.run(&text) {
            Ok(()) => return Ok(builder.documents),
            Err(error) => error,
        };
        let Some(line) = builder.under_indented_flow_line.take() else {
            return Err(error);
        };
        // Each move leaves the text before the line as it was, so a second stop on the same
        // line (or an earlier one) means moving does not help.
        reread = reread.saturating_add(text.len());
        if last_moved.is_some_and(|moved| line.start <= moved) || reread > MAX_REREAD_BYTES {
            return Err(error);
        }
        let Some((at, _)) = text.char_indices().nth(line.start) else {
            return Err(error);
        };
        let mut moved = String::with_capacity(text.len() + line.missing);
        moved.push_str(&text[..at]);
        moved.extend(std::iter::repeat_n(' ', line.missing));
        moved.push_str(&text[at..]);
        text = Cow::Owned(moved);
        last_moved = Some(line.start);
    }
}

/// Reads a `.json` file: through the YAML reader (which keeps lines) when it can, else with a
/// strict JSON parser (JSON that YAML rejects, such as tab indentation), losing field lines.
pub fn parse_json_file(text: &str) -> Result<Vec<Document>, YamlError> {
    if let Ok(documents) = parse_documents(text) {
        return Ok(documents);
    }
    // serde_json's own recursion limit (128) keeps hostile nesting from overflowing the stack.
    let value: serde_json::Value = serde_json::from_str(text).map_err(|error| YamlError::Json {
        line: u32::try_from(error.line()).unwrap_or(u32::MAX),
        message: error.to_string(),
    })?;
    let root = Node::from_json(&value, 1);
    let mut depth_error = None;
    check_depth(&root, 0, &mut depth_error);
    if let Some(error) = depth_error {
        return Err(error);
    }
    Ok(vec![Document {
        start_line: 1,
        root: Some(root),
        duplicate_keys: Vec::new(),
    }])
}

fn check_depth(node: &Node, depth: usize, error: &mut Option<YamlError>) {
    if error.is_some() {
        return;
    }
    if depth > MAX_DEPTH {
        *error = Some(YamlError::TooDeep { line: node.line });
        return;
    }
    match &node.value {
        Value::Seq(items) => items.iter().for_each(|n| check_depth(n, depth + 1, error)),
        Value::Map(entries) => entries
            .iter()
            .for_each(|e| check_depth(&e.value, depth + 1, error)),
        _ => {}
    }
}

/// A collection being built.
enum Frame {
    Seq {
        line: u32,
        column: usize,
        anchor: usize,
        items: Vec<Node>,
    },
    Map {
        line: u32,
        column: usize,
        anchor: usize,
        entries: Vec<Entry>,
        seen: HashSet<String>,
        /// The key read, waiting for its value: (text, line, is a `<<` merge key).
        key: Option<(String, u32, bool)>,
        /// Mappings to merge in at the end (from `<<`), in order of precedence.
        merges: Vec<Node>,
    },
}

impl Frame {
    /// The (0-based) column the collection starts at: its `[`, `{`, first `-` or first key.
    fn column(&self) -> usize {
        match self {
            Frame::Seq { column, .. } | Frame::Map { column, .. } => *column,
        }
    }
}

/// A line inside a flow collection that saphyr-parser found indented too little.
struct UnderIndentedFlowLine {
    /// Where the line starts, in characters from the start of the text.
    start: usize,
    /// How many spaces to add in front of it.
    missing: usize,
}

#[derive(Default)]
struct Builder {
    stack: Vec<Frame>,
    anchors: HashMap<usize, (Node, usize)>,
    nodes: usize,
    documents: Vec<Document>,
    current: Option<Document>,
    /// Set when the parser stopped on an under-indented line of a flow collection.
    under_indented_flow_line: Option<UnderIndentedFlowLine>,
}

fn line_of(span: &Span) -> u32 {
    u32::try_from(span.start.line()).unwrap_or(u32::MAX)
}

impl Builder {
    /// Records where a scanner error is a flow line indented too little, and how far right
    /// moving it would satisfy the scanner.
    ///
    /// Invariant (saphyr-parser 0.3's scanner; the flow-line test pins it): these two errors
    /// arise only inside a flow collection, since in block context the scanner closes blocks
    /// down to the line's column instead. There a line must start at or right of the scanner's
    /// indentation, which is at most one column past the start of the innermost collection the
    /// parser has reported open: the block collection around the flow one (plus one after its
    /// `key:` or `-`), or an open flow collection, which passed the same check itself.
    fn note_under_indented_flow_line(&mut self, error: &saphyr_parser::ScanError) {
        if !matches!(
            error.info(),
            "invalid indentation" | "invalid indentation in flow construct"
        ) {
            return;
        }
        let marker = error.marker();
        let wanted = self.stack.last().map_or(0, |frame| frame.column() + 1);
        if marker.col() < wanted {
            self.under_indented_flow_line = Some(UnderIndentedFlowLine {
                start: marker.index().saturating_sub(marker.col()),
                missing: wanted - marker.col(),
            });
        }
    }

    fn run(&mut self, text: &str) -> Result<(), YamlError> {
        let mut parser = Parser::new_from_str(text);
        while let Some(next) = parser.next_event() {
            let (event, span) = match next {
                Ok(next) => next,
                Err(error) => {
                    self.note_under_indented_flow_line(&error);
                    return Err(YamlError::Syntax {
                        line: u32::try_from(error.marker().line()).unwrap_or(u32::MAX),
                        message: error.info().to_string(),
                    });
                }
            };
            let line = line_of(&span);
            let column = span.start.col();
            match event {
                Event::StreamStart | Event::StreamEnd | Event::Nothing => {}
                Event::DocumentStart(_) => {
                    self.finish_document();
                    self.anchors.clear();
                    self.nodes = 0;
                    self.current = Some(Document {
                        start_line: line,
                        root: None,
                        duplicate_keys: Vec::new(),
                    });
                }
                Event::DocumentEnd => self.finish_document(),
                Event::Scalar(text, style, anchor, tag) => {
                    let is_key = matches!(self.stack.last(), Some(Frame::Map { key: None, .. }));
                    if is_key {
                        let merge = style == ScalarStyle::Plain && text == "<<" && tag.is_none();
                        self.set_key(text.into_owned(), line, merge)?;
                        continue;
                    }
                    let value = scalar_value(text, style, tag.as_deref(), line)?;
                    let node = Node { line, value };
                    self.count(1, line)?;
                    if anchor > 0 {
                        self.anchors.insert(anchor, (node.clone(), 1));
                    }
                    self.push(node)?;
                }
                Event::SequenceStart(anchor, tag) => {
                    check_collection_tag(tag.as_deref(), "seq", line)?;
                    self.open(
                        Frame::Seq {
                            line,
                            column,
                            anchor,
                            items: Vec::new(),
                        },
                        line,
                    )?;
                }
                Event::MappingStart(anchor, tag) => {
                    check_collection_tag(tag.as_deref(), "map", line)?;
                    self.open(
                        Frame::Map {
                            line,
                            column,
                            anchor,
                            entries: Vec::new(),
                            seen: HashSet::new(),
                            key: None,
                            merges: Vec::new(),
                        },
                        line,
                    )?;
                }
                Event::SequenceEnd | Event::MappingEnd => self.close()?,
                Event::Alias(id) => {
                    let (node, size) = self
                        .anchors
                        .get(&id)
                        .cloned()
                        .ok_or(YamlError::UnknownAlias { line })?;
                    self.count(size, line)?;
                    if matches!(self.stack.last(), Some(Frame::Map { key: None, .. })) {
                        match node.value {
                            Value::String(text) => self.set_key(text, line, false)?,
                            Value::Seq(_) | Value::Map(_) => {
                                return Err(YamlError::ComplexKey { line });
                            }
                            other => self.set_key(scalar_text(&other), line, false)?,
                        }
                        continue;
                    }
                    self.push(node)?;
                }
            }
        }
        self.finish_document();
        Ok(())
    }

    fn count(&mut self, n: usize, line: u32) -> Result<(), YamlError> {
        self.nodes = self.nodes.saturating_add(n);
        if self.nodes > MAX_NODES {
            return Err(YamlError::TooLarge { line });
        }
        Ok(())
    }

    fn open(&mut self, frame: Frame, line: u32) -> Result<(), YamlError> {
        if matches!(self.stack.last(), Some(Frame::Map { key: None, .. })) {
            return Err(YamlError::ComplexKey { line });
        }
        if self.stack.len() >= MAX_DEPTH {
            return Err(YamlError::TooDeep { line });
        }
        self.count(1, line)?;
        self.stack.push(frame);
        Ok(())
    }

    fn close(&mut self) -> Result<(), YamlError> {
        let Some(frame) = self.stack.pop() else {
            return Ok(());
        };
        let (node, anchor) = match frame {
            Frame::Seq {
                line,
                anchor,
                items,
                ..
            } => (
                Node {
                    line,
                    value: Value::Seq(items),
                },
                anchor,
            ),
            Frame::Map {
                line,
                anchor,
                mut entries,
                mut seen,
                merges,
                ..
            } => {
                // Explicit keys win over merged ones; earlier merges win over later ones.
                for merged in merges {
                    let Value::Map(merged_entries) = merged.value else {
                        continue;
                    };
                    for entry in merged_entries {
                        if seen.insert(entry.key.clone()) {
                            entries.push(entry);
                        }
                    }
                }
                (
                    Node {
                        line,
                        value: Value::Map(entries),
                    },
                    anchor,
                )
            }
        };
        if anchor > 0 {
            let size = node.count();
            self.anchors.insert(anchor, (node.clone(), size));
        }
        self.push(node)
    }

    fn set_key(&mut self, text: String, line: u32, merge: bool) -> Result<(), YamlError> {
        let path = self.path_to_top();
        let Some(Frame::Map { key, seen, .. }) = self.stack.last_mut() else {
            return Ok(());
        };
        if !merge && seen.contains(&text) {
            let duplicate = path.field(&text);
            if let Some(document) = self.current.as_mut() {
                document.duplicate_keys.push((duplicate, line));
            }
        }
        *key = Some((text, line, merge));
        Ok(())
    }

    fn push(&mut self, node: Node) -> Result<(), YamlError> {
        match self.stack.last_mut() {
            None => {
                let document = self.current.get_or_insert_with(|| Document {
                    start_line: node.line,
                    root: None,
                    duplicate_keys: Vec::new(),
                });
                document.root = Some(node);
            }
            Some(Frame::Seq { items, .. }) => items.push(node),
            Some(Frame::Map {
                entries,
                seen,
                key,
                merges,
                ..
            }) => {
                let Some((text, key_line, merge)) = key.take() else {
                    return Err(YamlError::ComplexKey { line: node.line });
                };
                if merge {
                    match node.value {
                        Value::Map(_) => merges.push(node),
                        Value::Seq(items) => merges.extend(items),
                        _ => {}
                    }
                } else if seen.insert(text.clone()) {
                    entries.push(Entry {
                        key: text,
                        key_line,
                        value: node,
                    });
                } else if let Some(existing) = entries.iter_mut().find(|e| e.key == text) {
                    // As JSON decoders do, the last value wins; the duplicate is reported.
                    existing.key_line = key_line;
                    existing.value = node;
                }
            }
        }
        Ok(())
    }

    fn path_to_top(&self) -> FieldPath {
        let mut segments = Vec::new();
        let below_top = self.stack.len().saturating_sub(1);
        for frame in &self.stack[..below_top] {
            match frame {
                Frame::Seq { items, .. } => segments.push(Segment::Index(items.len())),
                Frame::Map { key, .. } => {
                    if let Some((text, _, _)) = key {
                        segments.push(Segment::Field(text.clone()));
                    }
                }
            }
        }
        FieldPath::from(segments)
    }

    fn finish_document(&mut self) {
        self.stack.clear();
        if let Some(mut document) = self.current.take() {
            // `---` followed by nothing (or a bare `null`) is an empty document, as for kubectl.
            if document
                .root
                .as_ref()
                .is_some_and(|n| n.value == Value::Null)
            {
                document.root = None;
            }
            self.documents.push(document);
        }
    }
}

fn check_collection_tag(tag: Option<&Tag>, expected: &str, line: u32) -> Result<(), YamlError> {
    match tag {
        None => Ok(()),
        Some(tag) if tag.is_yaml_core_schema() && tag.suffix == expected => Ok(()),
        Some(tag) if tag.handle == "!" && tag.suffix.is_empty() => Ok(()),
        Some(tag) => Err(YamlError::UnsupportedTag {
            line,
            tag: tag.to_string(),
        }),
    }
}

fn scalar_text(value: &Value) -> String {
    match value {
        Value::Null => "null".to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.clone(),
        Value::Seq(_) | Value::Map(_) => String::new(),
    }
}

fn scalar_value(
    text: Cow<'_, str>,
    style: ScalarStyle,
    tag: Option<&Tag>,
    line: u32,
) -> Result<Value, YamlError> {
    let bad = |wanted| YamlError::BadTaggedScalar {
        line,
        text: text.to_string(),
        wanted,
    };
    match tag {
        None if style == ScalarStyle::Plain => resolve_plain(&text, line),
        None => Ok(Value::String(text.into_owned())),
        Some(tag) if tag.handle == "!" && tag.suffix.is_empty() => {
            Ok(Value::String(text.into_owned()))
        }
        Some(tag) if tag.is_yaml_core_schema() => match tag.suffix.as_str() {
            "str" => Ok(Value::String(text.into_owned())),
            "null" => Ok(Value::Null),
            "bool" => match resolve_plain(&text, line)? {
                value @ Value::Bool(_) => Ok(value),
                _ => Err(bad("boolean")),
            },
            "int" => match resolve_plain(&text, line)? {
                Value::Number(n) if !n.is_f64() => Ok(Value::Number(n)),
                _ => Err(bad("integer")),
            },
            "float" => match resolve_plain(&text, line)? {
                Value::Number(n) => Ok(Value::Number(n)),
                _ => Err(bad("float")),
            },
            _ => Err(YamlError::UnsupportedTag {
                line,
                tag: tag.to_string(),
            }),
        },
        Some(tag) => Err(YamlError::UnsupportedTag {
            line,
            tag: tag.to_string(),
        }),
    }
}

/// Resolves a plain scalar as Kubernetes does. Its YAML reader (sigs.k8s.io/yaml over go-yaml
/// v2) follows YAML 1.1: `yes`/`on`/`y` are booleans, `0400` is octal, `1_000` is a thousand.
/// Reading these the YAML 1.2 way would silently change a volume's `defaultMode: 0400`.
fn resolve_plain(text: &str, line: u32) -> Result<Value, YamlError> {
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return Ok(Value::Null),
        "y" | "Y" | "yes" | "Yes" | "YES" | "true" | "True" | "TRUE" | "on" | "On" | "ON" => {
            return Ok(Value::Bool(true));
        }
        "n" | "N" | "no" | "No" | "NO" | "false" | "False" | "FALSE" | "off" | "Off" | "OFF" => {
            return Ok(Value::Bool(false));
        }
        _ => {}
    }
    let unsigned = text.trim_start_matches(['-', '+']);
    if matches!(unsigned, ".inf" | ".Inf" | ".INF") || matches!(text, ".nan" | ".NaN" | ".NAN") {
        return Err(YamlError::NonFinite {
            line,
            text: text.to_string(),
        });
    }
    let cleaned = text.replace('_', "");
    if let Some(n) = parse_int(&cleaned) {
        return Ok(Value::Number(n));
    }
    if is_float(&cleaned)
        && let Ok(f) = cleaned.parse::<f64>()
    {
        return match Number::from_f64(f) {
            Some(n) => Ok(Value::Number(n)),
            None => Err(YamlError::NonFinite {
                line,
                text: text.to_string(),
            }),
        };
    }
    Ok(Value::String(text.to_string()))
}

/// Go's `strconv.ParseInt(s, 0, 64)`: decimal, `0x` hex, `0b` binary, `0o` or leading-zero octal.
fn parse_int(text: &str) -> Option<Number> {
    let (negative, body) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    let lower = body.to_ascii_lowercase();
    let (radix, digits) = if let Some(d) = lower.strip_prefix("0x") {
        (16, d)
    } else if let Some(d) = lower.strip_prefix("0b") {
        (2, d)
    } else if let Some(d) = lower.strip_prefix("0o") {
        (8, d)
    } else if lower.len() > 1 && lower.starts_with('0') {
        (8, &lower[1..])
    } else {
        (10, lower.as_str())
    };
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    let magnitude = u64::from_str_radix(digits, radix).ok()?;
    if negative {
        let value = i64::try_from(magnitude)
            .ok()
            .map(|m| -m)
            .or_else(|| (magnitude == i64::MIN.unsigned_abs()).then_some(i64::MIN))?;
        Some(Number::from(value))
    } else if let Ok(value) = i64::try_from(magnitude) {
        Some(Number::from(value))
    } else {
        Some(Number::from(magnitude))
    }
}

/// `[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?`
fn is_float(text: &str) -> bool {
    let s = text.strip_prefix(['-', '+']).unwrap_or(text);
    let (mantissa, exponent) = match s.find(['e', 'E']) {
        Some(i) => (&s[..i], Some(&s[i + 1..])),
        None => (s, None),
    };
    let mantissa_ok = match mantissa.split_once('.') {
        Some((whole, frac)) => {
            whole.bytes().all(|b| b.is_ascii_digit())
                && frac.bytes().all(|b| b.is_ascii_digit())
                && (!whole.is_empty() || !frac.is_empty())
        }
        None => !mantissa.is_empty() && mantissa.bytes().all(|b| b.is_ascii_digit()),
    };
    let exponent_ok = match exponent {
        None => true,
        Some(e) => {
            let digits = e.strip_prefix(['-', '+']).unwrap_or(e);
            !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
        }
    };
    mantissa_ok && exponent_ok
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn one(text: &str) -> Node {
        let docs = parse_documents(text).expect("parses");
        docs.into_iter()
            .next()
            .and_then(|d| d.root)
            .expect("a root")
    }

    #[test]
    fn resolves_scalars_as_kubernetes_does() {
        let node = one(concat!(
            "a: 1\nb: '1'\nc: true\nd: ~\ne: 1.5\nf: yes\ng: 0x1F\nh: -3\ni: 1e3\n",
            "j: 0400\nk: 1_000\nl: \"yes\"\nm: Off\nn: 0o17\no: 08\np: 9223372036854775808\n"
        ));
        assert_eq!(
            node.to_json(),
            json!({"a": 1, "b": "1", "c": true, "d": null, "e": 1.5, "f": true, "g": 31, "h": -3,
                   "i": 1000.0, "j": 256, "k": 1000, "l": "yes", "m": false, "n": 15, "o": 8.0,
                   "p": 9_223_372_036_854_775_808u64})
        );
    }

    #[test]
    fn keeps_the_line_of_every_field() {
        let node = one(
            "spec:\n  template:\n    spec:\n      containers:\n      - name: web\n        image: busybox\n",
        );
        let path = FieldPath::parse("spec.template.spec.containers")
            .index(0)
            .field("image");
        assert_eq!(node.line_of(&path), 6);
        // A missing field points at the deepest part that exists.
        let missing = FieldPath::parse("spec.template.spec.volumes");
        assert_eq!(node.line_of(&missing), 3);
    }

    #[test]
    fn splits_documents_and_skips_empty_ones() {
        let docs =
            parse_documents("# only a comment\n---\na: 1\n---\n---\nb: 2\n").expect("parses");
        let roots: Vec<_> = docs.iter().filter_map(|d| d.root.as_ref()).collect();
        assert_eq!(roots.len(), 2);
        let starts: Vec<u32> = docs
            .iter()
            .filter(|d| d.root.is_some())
            .map(|d| d.start_line)
            .collect();
        assert_eq!(starts, vec![2, 5]);
    }

    #[test]
    fn reports_duplicate_keys_with_their_path() {
        let docs = parse_documents("spec:\n  replicas: 1\n  replicas: 2\n").expect("parses");
        assert_eq!(
            docs[0].duplicate_keys,
            vec![(FieldPath::parse("spec.replicas"), 3)]
        );
        assert_eq!(
            docs[0].root.as_ref().map(Node::to_json),
            Some(json!({"spec": {"replicas": 2}}))
        );
    }

    #[test]
    fn expands_anchors_aliases_and_merge_keys() {
        let node = one("base: &b\n  x: 1\n  y: 2\nother:\n  <<: *b\n  y: 3\nlist: [*b]\n");
        assert_eq!(
            node.to_json(),
            json!({"base": {"x": 1, "y": 2}, "other": {"y": 3, "x": 1}, "list": [{"x": 1, "y": 2}]})
        );
    }

    #[test]
    fn refuses_alias_bombs_and_deep_nesting() {
        let mut bomb = String::from("a: &a [x,x,x,x,x,x,x,x,x,x]\n");
        let names = ["b", "c", "d", "e", "f", "g", "h"];
        let mut prev = "a";
        for name in names {
            bomb.push_str(&format!("{name}: &{name} [*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev}]\n"));
            prev = name;
        }
        assert!(matches!(
            parse_documents(&bomb),
            Err(YamlError::TooLarge { .. })
        ));
        // The scanner caps flow nesting itself; block nesting is capped here.
        assert!(parse_documents(&"[".repeat(10_000)).is_err());
        let deep: String = (0..100)
            .map(|i| format!("{}a:\n", "  ".repeat(i)))
            .collect();
        assert!(matches!(
            parse_documents(&deep),
            Err(YamlError::TooDeep { .. })
        ));
    }

    #[test]
    fn rejects_what_json_cannot_hold() {
        assert!(matches!(
            parse_documents("a: .inf\n"),
            Err(YamlError::NonFinite { .. })
        ));
        assert!(matches!(
            parse_documents("a: !Ref x\n"),
            Err(YamlError::UnsupportedTag { .. })
        ));
        assert!(matches!(
            parse_documents("? [a]\n: 1\n"),
            Err(YamlError::ComplexKey { .. })
        ));
        let error = parse_documents("a: [1,\n").expect_err("broken");
        assert!(matches!(error, YamlError::Syntax { .. }), "{error:?}");
    }

    #[test]
    fn reads_flow_lines_at_their_keys_indentation_as_go_yaml_does() {
        // The shape of Kubernetes' own examples, which kubectl applies.
        let text = concat!(
            "spec:\n",
            "  containers:\n",
            "  - name: a\n",
            "    image: busybox\n",
            "    command: [\n",
            "      \"sh\", \"-c\", \"sleep 1\"\n",
            "    ]\n",
            "    args: [\"a\",\n",
            "    \"b\"\n",
            "    ]\n",
            "    env: [{name: X,\n",
            "    value: \"1\"}\n",
            "  ]\n",
            "  - name: b\n",
            "    image: busybox\n",
            "    workingDir: /tmp\n",
            "top: [\n",
            "x, [w,\n",
            "z]]\n",
        );
        let node = one(text);
        assert_eq!(
            node.to_json(),
            json!({"spec": {"containers": [
                {"name": "a", "image": "busybox", "command": ["sh", "-c", "sleep 1"],
                 "args": ["a", "b"], "env": [{"name": "X", "value": "1"}]},
                {"name": "b", "image": "busybox", "workingDir": "/tmp"}]},
                "top": ["x", ["w", "z"]]})
        );
        let containers = FieldPath::parse("spec.containers");
        assert_eq!(node.line_of(&containers.index(0).field("args").index(1)), 9);
        assert_eq!(
            node.line_of(&containers.index(0).field("env").index(0).field("value")),
            12
        );
        assert_eq!(node.line_of(&containers.index(1).field("workingDir")), 16);
        assert_eq!(node.line_of(&FieldPath::parse("top").index(1)), 18);
        // Moving a line right does not hide real mistakes, nor their lines.
        let error = parse_documents("a:\n  b: [1,\n  2\nc: 3\n").expect_err("unclosed");
        assert!(matches!(error, YamlError::Syntax { .. }), "{error:?}");
        assert_eq!(error.line(), 4, "{error:?}");
        let error = parse_documents("a:\n  b: x\n c: y\n").expect_err("block indentation");
        assert_eq!(error.line(), 3, "{error:?}");
    }

    #[test]
    fn reads_json_including_tab_indentation() {
        let docs =
            parse_json_file("{\n\t\"kind\": \"ConfigMap\",\n\t\"data\": {\"a\": \"b\"}\n}\n")
                .expect("parses");
        assert_eq!(
            docs[0].root.as_ref().map(Node::to_json),
            Some(json!({"kind": "ConfigMap", "data": {"a": "b"}}))
        );
        assert!(matches!(
            parse_json_file("{\"a\": [}"),
            Err(YamlError::Json { line: 1, .. })
        ));
    }
}
