"""The app tier's image: baked from an instance set up with `setup.sh app`; found, kept or removed
with its snapshots."""

import math
from functools import partial

from core import cloud, settings
from deploy.base import INSTANCE_PATIENCE, ProvisionError, refused_with
from scaling import pool

BAKE_NAME = "app-bake-instance"
# An image is available once its snapshots are made: minutes, longer for a first snapshot of a
# volume (AWS documents no bound). A run that runs out of patience is finished by the next.
IMAGE_PATIENCE = 3600
IMAGE_POLL = 2


class ImageSteps:
    """Provisioner's steps for the app image."""

    def _images(self, remove):
        """Our app-tier images (and their snapshots) cost storage while they exist: removed, or named.

        DeregisterImage deletes the image's snapshots itself (DeleteAssociatedSnapshots): deleted
        after it, one by one, they are refused as in use for a moment, and once the image is gone
        only their tag finds them. So snapshots tagged ours and left (by an older teardown, or one
        stopped half-way) are deleted too, waiting out that refusal."""
        images = self.ec2.describe_images(
            Owners=["self"], Filters=[{"Name": f"tag:{settings.PREFIX_TAG}", "Values": [self.config.prefix]}]
        )["Images"]
        for image in images:
            snapshots = [m["Ebs"]["SnapshotId"] for m in image.get("BlockDeviceMappings", []) if "Ebs" in m]
            if not remove:
                self.out(
                    f"{'kept':<12} image {image['ImageId']} and snapshots {snapshots} (billed as EBS "
                    "snapshot storage; ./setup.sh teardown --images removes them)"
                )
                continue
            self.ec2.deregister_image(ImageId=image["ImageId"], DeleteAssociatedSnapshots=True)
            self.out(f"{'removed':<12} image {image['ImageId']} and snapshots {snapshots}")
        if not remove:
            return
        for snapshot in self.ec2.describe_snapshots(
            OwnerIds=["self"], Filters=[{"Name": f"tag:{settings.PREFIX_TAG}", "Values": [self.config.prefix]}]
        )["Snapshots"]:
            try:
                cloud.while_refused(
                    lambda: self.ec2.delete_snapshot(SnapshotId=snapshot["SnapshotId"]),
                    refused_with("InvalidSnapshot.InUse"),
                    INSTANCE_PATIENCE,
                    self.waiting,
                )
            except self.ec2.exceptions.ClientError as e:
                # Deleted already (by DeregisterImage just now): EC2 may list it for a while yet.
                if cloud.error_code(e) != "InvalidSnapshot.NotFound":
                    raise
                continue
            self.out(f"{'removed':<12} snapshot {snapshot['SnapshotId']} (left by an earlier run)")

    def bake_ami(self, instance_id):
        """An AMI of an instance set up with `setup.sh app`, the app-tier image for FR_AMI_ID: its id
        (None in a dry run).

        The instance must not be launched for hibernation (EC2 makes no image of one: the pool is
        launched for it, from this image). It is tagged ours first (so that teardown finds it,
        should this stop half-way), stopped (its worker would otherwise take requests, and the
        image is made of a quiet disk), imaged, and terminated once the image is available."""
        name = f"{self.config.prefix}-app-tier-{instance_id}"
        self.run_plan(
            [
                (f"tag {instance_id} {settings.PREFIX_TAG}={self.config.prefix}, stop it", partial(self._bake_stop, instance_id)),
                (f"image {name} from {instance_id}, waited on until available", partial(self._bake_image, instance_id, name)),
                (f"terminate {instance_id}", partial(self._bake_done, instance_id)),
            ],
            "would",
        )
        return self.baked

    def _bake_stop(self, instance_id):
        (reservation,) = self.ec2.describe_instances(InstanceIds=[instance_id])["Reservations"]
        if reservation["Instances"][0].get("HibernationOptions", {}).get("Configured"):
            raise ProvisionError(
                f"error: {instance_id} was launched for hibernation, and EC2 makes no image of such "
                "an instance: run ./setup.sh app on an instance launched without it"
            )
        self.ec2.create_tags(Resources=[instance_id], Tags=pool.tags(self.config, BAKE_NAME))
        self.ec2.stop_instances(InstanceIds=[instance_id])
        pool.wait_for(self.ec2, [instance_id], ["stopped"], INSTANCE_PATIENCE)
        return "stopped"

    def _bake_image(self, instance_id, name):
        from botocore.exceptions import WaiterError

        # An image of that name made by an earlier run (stopped, or out of patience) is waited for again.
        made = self.ec2.describe_images(Owners=["self"], Filters=[{"Name": "name", "Values": [name]}])["Images"]
        if made:
            image = made[0]["ImageId"]
        else:
            image = self.ec2.create_image(
                InstanceId=instance_id,
                Name=name,
                TagSpecifications=[{"ResourceType": "image", "Tags": pool.tags(self.config, name)}],
            )["ImageId"]
        try:
            self.ec2.get_waiter("image_available").wait(
                ImageIds=[image], WaiterConfig={"Delay": IMAGE_POLL, "MaxAttempts": math.ceil(IMAGE_PATIENCE / IMAGE_POLL)}
            )
        except WaiterError:
            raise ProvisionError(
                f"image {image} is not available after {IMAGE_PATIENCE} s (its snapshot is still being "
                f"made): run ./setup.sh bake-ami {instance_id} again to wait for it"
            ) from None
        # Tagged once they exist (moto cannot tag snapshots in CreateImage): teardown finds them by tag.
        snapshots = [
            m["Ebs"]["SnapshotId"]
            for m in self.ec2.describe_images(ImageIds=[image])["Images"][0].get("BlockDeviceMappings", [])
            if "Ebs" in m
        ]
        if snapshots:
            self.ec2.create_tags(Resources=snapshots, Tags=pool.tags(self.config, name))
        self.baked = image
        return "available", f"image {image} ({name})"

    def _bake_done(self, instance_id):
        self.ec2.terminate_instances(InstanceIds=[instance_id])
        return "created", (
            f"image {self.baked} (bake instance {instance_id} terminated): set FR_AMI_ID={self.baked} "
            "and run ./setup.sh provision"
        )
