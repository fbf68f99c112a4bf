//! The DynamoDB adapter for the runs table (`RUNS_TABLE`). Owned by the dispatcher issue.

use aws_sdk_dynamodb::Client;

/// The DynamoDB-backed run store.
pub struct DynamoStore {
    #[allow(dead_code)]
    client: Client,
    #[allow(dead_code)]
    table: String,
}

impl DynamoStore {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
        }
    }
}
