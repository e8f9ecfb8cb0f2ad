//! The bot's dialogue as data: question nodes, their answers and where each
//! answer leads, loaded from TOML and checked before any user sees it.

use std::collections::{BTreeMap, HashSet, VecDeque};

use serde::Deserialize;

/// The script compiled into the binary.
pub const DEFAULT_SCRIPT: &str = include_str!("default_script.toml");

/// One labelled choice of a multiple-choice node.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Choice {
    /// What the user sees (and may type instead of the number).
    pub label: String,
    /// The node it leads to.
    pub next: String,
}

/// How a conversation ends at a terminal node.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// The problem is solved.
    Resolved,
    /// The bot could not solve it: a ticket is opened for a person.
    Ticket,
}

/// One step of the dialogue: a yes/no question, a multiple-choice question,
/// or an end.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Node {
    /// What the bot says at this step.
    pub say: String,
    /// What this step checks, for the final summary.
    #[serde(default)]
    pub check: Option<String>,
    /// Where "yes" leads (a yes/no node).
    #[serde(default)]
    pub yes: Option<String>,
    /// Where "no" leads (a yes/no node).
    #[serde(default)]
    pub no: Option<String>,
    /// The numbered choices (a multiple-choice node).
    #[serde(default)]
    pub choices: Vec<Choice>,
    /// Set on terminal nodes.
    #[serde(default)]
    pub end: Option<Outcome>,
}

/// What kind of step a node is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Answered yes or no.
    YesNo,
    /// Answered with a number or a label.
    Choice,
    /// The conversation ends here.
    End(Outcome),
}

impl Node {
    /// The node's kind (valid only for validated scripts).
    pub fn kind(&self) -> Kind {
        match (self.end, self.yes.is_some()) {
            (Some(outcome), _) => Kind::End(outcome),
            (None, true) => Kind::YesNo,
            (None, false) => Kind::Choice,
        }
    }

    /// Every (answer, target) this node offers.
    pub fn edges(&self) -> Vec<(String, &str)> {
        let mut edges = Vec::new();
        if let Some(y) = &self.yes {
            edges.push(("yes".to_string(), y.as_str()));
        }
        if let Some(n) = &self.no {
            edges.push(("no".to_string(), n.as_str()));
        }
        for (i, c) in self.choices.iter().enumerate() {
            edges.push((format!("choice {} ({})", i + 1, c.label), c.next.as_str()));
        }
        edges
    }
}

/// A script as written, before it is checked.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScript {
    name: String,
    greeting: String,
    start: String,
    nodes: BTreeMap<String, Node>,
}

/// A whole dialogue, checked: it can only be made by [`Script::parse`], so
/// every node id it hands out (the start, every answer's target) exists, and
/// a conversation on it can never look up a missing node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Script {
    name: String,
    greeting: String,
    start: String,
    nodes: BTreeMap<String, Node>,
}

/// Why a script was rejected; always names the node at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScriptError {
    /// Not valid TOML, or fields of the wrong shape.
    #[error("the script is not valid: {0}")]
    Parse(String),
    /// `start` names no node.
    #[error("start node '{0}' does not exist")]
    MissingStart(String),
    /// An answer leads nowhere.
    #[error("node '{node}': {answer} leads to missing node '{target}'")]
    MissingTarget {
        /// The node with the answer.
        node: String,
        /// Which answer.
        answer: String,
        /// The id that does not exist.
        target: String,
    },
    /// A node is neither a yes/no question, a choice, nor an end.
    #[error("node '{0}' must be exactly one of: a yes/no question (yes and no), a choice (choices), or an end (end)")]
    BadShape(String),
    /// A node cannot be reached from the start.
    #[error("node '{0}' is unreachable from the start node")]
    Unreachable(String),
    /// From a node, no sequence of answers reaches an end.
    #[error("node '{0}' has no way to an end")]
    NoWayToEnd(String),
}

impl Script {
    /// Parses and validates a TOML script.
    pub fn parse(text: &str) -> Result<Script, ScriptError> {
        let raw: RawScript = toml::from_str(text).map_err(|e| ScriptError::Parse(e.to_string()))?;
        raw.validate()?;
        Ok(Script {
            name: raw.name,
            greeting: raw.greeting,
            start: raw.start,
            nodes: raw.nodes,
        })
    }

    /// The bot's name, used in its introduction.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The first thing the bot says.
    pub fn greeting(&self) -> &str {
        &self.greeting
    }

    /// The first node's id.
    pub fn start(&self) -> &str {
        &self.start
    }

