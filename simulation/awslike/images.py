"""Images and snapshots as the AWS-like stack has them."""

import time

from simulation.awslike.sim import later

AL2023_ROOT = "/dev/xvda"


def image_gb(image):
    """The size of an image's root snapshot (moto's images are all 15 GB unless made here)."""
    return getattr(image, "sim_root_gb", 15)


def install_images(sim):
    """Images as large as their instance's root volume; their snapshots in use for a while after
    DeregisterImage, or deleted by it with DeleteAssociatedSnapshots."""
    from moto.ec2.exceptions import EC2ClientError
    from moto.ec2.models.amis import Ami, AmiBackend
    from moto.ec2.models.elastic_block_store import EBSBackend
    from moto.ec2.responses.amis import AmisResponse
    from moto.ec2.utils import generic_filter

    create_image, deregister_response = AmiBackend.create_image, AmisResponse.deregister_image
    delete_snapshot, mappings = EBSBackend.delete_snapshot, Ami.block_device_mappings.fget
    describe_snapshots = EBSBackend.describe_snapshots
    released = {}  # snapshot id -> (monotonic time it may be deleted, its image)
    listed = {}  # snapshot id deleted -> (monotonic time until it is still listed, the snapshot)

    def create_sized_image(self, instance_id, *args, **kwargs):
        image = create_image(self, instance_id, *args, **kwargs)
        instance = self.get_instance(instance_id)
        sizes = {device: volume.size for device, volume in instance.block_device_mapping.items()}
        # Amazon Linux 2023's root device (moto names every root /dev/sda1, and the volume mapped
        # at launch /dev/xvda).
        image.root_device_name = AL2023_ROOT
        image.sim_root_gb = sizes.get(AL2023_ROOT) or sizes.get(instance.root_device_name) or 15
        return image

    def block_device_mappings(image):
        found = mappings(image)
        for mapping in found:
            mapping["Ebs"]["VolumeSize"] = image_gb(image)
        return found

    def deregister_image(self):
        image_id, delete = self._get_param("ImageId"), self._get_bool_param("DeleteAssociatedSnapshots", False)
        snapshots = [s for s in self.ec2_backend.snapshots.values() if s.from_ami == image_id]
        result = deregister_response(self)
        for snapshot in snapshots:
            if delete:
                self.ec2_backend.snapshots.pop(snapshot.id, None)
                listed[snapshot.id] = (time.monotonic() + sim.t["snapshot_listing_lag"], snapshot)
            else:
                released[snapshot.id] = (time.monotonic() + sim.t["snapshot_release"], image_id)
        sim.record("DeregisterImage", [], image=image_id, snapshots=[s.id for s in snapshots], deleted=delete)
        return result

    def patched_delete_snapshot(self, snapshot_id):
        until, image_id = released.get(snapshot_id, (0, None))
        if time.monotonic() < until:
            sim.record("DeleteSnapshot", [], refused=f"{snapshot_id} in use by {image_id}")
            raise EC2ClientError("InvalidSnapshot.InUse", f"The snapshot {snapshot_id} is currently in use by {image_id}")
        snapshot = self.snapshots.get(snapshot_id)
        deleted = delete_snapshot(self, snapshot_id)  # InvalidSnapshot.NotFound for one deleted already
        listed[snapshot_id] = (time.monotonic() + sim.t["snapshot_listing_lag"], snapshot)
        return deleted

    def patched_describe_snapshots(self, snapshot_ids=None, filters=None):
        """moto's, with the snapshots deleted moments ago still listed (an id asked for by name is not)."""
        found = describe_snapshots(self, snapshot_ids, filters)
        if snapshot_ids:
            return found
        now = time.monotonic()
        ghosts = [
            snapshot
            for until, snapshot in list(listed.values())
            if until > now and snapshot is not None and snapshot.id not in self.snapshots
        ]
        return found + (generic_filter(filters, ghosts) if filters else ghosts)

    def patched_create_image(self, instance_id, *args, **kwargs):
        image = create_sized_image(self, instance_id, *args, **kwargs)
        image.state = "pending"
        later(sim.t["image_create"], lambda: setattr(image, "state", "available"))
        sim.record("CreateImage", [instance_id], image=image.id)
        return image

    AmiBackend.create_image = patched_create_image
    Ami.block_device_mappings = property(block_device_mappings)
    AmisResponse.deregister_image = deregister_image
    EBSBackend.delete_snapshot = patched_delete_snapshot
    EBSBackend.describe_snapshots = patched_describe_snapshots
