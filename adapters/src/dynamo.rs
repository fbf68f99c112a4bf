//! The DynamoDB adapter for the runs table (`RUNS_TABLE`).
//!
//! Schema (the template defines exactly this; `create_table` builds it for tests):
//! - key `pk` (S, HASH only): `run#<request_id>`, `user#<team_id>#<chat_user_id>`,
//!   `link#<state>` (a connect link not used yet), `delivery#<key>`; TTL attribute
//!   `expires_at` (N) on every item.
//! - user links: `team_id`, `chat_user_id`, `gitlab_username`, `gitlab_user_id`,
//!   `linked_at`, `platform`, and for OAuth links the sealed tokens `grant_sealed` (S,
//!   base64 of ciphertext: never plaintext), `grant_expires_at`, `grant_version` (the
//!   refresh protocol's conditional writes), `grant_broken` (BOOL), `grant_lock_until`.
//! - connect links: `pending` (the `PendingLink` as JSON).
//! - runs: `record` (the `RunRecord` as JSON) plus the attributes conditions and indexes use:
//!   `status` (S), `lease_until` (N), `replied_at` (N, once claimed), `response_url_uses` (N),
//!   `updated_at` (N), `expires_at` (N), `pipeline_key` (S, the pipeline id, once one exists),
//!   `open` (S `"1"`, only while the run is owed a reply), `channel_key` (S,
//!   `platform#team#channel`) and `received_at` (N) for `status` and `history`, `outcome`
//!   (S, the job's end as JSON, written with the reply), and for interactive runs `card`
//!   (S, the `CardRef` as JSON) and per button `action_<kind>` (S, the `ActionTaken` as JSON)
//!   with `action_<kind>_key` (S, what the conditional write compares); four-eyes runs keep
//!   their one decision in `decision` (S, the `Decision` as JSON) with `decision_key`.
//! - GSI `by-pipeline`: HASH `pipeline_key`, projection ALL.
//! - GSI `due-runs`: HASH `open` + RANGE `due_at` (when the sweep looks next), projection ALL.
//! - GSI `by-channel`: HASH `channel_key` + RANGE `received_at`, projection ALL: a channel's
//!   runs newest first, one `Query`.
//!
//! The separate attributes are the truth for the fields they hold: `response_url_uses` and
//! `replied_at` only change through their conditional updates (a `save_run` never lowers or
//! clears them), and reading a run overlays them on the JSON record.

use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, GlobalSecondaryIndex, KeySchemaElement,
    KeyType, Projection, ProjectionType, ReturnValue, ReturnValuesOnConditionCheckFailure,
    ScalarAttributeType, TimeToLiveSpecification,
};
use aws_sdk_dynamodb::Client;
use chatops_core::ids::{ChannelId, ChatUserId, GitLabUserId, PipelineId, RequestId, TeamId};
use chatops_core::run::{
    channel_key, ActionKind, ActionTaken, CardRef, Decision, Grant, JobOutcome, PendingLink,
    Platform, RunRecord, RunRequest, RunStatus, UserLink, Verdict,
};
use chatops_core::store::{ActionClaim, Decided, DispatchClaim, ReplyClaim, RunStore, StoreError};
use std::collections::HashMap;

/// The GSI that finds a run by its pipeline.
pub const BY_PIPELINE_INDEX: &str = "by-pipeline";
/// The GSI of runs still owed a reply, by when the sweep should look at them (`due_at`).
pub const OPEN_RUNS_INDEX: &str = "due-runs";
/// The GSI of a channel's runs by when their command was received (`status`, `history`).
pub const BY_CHANNEL_INDEX: &str = "by-channel";
/// User links do not expire by themselves; their TTL is set this far ahead.
const USER_LINK_TTL_SECS: u64 = 10 * 365 * 24 * 3600;

type Item = HashMap<String, AttributeValue>;

/// The DynamoDB-backed run store.
pub struct DynamoStore {
    client: Client,
    table: String,
}

fn unavailable<E, R>(e: SdkError<E, R>) -> StoreError
where
    E: std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    StoreError::Unavailable(DisplayErrorContext(e).to_string())
}

fn is_condition_failed<E: ProvideErrorMetadata, R>(e: &SdkError<E, R>) -> bool {
    e.as_service_error()
        .and_then(|s| s.code())
        .is_some_and(|c| c == "ConditionalCheckFailedException")
}

fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

fn n(v: u64) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

fn get_s<'a>(item: &'a Item, k: &str) -> Option<&'a str> {
    item.get(k).and_then(|v| v.as_s().ok()).map(String::as_str)
}

fn get_n(item: &Item, k: &str) -> Option<u64> {
    item.get(k)
        .and_then(|v| v.as_n().ok())
        .and_then(|v| v.parse().ok())
}

