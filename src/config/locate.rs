//! Where each value of a YAML file stands: a map from a YAML path (`routes[2].upstream`) to its
//! line and column, so that validation errors can point at the exact spot.
//!
//! serde_yaml's `Value` keeps no positions, so the file is read a second time with an event
//! parser that records the position of every node. Only positions and paths are kept — never a
//! scalar's value — so the index is safe to keep around and to print from.

use std::collections::HashMap;
use std::fmt;

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

/// A line and column, both counted from 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Location {
    pub line: usize,
    pub column: usize,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

/// One step of a YAML path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Segment {
    Key(String),
    Index(usize),
}

/// A path into a YAML document, printed as `routes[2].upstream`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct YamlPath(Vec<Segment>);

impl YamlPath {
    /// The document root.
    pub fn root() -> Self {
        Self(Vec::new())
    }

    /// This path extended by a mapping key.
    pub fn key(&self, key: &str) -> Self {
        let mut p = self.0.clone();
        p.push(Segment::Key(key.to_owned()));
        Self(p)
    }

    /// This path extended by a sequence index.
    pub fn index(&self, i: usize) -> Self {
        let mut p = self.0.clone();
        p.push(Segment::Index(i));
        Self(p)
    }

    /// The parent path (the root is its own parent).
    pub fn parent(&self) -> Self {
        let mut p = self.0.clone();
        p.pop();
        Self(p)
    }
}

impl fmt::Display for YamlPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("(root)");
        }
        for (i, seg) in self.0.iter().enumerate() {
            match seg {
                Segment::Key(k) if i == 0 => write!(f, "{k}")?,
                Segment::Key(k) => write!(f, ".{k}")?,
                Segment::Index(n) => write!(f, "[{n}]")?,
            }
        }
        Ok(())
    }
}

/// Positions of every node (by path) and of every mapping key (by the path it introduces).
#[derive(Debug, Default)]
pub struct LocationIndex {
    values: HashMap<String, Location>,
    keys: HashMap<String, Location>,
}

impl LocationIndex {
    /// Indexes `source`. A file that does not parse gives an empty index: the YAML parser's own
    /// error (which has its position) is reported instead.
    pub fn build(source: &str) -> Self {
        let mut recv = Receiver::default();
        let mut parser = Parser::new_from_str(source);
        if parser.load(&mut recv, false).is_err() {
            return Self::default();
        }
        recv.index
    }

    /// Where the value at `path` starts; failing that, the nearest ancestor that has a position.
    pub fn value(&self, path: &YamlPath) -> Option<Location> {
        let mut p = path.clone();
        loop {
            if let Some(loc) = self.values.get(&p.to_string()) {
                return Some(*loc);
            }
            if p.0.is_empty() {
                return None;
            }
            p = p.parent();
        }
    }

    /// Where the key that introduces `path` stands (for "unknown key" errors); failing that, the
    /// value's position.
    pub fn key(&self, path: &YamlPath) -> Option<Location> {
        self.keys
            .get(&path.to_string())
            .copied()
            .or_else(|| self.value(path))
    }
}

#[derive(Debug)]
enum Frame {
    Mapping {
        path: YamlPath,
        /// The key whose value comes next; `None` while a key is expected.
        key: Option<String>,
    },
    Sequence {
        path: YamlPath,
        next: usize,
    },
}

#[derive(Debug, Default)]
struct Receiver {
    stack: Vec<Frame>,
    index: LocationIndex,
}

fn location(mark: Marker) -> Location {
    // yaml-rust2 counts lines from 1 and columns from 0.
    Location {
        line: mark.line(),
        column: mark.col() + 1,
    }
}

impl Receiver {
    /// Called when a node starts. Returns the node's path, or `None` when the node is a mapping
    /// key (whose text is then remembered for its value).
    fn node_start(&mut self, scalar_text: Option<&str>, mark: Marker) -> Option<YamlPath> {
        let path = match self.stack.last_mut() {
            None => YamlPath::root(),
            Some(Frame::Sequence { path, next }) => {
                let p = path.index(*next);
                *next += 1;
                p
            }
            Some(Frame::Mapping { path, key }) => match key.take() {
                Some(k) => path.key(&k),
                None => {
                    // This node is a key. Keys are scalars in every file we accept; a complex
                    // key is indexed under an empty name and rejected by validation.
                    let k = scalar_text.unwrap_or_default().to_owned();
                    let key_path = path.key(&k);
                    self.index.keys.insert(key_path.to_string(), location(mark));
                    *key = Some(k);
                    return None;
                }
            },
        };
        self.index.values.insert(path.to_string(), location(mark));
        Some(path)
    }
}

impl MarkedEventReceiver for Receiver {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        match ev {
            Event::Scalar(text, ..) => {
                self.node_start(Some(&text), mark);
            }
            Event::Alias(_) => {
                self.node_start(None, mark);
            }
            Event::MappingStart(..) => {
                let path = self.node_start(None, mark).unwrap_or_default();
                self.stack.push(Frame::Mapping { path, key: None });
            }
            Event::SequenceStart(..) => {
                let path = self.node_start(None, mark).unwrap_or_default();
                self.stack.push(Frame::Sequence { path, next: 0 });
            }
            Event::MappingEnd | Event::SequenceEnd => {
                self.stack.pop();
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn paths_and_positions() {
        let src = "a: 1\nlist:\n  - x: 2\n    y: [3, 4]\n  - z\n";
        let idx = LocationIndex::build(src);
        let at = |p: YamlPath| idx.value(&p).unwrap();
        let root = YamlPath::root();
        assert_eq!(at(root.key("a")), Location { line: 1, column: 4 });
        assert_eq!(
            at(root.key("list").index(0).key("x")),
            Location { line: 3, column: 8 }
        );
        assert_eq!(
            at(root.key("list").index(0).key("y").index(1)),
            Location {
                line: 4,
                column: 12
            }
        );
        assert_eq!(
            at(root.key("list").index(1)),
            Location { line: 5, column: 5 }
        );
        assert_eq!(
            idx.key(&root.key("list").index(0).key("y")),
            Some(Location { line: 4, column: 5 })
        );
        // A path that does not exist falls back to its nearest ancestor (the mapping, whose
        // start the parser reports on its first line).
        assert_eq!(
            idx.value(&root.key("list").index(0).key("nope"))
                .map(|l| l.line),
            Some(3)
        );
        assert_eq!(root.key("list").index(0).key("y").to_string(), "list[0].y");
    }
}
