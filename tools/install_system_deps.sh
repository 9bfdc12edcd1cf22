#!/usr/bin/env bash
# System packages the test suite needs beyond Python: OpenSSH's server, for the latency tool's
# remote-mode tests (they start a private sshd on 127.0.0.1). Idempotent and non-interactive;
# a no-op when /usr/sbin/sshd is already there. Needs root (or sudo) and Debian/Ubuntu apt.
set -euo pipefail

if [ -x /usr/sbin/sshd ]; then
    echo "install_system_deps: /usr/sbin/sshd present, nothing to do"
    exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "install_system_deps: WARNING: /usr/sbin/sshd is missing and apt-get is not available;" \
         "install OpenSSH's server by hand (the remote latency tests skip locally, fail under CI=true)" >&2
    exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        SUDO="sudo -n"
    else
        echo "install_system_deps: WARNING: not root and no password-less sudo; run as root:" \
             "apt-get install -y openssh-server (the remote latency tests skip locally, fail under CI=true)" >&2
        exit 0
    fi
fi

echo "install_system_deps: /usr/sbin/sshd is missing: installing openssh-server with apt-get"
export DEBIAN_FRONTEND=noninteractive
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -q
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends openssh-server
# Debian's package may try to start the service; the tests start their own sshd, so that is not needed.
if [ -x /usr/sbin/sshd ]; then
    echo "install_system_deps: installed $(/usr/sbin/sshd -V 2>&1 | head -n 1 || true)"
else
    echo "install_system_deps: ERROR: apt-get finished but /usr/sbin/sshd is still missing" >&2
    exit 1
fi
