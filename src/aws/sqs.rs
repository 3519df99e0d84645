//! SQS: the Lambda's own queue (defer a message, put an unfinished delivery back).

use super::*;
use crate::ports::CallError;

pub(super) async fn defer(
    aws: &AwsCloud,
    queue_url: &str,
    receipt_handle: &str,
    seconds: i32,
) -> Result<(), CallError> {
    aws.clients(&aws.queue_region(queue_url))
        .sqs
        .change_message_visibility()
        .queue_url(queue_url)
        .receipt_handle(receipt_handle)
        .visibility_timeout(seconds)
        .send()
        .await
        .map_err(|e| call_error("sqs:ChangeMessageVisibility", e))?;
    Ok(())
}

pub(super) async fn send(aws: &AwsCloud, queue_url: &str, body: &str, delay_seconds: i32) -> Result<String, CallError> {
    let resp = aws
        .clients(&aws.queue_region(queue_url))
        .sqs
        .send_message()
        .queue_url(queue_url)
        .message_body(body)
        .delay_seconds(delay_seconds)
        .send()
        .await
        .map_err(|e| call_error("sqs:SendMessage", e))?;
    resp.message_id().map(str::to_owned).ok_or_else(|| other("sqs:SendMessage", "response has no MessageId"))
}

pub(super) async fn queue_url(aws: &AwsCloud, queue_arn: &str) -> Result<String, CallError> {
    let arn = crate::core::arn::Arn::parse(queue_arn).map_err(|e| other("sqs:GetQueueUrl", e.to_string()))?;
    let resp = aws
        .clients(arn.region())
        .sqs
        .get_queue_url()
        .queue_name(arn.resource())
        .queue_owner_aws_account_id(arn.account())
        .send()
        .await
        .map_err(|e| call_error("sqs:GetQueueUrl", e))?;
    resp.queue_url().map(str::to_owned).ok_or_else(|| other("sqs:GetQueueUrl", "response has no QueueUrl"))
}

impl AwsCloud {
    /// The region of a queue URL, whose host names it (`sqs.<region>.amazonaws.com`); ours
    /// for any other host (an emulator's).
    pub(super) fn queue_region(&self, queue_url: &str) -> String {
        queue_url
            .split('/')
            .nth(2)
            .and_then(|host| host.split('.').nth(1))
            .filter(|r| crate::core::event::is_region(r))
            .map(str::to_owned)
            .or_else(|| self.default_region())
            .unwrap_or_default()
    }
}
