#!/usr/bin/env bash
# Refreshes the vendored Chart.js (MIT, https://www.chartjs.org) from npm:
#   bash contrib/http_gateway/static/vendor/update.sh [version]
set -euo pipefail
version=${1:-4.6.1}
here=$(cd "$(dirname "$0")" && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && npm pack "chart.js@$version" >/dev/null && tar xzf "chart.js-$version.tgz")
cp "$tmp/package/dist/chart.umd.min.js" "$tmp/package/LICENSE.md" "$here/chart.js/"
echo "$version" >"$here/chart.js/VERSION"
