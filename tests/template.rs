//! The deployment template and the code agree (issue 6):
//! - each function gets exactly the environment variables its config reads (`…Config::ENV`),
//!   secrets only by reference (`NAME_PARAM`), and its role may read what it is pointed at;
//! - the queue fits the dispatcher (partial batch failures, visibility, redrive count);
//! - the runs table built from the template's own properties, in moto over the DynamoDB wire
//!   protocol, has the shape `DynamoStore` creates and serves the store's round trip, and a
//!   dispatcher configured from the template's environment (secrets resolved through SSM)
//!   starts a pipeline and records the run in it;
//! - the token key (per-person GitLab OAuth tokens at rest) rotates, and only the ingress and
//!   dispatcher roles may seal and open with it, only with the context the sealer sends.

mod support;

use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection,
    ProjectionType, ScalarAttributeType, TimeToLiveSpecification,
};
use chatops_adapters::dynamo::DynamoStore;
use chatops_core::ids::{ChatUserId, PipelineId, TeamId};
use chatops_core::run::{RunRequest, RunStatus};
use chatops_core::store::{DispatchClaim, ReplyClaim, RunStore};
use serde_yaml::Value;
use std::collections::BTreeSet;

const TEMPLATE: &str = include_str!("../infra/template.yaml");

/// Each function's template resource and the variables its code reads.
fn functions() -> Vec<(&'static str, &'static [&'static str])> {
    vec![
        ("IngressFunction", chatops_core::ingress::IngressConfig::ENV),
        (
            "DispatcherFunction",
            chatops_core::dispatcher::DispatcherConfig::ENV,
        ),
        (
            "CompletionFunction",
            chatops_core::completion::CompletionConfig::ENV,
        ),
    ]
}

fn template() -> Value {
    serde_yaml::from_str(TEMPLATE).expect("infra/template.yaml is YAML")
}

/// CloudFormation's short forms arrive as YAML tags (`!Ref X`); long forms as maps.
fn intrinsic<'a>(v: &'a Value, name: &str) -> Option<&'a Value> {
    match v {
        Value::Tagged(t) if t.tag == name => Some(&t.value),
        Value::Mapping(m) if m.len() == 1 => {
            let long = if name == "Ref" {
                "Ref".to_owned()
            } else {
                format!("Fn::{name}")
            };
            m.get(long.as_str())
        }
        _ => None,
    }
}

/// The names a value refers to: `!Ref X`, `!GetAtt X.Arn`, `${X}`/`${X.Arn}` in `!Sub`,
/// through `!If` branches and lists.
fn references(v: &Value, out: &mut BTreeSet<String>) {
    if let Some(Value::String(s)) = intrinsic(v, "Ref") {
        out.insert(s.clone());
    } else if let Some(att) = intrinsic(v, "GetAtt") {
        let s = match att {
            Value::String(s) => s.split('.').next().unwrap_or_default().to_owned(),
            Value::Sequence(xs) => xs.first().and_then(Value::as_str).unwrap_or("").to_owned(),
            _ => String::new(),
        };
        out.insert(s);
    } else if let Some(Value::String(s)) = intrinsic(v, "Sub") {
        for part in s.split("${").skip(1) {
            let name = part.split('}').next().unwrap_or_default();
            out.insert(name.split('.').next().unwrap_or_default().to_owned());
        }
    } else if let Some(Value::Sequence(xs)) = intrinsic(v, "If") {
        for x in xs.iter().skip(1) {
            references(x, out);
        }
    } else if let Value::Sequence(xs) = v {
        for x in xs {
            references(x, out);
        }
    }
    out.remove("AWS::NoValue");
}

fn resource<'a>(t: &'a Value, name: &str) -> &'a Value {
    let r = &t["Resources"][name];
    assert!(!r.is_null(), "template has no resource {name}");
    r
}

fn variables(t: &Value, function: &str) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for vars in [
        &t["Globals"]["Function"]["Environment"]["Variables"],
        &resource(t, function)["Properties"]["Environment"]["Variables"],
    ] {
        if let Value::Mapping(m) = vars {
            for (k, v) in m {
                out.push((k.as_str().expect("variable name").to_owned(), v.clone()));
            }
        }
    }
    out
}

/// Every string the function's role statements name for `action` (references included).
fn granted(t: &Value, function: &str, action: &str) -> BTreeSet<String> {
    let mut role = BTreeSet::new();
    references(&resource(t, function)["Properties"]["Role"], &mut role);
    assert_eq!(
        role.len(),
        1,
        "{function} must use its own role (least privilege)"
    );
    let role = resource(t, role.first().unwrap());
    let mut out = BTreeSet::new();
    for policy in role["Properties"]["Policies"]
        .as_sequence()
        .into_iter()
        .flatten()
    {
        for st in policy["PolicyDocument"]["Statement"]
            .as_sequence()
            .into_iter()
            .flatten()
        {
            let actions: Vec<&str> = match &st["Action"] {
                Value::String(s) => vec![s.as_str()],
                Value::Sequence(xs) => xs.iter().filter_map(Value::as_str).collect(),
                _ => vec![],
            };
            if st["Effect"] == "Allow" && actions.contains(&action) {
                let r = &st["Resource"];
                assert_ne!(r, "*", "{function}: {action} on every resource");
                references(r, &mut out);
                if let Value::Sequence(xs) = r {
                    assert!(!xs.iter().any(|x| x == "*"), "{function}: {action} on *");
                }
            }
        }
    }
    out
}

/// The actions a policy statement names.
fn actions(st: &Value) -> BTreeSet<String> {
    match &st["Action"] {
        Value::String(s) => [s.clone()].into(),
        Value::Sequence(xs) => xs
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        _ => BTreeSet::new(),
    }
}