fn status_str(s: RunStatus) -> String {
    serde_json::to_value(s)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

fn run_key(id: &RequestId) -> String {
    format!("run#{}", id.0)
}

fn user_key(team: &str, user: &str) -> String {
    format!("user#{team}#{user}")
}

/// A run from its item: the JSON record with the separately kept attributes laid over it.
fn run_from_item(item: &Item) -> Result<RunRecord, StoreError> {
    let json = get_s(item, "record")
        .ok_or_else(|| StoreError::Corrupt("run item has no record attribute".into()))?;
    let mut rec: RunRecord =
        serde_json::from_str(json).map_err(|e| StoreError::Corrupt(format!("run record: {e}")))?;
    if let Some(st) = get_s(item, "status") {
        rec.status = serde_json::from_value(serde_json::Value::String(st.to_owned()))
            .map_err(|e| StoreError::Corrupt(format!("run status {st:?}: {e}")))?;
    }
    if let Some(v) = get_n(item, "lease_until") {
        rec.lease_until = v;
    }
    if let Some(v) = get_n(item, "updated_at") {
        rec.updated_at = v;
    }
    if let Some(v) = get_n(item, "expires_at") {
        rec.expires_at = v;
    }
    rec.response_url_uses = get_n(item, "response_url_uses").unwrap_or(0) as u32;
    if let Some(v) = get_n(item, "replied_at") {
        rec.replied_at = Some(v);
    }
    if let Some(v) = get_n(item, "due_at") {
        rec.due_at = v;
    }
    if let Some(v) = get_n(item, "checks") {
        rec.checks = v as u32;
    }
    if let Some(v) = get_n(item, "early_hook_at") {
        rec.early_hook_at = Some(v);
    }
    rec.reply_lease_until = get_n(item, "reply_lease_until").unwrap_or(0);
    if let Some(o) = get_s(item, "outcome") {
        rec.outcome = Some(
            serde_json::from_str::<JobOutcome>(o)
                .map_err(|e| StoreError::Corrupt(format!("run outcome {o:?}: {e}")))?,
        );
    }
    if let Some(json) = get_s(item, "card") {
        rec.card = Some(
            serde_json::from_str(json)
                .map_err(|e| StoreError::Corrupt(format!("run card: {e}")))?,
        );
    }
    for kind in ActionKind::ALL {
        let taken = get_s(item, &action_attr(kind))
            .map(|json| {
                serde_json::from_str::<ActionTaken>(json)
                    .map_err(|e| StoreError::Corrupt(format!("run action: {e}")))
            })
            .transpose()?;
        rec.actions.set(kind, taken);
    }
    if let Some(json) = get_s(item, "decision") {
        let decision: Decision = serde_json::from_str(json)
            .map_err(|e| StoreError::Corrupt(format!("run decision: {e}")))?;
        if let Some(a) = rec.approval.as_mut() {
            a.decision = Some(decision);
        }
    }
    Ok(rec)
}

/// The attribute holding a run's press of `kind` (`action_cancel`, …); its key is in
/// `<attr>_key`.
fn action_attr(kind: ActionKind) -> String {
    format!("action_{}", kind.as_str())
}

fn record_json(rec: &RunRecord) -> Result<String, StoreError> {
    serde_json::to_string(rec).map_err(|e| StoreError::Corrupt(format!("encode run: {e}")))
}

/// The full item for a run (used when a claim writes a fresh record).
fn run_item(rec: &RunRecord) -> Result<Item, StoreError> {
    let mut item: Item = HashMap::new();
    item.insert("pk".into(), s(run_key(&rec.request.request_id)));
    item.insert("record".into(), s(record_json(rec)?));
    item.insert("status".into(), s(status_str(rec.status)));
    item.insert("lease_until".into(), n(rec.lease_until));
    item.insert("updated_at".into(), n(rec.updated_at));
    item.insert("expires_at".into(), n(rec.expires_at));
    item.insert("response_url_uses".into(), n(rec.response_url_uses as u64));
    if let Some(r) = rec.replied_at {
        item.insert("replied_at".into(), n(r));
    }
    if let Some(p) = rec.pipeline_id {
        item.insert("pipeline_key".into(), s(p.0.to_string()));
    }
    if rec.status.is_open() {
        item.insert("open".into(), s("1"));
    }
    item.insert("due_at".into(), n(rec.due_at));
    item.insert("channel_key".into(), s(rec.request.channel_key()));
    item.insert("received_at".into(), n(rec.request.received_at));
    Ok(item)
}

fn link_from_item(item: &Item) -> Result<UserLink, StoreError> {
    let field = |k: &str| {
        get_s(item, k)
            .map(str::to_owned)
            .ok_or_else(|| StoreError::Corrupt(format!("user link without {k}")))
    };
    Ok(UserLink {
        team_id: TeamId(field("team_id")?),
        chat_user_id: ChatUserId(field("chat_user_id")?),
        gitlab_username: field("gitlab_username")?,
        gitlab_user_id: get_n(item, "gitlab_user_id").map(GitLabUserId),
        linked_at: get_n(item, "linked_at").unwrap_or(0),
        platform: get_s(item, "platform").and_then(|p| {
            serde_json::from_value::<Platform>(serde_json::Value::String(p.to_owned())).ok()
        }),
        grant: get_s(item, "grant_sealed").map(|sealed| Grant {
            sealed: sealed.to_owned(),
            expires_at: get_n(item, "grant_expires_at").unwrap_or(0),
            version: get_n(item, "grant_version").unwrap_or(0),
            broken: item
                .get("grant_broken")
                .and_then(|v| v.as_bool().ok())
                .copied()
                .unwrap_or(false),
            refresh_lock_until: get_n(item, "grant_lock_until").unwrap_or(0),
        }),
    })
}

fn pending_key(state: &str) -> String {
    format!("link#{state}")
}

impl DynamoStore {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
        }
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    /// Create the runs table with exactly the production schema (tests, local mode), and
    /// turn TTL on for `expires_at`.
    pub async fn create_table(client: &Client, name: &str) -> Result<(), StoreError> {
        let attr = |name: &str, t: ScalarAttributeType| {
            AttributeDefinition::builder()
                .attribute_name(name)
                .attribute_type(t)
                .build()
                .map_err(|e| StoreError::Unavailable(e.to_string()))
        };
        let key = |name: &str, t: KeyType| {
            KeySchemaElement::builder()
                .attribute_name(name)
                .key_type(t)
                .build()
                .map_err(|e| StoreError::Unavailable(e.to_string()))
        };
        let all = Projection::builder()
            .projection_type(ProjectionType::All)
            .build();
        let by_pipeline = GlobalSecondaryIndex::builder()
            .index_name(BY_PIPELINE_INDEX)
            .key_schema(key("pipeline_key", KeyType::Hash)?)
            .projection(all.clone())
            .build()
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        let open_runs = GlobalSecondaryIndex::builder()
            .index_name(OPEN_RUNS_INDEX)
            .key_schema(key("open", KeyType::Hash)?)
            .key_schema(key("due_at", KeyType::Range)?)
            .projection(all.clone())
            .build()
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        let by_channel = GlobalSecondaryIndex::builder()
            .index_name(BY_CHANNEL_INDEX)
            .key_schema(key("channel_key", KeyType::Hash)?)
            .key_schema(key("received_at", KeyType::Range)?)
            .projection(all)
            .build()
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        client
            .create_table()
            .table_name(name)
            .billing_mode(BillingMode::PayPerRequest)
            .attribute_definitions(attr("pk", ScalarAttributeType::S)?)
            .attribute_definitions(attr("pipeline_key", ScalarAttributeType::S)?)
            .attribute_definitions(attr("open", ScalarAttributeType::S)?)
            .attribute_definitions(attr("due_at", ScalarAttributeType::N)?)
            .attribute_definitions(attr("channel_key", ScalarAttributeType::S)?)
            .attribute_definitions(attr("received_at", ScalarAttributeType::N)?)
            .key_schema(key("pk", KeyType::Hash)?)
            .global_secondary_indexes(by_pipeline)
            .global_secondary_indexes(open_runs)
            .global_secondary_indexes(by_channel)
            .send()
            .await
            .map_err(unavailable)?;
        let ttl = TimeToLiveSpecification::builder()
            .enabled(true)
            .attribute_name("expires_at")
            .build()
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        client
            .update_time_to_live()
            .table_name(name)
            .time_to_live_specification(ttl)
            .send()
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    /// An `UpdateItem` on the run's item.
    fn update_run(
        &self,
        id: &RequestId,
    ) -> aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder {
        self.client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(run_key(id)))
    }

    async fn get_item(&self, pk: String) -> Result<Option<Item>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", s(pk))
            .consistent_read(true)
            .send()
            .await
            .map_err(unavailable)?;
        Ok(out.item)
    }

    /// Take over the lease of a `Dispatching` run whose lease ran out.
    async fn take_lease(
        &self,
        old: RunRecord,
        now: u64,
        lease_secs: u64,
    ) -> Result<DispatchClaim, StoreError> {
        let mut rec = old;
        rec.lease_until = now + lease_secs;
        rec.updated_at = now;
        let res = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(run_key(&rec.request.request_id)))
            .update_expression("SET lease_until = :lease, updated_at = :now, #record = :rec")
            .condition_expression("#status = :dispatching AND lease_until < :now")
            .expression_attribute_names("#status", "status")
            .expression_attribute_names("#record", "record")
            .expression_attribute_values(":lease", n(rec.lease_until))
            .expression_attribute_values(":now", n(now))
            .expression_attribute_values(":rec", s(record_json(&rec)?))
            .expression_attribute_values(":dispatching", s(status_str(RunStatus::Dispatching)))
            .return_values(ReturnValue::AllNew)
            .send()
            .await;
        match res {
            Ok(out) => {
                let rec = match out.attributes {
                    Some(item) => run_from_item(&item)?,
                    None => rec,
                };
                Ok(DispatchClaim::Claimed(Box::new(rec)))
            }
            Err(e) if is_condition_failed(&e) => Ok(DispatchClaim::Busy),
            Err(e) => Err(unavailable(e)),
        }
    }

    async fn query_runs(
        &self,
        index: &str,
        key_condition: &str,
        values: Vec<(&str, AttributeValue)>,
        names: Vec<(&str, &str)>,
    ) -> Result<Vec<RunRecord>, StoreError> {
        let mut out = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let mut q = self
                .client
                .query()
                .table_name(&self.table)
                .index_name(index)
                .key_condition_expression(key_condition)
                .set_exclusive_start_key(start.take());
            for (k, v) in &values {
                q = q.expression_attribute_values(*k, v.clone());
            }
            for (k, v) in &names {
                q = q.expression_attribute_names(*k, *v);
            }
            let page = q.send().await.map_err(unavailable)?;
            for item in page.items() {
                out.push(run_from_item(item)?);
            }
            match page.last_evaluated_key {
                Some(k) if !k.is_empty() => start = Some(k),
                _ => return Ok(out),
            }
        }
    }
}

