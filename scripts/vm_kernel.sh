# The guest kernel of the VM leg (sourced by scripts/setup.sh and scripts/vm.sh): one exact
# Debian build, so every CI run boots the same kernel. 6.12 (bookworm-backports) rather than
# bookworm's 6.1: user namespaces need idmapped tmpfs (Linux >= 6.3). Changing it is a
# deliberate edit here (apt-cache policy linux-image-6.12.<N>+deb12-amd64 after adding the
# backports source); never a pattern.
VM_KERNEL_VERSION=6.12.95+deb12-amd64
VM_KERNEL_PACKAGE=linux-image-$VM_KERNEL_VERSION
VM_KERNEL_SOURCE="deb http://deb.debian.org/debian bookworm-backports main"
VM_KERNEL_SOURCE_FILE=/etc/apt/sources.list.d/pycri-vm-backports.list