/// IAM's action wildcards: `*` matches any run of characters, case-insensitively.
fn action_matches(pattern: &str, action: &str) -> bool {
    let (p, a) = (pattern.to_ascii_lowercase(), action.to_ascii_lowercase());
    let parts: Vec<&str> = p.split('*').collect();
    if parts.len() == 1 {
        return p == a;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !a.starts_with(first) || a.len() < first.len() + last.len() || !a.ends_with(last) {
        return false;
    }
    let mut rest = &a[first.len()..a.len() - last.len()];
    for middle in &parts[1..parts.len() - 1] {
        match rest.find(middle) {
            Some(i) => rest = &rest[i + middle.len()..],
            None => return false,
        }
    }
    true
}

fn allows(st: &Value, action: &str) -> bool {
    st["Effect"] == "Allow" && actions(st).iter().any(|p| action_matches(p, action))
}

/// The key policy statements of a template KMS key.
fn key_statements<'a>(t: &'a Value, key: &str) -> &'a [Value] {
    let key = resource(t, key);
    assert_eq!(key["Type"], "AWS::KMS::Key");
    key["Properties"]["KeyPolicy"]["Statement"]
        .as_sequence()
        .map(Vec::as_slice)
        .expect("the key has a policy with statements")
}

/// Every principal a key's policy allows `action`: a template resource by name (`!GetAtt
/// IngressRole.Arn` → `IngressRole`), a `!Sub` by its text, a literal as is.
fn key_users(t: &Value, key: &str, action: &str) -> BTreeSet<String> {
    fn principal(v: &Value, out: &mut BTreeSet<String>) {
        match v {
            Value::String(s) => {
                out.insert(s.clone());
            }
            Value::Sequence(xs) => xs.iter().for_each(|x| principal(x, out)),
            other => {
                if let Some(Value::String(s)) = intrinsic(other, "Sub") {
                    out.insert(s.clone());
                } else {
                    references(other, out);
                }
            }
        }
    }
    let mut out = BTreeSet::new();
    for st in key_statements(t, key)
        .iter()
        .filter(|st| allows(st, action))
    {
        let p = &st["Principal"];
        if p == "*" {
            out.insert("*".to_owned());
        }
        principal(&p["AWS"], &mut out);
        principal(&p["Service"], &mut out);
    }
    out
}

/// The role resource a function runs as.
fn role_of(t: &Value, function: &str) -> String {
    let mut role = BTreeSet::new();
    references(&resource(t, function)["Properties"]["Role"], &mut role);
    role.into_iter()
        .next()
        .expect("the function names its role")
}

#[test]
fn every_function_gets_exactly_the_variables_its_code_reads() {
    let t = template();
    let mut problems = Vec::new();
    for (function, env) in functions() {
        let read: BTreeSet<&str> = env.iter().copied().collect();
        let defined: BTreeSet<String> = variables(&t, function).into_iter().map(|v| v.0).collect();
        for v in &defined {
            if !read.contains(v.as_str()) {
                problems.push(format!("{function}: sets {v}, which its code never reads"));
            }
            if read.contains(format!("{v}_PARAM").as_str()) {
                problems.push(format!(
                    "{function}: passes the secret {v} by value; pass {v}_PARAM (an SSM name)"
                ));
            }
        }
        for v in &read {
            let ok = match v.strip_suffix("_PARAM") {
                // A secret: its SSM reference or (for local use) its value.
                Some(base) => defined.contains(*v) || defined.contains(base),
                None if read.contains(format!("{v}_PARAM").as_str()) => true,
                None => defined.contains(*v),
            };
            if !ok {
                problems.push(format!(
                    "{function}: its code reads {v}, the template omits it"
                ));
            }
        }
    }
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
}

#[test]
fn each_function_may_read_the_parameters_and_resources_it_is_given() {
    let t = template();
    for (function, _) in functions() {
        for (name, value) in variables(&t, function) {
            let mut refs = BTreeSet::new();
            references(&value, &mut refs);
            for r in refs {
                if name.ends_with("_PARAM") {
                    assert!(
                        !t["Parameters"][r.as_str()].is_null(),
                        "{function}: {name} should name an SSM parameter given as a template \
                         parameter, not {r}"
                    );
                    assert!(
                        granted(&t, function, "ssm:GetParameter").contains(&r),
                        "{function}: its role cannot ssm:GetParameter the {r} named by {name}"
                    );
                } else if let Some(kind) = t["Resources"][r.as_str()]["Type"].as_str() {
                    if kind == "AWS::KMS::Key" {
                        // Granted by the key's own policy (see the template's TokenKey).
                        let role = role_of(&t, function);
                        for action in ["kms:Encrypt", "kms:Decrypt"] {
                            assert!(
                                key_users(&t, &r, action).contains(&role)
                                    || granted(&t, function, action).contains(&r),
                                "{function}: {name} names the key {r} but {role} may not \
                                 {action} with it"
                            );
                        }
                        continue;
                    }
                    let action = match kind {
                        "AWS::SQS::Queue" => "sqs:SendMessage",
                        // The audit log: appended to, never read, updated or deleted.
                        "AWS::DynamoDB::Table" if r == "AuditTable" => "dynamodb:PutItem",
                        // The ingress only reads, puts and deletes links.
                        "AWS::DynamoDB::Table" if function == "IngressFunction" => {
                            "dynamodb:GetItem"
                        }
                        "AWS::DynamoDB::Table" => "dynamodb:UpdateItem",
                        other => panic!("{function}: {name} points at a {other}: which grant?"),
                    };
                    assert!(
                        granted(&t, function, action).contains(&r),
                        "{function}: {name} names {r} but its role has no {action} on it"
                    );
                }
            }
        }
    }
}

