"""EC2 gaps filled in moto: launch failures (``POST /_kld/ec2/launch-failure``), the EBS
default key and encryption by default, encrypted snapshots and AMIs, launches merging image and
request mappings; and an Auto Scaling group's service-linked role.
"""

from __future__ import annotations

from copy import deepcopy
from typing import Any

from moto.autoscaling.responses import AutoScalingResponse
from moto.core import DEFAULT_ACCOUNT_ID
from moto.core.responses import ActionResult
from moto.ec2 import utils as ec2_utils
from moto.ec2.models import ec2_backends
from moto.ec2.models.amis import Ami, AmiBackend
from moto.ec2.models.elastic_block_store import EBSBackend
from moto.ec2.models.instances import Instance, InstanceBackend, InstanceState, StateReason
from moto.ec2.responses.amis import AmisResponse
from moto.ec2.responses.elastic_block_store import ElasticBlockStore as EbsResponse
from moto.ec2.responses.instances import InstanceResponse

from .common import ControlError, DEFAULT_REGION, required


# --------------------------------------------------------------------------------------
# EC2: launch failures
# --------------------------------------------------------------------------------------

INSTANCE_STATE_CODES = {
    "pending": 0,
    "running": 16,
    "shutting-down": 32,
    "terminated": 48,
    "stopping": 64,
    "stopped": 80,
}
DEFAULT_LAUNCH_FAILURE_CODE = "Client.InternalError"
DEFAULT_LAUNCH_FAILURE_MESSAGE = "Client.InternalError: Client error on launch"


def apply_launch_failure(spec: dict[str, Any]) -> dict[str, Any]:
    """Set State, StateReason and StateTransitionReason of an existing moto instance.

    moto's stop/terminate would overwrite the reason, so the attributes are set directly.
    "stopped" keeps every volume attached. "terminated" then does to the volumes what AWS
    does at termination (``release_terminated_volumes``).
    """
    state = spec.get("state", "stopped")
    if state not in INSTANCE_STATE_CODES:
        raise ControlError(400, f"state must be one of {sorted(INSTANCE_STATE_CODES)}")
    backend = ec2_backends[spec.get("account_id", DEFAULT_ACCOUNT_ID)][spec.get("region", DEFAULT_REGION)]
    instance_id = required(spec, "instance_id")
    instance = next((i for i in backend.all_instances() if i.id == instance_id), None)
    if instance is None:
        raise ControlError(404, f"The instance ID '{instance_id}' does not exist")
    code = spec.get("code", DEFAULT_LAUNCH_FAILURE_CODE)
    message = spec.get("message", DEFAULT_LAUNCH_FAILURE_MESSAGE)
    instance._state = InstanceState(state, INSTANCE_STATE_CODES[state])
    instance.state_reason = StateReason(message, code)
    instance._reason = spec.get("transition_reason", message)
    result = {
        "instance_id": instance.id,
        "state": {"name": state, "code": INSTANCE_STATE_CODES[state]},
        "state_reason": {"code": code, "message": message},
        "state_transition_reason": instance._reason,
    }
    if state == "terminated":
        result["volumes"] = release_terminated_volumes(instance)
    return result


def release_terminated_volumes(instance: Instance) -> dict[str, list[str]]:
    """What termination does to an instance's EBS volumes; returns their ids.

    https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/terminating-instances.html (the
    archived source, awsdocs/amazon-ec2-user-guide doc_source/terminating-instances.md,
    "Instance termination"): "After an instance is terminated, resources such as tags and
    volumes are gradually disassociated from the instance, therefore may no longer be
    visible on the terminated instance after a short while." and "By default, Amazon EBS
    root device volumes are automatically deleted when the instance terminates. However, by
    default, any additional EBS volumes that you attach at launch, or any EBS volumes that
    you attach to an existing instance persist even after the instance terminates. This
    behavior is controlled by the volume's DeleteOnTermination attribute" (the API reference
    of EbsBlockDevice.DeleteOnTermination links the same page, #preserving-volumes-on-termination).
    So the instance's BlockDeviceMappings become empty, DeleteOnTermination=true volumes are
    deleted and the others are detached ("available"). The instance keeps its ImageId and
    its tags, including the aws:ec2launchtemplate:id / aws:ec2launchtemplate:version tags
    EC2 puts on instances launched from a template ("Instances that are launched using a
    launch template are automatically assigned two tags with the keys
    aws:ec2launchtemplate:id and aws:ec2launchtemplate:version",
    https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/launch-instances-from-launch-template.html;
    moto sets them in ``Instance.__init__``): the emulator shows the instance as it is
    shortly after termination, volumes gone and tags not yet disassociated. moto's own
    ``Instance.teardown_defaults`` (what its TerminateInstances uses) does the detaching.
    """
    deleted, detached = [], []
    for _, device in instance.get_block_device_mapping:
        (deleted if device.delete_on_termination else detached).append(device.volume_id)
    instance.teardown_defaults()
    return {"deleted": deleted, "detached": detached}

