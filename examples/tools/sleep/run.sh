#!/bin/sh
# The credential's hash is taken first: what this invocation was started with, whatever a
# reload does while it sleeps.
set -eu
hash=$(sha256sum "$XEROTIER_CREDENTIALS_FILE" | cut -d' ' -f1)
seconds=$(cat | sed -n 's/.*"seconds":\([0-9]*\).*/\1/p')
sleep "${seconds:-0}"
echo "credential_sha256=$hash"