#[test]
fn the_queue_fits_the_dispatcher() {
    let t = template();
    let dispatcher = &resource(&t, "DispatcherFunction")["Properties"];
    let timeout = dispatcher["Timeout"].as_u64().expect("dispatcher Timeout");
    let event = dispatcher["Events"]
        .as_mapping()
        .and_then(|m| m.values().find(|e| e["Type"] == "SQS"))
        .expect("the dispatcher has an SQS event");
    let mut queue = BTreeSet::new();
    references(&event["Properties"]["Queue"], &mut queue);
    assert_eq!(queue.iter().collect::<Vec<_>>(), ["RunQueue"]);
    let types = &event["Properties"]["FunctionResponseTypes"];
    assert!(
        types
            .as_sequence()
            .is_some_and(|xs| xs.iter().any(|x| x == "ReportBatchItemFailures")),
        "without ReportBatchItemFailures a partial batch response is ignored"
    );
    let batch = event["Properties"]["BatchSize"].as_u64().unwrap_or(10);
    assert!(batch <= 10, "batch {batch}: keep it small");

    let q = &resource(&t, "RunQueue")["Properties"];
    let visibility = q["VisibilityTimeout"].as_u64().expect("VisibilityTimeout");
    assert!(
        visibility >= 6 * timeout,
        "VisibilityTimeout {visibility} < 6 x dispatcher timeout {timeout}"
    );
    // The dispatcher tells the user on its last attempt; the redrive must not come sooner.
    assert_eq!(
        q["RedrivePolicy"]["maxReceiveCount"].as_u64(),
        Some(u64::from(chatops_core::dispatcher::MAX_ATTEMPTS))
    );
    let mut dlq = BTreeSet::new();
    references(&q["RedrivePolicy"]["deadLetterTargetArn"], &mut dlq);
    let dlq = dlq.first().expect("a dead-letter queue");
    assert_eq!(resource(&t, dlq)["Type"], "AWS::SQS::Queue");
}

#[test]
fn outputs_and_the_slack_manifest_point_where_the_code_listens() {
    let t = template();
    let sub = |output: &str| match intrinsic(&t["Outputs"][output]["Value"], "Sub") {
        Some(Value::String(s)) => s.clone(),
        other => panic!("Outputs.{output}: expected !Sub, found {other:?}"),
    };
    let cases = [
        (
            "SlackRequestUrl",
            "IngressFunctionUrl",
            chatops_core::ingress::SLACK_PATH,
        ),
        (
            "MattermostRequestUrl",
            "IngressFunctionUrl",
            chatops_core::ingress::MATTERMOST_PATH,
        ),
        (
            "GitLabWebhookUrl",
            "CompletionFunctionUrl",
            chatops_core::completion::WEBHOOK_PATH,
        ),
    ];
    for (output, url, path) in cases {
        // A Function URL ends in `/`.
        assert_eq!(
            sub(output),
            format!("${{{url}.FunctionUrl}}{}", &path[1..]),
            "{output}"
        );
    }

    let manifest: Value =
        serde_yaml::from_str(include_str!("../infra/slack-app-manifest.yaml")).unwrap();
    let commands = manifest["features"]["slash_commands"]
        .as_sequence()
        .unwrap();
    assert_eq!(commands.len(), 1);
    let chatops = &commands[0];
    assert_eq!(chatops["command"], "/chatops");
    assert_eq!(
        chatops["url"], "REPLACE_WITH_SlackRequestUrl",
        "README step 3 replaces it"
    );
    assert!(chatops["usage_hint"]
        .as_str()
        .is_some_and(|h| h.contains("run <job>")));
    let scopes: BTreeSet<&str> = manifest["oauth_config"]["scopes"]["bot"]
        .as_sequence()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for scope in [
        "commands",
        "chat:write",
        "chat:write.public",
        "files:write",
        "im:write",
    ] {
        assert!(scopes.contains(scope), "manifest lacks scope {scope}");
    }
}

/// Alarms notify only when CloudWatch may use the alarm topic's key: the topic is encrypted
/// with our own key (never the AWS managed `alias/aws/sns`, whose policy cannot grant
/// CloudWatch anything), and that key's policy lets `cloudwatch.amazonaws.com` decrypt and
/// generate data keys.
#[test]
fn the_alarm_topic_key_lets_cloudwatch_publish() {
    let t = template();
    let topic = resource(&t, "AlarmTopic");
    assert_eq!(topic["Type"], "AWS::SNS::Topic");
    let mut key = BTreeSet::new();
    references(&topic["Properties"]["KmsMasterKeyId"], &mut key);
    assert_eq!(
        key.into_iter().collect::<Vec<_>>(),
        vec!["AlarmTopicKey".to_owned()],
        "the alarm topic must be encrypted with the stack's own key, not {:?}",
        topic["Properties"]["KmsMasterKeyId"]
    );
    let key = resource(&t, "AlarmTopicKey");
    assert_eq!(key["Type"], "AWS::KMS::Key");
    assert_eq!(key["Properties"]["EnableKeyRotation"], true);

    let statements = key["Properties"]["KeyPolicy"]["Statement"]
        .as_sequence()
        .expect("the key has a policy with statements");
    let actions = |st: &Value| -> BTreeSet<String> {
        match &st["Action"] {
            Value::String(s) => [s.clone()].into(),
            Value::Sequence(xs) => xs
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect(),
            _ => BTreeSet::new(),
        }
    };
    let cloudwatch: Vec<&Value> = statements
        .iter()
        .filter(|st| st["Effect"] == "Allow")
        .filter(|st| {
            let p = &st["Principal"]["Service"];
            p == "cloudwatch.amazonaws.com"
                || p.as_sequence()
                    .is_some_and(|xs| xs.iter().any(|x| x == "cloudwatch.amazonaws.com"))
        })
        .collect();
    assert!(
        !cloudwatch.is_empty(),
        "no key policy statement allows cloudwatch.amazonaws.com"
    );
    let granted: BTreeSet<String> = cloudwatch.iter().flat_map(|st| actions(st)).collect();
    for needed in ["kms:Decrypt", "kms:GenerateDataKey*"] {
        assert!(
            granted.contains(needed) || granted.contains("kms:*"),
            "CloudWatch lacks {needed} on the alarm topic key (has {granted:?})"
        );
    }
    // Nobody is denied what CloudWatch needs.
    assert!(
        !statements.iter().any(|st| st["Effect"] == "Deny"
            && actions(st)
                .iter()
                .any(|a| a == "kms:Decrypt" || a.starts_with("kms:GenerateDataKey"))),
        "a Deny statement takes back what CloudWatch needs"
    );
    // The account keeps administering its key (a key nobody may manage cannot be deleted).
    assert!(statements.iter().any(|st| st["Effect"] == "Allow"
        && actions(st).contains("kms:*")
        && intrinsic(&st["Principal"]["AWS"], "Sub").is_some()));
}

fn s(v: &Value, what: &str) -> String {
    v.as_str()
        .unwrap_or_else(|| panic!("RunsTable: {what} must be a literal string, found {v:?}"))
        .to_owned()
}

