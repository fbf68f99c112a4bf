//! The one markup layer: every text the product sends to a channel is built from typed spans
//! and rendered here for its platform, and every span escapes what it holds. There is no way
//! to put raw text from a person, a job or GitLab into a message without going through
//! [`Rich`], so a job name or `CHAT_INPUT` of `<!channel>` cannot ping a channel.
//!
//! - Slack `mrkdwn`: `&`, `<`, `>` become entities (Slack's own rule); links are
//!   `<url|text>`, mentions `<@U123>` (ids checked), code spans cannot be closed early.
//! - Mattermost markdown: markdown punctuation is backslash-escaped, and `@` is followed by
//!   a word joiner so `@channel`, `@here`, `@all` or `@someone` in data never notify.

use crate::run::Platform;

/// One piece of a message.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Span {
    Text(String),
    Code(String),
    Bold(String),
    Link {
        url: String,
        text: String,
    },
    /// A chat user: Slack needs the id, Mattermost the username.
    Mention {
        id: String,
        name: String,
    },
    /// `:name:`, for names of letters, digits, `_`, `+`, `-` only.
    Emoji(String),
    /// A moment (Unix seconds): Slack shows it in each reader's own time zone, Mattermost
    /// as UTC.
    Time(u64),
    Break,
}

/// A message under construction: spans, rendered per platform by [`Rich::render`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rich(Vec<Span>);

impl Rich {
    pub fn new() -> Self {
        Self::default()
    }
    /// Plain text, escaped for the platform.
    pub fn text(mut self, s: impl Into<String>) -> Self {
        self.0.push(Span::Text(s.into()));
        self
    }
    /// Inline code (one line; a newline becomes a space).
    pub fn code(mut self, s: impl Into<String>) -> Self {
        self.0.push(Span::Code(s.into()));
        self
    }
    pub fn bold(mut self, s: impl Into<String>) -> Self {
        self.0.push(Span::Bold(s.into()));
        self
    }
    pub fn link(mut self, url: impl Into<String>, text: impl Into<String>) -> Self {
        self.0.push(Span::Link {
            url: url.into(),
            text: text.into(),
        });
        self
    }
    /// Mention a chat user (Slack by id, Mattermost by username).
    pub fn mention(mut self, id: impl Into<String>, name: impl Into<String>) -> Self {
        self.0.push(Span::Mention {
            id: id.into(),
            name: name.into(),
        });
        self
    }
    /// A named emoji (`white_check_mark`), rendered `:white_check_mark:` on both platforms.
    pub fn emoji(mut self, name: impl Into<String>) -> Self {
        self.0.push(Span::Emoji(name.into()));
        self
    }
    /// A moment, as a time of day (`<!date^…^{time}|HH:MM UTC>` on Slack, `HH:MM UTC` on
    /// Mattermost).
    pub fn time(mut self, unix_secs: u64) -> Self {
        self.0.push(Span::Time(unix_secs));
        self
    }
    /// A line break.
    pub fn br(mut self) -> Self {
        self.0.push(Span::Break);
        self
    }
    /// Append another message's spans.
    pub fn then(mut self, other: Rich) -> Self {
        self.0.extend(other.0);
        self
    }
    /// Items joined by `sep`, each as inline code.
    pub fn code_list<I, S>(mut self, items: I, sep: &str) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        for (i, item) in items.into_iter().enumerate() {
            if i > 0 {
                self = self.text(sep);
            }
            self = self.code(item);
        }
        self
    }

    pub fn render(&self, platform: Platform) -> String {
        let mut out = String::new();
        for span in &self.0 {
            match platform {
                Platform::Slack => slack_span(span, &mut out),
                Platform::Mattermost => mattermost_span(span, &mut out),
            }
        }
        out
    }
}

/// Text for an HTML page (the OAuth callback's): the three characters Slack escapes, and
/// both quotes, so it is safe in element content and attribute values alike.
pub fn html_escape(s: &str) -> String {
    slack_escape(s)
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

/// Slack's three control characters, escaped as Slack asks.
pub fn slack_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            c => out.push(c),
        }
    }
    out
}

/// Markdown punctuation escaped with a backslash (`#` where it would start a heading), and
/// every `@` followed by a word joiner (U+2060) so no mention can be formed from data.
pub fn mattermost_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    let mut line_start = true;
    for c in s.chars() {
        match c {
            // `(`/`)` need no escape: with `[`/`]` escaped no link can form.
            '\\' | '`' | '*' | '_' | '[' | ']' | '<' | '>' | '~' => {
                out.push('\\');
                out.push(c);
            }
            '#' if line_start => out.push_str("\\#"),
            '@' => out.push_str("@\u{2060}"),
            c => out.push(c),
        }
        line_start = c == '\n';
    }
    out
}

fn is_emoji_name(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '+' | '-'))
}

/// Inline code text: one line, and no backtick that could close the span early.
fn code_text(s: &str) -> String {
    s.replace(['\n', '\r'], " ").replace('`', "\u{2cb}")
}

