//! The dispatcher handler. Owned by the dispatcher issue.