#[async_trait::async_trait]
impl RunStore for DynamoStore {
    async fn claim_dispatch(
        &self,
        request: &RunRequest,
        now: u64,
        lease_secs: u64,
    ) -> Result<DispatchClaim, StoreError> {
        let rec = RunRecord::claimed_for_dispatch(request.clone(), now, lease_secs);
        let res = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(run_item(&rec)?))
            .condition_expression("attribute_not_exists(pk) OR expires_at < :now")
            .expression_attribute_values(":now", n(now))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        let existing = match res {
            Ok(_) => return Ok(DispatchClaim::Claimed(Box::new(rec))),
            Err(e) if is_condition_failed(&e) => {
                let item = e.as_service_error().and_then(|se| match se {
                    aws_sdk_dynamodb::operation::put_item::PutItemError::ConditionalCheckFailedException(c) => {
                        c.item.clone()
                    }
                    _ => None,
                });
                match item {
                    Some(item) => item,
                    // Older servers do not return the item: read it.
                    None => match self.get_item(run_key(&request.request_id)).await? {
                        Some(item) => item,
                        None => return Ok(DispatchClaim::Busy),
                    },
                }
            }
            Err(e) => return Err(unavailable(e)),
        };
        let old = run_from_item(&existing)?;
        match old.status {
            RunStatus::Dispatching if old.lease_until < now => {
                self.take_lease(old, now, lease_secs).await
            }
            RunStatus::Dispatching => Ok(DispatchClaim::Busy),
            _ => Ok(DispatchClaim::Done(Box::new(old))),
        }
    }

    async fn save_run(&self, run: &RunRecord) -> Result<RunRecord, StoreError> {
        let mut set = vec![
            "#record = :rec",
            "#status = if_not_exists(replied_at, :status)",
            "lease_until = :lease",
            "updated_at = :updated",
            "expires_at = :expires",
            "due_at = :due",
            "response_url_uses = if_not_exists(response_url_uses, :uses)",
            // Never change after the claim; set again so a run saved after an upgrade from
            // a table without the `by-channel` index is found by `status` and `history`.
            "channel_key = :channel",
            "received_at = :received",
        ];
        let mut remove = Vec::new();
        let mut req = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(run_key(&run.request.request_id)))
            .expression_attribute_names("#record", "record")
            .expression_attribute_names("#status", "status")
            .expression_attribute_names("#open", "open")
            .expression_attribute_values(":rec", s(record_json(run)?))
            .expression_attribute_values(":status", s(status_str(run.status)))
            .expression_attribute_values(":lease", n(run.lease_until))
            .expression_attribute_values(":updated", n(run.updated_at))
            .expression_attribute_values(":expires", n(run.expires_at))
            .expression_attribute_values(":uses", n(run.response_url_uses as u64))
            .expression_attribute_values(":due", n(run.due_at))
            .expression_attribute_values(":channel", s(run.request.channel_key()))
            .expression_attribute_values(":received", n(run.request.received_at));
        if let Some(r) = run.replied_at {
            set.push("replied_at = if_not_exists(replied_at, :replied)");
            req = req.expression_attribute_values(":replied", n(r));
        }
        match run.pipeline_id {
            Some(p) => {
                set.push("pipeline_key = :pkey");
                req = req.expression_attribute_values(":pkey", s(p.0.to_string()));
            }
            None => remove.push("pipeline_key"),
        }
        if run.status.is_open() {
            set.push("#open = :one");
            req = req.expression_attribute_values(":one", s("1"));
        } else {
            remove.push("#open");
        }
        let mut expr = format!("SET {}", set.join(", "));
        if !remove.is_empty() {
            expr.push_str(&format!(" REMOVE {}", remove.join(", ")));
        }
        let out = req
            .update_expression(expr)
            .return_values(ReturnValue::AllNew)
            .send()
            .await
            .map_err(unavailable)?;
        let mut stored = match out.attributes {
            Some(item) => run_from_item(&item)?,
            None => run.clone(),
        };
        if stored.replied_at.is_some() {
            // A reply recorded meanwhile wins over the status this save carried.
            stored.status = RunStatus::Replied;
        }
        Ok(stored)
    }

    async fn get_run(&self, id: &RequestId) -> Result<Option<RunRecord>, StoreError> {
        match self.get_item(run_key(id)).await? {
            Some(item) => run_from_item(&item).map(Some),
            None => Ok(None),
        }
    }

    async fn find_by_pipeline(
        &self,
        pipeline: PipelineId,
    ) -> Result<Option<RunRecord>, StoreError> {
        let runs = self
            .query_runs(
                BY_PIPELINE_INDEX,
                "pipeline_key = :p",
                vec![(":p", s(pipeline.0.to_string()))],
                vec![],
            )
            .await?;
        Ok(runs.into_iter().max_by_key(|r| r.updated_at))
    }

    async fn due_runs(&self, now: u64, limit: usize) -> Result<Vec<RunRecord>, StoreError> {
        let page = self
            .client
            .query()
            .table_name(&self.table)
            .index_name(OPEN_RUNS_INDEX)
            .key_condition_expression("#open = :one AND due_at <= :now")
            .expression_attribute_names("#open", "open")
            .expression_attribute_values(":one", s("1"))
            .expression_attribute_values(":now", n(now))
            .scan_index_forward(true)
            .limit(limit.clamp(1, 1000) as i32)
            .send()
            .await
            .map_err(unavailable)?;
        let mut out = Vec::new();
        for item in page.items() {
            let rec = run_from_item(item)?;
            // The index is eventually consistent: drop any run that is no longer open.
            if rec.status.is_open() && rec.replied_at.is_none() {
                out.push(rec);
            }
        }
        Ok(out)
    }

    async fn schedule_check(
        &self,
        id: &RequestId,
        due_at: u64,
        checks: u32,
    ) -> Result<(), StoreError> {
        let res = self
            .update_run(id)
            .update_expression("SET due_at = :due, checks = :checks")
            .condition_expression("attribute_exists(pk) AND attribute_not_exists(replied_at)")
            .expression_attribute_values(":due", n(due_at))
            .expression_attribute_values(":checks", n(u64::from(checks)))
            .send()
            .await;
        applied(res).map(|_| ())
    }

    async fn begin_reply(
        &self,
        id: &RequestId,
        now: u64,
        lease_secs: u64,
        response_url: Option<u32>,
        uses: u32,
    ) -> Result<ReplyClaim, StoreError> {
        let open = [RunStatus::Running, RunStatus::WaitingManual];
        // Never more than `max` in all: `uses` are taken only while at most `max - uses` are.
        let response_url = response_url.and_then(|max| max.checked_sub(uses));
        let attempt = |with_url: Option<u32>| {
            let mut set = "SET reply_lease_until = :lease".to_owned();
            let mut cond = "attribute_exists(pk) AND attribute_not_exists(replied_at) \
                 AND #status IN (:running, :waiting) \
                 AND (attribute_not_exists(reply_lease_until) OR reply_lease_until < :now)"
                .to_owned();
            let mut req = self
                .client
                .update_item()
                .table_name(&self.table)
                .key("pk", s(run_key(id)))
                .expression_attribute_names("#status", "status")
                .expression_attribute_values(":lease", n(now + lease_secs))
                .expression_attribute_values(":now", n(now))
                .expression_attribute_values(":running", s(status_str(open[0])))
                .expression_attribute_values(":waiting", s(status_str(open[1])))
                .return_values_on_condition_check_failure(
                    ReturnValuesOnConditionCheckFailure::AllOld,
                );
            if let Some(limit) = with_url {
                set.push_str(
                    ", response_url_uses = if_not_exists(response_url_uses, :zero) + :take",
                );
                cond.push_str(
                    " AND (attribute_not_exists(response_url_uses) OR response_url_uses <= :limit)",
                );
                req = req
                    .expression_attribute_values(":zero", n(0))
                    .expression_attribute_values(":take", n(u64::from(uses)))
                    .expression_attribute_values(":limit", n(u64::from(limit)));
            }
            req.update_expression(set).condition_expression(cond)
        };
        let old = match attempt(response_url).send().await {
            Ok(_) => {
                return Ok(ReplyClaim::Claimed {
                    response_url: response_url.is_some(),
                })
            }
            Err(e) if is_condition_failed(&e) => old_item(e.into_service_error()),
            Err(e) => return Err(unavailable(e)),
        };
        let Some(old) = old else {
            return Ok(ReplyClaim::Done);
        };
        let cur = run_from_item(&old)?;
        if cur.replied_at.is_some() || !cur.status.is_open() {
            return Ok(ReplyClaim::Done);
        }
        if cur.reply_lease_until >= now {
            return Ok(ReplyClaim::Busy);
        }
        if response_url.is_none() {
            return Ok(ReplyClaim::Busy);
        }
        // Only the response_url uses were spent: claim without one.
        match attempt(None).send().await {
            Ok(_) => Ok(ReplyClaim::Claimed {
                response_url: false,
            }),
            Err(e) if is_condition_failed(&e) => Ok(ReplyClaim::Busy),
            Err(e) => Err(unavailable(e)),
        }
    }

    async fn finish_reply(
        &self,
        id: &RequestId,
        now: u64,
        outcome: Option<&JobOutcome>,
    ) -> Result<bool, StoreError> {
        let mut set = "SET replied_at = :now, #status = :replied, updated_at = :now".to_owned();
        let mut req = self
            .update_run(id)
            .condition_expression("attribute_exists(pk) AND attribute_not_exists(replied_at)")
            .expression_attribute_names("#status", "status")
            .expression_attribute_names("#open", "open")
            .expression_attribute_values(":now", n(now))
            .expression_attribute_values(":replied", s(status_str(RunStatus::Replied)));
        if let Some(o) = outcome {
            // In the same write: `history` reads how the job ended with no other request.
            let json = serde_json::to_string(o)
                .map_err(|e| StoreError::Corrupt(format!("encode outcome: {e}")))?;
            set.push_str(", outcome = :outcome");
            req = req.expression_attribute_values(":outcome", s(json));
        }
        let res = req
            .update_expression(format!("{set} REMOVE #open, reply_lease_until"))
            .send()
            .await;
        Ok(applied(res)?.is_some())
    }

    async fn channel_runs(
        &self,
        platform: Platform,
        team: &TeamId,
        channel: &ChannelId,
        limit: usize,
    ) -> Result<Vec<RunRecord>, StoreError> {
        // One page, newest first: `limit` items is far below DynamoDB's 1 MB page.
        let page = self
            .client
            .query()
            .table_name(&self.table)
            .index_name(BY_CHANNEL_INDEX)
            .key_condition_expression("channel_key = :c")
            .expression_attribute_values(":c", s(channel_key(platform, team, channel)))
            .scan_index_forward(false)
            .limit(limit.clamp(1, 1000) as i32)
            .send()
            .await
            .map_err(unavailable)?;
        page.items().iter().map(run_from_item).collect()
    }

    async fn release_reply(&self, id: &RequestId, due_at: u64) -> Result<(), StoreError> {
        let res = self
            .update_run(id)
            .update_expression("SET due_at = :due REMOVE reply_lease_until")
            .condition_expression("attribute_exists(pk) AND attribute_not_exists(replied_at)")
            .expression_attribute_values(":due", n(due_at))
            .send()
            .await;
        applied(res).map(|_| ())
    }

    async fn mark_early_hook(
        &self,
        id: &RequestId,
        now: u64,
    ) -> Result<Option<RunRecord>, StoreError> {
        let res = self
            .update_run(id)
            .update_expression("SET early_hook_at = :now")
            .condition_expression("#status = :dispatching")
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":now", n(now))
            .expression_attribute_values(":dispatching", s(status_str(RunStatus::Dispatching)))
            .return_values(ReturnValue::AllNew)
            .send()
            .await;
        applied(res)?
            .and_then(|out| out.attributes)
            .map(|item| run_from_item(&item))
            .transpose()
    }

    async fn take_response_url_use(
        &self,
        id: &RequestId,
        max: u32,
    ) -> Result<Option<u32>, StoreError> {
        let res = self
            .update_run(id)
            .update_expression("ADD response_url_uses :one")
            .condition_expression(
                "attribute_exists(pk) AND (attribute_not_exists(response_url_uses) OR response_url_uses < :max)",
            )
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":max", n(max as u64))
            .return_values(ReturnValue::UpdatedNew)
            .send()
            .await;
        match res {
            Ok(out) => Ok(Some(
                out.attributes
                    .as_ref()
                    .and_then(|a| get_n(a, "response_url_uses"))
                    .unwrap_or(1) as u32,
            )),
            Err(e) if is_condition_failed(&e) => Ok(None),
            Err(e) => Err(unavailable(e)),
        }
    }

    async fn link_user(&self, link: &UserLink) -> Result<(), StoreError> {
        let mut put = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(user_key(&link.team_id.0, &link.chat_user_id.0)))
            .item("team_id", s(link.team_id.0.clone()))
            .item("chat_user_id", s(link.chat_user_id.0.clone()))
            .item("gitlab_username", s(link.gitlab_username.clone()))
            .item("linked_at", n(link.linked_at))
            .item("expires_at", n(link.linked_at + USER_LINK_TTL_SECS));
        if let Some(id) = link.gitlab_user_id {
            put = put.item("gitlab_user_id", n(id.0));
        }
        if let Some(p) = link.platform {
            put = put.item("platform", s(p.as_str()));
        }
        if let Some(g) = &link.grant {
            put = put
                .item("grant_sealed", s(g.sealed.clone()))
                .item("grant_expires_at", n(g.expires_at))
                .item("grant_version", n(g.version))
                .item("grant_broken", AttributeValue::Bool(g.broken))
                .item("grant_lock_until", n(g.refresh_lock_until));
        }
        put.send().await.map_err(unavailable)?;
        Ok(())
    }

    async fn unlink_user(&self, team_id: &str, chat_user_id: &str) -> Result<bool, StoreError> {
        let out = self
            .client
            .delete_item()
            .table_name(&self.table)
            .key("pk", s(user_key(team_id, chat_user_id)))
            .return_values(ReturnValue::AllOld)
            .send()
            .await
            .map_err(unavailable)?;
        Ok(out.attributes.is_some_and(|a| !a.is_empty()))
    }

    async fn get_user(
        &self,
        team_id: &str,
        chat_user_id: &str,
    ) -> Result<Option<UserLink>, StoreError> {
        match self.get_item(user_key(team_id, chat_user_id)).await? {
            Some(item) => link_from_item(&item).map(Some),
            None => Ok(None),
        }
    }

    async fn list_users(&self) -> Result<Vec<UserLink>, StoreError> {
        let mut out = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let page = self
                .client
                .scan()
                .table_name(&self.table)
                .filter_expression("begins_with(pk, :user)")
                .expression_attribute_values(":user", s("user#"))
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(unavailable)?;
            for item in page.items() {
                out.push(link_from_item(item)?);
            }
            match page.last_evaluated_key {
                Some(k) if !k.is_empty() => start = Some(k),
                _ => break,
            }
        }
        out.sort_by(|a, b| (&a.team_id, &a.chat_user_id).cmp(&(&b.team_id, &b.chat_user_id)));
        Ok(out)
    }

    async fn update_grant(
        &self,
        team_id: &str,
        chat_user_id: &str,
        expected_version: u64,
        grant: &Grant,
    ) -> Result<bool, StoreError> {
        let r = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(user_key(team_id, chat_user_id)))
            .update_expression(
                "SET grant_sealed = :s, grant_expires_at = :e, grant_version = :nv, \
                 grant_broken = :b, grant_lock_until = :l",
            )
            .condition_expression("grant_version = :v")
            .expression_attribute_values(":s", s(grant.sealed.clone()))
            .expression_attribute_values(":e", n(grant.expires_at))
            .expression_attribute_values(":nv", n(grant.version))
            .expression_attribute_values(":b", AttributeValue::Bool(grant.broken))
            .expression_attribute_values(":l", n(grant.refresh_lock_until))
            .expression_attribute_values(":v", n(expected_version))
            .send()
            .await;
        match r {
            Ok(_) => Ok(true),
            Err(e) if is_condition_failed(&e) => Ok(false),
            Err(e) => Err(unavailable(e)),
        }
    }

    async fn lock_grant(
        &self,
        team_id: &str,
        chat_user_id: &str,
        version: u64,
        now: u64,
        until: u64,
    ) -> Result<bool, StoreError> {
        let r = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(user_key(team_id, chat_user_id)))
            .update_expression("SET grant_lock_until = :until")
            .condition_expression(
                "grant_version = :v AND (attribute_not_exists(grant_lock_until) OR grant_lock_until <= :now)",
            )
            .expression_attribute_values(":until", n(until))
            .expression_attribute_values(":v", n(version))
            .expression_attribute_values(":now", n(now))
            .send()
            .await;
        match r {
            Ok(_) => Ok(true),
            Err(e) if is_condition_failed(&e) => Ok(false),
            Err(e) => Err(unavailable(e)),
        }
    }

    async fn put_pending_link(&self, pending: &PendingLink) -> Result<(), StoreError> {
        let json = serde_json::to_string(pending)
            .map_err(|e| StoreError::Corrupt(format!("connect link: {e}")))?;
        self.client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(pending_key(&pending.state)))
            .item("pending", s(json))
            .item("expires_at", n(pending.expires_at))
            .send()
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn claim_action(
        &self,
        id: &RequestId,
        kind: ActionKind,
        taken: &ActionTaken,
    ) -> Result<ActionClaim, StoreError> {
        let attr = action_attr(kind);
        let json = serde_json::to_string(taken)
            .map_err(|e| StoreError::Corrupt(format!("encode action: {e}")))?;
        // A press released between our write and our read leaves nothing to report: try
        // again (a release only follows a refusal, so this ends quickly).
        for _ in 0..3 {
            let res = self
                .update_run(id)
                .update_expression("SET #a = :taken, #k = :key")
                .condition_expression(
                    "attribute_exists(pk) AND (attribute_not_exists(#k) OR #k = :key)",
                )
                .expression_attribute_names("#a", &attr)
                .expression_attribute_names("#k", format!("{attr}_key"))
                .expression_attribute_values(":taken", s(&json))
                .expression_attribute_values(":key", s(&taken.key))
                .return_values(ReturnValue::AllOld)
                .return_values_on_condition_check_failure(
                    ReturnValuesOnConditionCheckFailure::AllOld,
                )
                .send()
                .await;
            let item = match self
                .keyed_write(id, res, &format!("{attr}_key"), &taken.key)
                .await?
            {
                KeyedWrite::Applied { again } => return Ok(ActionClaim::Claimed { again }),
                KeyedWrite::Refused(None) => return Ok(ActionClaim::NoRun),
                KeyedWrite::Refused(Some(item)) => item,
            };
            if let Some(first) = run_from_item(&item)?.actions.get(kind) {
                return Ok(ActionClaim::Taken(first.clone()));
            }
        }
        Err(StoreError::Unavailable(format!(
            "the {} press of run {id} kept changing",
            kind.as_str()
        )))
    }

    async fn release_action(
        &self,
        id: &RequestId,
        kind: ActionKind,
        key: &str,
    ) -> Result<(), StoreError> {
        let attr = action_attr(kind);
        let res = self
            .update_run(id)
            .update_expression("REMOVE #a, #k")
            .condition_expression("#k = :key")
            .expression_attribute_names("#a", &attr)
            .expression_attribute_names("#k", format!("{attr}_key"))
            .expression_attribute_values(":key", s(key))
            .send()
            .await;
        applied(res).map(|_| ())
    }

    async fn set_card(&self, id: &RequestId, card: &CardRef) -> Result<(), StoreError> {
        let json = serde_json::to_string(card)
            .map_err(|e| StoreError::Corrupt(format!("encode card: {e}")))?;
        let res = self
            .update_run(id)
            .update_expression("SET card = :card")
            .condition_expression("attribute_exists(pk)")
            .expression_attribute_values(":card", s(json))
            .send()
            .await;
        applied(res).map(|_| ())
    }

    async fn decide(
        &self,
        id: &RequestId,
        decision: &Decision,
        now: u64,
    ) -> Result<Decided, StoreError> {
        let json = serde_json::to_string(decision)
            .map_err(|e| StoreError::Corrupt(format!("encode decision: {e}")))?;
        let status = match decision.verdict {
            Verdict::Approved => RunStatus::Dispatching,
            _ => RunStatus::Refused,
        };
        let res = self
            .update_run(id)
            .update_expression(
                "SET decision = :d, decision_key = :key, #status = :status, lease_until = :zero, \
                 updated_at = :now REMOVE #open",
            )
            .condition_expression(
                "attribute_exists(pk) AND ((#status = :awaiting AND attribute_not_exists(decision_key)) \
                 OR decision_key = :key)",
            )
            .expression_attribute_names("#status", "status")
            .expression_attribute_names("#open", "open")
            .expression_attribute_values(":d", s(json))
            .expression_attribute_values(":key", s(&decision.key))
            .expression_attribute_values(":status", s(status_str(status)))
            .expression_attribute_values(":awaiting", s(status_str(RunStatus::AwaitingApproval)))
            .expression_attribute_values(":zero", n(0))
            .expression_attribute_values(":now", n(now))
            .return_values(ReturnValue::AllOld)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        let item = match self
            .keyed_write(id, res, "decision_key", &decision.key)
            .await?
        {
            KeyedWrite::Applied { again } => return Ok(Decided::Decided { again }),
            KeyedWrite::Refused(None) => return Ok(Decided::NoRun),
            KeyedWrite::Refused(Some(item)) => item,
        };
        match run_from_item(&item)?.approval.and_then(|a| a.decision) {
            Some(first) => Ok(Decided::Already(first)),
            None => Ok(Decided::NotAwaiting),
        }
    }

    async fn take_pending_link(&self, state: &str) -> Result<Option<PendingLink>, StoreError> {
        let out = self
            .client
            .delete_item()
            .table_name(&self.table)
            .key("pk", s(pending_key(state)))
            .return_values(ReturnValue::AllOld)
            .send()
            .await
            .map_err(unavailable)?;
        let Some(item) = out.attributes.filter(|a| !a.is_empty()) else {
            return Ok(None);
        };
        let json = get_s(&item, "pending")
            .ok_or_else(|| StoreError::Corrupt("connect link without pending".into()))?;
        serde_json::from_str(json)
            .map(Some)
            .map_err(|e| StoreError::Corrupt(format!("connect link: {e}")))
    }
}