/// A URL safe inside `<url|text>` / `[text](url)`: only http(s), with the delimiters encoded.
fn safe_url(url: &str) -> Option<String> {
    let lower = url.trim().to_ascii_lowercase();
    if !(lower.starts_with("https://") || lower.starts_with("http://")) {
        return None;
    }
    let mut out = String::with_capacity(url.len());
    for c in url.trim().chars() {
        match c {
            '|' => out.push_str("%7C"),
            '<' => out.push_str("%3C"),
            '>' => out.push_str("%3E"),
            ' ' => out.push_str("%20"),
            '(' => out.push_str("%28"),
            ')' => out.push_str("%29"),
            '&' => out.push('&'),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    Some(out)
}

fn is_id(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric())
}

fn is_username(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

fn slack_span(span: &Span, out: &mut String) {
    match span {
        Span::Text(s) => out.push_str(&slack_escape(s)),
        Span::Code(s) => {
            out.push('`');
            out.push_str(&slack_escape(&code_text(s)));
            out.push('`');
        }
        Span::Bold(s) => {
            out.push('*');
            out.push_str(&slack_escape(s));
            out.push('*');
        }
        Span::Link { url, text } => match safe_url(url) {
            Some(u) => {
                out.push('<');
                out.push_str(&slack_escape(&u));
                out.push('|');
                out.push_str(&slack_escape(text));
                out.push('>');
            }
            None => out.push_str(&slack_escape(text)),
        },
        Span::Mention { id, name } if is_id(id) => {
            let _ = name;
            out.push_str("<@");
            out.push_str(id);
            out.push('>');
        }
        Span::Mention { name, .. } => out.push_str(&slack_escape(name)),
        Span::Emoji(name) if is_emoji_name(name) => {
            out.push(':');
            out.push_str(name);
            out.push(':');
        }
        Span::Emoji(_) => {}
        // Only digits and our own fixed tokens: nothing to escape.
        Span::Time(secs) => out.push_str(&format!("<!date^{secs}^{{time}}|{}>", utc_time(*secs))),
        Span::Break => out.push('\n'),
    }
}

/// `HH:MM UTC` of a moment.
fn utc_time(secs: u64) -> String {
    let day = secs % 86_400;
    format!("{:02}:{:02} UTC", day / 3600, day % 3600 / 60)
}

fn mattermost_span(span: &Span, out: &mut String) {
    match span {
        Span::Text(s) => out.push_str(&mattermost_escape(s)),
        Span::Code(s) => {
            // Markdown is not interpreted in a code span; `@` still gets its word joiner so
            // no client or server rule can read a mention there.
            out.push('`');
            out.push_str(&code_text(s).replace('@', "@\u{2060}"));
            out.push('`');
        }
        Span::Bold(s) => {
            out.push_str("**");
            out.push_str(&mattermost_escape(s));
            out.push_str("**");
        }
        Span::Link { url, text } => match safe_url(url) {
            Some(u) => {
                out.push('[');
                out.push_str(&mattermost_escape(text));
                out.push_str("](");
                out.push_str(&u);
                out.push(')');
            }
            None => out.push_str(&mattermost_escape(text)),
        },
        Span::Mention { name, .. } if is_username(name) => {
            out.push('@');
            out.push_str(name);
        }
        Span::Mention { name, .. } => out.push_str(&mattermost_escape(name)),
        Span::Emoji(name) if is_emoji_name(name) => {
            out.push(':');
            out.push_str(name);
            out.push(':');
        }
        Span::Emoji(_) => {}
        Span::Time(secs) => out.push_str(&utc_time(*secs)),
        Span::Break => out.push('\n'),
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn times_render_per_platform() {
        for (secs, utc) in [
            (0, "00:00 UTC"),
            (86_399, "23:59 UTC"),
            (1_764_620_730, "20:25 UTC"),
        ] {
            let r = Rich::new().time(secs);
            assert_eq!(r.render(Platform::Mattermost), utc);
            assert_eq!(
                r.render(Platform::Slack),
                format!("<!date^{secs}^{{time}}|{utc}>")
            );
        }
    }

    #[test]
    fn html_text_is_escaped_for_content_and_attributes() {
        assert_eq!(
            html_escape(r#"<script>"a"&'b'</script>"#),
            "&lt;script&gt;&quot;a&quot;&amp;&#39;b&#39;&lt;/script&gt;"
        );
    }

    use super::*;

    const HOSTILE: &str = "<!channel> <@U123> & @here *bold* `tick` [x](https://evil)";

    #[test]
    fn text_is_escaped_on_both_platforms() {
        let r = Rich::new().text(HOSTILE);
        let s = r.render(Platform::Slack);
        assert_eq!(
            s,
            "&lt;!channel&gt; &lt;@U123&gt; &amp; @here *bold* `tick` [x](https://evil)"
        );
        let m = r.render(Platform::Mattermost);
        assert!(!m.contains("@here"), "{m}");
        assert!(
            m.contains("\\*bold\\*") && m.contains("\\[x\\](https://evil)"),
            "{m}"
        );
    }

    #[test]
    fn spans_cannot_break_out() {
        let table: &[(Rich, &str, &str)] = &[
            (
                Rich::new().code("a`b\nc<!channel>"),
                "`aˋb c&lt;!channel&gt;`",
                "`aˋb c<!channel>`",
            ),
            (
                Rich::new().link("https://g/x|y>z", "<job>"),
                "<https://g/x%7Cy%3Ez|&lt;job&gt;>",
                "[\\<job\\>](https://g/x%7Cy%3Ez)",
            ),
            (Rich::new().link("javascript:alert(1)", "job"), "job", "job"),
            (
                Rich::new().mention("U024BE7LH", "alice"),
                "<@U024BE7LH>",
                "@alice",
            ),
            (
                Rich::new().mention("U1> <!channel", "al ice@here"),
                "al ice@here",
                "al ice@\u{2060}here",
            ),
            (Rich::new().bold("a*b").br(), "*a*b*\n", "**a\\*b**\n"),
        ];
        for (rich, slack, mm) in table {
            assert_eq!(rich.render(Platform::Slack), *slack);
            assert_eq!(rich.render(Platform::Mattermost), *mm);
        }
    }
}
