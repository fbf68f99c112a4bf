//! Reply extraction from runner logs. Owned by the reply issue.
