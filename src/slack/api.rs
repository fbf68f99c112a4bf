//! Slack api. Placeholder.
