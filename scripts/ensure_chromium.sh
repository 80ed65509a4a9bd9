#!/usr/bin/env bash
# The service's browser test drives Debian's Chromium. Install it when we can
# (root, apt available); otherwise that one test skips and says why.
command -v chromium >/dev/null 2>&1 && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing Debian's chromium for the browser test..." >&2
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
        || echo "could not install chromium; the browser test will be skipped" >&2
else
    echo "chromium not found and not root: the browser test will be skipped (apt-get install chromium)" >&2
fi
exit 0
