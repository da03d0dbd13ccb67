"""Findings of checkov and cfn-guard (AWS Control Tower rules) that these constructs accept,
each with its reason, written into the resources' metadata where both scanners read them:

    Metadata:
      checkov: {skip: [{id: CKV_AWS_158, comment: "..."}]}
      guard: {SuppressedRules: [cloudwatch_log_group_encrypted_check], Reasons: {...: "..."}}

template.yaml carries the same suppressions on the same kinds of resources (tests/deploy check
that the two agree and that both templates scan clean with them).
"""

from __future__ import annotations

from aws_cdk import CfnResource
from constructs import IConstruct

__all__ = ["SUPPRESSIONS", "l1", "suppress"]

_LOG_KMS = (
    "CloudWatch Logs encrypts every log group at rest; these logs hold no secret (API keys "
    "are secretsmanager: references, never logged) and a customer managed key would add a "
    "key policy for the logs service and a monthly cost"
)
_LOG_RETENTION = (
    "Retention is an option (LogRetentionDays / log_retention, 30 days by default: "
    "application logs, not audit logs); accounts that enforce CT.CLOUDWATCH.PR.2 deploy "
    "with 365 or more, which the Control Tower hook checks on the deployed value"
)
_PERMISSION_SOURCE = (
    "SourceArn is set: each invoke permission is scoped to its API and route with an "
    "Fn::Sub/Fn::Join the rule cannot read statically; the Control Tower hook sees the "
    "resolved ARN"
)

#: Resource kind -> {"checkov": {check id: reason}, "guard": {rule name: reason}}.
SUPPRESSIONS: dict[str, dict[str, dict[str, str]]] = {
    "log_group": {
        "checkov": {"CKV_AWS_158": _LOG_KMS},
        "guard": {
            "cloudwatch_log_group_encrypted_check": _LOG_KMS,
            "cloudwatch_log_group_retention_period_check": _LOG_RETENTION,
        },
    },
    "function": {
        "checkov": {
            "CKV_AWS_116": (
                "Only the HTTP API invokes these functions, synchronously; a dead-letter "
                "queue receives failures of asynchronous invocations only"
            ),
            "CKV_AWS_115": (
                "Reserved concurrency is an option (ReservedConcurrency / "
                "reserved_concurrency), unreserved by default: an account at the minimum "
                "concurrency limit cannot reserve any; the HTTP API's throttling caps the rate"
            ),
            "CKV_AWS_173": (
                "The environment holds no secret: provider API keys are secretsmanager: "
                "references the library resolves at run time, and Lambda encrypts environment "
                "variables at rest with an AWS managed key"
            ),
        },
        "guard": {},
    },
    # template.yaml only: SAM copies a function's Metadata to the resources it generates
    # from it (its invoke permissions), and its VpcConfig comes from a list parameter.
    "sam_function": {
        "checkov": {},
        "guard": {
            "lambda_inside_vpc_check": (
                "The functions run in the VPC: VpcConfig.SubnetIds is the SubnetIds parameter "
                "(a list), which the rule cannot read statically"
            ),
            "lambda_function_public_access_prohibited_check": _PERMISSION_SOURCE,
        },
    },
    "permission": {
        "checkov": {},
        "guard": {"lambda_function_public_access_prohibited_check": _PERMISSION_SOURCE},
    },
    "secret": {
        "checkov": {
            "CKV_AWS_149": (
                "The password of the disabled default cache user (off -@all), which nothing "
                "ever reads; the AWS managed key aws/secretsmanager protects it enough"
            ),
        },
        "guard": {},
    },
    "topic": {
        "checkov": {
            "CKV_AWS_26": (
                "CloudWatch alarms cannot publish to a topic encrypted with the AWS managed "
                "key aws/sns, and a customer managed key needs a key policy for "
                "cloudwatch.amazonaws.com; the notifications carry only the alarm's name and "
                "state"
            ),
        },
        "guard": {},
    },
}


def suppress(resource: CfnResource, kind: str) -> None:
    """Write the suppressions of ``kind`` into ``resource``'s metadata."""
    rules = SUPPRESSIONS[kind]
    if rules["checkov"]:
        resource.add_metadata(
            "checkov",
            {"skip": [{"id": key, "comment": reason} for key, reason in rules["checkov"].items()]},
        )
    if rules["guard"]:
        resource.add_metadata(
            "guard", {"SuppressedRules": list(rules["guard"]), "Reasons": dict(rules["guard"])}
        )


def l1(construct: IConstruct) -> CfnResource:
    """The CloudFormation resource behind an L2 construct."""
    resource = construct.node.default_child
    assert isinstance(resource, CfnResource), construct
    return resource