/// The old item a failed conditional `UpdateItem` returned, if any.
/// A conditional update made once per click (`claim_action`, `decide`): applied, `again`
/// when the item held this very key before (the same click delivered again); or refused,
/// with the run's item as it is (`None`: no such run).
enum KeyedWrite {
    Applied { again: bool },
    Refused(Option<Item>),
}

impl DynamoStore {
    /// Read a keyed write's outcome (it returned the old item both ways: `ALL_OLD`).
    async fn keyed_write(
        &self,
        id: &RequestId,
        res: Result<
            aws_sdk_dynamodb::operation::update_item::UpdateItemOutput,
            SdkError<
                aws_sdk_dynamodb::operation::update_item::UpdateItemError,
                aws_sdk_dynamodb::config::http::HttpResponse,
            >,
        >,
        key_attr: &str,
        key: &str,
    ) -> Result<KeyedWrite, StoreError> {
        let old = match res {
            Ok(out) => {
                let again = out
                    .attributes
                    .as_ref()
                    .and_then(|a| get_s(a, key_attr))
                    .is_some_and(|k| k == key);
                return Ok(KeyedWrite::Applied { again });
            }
            Err(e) if is_condition_failed(&e) => old_item(e.into_service_error()),
            Err(e) => return Err(unavailable(e)),
        };
        // Older servers do not return the item: read it.
        let old = match old.filter(|i| !i.is_empty()) {
            Some(item) => Some(item),
            None => self.get_item(run_key(id)).await?,
        };
        Ok(KeyedWrite::Refused(old))
    }
}

fn old_item(e: aws_sdk_dynamodb::operation::update_item::UpdateItemError) -> Option<Item> {
    match e {
        aws_sdk_dynamodb::operation::update_item::UpdateItemError::ConditionalCheckFailedException(c) => c.item,
        _ => None,
    }
}

/// A conditional update's outcome: `Some` when applied, `None` when its condition did not hold.
fn applied<O>(
    res: Result<
        O,
        SdkError<
            aws_sdk_dynamodb::operation::update_item::UpdateItemError,
            aws_sdk_dynamodb::config::http::HttpResponse,
        >,
    >,
) -> Result<Option<O>, StoreError> {
    match res {
        Ok(out) => Ok(Some(out)),
        Err(e) if is_condition_failed(&e) => Ok(None),
        Err(e) => Err(unavailable(e)),
    }
}
