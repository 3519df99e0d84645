//! KMS: key metadata, key policies, aliases, tags.

use super::*;
use crate::core::arn::KeyArn;
use crate::core::facts::{KeyMetadata, KeyState};
use crate::ports::{CallError, FailureKind};

pub(super) async fn describe_key(aws: &AwsCloud, key: &KeyArn) -> Result<KeyMetadata, CallError> {
    let resp = aws
        .clients(key.region())
        .kms
        .describe_key()
        .key_id(key.to_string())
        .send()
        .await
        .map_err(|e| call_error("kms:DescribeKey", e))?;
    let m = resp.key_metadata().ok_or(CallError {
        call: "kms:DescribeKey",
        kind: FailureKind::Other,
        message: "response has no KeyMetadata".to_owned(),
    })?;
    Ok(KeyMetadata {
        state: m.key_state().map(|s| KeyState::parse(s.as_str())).unwrap_or(KeyState::Other("unknown".to_owned())),
        manager: m.key_manager().map(|k| k.as_str().to_owned()),
        origin: m.origin().map(|o| o.as_str().to_owned()),
        deletion_date: m.deletion_date().and_then(to_chrono),
        valid_to: m.valid_to().and_then(to_chrono),
        custom_key_store_id: m.custom_key_store_id().map(str::to_owned),
    })
}

pub(super) async fn get_key_policy(aws: &AwsCloud, key: &KeyArn) -> Result<String, CallError> {
    let resp = aws
        .clients(key.region())
        .kms
        .get_key_policy()
        .key_id(key.to_string())
        .policy_name("default")
        .send()
        .await
        .map_err(|e| call_error("kms:GetKeyPolicy", e))?;
    resp.policy().map(str::to_owned).ok_or(CallError {
        call: "kms:GetKeyPolicy",
        kind: FailureKind::Other,
        message: "response has no Policy".to_owned(),
    })
}

pub(super) async fn list_aliases(aws: &AwsCloud, key: &KeyArn) -> Result<Vec<String>, CallError> {
    let kms = aws.clients(key.region()).kms;
    all_pages(|marker| {
        let req = kms.list_aliases().key_id(key.to_string()).set_marker(marker);
        async move {
            let r = req.send().await.map_err(|e| call_error("kms:ListAliases", e))?;
            let names = r.aliases().iter().filter_map(|a| a.alias_name().map(str::to_owned)).collect();
            Ok((names, r.truncated().then(|| r.next_marker().map(str::to_owned)).flatten()))
        }
    })
    .await
}

pub(super) async fn key_arn(aws: &AwsCloud, region: &str, key_id: &str) -> Result<KeyArn, CallError> {
    let resp = aws
        .clients(region)
        .kms
        .describe_key()
        .key_id(key_id)
        .send()
        .await
        .map_err(|e| call_error("kms:DescribeKey", e))?;
    let arn = resp
        .key_metadata()
        .and_then(|m| m.arn())
        .ok_or_else(|| other("kms:DescribeKey", "response has no KeyMetadata.Arn"))?;
    KeyArn::parse(arn).map_err(|e| other("kms:DescribeKey", e.to_string()))
}

pub(super) async fn key_tags(aws: &AwsCloud, key: &KeyArn) -> Result<Vec<(String, String)>, CallError> {
    let kms = aws.clients(key.region()).kms;
    all_pages(|marker| {
        let req = kms.list_resource_tags().key_id(key.to_string()).set_marker(marker);
        async move {
            let r = req.send().await.map_err(|e| call_error("kms:ListResourceTags", e))?;
            let tags = r.tags().iter().map(|t| (t.tag_key().to_owned(), t.tag_value().to_owned())).collect();
            Ok((tags, r.truncated().then(|| r.next_marker().map(str::to_owned)).flatten()))
        }
    })
    .await
}