fn key_schema(v: &Value) -> Vec<KeySchemaElement> {
    v.as_sequence()
        .expect("KeySchema list")
        .iter()
        .map(|k| {
            KeySchemaElement::builder()
                .attribute_name(s(&k["AttributeName"], "AttributeName"))
                .key_type(KeyType::from(s(&k["KeyType"], "KeyType").as_str()))
                .build()
                .unwrap()
        })
        .collect()
}

/// `CreateTable` (and TTL) from the template's `AWS::DynamoDB::Table` properties. Properties
/// this does not know fail the test, so the table can never drift unseen.
async fn create_from_template(client: &aws_sdk_dynamodb::Client, name: &str, props: &Value) {
    const NOT_SCHEMA: &[&str] = &[
        "PointInTimeRecoverySpecification",
        "SSESpecification",
        "Tags",
        "DeletionProtectionEnabled",
    ];
    let mut req = client.create_table().table_name(name);
    for (k, v) in props.as_mapping().expect("RunsTable Properties") {
        match k.as_str().unwrap() {
            "BillingMode" => {
                req = req.billing_mode(BillingMode::from(s(v, "BillingMode").as_str()))
            }
            "AttributeDefinitions" => {
                for a in v.as_sequence().unwrap() {
                    req = req.attribute_definitions(
                        AttributeDefinition::builder()
                            .attribute_name(s(&a["AttributeName"], "AttributeName"))
                            .attribute_type(ScalarAttributeType::from(
                                s(&a["AttributeType"], "AttributeType").as_str(),
                            ))
                            .build()
                            .unwrap(),
                    );
                }
            }
            "KeySchema" => req = req.set_key_schema(Some(key_schema(v))),
            "GlobalSecondaryIndexes" => {
                for g in v.as_sequence().unwrap() {
                    let p = &g["Projection"];
                    let mut projection = Projection::builder().projection_type(
                        ProjectionType::from(s(&p["ProjectionType"], "ProjectionType").as_str()),
                    );
                    for a in p["NonKeyAttributes"].as_sequence().into_iter().flatten() {
                        projection = projection.non_key_attributes(s(a, "NonKeyAttributes"));
                    }
                    req = req.global_secondary_indexes(
                        GlobalSecondaryIndex::builder()
                            .index_name(s(&g["IndexName"], "IndexName"))
                            .set_key_schema(Some(key_schema(&g["KeySchema"])))
                            .projection(projection.build())
                            .build()
                            .unwrap(),
                    );
                }
            }
            "TimeToLiveSpecification" => {}
            other if NOT_SCHEMA.contains(&other) => {}
            other => panic!("RunsTable.{other}: teach tests/template.rs what it means"),
        }
    }
    req.send().await.expect("CreateTable from the template");
    let ttl = &props["TimeToLiveSpecification"];
    client
        .update_time_to_live()
        .table_name(name)
        .time_to_live_specification(
            TimeToLiveSpecification::builder()
                .attribute_name(s(&ttl["AttributeName"], "TTL AttributeName"))
                .enabled(ttl["Enabled"].as_bool().expect("TTL Enabled"))
                .build()
                .unwrap(),
        )
        .send()
        .await
        .expect("UpdateTimeToLive from the template");
}

/// Key schema, attribute types and indexes as DynamoDB describes them, order-free.
async fn shape(client: &aws_sdk_dynamodb::Client, name: &str) -> Vec<String> {
    let d = client
        .describe_table()
        .table_name(name)
        .send()
        .await
        .unwrap();
    let t = d.table.unwrap();
    let keys = |ks: &[KeySchemaElement]| {
        ks.iter()
            .map(|k| format!("{}:{}", k.attribute_name, k.key_type.as_str()))
            .collect::<Vec<_>>()
            .join(",")
    };
    let mut out = vec![format!("key {}", keys(t.key_schema()))];
    for a in t.attribute_definitions() {
        out.push(format!(
            "attr {}:{}",
            a.attribute_name,
            a.attribute_type.as_str()
        ));
    }
    for g in t.global_secondary_indexes() {
        let p = g.projection.as_ref();
        out.push(format!(
            "gsi {} {} {:?} {:?}",
            g.index_name().unwrap_or_default(),
            keys(g.key_schema()),
            p.and_then(|p| p.projection_type.clone()),
            p.map(|p| p.non_key_attributes().to_vec()),
        ));
    }
    out.sort();
    out
}

fn request(id: &str) -> RunRequest {
    support::run_request(
        id,
        "hello-world",
        "",
        "https://hooks.slack.com/commands/T1/1/x",
        1_700_000_000,
    )
}

