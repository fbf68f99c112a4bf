//! The audit table in DynamoDB (`AUDIT_TABLE`): append-only, one item per `AuditEntry`.
//!
//! Schema (the template's `AuditTable` is exactly this; `create_table` builds it for tests):
//! - key `pk` (S, HASH) = `day#YYYY-MM-DD`, the entry's UTC day, and `sk` (S, RANGE) = the
//!   entry's id, `<13-digit unix millis>-<16 hex>`: a day's entries sort by time, so
//!   `chatops audit --since 7d` is one `Query` per day (8 for a week), never a `Scan`. One
//!   partition takes a day's writes: DynamoDB gives a partition 1,000 writes a second, far
//!   more than people typing commands make.
//! - every field of the entry its own attribute (S, N, BOOL; absent fields left out), so
//!   the console and PartiQL can filter on them; `expires_at` (N) is the TTL
//!   (`AUDIT_RETENTION_DAYS`, default 400).
//!
//! `append` is a `PutItem` with `attribute_not_exists(pk)`: an entry is never overwritten,
//! and the functions' IAM policy allows them `PutItem` on this table and nothing else (no
//! `UpdateItem`, no `DeleteItem`, no reads): only an administrator reads it, with the CLI.

use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType,
    ScalarAttributeType, TimeToLiveSpecification,
};
use aws_sdk_dynamodb::Client;
use chatops_core::audit::{AuditEntry, AuditError, AuditLog};
use serde_json::Value;
use std::collections::HashMap;

type Item = HashMap<String, AttributeValue>;

/// Attributes of the item that are not fields of the entry.
const KEY_ATTRS: &[&str] = &["pk", "sk", "expires_at"];
/// The most days one `read` queries (ten years: more than any retention).
const MAX_DAYS: u64 = 3660;

/// The audit log in a DynamoDB table.
pub struct DynamoAudit {
    client: Client,
    table: String,
    retention_days: u32,
}

fn unavailable<E, R>(e: SdkError<E, R>) -> AuditError
where
    E: std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    AuditError::Unavailable(DisplayErrorContext(e).to_string())
}

/// `day#2025-01-31` for a Unix millisecond.
pub fn day_key(at_ms: u64) -> String {
    let iso = chatops_core::clock::iso8601(at_ms / 1000);
    format!("day#{}", &iso[..10])
}

/// The entry as an item: its fields as attributes, plus the key and the TTL.
pub fn to_item(entry: &AuditEntry, retention_days: u32) -> Result<Item, AuditError> {
    let Value::Object(fields) =
        serde_json::to_value(entry).map_err(|e| AuditError::Corrupt(e.to_string()))?
    else {
        return Err(AuditError::Corrupt("an entry is not an object".into()));
    };
    let mut item = Item::new();
    for (k, v) in fields {
        let a = match v {
            Value::Null => continue,
            Value::String(s) => AttributeValue::S(s),
            Value::Number(n) => AttributeValue::N(n.to_string()),
            Value::Bool(b) => AttributeValue::Bool(b),
            other => AttributeValue::S(other.to_string()),
        };
        item.insert(k, a);
    }
    item.insert("pk".into(), AttributeValue::S(day_key(entry.at_ms)));
    item.insert("sk".into(), AttributeValue::S(entry.id.clone()));
    let expires = entry.at_ms / 1000 + u64::from(retention_days) * 86_400;
    item.insert("expires_at".into(), AttributeValue::N(expires.to_string()));
    Ok(item)
}

/// An item back into an entry.
pub fn from_item(item: &Item) -> Result<AuditEntry, AuditError> {
    let mut fields = serde_json::Map::new();
    for (k, a) in item {
        if KEY_ATTRS.contains(&k.as_str()) {
            continue;
        }
        let v = match a {
            AttributeValue::S(s) => Value::String(s.clone()),
            AttributeValue::Bool(b) => Value::Bool(*b),
            AttributeValue::N(n) => match n.parse::<u64>() {
                Ok(u) => Value::from(u),
                Err(_) => n
                    .parse::<f64>()
                    .ok()
                    .and_then(serde_json::Number::from_f64)
                    .map(Value::Number)
                    .ok_or_else(|| AuditError::Corrupt(format!("{k} = {n} is not a number")))?,
            },
            _ => continue,
        };
        fields.insert(k.clone(), v);
    }
    serde_json::from_value(Value::Object(fields)).map_err(|e| AuditError::Corrupt(e.to_string()))
}

impl DynamoAudit {
    pub fn new(client: Client, table: impl Into<String>, retention_days: u32) -> Self {
        Self {
            client,
            table: table.into(),
            retention_days,
        }
    }

