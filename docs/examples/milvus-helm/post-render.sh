#!/bin/sh
# Helm post-renderer for the official Milvus chart (milvus-helm has no sidecar key): adds
# milvus-probe to the proxy (and standalone) pods with kustomize.
#   helm install my-milvus milvus/milvus --post-renderer docs/examples/milvus-helm/post-render.sh
# Needs kubectl (its kustomize); KUBECTL overrides which one.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp "$here/kustomization.yaml" "$here/probe-sidecar.yaml" "$work/"
cat > "$work/all.yaml"
"${KUBECTL:-kubectl}" kustomize "$work"
