"""``BreakerStore``: the ElastiCache Serverless (Valkey) cache that holds the fleet's breakers."""

from __future__ import annotations

import re
from typing import Any

from aws_cdk import Names, RemovalPolicy, Token
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_elasticache as elasticache
from aws_cdk import aws_iam as iam
from aws_cdk import aws_secretsmanager as secretsmanager
from constructs import Construct

from ._scanners import l1, suppress

__all__ = [
    "APP_COMMANDS",
    "STATUS_COMMANDS",
    "VALKEY_PORTS",
    "BreakerStore",
    "access_string",
    "events_channel",
]

#: Serverless caches answer on 6379 (reads and writes) and 6380 (reads from the local AZ).
VALKEY_PORTS = ec2.Port.tcp_range(6379, 6380)

# The cache name prefixes the user and user-group ids, which are limited to 40 characters.
_CACHE_NAME = re.compile(r"^[a-z][a-z0-9-]{0,29}$")
# No braces or glob characters: the prefix goes verbatim into the user's key patterns.
_KEY_PREFIX = re.compile(r"^[A-Za-z0-9_.:-]{1,100}$")


#: The commands flexiai sends, cluster variant (ElastiCache Serverless is cluster mode).
APP_COMMANDS = (
    "-@all +evalsha +script|load +time +get +set +mget +publish +subscribe +ping "
    "+cluster|slots +command"
)
#: The read-only user's commands (GET /breakers and ``flexiai status``): MGET and TIME for the
#: snapshot, PING for the store's health, SCAN, PTTL and TYPE for the status table, SUBSCRIBE
#: for a pub/sub reader; no SET, PUBLISH or scripts.
STATUS_COMMANDS = (
    "-@all +get +mget +time +ping +scan +pttl +type +subscribe +cluster|slots +command"
)


def events_channel(key_prefix: str) -> str:
    """The pub/sub channel of a store (``FLEXIAI_SYNC_CHANNEL``): ``<prefix>:events``."""
    return f"{key_prefix}:events"


def access_string(key_prefix: str, commands: str) -> str:
    """An ElastiCache access string: the breaker state keys under ``key_prefix`` (with and
    without the cluster hash tag the library adds) and nothing else of the prefix, its
    event channel, and ``commands`` (docs/redis-least-privilege.md). The channel
    matters: Redis 7 and Valkey give a new user no channel (``acl-pubsub-default
    resetchannels``), and PUBLISH outside its channels fails, even inside a script."""
    keys = f"~{{{key_prefix}}}:state:* ~{key_prefix}:state:*"
    return f"on {keys} &{events_channel(key_prefix)} {commands}"


