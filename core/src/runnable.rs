//! Which jobs chat can run, read from GitLab's merged CI configuration (`ci/lint`'s
//! `merged_yaml`): a job is chat-runnable when one of its rules selects it by the job contract
//! (`- if: '$CHATOPS_JOB == $CI_JOB_NAME'`, also `$CI_JOB_NAME == $CHATOPS_JOB` and
//! `$CHATOPS_JOB == "<its name>"`) before anything else decides, and it is not excluded from
//! chat (`except: [chat]`, or `except: refs: [chat]`).
//!
//! The functions may not link a YAML library (`tests/architecture.rs`), and they need none:
//! GitLab's merged YAML is an emitter's output (Ruby's Psych; the stand-in's serde_yaml), so
//! it is block style, top-level keys at column 0, job bodies indented, no comments. This is a
//! small line-based reader for that subset: block mappings and sequences (also sequences at
//! their key's indentation), plain and quoted scalars (folded over several lines too), block
//! scalars (`|-`, skipped as text), one-line flow collections, anchors and aliases (Psych
//! writes `&1`/`*1` for shared values), tags (dropped), and the Ruby symbol keys older GitLab
//! wrote (`:job:`). GitLab resolves `extends` in the merged YAML; the stand-ins do not, so
//! `extends` is followed here too (rules and `except` come from the nearest template that
//! has them, as GitLab's merge replaces lists).
//!
//! Anything it cannot read is not a job, so the list can only be short, never wrong about a
//! job it lists being in the file.

use std::collections::HashMap;

/// A job chat can run, as `help` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunnableJob {
    pub name: String,
    /// Its contract rule says `when: manual`: it waits for someone to play it.
    pub manual: bool,
    /// The one-line description the project's policy file gives it (`help` fills it in).
    pub description: Option<String>,
    /// The policy file says someone must approve a run: marked in `help`.
    pub needs_approval: bool,
}

/// Top-level keys of `.gitlab-ci.yml` that are not jobs.
const KEYWORDS: &[&str] = &[
    "stages",
    "types",
    "variables",
    "workflow",
    "default",
    "include",
    "image",
    "services",
    "before_script",
    "after_script",
    "cache",
    "spec",
];

/// How deep `extends` may chain (GitLab's own limit is 11).
const MAX_EXTENDS_DEPTH: usize = 11;

/// The chat-runnable jobs of a merged CI configuration, by name.
pub fn runnable_jobs(merged_yaml: &str) -> Vec<RunnableJob> {
    let root = match parse(merged_yaml) {
        Node::Map(m) => m,
        _ => return Vec::new(),
    };
    let mut out: Vec<RunnableJob> = Vec::new();
    for (name, body) in &root {
        if name.starts_with('.') || KEYWORDS.contains(&name.as_str()) {
            continue;
        }
        let Node::Map(_) = body else { continue };
        if excluded_from_chat(&root, body) {
            continue;
        }
        if let Some(manual) = selected_by_contract(&root, name, body) {
            out.push(RunnableJob {
                name: name.clone(),
                manual,
                description: None,
                needs_approval: false,
            });
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out.dedup_by(|a, b| a.name == b.name);
    out
}

/// The job's own value of `key`, else the nearest `extends` template's (the last one listed
/// wins, as in GitLab's merge).
fn inherited<'a>(root: &'a [(String, Node)], job: &'a Node, key: &str) -> Option<&'a Node> {
    fn walk<'a>(
        root: &'a [(String, Node)],
        job: &'a Node,
        key: &str,
        depth: usize,
    ) -> Option<&'a Node> {
        if let Some(v) = job.get(key) {
            return Some(v);
        }
        if depth >= MAX_EXTENDS_DEPTH {
            return None;
        }
        let parents: Vec<&str> = match job.get("extends") {
            Some(Node::Scalar(s)) => vec![s.as_str()],
            Some(Node::Seq(xs)) => xs.iter().filter_map(Node::scalar).collect(),
            _ => vec![],
        };
        parents.iter().rev().find_map(|p| {
            let parent = root.iter().find(|(k, _)| k == p).map(|(_, v)| v)?;
            walk(root, parent, key, depth + 1)
        })
    }
    walk(root, job, key, 0)
}