#[tokio::test]
async fn the_table_built_from_the_template_serves_the_store() {
    let t = template();
    let table = resource(&t, "RunsTable");
    assert_eq!(table["Type"], "AWS::DynamoDB::Table");
    let props = &table["Properties"];
    assert_eq!(props["BillingMode"], "PAY_PER_REQUEST");
    assert_eq!(
        props["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"],
        true
    );

    let cfg = support::aws_config().await;
    let client = aws_sdk_dynamodb::Client::new(&cfg);
    let name = support::unique_name("runs-template");
    create_from_template(&client, &name, props).await;

    // The same shape as the store's own schema (what its tests run against).
    let reference = support::unique_name("runs-store");
    DynamoStore::create_table(&client, &reference)
        .await
        .unwrap();
    assert_eq!(
        shape(&client, &name).await,
        shape(&client, &reference).await
    );
    let ttl = client
        .describe_time_to_live()
        .table_name(&name)
        .send()
        .await
        .unwrap()
        .time_to_live_description
        .unwrap();
    assert_eq!(ttl.attribute_name(), Some("expires_at"));

    // The store's round trip on it: claim, record the pipeline, find it by pipeline and
    // among the open runs, claim the reply once.
    let store = DynamoStore::new(client, &name);
    let now = 1_700_000_100;
    let req = request(&support::unique_name("req"));
    let mut run = match store.claim_dispatch(&req, now, 60).await.unwrap() {
        DispatchClaim::Claimed(run) => *run,
        other => panic!("a new request is claimed, got {other:?}"),
    };
    assert_eq!(
        store.claim_dispatch(&req, now + 1, 60).await.unwrap(),
        DispatchClaim::Busy
    );
    let pipeline = PipelineId(now);
    run.status = RunStatus::Running;
    run.pipeline_id = Some(pipeline);
    run.updated_at = now + 2;
    store.save_run(&run).await.unwrap();

    let found = store
        .find_by_pipeline(pipeline)
        .await
        .unwrap()
        .expect("by-pipeline index");
    assert_eq!(found.request.request_id, req.request_id);
    let open = store.due_runs(now + 10, 100).await.unwrap();
    assert!(
        open.iter().any(|r| r.request.request_id == req.request_id),
        "open-runs index"
    );
    let in_channel = store
        .channel_runs(
            req.platform,
            &req.team_id,
            &req.channel_id,
            chatops_core::status::HISTORY_LIMIT,
        )
        .await
        .unwrap();
    assert_eq!(
        in_channel
            .iter()
            .map(|r| &r.request.request_id)
            .collect::<Vec<_>>(),
        [&req.request_id],
        "by-channel index"
    );

    assert_eq!(
        store
            .begin_reply(&req.request_id, now + 20, 60, Some(5), 1)
            .await
            .unwrap(),
        ReplyClaim::Claimed { response_url: true }
    );
    assert!(store
        .finish_reply(&req.request_id, now + 20, None)
        .await
        .unwrap());
    assert!(!store
        .finish_reply(&req.request_id, now + 21, None)
        .await
        .unwrap());
    let open = store.due_runs(now + 30, 100).await.unwrap();
    assert!(!open.iter().any(|r| r.request.request_id == req.request_id));
}

#[tokio::test]
async fn a_dispatcher_configured_by_the_template_dispatches_into_its_table() {
    use chatops_adapters::aws::SsmSecrets;
    use chatops_core::config::Env;
    use chatops_core::dispatcher::DispatcherConfig;
    use chatops_core::run::UserLink;
    use chatops_sim::gitlab::{GitLabStandin, StandinCiJob};
    use chatops_sim::slack::SlackStandIn;

    let t = template();
    let cfg = support::aws_config().await;
    let ddb = aws_sdk_dynamodb::Client::new(&cfg);
    let table = support::unique_name("runs-dispatch");
    create_from_template(&ddb, &table, &resource(&t, "RunsTable")["Properties"]).await;
    let audit_table = support::unique_name("audit-dispatch");
    create_from_template(
        &ddb,
        &audit_table,
        &resource(&t, "AuditTable")["Properties"],
    )
    .await;

    let gl = GitLabStandin::start().await;
    let g = gl.state();
    g.add_project(42, "ops/deploy");
    g.add_user(7, "alice");
    g.set_member(42, 7, 30);
    g.set_ci_jobs(42, vec![StandinCiJob::chat("hello-world")]);
    let slack = SlackStandIn::start("xoxb-template-test").await.unwrap();

    // Secrets go where the template says: SecureString parameters named by its parameters.
    let ssm = aws_sdk_ssm::Client::new(&cfg);
    let put_secret = |value: String| {
        let ssm = ssm.clone();
        async move {
            let name = format!("/{}", support::unique_name("chatops"));
            ssm.put_parameter()
                .name(&name)
                .value(value)
                .r#type(aws_sdk_ssm::types::ParameterType::SecureString)
                .send()
                .await
                .unwrap();
            name
        }
    };

    // The environment the template gives the dispatcher, each parameter or resource it
    // refers to stood in for by this test's; `!If` ones stay unset, as in a default deploy.
    let mut env = Env::default();
    for (name, value) in variables(&t, "DispatcherFunction") {
        let value = match intrinsic(&value, "If").and_then(|v| v.as_sequence()) {
            // A default deploy has no OAuth application: the "else" side applies.
            Some(branches)
                if branches.first().and_then(|c| c.as_str()) == Some("HasGitLabOAuthClientId") =>
            {
                branches[2].clone()
            }
            Some(_) => continue,
            None => value,
        };
        if intrinsic(&value, "Ref").is_some_and(|r| r.as_str() == Some("AWS::NoValue")) {
            continue;
        }
        let mut refs = BTreeSet::new();
        references(&value, &mut refs);
        let target = refs.into_iter().next().unwrap_or_default();
        let v = match target.as_str() {
            "RunsTable" => table.clone(),
            "GitLabUrl" => gl.url(),
            "GitLabProject" => "ops/deploy".to_owned(),
            "GitLabTokenParam" => put_secret(gl.token()).await,
            "SlackBotTokenParam" => put_secret("xoxb-template-test".to_owned()).await,
            "SlackApiUrl" => slack.api_url(),
            "ConfigVersion" => "1".to_owned(),
            "SweepAfterSecs" => "300".to_owned(),
            "AuditTable" => audit_table.clone(),
            "AuditInput" => "hash".to_owned(),
            "AuditRetentionDays" => "400".to_owned(),
            "TokenKey" => {
                let kms = chatops_adapters::aws::kms(&cfg);
                let key = kms.create_key().send().await.unwrap();
                key.key_metadata.and_then(|m| m.arn).expect("a key ARN")
            }
            other => panic!("DispatcherFunction.{name} = {other}: teach this test its value"),
        };
        env.set(name, v);
    }
    let config = DispatcherConfig::from_env(&env, &SsmSecrets::new(cfg.clone()))
        .await
        .expect("the template's environment configures the dispatcher");
    let dispatcher = chatops_adapters::services::aws_dispatcher(config, &cfg).unwrap();

    let store = DynamoStore::new(ddb, &table);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    store
        .link_user(&UserLink {
            team_id: TeamId::new("T1"),
            chat_user_id: ChatUserId::new("U1"),
            gitlab_username: "alice".into(),
            gitlab_user_id: None,
            linked_at: now,
            platform: None,
            grant: None,
        })
        .await
        .unwrap();
    let mut req = request(&support::unique_name("req"));
    req.response_url = slack.response_url("T1");
    req.received_at = now;
    dispatcher
        .handle_message(&serde_json::to_string(&req).unwrap(), 1)
        .await
        .expect("dispatched");

    let pipelines = g.pipelines();
    assert_eq!(pipelines.len(), 1, "one pipeline started");
    assert_eq!(pipelines[0].variable("CHATOPS_JOB"), Some("hello-world"));
    let run = store
        .get_run(&req.request_id)
        .await
        .unwrap()
        .expect("run recorded");
    assert_eq!(run.status, RunStatus::Running);
    assert_eq!(run.pipeline_id, Some(PipelineId(pipelines[0].id)));
    let by_pipeline = store
        .find_by_pipeline(PipelineId(pipelines[0].id))
        .await
        .unwrap();
    assert_eq!(
        by_pipeline.map(|r| r.request.request_id),
        Some(req.request_id.clone())
    );
    let open = store.due_runs(now + 3600, 100).await.unwrap();
    assert!(open.iter().any(|r| r.request.request_id == req.request_id));
    let posts = slack
        .wait_for_posts(1, std::time::Duration::from_secs(5))
        .await;
    assert!(
        !posts.is_empty(),
        "the channel was told the pipeline started"
    );

    // The same message again (SQS delivers at least once): nothing new.
    dispatcher
        .handle_message(&serde_json::to_string(&req).unwrap(), 2)
        .await
        .unwrap();
    assert_eq!(g.pipelines().len(), 1);

    // The created pipeline was audited, once, into the template's audit table.
    let audit = chatops_adapters::audit::DynamoAudit::new(
        aws_sdk_dynamodb::Client::new(&cfg),
        &audit_table,
        400,
    );
    use chatops_core::audit::AuditLog;
    let now_ms = chatops_core::audit::now_ms();
    let entries = audit
        .read(now_ms - 3_600_000, now_ms + 60_000)
        .await
        .unwrap();
    let created: Vec<_> = entries
        .iter()
        .filter(|e| e.event.kind() == "pipeline_created")
        .collect();
    assert_eq!(created.len(), 1, "{entries:?}");
    assert_eq!(created[0].gitlab_user.as_deref(), Some("alice"));
    assert_eq!(created[0].pipeline_id, Some(PipelineId(pipelines[0].id)));
}

