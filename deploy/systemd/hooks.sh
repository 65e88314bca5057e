#!/bin/sh
# Hook actions for nvidia-mig-manager.service (named in hooks-default.yaml / hooks-minimal.yaml).
#
# Hooks run with only the MIG_PARTED_* variables set (as under nvidia-mig-parted), so PATH and
# the paths below are set here. A hooks.env file next to this script may override them.
set -eu
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export PATH

HERE=$(CDPATH='' cd -- "$(dirname -- "$0")" && pwd)
SYSTEMCTL=systemctl
OVERRIDE_CONF=/etc/systemd/system/nvidia-mig-manager.service.d/override.conf
# Stopped in this order, started in the reverse.
K8S_SERVICES="kubelet dcgm-exporter"
DRIVER_SERVICES="nvsm nvidia-dcgm"
# Containers that hold GPUs open: matched against container names and images.
K8S_CONTAINERS="nvidia-device-plugin gpu-feature-discovery dcgm-exporter"
CDI_REFRESH=nvidia-cdi-refresh.service
# shellcheck disable=SC1091
[ -f "$HERE/hooks.env" ] && . "$HERE/hooks.env"

persist_config() {
    directory=$(dirname -- "$OVERRIDE_CONF")
    mkdir -p "$directory"
    temporary=$(mktemp "$directory/.override.conf.XXXXXX")
    {
        echo "[Service]"
        echo "Environment=\"MIG_PARTED_SELECTED_CONFIG=${MIG_PARTED_SELECTED_CONFIG:-}\""
        if [ -n "${MIG_PARTED_CONFIG_FILE:-}" ]; then
            echo "Environment=\"MIG_PARTED_CONFIG_FILE=$MIG_PARTED_CONFIG_FILE\""
        fi
        if [ -n "${MIG_PARTED_HOOKS_FILE:-}" ]; then
            echo "Environment=\"MIG_PARTED_HOOKS_FILE=$MIG_PARTED_HOOKS_FILE\""
        fi
    } > "$temporary"
    mv -f "$temporary" "$OVERRIDE_CONF"
    $SYSTEMCTL daemon-reload
}

reverse() {
    out=""
    for word in "$@"; do out="$word $out"; done
    echo "$out"
}

stop_services() {
    for service in $(reverse "$@"); do
        if $SYSTEMCTL is-active --quiet "$service"; then
            $SYSTEMCTL stop "$service"
        fi
    done
}

kill_containers() {
    for name in $K8S_CONTAINERS; do
        if command -v docker >/dev/null 2>&1; then
            ids=$(timeout 30 docker ps -q --filter "name=$name" 2>/dev/null || true)
            [ -z "$ids" ] || timeout 30 docker kill $ids >/dev/null 2>&1 || true
        fi
        if command -v ctr >/dev/null 2>&1; then
            for task in $(timeout 30 ctr -n k8s.io tasks ls -q 2>/dev/null || true); do
                image=$(timeout 30 ctr -n k8s.io containers info "$task" 2>/dev/null | grep -m1 '"Image"' || true)
                case "$image" in
                    *"$name"*) timeout 30 ctr -n k8s.io tasks kill -s SIGKILL "$task" >/dev/null 2>&1 || true ;;
                esac
            done
        fi
    done
}

stop_clients() {
    stop_services $K8S_SERVICES
    kill_containers
    if [ "${1:-}" = "with-driver-services" ]; then
        stop_services $DRIVER_SERVICES
    fi
}

start_clients() {
    # Without blocking: a service waiting on this unit must not deadlock the boot.
    for service in $DRIVER_SERVICES $K8S_SERVICES; do
        if $SYSTEMCTL is-enabled --quiet "$service" 2>/dev/null; then
            $SYSTEMCTL start --no-block "$service"
        fi
    done
}

refresh_cdi() {
    if $SYSTEMCTL list-unit-files "$CDI_REFRESH" >/dev/null 2>&1; then
        $SYSTEMCTL restart --no-block "$CDI_REFRESH" || true
    fi
}

case "${1:-}" in
    persist-config) persist_config ;;
    stop-clients) stop_clients "${2:-}" ;;
    start-clients) start_clients ;;
    refresh-cdi) refresh_cdi ;;
    *) echo "usage: hooks.sh persist-config|stop-clients [with-driver-services]|start-clients|refresh-cdi" >&2; exit 2 ;;
esac