def patch_ec2_filters() -> None:
    """moto maps ``state-reason-code`` but not ``state-reason-message``; add it."""
    ec2_utils.filter_dict_attribute_mapping.setdefault("state-reason-message", "state_reason.message")


# --------------------------------------------------------------------------------------
# EC2: the EBS default key, encryption by default, encrypted snapshots and AMIs
# --------------------------------------------------------------------------------------

EBS_ENCRYPTION_DOCS = "https://docs.aws.amazon.com/ebs/latest/userguide/ebs-encryption.html"
# Archived source: awsdocs/amazon-ec2-user-guide doc_source/block-device-mapping-concepts.md
BDM_DOCS = "https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/block-device-mapping-concepts.html"
AWS_MANAGED_EBS_ALIAS = "alias/aws/ebs"

_original_create_volume = EBSBackend.create_volume
_original_create_snapshot = EBSBackend.create_snapshot
_original_modify_ebs_default_kms_key_id = EBSBackend.modify_ebs_default_kms_key_id
_original_create_image = AmiBackend.create_image
_original_run_instances = InstanceBackend.run_instances
_original_parse_block_device_mapping = InstanceResponse._parse_block_device_mapping
_original_ami_block_device_mappings = Ami.block_device_mappings


def ebs_create_volume(self: EBSBackend, size: int, zone_name: str, snapshot_id: str | None = None,
                      encrypted: bool = False, kms_key_id: str | None = None, **kwargs: Any) -> Any:
    """CreateVolume (and every volume RunInstances makes) with AWS's encryption outcomes.

    * A volume restored from an encrypted snapshot is encrypted, by default with the
      snapshot's key: "By default, the KMS key that you selected when creating a volume
      encrypts the snapshots that you make from the volume and the volumes that you restore
      from those encrypted snapshots. You cannot remove encryption from an encrypted volume
      or snapshot" (EBS_ENCRYPTION_DOCS, "Encrypt EBS resources"; archived source
      awsdocs/amazon-ec2-user-guide doc_source/EBSEncryption.md). moto encrypts such a
      volume but leaves it without a key.
    * With encryption by default on, every new volume is encrypted with the default key:
      "After you enable encryption by default, the EBS volumes that you create are always
      encrypted, either using the default KMS key or the KMS key that you specified when you
      created each volume" (API reference, EnableEbsEncryptionByDefault; EBS_ENCRYPTION_DOCS,
      "Encryption by default": "Amazon EBS encrypts the EBS volumes created when you launch
      an instance"). moto stores the setting but ignores it.
    An explicit KmsKeyId wins in both cases (same pages). The default key itself is moto's:
    the customer key set by ModifyEbsDefaultKmsKeyId, else alias/aws/ebs, created on first use.
    """
    if snapshot_id:
        snapshot = self.get_snapshot(snapshot_id)
        if snapshot.encrypted:
            encrypted = True
            kms_key_id = kms_key_id or snapshot.kms_key_id
    if not encrypted and getattr(self, "ebs_encryption_by_default", False):
        encrypted = True
    return _original_create_volume(
        self, size, zone_name, snapshot_id=snapshot_id, encrypted=encrypted, kms_key_id=kms_key_id, **kwargs
    )


def ebs_create_snapshot(self: EBSBackend, volume_id: str, description: str, *args: Any, **kwargs: Any) -> Any:
    """CreateSnapshot that keeps the volume's key. EBS_ENCRYPTION_DOCS: what an encrypted
    volume encrypts includes "All snapshots created from the volume", and "By default, the
    KMS key that you selected when creating a volume encrypts the snapshots that you make
    from the volume". moto marks the snapshot encrypted but drops the key, so
    DescribeSnapshots showed no KmsKeyId."""
    snapshot = _original_create_snapshot(self, volume_id, description, *args, **kwargs)
    volume = self.get_volume(volume_id)
    if volume.encrypted and not snapshot.kms_key_id:
        snapshot.kms_key_id = volume.kms_key_id
    return snapshot