/// A message parked in the dead-letter queue is never silent: the dispatcher tells the person
/// on the last receive, and the DLQ alarm fires on the first parked message (any visible
/// message, missing data is fine) and notifies the alarm topic.
#[test]
fn the_dead_letter_alarm_fires_on_the_first_parked_message() {
    let t = template();
    let alarm = resource(&t, "DeadLetterQueueAlarm");
    let p = &alarm["Properties"];
    assert_eq!(p["Namespace"], "AWS/SQS");
    assert_eq!(p["MetricName"], "ApproximateNumberOfMessagesVisible");
    let mut queue = BTreeSet::new();
    references(&p["Dimensions"][0]["Value"], &mut queue);
    assert!(queue.contains("RunDeadLetterQueue"), "{queue:?}");
    assert_eq!(p["ComparisonOperator"], "GreaterThanThreshold");
    assert_eq!(p["Threshold"].as_f64(), Some(0.0), "one message is enough");
    assert_eq!(p["EvaluationPeriods"].as_u64(), Some(1));
    assert_eq!(p["TreatMissingData"], "notBreaching");
    let mut actions = BTreeSet::new();
    references(&p["AlarmActions"], &mut actions);
    assert!(actions.contains("AlarmTopic"), "{actions:?}");
    // And the queue sends there only after the dispatcher's last attempt.
    let q = resource(&t, "RunQueue");
    assert_eq!(
        q["Properties"]["RedrivePolicy"]["maxReceiveCount"].as_u64(),
        Some(u64::from(chatops_core::dispatcher::MAX_ATTEMPTS))
    );
}

/// People's GitLab OAuth tokens are sealed with the stack's own key: it rotates, only the
/// ingress and dispatcher roles may Encrypt/Decrypt with it (in its key policy, which no IAM
/// policy elsewhere can widen), only with the context the sealer sends, and the completion
/// function can do neither.
#[test]
fn only_the_ingress_and_dispatcher_seal_and_open_tokens() {
    let t = template();
    let key = resource(&t, "TokenKey");
    assert_eq!(key["Type"], "AWS::KMS::Key");
    assert_eq!(key["Properties"]["EnableKeyRotation"], true);
    let alias = resource(&t, "TokenKeyAlias");
    assert_eq!(alias["Type"], "AWS::KMS::Alias");
    let mut target = BTreeSet::new();
    references(&alias["Properties"]["TargetKeyId"], &mut target);
    assert_eq!(target.into_iter().collect::<Vec<_>>(), ["TokenKey"]);

    let users: BTreeSet<String> = ["IngressRole", "DispatcherRole"].map(str::to_owned).into();
    for action in ["kms:Encrypt", "kms:Decrypt"] {
        assert_eq!(
            key_users(&t, "TokenKey", action),
            users,
            "who may {action} with the token key"
        );
    }
    // The roles may do nothing else with it (no grants, no re-encryption, no data keys).
    for st in key_statements(&t, "TokenKey") {
        let mut principals = BTreeSet::new();
        references(&st["Principal"]["AWS"], &mut principals);
        if !principals.is_disjoint(&users) {
            assert_eq!(
                actions(st),
                ["kms:Decrypt".to_owned(), "kms:Encrypt".to_owned()].into(),
                "the function roles' statement"
            );
        }
    }
    // Each statement letting a role use the key requires exactly our encryption context keys.
    for st in key_statements(&t, "TokenKey")
        .iter()
        .filter(|st| allows(st, "kms:Decrypt") || allows(st, "kms:Encrypt"))
    {
        let c = &st["Condition"];
        let keys: BTreeSet<&str> = c["ForAllValues:StringEquals"]["kms:EncryptionContextKeys"]
            .as_sequence()
            .expect("ForAllValues:StringEquals kms:EncryptionContextKeys")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        assert_eq!(keys, ["platform", "team", "user"].into());
        for k in ["platform", "team", "user"] {
            assert_eq!(
                c["Null"][format!("kms:EncryptionContext:{k}").as_str()],
                "false",
                "the context key {k} must be present"
            );
        }
    }
    // The account administers the key (a key nobody may manage cannot be deleted).
    assert!(key_statements(&t, "TokenKey").iter().any(|st| {
        allows(st, "kms:PutKeyPolicy")
            && allows(st, "kms:ScheduleKeyDeletion")
            && intrinsic(&st["Principal"]["AWS"], "Sub")
                .and_then(Value::as_str)
                .is_some_and(|s| s.ends_with(":root"))
    }));
    // No Deny statement, no other door: no role in the template gets KMS use through IAM on
    // this key or on every key, and the completion role gets nothing at all.
    for role in ["IngressRole", "DispatcherRole", "CompletionRole"] {
        let function = role.replace("Role", "Function");
        for action in ["kms:Encrypt", "kms:Decrypt"] {
            let g = granted(&t, &function, action);
            assert!(
                !g.contains("TokenKey"),
                "{role}: {action} through IAM; the key policy grants it"
            );
        }
    }
    let completion = resource(&t, "CompletionRole");
    for policy in completion["Properties"]["Policies"]
        .as_sequence()
        .into_iter()
        .flatten()
    {
        for st in policy["PolicyDocument"]["Statement"]
            .as_sequence()
            .into_iter()
            .flatten()
        {
            for action in ["kms:Encrypt", "kms:Decrypt"] {
                assert!(!allows(st, action), "CompletionRole may {action}");
            }
        }
    }
    assert!(variables(&t, "CompletionFunction")
        .iter()
        .all(|(name, _)| name != "TOKEN_KEY_ID"));
}

