"""Build the node image (`make guest-image`, `testbed guest-image`): root on Debian.

Runs the recipe's commands (`image_recipe`) in a scratch directory beside the cache, and
moves the finished image directory into place in one rename: a crash leaves no image
that looks finished. The image directory holds `disk.qcow2`, `recipe.json` (what went in)
and `packages.txt` (every installed package and its version, from the image's own dpkg
database), so two builds of a recipe can be compared package by package.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from testbed.errors import ExecutionFailed, UserError
from testbed.guests.image_recipe import (
    ROOT_LABEL,
    ImageRecipe,
    grub_mkimage_command,
    guest_config_files,
    mmdebstrap_command,
    partition_table,
)

IMAGE_DIR_VARIABLE = "LOS_IMAGE_DIR"
DISK_NAME = "disk.qcow2"


@dataclass(frozen=True)
class BuiltImage:
    path: Path
    """The image directory."""
    recipe: ImageRecipe
    built: bool
    """False where the cache already had it."""
    seconds: float

    @property
    def disk(self) -> Path:
        return self.path / DISK_NAME

    def packages(self) -> dict[str, str]:
        lines = (self.path / "packages.txt").read_text().splitlines()
        return dict(line.split("\t", 1) for line in lines if "\t" in line)


def images_dir(env: Mapping[str, str] | None = None) -> Path:
    """Where images are cached: LOS_IMAGE_DIR, else $XDG_CACHE_HOME/los-testbed/images."""
    env = os.environ if env is None else env
    if env.get(IMAGE_DIR_VARIABLE):
        return Path(env[IMAGE_DIR_VARIABLE])
    cache = env.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "los-testbed" / "images"


def image_path(recipe: ImageRecipe, root: Path | None = None) -> Path:
    return (root or images_dir()) / f"debian-{recipe.suite}-los-{recipe.digest()}"


def find_image(recipe: ImageRecipe | None = None, root: Path | None = None) -> BuiltImage | None:
    """The cached image of `recipe` (the default one), or None."""
    recipe = recipe or ImageRecipe()
    path = image_path(recipe, root)
    if not (path / DISK_NAME).is_file() or not (path / "packages.txt").is_file():
        return None
    return BuiltImage(path, recipe, built=False, seconds=0.0)


def missing_host_tools() -> list[str]:
    tools = {"mmdebstrap": "mmdebstrap", "grub-mkimage": "grub-pc-bin", "qemu-img": "qemu-utils"}
    tools |= {"sfdisk": "fdisk", "mkfs.ext4": "e2fsprogs", "partx": "util-linux"}
    missing = [pkg for tool, pkg in tools.items() if shutil.which(tool) is None]
    if not Path("/usr/lib/grub/i386-pc/boot.img").is_file():
        missing.append("grub-pc-bin")
    return sorted(set(missing))


def _run(argv: Sequence[str], log: Path, input_text: str | None = None) -> str:
    with log.open("a") as out:
        out.write(f"$ {' '.join(argv)}\n")
        out.flush()
        result = subprocess.run(
            list(argv), input=input_text, capture_output=True, text=True, check=False
        )
        out.write(result.stdout + result.stderr)
    if result.returncode != 0:
        tail = (result.stderr or result.stdout).strip().splitlines()[-3:]
        raise ExecutionFailed(
            f"image build: {argv[0]} exited {result.returncode}: {' | '.join(tail)}"
        )
    return result.stdout


@contextlib.contextmanager
def _loop_device(disk: Path, log: Path) -> Iterator[tuple[str, str]]:
    """The raw disk on a loop device with its partition's node (`partx -a`: `losetup -P`
    makes none on this host)."""
    loop = _run(["losetup", "--find", "--show", str(disk)], log).strip()
    try:
        _run(["partx", "-a", loop], log)
        part = f"{loop}p1"
        for _ in range(50):
            if Path(part).exists():
                break
            time.sleep(0.1)
        yield loop, part
    finally:
        subprocess.run(["partx", "-d", loop], capture_output=True, check=False)
        subprocess.run(["losetup", "-d", loop], capture_output=True, check=False)


@contextlib.contextmanager
def _mounted(part: str, where: Path, log: Path) -> Iterator[Path]:
    where.mkdir(parents=True, exist_ok=True)
    _run(["mount", part, str(where)], log)
    try:
        yield where
    finally:
        subprocess.run(["umount", str(where)], capture_output=True, check=False)


def build_image(
    recipe: ImageRecipe | None = None,
    root: Path | None = None,
    say: Callable[[str], None] = print,
) -> BuiltImage:
    """The image of `recipe`, built unless the cache has it."""
    recipe = recipe or ImageRecipe()
    found = find_image(recipe, root)
    if found is not None:
        say(f"image {found.path.name}: already built ({found.path})")
        return found
    if os.geteuid() != 0:
        raise UserError(
            "guest-image", "building the image needs root (loop devices, mount)", "run as root"
        )
    missing = missing_host_tools()
    if missing:
        raise UserError(
            "guest-image",
            f"the build needs Debian packages that are missing: {' '.join(missing)}",
            f"apt-get install {' '.join(missing)} (make guest-image installs them)",
        )
    target = image_path(recipe, root)
    target.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    scratch = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        _build_into(recipe, scratch, say)
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(target)  # half an image from a crash before the rename cannot be
        os.replace(scratch, target)
    except BaseException as error:
        kept = target.parent / f"{target.name}.failed-build.log"
        with contextlib.suppress(OSError):
            shutil.copyfile(scratch / "build.log", kept)
        shutil.rmtree(scratch, ignore_errors=True)
        if isinstance(error, ExecutionFailed):
            raise ExecutionFailed(f"{error} (its log: {kept})") from None
        raise
    seconds = time.monotonic() - started
    say(f"image {target.name}: built in {seconds:.0f} s ({target})")
    return BuiltImage(target, recipe, built=True, seconds=seconds)


def _build_into(recipe: ImageRecipe, out: Path, say: Callable[[str], None]) -> None:
    log = out / "build.log"
    tarball = out / "rootfs.tar"
    raw = out / "disk.raw"
    say(f"root file system: mmdebstrap {recipe.suite} with {len(recipe.packages)} packages")
    _run(mmdebstrap_command(recipe, tarball), log)
    say("disk: partition, ext4, files, GRUB")
    with raw.open("wb") as disk:
        disk.truncate(recipe.disk_gb * 1024**3)
    _run(["sfdisk", "--quiet", str(raw)], log, input_text=partition_table())
    with _loop_device(raw, log) as (_, part):
        _run(["mkfs.ext4", "-q", "-L", ROOT_LABEL, part], log)
        with _mounted(part, out / "mnt", log) as mnt:
            _run(["tar", "-xpf", str(tarball), "-C", str(mnt)], log)
            for relative, text in guest_config_files(recipe).items():
                path = mnt / relative
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(text)
            for link in ("vmlinuz", "initrd.img"):  # the boot menu reads the symlinks in /
                if not (mnt / link).exists():
                    raise ExecutionFailed(f"image build: the root file system has no /{link}")
            packages = _run(
                [
                    "dpkg-query",
                    f"--admindir={mnt}/var/lib/dpkg",
                    "-W",
                    "-f=${Package}\t${Version}\n",
                ],
                log,
            )
    tarball.unlink()
    core = out / "core.img"
    _run(grub_mkimage_command(core), log)
    boot = Path("/usr/lib/grub/i386-pc/boot.img").read_bytes()
    core_bytes = core.read_bytes()
    if len(core_bytes) > (2048 - 1) * 512:
        raise ExecutionFailed(
            f"image build: GRUB's core image ({len(core_bytes)} bytes) does not fit before 1 MiB"
        )
    with raw.open("r+b") as disk:
        disk.write(boot[:440])  # the boot code, not the partition table after it
        disk.seek(512)
        disk.write(core_bytes)
    core.unlink()
    say("disk.qcow2")
    _run(["qemu-img", "convert", "-O", "qcow2", str(raw), str(out / DISK_NAME)], log)
    raw.unlink()
    (out / "packages.txt").write_text(packages)
    (out / "recipe.json").write_text(
        json.dumps({"recipe": recipe.as_dict(), "digest": recipe.digest()}, indent=2) + "\n"
    )
    (out / "mnt").rmdir()