fn excluded_from_chat(root: &[(String, Node)], job: &Node) -> bool {
    let names_chat = |n: &Node| match n {
        Node::Scalar(s) => s == "chat",
        Node::Seq(xs) => xs.iter().any(|x| x.scalar() == Some("chat")),
        _ => false,
    };
    match inherited(root, job, "except") {
        Some(Node::Map(_)) => inherited(root, job, "except")
            .and_then(|e| e.get("refs"))
            .is_some_and(names_chat),
        Some(other) => names_chat(other),
        None => false,
    }
}

/// `Some(manual)` when the job's rules select it in the pipeline chat starts for it: the
/// first rule that decides is the contract's (and not `when: never`). A rule without `if`
/// matches every pipeline, and a bare `$CHATOPS_JOB` with `when: never` keeps the job out of
/// every chat pipeline: either decides first.
fn selected_by_contract(root: &[(String, Node)], name: &str, job: &Node) -> Option<bool> {
    let Some(Node::Seq(rules)) = inherited(root, job, "rules") else {
        return None;
    };
    for rule in rules {
        let when = rule.get("when").and_then(Node::scalar).unwrap_or("");
        // No `if`: the rule matches every pipeline, chat's for every job too.
        let cond = rule.get("if").and_then(Node::scalar)?;
        let cond = normalize(cond);
        if is_contract(&cond, name) {
            return (when != "never").then_some(when == "manual");
        }
        if cond == "$CHATOPS_JOB" && when == "never" {
            return None;
        }
    }
    None
}

/// `${X}` → `$X`, whitespace collapsed.
fn normalize(cond: &str) -> String {
    let mut s = String::with_capacity(cond.len());
    let mut rest = cond;
    while let Some(i) = rest.find("${") {
        s.push_str(&rest[..i]);
        let after = &rest[i + 2..];
        match after.find('}') {
            Some(j)
                if after[..j]
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_') =>
            {
                s.push('$');
                s.push_str(&after[..j]);
                rest = &after[j + 1..];
            }
            _ => {
                s.push_str("${");
                rest = after;
            }
        }
    }
    s.push_str(rest);
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Whether one of the condition's `&&`/`||` clauses is the contract comparison for `name`.
fn is_contract(cond: &str, name: &str) -> bool {
    cond.split("&&")
        .flat_map(|c| c.split("||"))
        .map(|c| c.trim().trim_matches(|ch| ch == '(' || ch == ')').trim())
        .any(|clause| {
            let Some((l, r)) = clause.split_once("==") else {
                return false;
            };
            let (l, r) = (l.trim(), r.trim());
            let named = |s: &str| {
                s == "$CI_JOB_NAME"
                    || ((s.starts_with('"') && s.ends_with('"')
                        || s.starts_with('\'') && s.ends_with('\''))
                        && s.len() >= 2
                        && &s[1..s.len() - 1] == name)
            };
            (l == "$CHATOPS_JOB" && named(r)) || (r == "$CHATOPS_JOB" && named(l))
        })
}

// ---------------------------------------------------------------------------------------
// The reader.

/// A YAML value as far as the contract needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Node {
    Null,
    Scalar(String),
    Seq(Vec<Node>),
    Map(Vec<(String, Node)>),
}

