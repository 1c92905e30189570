"""Real guests: the testbed's node image, built from Debian packages, and guests booted
from it under QEMU (TCG where the host has no usable KVM), for the kernel features this
host lacks (batman-adv, netem) and as the image an OpenStack cloud boots."""
