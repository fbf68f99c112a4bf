//! Slack verify. Placeholder.
