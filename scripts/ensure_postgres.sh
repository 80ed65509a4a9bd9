#!/usr/bin/env bash
# The history tests run against a real PostgreSQL server too (tests/pg_support.py starts
# a private one). Install Debian's server when we can (root, apt available); otherwise
# those tests skip and say why (under CI, $CI set, they fail instead).
command -v initdb >/dev/null 2>&1 && exit 0
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing Debian's postgresql for the history tests..." >&2
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        postgresql >/dev/null) \
        || echo "could not install postgresql; the PostgreSQL tests will be skipped" >&2
else
    echo "PostgreSQL not found and not root: the PostgreSQL tests will be skipped (apt-get install postgresql)" >&2
fi
exit 0
