"""What an operator is told, and a ceiling on the bill: one SNS topic (`{prefix}-alarms`, an address
subscribed to it with FR_ALARM_EMAIL), the alarms that matter, and an AWS Budget (FR_BUDGET_USD).

The alarms (alarm_definitions), each notifying the topic when it goes to ALARM and back to OK:
- `{prefix}-dead-letters`: a message on the dead-letter queue (SQS's own metric);
- `{prefix}-request-age`: the request queue's oldest message older than FR_REQUEST_TIMEOUT (nobody
  answers: no member runs, or every one is failing);
- `{prefix}-autoscaler-failing`: the autoscaler's steps failing (StepFailures, which it publishes:
  scaling/metrics.py);
- `{prefix}-autoscaler-silent`: no StepFailures sample for 3 minutes: the autoscaler, or its
  host, is gone (its members stop themselves meanwhile: core/heartbeat.py). It is in ALARM too
  while no web host runs (provisioning without --with-web);
- `{prefix}-members-not-stopped`: more than FR_MAX_INSTANCES members not stopped for 5 minutes
  (MembersNotStopped, published likewise; a burst back to back has up to 2 x FR_MAX_INSTANCES
  pending, running or stopping for the tens of seconds a stop takes, never for minutes).
The budget: the month's cost of what is tagged fr-prefix={prefix} (a cost allocation tag, which
the account's owner activates once in the Billing console), with alerts to the topic at 80% of the
limit actual and 100% forecast.
"""

import json

from core.settings import PREFIX_TAG
from scaling.metrics import METRICS, NAMESPACE  # noqa: F401 (METRICS: the alarms' metrics)


def topic_name(config):
    return f"{config.prefix}-alarms"


def budget_name(config):
    return f"{config.prefix}-monthly"


def alarm_names(config):
    return [definition["AlarmName"] for definition in alarm_definitions(config, topic_arn=None)]


def alarm_definitions(config, topic_arn):
    """PutMetricAlarm's arguments for each alarm (pure)."""
    ours = [{"Name": "Prefix", "Value": config.prefix}]

    def alarm(kind, namespace, metric, dimensions, statistic, comparison, threshold, periods, why, missing="notBreaching"):
        return dict(
            AlarmName=f"{config.prefix}-{kind}",
            AlarmDescription=why,
            Namespace=namespace,
            MetricName=metric,
            Dimensions=dimensions,
            Statistic=statistic,
            Period=60,
            EvaluationPeriods=periods,
            Threshold=threshold,
            ComparisonOperator=comparison,
            TreatMissingData=missing,
            AlarmActions=[topic_arn],
            OKActions=[topic_arn],
            Tags=[{"Key": PREFIX_TAG, "Value": config.prefix}],
        )

    return [
        alarm(
            "dead-letters",
            "AWS/SQS",
            "ApproximateNumberOfMessagesVisible",
            [{"Name": "QueueName", "Value": config.dead_letter_queue}],
            "Maximum",
            "GreaterThanThreshold",
            0,
            1,
            "requests that failed every receive: read them on the dead-letter queue",
        ),
        alarm(
            "request-age",
            "AWS/SQS",
            "ApproximateAgeOfOldestMessage",
            [{"Name": "QueueName", "Value": config.request_queue}],
            "Maximum",
            "GreaterThanThreshold",
            config.request_timeout,
            1,
            "requests older than FR_REQUEST_TIMEOUT wait: nobody answers",
        ),
        alarm(
            "autoscaler-failing",
            NAMESPACE,
            "StepFailures",
            ours,
            "Sum",
            "GreaterThanOrEqualToThreshold",
            1,
            1,
            "the autoscaler's steps fail: see its log group (event=step_failed)",
        ),
        alarm(
            "autoscaler-silent",
            NAMESPACE,
            "StepFailures",
            ours,
            "SampleCount",
            "LessThanThreshold",
            1,
            3,
            "the autoscaler has published nothing for 3 minutes: its web host, or it, is gone",
            missing="breaching",
        ),
        alarm(
            "members-not-stopped",
            NAMESPACE,
            "MembersNotStopped",
            ours,
            "Minimum",
            "GreaterThanThreshold",
            config.max_instances,
            5,
            "more members than FR_MAX_INSTANCES not stopped for 5 minutes: a stop stuck, or an instance started by hand",
        ),
    ]


def topic_policy(topic_arn, account):
    """Who may publish to the topic: CloudWatch's alarms and AWS Budgets, for this account only."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"Service": ["cloudwatch.amazonaws.com", "budgets.amazonaws.com"]},
                "Action": "sns:Publish",
                "Resource": topic_arn,
                "Condition": {"StringEquals": {"aws:SourceAccount": account}},
            }
        ],
    }


def budget(config):
    """CreateBudget's Budget: the month's unblended cost of what is tagged ours, capped at FR_BUDGET_USD."""
    return {
        "BudgetName": budget_name(config),
        "BudgetLimit": {"Amount": f"{config.budget_usd:.2f}", "Unit": "USD"},
        "BudgetType": "COST",
        "TimeUnit": "MONTHLY",
        "CostFilters": {"TagKeyValue": [f"user:{PREFIX_TAG}${config.prefix}"]},
    }


def budget_alerts(topic_arn):
    """The budget's notifications: 80% of the limit spent, 100% forecast; to the topic."""
    return [
        {
            "Notification": {"NotificationType": kind, "ComparisonOperator": "GREATER_THAN", "Threshold": percent},
            "Subscribers": [{"SubscriptionType": "SNS", "Address": topic_arn}],
        }
        for kind, percent in (("ACTUAL", 80.0), ("FORECASTED", 100.0))
    ]


