"""The node image's recipe and the commands that build it (pure: nothing runs here).

A whole-disk Debian 12 image from Debian packages alone (no downloaded cloud image):
`mmdebstrap` makes the root file system, one MBR partition holds it, and GRUB's BIOS
boot code goes in front of it through `grub-mkimage` (on this host `grub-install`
cannot find a drive for a loop partition, measured in ../shared/spec/measured-here.md).
The image is named by the hash of its recipe: the same recipe is built once and reused.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

RECIPE_VERSION = 1
"""Bumped when the build steps change in a way the recipe's fields do not show."""

PACKAGES: tuple[str, ...] = (
    # boot and the base system
    "linux-image-amd64",
    "systemd-sysv",
    "udev",
    "kmod",
    "netbase",
    "ifupdown",
    "procps",
    "ca-certificates",
    # what the harness reaches the node with and what 01-base and the agents need
    "cloud-init",
    "openssh-server",
    "sudo",
    "python3",
    "python3-venv",
    # the mesh and the link delays (batman-adv and sch_netem are in the Debian kernel)
    "iproute2",
    "batctl",
    "iputils-ping",
)

GRUB_MODULES: tuple[str, ...] = (
    "biosdisk",
    "part_msdos",
    "ext2",
    "normal",
    "linux",
    "boot",
    "configfile",
    "echo",
    "search",
    "search_label",
    "gzio",
)
"""Built into GRUB's core image, so it needs nothing from the disk before grub.cfg."""

ROOT_LABEL = "losroot"
DISK_GB = 3
PARTITION_START = 2048  # sectors: 1 MiB, room for GRUB's core image before it


@dataclass(frozen=True)
class ImageRecipe:
    """What goes into the image; its hash names the image."""

    suite: str = "bookworm"
    mirror: str = "http://deb.debian.org/debian"
    packages: tuple[str, ...] = PACKAGES
    disk_gb: int = DISK_GB
    kernel_args: str = "console=ttyS0,115200 net.ifnames=0"
    version: int = RECIPE_VERSION

    def as_dict(self) -> dict[str, object]:
        out = asdict(self)
        out["packages"] = list(self.packages)
        return out

    def digest(self) -> str:
        """Names the image: the recipe and every file and step it renders (a changed boot
        menu or file makes a new image, not a reuse of the old one)."""
        rendered = {
            "recipe": self.as_dict(),
            "files": guest_config_files(self),
            "grub_modules": list(GRUB_MODULES),
            "partitions": partition_table(),
            "root_label": ROOT_LABEL,
        }
        text = json.dumps(rendered, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def grub_cfg(recipe: ImageRecipe) -> str:
    """The boot menu: the Debian kernel and initrd through the symlinks in /."""
    return (
        "set timeout=0\n"
        f"search --no-floppy --label --set=root {ROOT_LABEL}\n"
        f"linux /vmlinuz root=LABEL={ROOT_LABEL} ro {recipe.kernel_args}\n"
        "initrd /initrd.img\n"
        "boot\n"
    )


def fstab() -> str:
    return f"LABEL={ROOT_LABEL} / ext4 defaults,errors=remount-ro 0 1\n"


def partition_table() -> str:
    """sfdisk input: one bootable Linux partition from 1 MiB to the end."""
    return f"label: dos\nstart={PARTITION_START}, type=83, bootable\n"


def mmdebstrap_command(recipe: ImageRecipe, tarball: Path) -> list[str]:
    return [
        "mmdebstrap",
        "--variant=minbase",
        "--mode=root",
        "--components=main",
        f"--include={','.join(recipe.packages)}",
        # no daemon starts in the build chroot
        "--customize-hook=rm -f $1/etc/machine-id && touch $1/etc/machine-id",
        recipe.suite,
        str(tarball),
        recipe.mirror,
    ]


def grub_mkimage_command(core: Path) -> list[str]:
    return [
        "grub-mkimage",
        "--format=i386-pc",
        f"--output={core}",
        "--prefix=(hd0,msdos1)/boot/grub",
        *GRUB_MODULES,
    ]


def guest_config_files(recipe: ImageRecipe) -> dict[str, str]:
    """Files written into the root file system, by path inside it."""
    return {
        "etc/fstab": fstab(),
        "etc/hostname": "los-node\n",
        "boot/grub/grub.cfg": grub_cfg(recipe),
        # the interfaces are configured by cloud-init (network-config), none by default
        "etc/network/interfaces": (
            "source /etc/network/interfaces.d/*\nauto lo\niface lo inet loopback\n"
        ),
        # cloud-init looks only where the testbed puts its data (a config drive or NoCloud)
        "etc/cloud/cloud.cfg.d/90-los-datasources.cfg": (
            "datasource_list: [ NoCloud, ConfigDrive, OpenStack, None ]\n"
        ),
    }
