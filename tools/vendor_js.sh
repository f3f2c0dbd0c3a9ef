#!/usr/bin/env bash
# Fetch the JavaScript the rendered book needs from the npm registry, so pages
# load MathJax and the ipywidgets manager from the book itself, not a CDN.
# Goes to book/_vendor (not _static: Jupyter Book 1 injects every .js under
# _static into every page). _config.yml copies it into the HTML's _static.
set -euo pipefail
cd "$(dirname "$0")/.."
dest=book/_vendor
[ -f "$dest/.complete" ] && exit 0
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && npm pack --silent mathjax@3.2.2 @jupyter-widgets/html-manager@1.0.15 requirejs@2.3.8 >/dev/null)
rm -rf "$dest" && mkdir -p "$dest/mathjax" "$dest/html-manager"
tar xzf "$tmp"/mathjax-3.2.2.tgz -C "$tmp" && cp -r "$tmp"/package/es5/. "$dest/mathjax/" && rm -rf "$tmp/package"
tar xzf "$tmp"/jupyter-widgets-html-manager-1.0.15.tgz -C "$tmp" && cp -r "$tmp"/package/dist/. "$dest/html-manager/" && rm -rf "$tmp/package"
tar xzf "$tmp"/requirejs-2.3.8.tgz -C "$tmp" && cp "$tmp"/package/require.js "$dest/require.js"
# The widget manager is an AMD module: ship it as one script after RequireJS.
cat "$dest/require.js" <(echo) "$dest/html-manager/embed-amd.js" > "$dest/html-manager/require-embed-amd.js"
touch "$dest/.complete"
echo "vendored MathJax, the widget manager and RequireJS into $dest"