/// The ingress and dispatcher get the token key and the OAuth application; optional ones
/// set nothing when empty, and the client secret only by reference (an SSM name).
#[test]
fn ingress_and_dispatcher_get_the_oauth_settings() {
    let t = template();
    for p in [
        "GitLabOAuthClientId",
        "GitLabOAuthClientSecretParam",
        "PublicBaseUrl",
    ] {
        assert_eq!(t["Parameters"][p]["Default"], "", "{p} is optional");
    }
    for function in ["IngressFunction", "DispatcherFunction"] {
        let vars: std::collections::BTreeMap<String, Value> =
            variables(&t, function).into_iter().collect();
        let refers = |name: &str| {
            let v = vars
                .get(name)
                .unwrap_or_else(|| panic!("{function} lacks {name}"));
            let mut refs = BTreeSet::new();
            references(v, &mut refs);
            (intrinsic(v, "If").is_some(), refs)
        };
        assert_eq!(
            refers("TOKEN_KEY_ID"),
            (false, ["TokenKey".to_owned()].into())
        );
        assert!(
            matches!(intrinsic(&vars["TOKEN_KEY_ID"], "GetAtt"), Some(Value::String(s)) if s == "TokenKey.Arn"),
            "{function}: TOKEN_KEY_ID is the key ARN (Decrypt compares it with the ciphertext's key)"
        );
        for (name, param) in [
            ("GITLAB_OAUTH_CLIENT_ID", "GitLabOAuthClientId"),
            (
                "GITLAB_OAUTH_CLIENT_SECRET_PARAM",
                "GitLabOAuthClientSecretParam",
            ),
            ("PUBLIC_BASE_URL", "PublicBaseUrl"),
        ] {
            assert_eq!(
                refers(name),
                (true, [param.to_owned()].into()),
                "{function}: {name} is set from {param} only when it is not empty"
            );
        }
        assert!(
            !vars.contains_key("GITLAB_OAUTH_CLIENT_SECRET"),
            "by reference only"
        );
        assert!(granted(&t, function, "ssm:GetParameter").contains("GitLabOAuthClientSecretParam"));
    }
    let completion: BTreeSet<String> = variables(&t, "CompletionFunction")
        .into_iter()
        .map(|v| v.0)
        .collect();
    for name in ["TOKEN_KEY_ID", "GITLAB_OAUTH_CLIENT_SECRET_PARAM"] {
        assert!(!completion.contains(name), "completion gets {name}");
    }
}

/// The resources a statement's `Resource` names, one value each (a list flattened, `!If`
/// branches both taken).
fn resource_values(r: &Value) -> Vec<Value> {
    if let Some(Value::Sequence(xs)) = intrinsic(r, "If") {
        return xs.iter().skip(1).flat_map(resource_values).collect();
    }
    match r {
        Value::Sequence(xs) => xs.iter().flat_map(resource_values).collect(),
        other => vec![other.clone()],
    }
}

/// Whether one resource value covers the table `table` itself (not only its indexes): `*`,
/// `!GetAtt T.Arn`, or a `!Sub` of `${T.Arn}` followed only by wildcards.
fn covers_table(r: &Value, table: &str) -> bool {
    if r == "*" {
        return true;
    }
    if let Some(att) = intrinsic(r, "GetAtt") {
        let name = match att {
            Value::String(s) => s.clone(),
            Value::Sequence(xs) => xs
                .iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join("."),
            _ => String::new(),
        };
        return name == format!("{table}.Arn");
    }
    if let Some(Value::String(s)) = intrinsic(r, "Sub") {
        let arn = format!("${{{table}.Arn}}");
        if let Some(rest) = s.strip_prefix(&arn) {
            return rest.chars().all(|c| c == '*');
        }
        // An ARN spelled out with a table-name wildcard could also cover it.
        return s.contains(":table/") && s.ends_with('*');
    }
    false
}

/// Whether the function's role allows `action` on the table `table` (IAM's action wildcards,
/// resources by reference or `*`). Roles here have no Deny statements (checked).
fn role_allows_on_table(t: &Value, function: &str, action: &str, table: &str) -> bool {
    let role = resource(t, &role_of(t, function));
    let mut allowed = false;
    for policy in role["Properties"]["Policies"]
        .as_sequence()
        .into_iter()
        .flatten()
    {
        for st in policy["PolicyDocument"]["Statement"]
            .as_sequence()
            .into_iter()
            .flatten()
        {
            assert_ne!(st["Effect"], "Deny", "{function}: reason about Deny first");
            assert!(
                st["NotAction"].is_null() && st["NotResource"].is_null(),
                "{function}: NotAction/NotResource"
            );
            if allows(st, action)
                && resource_values(&st["Resource"])
                    .iter()
                    .any(|r| covers_table(r, table))
            {
                allowed = true;
            }
        }
    }
    allowed
}

