"""`testbed guest-image`: the node image for real guests (QEMU here, any OpenStack cloud)."""

from __future__ import annotations

import argparse


def cmd_guest_image(args: argparse.Namespace) -> int:
    from testbed.guests.image_build import build_image, find_image
    from testbed.guests.image_recipe import ImageRecipe

    recipe = ImageRecipe()
    if args.path:
        found = find_image(recipe)
        if found is None:
            print(f"not built: run `make guest-image` (recipe {recipe.digest()})")
            return 1
        print(found.disk)
        return 0
    image = build_image(recipe)
    packages = image.packages()
    kernel = next((v for k, v in packages.items() if k.startswith("linux-image-6")), "?")
    print(
        f"{image.disk} ({image.disk.stat().st_size / 1e6:.0f} MB qcow2, {len(packages)} "
        f"packages, kernel {kernel}, recipe {recipe.digest()})"
    )
    return 0


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    image = sub.add_parser(
        "guest-image",
        help="build the Debian 12 node image from Debian packages (root), cached by its recipe",
    )
    image.add_argument("--path", action="store_true", help="print the built image's path only")
    image.set_defaults(func=cmd_guest_image)
