#!/bin/sh
# Container entrypoint: `hearth "$@"`, optionally migrating the database first.
#
#   HEARTH_MIGRATE_ON_START=1   run `hearth db upgrade` before the command (default 0).
#
# Only one container should migrate at a time: in deploy/compose.yaml a one-shot `migrate`
# service does it and the others wait for it to finish. Every other HEARTH_* variable is a
# Hearth setting (HEARTH_DATABASE_URL, HEARTH_TWILIO_AUTH_TOKEN, ...), see
# docs/configuration.md.
set -eu

migrate="${HEARTH_MIGRATE_ON_START:-0}"
# Hearth refuses unknown HEARTH_* variables, and this one is ours, not a Hearth setting.
unset HEARTH_MIGRATE_ON_START

case "$migrate" in
    1 | true | yes) hearth db upgrade >&2 ;; # stderr: keep stdout for the command
    0 | false | no | "") ;;
    *)
        echo "error: HEARTH_MIGRATE_ON_START must be 1 or 0, not '$migrate'" >&2
        exit 2
        ;;
esac

exec hearth "$@"
