#!/bin/sh
# Print a Redis aclfile with two users, each with the SHA-256 of its password (never the password):
#   default   the main host (web, control worker, Flower, the Runway worker beside them): everything
#   gpu-host  GPU and API hosts: the rules of deploy/redis/gpu-host.acl
#
#   REDIS_PASSWORD=... REDIS_GPU_PASSWORD=... deploy/redis/make-users-acl.sh > users.acl
#   redis-server --aclfile /path/to/users.acl ...        (instead of --requirepass)
#
# GPU hosts then use REDIS_URL=redis://gpu-host:$REDIS_GPU_PASSWORD@broker:6379/0; docs/deploy.md.
set -eu
: "${REDIS_PASSWORD:?set REDIS_PASSWORD (the main host's password)}"
: "${REDIS_GPU_PASSWORD:?set REDIS_GPU_PASSWORD (the gpu-host user's password)}"
rules_file="$(dirname "$0")/gpu-host.acl"

sha256() {
  if command -v sha256sum >/dev/null 2>&1; then
    printf '%s' "$1" | sha256sum | cut -d' ' -f1
  else
    printf '%s' "$1" | shasum -a 256 | cut -d' ' -f1
  fi
}

# One line per user: comments dropped, the rules joined (no shell globbing: they are never unquoted).
rules="$(grep -v '^[[:space:]]*#' "$rules_file" | tr -s ' \t\n' '   ' | sed 's/^ *//; s/ *$//')"
printf 'user default on #%s ~* &* +@all\n' "$(sha256 "$REDIS_PASSWORD")"
printf 'user gpu-host on #%s %s\n' "$(sha256 "$REDIS_GPU_PASSWORD")" "$rules"
