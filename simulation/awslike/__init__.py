"""AWS-like behaviour for the local moto server (FR_SIMULATE=aws), where moto's differences from AWS
have bitten us. simulation/motoserver.py installs it; local mode, the tests and the benchmark run on it.

moto starts, stops and terminates instances at once, accepts every state change, has no IAM
propagation delay, counts SQS messages exactly and lets a queue name be reused at once. AWS does
none of that. Here:

- EC2 instances pass through `pending`, `stopping` and `shutting-down` for a while, and
  StartInstances/StopInstances are refused whole, with EC2's IncorrectInstanceState, when any
  instance named is in a state EC2 refuses (start: stopping, shutting-down, terminated; stop:
  pending, shutting-down, terminated). Starting a running instance and stopping a stopped one are
  accepted and change nothing, as on EC2.
- StopInstances with Hibernate=True is refused whole (UnsupportedHibernationConfiguration) when
  an instance named was not launched with HibernationOptions.Configured; otherwise its StateReason
  says Client.UserInitiatedHibernate, as EC2's does, which the local launcher reads to freeze the
  instance's worker instead of stopping it, and to resume it `resume` seconds after it runs again.
- The guest's hibernation agent (aws/amazon-ec2-hibinit-agent) decides whether a hibernation
  happens: within `agent_setup` seconds of its launch (the agent is still making its swap file),
  or within `agent_resume_threshold` seconds of its last resume (acpid.sleep.sh ignores the sleep
  button then), the request is dropped: the instance stays `stopping` until EC2 forces it off
  after `force_stop` seconds, then is `stopped` plainly (journalled as HibernationDropped). So is
  a request sent before a booting guest is up: its `pending`, the OS's `boot` and the agent's
  own boot work (`agent_boot`: swapon, the resume offset, dracut, on every boot).
- A root volume made from the image's snapshot is read lazily from S3 until initialized (EBS
  user guide): an instance's first boot takes `volume_first_read` seconds longer; later boots,
  and resumes, do not. Each boot is journalled (GuestBoot), and the local launcher starts the
  worker when the journal says the boot ends.
- A guest's power-off (an instance-initiated shutdown: the local launcher's, for a worker whose
  dead man's switch tripped, sent as awsiam.guest_shutdown) is no API call: EC2 acts on the
  instance's InstanceInitiatedShutdownBehavior, `stop` (moto's default, as EC2's for an EBS root):
  `stopping` for `stopping` seconds, then `stopped` with StateReason Client.InstanceInitiatedShutdown;
  `terminate`: terminated. Journalled as GuestShutdown with the behaviour.
- EC2 is eventually consistent: an instance is missing from DescribeInstances and
  DescribeInstanceStatus, and calls naming it get InvalidInstanceID.NotFound, for `describe_lag`
  seconds after RunInstances (and `pending` for its `pending` seconds after that). RunInstances
  honours ClientToken (moto launches again): the same token returns the instances it launched
  (IdempotentInstanceTerminated once they are gone).
- LaunchTime is the time of the last start, as on EC2 (moto keeps the first launch's); the
  primary network interface's AttachTime stays the launch's.
- An image's root snapshot is as large as its instance's root volume (moto: always 15 GB), and
  RunInstances refuses a root volume smaller than the snapshot (InvalidBlockDeviceMapping).
- DeregisterImage honours DeleteAssociatedSnapshots (moto ignores it); otherwise its snapshots are
  refused by DeleteSnapshot (InvalidSnapshot.InUse) for `snapshot_release` seconds after it. A
  snapshot deleted either way is still listed by DescribeSnapshots for `snapshot_listing_lag`
  seconds (EC2 is eventually consistent), and DeleteSnapshot of it is InvalidSnapshot.NotFound.
- The default EBS key (GetEbsDefaultKmsKeyId, which simulation/motoserver.py adds to every moto) is
  AWS managed (KeyManager AWS) unless ModifyEbsDefaultKmsKeyId named a key of the account's own; a
  launch of an encrypted volume with such a key needs the key's KMS permissions.
- CreateImage's image is `pending` for `image_create` seconds before it is `available` (moto: at once;
  a first snapshot of a volume takes minutes).
- RunInstances refuses an instance profile created (or given its role) less than
  `profile_propagation` seconds ago, with EC2's "Invalid IAM Instance Profile name".
- SQS's ApproximateNumberOf* attributes report the queue as it was `sqs_count_lag` seconds ago.
- CreateQueue refuses a name deleted less than `queue_name_reuse` seconds ago (QueueDeletedRecently).
- A new queue cannot be used for its first `queue_ready` seconds (CreateQueue reference: "wait at
  least one second after the queue is created"): calls naming it but GetQueueUrl are answered
  QueueDoesNotExist, and a RedrivePolicy naming it as the dead-letter target is refused.
- A message's visibility may be extended to at most 12 hours after the receive that gave its
  receipt handle (ChangeMessageVisibility reference); moto counts them from when it was sent, so
  that a message older than 12 hours could never be hidden again.
- IAM is enforced: a role's calls are checked against its policies (simulation/awsiam.py), and a bucket
  of another account is refused to anyone of this one (AccessDenied; HeadBucket a bare 403), as no
  bucket policy grants it (S3 bucket names are global: CreateBucket says BucketAlreadyExists).
- CreateBucket of a name deleted less than `bucket_name_reuse` seconds ago is refused with
  OperationAborted ("A conflicting conditional operation is currently in progress"), as S3 does
  while the deletion propagates (moto: the name is free at once).
- A Run Command's invocation (GetCommandInvocation) does not exist for its first `invocation_lag`
  seconds (InvocationDoesNotExist, as botocore's CommandExecuted waiter expects). On an instance the
  local stack stands in for the agent of (serve_as_agent: any named web-instance), it is then
  InProgress until the stack reports its outcome (report_invocation); on any other, Success (an
  agent with nothing to run; moto: Success at once, whatever the script did).
- DeleteSecurityGroup is refused (DependencyViolation) while an instance not yet terminated uses it.
- Service Quotas answers for the On-Demand Standard vCPU quota (moto knows only VPC quotas), with
  EC2_STANDARD_VCPUS.
- A DynamoDB table is CREATING for `table_create` seconds after CreateTable, its items refused
  meanwhile (ResourceNotFoundException: "its status might not be ACTIVE"), and DELETING for
  `table_delete` seconds after DeleteTable (moto: ACTIVE at once, gone at once), its name taken until
  then (CreateTable: ResourceInUseException); DeleteTable of a CREATING table is refused
  (ResourceInUseException), of a DELETING one accepted and changes nothing.

Each default below is AWS's documented figure or a public measurement; docs/local-stack.md names the
source of each. FR_SIMULATE_TIME_SCALE multiplies them all (the tests use a small fraction). Every EC2
state-change call, and every refusal, is journalled as a JSON line in FR_STATE_DIR/simulation.jsonl,
so that tests can check what was asked of EC2 and when.
"""

from simulation.awslike.account import report_invocation, serve_as_agent
from simulation.awslike.sim import TIMINGS, guest_boots, read_journal, timings

__all__ = ["TIMINGS", "guest_boots", "install", "read_journal", "report_invocation", "serve_as_agent", "timings"]


def install(scale, state_dir):
    """Patch moto (in this process) to behave as described above."""
    from simulation import awsiam
    from simulation.awslike import account, dynamodb, ec2, images, sqs
    from simulation.awslike.sim import Simulation

    sim = Simulation(scale, state_dir)
    ec2.install_launches(sim)
    ec2.install_state_changes(sim)
    account.install_account(sim)
    sqs.install_sqs(sim)
    sqs.install_new_queues(sim)
    ec2.install_consistency(sim)
    images.install_images(sim)
    dynamodb.install_dynamodb(sim)
    account.install_s3(sim)
    account.install_ssm(sim)
    awsiam.install(sim)
    return sim