    /// The node `id`; every id the script hands out has one.
    pub fn node(&self, id: &str) -> Option<&Node> {
        self.nodes.get(id)
    }

    /// How many nodes the script has.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// True for a script without nodes (a checked script never is).
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The built-in script.
    pub fn default_script() -> Script {
        // Checked by a unit test; a failure here is a bug in the shipped file.
        Script::parse(DEFAULT_SCRIPT).expect("the built-in bot script is valid")
    }
}

impl RawScript {
    /// Checks every node's shape and targets, that every node is reachable,
    /// and that every node can reach an end.
    fn validate(&self) -> Result<(), ScriptError> {
        if !self.nodes.contains_key(&self.start) {
            return Err(ScriptError::MissingStart(self.start.clone()));
        }
        for (id, node) in &self.nodes {
            let yes_no = node.yes.is_some() && node.no.is_some();
            let half = node.yes.is_some() != node.no.is_some();
            let shapes = [yes_no, !node.choices.is_empty(), node.end.is_some()];
            if half || shapes.iter().filter(|&&s| s).count() != 1 {
                return Err(ScriptError::BadShape(id.clone()));
            }
            for (answer, target) in node.edges() {
                if !self.nodes.contains_key(target) {
                    return Err(ScriptError::MissingTarget {
                        node: id.clone(),
                        answer,
                        target: target.to_string(),
                    });
                }
            }
        }
        // Reachable from the start.
        let mut seen = HashSet::from([self.start.as_str()]);
        let mut queue = VecDeque::from([self.start.as_str()]);
        while let Some(id) = queue.pop_front() {
            for (_, target) in self.nodes[id].edges() {
                if seen.insert(target) {
                    queue.push_back(target);
                }
            }
        }
        if let Some(id) = self.nodes.keys().find(|id| !seen.contains(id.as_str())) {
            return Err(ScriptError::Unreachable(id.clone()));
        }
        // Every node reaches an end: grow the set of nodes that can, backwards.
        let mut can_end: HashSet<&str> = self
            .nodes
            .iter()
            .filter(|(_, n)| n.end.is_some())
            .map(|(id, _)| id.as_str())
            .collect();
        loop {
            let before = can_end.len();
            for (id, node) in &self.nodes {
                if node.edges().iter().any(|(_, t)| can_end.contains(t)) {
                    can_end.insert(id.as_str());
                }
            }
            if can_end.len() == before {
                break;
            }
        }
        if let Some(id) = self.nodes.keys().find(|id| !can_end.contains(id.as_str())) {
            return Err(ScriptError::NoWayToEnd(id.clone()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_built_in_script_is_valid() {
        let s = Script::default_script();
        assert!(s.len() > 10);
    }

    fn script(nodes: &str) -> Result<Script, ScriptError> {
        Script::parse(&format!(
            "name = \"t\"\ngreeting = \"hi\"\nstart = \"a\"\n{nodes}"
        ))
    }

    #[test]
    fn broken_scripts_are_rejected_naming_the_node() {
        let missing = script("[nodes.a]\nsay = \"?\"\nyes = \"b\"\nno = \"gone\"\n[nodes.b]\nsay = \"ok\"\nend = \"resolved\"\n");
        assert_eq!(
            missing.unwrap_err().to_string(),
            "node 'a': no leads to missing node 'gone'"
        );
        let unreachable = script("[nodes.a]\nsay = \"ok\"\nend = \"resolved\"\n[nodes.island]\nsay = \"x\"\nend = \"ticket\"\n");
        assert_eq!(
            unreachable.unwrap_err(),
            ScriptError::Unreachable("island".into())
        );
        let endless = script("[nodes.a]\nsay = \"?\"\nyes = \"a\"\nno = \"b\"\n[nodes.b]\nsay = \"?\"\nchoices = [{ label = \"again\", next = \"b\" }]\n");
        assert!(matches!(endless.unwrap_err(), ScriptError::NoWayToEnd(n) if n == "a" || n == "b"));
        let shape = script("[nodes.a]\nsay = \"?\"\nyes = \"a\"\nend = \"resolved\"\n");
        assert_eq!(shape.unwrap_err(), ScriptError::BadShape("a".into()));
        assert!(matches!(
            script("[nodes.b]\nsay = \"x\"\nend = \"resolved\"\n"),
            Err(ScriptError::MissingStart(_))
        ));
        assert!(matches!(
            Script::parse("this is = not toml ["),
            Err(ScriptError::Parse(_))
        ));
    }
}