impl Node {
    fn get(&self, key: &str) -> Option<&Node> {
        match self {
            Node::Map(m) => m.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }
    fn scalar(&self) -> Option<&str> {
        match self {
            Node::Scalar(s) => Some(s),
            _ => None,
        }
    }
}

#[derive(Debug, Clone)]
struct Line {
    indent: usize,
    text: String,
}

struct Reader {
    lines: Vec<Line>,
    pos: usize,
    anchors: HashMap<String, Node>,
}

fn parse(text: &str) -> Node {
    let lines = text
        .lines()
        .map(|l| l.trim_end_matches('\r'))
        .filter(|l| {
            let t = l.trim();
            !(t.is_empty()
                || t.starts_with('#')
                || (l.starts_with("---") && (l.len() == 3 || l[3..].starts_with(' ')))
                || *l == "..."
                || l.starts_with('%'))
        })
        .map(|l| {
            let indent = l.len() - l.trim_start_matches(' ').len();
            Line {
                indent,
                text: l[indent..].trim_end().to_owned(),
            }
        })
        .collect();
    let mut r = Reader {
        lines,
        pos: 0,
        anchors: HashMap::new(),
    };
    r.node(0)
}

/// `- x` / `-` (a sequence item).
fn is_item(text: &str) -> bool {
    text == "-" || text.starts_with("- ")
}

/// `key: rest` / `key:` with the key unquoted; `None` when the line is not a mapping entry.
fn split_key(text: &str) -> Option<(String, &str)> {
    let (key, after) = if text.starts_with('"') || text.starts_with('\'') {
        let (k, used) = quoted(text)?;
        let after = text[used..].trim_start();
        (k, after.strip_prefix(':')?)
    } else {
        let mut cut = None;
        for (i, c) in text.char_indices() {
            if c == ':' {
                let next = text[i + 1..].chars().next();
                if next.is_none() || next == Some(' ') {
                    cut = Some(i);
                    break;
                }
            }
        }
        let i = cut?;
        if i == 0 {
            return None;
        }
        (text[..i].trim_end().to_owned(), &text[i + 1..])
    };
    if after.chars().next().is_some_and(|c| c != ' ') {
        return None;
    }
    // Older GitLab wrote Ruby symbols (`:job:`, `:if:`).
    let key = key.strip_prefix(':').map(str::to_owned).unwrap_or(key);
    Some((key, after.trim()))
}

/// A quoted scalar at the start of `text`: its value and how many bytes it used.
fn quoted(text: &str) -> Option<(String, usize)> {
    let q = text.chars().next()?;
    let mut out = String::new();
    let mut chars = text.char_indices().skip(1).peekable();
    while let Some((i, c)) = chars.next() {
        match (q, c) {
            ('\'', '\'') => {
                if chars.peek().map(|(_, c)| *c) == Some('\'') {
                    chars.next();
                    out.push('\'');
                } else {
                    return Some((out, i + 1));
                }
            }
            ('"', '"') => return Some((out, i + 1)),
            ('"', '\\') => match chars.next().map(|(_, c)| c) {
                Some('n') => out.push('\n'),
                Some('t') => out.push('\t'),
                Some(other) => out.push(other),
                None => return None,
            },
            _ => out.push(c),
        }
    }
    None
}

/// Split a flow collection's inside on commas outside quotes and brackets.
fn flow_items(inner: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut depth, mut quote, mut start) = (0i32, None::<char>, 0);
    for (i, c) in inner.char_indices() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '\'' | '"') => quote = Some(c),
            (None, '[' | '{') => depth += 1,
            (None, ']' | '}') => depth -= 1,
            (None, ',') if depth == 0 => {
                out.push(inner[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    let last = inner[start..].trim();
    if !last.is_empty() {
        out.push(last);
    }
    out
}

impl Reader {
    fn peek(&self) -> Option<&Line> {
        self.lines.get(self.pos)
    }

    /// The node starting at the current line, which must be indented at least `min`.
    fn node(&mut self, min: usize) -> Node {
        let Some(line) = self.peek().cloned() else {
            return Node::Null;
        };
        if line.indent < min {
            return Node::Null;
        }
        if is_item(&line.text) {
            self.seq(line.indent)
        } else if split_key(&line.text).is_some() {
            self.map(line.indent)
        } else {
            // A scalar on its own line(s).
            self.pos += 1;
            let mut text = line.text.clone();
            self.continuation(line.indent, &mut text);
            self.inline(&text)
        }
    }

    fn seq(&mut self, indent: usize) -> Node {
        let mut items = Vec::new();
        while let Some(line) = self.peek().cloned() {
            if line.indent != indent || !is_item(&line.text) {
                break;
            }
            let rest = line.text[1..].trim_start();
            let (anchor, rest) = take_anchor(rest);
            if rest.is_empty() {
                self.pos += 1;
                let item = self.node(indent + 1);
                items.push(self.anchored(anchor, item));
                continue;
            }
            // `- key: v` or `- - x`: the rest is a node at its own column.
            let col = indent + (line.text.len() - rest.len());
            self.lines[self.pos] = Line {
                indent: col,
                text: rest.to_owned(),
            };
            let item = if is_item(rest) || split_key(rest).is_some() {
                self.node(col)
            } else {
                self.pos += 1;
                let mut text = rest.to_owned();
                self.continuation(indent, &mut text);
                self.inline(&text)
            };
            items.push(self.anchored(anchor, item));
        }
        Node::Seq(items)
    }

    fn map(&mut self, indent: usize) -> Node {
        let mut entries = Vec::new();
        while let Some(line) = self.peek().cloned() {
            if line.indent != indent || is_item(&line.text) {
                break;
            }
            let Some((key, rest)) = split_key(&line.text) else {
                break;
            };
            self.pos += 1;
            let (anchor, rest) = take_anchor(rest);
            let rest = drop_tag(rest);
            let value = if rest.is_empty() {
                match self.peek() {
                    Some(next) if next.indent > indent => self.node(indent + 1),
                    // A sequence may sit at its key's own indentation.
                    Some(next) if next.indent == indent && is_item(&next.text) => self.seq(indent),
                    _ => Node::Null,
                }
            } else if rest.starts_with('|') || rest.starts_with('>') {
                Node::Scalar(self.block_scalar(indent))
            } else {
                let mut text = rest.to_owned();
                self.continuation(indent, &mut text);
                self.inline(&text)
            };
            entries.push((key, self.anchored(anchor, value)));
        }
        Node::Map(entries)
    }

    /// Lines more indented than `indent` that continue a scalar (folded by the emitter).
    fn continuation(&mut self, indent: usize, text: &mut String) {
        while let Some(next) = self.peek() {
            if next.indent <= indent {
                break;
            }
            text.push(' ');
            text.push_str(&next.text);
            self.pos += 1;
        }
    }

    /// `|`/`>` text: every following line more indented than its key.
    fn block_scalar(&mut self, indent: usize) -> String {
        let mut out = Vec::new();
        while let Some(next) = self.peek() {
            if next.indent <= indent {
                break;
            }
            out.push(next.text.clone());
            self.pos += 1;
        }
        out.join("\n")
    }

    fn anchored(&mut self, anchor: Option<String>, node: Node) -> Node {
        if let Some(a) = anchor {
            self.anchors.insert(a, node.clone());
        }
        node
    }

    /// A value written on one line (after folding): alias, quoted, flow or plain.
    fn inline(&mut self, text: &str) -> Node {
        let (anchor, text) = take_anchor(text.trim());
        let text = drop_tag(text);
        let node = if let Some(alias) = text.strip_prefix('*') {
            self.anchors
                .get(alias.trim())
                .cloned()
                .unwrap_or(Node::Null)
        } else if text.starts_with('"') || text.starts_with('\'') {
            match quoted(text) {
                Some((s, _)) => Node::Scalar(s),
                None => Node::Scalar(text.to_owned()),
            }
        } else if let Some(inner) = text.strip_prefix('[').and_then(|t| t.strip_suffix(']')) {
            Node::Seq(
                flow_items(inner)
                    .into_iter()
                    .map(|i| self.inline(i))
                    .collect(),
            )
        } else if let Some(inner) = text.strip_prefix('{').and_then(|t| t.strip_suffix('}')) {
            Node::Map(
                flow_items(inner)
                    .into_iter()
                    .map(|i| {
                        let (k, v) = split_key(i).unwrap_or((i.to_owned(), ""));
                        let v = if v.is_empty() {
                            Node::Null
                        } else {
                            self.inline(v)
                        };
                        (k, v)
                    })
                    .collect(),
            )
        } else if text.is_empty() || text == "~" || text == "null" {
            Node::Null
        } else {
            Node::Scalar(text.to_owned())
        };
        self.anchored(anchor, node)
    }
}

/// `&name rest` → (`name`, `rest`).
fn take_anchor(text: &str) -> (Option<String>, &str) {
    match text.strip_prefix('&') {
        Some(a) => {
            let end = a.find(' ').unwrap_or(a.len());
            (Some(a[..end].to_owned()), a[end..].trim_start())
        }
        None => (None, text),
    }
}

/// `!tag rest` → `rest` (`!ruby/hash:…`, a leftover `!reference`).
fn drop_tag(text: &str) -> &str {
    if text.starts_with('!') {
        match text.find(' ') {
            Some(i) => text[i..].trim_start(),
            None => "",
        }
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(yaml: &str) -> Vec<String> {
        runnable_jobs(yaml).into_iter().map(|j| j.name).collect()
    }

    /// A configuration with chat jobs among everything else a real one holds: the contract in
    /// its three spellings (and `${…}`), manual, extends (single, list, chained), except in
    /// both forms, hidden templates, keywords mentioning the contract, jobs that get it wrong.
    const MIXED: &str = r#"---
stages:
- test
- chatops
variables:
  NOTE: "$CHATOPS_JOB == $CI_JOB_NAME"
workflow:
  rules:
  - if: "$CHATOPS_JOB == $CI_JOB_NAME"
.chatops:
  rules:
  - if: "$CHATOPS_JOB == $CI_JOB_NAME"
.chatops-manual:
  rules:
  - if: $CHATOPS_JOB == $CI_JOB_NAME
    when: manual
.hidden-job:
  rules:
  - if: "$CHATOPS_JOB == $CI_JOB_NAME"
  script:
  - echo hidden
hello-world:
  stage: chatops
  rules:
  - if: "$CHATOPS_JOB == $CI_JOB_NAME"
  script:
  - echo "Hello World."
reversed:
  rules:
    - if: '$CI_JOB_NAME == $CHATOPS_JOB'
  script: [echo reversed]
named:
  rules:
  - if: $CHATOPS_JOB == "named"
  script:
  - |-
    echo one
    rules:
      - if: '$CHATOPS_JOB == $CI_JOB_NAME'
braces:
  rules:
  - if: "${CHATOPS_JOB} == ${CI_JOB_NAME}"
ls:
  extends: ".chatops"
  script:
  - ls
restart:
  extends:
  - ".base"
  - ".chatops-manual"
  script:
  - restart
chained:
  extends: ls
own-rules-win:
  extends: ".chatops"
  rules:
  - when: on_success
deploy-production:
  stage: deploy
  rules:
  - if: $CHATOPS_JOB == $CI_JOB_NAME
  except:
    refs:
    - chat
    variables:
    - "$CHATOPS_JOB"
excluded-list:
  extends: ".chatops"
  except:
  - chat
excluded-flow:
  extends: ".chatops"
  except: [tags, chat]
test:
  stage: test
  rules:
  - if: "$CHATOPS_JOB"
    when: never
  - when: on_success
  script:
  - make test
never-first:
  rules:
  - if: "$CHATOPS_JOB"
    when: never
  - if: "$CHATOPS_JOB == $CI_JOB_NAME"
never-contract:
  rules:
  - if: "$CHATOPS_JOB == $CI_JOB_NAME"
    when: never
typo:
  rules:
  - if: "$CHATOPS_JOB == $CI_JOB"
other-name:
  rules:
  - if: $CHATOPS_JOB == "someone-else"
only-chat:
  only:
  - chat
  script:
  - echo old style
plain:
  script:
  - make
scalar-key: just a value
listy:
- not
- a job
"#;

    #[test]
    fn only_contract_jobs_not_excluded_are_listed() {
        assert_eq!(
            names(MIXED),
            [
                "braces",
                "chained",
                "hello-world",
                "ls",
                "named",
                "restart",
                "reversed"
            ]
        );
        let jobs = runnable_jobs(MIXED);
        let manual: Vec<&str> = jobs
            .iter()
            .filter(|j| j.manual)
            .map(|j| j.name.as_str())
            .collect();
        assert_eq!(manual, ["restart"]);
        assert!(jobs
            .iter()
            .all(|j| j.description.is_none() && !j.needs_approval));
    }

    /// The same jobs in the shapes other emitters and GitLab versions write.
    #[test]
    fn emitter_shapes_table() {
        let table: &[(&str, &str, &[&str])] = &[
            (
                "serde_yaml: sequences at the key's indentation, plain scalars",
                "a:\n  rules:\n  - if: $CHATOPS_JOB == $CI_JOB_NAME\n  script:\n  - x\n",
                &["a"],
            ),
            (
                "indented sequences",
                "a:\n  rules:\n    - if: '$CHATOPS_JOB == $CI_JOB_NAME'\n",
                &["a"],
            ),
            (
                "Ruby symbol keys (older GitLab)",
                "---\n:a:\n  :rules:\n  - :if: \"$CHATOPS_JOB == $CI_JOB_NAME\"\n",
                &["a"],
            ),
            (
                "a quoted job name holding a colon",
                "\"deploy: prod\":\n  rules:\n  - if: $CHATOPS_JOB == $CI_JOB_NAME\n",
                &["deploy: prod"],
            ),
            (
                "single quotes doubled inside single quotes",
                "o'k:\n  rules:\n  - if: '$CHATOPS_JOB == \"o''k\"'\n",
                &["o'k"],
            ),
            (
                "escaped double quotes",
                "b:\n  rules:\n  - if: \"$CHATOPS_JOB == \\\"b\\\"\"\n",
                &["b"],
            ),
            (
                "a folded long condition",
                "c:\n  rules:\n  - if: \"$CHATOPS_JOB == $CI_JOB_NAME && $CI_PIPELINE_SOURCE\n      == \\\"api\\\"\"\n",
                &["c"],
            ),
            (
                "an alias to shared rules",
                "x:\n  rules: &1\n  - if: \"$CHATOPS_JOB == $CI_JOB_NAME\"\ny:\n  rules: *1\n",
                &["x", "y"],
            ),
            (
                "flow rule items",
                "f:\n  rules: [{if: '$CHATOPS_JOB == $CI_JOB_NAME', when: manual}]\n",
                &["f"],
            ),
            (
                "or with another condition",
                "o:\n  rules:\n  - if: $CI_COMMIT_TAG || ($CHATOPS_JOB == $CI_JOB_NAME)\n",
                &["o"],
            ),
            ("empty", "", &[]),
            ("not a mapping", "- a\n- b\n", &[]),
            ("garbage", "::: [\n\"unterminated\n", &[]),
            (
                "CRLF line ends",
                "a:\r\n  rules:\r\n  - if: $CHATOPS_JOB == $CI_JOB_NAME\r\n",
                &["a"],
            ),
            (
                "extends cycle",
                "a:\n  extends: b\nb:\n  extends: a\n",
                &[],
            ),
        ];
        for (what, yaml, want) in table {
            assert_eq!(names(yaml), *want, "{what}");
        }
        let f =
            runnable_jobs("f:\n  rules: [{if: '$CHATOPS_JOB == $CI_JOB_NAME', when: manual}]\n");
        assert!(f[0].manual);
    }

    #[test]
    fn contract_clauses_table() {
        let table: &[(&str, bool)] = &[
            ("$CHATOPS_JOB == $CI_JOB_NAME", true),
            ("$CI_JOB_NAME == $CHATOPS_JOB", true),
            ("$CHATOPS_JOB==$CI_JOB_NAME", true),
            ("$CHATOPS_JOB == \"deploy\"", true),
            ("$CHATOPS_JOB == 'deploy'", true),
            ("'deploy' == $CHATOPS_JOB", true),
            ("$CHATOPS_JOB == \"deploy2\"", false),
            ("$CHATOPS_JOB != $CI_JOB_NAME", false),
            ("$CHATOPS_JOB", false),
            ("$CHATOPS_JOB =~ /deploy/", false),
            ("$X == $CI_JOB_NAME", false),
            ("$CHATOPS_JOB == $CI_JOB_NAME && $DEPLOY_ENABLED", true),
        ];
        for (cond, want) in table {
            assert_eq!(is_contract(&normalize(cond), "deploy"), *want, "{cond}");
        }
    }
}