class BreakerStore(Construct):
    """An ElastiCache Serverless cache (Valkey) for flexiai's shared circuit breakers.

    Serverless caches are cluster-mode only and always use TLS; the library adds the
    ``{prefix}`` hash tag so its multi-key commands stay in one slot.

    With ``iam_auth`` (the default) the cache gets a user group holding two IAM-authenticated
    users, the app user (``user_id``: reads and writes breakers, publishes events) and a
    read-only status user (``status_user_id``), and a disabled ``default`` user, so nothing
    reaches the data without ``elasticache:Connect``; call :meth:`grant_connect` for each
    client role (``read_only=True`` for the status user). Without it the cache keeps
    ElastiCache's default user and only its security group and TLS protect it.

    Clients must also be let through the security group: ``store.allow_from(function)``.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        vpc: ec2.IVpc,
        vpc_subnets: ec2.SubnetSelection | None = None,
        cache_name: str | None = None,
        major_engine_version: str = "8",
        iam_auth: bool = True,
        max_data_storage_gb: int = 1,
        max_ecpu_per_second: int = 5000,
        key_prefix: str = "flexiai",
        removal_policy: RemovalPolicy = RemovalPolicy.DESTROY,
    ) -> None:
        super().__init__(scope, construct_id)
        name = cache_name or Names.unique_resource_name(self, max_length=30).lower()
        if Token.is_unresolved(name) or not _CACHE_NAME.match(name):
            raise ValueError(
                f"cache_name {name!r} must be a literal of 1-30 characters: a lowercase letter, "
                "then lowercase letters, digits or hyphens"
            )
        if not _KEY_PREFIX.match(key_prefix):
            raise ValueError(
                f"key_prefix {key_prefix!r} must be 1-100 letters, digits or _.:- (the library "
                "adds the cluster hash tag itself)"
            )
        if major_engine_version not in ("7", "8"):
            raise ValueError("major_engine_version must be '7' or '8' (IAM auth needs 7.2+)")

        self.cache_name = name
        self.iam_auth = iam_auth
        self.key_prefix = key_prefix
        self.channel = events_channel(key_prefix)

        self.security_group = ec2.SecurityGroup(
            self,
            "SecurityGroup",
            vpc=vpc,
            description="flexiai breaker store (Valkey from the flexiai functions only)",
            allow_all_outbound=False,
        )
        self.connections = ec2.Connections(
            security_groups=[self.security_group], default_port=VALKEY_PORTS
        )

        self.user_id: str | None = None
        self.user_arn: str | None = None
        self.status_user_id: str | None = None
        self.status_user_arn: str | None = None
        self.user_group: elasticache.CfnUserGroup | None = None
        if iam_auth:
            self.user_group = self._create_users(name, key_prefix, removal_policy)

        subnets = vpc.select_subnets(**_selection_kwargs(vpc_subnets))
        self.cache = elasticache.CfnServerlessCache(
            self,
            "Cache",
            serverless_cache_name=name,
            description="flexiai fleet-wide circuit breaker state",
            engine="valkey",
            major_engine_version=major_engine_version,
            cache_usage_limits=elasticache.CfnServerlessCache.CacheUsageLimitsProperty(
                data_storage=elasticache.CfnServerlessCache.DataStorageProperty(
                    maximum=max_data_storage_gb, unit="GB"
                ),
                ecpu_per_second=elasticache.CfnServerlessCache.ECPUPerSecondProperty(
                    maximum=max_ecpu_per_second
                ),
            ),
            subnet_ids=subnets.subnet_ids,
            security_group_ids=[self.security_group.security_group_id],
            user_group_id=self.user_group.ref if self.user_group is not None else None,
        )
        # Breaker state is rebuilt by the fleet within one failure window: nothing to keep.
        self.cache.apply_removal_policy(removal_policy)

        self.endpoint_address: str = self.cache.attr_endpoint_address
        self.endpoint_port: str = self.cache.attr_endpoint_port
        self.cache_arn: str = self.cache.attr_arn

    def _create_users(
        self, name: str, key_prefix: str, removal_policy: RemovalPolicy
    ) -> elasticache.CfnUserGroup:
        # A user group must hold a user named "default", and a Valkey group admits only
        # password or IAM users: the default is a disabled password user.
        password = secretsmanager.Secret(
            self,
            "DefaultUserPassword",
            description="Password of the disabled 'default' user of the flexiai breaker store",
            generate_secret_string=secretsmanager.SecretStringGenerator(
                password_length=32, exclude_punctuation=True
            ),
        )
        password.apply_removal_policy(removal_policy)
        suppress(l1(password), "secret")
        default_user = elasticache.CfnUser(
            self,
            "DefaultUser",
            engine="valkey",
            user_id=f"{name}-default",
            user_name="default",
            access_string="off -@all",
            authentication_mode={
                "Type": "password",
                # A dynamic reference: the password never appears in the template.
                "Passwords": [password.secret_value.unsafe_unwrap()],
            },
        )
        # IAM users need UserId == UserName.
        self.user_id = f"{name}-app"
        app_user = elasticache.CfnUser(
            self,
            "AppUser",
            engine="valkey",
            user_id=self.user_id,
            user_name=self.user_id,
            authentication_mode={"Type": "iam"},
            # Keys under the prefix, the event channel, and only the commands flexiai sends
            # (the README's least-privilege ACL, cluster variant).
            access_string=access_string(key_prefix, APP_COMMANDS),
        )
        self.user_arn = app_user.attr_arn
        self.status_user_id = f"{name}-status"
        status_user = elasticache.CfnUser(
            self,
            "StatusUser",
            engine="valkey",
            user_id=self.status_user_id,
            user_name=self.status_user_id,
            authentication_mode={"Type": "iam"},
            access_string=access_string(key_prefix, STATUS_COMMANDS),
        )
        self.status_user_arn = status_user.attr_arn
        return elasticache.CfnUserGroup(
            self,
            "UserGroup",
            engine="valkey",
            user_group_id=f"{name}-users",
            user_ids=[default_user.ref, app_user.ref, status_user.ref],
        )

    def grant_connect(self, grantee: iam.IGrantable, *, read_only: bool = False) -> iam.Grant:
        """Let ``grantee`` authenticate as the store's app user, or with ``read_only`` as its
        status user (a no-op without IAM auth)."""
        if not self.iam_auth:
            return iam.Grant.drop(grantee, "connect to a breaker store without IAM auth")
        user_arn = self.status_user_arn if read_only else self.user_arn
        assert user_arn is not None
        return iam.Grant.add_to_principal(
            grantee=grantee,
            actions=["elasticache:Connect"],
            resource_arns=[self.cache_arn, user_arn],
        )

    def allow_from(self, peer: ec2.IConnectable) -> None:
        """Open 6379 and 6380 to ``peer``'s security groups, and nothing else."""
        self.connections.allow_default_port_from(
            peer, "Valkey primary (6379) and reader (6380) ports from flexiai"
        )

    def environment(self, *, read_only: bool = False) -> dict[str, str]:
        """The ``FLEXIAI_SYNC_*`` variables a client of this store needs (``read_only``: one
        that authenticates as the status user)."""
        env = {
            "FLEXIAI_SYNC_ENABLED": "true",
            "FLEXIAI_SYNC_BACKEND": "redis",
            "FLEXIAI_SYNC_REDIS_HOST": self.endpoint_address,
            "FLEXIAI_SYNC_REDIS_PORT": self.endpoint_port,
            "FLEXIAI_SYNC_REDIS_SSL": "true",
            "FLEXIAI_SYNC_REDIS_CLUSTER": "true",
            "FLEXIAI_SYNC_REDIS_IAM_AUTH": "true" if self.iam_auth else "false",
            "FLEXIAI_SYNC_KEY_PREFIX": self.key_prefix,
            "FLEXIAI_SYNC_CHANNEL": self.channel,
        }
        if self.iam_auth:
            user_id = self.status_user_id if read_only else self.user_id
            assert user_id is not None
            env["FLEXIAI_SYNC_REDIS_USERNAME"] = user_id
            env["FLEXIAI_SYNC_REDIS_IAM_CACHE_NAME"] = self.cache_name
        return env


def _selection_kwargs(selection: ec2.SubnetSelection | None) -> dict[str, Any]:
    """``vpc.select_subnets`` takes keywords, not a ``SubnetSelection``."""
    if selection is None:
        return {}
    return {
        key: getattr(selection, key)
        for key in (
            "availability_zones",
            "one_per_az",
            "subnet_filters",
            "subnet_group_name",
            "subnets",
            "subnet_type",
        )
        if getattr(selection, key) is not None
    }