/// The audit log is append-only for the functions: each of the three roles may `PutItem` on
/// the audit table and nothing else, so an attempt to update, overwrite through a batch or
/// transaction, delete, or even read an entry with the functions' policy is denied. The table
/// keeps entries `AuditRetentionDays` (TTL), has point-in-time recovery, outlives the stack,
/// and has the shape `DynamoAudit` writes and reads.
#[tokio::test]
async fn the_audit_table_is_append_only_for_the_functions() {
    let t = template();
    let table = resource(&t, "AuditTable");
    assert_eq!(table["Type"], "AWS::DynamoDB::Table");
    assert_eq!(table["DeletionPolicy"], "Retain");
    assert_eq!(table["UpdateReplacePolicy"], "Retain");
    let props = &table["Properties"];
    assert_eq!(props["BillingMode"], "PAY_PER_REQUEST");
    assert_eq!(
        props["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"],
        true
    );
    assert_eq!(
        props["TimeToLiveSpecification"]["AttributeName"],
        "expires_at"
    );
    assert_eq!(props["TimeToLiveSpecification"]["Enabled"], true);
    assert_eq!(
        t["Parameters"]["AuditRetentionDays"]["Default"].as_u64(),
        Some(400)
    );
    assert_eq!(t["Parameters"]["AuditInput"]["Default"], "hash");
    let mut out = BTreeSet::new();
    references(&t["Outputs"]["AuditTableName"]["Value"], &mut out);
    assert_eq!(out.into_iter().collect::<Vec<_>>(), ["AuditTable"]);

    let denied = [
        "dynamodb:UpdateItem",
        "dynamodb:DeleteItem",
        "dynamodb:BatchWriteItem",
        "dynamodb:TransactWriteItems",
        "dynamodb:PartiQLUpdate",
        "dynamodb:PartiQLDelete",
        "dynamodb:PartiQLInsert",
        "dynamodb:DeleteTable",
        "dynamodb:UpdateTable",
        "dynamodb:UpdateTimeToLive",
        "dynamodb:UpdateContinuousBackups",
        "dynamodb:RestoreTableToPointInTime",
        "dynamodb:GetItem",
        "dynamodb:Query",
        "dynamodb:Scan",
    ];
    for function in [
        "IngressFunction",
        "DispatcherFunction",
        "CompletionFunction",
    ] {
        assert!(
            role_allows_on_table(&t, function, "dynamodb:PutItem", "AuditTable"),
            "{function} cannot append to the audit log"
        );
        for action in denied {
            assert!(
                !role_allows_on_table(&t, function, action, "AuditTable"),
                "{function} may {action} on the audit table"
            );
        }
        // The evaluator sees grants: the runs table's own are found.
        assert!(role_allows_on_table(
            &t,
            function,
            "dynamodb:GetItem",
            "RunsTable"
        ));
        // Every audit entry is also a JSON log line Logs Insights can query.
        assert_eq!(
            resource(&t, function)["Properties"]["LoggingConfig"]["LogFormat"],
            "JSON",
            "{function}"
        );
    }
    // The evaluator would see a wildcard grant for what it is.
    let mut widened = t.clone();
    let st = &mut widened["Resources"]["CompletionRole"]["Properties"]["Policies"][0]
        ["PolicyDocument"]["Statement"];
    if let Value::Sequence(xs) = st {
        xs.push(
            serde_yaml::from_str("{Effect: Allow, Action: 'dynamodb:*Item', Resource: '*'}")
                .unwrap(),
        );
    }
    assert!(role_allows_on_table(
        &widened,
        "CompletionFunction",
        "dynamodb:DeleteItem",
        "AuditTable"
    ));

    // The shape DynamoAudit uses, and on it: an entry is never overwritten.
    let cfg = support::aws_config().await;
    let client = aws_sdk_dynamodb::Client::new(&cfg);
    let name = support::unique_name("audit-template");
    create_from_template(&client, &name, props).await;
    let reference = support::unique_name("audit-code");
    chatops_adapters::audit::DynamoAudit::create_table(&client, &reference)
        .await
        .unwrap();
    assert_eq!(
        shape(&client, &name).await,
        shape(&client, &reference).await
    );
    use chatops_core::audit::{AuditEntry, AuditError, AuditEvent, AuditLog};
    let audit = chatops_adapters::audit::DynamoAudit::new(client, &name, 400);
    let entry = AuditEntry::new(AuditEvent::CommandReceived {
        command: "run".into(),
    });
    audit.append(&entry).await.unwrap();
    let mut forged = entry.clone();
    forged.job = Some("something else".into());
    assert!(matches!(
        audit.append(&forged).await,
        Err(AuditError::Exists(_))
    ));
    let back = audit.read(entry.at_ms, entry.at_ms).await.unwrap();
    assert_eq!(back, vec![entry]);
}

/// `status` and `history` read a channel's runs through the `by-channel` index: the ingress
/// may Query that index and nothing else of the runs table's indexes.
#[test]
fn the_ingress_queries_only_the_channel_index() {
    let t = template();
    let role = resource(&t, &role_of(&t, "IngressFunction"));
    let mut resources = Vec::new();
    for policy in role["Properties"]["Policies"]
        .as_sequence()
        .into_iter()
        .flatten()
    {
        for st in policy["PolicyDocument"]["Statement"]
            .as_sequence()
            .into_iter()
            .flatten()
        {
            if allows(st, "dynamodb:Query") || allows(st, "dynamodb:Scan") {
                assert!(!allows(st, "dynamodb:Scan"), "the ingress never scans");
                resources.extend(resource_values(&st["Resource"]));
            }
        }
    }
    let want = format!(
        "${{RunsTable.Arn}}/index/{}",
        chatops_adapters::dynamo::BY_CHANNEL_INDEX
    );
    assert_eq!(resources.len(), 1, "{resources:?}");
    assert_eq!(
        intrinsic(&resources[0], "Sub").and_then(Value::as_str),
        Some(want.as_str())
    );
    assert!(!role_allows_on_table(
        &t,
        "IngressFunction",
        "dynamodb:Query",
        "RunsTable"
    ));
}
