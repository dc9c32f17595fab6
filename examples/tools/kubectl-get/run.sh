#!/bin/sh
# Example tool: what `kubectl get` would be asked, with which kubeconfig. It runs kubectl when
# the host has it; otherwise it reports the request (the quickstart host has no cluster).
set -eu
args=$(cat)
kind=$(printf '%s' "$args" | sed -n 's/.*"kind":"\([a-z]*\)".*/\1/p')
namespace=$(printf '%s' "$args" | sed -n 's/.*"namespace":"\([a-z0-9.-]*\)".*/\1/p')
namespace=${namespace:-default}
context=$(sed -n 's/^current-context: *//p' "$KUBECONFIG" | head -n 1)
echo "kubeconfig context: ${context:-<none>}"
if command -v kubectl >/dev/null 2>&1; then
  exec kubectl --kubeconfig "$KUBECONFIG" get "$kind" --namespace "$namespace"
fi
echo "would run: kubectl get $kind --namespace $namespace (kubectl is not installed here)"