class AlarmSteps:
    """Provisioner's steps for the topic, the alarms and the budget (and their removal)."""

    def topic_arn(self):
        return f"arn:aws:sns:{self.config.region}:{self.account()}:{topic_name(self.config)}"

    def topic_exists(self):
        pages = self.sns.get_paginator("list_topics").paginate()
        return any(t["TopicArn"] == self.topic_arn() for page in pages for t in page.get("Topics", []))

    def ensure_topic(self):
        exists = self.topic_exists()
        arn = self.sns.create_topic(Name=topic_name(self.config), Tags=[{"Key": PREFIX_TAG, "Value": self.config.prefix}])[
            "TopicArn"
        ]
        self.sns.set_topic_attributes(
            TopicArn=arn, AttributeName="Policy", AttributeValue=json.dumps(topic_policy(arn, self.account()))
        )
        email = self.config.alarm_email
        if email:
            subscribed = self.sns.list_subscriptions_by_topic(TopicArn=arn).get("Subscriptions", [])
            if not any(s["Endpoint"] == email for s in subscribed):
                self.sns.subscribe(TopicArn=arn, Protocol="email", Endpoint=email)
                return "subscribed", f"SNS topic {topic_name(self.config)}: {email} subscribed (AWS mails it a link to confirm)"
        return "exists" if exists else "created"

    def ensure_alarms(self):
        for definition in alarm_definitions(self.config, self.topic_arn()):
            self.cloudwatch.put_metric_alarm(**definition)
        return "put"

    def ensure_budget(self):
        """The budget; one of another limit is made again (delete, create: moto has no UpdateBudget)."""
        account, wanted, state = self.account(), budget(self.config), "created"
        try:
            found = self.budgets.describe_budget(AccountId=account, BudgetName=budget_name(self.config))["Budget"]
            if float(found["BudgetLimit"]["Amount"]) == float(wanted["BudgetLimit"]["Amount"]):
                return "exists"
            self.budgets.delete_budget(AccountId=account, BudgetName=budget_name(self.config))
            state = "updated"
        except self.budgets.exceptions.NotFoundException:
            pass
        self.budgets.create_budget(AccountId=account, Budget=wanted, NotificationsWithSubscribers=budget_alerts(self.topic_arn()))
        return state

    def alarm_steps(self):
        config = self.config
        email = f", {config.alarm_email} subscribed" if config.alarm_email else " (FR_ALARM_EMAIL: none subscribed)"
        steps = [
            (f"SNS topic {topic_name(config)}{email}", self.ensure_topic),
            (f"CloudWatch alarms {', '.join(alarm_names(config))}, to the topic", self.ensure_alarms),
        ]
        if config.budget_usd:
            what = f"budget {budget_name(config)}: ${config.budget_usd:g} a month of what is tagged {PREFIX_TAG}={config.prefix}"
            steps.append((f"{what} (80% spent, 100% forecast: to the topic)", self.ensure_budget))
        else:
            steps.append(("budget: FR_BUDGET_USD unset", None))
        return steps

    def alarm_removals(self):
        return [
            ("CloudWatch alarms", self._remove_alarms),
            (f"budget {budget_name(self.config)} (if any)", self._remove_budget),
            (f"SNS topic {topic_name(self.config)} and its subscriptions", self._remove_topic),
        ]

    def _remove_alarms(self):
        names = [a["AlarmName"] for a in self.cloudwatch.describe_alarms(AlarmNames=alarm_names(self.config))["MetricAlarms"]]
        if names:
            self.cloudwatch.delete_alarms(AlarmNames=names)
            self.out(f"{'removed':<12} alarms {', '.join(names)}")

    def _remove_budget(self):
        try:
            self.budgets.delete_budget(AccountId=self.account(), BudgetName=budget_name(self.config))
            self.out(f"{'removed':<12} budget {budget_name(self.config)}")
        except self.budgets.exceptions.NotFoundException:
            pass

    def _remove_topic(self):
        if self.topic_exists():
            self.sns.delete_topic(TopicArn=self.topic_arn())
            self.out(f"{'removed':<12} SNS topic {topic_name(self.config)}")

    def remaining_alarms(self):
        left = [
            ("alarm", a["AlarmName"])
            for a in self.cloudwatch.describe_alarms(AlarmNames=alarm_names(self.config))["MetricAlarms"]
        ]
        left += [("topic", self.topic_arn())] if self.topic_exists() else []
        return left