def ebs_modify_default_kms_key_id(self: EBSBackend, kms_key_id: str) -> str:
    """moto's ModifyEbsDefaultKmsKeyId (it resolves an id, alias or ARN to the key ARN, as the
    API reference's response element says: "The Amazon Resource Name (ARN) of the default KMS
    key"), remembering that a customer key was chosen so GetEbsDefaultKmsKeyId can tell."""
    arn = _original_modify_ebs_default_kms_key_id(self, kms_key_id)
    self._kld_customer_default_key = bool(kms_key_id)
    return arn


def ebs_default_key_is_customer(backend: Any) -> bool:
    return bool(getattr(backend, "_kld_customer_default_key", False))


def get_ebs_default_kms_key_id(self: EbsResponse) -> ActionResult:
    """EbsResponse.get_ebs_default_kms_key_id; moto lacks GetEbsDefaultKmsKeyId.

    Per account and region (moto's EC2 backend is one per account and region, like the
    setting: "Describes the default KMS key for EBS encryption by default for your account
    in this Region", API reference). While no customer key was set (never, or after
    ResetEbsDefaultKmsKeyId) AWS answers with the alias of the AWS managed key, not an ARN:
    the AWS CLI reference example for get-ebs-default-kms-key-id
    (https://docs.aws.amazon.com/cli/latest/reference/ec2/get-ebs-default-kms-key-id.html)
    shows ``{"KmsKeyId": "alias/aws/ebs"}`` for "the default CMK for EBS encryption, which is
    an AWS managed CMK with the alias alias/aws/ebs", and a key ARN for "a custom CMK".
    The docs are silent on what Get returns after a reset; the emulator returns the alias,
    as for an account that never set a key.
    """
    self.error_on_dryrun()
    backend = self.ec2_backend
    key = backend.default_kms_key_id if ebs_default_key_is_customer(backend) else AWS_MANAGED_EBS_ALIAS
    return ActionResult({"KmsKeyId": key})


def reset_ebs_default_kms_key_id(self: EbsResponse) -> ActionResult:
    """EbsResponse.reset_ebs_default_kms_key_id; moto lacks ResetEbsDefaultKmsKeyId.

    "Resets the default KMS key for EBS encryption for your account in this Region to the
    Amazon Web Services managed KMS key for EBS" (API reference); the response is that key's
    ARN, as the AWS CLI example for reset-ebs-default-kms-key-id shows
    (``arn:aws:kms:us-west-2:123456789012:key/8c5b2c63-...``). The AWS managed key is
    created if the Region has none yet, as moto does on first use ("Amazon EBS automatically
    creates a unique AWS managed key in each Region", EBS_ENCRYPTION_DOCS).
    """
    self.error_on_dryrun()
    backend = self.ec2_backend
    arn = backend._create_default_encryption_key()
    backend._kld_customer_default_key = False
    return ActionResult({"KmsKeyId": arn})


def snapshot_mapping(backend: Any, device_name: str, ebs: dict[str, Any], root_device_name: str) -> dict[str, Any]:
    """An AMI block device mapping for ``ebs`` (RegisterImage/CreateImage input shape).

    VolumeSize defaults to the snapshot's ("If you specify a snapshot, the default is the
    snapshot size", API reference, EbsBlockDevice). Encrypted is the snapshot's: "If you
    specify an Amazon EBS volume using the ID of an Amazon EBS snapshot, you can't specify
    the encryption state of the volume" (RegisterImage, BlockDeviceMappings), and
    DescribeImages reports it. Defaults, from "Block device mapping entries" in
    BDM_DOCS: DeleteOnTermination "The default value is true for the root device volume and
    false for attached volumes"; volume type "The default value is gp2".
    """
    snapshot = backend.get_snapshot(ebs["SnapshotId"]) if ebs.get("SnapshotId") else None
    out: dict[str, Any] = {}
    if snapshot is not None:
        out["SnapshotId"] = snapshot.id
        out["VolumeSize"] = int(ebs.get("VolumeSize") or snapshot.volume.size)
        out["Encrypted"] = bool(snapshot.encrypted)
    elif ebs.get("VolumeSize"):
        out["VolumeSize"] = int(ebs["VolumeSize"])
        out["Encrypted"] = bool(ebs.get("Encrypted"))
    out["VolumeType"] = ebs.get("VolumeType") or "gp2"
    dot = ebs.get("DeleteOnTermination")
    out["DeleteOnTermination"] = (device_name == root_device_name) if dot is None else bool(dot)
    return {"DeviceName": device_name, "Ebs": out}


