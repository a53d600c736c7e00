#!/usr/bin/env bash
# Bootstrap the images' Python base locally, for machines that cannot pull it from a registry
# (air-gapped, or no Docker Hub access) but can reach a Debian mirror. It debootstraps a minimal
# Debian bookworm (python3 is 3.11 there, like python:3.11-slim-bookworm) with python3-venv and
# ca-certificates, links `python` to python3 as the official image does, and commits the rootfs
# into buildah's storage under the Dockerfiles' default BASE_IMAGE name, so that
# `make images ENGINE=buildah` (or podman, which shares the storage) uses it unchanged.
#
# Usage (as root; needs debootstrap and buildah):
#   images/local-base.sh [IMAGE]        default IMAGE: docker.io/library/python:3.11-slim-bookworm
# Environment:
#   EXTRA_CA_CERT=/path/to/ca.pem     also trust this PEM CA (file or bundle) inside the image, for
#                                     TLS-intercepting proxies; pip is pointed at the system bundle
#   DEBIAN_MIRROR=http://deb.debian.org/debian
set -euo pipefail

image=${1:-docker.io/library/python:3.11-slim-bookworm}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
rootfs=$(mktemp -d /var/tmp/local-base.XXXXXX)
ctr=
cleanup() {
    if [ -n "$ctr" ]; then buildah rm "$ctr" >/dev/null || true; fi
    rm -rf "$rootfs"
}
trap cleanup EXIT

debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
    bookworm "$rootfs" "$mirror"
ln -sf python3 "$rootfs/usr/bin/python"

if [ -n "${EXTRA_CA_CERT:-}" ]; then
    install -m 0644 "$EXTRA_CA_CERT" "$rootfs/usr/local/share/ca-certificates/extra-ca.crt"
    chroot "$rootfs" update-ca-certificates
    # pip in a venv uses its own certifi bundle unless told otherwise
    printf '[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n' > "$rootfs/etc/pip.conf"
fi

# what a slim image leaves out: package caches and lists, docs
chroot "$rootfs" apt-get clean
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/*

ctr=$(buildah from scratch)
mnt=$(buildah mount "$ctr")
cp -a "$rootfs/." "$mnt/"
buildah umount "$ctr" >/dev/null
buildah config --env LANG=C.UTF-8 \
    --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --cmd python3 "$ctr"
buildah commit "$ctr" "$image"
