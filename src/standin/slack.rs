//! Slack HTTP stand-in. Owned by the completion issue.
