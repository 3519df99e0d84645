//! STS and Organizations: who we are, member accounts entered through a role (hub topology), the organization's accounts.

use super::*;
use crate::ports::CallError;
use tracing::Instrument;

pub(super) async fn account_id(aws: &AwsCloud) -> Result<String, CallError> {
    aws.own_account().await
}

pub(super) async fn in_account(aws: &AwsCloud, account: &str) -> Result<Option<AwsCloud>, CallError> {
    let Some(role) = aws.spoke_role.clone() else { return Ok(None) };
    aws.member(account, &role).await
}

pub(super) async fn writes_in(aws: &AwsCloud, account: &str) -> Result<Option<AwsCloud>, CallError> {
    let Some(role) = aws.spoke_role.as_deref() else { return Ok(None) };
    aws.member(account, &format!("{role}-remediation")).await
}

impl AwsCloud {
    /// sts:AssumeRole into `role_arn`: a cloud acting in the role's account, with CloudTrail
    /// pacing of its own (the budget is per account and region) and this one's call counts.
    /// Returns when its credentials expire.
    pub async fn assume(
        &self,
        role_arn: &str,
        session_name: &str,
        external_id: Option<&str>,
    ) -> Result<(AwsCloud, Option<std::time::SystemTime>), CallError> {
        let out = self
            .sts()
            .assume_role()
            .role_arn(role_arn)
            .role_session_name(session_name)
            .set_external_id(external_id.map(str::to_owned))
            .send()
            .await
            .map_err(|e| call_error("sts:AssumeRole", e))?;
        let c = out.credentials().ok_or_else(|| other("sts:AssumeRole", "response has no credentials"))?;
        let expiry = std::time::SystemTime::try_from(*c.expiration()).ok();
        // The call above proves the account can be entered; the cloud's own credentials come
        // from a provider that assumes the role again whenever they near expiry (a session is
        // at most an hour when it chains from a role), so a scan of many accounts, or a hub
        // that keeps a member's cloud, never runs on expired credentials.
        let provider =
            aws_config::sts::AssumeRoleProvider::builder(role_arn).session_name(session_name).configure(&self.config);
        let provider = match external_id {
            Some(id) => provider.external_id(id),
            None => provider,
        };
        let config = self
            .config
            .to_builder()
            .credentials_provider(aws_credential_types::provider::SharedCredentialsProvider::new(
                provider.build().await,
            ))
            .build();
        let mut cloud = Self::counted(config, self.counter.clone(), self.trail_throttles.clone());
        cloud.trail_rate = self.trail_rate;
        Ok((cloud, expiry))
    }

    pub(super) fn sts(&self) -> aws_sdk_sts::Client {
        aws_sdk_sts::Client::from_conf(
            aws_sdk_sts::config::Builder::from(&self.config)
                .interceptor(self.counter.clone())
                .interceptor(EndpointRecorder)
                .build(),
        )
    }

    /// organizations:ListAccounts, every page: the ids of the ACTIVE accounts (from the
    /// management account or a delegated administrator).
    pub async fn organization_accounts(&self) -> Result<Vec<String>, CallError> {
        let org = aws_sdk_organizations::Client::from_conf(
            aws_sdk_organizations::config::Builder::from(&self.config)
                .interceptor(self.counter.clone())
                .interceptor(EndpointRecorder)
                .build(),
        );
        all_pages(|token| {
            let request = org.list_accounts().set_next_token(token);
            async move {
                let resp = request.send().await.map_err(|e| call_error("organizations:ListAccounts", e))?;
                let active = resp
                    .accounts()
                    .iter()
                    // `State` replaces the deprecated `Status`; either says ACTIVE.
                    .filter(|a| match (a.state(), a.status()) {
                        (Some(s), _) => s.as_str() == "ACTIVE",
                        (None, Some(s)) => s.as_str() == "ACTIVE",
                        (None, None) => false,
                    })
                    .filter_map(|a| a.id().map(str::to_owned))
                    .collect();
                Ok((active, resp.next_token().map(str::to_owned)))
            }
        })
        .await
    }

    /// The account of the credentials in use (GetCallerIdentity once, then remembered).
    pub async fn own_account(&self) -> Result<String, CallError> {
        self.own_account
            .get_or_try_init(|| async {
                let arn = self.caller_arn().await?;
                crate::core::arn::Arn::parse(&arn)
                    .map(|a| a.account().to_owned())
                    .map_err(|e| other("sts:GetCallerIdentity", e.to_string()))
            })
            .await
            .cloned()
    }

    /// The cloud acting in `account` through `role` there (hub topology), credentials cached
    /// until five minutes before they expire; `None` for this cloud's own account.
    pub(super) async fn member(&self, account: &str, role: &str) -> Result<Option<Self>, CallError> {
        if self.own_account().await? == account {
            return Ok(None);
        }
        // Credentials are kept until five minutes before they expire.
        let fresh = |expiry: &Option<std::time::SystemTime>| {
            expiry.is_none_or(|t| t > std::time::SystemTime::now() + std::time::Duration::from_secs(300))
        };
        let cache_key = format!("{account}/{role}");
        if let Some((cloud, expiry)) = self.members.lock().await.get(&cache_key) {
            if fresh(expiry) {
                return Ok(Some(cloud.clone()));
            }
        }
        // The lock is not held across the STS call: one slow account must not hold up the
        // others (two lookups at once may both assume; the later entry wins).
        let partition = crate::core::arn::partition_of_region(&self.default_region().unwrap_or_default());
        let role_arn = format!("arn:{partition}:iam::{account}:role/{role}");
        let (cloud, expiry) = self
            .assume(&role_arn, "kms-launch-doctor-hub", None)
            .instrument(tracing::info_span!("sts.AssumeRole", account))
            .await?;
        self.members.lock().await.insert(cache_key, (cloud.clone(), expiry));
        Ok(Some(cloud))
    }

    /// GetCallerIdentity: the ARN of the credentials in use.
    pub async fn caller_arn(&self) -> Result<String, CallError> {
        let r = self.sts().get_caller_identity().send().await.map_err(|e| call_error("sts:GetCallerIdentity", e))?;
        r.arn().map(str::to_owned).ok_or_else(|| other("sts:GetCallerIdentity", "response has no Arn"))
    }

    /// A session ARN does not carry its role's path: ask IAM for the real ARN, when allowed.
    pub async fn resolve_role_path(&self, role_arn: &str) -> String {
        let Some(name) =
            crate::core::arn::Arn::parse(role_arn).ok().and_then(|a| match crate::core::arn::IamEntity::of(&a) {
                crate::core::arn::IamEntity::Role { name, path } if path == "/" => Some(name),
                _ => None,
            })
        else {
            return role_arn.to_owned();
        };
        match self.iam.get_role().role_name(name).send().await {
            Ok(r) => r.role().map(|r| r.arn().to_owned()).unwrap_or_else(|| role_arn.to_owned()),
            Err(_) => role_arn.to_owned(),
        }
    }
}