def ami_block_device_mappings(self: Ami) -> list[dict[str, Any]]:
    """Ami.block_device_mappings: the mappings an image was registered or created with.

    moto gives every image one made-up 15 GiB snapshot; images made through the patched
    RegisterImage/CreateImage carry their real mappings, as DescribeImages shows them in
    AWS (DeviceName, Ebs {SnapshotId, VolumeSize, VolumeType, DeleteOnTermination,
    Encrypted}; API reference, EbsBlockDevice; KmsKeyId "is only supported on
    BlockDeviceMapping objects called by RunInstances, RequestSpotFleet, and
    RequestSpotInstances", so an image shows none: the key is the snapshot's).
    """
    mappings = getattr(self, "_kld_mappings", None)
    if mappings is not None:
        return deepcopy(mappings)
    return _original_ami_block_device_mappings.fget(self)


def drop_placeholder_snapshot(backend: Any, ami: Ami) -> None:
    """Remove the made-up snapshot moto's Ami constructor creates for an image that has
    real mappings, so DescribeSnapshots lists only snapshots AWS would have."""
    placeholder = getattr(ami, "ebs_snapshot", None)
    if placeholder is not None:
        backend.snapshots.pop(placeholder.id, None)


def register_image(self: AmisResponse) -> ActionResult:
    """AmisResponse.register_image honouring BlockDeviceMappings and RootDeviceName.

    moto registers every image with a made-up unencrypted snapshot and ignores the request's
    mappings. AWS: "You can use RegisterImage to create an Amazon EBS-backed Linux AMI from
    a snapshot of a root device volume. You specify the snapshot using a block device
    mapping. [...] If the snapshot is encrypted, or encryption by default is enabled, the
    root volume of an instance launched from the AMI is encrypted" (API reference,
    RegisterImage). An unknown snapshot is InvalidSnapshot.NotFound (moto's error).
    """
    name = self._get_param("Name")
    description = self._get_param("Description", "")
    root_device_name = self._get_param("RootDeviceName") or "/dev/sda1"
    requested = self._get_param("BlockDeviceMappings", [])
    self.error_on_dryrun()
    backend = self.ec2_backend
    mappings = []
    for mapping in requested:
        if mapping.get("Ebs"):
            mappings.append(snapshot_mapping(backend, mapping["DeviceName"], mapping["Ebs"], root_device_name))
        else:
            mappings.append({k: v for k, v in mapping.items() if k in ("DeviceName", "VirtualName", "NoDevice")})
    ami = backend.register_image(name, description)
    if requested:
        drop_placeholder_snapshot(backend, ami)
        ami._kld_mappings = mappings
        ami.root_device_name = root_device_name
        ami.root_device_type = "ebs"
    return ActionResult({"ImageId": ami.id})


def ami_create_image(self: AmiBackend, instance_id: str, name: str, description: str,
                     tag_specifications: list[dict[str, Any]]) -> Ami:
    """CreateImage that snapshots the instance's volumes into the image's mappings.

    "If you customized your instance with instance store volumes or Amazon EBS volumes in
    addition to the root device volume, the new AMI contains block device mapping
    information for those volumes" (API reference, CreateImage); "For EBS volumes, the
    existing data is saved to a new snapshot, and it's this new snapshot that's specified in
    the block device mapping" and "When you create an AMI, its block device mapping inherits
    this setting [DeleteOnTermination] from the instance" (BDM_DOCS). Each snapshot keeps
    its volume's key (``ebs_create_snapshot``), so an image of an instance with encrypted
    volumes names encrypted snapshots. moto gives it a made-up unencrypted snapshot instead.
    """
    ami = _original_create_image(self, instance_id, name, description, tag_specifications)
    instance = self.get_instance(instance_id)
    mappings = []
    for device_name, device in instance.get_block_device_mapping:
        volume = self.get_volume(device.volume_id)
        snapshot = self.create_snapshot(
            volume.id, f"Created by CreateImage({instance_id}) for {ami.id}", from_ami=ami.id
        )
        mappings.append(
            {
                "DeviceName": device_name,
                "Ebs": {
                    "SnapshotId": snapshot.id,
                    "VolumeSize": volume.size,
                    "VolumeType": volume.volume_type,
                    "DeleteOnTermination": bool(device.delete_on_termination),
                    "Encrypted": bool(snapshot.encrypted),
                },
            }
        )
    if mappings:
        drop_placeholder_snapshot(self, ami)
        ami._kld_mappings = mappings
        ami.root_device_name = instance.root_device_name
        ami.root_device_type = "ebs"
    return ami