    /// Create the audit table with exactly the production schema (tests, local mode), TTL on.
    pub async fn create_table(client: &Client, name: &str) -> Result<(), AuditError> {
        let bad = |e: aws_sdk_dynamodb::error::BuildError| AuditError::Unavailable(e.to_string());
        let attr = |n: &str| {
            AttributeDefinition::builder()
                .attribute_name(n)
                .attribute_type(ScalarAttributeType::S)
                .build()
                .map_err(bad)
        };
        let key = |n: &str, t: KeyType| {
            KeySchemaElement::builder()
                .attribute_name(n)
                .key_type(t)
                .build()
                .map_err(bad)
        };
        client
            .create_table()
            .table_name(name)
            .billing_mode(BillingMode::PayPerRequest)
            .attribute_definitions(attr("pk")?)
            .attribute_definitions(attr("sk")?)
            .key_schema(key("pk", KeyType::Hash)?)
            .key_schema(key("sk", KeyType::Range)?)
            .send()
            .await
            .map_err(unavailable)?;
        client
            .update_time_to_live()
            .table_name(name)
            .time_to_live_specification(
                TimeToLiveSpecification::builder()
                    .enabled(true)
                    .attribute_name("expires_at")
                    .build()
                    .map_err(bad)?,
            )
            .send()
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    /// One day's entries between two ids, oldest first (every page).
    async fn day(&self, day: String, from: &str, to: &str) -> Result<Vec<AuditEntry>, AuditError> {
        let mut out = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let page = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("pk = :day AND sk BETWEEN :from AND :to")
                .expression_attribute_values(":day", AttributeValue::S(day.clone()))
                .expression_attribute_values(":from", AttributeValue::S(from.to_owned()))
                .expression_attribute_values(":to", AttributeValue::S(to.to_owned()))
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(unavailable)?;
            for item in page.items() {
                out.push(from_item(item)?);
            }
            match page.last_evaluated_key {
                Some(k) if !k.is_empty() => start = Some(k),
                _ => return Ok(out),
            }
        }
    }
}

#[async_trait::async_trait]
impl AuditLog for DynamoAudit {
    async fn append(&self, entry: &AuditEntry) -> Result<(), AuditError> {
        let res = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(to_item(entry, self.retention_days)?))
            .condition_expression("attribute_not_exists(pk)")
            .send()
            .await;
        match res {
            Ok(_) => Ok(()),
            Err(e)
                if e.as_service_error().and_then(|s| s.code())
                    == Some("ConditionalCheckFailedException") =>
            {
                Err(AuditError::Exists(entry.id.clone()))
            }
            Err(e) => Err(unavailable(e)),
        }
    }

    async fn read(&self, since_ms: u64, until_ms: u64) -> Result<Vec<AuditEntry>, AuditError> {
        if until_ms < since_ms {
            return Ok(Vec::new());
        }
        let first =
            (since_ms / 1000 / 86_400).max((until_ms / 1000 / 86_400).saturating_sub(MAX_DAYS));
        let last = until_ms / 1000 / 86_400;
        // Ids start with the 13-digit time; `~` sorts after every id of the last millisecond.
        let (from, to) = (format!("{since_ms:013}"), format!("{until_ms:013}~"));
        let mut out = Vec::new();
        for d in first..=last {
            out.extend(self.day(day_key(d * 86_400 * 1000), &from, &to).await?);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chatops_core::audit::AuditEvent;
    use chatops_core::ids::PipelineId;
    use chatops_core::run::RunResult;

    #[test]
    fn items_round_trip_with_key_and_ttl() {
        let mut e = AuditEntry::new(AuditEvent::Result {
            result: RunResult::Success,
            duration_secs: Some(1.5),
        });
        e.job = Some("deploy".into());
        e.pipeline_id = Some(PipelineId(42));
        let item = to_item(&e, 400).unwrap();
        assert_eq!(item["sk"].as_s().unwrap(), &e.id);
        assert!(item["pk"].as_s().unwrap().starts_with("day#20"));
        assert_eq!(
            item["expires_at"].as_n().unwrap(),
            &(e.at_ms / 1000 + 400 * 86_400).to_string()
        );
        assert_eq!(item["pipeline_id"].as_n().unwrap(), "42");
        assert_eq!(item["duration_secs"].as_n().unwrap(), "1.5");
        assert!(!item.contains_key("input"), "absent fields are left out");
        assert_eq!(from_item(&item).unwrap(), e);
    }

    #[test]
    fn days_are_utc() {
        assert_eq!(day_key(0), "day#1970-01-01");
        assert_eq!(day_key(1_767_225_599_999), "day#2025-12-31");
        assert_eq!(day_key(1_767_225_600_000), "day#2026-01-01");
    }
}
