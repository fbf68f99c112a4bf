//! Slack slash. Placeholder.