EBS_MAPPING_KEYS = ("SnapshotId", "VolumeSize", "VolumeType", "Iops", "DeleteOnTermination", "KmsKeyId")


def parse_block_device_mapping(self: InstanceResponse) -> list[dict[str, Any]]:
    """moto's RunInstances mapping parser, plus which Ebs fields the request really gave:
    moto fills absent ones with false/None, and an absent field must not override the
    image's mapping (``merge_launch_mappings``)."""
    mappings = _original_parse_block_device_mapping(self)
    raw = self._get_param("BlockDeviceMappings", [])
    for mapping, given in zip(mappings, raw, strict=False):
        mapping["_kld_given"] = sorted((given.get("Ebs") or {}).keys())
    return mappings


def mapping_gives(mapping: dict[str, Any], key: str) -> bool:
    if "_kld_given" in mapping:
        return key in mapping["_kld_given"]
    return (mapping.get("Ebs") or {}).get(key) is not None


def merge_launch_mappings(
    backend: Any, ami: Ami, requested: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """The volumes a launch gets: the image's mappings, overridden or extended per device
    by the request's (or the launch template's) mappings.

    BDM_DOCS, "Instance block device mapping": "By default, an instance that you launch
    includes any storage devices specified in the block device mapping of the AMI from which
    you launched the instance. You can specify changes to the block device mapping for an
    instance when you launch it, and these updates overwrite or merge with the block device
    mapping of the AMI"; a ``"NoDevice": ""`` entry omits a device; DeleteOnTermination:
    "When you launch an instance, it inherits this setting from the AMI". A device keeps the
    image's snapshot unless the request names another; its encryption is the snapshot's
    unless the request names a KmsKeyId ("If the volume is encrypted using a different KMS
    key, AWS KMS generates a new data key", EBS_ENCRYPTION_DOCS, "How EBS encryption works";
    encryption is never removed, ``ebs_create_volume``).
    """
    merged: dict[str, dict[str, Any]] = {
        m["DeviceName"]: deepcopy(m) for m in ami.block_device_mappings if m.get("Ebs")
    }
    for mapping in requested:
        name = mapping.get("DeviceName")
        if mapping.get("NoDevice") == "":
            merged.pop(name, None)
            continue
        if not mapping.get("Ebs"):
            continue  # instance store: moto models no such volumes
        base = merged.setdefault(name, {"DeviceName": name, "Ebs": {}})
        for key in EBS_MAPPING_KEYS:
            if mapping_gives(mapping, key):
                base["Ebs"][key] = mapping["Ebs"][key]
        if mapping_gives(mapping, "Encrypted") and mapping["Ebs"]["Encrypted"]:
            base["Ebs"]["Encrypted"] = True
    result = []
    for name, mapping in merged.items():
        ebs = mapping["Ebs"]
        snapshot = backend.get_snapshot(ebs["SnapshotId"]) if ebs.get("SnapshotId") else None
        ebs["Encrypted"] = bool(ebs.get("Encrypted") or ebs.get("KmsKeyId") or (snapshot and snapshot.encrypted))
        if ebs.get("DeleteOnTermination") is None:
            ebs["DeleteOnTermination"] = name == ami.root_device_name
        result.append({"DeviceName": name, "Ebs": ebs})
    return result


def registered_image(backend: Any, image_id: str | None) -> Ami | None:
    """An image whose mappings the emulator knows (RegisterImage/CreateImage), else None."""
    ami = backend.amis.get(image_id) if image_id else None
    return ami if ami is not None and getattr(ami, "_kld_mappings", None) is not None else None


def run_instances(self: InstanceBackend, image_id: str, count: int, user_data: Any,
                  security_group_names: list[str], **kwargs: Any) -> Any:
    """InstanceBackend.run_instances launching from an image's real mappings.

    For an image made through the patched RegisterImage/CreateImage the instance gets the
    image's volumes merged with the request's or the launch template's
    (``merge_launch_mappings``); a template's mappings apply when the request has none, as
    in moto. Other images (moto's built-in catalogue) keep moto's behaviour: a default 8 GiB
    root volume plus the requested ones. Volumes from a template keep its KmsKeyId (moto
    already did). "You can use the parameters contained in a launch template to launch an
    instance. You have the option to override or add launch parameters before you launch
    the instance" (launch-instances-from-launch-template.html, "Launch an instance from a
    launch template"): request mappings replace the template's, as moto does.
    """
    template_data = self._get_template_from_args(kwargs["launch_template"]).data if kwargs.get(
        "launch_template"
    ) else {}
    ami = registered_image(self, image_id or template_data.get("ImageId"))
    if ami is not None:
        requested = kwargs.get("block_device_mappings") or template_data.get("BlockDeviceMappings") or []
        kwargs["block_device_mappings"] = merge_launch_mappings(self, ami, requested)
    return _original_run_instances(self, image_id, count, user_data, security_group_names, **kwargs)


def patch_ec2() -> None:
    """Install the EC2/EBS patches of this section (idempotent)."""
    EBSBackend.create_volume = ebs_create_volume
    EBSBackend.create_snapshot = ebs_create_snapshot
    EBSBackend.modify_ebs_default_kms_key_id = ebs_modify_default_kms_key_id
    EbsResponse.get_ebs_default_kms_key_id = get_ebs_default_kms_key_id
    EbsResponse.reset_ebs_default_kms_key_id = reset_ebs_default_kms_key_id
    AmisResponse.register_image = register_image
    AmiBackend.create_image = ami_create_image
    Ami.block_device_mappings = property(ami_block_device_mappings)
    InstanceResponse._parse_block_device_mapping = parse_block_device_mapping
    InstanceBackend.run_instances = run_instances

# --------------------------------------------------------------------------------------
# Auto Scaling: the group's service-linked role
# --------------------------------------------------------------------------------------

_original_create_auto_scaling_group = AutoScalingResponse.create_auto_scaling_group
_original_update_auto_scaling_group = AutoScalingResponse.update_auto_scaling_group


def set_group_service_linked_role(response: AutoScalingResponse) -> None:
    """Keep the request's ServiceLinkedRoleARN on the group. moto answers every group with
    the default role, ``arn:<partition>:iam::<account>:role/aws-service-role/
    autoscaling.amazonaws.com/AWSServiceRoleForAutoScaling``, as AWS does when none is given
    (CreateAutoScalingGroup, ServiceLinkedRoleARN: "By default, Amazon EC2 Auto Scaling uses a
    service-linked role named AWSServiceRoleForAutoScaling, which it creates if it does not
    exist"), but dropped a role named in the request (a custom suffix,
    ``AWSServiceRoleForAutoScaling_<suffix>``), which DescribeAutoScalingGroups must return
    ("ServiceLinkedRoleARN: The Amazon Resource Name (ARN) of the service-linked role that the
    Auto Scaling group uses to call other Amazon Web Services on your behalf", API reference,
    AutoScalingGroup). UpdateAutoScalingGroup takes the same parameter. The docs are silent
    on a role that does not exist; the emulator does not check it."""
    arn = response._get_param("ServiceLinkedRoleARN")
    name = response._get_param("AutoScalingGroupName")
    group = response.autoscaling_backend.autoscaling_groups.get(name)
    if arn and group is not None:
        group.service_linked_role_arn = arn


def create_auto_scaling_group(self: AutoScalingResponse) -> ActionResult:
    result = _original_create_auto_scaling_group(self)
    set_group_service_linked_role(self)
    return result


def update_auto_scaling_group(self: AutoScalingResponse) -> ActionResult:
    result = _original_update_auto_scaling_group(self)
    set_group_service_linked_role(self)
    return result


def patch_autoscaling() -> None:
    AutoScalingResponse.create_auto_scaling_group = create_auto_scaling_group
    AutoScalingResponse.update_auto_scaling_group = update_auto_scaling_group
