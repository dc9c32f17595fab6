#!/bin/sh
# Example tool: reports the `kubectl get` it would run and the kubeconfig context it was given
# (the credential snapshot in $KUBECONFIG). A real bundle would exec kubectl here.
set -eu
args=$(cat)
kind=$(printf '%s' "$args" | sed -n 's/.*"kind":"\([a-z]*\)".*/\1/p')
namespace=$(printf '%s' "$args" | sed -n 's/.*"namespace":"\([a-z0-9.-]*\)".*/\1/p')
namespace=${namespace:-default}
context=$(sed -n 's/^current-context: *//p' "$KUBECONFIG" | head -n 1)
echo "kubeconfig context: ${context:-<none>}"
echo "would run: kubectl get $kind --namespace $namespace"
